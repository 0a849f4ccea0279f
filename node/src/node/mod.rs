//! The node: a store, an upstream, and (with a secret) the mesh.
//!
//! A read enters at [`Node::get`] and goes through these rooms, in order:
//!
//! 1. [`read`]: the local store; on a miss or an expired copy, single flight (one
//!    resolution per key on this node, every other reader joins it).
//! 2. [`peers`]: the peer phase. Ask the key's owner to fetch for everyone, wait for
//!    it when it says `Pending`, ask a couple of other members; bounded by
//!    [`Deadlines::lookup`](crate::config::Deadlines).
//! 3. [`fetch`]: the upstream phase: a conditional request when a copy is held; the
//!    verdict decides between store, refresh, stale and pass-through.
//! 4. [`writer`]: group commit. An entry is durable before the response that carried
//!    it is sent; a failed write is an error, never an acknowledgement.
//! 5. Announce (gossip) so every member holds it before it is asked for.
//!
//! Peers talk to us in [`inbound`] (gossip and requests, lookups answered) and
//! [`prefetch`] (bodies announced without data, pulled in the background). Every
//! decision those rooms take is a plain function in [`crate::policy`].
//!
//! Where to add things: an endpoint rule goes in `api/` (what is cacheable) or
//! `protocol::freshness` (how long); a wire message in `protocol::wire`, then its
//! handling in [`inbound`] and its decision in `policy`; a discovery method in
//! `network/`; a counter is one line in `stats.rs` plus the line that increments it.

mod admission;
mod bodyless;
mod bounded;
pub mod drive;
mod fetch;
mod gate;
mod health;
mod identity;
mod inbound;
mod invalidate;
mod peers;
mod prefetch;
mod read;
mod reannounce;
mod reply_cache;
mod sealed;
mod served;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use ghmesh_protocol::{CacheKey, EntryMeta, MeshKeys};
use ghmesh_store::{Store, StoreError};
use libp2p::PeerId;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::config::{Deadlines, NodeConfig};
use crate::network::{self, NetConfig, NetworkHandle, PeerInfo};
use crate::policy::book::PeerBook;
use crate::stats::{hit_rate, Counters, Stats};
use crate::upstream::Upstream;

pub use identity::load_or_create_identity;
pub use served::{Body, CacheStatus, GetError, Served};

