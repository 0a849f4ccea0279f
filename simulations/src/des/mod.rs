//! Simulated time: the node's decision layer (owner placement, the lookup answer, the
//! step after each reply, re-polls, view settling, the peer book's membership,
//! probation and adaptive budgets) driven by a seeded discrete-event network, in the
//! manner of iroh-gossip's `proto::sim`. Messages take a modelled latency, may be lost,
//! nodes join through one bootstrap, swap member lists and discover each other as the
//! daemon does, and GitHub answers after a modelled delay. Nothing waits on a real clock
//! or a CPU, so the figures are the same on any machine, and 1,000 nodes fit in one
//! process. The async plumbing of the daemon (sealing, streams, the store) is not run:
//! the wall-clock mode (`sim.rs`) measures that.

mod budget;
#[cfg(test)]
mod differential;
mod read;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use ghmesh_node::policy::book::PeerBook;
use ghmesh_protocol::{Announce, CacheKey, CanonicalRequest, Entry};
use libp2p::PeerId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::report::{
    peak_rss_mb, BudgetRun, GraphqlShare, LateJoiners, Lookup, Network, Propagation, Report,
};
use crate::sim::SimConfig;
use ghmesh_node::network::{DISCOVERY_MIN_GAP, DISCOVERY_SOON};
use ghmesh_node::policy::resolve::{Ask, Timers};
use read::{Flight, Rep};

/// Simulated microseconds since the run began.
type Us = u64;

fn us(d: Duration) -> Us {
    d.as_micros() as Us
}

/// What the modelled network looks like.
#[derive(Debug, Clone)]
pub struct NetParams {
    /// One-way latency, mean.
    pub latency: Duration,
    /// Each delay is the mean times a uniform factor in `1 ± jitter`.
    pub jitter: f64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// GitHub's answer time.
    pub upstream: Duration,
    /// Fraction of the other nodes each node can ever reach (1: everyone).
    pub view: f64,
    /// Nodes start this far apart.
    pub join_gap: Duration,
    /// Requests left in the window of the one token the fleet shares; `None`: no
    /// limit is modelled.
    pub budget: Option<u64>,
    /// Nodes share their budgets through the daemon's ledger (its `BudgetBook`, its
    /// messages: a refusal at once, other news once a second).
    pub ledger: bool,
    /// Every node's book starts with the window's figures (`remaining` = `budget`) and
    /// with every other node as its spender, as when the budget ran down while the
    /// fleet was up and spending it; else nobody knows them until GitHub's first
    /// answer.
    pub budget_known: bool,
}

impl Default for NetParams {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(2),
            jitter: 0.5,
            loss: 0.0,
            upstream: Duration::from_millis(100),
            view: 1.0,
            join_gap: Duration::from_millis(20),
            budget: None,
            ledger: true,
            budget_known: false,
        }
    }
}

/// Round trips before a dialled peer is a member: TCP + noise + yamux, then the
/// sealed hello and its reply. A property of the modelled network, not a timer.
const HELLO_RTTS: u64 = 3;
/// A lost gossip is repaired by IHAVE/IWANT on a later heartbeat (the daemon's
/// gossipsub heartbeat is a second).
const GOSSIP_REPAIR: Us = 1_000_000;
/// After the last read, events still run this long (announces landing).
const LINGER: Us = 20_000_000;

