//! The simulation engine.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ghmesh_node::upstream::github::{BudgetRules, GithubClient, GithubConfig};
use ghmesh_node::{CacheStatus, MeshMode, Node, NodeConfig};
use ghmesh_protocol::{CacheKey, CanonicalRequest, MeshKeys};
use ghmesh_tests::fake_github::FakeGithub;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::report::{
    peak_rss_mb, GraphqlShare, LateJoiners, LedgerTraffic, Lookup, Propagation, Report,
};
use crate::workload::{Churn, Workload};

/// What the fleet does on a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// No P2P: every node alone.
    Local,
    /// Announce on fetch; no lookups, no coalescing (the earlier push-only design).
    Broadcast,
    /// Everything ghmesh does.
    Mesh,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Broadcast => "broadcast",
            Self::Mesh => "mesh",
        }
    }
}

/// A run's parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub workload: Workload,
    pub nodes: usize,
    pub keys: usize,
    pub rounds: usize,
    pub stagger_ms: u64,
    pub ttl: u64,
    pub strategy: Strategy,
    pub seed: u64,
    /// Peer-phase budget on a miss (the daemon's default is 250 ms).
    pub lookup_timeout: Duration,
}

impl SimConfig {
    /// Contract defaults (20 nodes, 100 keys, 3 rounds, TTL 60, mesh, seed 1), then the
    /// workload's values.
    pub fn from_workload(workload: Workload) -> Self {
        Self {
            nodes: workload.nodes.unwrap_or(20),
            keys: workload.keys.unwrap_or(100),
            rounds: workload.rounds.unwrap_or(3),
            stagger_ms: workload.stagger_ms.unwrap_or(0),
            ttl: workload.ttl.unwrap_or(60),
            strategy: Strategy::Mesh,
            seed: 1,
            lookup_timeout: Duration::from_millis(250),
            workload,
        }
    }
}

/// Per-key spread: when it was first stored anywhere, when last, on how many nodes.
#[derive(Default)]
struct Spread {
    first: Option<Instant>,
    last: Option<Instant>,
    nodes: usize,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    local: AtomicU64,
    peer: AtomicU64,
    coalesced: AtomicU64,
    revalidated: AtomicU64,
    miss: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    fn snapshot(&self) -> [u64; 7] {
        [
            &self.requests,
            &self.local,
            &self.peer,
            &self.coalesced,
            &self.revalidated,
            &self.miss,
            &self.errors,
        ]
        .map(|a| a.load(Ordering::Relaxed))
    }
}

