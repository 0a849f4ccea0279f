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
//! The parts each own one concern and its lock, in a file with their methods:
//! [`flights`] (single flight), [`mesh`] (network, keys, peer book, leases, sealed
//! replies), [`signals`] (arrivals, body-less announces, writes the writer shares),
//! [`writer`], [`gate`] (the upstream cap), [`health`], [`telemetry`] (counters,
//! gauges, history), [`tasks`] (owned work and shutdown). `impl Node` blocks are the
//! steps that coordinate several parts; [`announce`] publishes, [`sealed`] seals and
//! opens, [`admission`] greets.
//!
//! Where to add things: an endpoint rule goes in `api/` (what is cacheable) or
//! `protocol::freshness` (how long); a wire message in `protocol::wire`, then its
//! handling in [`inbound`] and its decision in `policy`; a discovery method in
//! `network/`; a counter is one line in `stats.rs` plus the line that increments it.

mod admission;
mod announce;
mod bodyless;
mod bounded;
pub mod drive;
mod fetch;
mod flights;
mod gate;
mod health;
mod identity;
mod inbound;
mod invalidate;
mod mesh;
mod peers;
mod prefetch;
mod read;
mod reply_cache;
mod sealed;
mod served;
mod signals;
mod tasks;
mod telemetry;
mod writer;

use std::future::Future;
use std::sync::Arc;

use ghmesh_protocol::{CacheKey, EntryMeta};
use ghmesh_store::{Store, StoreError};
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};

use crate::clock::SharedClock;
use crate::config::{Deadlines, NodeConfig};
use crate::network::{self, NetworkHandle, PeerInfo};
use crate::stats::{hit_rate, Counters, Stats};
use crate::upstream::Upstream;

pub use identity::load_or_create_identity;
pub use served::{Body, CacheStatus, GetError, Served};
pub use writer::WriteError;

use crate::limits::{PREFETCH_QUEUE, WRITE_QUEUE};
use flights::Flights;
use health::Health;
use mesh::Mesh;
use signals::Signals;
use tasks::Tasks;
use telemetry::Telemetry;
use writer::{Urgency, WriteJob, Writer};

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

/// The node's parts. Each owns one concern and its lock; `impl Node` coordinates them.
struct Inner {
    /// The settings, as resolved; deadlines and the clock are read from here.
    cfg: NodeConfig,
    started: Started,
    me: Me,
    store: Arc<Store>,
    upstream: Arc<dyn Upstream>,
    /// The network and what we know of peers (`None` without a secret).
    mesh: Option<Mesh>,
    flights: Flights,
    /// The cap on requests in flight to GitHub.
    gate: gate::Gate,
    signals: Arc<Signals>,
    writer: Writer,
    health: Arc<Health>,
    telemetry: Telemetry,
    prefetch: mpsc::Sender<(EntryMeta, PeerId)>,
    tasks: Tasks,
}

/// When the node started, on both clocks.
struct Started {
    /// On the injected clock (unix ms): a node still learning the fleet waits a moment
    /// before it claims a key.
    unix_ms: u64,
    /// On the monotonic clock: bounds the wait for a first member whatever the
    /// injected clock does.
    at: tokio::time::Instant,
}

/// This node's peer id, and its text form, made once: every local hit compares an
/// entry's origin against it.
struct Me {
    id: PeerId,
    text: String,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.inner.me.id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the store (failing fast if another node holds it), loads the identity,
    /// starts the mesh when keys are configured, and spawns the background tasks.
    pub async fn start(cfg: NodeConfig, upstream: Arc<dyn Upstream>) -> Result<Node, NodeError> {
        identity::create_private_dir(&cfg.data_dir)?;
        let store = Arc::new(Store::open(cfg.data_dir.join("cache.redb"), cfg.limits)?);
        Self::start_parts(cfg, store, upstream).await
    }

    /// [`Node::start`] on a store the caller opened (tests that inject disk faults).
    pub async fn start_with_store(
        cfg: NodeConfig,
        store: Arc<Store>,
        upstream: Arc<dyn Upstream>,
    ) -> Result<Node, NodeError> {
        identity::create_private_dir(&cfg.data_dir)?;
        Self::start_parts(cfg, store, upstream).await
    }