enum Ev {
    Start(usize),
    /// `a` dialled `b`: both have proved themselves by hello.
    Hello {
        a: usize,
        b: usize,
    },
    /// `from`'s member list reached `to`.
    Members {
        to: usize,
        from: usize,
    },
    Discover(usize),
    Read(usize),
    Lookup {
        from: usize,
        to: usize,
        key: usize,
        ask: Ask,
        at: FlightRef,
    },
    Reply {
        to: usize,
        from: usize,
        key: usize,
        rep: Rep,
        at: FlightRef,
    },
    Timeout {
        peer: usize,
        at: FlightRef,
    },
    Tick(FlightRef),
    Upstream {
        node: usize,
        key: usize,
        gen: u64,
    },
    Gossip {
        to: usize,
        key: usize,
        fetched: Us,
    },
    /// A member's ledger message reached `to`.
    Ledger {
        to: usize,
        entries: Vec<ghmesh_protocol::ledger::BudgetEntry>,
        spender: PeerId,
    },
    /// `node`'s ledger publishes what changed this second.
    LedgerTick(usize),
    /// The budget may be quiet: calls waiting for `node`'s share look again.
    ShareQuiet(usize),
    Churn(usize),
}

/// Which step of which flight an event belongs to; stale ones are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlightRef {
    node: usize,
    key: usize,
    gen: u64,
    attempt: u64,
}

struct SimPeer {
    id: PeerId,
    up: bool,
    started: Us,
    book: PeerBook,
    /// Key index → when our copy was fetched.
    store: HashMap<usize, Us>,
    flights: HashMap<usize, Flight>,
    /// The read in progress: key, when it began, whether the copy was fresh then.
    reading: Option<(usize, Us)>,
    order: Vec<usize>,
    next: usize,
    round: usize,
    late: bool,
    discover_at: Option<Us>,
    last_discovery: Option<Us>,
    discovered_once: bool,
    /// The daemon's own budget book (with `--budget`).
    budgets: ghmesh_node::upstream::ledger::BudgetBook,
    /// A ledger tick is scheduled.
    ledger_tick: bool,
    /// Keys whose upstream call waits for a place in this node's share of the budget.
    share_waiting: Vec<usize>,
    /// When a `ShareQuiet` is due for this node (at most one pending).
    share_quiet: Option<Us>,
    /// Since when a call has waited for the budget's first figures.
    figures_since: Option<Us>,
}

#[derive(Default, Clone, Copy)]
struct Tally {
    requests: u64,
    local: u64,
    peer: u64,
    coalesced: u64,
    revalidated: u64,
    miss: u64,
}

/// The engine: every node, the event queue, what was measured.
pub(crate) struct Des {
    cfg: SimConfig,
    net: NetParams,
    rng: StdRng,
    now: Us,
    seq: u64,
    queue: BinaryHeap<Reverse<(Us, u64)>>,
    events: HashMap<u64, Ev>,
    peers: Vec<SimPeer>,
    index: HashMap<PeerId, usize>,
    /// Pairs that can never reach each other (partial views).
    cut: std::collections::HashSet<(usize, usize)>,
    keys: Vec<CacheKey>,
    announces: Vec<Announce>,
    /// The daemon's timers, as `ghmesh-sim --time wall` configures its nodes.
    timers: Timers,
    /// Rendezvous rounds this often, as there.
    discovery_interval: Us,
    /// What a miss asks the key's owner: the simulated fleet reads with the node's
    /// token, as `ghmesh-sim` does.
    ask: Ask,
    /// A scripted world instead of the other nodes' answers (the differential test).
    #[cfg(test)]
    world: Option<differential::World>,
    /// Every step carried out, with its time (the differential test).
    #[cfg(test)]
    trace: Vec<(Us, ghmesh_node::policy::resolve::Step)>,
    gen: u64,
    tally: Tally,
    late: Tally,
    upstream_calls: u64,
    /// Of those, for keys read as GraphQL queries.
    graphql_calls: u64,
    upstream_304: u64,
    /// What the shared token has left in its window, and what GitHub refused.
    budget_left: Option<u64>,
    refusals: u64,
    held_reads: u64,
    ledger_messages: u64,
    messages: u64,
    lookups: Vec<f64>,
    /// Key → (first store, last store, stores).
    spread: HashMap<usize, (Us, Us, usize)>,
    view_converged: Option<Us>,
    workload_start: Us,
    joined_late: usize,
    churn_left: usize,
    /// When every node still up had read everything (the workload's end).
    finished: Option<Us>,
}