use crate::limits::{MAX_WRITTEN_PATHS, PREFETCH_QUEUE, STORED_EVENTS, WRITE_QUEUE};
use health::Health;
use read::Flights;
use writer::{WriteJob, Writer};

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The store could not be opened (in use, corrupt, not writable).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The identity file could not be read or written.
    #[error("peer identity {path}: {detail}")]
    Identity {
        /// Path of the identity file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// The data dir could not be created.
    #[error("data dir {path} is not usable: {source}")]
    DataDir {
        /// Data dir.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The data dir belongs to another user.
    #[error("data dir {path} belongs to another user (uid {owner}), who could read or replace the cache and the peer identity")]
    DataDirOwner {
        /// Data dir.
        path: String,
        /// Its owner's uid.
        owner: u32,
    },
    /// Networking could not start.
    #[error(transparent)]
    Network(#[from] network::NetError),
}

/// Everything that exists only with a secret: the network, the keys that seal what
/// crosses it, and what we know and think of each peer.
struct Mesh {
    net: NetworkHandle,
    keys: MeshKeys,
    /// Admission, standing, budgets and nonces of every connected peer.
    book: Mutex<PeerBook>,
    /// Leases granted on keys we own: which member fetches each for the fleet.
    leases: Mutex<crate::policy::lease::Leases>,
    /// Body replies sealed recently, reused for the other members that pull the body.
    replies: Mutex<reply_cache::ReplyCache>,
    /// Woken when a member is admitted (a node's first reads wait for its first one).
    admitted: tokio::sync::Notify,
    /// Keys stored while nobody was subscribed to hear their announce.
    unannounced: Mutex<reannounce::Unannounced>,
}

/// State the writer shares with readers: who waits for which key, what was announced
/// without a body, and the stored-keys broadcast.
struct Signals {
    /// Readers waiting for a key's entry to arrive (from gossip or the writer).
    arrivals: Mutex<HashMap<CacheKey, Arc<tokio::sync::Notify>>>,
    /// Entries announced without body: who has them.
    bodyless: Mutex<bodyless::Bodyless>,
    /// Keys whose entry was stored or refreshed, after the commit.
    stored: broadcast::Sender<CacheKey>,
    /// Paths written to through a node's API, with when: copies fetched before are
    /// the old answer, whoever offers them.
    written: Mutex<HashMap<String, u64>>,
}

impl Signals {
    fn new() -> Self {
        Self {
            arrivals: Mutex::new(HashMap::new()),
            bodyless: Mutex::new(bodyless::Bodyless::default()),
            stored: broadcast::channel(STORED_EVENTS).0,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// When `path` was last written to (as far as this node knows).
    fn written_at(&self, path: &str) -> Option<u64> {
        self.written.lock().ok()?.get(path).copied()
    }

    /// Records writes to `paths` at `at_ms`, within [`MAX_WRITTEN_PATHS`] (the oldest
    /// records go first: a day later every copy of them has expired anyway).
    fn record_write(&self, paths: &[String], at_ms: u64) {
        let Ok(mut w) = self.written.lock() else {
            return;
        };
        for p in paths {
            if w.len() >= MAX_WRITTEN_PATHS && !w.contains_key(p) {
                if let Some(oldest) = w.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()) {
                    w.remove(&oldest);
                }
            }
            let at = w.entry(p.clone()).or_insert(at_ms);
            *at = (*at).max(at_ms);
        }
    }
}

struct Inner {
    cfg: NodeConfig,
    /// When the node started (unix ms): a node still learning the fleet waits a moment
    /// before it claims a key.
    started_ms: u64,
    /// The same moment on the monotonic clock: bounds the wait for a first member
    /// whatever the injected clock does.
    started_at: tokio::time::Instant,
    health: Arc<Health>,
    deadlines: Deadlines,
    clock: SharedClock,
    peer_id: PeerId,
    /// `peer_id` as text, as entries record their origin.
    me: String,
    store: Arc<Store>,
    upstream: Arc<dyn Upstream>,
    mesh: Option<Mesh>,
    flights: Flights,
    /// The cap on requests in flight to GitHub.
    gate: gate::Gate,
    signals: Arc<Signals>,
    writer: Writer,
    counters: Counters,
    registry: Mutex<Registry>,
    /// Gauges set from the stats as `/_ghmesh/metrics` is read.
    gauges: crate::stats::Gauges,
    /// The last hour of figures. A `std::sync::Mutex`: held only to push or copy
    /// samples, never across an await.
    history: Mutex<crate::history::History>,
    prefetch: mpsc::Sender<(EntryMeta, PeerId)>,
    /// Every task the node spawns; `shutdown` waits for them.
    tasks: TaskTracker,
    /// Cancelled when shutdown starts: loops stop taking new work.
    stopping: CancellationToken,
    /// Cancelled when shutdown's grace period ends: tasks still running are dropped.
    abort: CancellationToken,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.inner.peer_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the store (failing fast if another node holds it), loads the identity,
    /// starts the mesh when keys are configured, and spawns the background tasks.
    pub async fn start(cfg: NodeConfig, upstream: Arc<dyn Upstream>) -> Result<Node, NodeError> {
        identity::create_private_dir(&cfg.data_dir)?;
        let store = Arc::new(Store::open(cfg.data_dir.join("cache.redb"), cfg.limits)?);
        Self::start_with_store(cfg, store, upstream).await
    }

    /// [`Node::start`] on a store the caller opened (tests that inject disk faults).
    pub async fn start_with_store(
        cfg: NodeConfig,
        store: Arc<Store>,
        upstream: Arc<dyn Upstream>,
    ) -> Result<Node, NodeError> {
        identity::create_private_dir(&cfg.data_dir)?;
        let keypair = load_or_create_identity(&cfg.data_dir.join("identity.key"))?;
        let peer_id = keypair.public().to_peer_id();
        let deadlines = cfg.deadlines;
        let upstream_concurrency = cfg.upstream_concurrency;
        let mut registry = Registry::default();
        let counters = Counters::default();
        counters.register(&mut registry);
        let gauges = crate::stats::Gauges::default();
        gauges.register(&mut registry);

        let (mesh, events) = match &cfg.keys {
            Some(keys) => {
                let (mesh, events) = start_mesh(&cfg, keys, keypair, &mut registry).await?;
                (Some(mesh), Some(events))
            }
            None => (None, None),
        };

        let signals = Arc::new(Signals::new());
        let tasks = TaskTracker::new();
        let health = Arc::new(Health::default());
        let (writer, writer_rx) = Writer::channel(WRITE_QUEUE);
        let (prefetch_tx, prefetch_rx) = mpsc::channel(PREFETCH_QUEUE);
        let node = Node {
            inner: Arc::new(Inner {
                clock: cfg.clock.clone(),
                me: peer_id.to_string(),
                started_ms: cfg.clock.now_ms(),
                started_at: tokio::time::Instant::now(),
                health: health.clone(),
                cfg,
                deadlines,
                peer_id,
                store: store.clone(),
                upstream,
                mesh,
                flights: Flights::default(),
                gate: gate::Gate::new(upstream_concurrency),
                signals: signals.clone(),
                writer,
                counters: counters.clone(),
                registry: Mutex::new(registry),
                gauges,
                history: Mutex::default(),
                prefetch: prefetch_tx,
                tasks: tasks.clone(),
                stopping: CancellationToken::new(),
                abort: CancellationToken::new(),
            }),
        };
        // The writer owns only what it writes to and signals: it ends when the last
        // node handle is gone (its queue closes) or when shutdown asks it to stop.
        let writer_task = writer::run(
            writer::WriterParts {
                store,
                signals,
                counters,
                clock: node.inner.clock.clone(),
                health,
                reopen_window: deadlines.store_reopen,
            },
            writer_rx,
        );
        node.inner.writer.set_task(tokio::spawn(writer_task));
        // The loops below hold only a weak reference, so that dropping every handle
        // ends them too; `shutdown` ends them at once.
        let weak = Arc::downgrade(&node.inner);
        if let Some(events) = events {
            tasks.spawn(inbound::run(weak.clone(), events));
            tasks.spawn(prefetch::run(weak.clone(), prefetch_rx));
            tasks.spawn(admission::sweep(weak.clone()));
        }
        tasks.spawn(history_sampler(weak.clone()));
        tasks.spawn(recency_flusher(weak));
        Ok(node)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The network handle, when P2P is on.
    pub fn network(&self) -> Option<&NetworkHandle> {
        self.inner.mesh.as_ref().map(|m| &m.net)
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The upstream.
    pub fn upstream(&self) -> &Arc<dyn Upstream> {
        &self.inner.upstream
    }

    /// The clock this node reads the time from.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Keys as their entries are durably stored or refreshed (a bounded broadcast: a
    /// slow receiver misses events rather than slowing the node).
    pub fn subscribe_stored(&self) -> broadcast::Receiver<CacheKey> {
        self.inner.signals.stored.subscribe()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Listen addresses with `/p2p/<id>` (empty without P2P).
    pub fn listen_addrs(&self) -> Vec<libp2p::Multiaddr> {
        self.network().map(|n| n.listen_addrs()).unwrap_or_default()
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Spawns owned work: `shutdown` waits for it, then drops it after the grace
    /// period.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let abort = self.inner.abort.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = abort.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// Why the node is degraded or failed (`None`: healthy).
    pub fn degraded(&self) -> Option<String> {
        self.inner.health.reason()
    }

    /// Completes when the node can no longer keep its promises (its store failed and
    /// could not be reopened), with the reason; the daemon exits on it.
    pub async fn failed(&self) -> String {
        self.inner.health.failed.cancelled().await;
        self.degraded().unwrap_or_else(|| "the node failed".into())
    }

    /// Stats snapshot.
    pub async fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let net = match self.network() {
            Some(n) => n.stats().await.unwrap_or_default(),
            None => Default::default(),
        };
        let saved = c.saved();
        let now = self.now_ms();
        Stats {
            peer_id: self.inner.me.clone(),
            p2p: self.inner.mesh.is_some(),
            connected_peers: net.connected_peers,
            mesh_peers: net.mesh_peers,
            members: self.members().len(),
            members_on_probation: self.book(|b| b.on_probation(now)).unwrap_or(0),
            peer_budgets_ms: self
                .book(|b| b.budgets(self.inner.deadlines.budget_rule()))
                .unwrap_or_default()
                .into_iter()
                .map(|(p, d)| (p.to_string(), d.as_millis() as u64))
                .collect(),
            degraded: self.degraded(),
            entries: self.inner.store.len(),
            bytes: self.inner.store.bytes(),
            counters: c.snapshot(),
            api_calls_saved: saved,
            hit_rate: hit_rate(saved, c.misses.get()),
            dropped_events: net.dropped_events,
            rate_limit: self.inner.upstream.rate_limit(),
            listen: net.listen,
        }
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let mut peers = match self.network() {
            Some(n) => n.peers().await.unwrap_or_default(),
            None => Vec::new(),
        };
        let members: std::collections::HashSet<String> =
            self.members().iter().map(|m| m.to_string()).collect();
        for p in &mut peers {
            p.member = members.contains(&p.peer_id);
        }
        peers
    }

    /// Adds the figures of now to the history.
    async fn record_sample(&self) {
        let sample = crate::history::Sample::of(&self.stats().await, self.now_ms());
        if let Ok(mut h) = self.inner.history.lock() {
            h.record(sample);
        }
    }

    /// The last hour of figures, ending with the figures of now.
    pub async fn history(&self) -> crate::history::HistoryReport {
        let now = crate::history::Sample::of(&self.stats().await, self.now_ms());
        match self.inner.history.lock() {
            Ok(h) => crate::history::HistoryReport::new(&h, now),
            Err(_) => crate::history::HistoryReport::new(&Default::default(), now),
        }
    }

    /// Prometheus text exposition of our counters and gauges (read from the stats at
    /// this moment) and libp2p's metrics.
    pub async fn metrics(&self) -> String {
        self.inner.gauges.set(&self.stats().await);
        self.metrics_text()
    }

    /// Prometheus text exposition of our counters and libp2p's metrics, with gauges as
    /// last set by [`Node::metrics`].
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        if let Ok(reg) = self.inner.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        }
        out
    }

    /// Makes every queued write durable and records read recency.
    pub async fn flush(&self) -> Result<(), GetError> {
        self.write(WriteJob::Flush).await
    }

    /// Stops the node, returning within three times
    /// [`Deadlines::shutdown`](crate::config::Deadlines):
    /// loops stop taking work; owned tasks (resolutions, peer requests, publishes,
    /// body pulls) get one grace period to finish (the last fifth of it after they
    /// were told to drop what they do); the writer commits everything queued before it
    /// was told to stop (a second period); the network loop closes every connection
    /// and ends (a third). Reads after this fail with [`GetError::Closed`].
    pub async fn shutdown(&self) {
        let grace = self.inner.deadlines.shutdown;
        self.inner.stopping.cancel();
        self.inner.tasks.close();
        // Aborted tasks end at their next await: a fifth of the period is plenty, and
        // keeps the whole within the bound stated above.
        let polite = grace.mul_f64(0.8);
        if tokio::time::timeout(polite, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::debug!("shutdown: dropping tasks still running after the grace period");
            self.inner.abort.cancel();
            let _ = tokio::time::timeout(grace - polite, self.inner.tasks.wait()).await;
        }
        if !self.inner.writer.stop(grace).await {
            tracing::warn!("shutdown: the store writer did not finish in time");
        }
        if let Some(net) = self.network() {
            let _ = tokio::time::timeout(grace, net.shutdown()).await;
        }
    }
}

/// Starts the network with the mesh's keys, and the mesh state the node keeps about
/// it; the events are the inbound loop's to read.
async fn start_mesh(
    cfg: &NodeConfig,
    keys: &MeshKeys,
    keypair: libp2p::identity::Keypair,
    registry: &mut Registry,
) -> Result<(Mesh, mpsc::Receiver<crate::network::NetEvent>), NodeError> {
    let deadlines = cfg.deadlines;
    let net_cfg = NetConfig {
        listen: cfg.listen.clone(),
        bootstrap: cfg.bootstrap.clone(),
        external: cfg.external.clone(),
        topic: keys.topic().to_string(),
        rendezvous: keys.rendezvous_key().to_vec(),
        discovery_interval: cfg.discovery_interval,
        behaviour: network::behaviour::BehaviourConfig {
            heartbeat: cfg.heartbeat,
            mdns: cfg.mdns,
            mdns_query_interval: cfg.mdns_query_interval,
            provider_ttl: deadlines.provider_ttl,
            ping_interval: deadlines.ping_interval,
            ping_timeout: deadlines.ping_timeout,
        },
    };
    let (net, events) = network::start(keypair, net_cfg, registry).await?;
    let mesh = Mesh {
        net,
        keys: keys.clone(),
        book: Mutex::new(PeerBook::default()),
        leases: Mutex::default(),
        replies: Mutex::default(),
        admitted: tokio::sync::Notify::new(),
        unannounced: Mutex::default(),
    };
    Ok((mesh, events))
}

/// Runs `work` every `period` (read from the node) until shutdown, until the node is
/// gone (only a weak reference is held between runs), or until `work` says stop.
async fn periodically<F, Fut>(
    node: std::sync::Weak<Inner>,
    period: impl FnOnce(&Inner) -> std::time::Duration,
    mut work: F,
) where
    F: FnMut(Node) -> Fut,
    Fut: Future<Output = bool>,
{
    let Some((every, stopping)) = node.upgrade().map(|i| (period(&i), i.stopping.clone())) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stopping.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some(inner) = node.upgrade() else { break };
        if !work(Node { inner }).await {
            break;
        }
    }
}

/// Samples the node's figures for `/_ghmesh/history` every
/// [`crate::history::SAMPLE_EVERY`].
async fn history_sampler(node: std::sync::Weak<Inner>) {
    // The start is a sample too: the chart's first step is then the node's first
    // interval, not nothing.
    if let Some(inner) = node.upgrade() {
        Node { inner }.record_sample().await;
    }
    periodically(
        node,
        |_| crate::history::SAMPLE_EVERY,
        |node| async move {
            node.record_sample().await;
            true
        },
    )
    .await;
}

/// Recency of reads is applied with writes; an idle node still records it now and
/// then.
async fn recency_flusher(node: std::sync::Weak<Inner>) {
    periodically(
        node,
        |i| i.deadlines.recency_flush,
        |node| async move {
            if let Err(e) = node.flush().await {
                tracing::debug!("recency flush: {e}");
            }
            true
        },
    )
    .await;
}