    /// Makes the parts in their order (the identity, the registry the network adds
    /// its metrics to, the mesh), then the writer and the loops that serve them.
    async fn start_parts(
        cfg: NodeConfig,
        store: Arc<Store>,
        upstream: Arc<dyn Upstream>,
    ) -> Result<Node, NodeError> {
        let keypair = load_or_create_identity(&cfg.data_dir.join("identity.key"))?;
        let id = keypair.public().to_peer_id();
        let (mut registry, counters, gauges) = Telemetry::registry();
        let (mesh, events) = match &cfg.keys {
            Some(keys) => {
                let (mesh, events) = Mesh::start(&cfg, keys, keypair, &mut registry).await?;
                (Some(mesh), Some(events))
            }
            None => (None, None),
        };
        let (writer, writer_rx) = Writer::channel(WRITE_QUEUE);
        let (prefetch_tx, prefetch_rx) = mpsc::channel(PREFETCH_QUEUE);
        upstream.set_peer_id(id);
        let node = Node {
            inner: Arc::new(Inner {
                started: Started {
                    unix_ms: cfg.clock.now_ms(),
                    at: tokio::time::Instant::now(),
                },
                me: Me {
                    id,
                    text: id.to_string(),
                },
                store,
                upstream,
                mesh,
                flights: Flights::default(),
                gate: gate::Gate::new(cfg.upstream_concurrency),
                signals: Arc::new(Signals::new()),
                writer,
                health: Arc::new(Health::default()),
                telemetry: Telemetry::new(registry, counters, gauges),
                prefetch: prefetch_tx,
                tasks: Tasks::new(),
                cfg,
            }),
        };
        node.start_writer(writer_rx);
        node.start_loops(events, prefetch_rx);
        Ok(node)
    }

    /// The writer owns only what it writes to and signals: it ends when the last node
    /// handle is gone (its queue closes) or when shutdown asks it to stop.
    fn start_writer(&self, rx: mpsc::Receiver<writer::WriterMsg>) {
        let inner = &self.inner;
        let parts = writer::WriterParts {
            store: inner.store.clone(),
            signals: inner.signals.clone(),
            counters: inner.telemetry.counters.clone(),
            clock: inner.cfg.clock.clone(),
            health: inner.health.clone(),
            reopen_window: inner.cfg.deadlines.store_reopen,
        };
        inner.writer.set_task(tokio::spawn(writer::run(parts, rx)));
    }

    /// The loops hold only a weak reference, so that dropping every handle ends them
    /// too; `shutdown` ends them at once.
    fn start_loops(
        &self,
        events: Option<mpsc::Receiver<crate::network::NetEvent>>,
        prefetch_rx: mpsc::Receiver<(EntryMeta, PeerId)>,
    ) {
        let weak = Arc::downgrade(&self.inner);
        let tasks = &self.inner.tasks;
        if let Some(events) = events {
            tasks.spawn_loop(inbound::run(weak.clone(), events));
            tasks.spawn_loop(prefetch::run(weak.clone(), prefetch_rx));
            tasks.spawn_loop(admission::sweep(weak.clone()));
            tasks.spawn_loop(admission::repair(weak.clone()));
            tasks.spawn_loop(announce::ledger(weak.clone()));
        }
        tasks.spawn_loop(history_sampler(weak.clone()));
        tasks.spawn_loop(recency_flusher(weak));
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.me.id
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
        &self.inner.cfg.clock
    }

    /// The node's deadlines, as configured.
    fn deadlines(&self) -> &Deadlines {
        &self.inner.cfg.deadlines
    }

    /// Keys as their entries are durably stored or refreshed (a bounded broadcast: a
    /// slow receiver misses events rather than slowing the node).
    pub fn subscribe_stored(&self) -> broadcast::Receiver<CacheKey> {
        self.inner.signals.stored.subscribe()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.telemetry.counters
    }

    /// Listen addresses with `/p2p/<id>` (empty without P2P).
    pub fn listen_addrs(&self) -> Vec<libp2p::Multiaddr> {
        self.network().map(|n| n.listen_addrs()).unwrap_or_default()
    }

    fn now_ms(&self) -> u64 {
        self.clock().now_ms()
    }