/// Runs one simulated-time simulation.
pub fn run_simulated(cfg: SimConfig, net: NetParams) -> anyhow::Result<Report> {
    anyhow::ensure!(
        cfg.nodes >= 1 && cfg.keys >= 1 && cfg.rounds >= 1,
        "nodes, keys and rounds must be at least 1"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&net.loss) && (0.0..=1.0).contains(&net.jitter),
        "loss must be in [0, 1) and jitter in [0, 1]"
    );
    anyhow::ensure!(net.view > 0.0 && net.view <= 1.0, "view must be in (0, 1]");
    let mut des = Des::new(cfg, net)?;
    des.run();
    Ok(des.report())
}

/// The workload's keys, and for each the announce a node publishes once it has it.
fn workload_keys(cfg: &SimConfig) -> anyhow::Result<(Vec<CacheKey>, Vec<Announce>)> {
    let requests: Vec<CanonicalRequest> = cfg.workload.requests(cfg.keys)?;
    let keys = requests.iter().map(|r| r.key()).collect();
    let announces = requests
        .into_iter()
        .map(|r| {
            let e = Entry::new(
                r,
                vec![],
                b"{}".to_vec(),
                None,
                0,
                u64::MAX / 4,
                "sim".into(),
            );
            Announce::of(&e)
        })
        .collect();
    Ok((keys, announces))
}

/// Pairs of nodes that can never reach each other: each pair with probability
/// `1 - view`, the first node (every node's bootstrap) in none.
fn unreachable_pairs(
    nodes: usize,
    view: f64,
    rng: &mut StdRng,
) -> std::collections::HashSet<(usize, usize)> {
    let mut cut = std::collections::HashSet::new();
    if view < 1.0 {
        for a in 1..nodes {
            for b in (a + 1)..nodes {
                if rng.gen::<f64>() >= view {
                    cut.insert((a, b));
                }
            }
        }
    }
    cut
}

impl Des {
    fn new(cfg: SimConfig, net: NetParams) -> anyhow::Result<Self> {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let (keys, announces) = workload_keys(&cfg)?;
        let cut = unreachable_pairs(cfg.nodes, net.view, &mut rng);
        let node = crate::sim::node_config(&cfg, std::path::Path::new("."));
        let mut des = Self {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            peers: Vec::new(),
            index: HashMap::new(),
            cut,
            keys,
            announces,
            timers: node.deadlines.timers(),
            discovery_interval: us(node.discovery_interval),
            ask: Ask::FETCH,
            #[cfg(test)]
            world: None,
            #[cfg(test)]
            trace: Vec::new(),
            gen: 0,
            tally: Tally::default(),
            late: Tally::default(),
            upstream_calls: 0,
            graphql_calls: 0,
            upstream_304: 0,
            budget_left: net.budget,
            refusals: 0,
            held_reads: 0,
            ledger_messages: 0,
            messages: 0,
            lookups: Vec::new(),
            spread: HashMap::new(),
            view_converged: None,
            workload_start: 0,
            joined_late: 0,
            churn_left: 0,
            finished: None,
            cfg,
            net,
        };
        for i in 0..des.cfg.nodes {
            des.add_peer(false);
            let at = i as Us * us(des.net.join_gap);
            des.at(at, Ev::Start(i));
        }
        if des.net.budget_known {
            des.knows_the_window();
        }
        Ok(des)
    }