struct SimNode {
    node: Node,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn sim_keys() -> MeshKeys {
    static K: std::sync::OnceLock<MeshKeys> = std::sync::OnceLock::new();
    K.get_or_init(|| MeshKeys::derive(b"simulated fleet secret", "acme/fleet"))
        .clone()
}

/// The configuration of every simulated node, in both modes: the daemon's timers (not
/// the test ones, which heartbeat 5x as often: at 50 nodes on two cores that alone is
/// 250 heartbeats a second), the run's TTL and lookup budget, and rendezvous every 3 s
/// instead of 10 s, so that a fleet meshes within seconds.
pub(crate) fn node_config(cfg: &SimConfig, dir: &std::path::Path) -> NodeConfig {
    let mut nc = NodeConfig::new(dir);
    nc.ttl = Some(cfg.ttl);
    nc.discovery_interval = Duration::from_secs(3);
    nc.deadlines.lookup = cfg.lookup_timeout;
    nc
}

async fn start_node(
    cfg: &SimConfig,
    gh: &FakeGithub,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> anyhow::Result<SimNode> {
    let dir = tempfile::tempdir()?;
    let mut nc = node_config(cfg, dir.path());
    nc.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    nc.bootstrap = bootstrap;
    nc.mdns = false;
    nc.keys = (cfg.strategy != Strategy::Local).then(sim_keys);
    nc.mode = if cfg.strategy == Strategy::Broadcast {
        MeshMode::Broadcast
    } else {
        MeshMode::Mesh
    };
    let upstream = GithubClient::new(GithubConfig {
        base_url: gh.url(),
        // One fleet token: its ETags are valid on every node.
        token: Some("ghp_simulated_fleet_token".into()),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
    })?
    // Budgets named as the daemon names them (by the mesh's key), so that the nodes'
    // ledgers meet on the one token's budget.
    .with_budgets(BudgetRules {
        key: nc
            .keys
            .as_ref()
            .map_or_else(rand::random, MeshKeys::budget_key),
        repository: Some("acme/fleet".into()),
        reserve: 0,
    });
    let node = Node::start(nc, Arc::new(upstream)).await?;
    Ok(SimNode {
        node,
        _dir: dir,
        stop: Arc::new(AtomicBool::new(false)),
    })
}

fn track_spread(node: &Node, spread: Arc<Mutex<HashMap<CacheKey, Spread>>>) {
    let mut rx = node.subscribe_stored();
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        loop {
            match rx.recv().await {
                Ok(key) => {
                    if seen.insert(key) {
                        let now = Instant::now();
                        if let Ok(mut m) = spread.lock() {
                            let s = m.entry(key).or_default();
                            s.first = Some(s.first.map_or(now, |f| f.min(now)));
                            s.last = Some(s.last.map_or(now, |l| l.max(now)));
                            s.nodes += 1;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
}

/// What every node of a run reads, and where the outcomes are recorded.
#[derive(Clone)]
struct Reads {
    requests: Arc<Vec<CanonicalRequest>>,
    rounds: usize,
    interval: Duration,
    lookups: Arc<Mutex<Vec<f64>>>,
}

impl Reads {
    /// Starts `n`'s reads after `start_delay`, counting outcomes in `tally`.
    fn spawn(
        &self,
        n: &SimNode,
        tally: Arc<Tally>,
        start_delay: Duration,
        seed: u64,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(read_all(
            self.clone(),
            n.node.clone(),
            n.stop.clone(),
            tally,
            start_delay,
            seed,
        ))
    }
}

/// One node's reads: `rounds` passes over the keys, each in its own shuffled order.
async fn read_all(
    reads: Reads,
    node: Node,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    start_delay: Duration,
    seed: u64,
) {
    let Reads {
        requests,
        rounds,
        interval,
        lookups,
    } = reads;
    tokio::time::sleep(start_delay).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..requests.len()).collect();
    for round in 0..rounds {
        if round > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        order.shuffle(&mut rng);
        for &i in &order {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let req = &requests[i];
            let had = node
                .store()
                .get_meta(&req.key())
                .ok()
                .flatten()
                .is_some_and(|m| m.is_fresh(node.clock().now_ms()));
            let t = Instant::now();
            let res = node.get(req.clone()).await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            tally.requests.fetch_add(1, Ordering::Relaxed);
            let counter = match res.map(|s| (s.status, s.http_status())) {
                Ok((_, code)) if code >= 400 => &tally.errors,
                Ok((CacheStatus::Hit | CacheStatus::Peer, _)) if had => &tally.local,
                Ok((CacheStatus::Peer, _)) => {
                    if let Ok(mut l) = lookups.lock() {
                        l.push(ms);
                    }
                    &tally.peer
                }
                Ok((CacheStatus::Hit, _)) => &tally.local,
                Ok((CacheStatus::Coalesced, _)) => &tally.coalesced,
                Ok((CacheStatus::Revalidated, _)) => &tally.revalidated,
                Ok((CacheStatus::Miss, _)) => &tally.miss,
                Ok(_) | Err(_) => &tally.errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs one simulation.
pub async fn run(cfg: SimConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(
        cfg.nodes >= 1 && cfg.keys >= 1 && cfg.rounds >= 1,
        "nodes, keys and rounds must be at least 1"
    );
    raise_fd_limit();
    let coldstart = cfg.workload.coldstart;
    let mut fleet = Fleet::new(cfg).await?;

    let t0 = Instant::now();
    fleet.start_nodes(coldstart).await?;
    let formed = Instant::now();
    fleet.wait_for_full_view().await?;
    let mesh_formation_s = formed.elapsed().as_secs_f64();
    let view_converged_s = t0.elapsed().as_secs_f64();

    // A cold start's reads began with the first node; otherwise they begin now, on a
    // formed mesh.
    let started = if coldstart { t0 } else { Instant::now() };
    if !coldstart {
        fleet.start_reads();
    }
    let late = fleet.churn().await?;
    fleet.wait_for_reads().await;
    let timings = Timings {
        mesh_formation_s,
        view_converged_s,
        wall_s: started.elapsed().as_secs_f64(),
    };

    fleet.settle_spread().await;
    let report = fleet.report(&timings, late);
    fleet.shutdown().await;
    Ok(report)
}

/// The durations a run reports, in seconds.
struct Timings {
    mesh_formation_s: f64,
    view_converged_s: f64,
    wall_s: f64,
}

/// The nodes that joined during churn, and what their reads were served by.
struct LateReads {
    nodes: usize,
    tally: Arc<Tally>,
}

/// A wall-clock run in progress: its nodes, the fake GitHub they read from, their read
/// tasks and what those record.
struct Fleet {
    cfg: SimConfig,
    rng: rand::rngs::StdRng,
    reads: Reads,
    spread: Arc<Mutex<HashMap<CacheKey, Spread>>>,
    tally: Arc<Tally>,
    nodes: Vec<SimNode>,
    /// Churned out: shut down already, shut down again with the rest at the end.
    retired: Vec<SimNode>,
    /// The first node's address, every other node's bootstrap.
    boot: Vec<libp2p::Multiaddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    gh: FakeGithub,
}

impl Fleet {
    async fn new(cfg: SimConfig) -> anyhow::Result<Self> {
        let gh = FakeGithub::start().await?;
        gh.set_rate_limit(u64::MAX / 4);
        let requests: Arc<Vec<CanonicalRequest>> = Arc::new(cfg.workload.requests(cfg.keys)?);
        let reads = Reads {
            requests,
            rounds: cfg.rounds,
            interval: Duration::from_millis(cfg.workload.interval_ms),
            lookups: Arc::default(),
        };
        Ok(Self {
            rng: rand::rngs::StdRng::seed_from_u64(cfg.seed),
            reads,
            spread: Arc::default(),
            tally: Arc::new(Tally::default()),
            nodes: Vec::new(),
            retired: Vec::new(),
            boot: Vec::new(),
            tasks: Vec::new(),
            gh,
            cfg,
        })
    }

    /// Each node's own read order: the same run seed gives the same orders.
    fn node_seed(&self, i: usize) -> u64 {
        self.cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64)
    }

    /// Starts the nodes one after another, every one bootstrapping from the first.
    async fn start_nodes(&mut self, coldstart: bool) -> anyhow::Result<()> {
        let first = start_node(&self.cfg, &self.gh, vec![]).await?;
        self.boot = first.node.listen_addrs().into_iter().take(1).collect();
        self.nodes.push(first);
        for i in 1..self.cfg.nodes {
            if coldstart {
                // Each node reads the moment it is up: before the next is even started.
                self.read_now(i - 1);
            }
            let next = start_node(&self.cfg, &self.gh, self.boot.clone()).await?;
            self.nodes.push(next);
        }
        if coldstart {
            self.read_now(self.cfg.nodes - 1);
        }
        Ok(())
    }

    /// Node `i` starts reading at once, its stores watched.
    fn read_now(&mut self, i: usize) {
        let n = &self.nodes[i];
        track_spread(&n.node, self.spread.clone());
        let task = self
            .reads
            .spawn(n, self.tally.clone(), Duration::ZERO, self.node_seed(i));
        self.tasks.push(task);
    }

    /// Waits until every node has every other as a member (a local fleet has none).
    async fn wait_for_full_view(&self) -> anyhow::Result<()> {
        if self.cfg.strategy == Strategy::Local {
            return Ok(());
        }
        let want = self.cfg.nodes - 1;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.nodes.iter().all(|n| n.node.members().len() >= want) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the mesh did not form within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Every node starts reading after a random delay within the stagger window.
    fn start_reads(&mut self) {
        // Every node's stores are watched before any node reads, so none is missed.
        for n in &self.nodes {
            track_spread(&n.node, self.spread.clone());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let delay = if self.cfg.stagger_ms == 0 {
                0
            } else {
                self.rng.gen_range(0..=self.cfg.stagger_ms)
            };
            let delay = Duration::from_millis(delay);
            let task = self
                .reads
                .spawn(n, self.tally.clone(), delay, self.node_seed(i));
            self.tasks.push(task);
        }
    }

    /// The workload's churn, if any: every so often a node leaves and a fresh one joins
    /// and reads everything.
    async fn churn(&mut self) -> anyhow::Result<Option<LateReads>> {
        let Some(Churn { replace, every_ms }) = self.cfg.workload.churn.clone() else {
            return Ok(None);
        };
        let tally = Arc::new(Tally::default());
        let mut joined = 0;
        for r in 0..replace.min(self.cfg.nodes.saturating_sub(1)) {
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
            self.retire_one().await;
            let seed = self.cfg.seed ^ (0xC0FFEE + r as u64);
            self.join_one(tally.clone(), seed).await?;
            joined += 1;
        }
        Ok(Some(LateReads {
            nodes: joined,
            tally,
        }))
    }

    /// Stops and shuts down a random node; never the first, every node's bootstrap.
    async fn retire_one(&mut self) {
        let victim = 1 + self.rng.gen_range(0..self.nodes.len() - 1);
        let gone = self.nodes.remove(victim);
        gone.stop.store(true, Ordering::Relaxed);
        gone.node.shutdown().await;
        self.retired.push(gone);
    }

    /// Starts a node with an empty store and a new identity, which reads everything once
    /// it has a peer (or has waited 10 s for one).
    async fn join_one(&mut self, tally: Arc<Tally>, seed: u64) -> anyhow::Result<()> {
        let fresh = start_node(&self.cfg, &self.gh, self.boot.clone()).await?;
        if self.cfg.strategy != Strategy::Local {
            let deadline = Instant::now() + Duration::from_secs(10);
            while fresh.node.members().is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        track_spread(&fresh.node, self.spread.clone());
        let task = self.reads.spawn(&fresh, tally, Duration::ZERO, seed);
        self.tasks.push(task);
        self.nodes.push(fresh);
        Ok(())
    }

    async fn wait_for_reads(&mut self) {
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }

    /// Lets the last announces land before spread is measured: until the count of
    /// stores holds still for 100 ms, or 5 s.
    async fn settle_spread(&self) {
        let mut last_total = usize::MAX;
        for _ in 0..50 {
            let total: usize = self
                .spread
                .lock()
                .map(|m| m.values().map(|s| s.nodes).sum())
                .unwrap_or(0);
            if total == last_total {
                break;
            }
            last_total = total;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Per key that reached every node: from its first store to its last, ms, sorted.
    fn propagation_samples(&self) -> Vec<f64> {
        let mut prop: Vec<f64> = self
            .spread
            .lock()
            .map(|m| {
                m.values()
                    .filter(|s| s.nodes >= self.cfg.nodes)
                    .filter_map(|s| Some((s.last? - s.first?).as_secs_f64() * 1000.0))
                    .collect()
            })
            .unwrap_or_default();
        prop.sort_by(f64::total_cmp);
        prop
    }

    /// Reads served by a peer, ms, sorted.
    fn lookup_samples(&self) -> Vec<f64> {
        let mut look = self
            .reads
            .lookups
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        look.sort_by(f64::total_cmp);
        look
    }

    /// Taken before shutdown: the fake GitHub's counters go with it.
    fn report(&self, timings: &Timings, late: Option<LateReads>) -> Report {
        let cfg = &self.cfg;
        let prop = self.propagation_samples();
        let look = self.lookup_samples();
        let (counts, late_joiners) = served(&self.tally, late);
        let [requests, local, peer, coalesced, revalidated, miss, errors] = counts;
        let rss = peak_rss_mb();
        let all = || self.nodes.iter().chain(self.retired.iter());
        let sent: u64 = all().map(|n| n.node.counters().ledger_sent.get()).sum();
        let bytes: u64 = all()
            .map(|n| n.node.counters().ledger_bytes_sent.get())
            .sum();
        let ledger = LedgerTraffic {
            messages: sent,
            bytes,
            per_node_per_second: sent as f64 / cfg.nodes as f64 / timings.wall_s.max(1e-9),
        };
        Report {
            time: "wall".into(),
            ledger: Some(ledger),
            workload: cfg.workload.name.clone(),
            nodes: cfg.nodes,
            keys: cfg.keys,
            rounds: cfg.rounds,
            strategy: cfg.strategy.name().into(),
            seed: cfg.seed,
            stagger_ms: cfg.stagger_ms,
            ttl: cfg.ttl,
            lookup_timeout_ms: cfg.lookup_timeout.as_millis() as u64,
            requests,
            upstream_calls: self.gh.full_responses() + self.gh.graphql_requests(),
            upstream_304: self.gh.not_modified(),
            upstream_per_key: (self.gh.full_responses() + self.gh.graphql_requests()) as f64
                / cfg.keys as f64,
            graphql: GraphqlShare::of(
                &cfg.workload,
                cfg.keys,
                self.gh.graphql_requests(),
                self.gh.full_responses() + self.gh.graphql_requests(),
            ),
            served_local: local,
            served_peer: peer,
            served_coalesced: coalesced,
            served_revalidated: revalidated,
            served_miss: miss,
            errors,
            propagation_ms: if cfg.strategy == Strategy::Local || prop.is_empty() {
                Propagation::default()
            } else {
                Propagation::of(&prop)
            },
            lookup_ms: Lookup::of(&look),
            mesh_formation_s: timings.mesh_formation_s,
            view_converged_s: timings.view_converged_s,
            wall_s: timings.wall_s,
            peak_rss_mb: rss,
            peak_rss_mb_per_node: rss / cfg.nodes as f64,
            late_joiners,
            propagation_samples: prop,
            ..Default::default()
        }
    }

    async fn shutdown(self) {
        for n in self.nodes.iter().chain(self.retired.iter()) {
            n.node.shutdown().await;
        }
        self.gh.shutdown().await;
    }
}

/// The whole fleet's counts (in [`Tally::snapshot`]'s order), late joiners included, and
/// the late joiners' own.
fn served(tally: &Tally, late: Option<LateReads>) -> ([u64; 7], Option<LateJoiners>) {
    let mut counts = tally.snapshot();
    let late_joiners = late.map(|LateReads { nodes, tally }| {
        let s = tally.snapshot();
        for (c, v) in counts.iter_mut().zip(s) {
            *c += v;
        }
        LateJoiners {
            nodes,
            requests: s[0],
            served_by_peers: s[2] + s[3],
            misses: s[5],
        }
    });
    (counts, late_joiners)
}