    /// Spawns owned work: `shutdown` waits for it, then drops it after the grace
    /// period.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(work);
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
        let c = self.counters();
        let net = match self.network() {
            Some(n) => n.stats().await.unwrap_or_default(),
            None => Default::default(),
        };
        let saved = c.saved();
        let now = self.now_ms();
        Stats {
            peer_id: self.inner.me.text.clone(),
            p2p: self.inner.mesh.is_some(),
            connected_peers: net.connected_peers,
            mesh_peers: net.mesh_peers,
            members: self.members().len(),
            members_on_probation: self.book(|b| b.on_probation(now)).unwrap_or(0),
            peer_budgets_ms: self
                .book(|b| b.budgets(self.deadlines().budget_rule()))
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
            rate_limits: self.inner.upstream.rate_limits(),
            share_waits: self.inner.upstream.share_waits(),
            listen: net.listen,
            reach: crate::network::ReachStats {
                direct_to_all: self.book(|b| b.mine().direct_to_all).flatten(),
                ..net.reach
            },
        }
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let mut peers = match self.network() {
            Some(n) => n.peers().await.unwrap_or_default(),
            None => Vec::new(),
        };
        let members: std::collections::HashMap<String, crate::placement::Standing> = self
            .book(|b| b.members_standing())
            .unwrap_or_default()
            .into_iter()
            .map(|(m, s)| (m.to_string(), s))
            .collect();
        for p in &mut peers {
            if let Some(standing) = members.get(&p.peer_id) {
                p.member = true;
                p.reachability = standing.reach;
                p.direct_to_all = standing.direct_to_all;
            }
        }
        peers
    }

    /// The figures of now, as a history sample.
    async fn sample(&self) -> crate::history::Sample {
        crate::history::Sample::of(&self.stats().await, self.now_ms())
    }

    /// The last hour of figures, ending with the figures of now.
    pub async fn history(&self) -> crate::history::HistoryReport {
        let now = self.sample().await;
        self.inner.telemetry.history(now)
    }

    /// Prometheus text exposition of our counters and gauges (read from the stats at
    /// this moment) and libp2p's metrics.
    pub async fn metrics(&self) -> String {
        self.inner.telemetry.set_gauges(&self.stats().await);
        self.metrics_text()
    }

    /// Prometheus text exposition of our counters and libp2p's metrics, with gauges as
    /// last set by [`Node::metrics`].
    pub fn metrics_text(&self) -> String {
        self.inner.telemetry.text()
    }

    /// Makes every queued write durable and records read recency.
    pub async fn flush(&self) -> Result<(), WriteError> {
        self.write(WriteJob::Flush).await
    }

    /// Queues a write and waits until it is durable; a failure is the caller's error.
    async fn write(&self, job: WriteJob) -> Result<(), WriteError> {
        self.inner.writer.write(job, Urgency::Now).await
    }

    /// The same for replication nobody reads yet: it may share a later transaction.
    async fn write_background(&self, job: WriteJob) -> Result<(), WriteError> {
        self.inner.writer.write(job, Urgency::Background).await
    }

    /// Queues a write from gossip without waiting. When the writer is behind, the write
    /// is dropped (and counted): peers' announces must not pile up in memory, and a
    /// dropped entry is simply looked up again on its next miss.
    fn write_behind(&self, job: WriteJob) {
        if !self.inner.writer.write_behind(job) {
            self.counters().dropped_writes.inc();
        }
    }

    /// Stops the node, returning within three times
    /// [`Deadlines::shutdown`](crate::config::Deadlines):
    /// loops stop taking work; owned tasks (resolutions, peer requests, publishes,
    /// body pulls) get one grace period to finish (the last fifth of it after they
    /// were told to drop what they do); the writer commits everything queued before it
    /// was told to stop (a second period); the network loop closes every connection
    /// and ends (a third). Reads after this fail with [`GetError::Closed`].
    pub async fn shutdown(&self) {
        let grace = self.deadlines().shutdown;
        self.inner.tasks.wind_down(grace).await;
        if !self.inner.writer.stop(grace).await {
            tracing::warn!("shutdown: the store writer did not finish in time");
        }
        if let Some(net) = self.network() {
            let _ = tokio::time::timeout(grace, net.shutdown()).await;
        }
    }
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
    let Some((every, stopping)) = node
        .upgrade()
        .map(|i| (period(&i), i.tasks.stopping.clone()))
    else {
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
        let node = Node { inner };
        node.inner.telemetry.record(node.sample().await);
    }
    periodically(
        node,
        |_| crate::history::SAMPLE_EVERY,
        |node| async move {
            node.inner.telemetry.record(node.sample().await);
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
        |i| i.cfg.deadlines.recency_flush,
        |node| async move {
            if let Err(e) = node.flush().await {
                tracing::debug!("recency flush: {e}");
            }
            true
        },
    )
    .await;
}