    fn add_peer(&mut self, late: bool) -> usize {
        let mut order: Vec<usize> = (0..self.cfg.keys).collect();
        order.shuffle(&mut self.rng);
        // Seeded identities: the same seed gives the same owners.
        let mut secret = [0u8; 32];
        self.rng.fill(&mut secret);
        let id = libp2p::identity::Keypair::ed25519_from_bytes(secret)
            .map(|k| k.public().to_peer_id())
            .unwrap_or_else(|_| PeerId::random());
        self.index.insert(id, self.peers.len());
        self.peers.push(SimPeer {
            id,
            up: false,
            started: 0,
            book: PeerBook::default(),
            store: HashMap::new(),
            flights: HashMap::new(),
            reading: None,
            order,
            next: 0,
            round: 0,
            late,
            discover_at: None,
            last_discovery: None,
            discovered_once: false,
            budgets: Default::default(),
            ledger_tick: false,
            share_waiting: Vec::new(),
            share_quiet: None,
            figures_since: None,
        });
        self.peers.len() - 1
    }

    fn at(&mut self, t: Us, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// One message's delay, or `None` when it is lost.
    fn delay(&mut self) -> Option<Us> {
        self.messages += 1;
        if self.net.loss > 0.0 && self.rng.gen::<f64>() < self.net.loss {
            return None;
        }
        let f = 1.0 + self.net.jitter * (self.rng.gen::<f64>() * 2.0 - 1.0);
        Some(((us(self.net.latency) as f64) * f).max(1.0) as Us)
    }

    fn send(&mut self, ev: Ev) {
        if let Some(d) = self.delay() {
            self.at(self.now + d, ev);
        }
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        a != b && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn run(&mut self) {
        // Bounded: a fleet that never settles still ends (an hour of simulated time).
        // Otherwise the run ends once every read is done and the last gossip has had
        // time to land (the timers that keep a fleet alive would run for ever).
        let end = 3_600_000_000;
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > end || self.finished.is_some_and(|f| t > f + LINGER) {
                break;
            }
            self.now = t;
            if let Some(ev) = self.events.remove(&seq) {
                self.handle(ev);
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(n) => self.start(n),
            Ev::Hello { a, b } => self.hello(a, b),
            Ev::Members { to, from } => self.members(to, from),
            Ev::Discover(n) => self.discover(n),
            Ev::Read(n) => self.next_read(n),
            Ev::Lookup {
                from,
                to,
                key,
                ask,
                at,
            } => self.answer(from, to, key, ask, at),
            Ev::Reply {
                to,
                from,
                key,
                rep,
                at,
            } => self.on_reply(to, from, key, rep, at),
            Ev::Timeout { peer, at } => self.on_timeout(peer, at),
            Ev::Tick(at) => self.on_tick(at),
            Ev::Upstream { node, key, gen } => self.upstream_done(node, key, gen),
            Ev::Gossip { to, key, fetched } => self.gossip_arrives(to, key, fetched),
            Ev::Ledger {
                to,
                entries,
                spender,
            } => self.ledger_arrives(to, &entries, spender),
            Ev::LedgerTick(n) => {
                self.peers[n].ledger_tick = false;
                self.publish_ledger(n);
            }
            Ev::ShareQuiet(n) => {
                self.peers[n].share_quiet = None;
                self.share_freed(n);
            }
            Ev::Churn(left) => self.churn(left),
        }
    }

    // --- Membership: bootstrap, hello, member lists, discovery ---

    fn start(&mut self, n: usize) {
        let now = self.now;
        let p = &mut self.peers[n];
        p.up = true;
        p.started = now;
        if n != 0 {
            // Bootstrapped to the first node: dial, handshake, hello.
            let d = us(self.net.latency) * 2 * HELLO_RTTS;
            let boot = self.peers[0].id;
            self.peers[n].book.connected(boot, now);
            self.messages += 2;
            self.at(now + d, Ev::Hello { a: n, b: 0 });
        }
        let coldstart = self.cfg.workload.coldstart;
        if coldstart || self.peers[n].late {
            self.at(now, Ev::Read(n));
        }
    }

    fn hello(&mut self, a: usize, b: usize) {
        if !self.peers[a].up || !self.peers[b].up {
            return;
        }
        let now = self.now;
        let (ia, ib) = (self.peers[a].id, self.peers[b].id);
        self.peers[a].book.connected(ib, now);
        self.peers[b].book.connected(ia, now);
        let new_a = self.peers[a].book.greeted(ib, true, now);
        let new_b = self.peers[b].book.greeted(ia, true, now);
        self.hello_ledgers(a, b);
        for (n, new) in [(a, new_a), (b, new_b)] {
            if new {
                self.schedule_discovery(n);
                self.admitted(n);
            }
        }
        // A newcomer pulls the member lists of its first members (the daemon pulls from
        // three, and asks to be introduced, which the list exchange models both ways).
        if new_a && self.peers[a].book.members().len() <= 3 {
            self.send(Ev::Members { to: a, from: b });
            self.send(Ev::Members { to: b, from: a });
        }
        self.check_converged(a, b);
    }

    fn members(&mut self, to: usize, from: usize) {
        if !self.peers[to].up || !self.peers[from].up {
            return;
        }
        self.messages += 1;
        // In index order: the book's order is a hash map's, which differs between
        // processes, and the same seed must give the same run.
        let mut known: Vec<usize> = self.peers[from]
            .book
            .members()
            .iter()
            .filter_map(|id| self.index.get(id).copied())
            .collect();
        known.sort_unstable();
        for m in known {
            self.dial(to, m);
        }
    }

    fn dial(&mut self, a: usize, b: usize) {
        let now = self.now;
        if !self.reachable(a, b) || !self.peers[b].up {
            return;
        }
        let id = self.peers[b].id;
        if self.peers[a].book.is_member(&id) || !self.peers[a].book.connected(id, now) {
            return;
        }
        let d = us(self.net.latency) * 2 * HELLO_RTTS;
        self.messages += 2;
        self.at(now + d, Ev::Hello { a, b });
    }

    fn schedule_discovery(&mut self, n: usize) {
        let now = self.now;
        let p = &mut self.peers[n];
        let earliest = p.last_discovery.map_or(now, |l| l + us(DISCOVERY_MIN_GAP));
        let at = (now + us(DISCOVERY_SOON)).max(earliest);
        if p.discover_at.is_none_or(|t| at < t) {
            p.discover_at = Some(at);
            self.at(at, Ev::Discover(n));
        }
    }

    /// A rendezvous round: every node that provided the key by then is found.
    fn discover(&mut self, n: usize) {
        let now = self.now;
        if !self.peers[n].up || self.peers[n].discover_at.is_some_and(|t| t > now) {
            return;
        }
        let p = &mut self.peers[n];
        p.discover_at = None;
        p.last_discovery = Some(now);
        let first = !p.discovered_once;
        p.discovered_once = true;
        self.messages += 4; // a provide and a provider query, each a round trip
        let ready: Vec<usize> = (0..self.peers.len())
            .filter(|&m| self.peers[m].up && self.peers[m].discovered_once)
            .collect();
        for m in ready {
            self.dial(n, m);
        }
        let interval = self.discovery_interval;
        if first {
            self.at(now + interval, Ev::Discover(n));
        } else if self.peers[n].discover_at.is_none() {
            self.peers[n].discover_at = Some(now + interval);
            self.at(now + interval, Ev::Discover(n));
        }
    }

    /// After `a` and `b` admitted each other: do all views agree now? Only their views
    /// changed, so unless both are full nothing else needs a look.
    fn check_converged(&mut self, a: usize, b: usize) {
        if self.view_converged.is_some() {
            return;
        }
        let up: Vec<usize> = (0..self.cfg.nodes).filter(|&n| self.peers[n].up).collect();
        if up.len() < self.cfg.nodes {
            return;
        }
        // A node keeps at most MAX_PEERS peers (the daemon's bound): beyond that size a
        // view is as full as it gets at that bound.
        let is_full = |n: usize| {
            let reachable = up.iter().filter(|&&m| self.reachable(n, m)).count();
            let want = reachable.min(ghmesh_node::limits::MAX_PEERS);
            self.peers[n].book.members().len() >= want
        };
        let full = is_full(a) && is_full(b) && up.iter().all(|&n| is_full(n));
        if full {
            self.view_converged = Some(self.now);
            if !self.cfg.workload.coldstart {
                self.start_workload();
            }
        }
    }

    fn start_workload(&mut self) {
        self.workload_start = self.now;
        for n in 0..self.cfg.nodes {
            let delay = if self.cfg.stagger_ms == 0 {
                0
            } else {
                self.rng.gen_range(0..=self.cfg.stagger_ms) * 1000
            };
            self.at(self.now + delay, Ev::Read(n));
        }
        if let Some(churn) = self.cfg.workload.churn.clone() {
            let times = churn.replace.min(self.cfg.nodes.saturating_sub(1));
            self.churn_left = times;
            if times > 0 {
                self.at(self.now + churn.every_ms * 1000, Ev::Churn(times));
            }
        }
    }

    fn churn(&mut self, left: usize) {
        self.churn_left = left.saturating_sub(1);
        let up: Vec<usize> = (1..self.peers.len())
            .filter(|&n| self.peers[n].up)
            .collect();
        if let Some(&victim) = up.choose(&mut self.rng) {
            self.peers[victim].up = false;
            let gone = self.peers[victim].id;
            let now = self.now;
            // A clean shutdown: every peer sees the connection close.
            for p in self.peers.iter_mut().filter(|p| p.up) {
                p.book.disconnected(&gone, now);
            }
        }
        let fresh = self.add_peer(true);
        self.joined_late += 1;
        self.at(self.now, Ev::Start(fresh));
        if left > 1 {
            let every = self.cfg.workload.churn.as_ref().map_or(0, |c| c.every_ms) * 1000;
            self.at(self.now + every, Ev::Churn(left - 1));
        }
    }

    /// Called when a node has read everything: is the whole workload done?
    pub(super) fn node_done(&mut self) {
        let all = self.churn_left == 0
            && self
                .peers
                .iter()
                .all(|p| !p.up || p.round >= self.cfg.rounds)
            && self
                .peers
                .iter()
                .take(self.cfg.nodes)
                .all(|p| p.up || p.round > 0 || p.late);
        if all && self.finished.is_none() {
            self.finished = Some(self.now);
        }
    }

    // --- Gossip and upstream ---

    fn store(&mut self, n: usize, key: usize, fetched: Us) {
        let now = self.now;
        let had = self.peers[n].store.insert(key, fetched).is_some();
        if !had {
            let s = self.spread.entry(key).or_insert((now, now, 0));
            s.0 = s.0.min(now);
            s.1 = s.1.max(now);
            s.2 += 1;
        }
    }

    fn fresh(&self, n: usize, key: usize) -> bool {
        self.peers[n]
            .store
            .get(&key)
            .is_some_and(|&f| self.now < f + self.cfg.ttl * 1_000_000)
    }

    /// Publishes an announce: flood-published to every member we are connected to,
    /// relayed one more hop to the rest.
    fn announce(&mut self, from: usize, key: usize, fetched: Us) {
        for (to, at) in self.gossip_deliveries(from) {
            self.at(at, Ev::Gossip { to, key, fetched });
        }
    }

    /// When a message `from` publishes reaches each node that gets it: one hop to its
    /// mesh members, two to the others; a lost delivery is repaired on a later
    /// heartbeat (IHAVE/IWANT), thrice.
    pub(super) fn gossip_deliveries(&mut self, from: usize) -> Vec<(usize, Us)> {
        let members: std::collections::HashSet<PeerId> =
            self.peers[from].book.members().into_iter().collect();
        let mut out = Vec::new();
        for to in 0..self.peers.len() {
            if to == from || !self.peers[to].up || self.peers[to].book.members().is_empty() {
                continue;
            }
            let hops = if members.contains(&self.peers[to].id) {
                1
            } else {
                2
            };
            let mut at = self.now;
            for _ in 0..3 {
                match (0..hops).map(|_| self.delay()).sum::<Option<Us>>() {
                    Some(d) => {
                        out.push((to, at + d));
                        break;
                    }
                    None => at += GOSSIP_REPAIR,
                }
            }
        }
        out
    }

    fn gossip_arrives(&mut self, to: usize, key: usize, fetched: Us) {
        if !self.peers[to].up {
            return;
        }
        self.store(to, key, fetched);
        self.arrived(to, key);
    }

    // --- The report ---

    fn report(&self) -> Report {
        let cfg = &self.cfg;
        let mut prop: Vec<f64> = self
            .spread
            .values()
            .filter(|s| s.2 >= cfg.nodes)
            .map(|s| (s.1 - s.0) as f64 / 1000.0)
            .collect();
        prop.sort_by(f64::total_cmp);
        let mut look = self.lookups.clone();
        look.sort_by(f64::total_cmp);
        let t = self.tally;
        let l = self.late;
        let requests = t.requests + l.requests;
        let rss = peak_rss_mb();
        let end = self.finished.unwrap_or(self.now).max(self.workload_start);
        Report {
            ledger: None,
            budget: self.net.budget.map(|budget| BudgetRun {
                budget,
                refusals: self.refusals,
                held_reads: self.held_reads,
                ledger_messages: self.ledger_messages,
                ledger: self.net.ledger,
            }),
            time: "simulated".into(),
            network: Some(Network {
                latency_ms: self.net.latency.as_secs_f64() * 1000.0,
                jitter: self.net.jitter,
                loss: self.net.loss,
                upstream_ms: self.net.upstream.as_secs_f64() * 1000.0,
                view: self.net.view,
                join_gap_ms: self.net.join_gap.as_secs_f64() * 1000.0,
            }),
            messages: self.messages,
            messages_per_request: self.messages as f64 / requests.max(1) as f64,
            workload: cfg.workload.name.clone(),
            nodes: cfg.nodes,
            keys: cfg.keys,
            rounds: cfg.rounds,
            strategy: "mesh".into(),
            seed: cfg.seed,
            stagger_ms: cfg.stagger_ms,
            ttl: cfg.ttl,
            lookup_timeout_ms: cfg.lookup_timeout.as_millis() as u64,
            requests,
            upstream_calls: self.upstream_calls,
            upstream_304: self.upstream_304,
            upstream_per_key: self.upstream_calls as f64 / cfg.keys as f64,
            graphql: GraphqlShare::of(
                &cfg.workload,
                cfg.keys,
                self.graphql_calls,
                self.upstream_calls,
            ),
            served_local: t.local + l.local,
            served_peer: t.peer + l.peer,
            served_coalesced: t.coalesced + l.coalesced,
            served_revalidated: t.revalidated + l.revalidated,
            served_miss: t.miss + l.miss,
            errors: 0,
            propagation_ms: Propagation::of(&prop),
            lookup_ms: Lookup::of(&look),
            // From the last node's start until full views (NaN: never).
            mesh_formation_s: self.view_converged.map_or(f64::NAN, |v| {
                let last_start = cfg.nodes.saturating_sub(1) as Us * us(self.net.join_gap);
                v.saturating_sub(last_start) as f64 / 1e6
            }),
            view_converged_s: self.view_converged.map_or(f64::NAN, |v| v as f64 / 1e6),
            wall_s: (end - self.workload_start) as f64 / 1e6,
            peak_rss_mb: rss,
            peak_rss_mb_per_node: rss / cfg.nodes as f64,
            late_joiners: (self.joined_late > 0).then_some(LateJoiners {
                nodes: self.joined_late,
                requests: l.requests,
                served_by_peers: l.peer + l.coalesced,
                misses: l.miss,
            }),
            propagation_samples: prop,
        }
    }
}
