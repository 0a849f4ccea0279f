//! The node: a store, an upstream, and (with a secret) the mesh.
//!
//! A read goes: local store → (on a miss) the key's owner among the members, then a
//! couple of other members → upstream. Concurrent reads of one key on one node share
//! one resolution (single-flight); an owner already resolving a key answers `Pending`
//! and the asker waits for that result instead of fetching too. Peers make things
//! faster, never unavailable: every peer step has a deadline and falls through.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ghmesh_protocol::entry::{KEPT_HEADERS, MAX_BODY_LEN};
use ghmesh_protocol::wire::{MAX_GOSSIP_MESSAGE, MAX_RR_MESSAGE};
use ghmesh_protocol::{
    freshness_ttl_secs, merge, open, seal, Announce, BodyReply, CacheKey, CanonicalRequest, Entry,
    EntryMeta, FetchBody, Lookup, LookupReply, Merge, MeshKeys, Message, Refresh, SealLimits,
};
use ghmesh_store::{Store, StoreError};
use libp2p::gossipsub::MessageAcceptance;
use libp2p::{identity, PeerId};
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};

use crate::config::{MeshMode, NodeConfig};
use crate::network::{self, NetConfig, NetEvent, NetworkHandle, PeerInfo};
use crate::placement;
use crate::stats::{hit_rate, Counters, Stats};
use crate::upstream::{classify, Conditional, Upstream, UpstreamError, UpstreamResponse, Verdict};

/// Oldest sealed message accepted: replaying captured traffic later is refused.
const MAX_MESSAGE_AGE_SECS: u64 = 300;
/// Most keys being resolved at once; beyond it peers' fetch requests get `NotFound`.
const MAX_INFLIGHT: usize = 4096;
/// Most announced-without-body entries remembered.
const MAX_BODYLESS: usize = 8192;
/// Most peers remembered as having sent something that failed to open.
const MAX_BAD_PEERS: usize = 1024;
/// Group commit: most writes per transaction.
const MAX_WRITE_BATCH: usize = 256;
/// Members asked (besides the owner) on a miss.
const EXTRA_ASKS: usize = 2;
/// Bodies announced without data are pulled at once up to this size (larger ones when
/// first read): one transfer per node, instead of gossip's push to every mesh peer.
const PREFETCH_MAX_BODY: u64 = 512 * 1024;
/// Announced bodies waiting to be pulled; beyond it they are fetched when read.
const PREFETCH_QUEUE: usize = 1024;
/// Body pulls in flight at once.
const PREFETCH_CONCURRENCY: usize = 8;

/// How a response was produced: the `x-ghmesh-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// Fresh, local, fetched by this node.
    Hit,
    /// Fresh, the entry came from a peer.
    Peer,
    /// Fetched upstream, quota spent.
    Miss,
    /// Expired, upstream answered 304.
    Revalidated,
    /// Joined an in-flight fetch here or on a peer.
    Coalesced,
    /// Expired, upstream failed, old copy served.
    Stale,
    /// Not cacheable, passed through.
    Bypass,
}

impl CacheStatus {
    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Peer => "peer",
            Self::Miss => "miss",
            Self::Revalidated => "revalidated",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }
}

/// What answers a request.
#[derive(Debug, Clone)]
pub enum Body {
    /// A cached entry.
    Entry(Arc<Entry>),
    /// An upstream response passed through (errors, uncacheable).
    Upstream(Arc<UpstreamResponse>),
}

/// A served request.
#[derive(Debug, Clone)]
pub struct Served {
    /// The answer.
    pub body: Body,
    /// How it was produced.
    pub status: CacheStatus,
}

impl Served {
    /// HTTP status of the answer.
    pub fn http_status(&self) -> u16 {
        match &self.body {
            Body::Entry(e) => e.meta.status,
            Body::Upstream(r) => r.status,
        }
    }

    /// Response body bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Entry(e) => &e.body,
            Body::Upstream(r) => &r.body,
        }
    }
}

/// Failures of a read that produced no response at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GetError {
    /// Upstream unreachable or timed out and nothing cached.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// The store failed.
    #[error("cache store: {0}")]
    Store(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Closed,
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
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
    /// Networking could not start.
    #[error(transparent)]
    Network(#[from] network::NetError),
}

type Flight = watch::Receiver<Option<Result<Served, GetError>>>;

enum WriteJob {
    /// Our own upstream fetch: always the newest.
    Put(Entry),
    /// From a peer: apply the newer-wins rule.
    Merge(Entry),
    /// After a 304 here or on a peer.
    Refresh(Refresh),
    /// Make everything queued so far durable, then answer.
    Flush,
}

struct Inner {
    cfg: NodeConfig,
    peer_id: PeerId,
    store: Arc<Store>,
    upstream: Arc<dyn Upstream>,
    net: Option<NetworkHandle>,
    keys: Option<MeshKeys>,
    inflight: Mutex<HashMap<CacheKey, Flight>>,
    arrivals: Mutex<HashMap<CacheKey, Arc<Notify>>>,
    bodyless: Mutex<HashMap<CacheKey, (EntryMeta, PeerId)>>,
    bad_peers: Mutex<HashSet<PeerId>>,
    writer: mpsc::Sender<(WriteJob, Option<oneshot::Sender<()>>)>,
    counters: Counters,
    registry: Mutex<Registry>,
    /// Keys whose entry was stored or refreshed, after the commit.
    stored: broadcast::Sender<CacheKey>,
    /// Announced bodies to pull from their announcer.
    prefetch: mpsc::Sender<(EntryMeta, PeerId)>,
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

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Loads the peer identity from `path`, or creates one (file mode 0600).
pub fn load_or_create_identity(path: &Path) -> Result<identity::Keypair, NodeError> {
    let err = |detail: String| NodeError::Identity {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::read(path) {
        Ok(bytes) => identity::Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            err(format!(
                "unreadable ({e}); move it aside to get a new peer id"
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            write_private(path, &bytes).map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes a file readable only by us, atomically (temp file + rename).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn seal_limits(max_len: usize) -> SealLimits {
    SealLimits {
        max_len,
        max_age_secs: MAX_MESSAGE_AGE_SECS,
    }
}

impl Node {
    /// Opens the store (failing fast if another node holds it), loads the identity,
    /// starts the mesh when keys are configured, and spawns the background tasks.
    pub async fn start(cfg: NodeConfig, upstream: Arc<dyn Upstream>) -> Result<Node, NodeError> {
        create_private_dir(&cfg.data_dir)?;
        let store = Arc::new(Store::open(cfg.data_dir.join("cache.redb"), cfg.limits)?);
        let keypair = load_or_create_identity(&cfg.data_dir.join("identity.key"))?;
        let peer_id = keypair.public().to_peer_id();
        let mut registry = Registry::default();
        let counters = Counters::default();
        counters.register(&mut registry);

        let (net, events) = match &cfg.keys {
            Some(keys) => {
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
                        provider_ttl: Duration::from_secs(3600),
                    },
                };
                let (h, ev) = network::start(keypair, net_cfg, &mut registry).await?;
                (Some(h), Some(ev))
            }
            None => (None, None),
        };

        let (writer_tx, writer_rx) = mpsc::channel(4096);
        let (prefetch_tx, prefetch_rx) = mpsc::channel(PREFETCH_QUEUE);
        let node = Node {
            inner: Arc::new(Inner {
                keys: cfg.keys.clone(),
                cfg,
                peer_id,
                store,
                upstream,
                net,
                inflight: Mutex::new(HashMap::new()),
                arrivals: Mutex::new(HashMap::new()),
                bodyless: Mutex::new(HashMap::new()),
                bad_peers: Mutex::new(HashSet::new()),
                writer: writer_tx,
                counters,
                registry: Mutex::new(registry),
                stored: broadcast::channel(4096).0,
                prefetch: prefetch_tx,
            }),
        };
        tokio::spawn(node.clone().run_writer(writer_rx));
        if let Some(events) = events {
            tokio::spawn(node.clone().run_events(events));
            tokio::spawn(node.clone().run_prefetch(prefetch_rx));
        }
        let weak = Arc::downgrade(&node.inner);
        tokio::spawn(async move {
            // Recency of reads is applied with writes; an idle node still records it.
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let store = inner.store.clone();
                drop(inner);
                let _ = tokio::task::spawn_blocking(move || store.flush()).await;
            }
        });
        Ok(node)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The network handle, when P2P is on.
    pub fn network(&self) -> Option<&NetworkHandle> {
        self.inner.net.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The upstream.
    pub fn upstream(&self) -> &Arc<dyn Upstream> {
        &self.inner.upstream
    }

    /// Keys as their entries are durably stored or refreshed (a bounded broadcast: a
    /// slow receiver misses events rather than slowing the node).
    pub fn subscribe_stored(&self) -> broadcast::Receiver<CacheKey> {
        self.inner.stored.subscribe()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Listen addresses with `/p2p/<id>` (empty without P2P).
    pub fn listen_addrs(&self) -> Vec<libp2p::Multiaddr> {
        self.inner
            .net
            .as_ref()
            .map(|n| n.listen_addrs())
            .unwrap_or_default()
    }

    /// Reads `req` through the cache.
    pub async fn get(&self, req: CanonicalRequest) -> Result<Served, GetError> {
        let key = req.key();
        let local = self.local(&key);
        if let Some(e) = &local {
            if e.meta.is_fresh(now_ms()) {
                return Ok(self.served_local(e.clone()));
            }
        }
        let (flight, leader) = self.join_or_start(req, key, local, true);
        let res = self.await_flight(flight).await;
        match res {
            Ok(mut served) if !leader => {
                if served.status != CacheStatus::Stale {
                    served.status = CacheStatus::Coalesced;
                }
                self.count(served.status);
                Ok(served)
            }
            Ok(served) => {
                self.count(served.status);
                Ok(served)
            }
            Err(e) => Err(e),
        }
    }

    /// Passes a request through uncached (non-GET, or the client's own token).
    pub async fn forward(
        &self,
        method: &str,
        path_and_query: &str,
        headers: Vec<(String, String)>,
        body: bytes::Bytes,
    ) -> Result<Served, GetError> {
        self.inner.counters.upstream_calls.inc();
        self.inner.counters.bypass.inc();
        let resp = tokio::time::timeout(
            self.inner.cfg.upstream_timeout,
            self.inner
                .upstream
                .forward(method, path_and_query, headers, body),
        )
        .await
        .map_err(|_| UpstreamError::Timeout)??;
        Ok(Served {
            body: Body::Upstream(Arc::new(resp)),
            status: CacheStatus::Bypass,
        })
    }

    fn local(&self, key: &CacheKey) -> Option<Entry> {
        match self.inner.store.get(key) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%key, "store read failed, treating as a miss: {e}");
                None
            }
        }
    }

    fn served_local(&self, e: Entry) -> Served {
        let status = if e.meta.origin == self.inner.peer_id.to_string() {
            CacheStatus::Hit
        } else {
            CacheStatus::Peer
        };
        self.count(status);
        Served {
            body: Body::Entry(Arc::new(e)),
            status,
        }
    }

    fn count(&self, status: CacheStatus) {
        let c = &self.inner.counters;
        match status {
            CacheStatus::Hit => c.hits.inc(),
            CacheStatus::Peer => c.peer_hits.inc(),
            CacheStatus::Miss => c.misses.inc(),
            CacheStatus::Revalidated => c.revalidated.inc(),
            CacheStatus::Coalesced => c.coalesced.inc(),
            CacheStatus::Stale => c.stale_served.inc(),
            CacheStatus::Bypass => c.bypass.inc(),
        };
    }

    /// Single-flight: join the resolution of `key` in progress, or start one in its own
    /// task (so that a caller going away does not cancel it for the others).
    fn join_or_start(
        &self,
        req: CanonicalRequest,
        key: CacheKey,
        local: Option<Entry>,
        ask_peers: bool,
    ) -> (Flight, bool) {
        let Ok(mut map) = self.inner.inflight.lock() else {
            let (_tx, rx) = watch::channel(Some(Err(GetError::Closed)));
            return (rx, true);
        };
        if let Some(rx) = map.get(&key) {
            return (rx.clone(), false);
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key, rx.clone());
        drop(map);
        let node = self.clone();
        tokio::spawn(async move {
            let res = node.resolve(req, key, local, ask_peers).await;
            // Remove first: a reader arriving after this sees the stored entry.
            if let Ok(mut map) = node.inner.inflight.lock() {
                map.remove(&key);
            }
            let _ = tx.send(Some(res));
        });
        (rx, true)
    }

    async fn await_flight(&self, mut flight: Flight) -> Result<Served, GetError> {
        let limit = self.inner.cfg.upstream_timeout
            + self.inner.cfg.pending_wait
            + self.inner.cfg.lookup_timeout
            + Duration::from_secs(5);
        let waited = tokio::time::timeout(limit, flight.wait_for(|v| v.is_some())).await;
        match waited {
            Ok(Ok(v)) => v.clone().unwrap_or(Err(GetError::Closed)),
            Ok(Err(_)) => Err(GetError::Closed),
            Err(_) => Err(GetError::Upstream(UpstreamError::Timeout)),
        }
    }

    fn is_inflight(&self, key: &CacheKey) -> bool {
        self.inner
            .inflight
            .lock()
            .map(|m| m.contains_key(key))
            .unwrap_or(false)
    }

    async fn resolve(
        &self,
        req: CanonicalRequest,
        key: CacheKey,
        local: Option<Entry>,
        ask_peers: bool,
    ) -> Result<Served, GetError> {
        if ask_peers && self.inner.cfg.mode == MeshMode::Mesh && self.inner.net.is_some() {
            if let Some(served) = self.ask_peers(&req, key).await {
                return Ok(served);
            }
        }
        self.fetch_upstream(req, key, local).await
    }

    fn candidates(&self) -> Vec<PeerId> {
        let Some(net) = &self.inner.net else {
            return Vec::new();
        };
        let bad = self
            .inner
            .bad_peers
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        net.members()
            .into_iter()
            .filter(|p| !bad.contains(p))
            .collect()
    }

    /// The peer phase of a miss. `None`: go upstream.
    async fn ask_peers(&self, req: &CanonicalRequest, key: CacheKey) -> Option<Served> {
        let deadline = tokio::time::Instant::now() + self.inner.cfg.lookup_timeout;
        let me = self.inner.peer_id;
        let members = self.candidates();
        let ranked = placement::ranked(&key, members.iter().copied().chain([me]));
        let owner = *ranked.first()?;

        // Announced without its body: we know who has it, fetch the body by CID.
        let bodyless = self
            .inner
            .bodyless
            .lock()
            .ok()
            .and_then(|b| b.get(&key).cloned());
        if let Some((meta, from)) = bodyless {
            if meta.is_fresh(now_ms()) {
                // A large body takes longer than a lookup; its size is known and bounded.
                let budget = self.inner.cfg.lookup_timeout.max(Duration::from_secs(5));
                if let Some(entry) = self.fetch_body(from, &meta, budget).await {
                    return self.store_from_peer(entry).await;
                }
            }
        }

        if owner != me {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let reply = self.lookup(owner, req, key, true, left).await;
            let kind = match &reply {
                Some(LookupReply::Found(_)) => "found",
                Some(LookupReply::Pending) => "pending",
                Some(LookupReply::NotFound) => "not found",
                None => "no answer in time",
            };
            tracing::debug!(%key, %owner, kind, "owner lookup");
            match reply {
                Some(LookupReply::Found(ann)) => {
                    if let Some(e) = self.accept_found(*ann, owner).await {
                        return Some(e);
                    }
                }
                Some(LookupReply::Pending) => {
                    if let Some(e) = self.wait_for_owner(owner, req, key).await {
                        return Some(e);
                    }
                    tracing::debug!(%key, "owner's fetch failed or took too long");
                }
                _ => {}
            }
        }

        // A late joiner's owner may not have it, but every member that saw the announce
        // does: ask a few more, without asking them to fetch.
        let others: Vec<PeerId> = ranked
            .into_iter()
            .filter(|p| *p != me && *p != owner)
            .take(EXTRA_ASKS)
            .collect();
        if others.is_empty() {
            return None;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let asks = others.iter().map(|p| {
            let p = *p;
            async move { (p, self.lookup(p, req, key, false, left).await) }
        });
        for (peer, reply) in futures::future::join_all(asks).await {
            if let Some(LookupReply::Found(ann)) = reply {
                if let Some(served) = self.accept_found(*ann, peer).await {
                    return Some(served);
                }
            }
        }
        None
    }

    async fn lookup(
        &self,
        peer: PeerId,
        req: &CanonicalRequest,
        key: CacheKey,
        fetch: bool,
        timeout: Duration,
    ) -> Option<LookupReply> {
        let (net, keys) = (self.inner.net.as_ref()?, self.inner.keys.as_ref()?);
        if timeout.is_zero() {
            return None;
        }
        self.inner.counters.lookups_sent.inc();
        let msg = Message::Lookup(Lookup {
            key,
            request: req.clone(),
            fetch,
        });
        let data = seal(keys, &msg, now_secs());
        let resp = net.request(peer, data, timeout).await.ok()?;
        match self.open_from(peer, &resp, MAX_RR_MESSAGE) {
            Some(Message::LookupReply(r)) => Some(r),
            Some(_) => {
                self.reject(peer);
                None
            }
            None => None,
        }
    }

    /// Waits for an owner that said `Pending`: the entry arrives by gossip, or a
    /// re-asked lookup finds it.
    async fn wait_for_owner(
        &self,
        owner: PeerId,
        req: &CanonicalRequest,
        key: CacheKey,
    ) -> Option<Served> {
        let deadline = tokio::time::Instant::now() + self.inner.cfg.pending_wait;
        let mut poll = Duration::from_millis(50);
        loop {
            let notify = self.arrival(&key);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.local(&key).filter(|e| e.meta.is_fresh(now_ms())) {
                self.done_waiting(&key, &notify);
                return Some(Served {
                    body: Body::Entry(Arc::new(e)),
                    status: CacheStatus::Coalesced,
                });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.done_waiting(&key, &notify);
                return None;
            }
            let sleep = poll.min(deadline - now);
            let woke = tokio::select! {
                _ = &mut notified => true,
                _ = tokio::time::sleep(sleep) => false,
            };
            self.done_waiting(&key, &notify);
            if woke {
                continue;
            }
            poll = (poll * 2).min(Duration::from_secs(1));
            match self
                .lookup(
                    owner,
                    req,
                    key,
                    false,
                    self.inner
                        .cfg
                        .lookup_timeout
                        .max(Duration::from_millis(500)),
                )
                .await
            {
                Some(LookupReply::Found(ann)) => {
                    if let Some(mut s) = self.accept_found(*ann, owner).await {
                        s.status = CacheStatus::Coalesced;
                        return Some(s);
                    }
                    return None;
                }
                Some(LookupReply::Pending) => {}
                // The owner finished without a cacheable result (error, failure).
                Some(LookupReply::NotFound) => return None,
                None => {}
            }
        }
    }

    fn arrival(&self, key: &CacheKey) -> Arc<Notify> {
        match self.inner.arrivals.lock() {
            Ok(mut m) => m
                .entry(*key)
                .or_insert_with(|| Arc::new(Notify::new()))
                .clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    fn done_waiting(&self, key: &CacheKey, notify: &Arc<Notify>) {
        if let Ok(mut m) = self.inner.arrivals.lock() {
            // Only the map and this waiter hold it: nobody else waits.
            if Arc::strong_count(notify) <= 2 {
                m.remove(key);
            }
        }
    }

    async fn accept_found(&self, ann: Announce, from: PeerId) -> Option<Served> {
        let key = ann.meta.key();
        if let Err(e) = ann.meta.validate(&key, now_ms()) {
            tracing::debug!(%from, "invalid lookup reply: {e}");
            self.reject(from);
            return None;
        }
        let entry = match ann.into_entry() {
            Ok(e) => e,
            Err(meta) => self.fetch_body(from, &meta, Duration::from_secs(5)).await?,
        };
        if entry.validate(&key, now_ms()).is_err() {
            self.reject(from);
            return None;
        }
        self.inner.counters.lookups_found.inc();
        self.store_from_peer(entry).await
    }

    async fn store_from_peer(&self, entry: Entry) -> Option<Served> {
        self.write(WriteJob::Merge(entry.clone())).await;
        Some(Served {
            body: Body::Entry(Arc::new(entry)),
            status: CacheStatus::Peer,
        })
    }

    async fn fetch_body(&self, peer: PeerId, meta: &EntryMeta, timeout: Duration) -> Option<Entry> {
        let (net, keys) = (self.inner.net.as_ref()?, self.inner.keys.as_ref()?);
        let msg = Message::FetchBody(FetchBody {
            key: meta.key(),
            cid: meta.cid.clone(),
        });
        let resp = net
            .request(peer, seal(keys, &msg, now_secs()), timeout)
            .await
            .ok()?;
        match self.open_from(peer, &resp, MAX_RR_MESSAGE) {
            Some(Message::BodyReply(BodyReply::Found(body))) => {
                if meta.body_matches(&body) {
                    self.inner.counters.bodies_fetched.inc();
                    Some(Entry {
                        meta: meta.clone(),
                        body,
                    })
                } else {
                    // The CID is verified on arrival: a wrong body is an attack or a bug.
                    self.reject(peer);
                    None
                }
            }
            Some(Message::BodyReply(BodyReply::NotFound)) => None,
            Some(_) => {
                self.reject(peer);
                None
            }
            None => None,
        }
    }

    async fn fetch_upstream(
        &self,
        req: CanonicalRequest,
        key: CacheKey,
        local: Option<Entry>,
    ) -> Result<Served, GetError> {
        let upstream = &self.inner.upstream;
        let cond = local
            .as_ref()
            .map(|e| Conditional::for_entry(&e.meta, upstream.token_fingerprint()))
            .unwrap_or_default();
        self.inner.counters.upstream_calls.inc();
        let result =
            tokio::time::timeout(self.inner.cfg.upstream_timeout, upstream.fetch(&req, cond))
                .await
                .unwrap_or(Err(UpstreamError::Timeout));
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(path = %req.path, "upstream failed: {e}");
                return match local {
                    Some(e) => Ok(stale(e)),
                    None => Err(e.into()),
                };
            }
        };
        let now = now_ms();
        match classify(resp.status, &resp.headers) {
            Verdict::Cacheable if resp.body.len() <= MAX_BODY_LEN => {
                let headers = kept_headers(&resp.headers);
                let ttl = freshness_ttl_secs(&req, &resp.headers, self.inner.cfg.ttl);
                let entry = Entry::new(
                    req,
                    headers,
                    resp.body.to_vec(),
                    upstream.token_fingerprint(),
                    now,
                    now + ttl * 1000,
                    self.inner.peer_id.to_string(),
                );
                // Durable before the response that carried it is sent (contract §6).
                self.write(WriteJob::Put(entry.clone())).await;
                self.announce(&entry);
                Ok(Served {
                    body: Body::Entry(Arc::new(entry)),
                    status: CacheStatus::Miss,
                })
            }
            Verdict::NotModified if local.is_some() => {
                self.inner.counters.upstream_304.inc();
                let Some(mut entry) = local else {
                    return Err(GetError::Closed);
                };
                let mut merged = entry.meta.headers.clone();
                for (k, v) in kept_headers(&resp.headers) {
                    if let Some(slot) = merged.iter_mut().find(|(mk, _)| *mk == k) {
                        slot.1 = v;
                    } else {
                        merged.push((k, v));
                    }
                }
                let ttl = freshness_ttl_secs(&entry.meta.request, &merged, self.inner.cfg.ttl);
                entry.meta.fetched_at_ms = now;
                entry.meta.fresh_until_ms = now + ttl * 1000;
                let refresh = Refresh {
                    key,
                    cid: entry.meta.cid.clone(),
                    fetched_at_ms: now,
                    fresh_until_ms: entry.meta.fresh_until_ms,
                };
                self.write(WriteJob::Refresh(refresh.clone())).await;
                self.publish(Message::Refresh(refresh));
                Ok(Served {
                    body: Body::Entry(Arc::new(entry)),
                    status: CacheStatus::Revalidated,
                })
            }
            Verdict::Failure => match local {
                Some(e) => Ok(stale(e)),
                None => Ok(Served {
                    body: Body::Upstream(Arc::new(resp)),
                    status: CacheStatus::Miss,
                }),
            },
            _ => Ok(Served {
                body: Body::Upstream(Arc::new(resp)),
                status: CacheStatus::Miss,
            }),
        }
    }

    fn announce(&self, entry: &Entry) {
        self.publish(Message::Announce(Announce::of(entry)));
    }

    fn publish(&self, msg: Message) {
        let (Some(net), Some(keys)) = (self.inner.net.clone(), self.inner.keys.clone()) else {
            return;
        };
        let counters = self.inner.counters.clone();
        tokio::spawn(async move {
            let data = seal(&keys, &msg, now_secs());
            match net.publish(data).await {
                Ok(true) => {
                    counters.announces_sent.inc();
                }
                Ok(false) => tracing::trace!("no subscribed peers yet; peers will look it up"),
                Err(e) => tracing::debug!("publish failed: {e}"),
            }
        });
    }

    /// Queues a write from gossip without waiting. When the writer is behind, the write
    /// is dropped (and counted): peers' announces must not pile up in memory, and a
    /// dropped entry is simply looked up again on its next miss.
    fn write_behind(&self, job: WriteJob) {
        if self.inner.writer.try_send((job, None)).is_err() {
            self.inner.counters.dropped_writes.inc();
        }
    }

    /// Queues a write and waits until it is durable.
    async fn write(&self, job: WriteJob) {
        let (tx, rx) = oneshot::channel();
        if self.inner.writer.send((job, Some(tx))).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Pulls announced bodies from their announcers, a few at a time.
    async fn run_prefetch(self, mut rx: mpsc::Receiver<(EntryMeta, PeerId)>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(PREFETCH_CONCURRENCY));
        while let Some((meta, from)) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let node = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let key = meta.key();
                let still_needed = node
                    .inner
                    .bodyless
                    .lock()
                    .is_ok_and(|b| b.contains_key(&key));
                if !still_needed || !meta.is_fresh(now_ms()) {
                    return;
                }
                if let Some(entry) = node.fetch_body(from, &meta, Duration::from_secs(5)).await {
                    node.write(WriteJob::Merge(entry)).await;
                }
            });
        }
    }

    /// Group commit: everything queued while a transaction runs goes into the next one.
    async fn run_writer(self, mut rx: mpsc::Receiver<(WriteJob, Option<oneshot::Sender<()>>)>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_WRITE_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let store = self.inner.store.clone();
            let (jobs, acks): (Vec<WriteJob>, Vec<Option<oneshot::Sender<()>>>) =
                batch.into_iter().unzip();
            let changed = tokio::task::spawn_blocking(move || apply_batch(&store, jobs))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!("store writer panicked: {e}");
                    Vec::new()
                });
            if let Ok(arrivals) = self.inner.arrivals.lock() {
                for key in &changed {
                    if let Some(n) = arrivals.get(key) {
                        n.notify_waiters();
                    }
                }
            }
            if let Ok(mut bodyless) = self.inner.bodyless.lock() {
                for key in &changed {
                    bodyless.remove(key);
                }
            }
            for key in &changed {
                let _ = self.inner.stored.send(*key);
            }
            for ack in acks.into_iter().flatten() {
                let _ = ack.send(());
            }
        }
    }

    fn reject(&self, peer: PeerId) {
        self.inner.counters.rejected_messages.inc();
        if let Ok(mut bad) = self.inner.bad_peers.lock() {
            if bad.len() < MAX_BAD_PEERS {
                bad.insert(peer);
            }
        }
    }

    /// Opens a sealed message; anything that fails is counted and its sender distrusted.
    fn open_from(&self, peer: PeerId, data: &[u8], max_len: usize) -> Option<Message> {
        let keys = self.inner.keys.as_ref()?;
        match open(keys, data, seal_limits(max_len), now_secs()) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!(%peer, "rejected peer message: {e}");
                self.reject(peer);
                None
            }
        }
    }

    async fn run_events(self, mut events: mpsc::Receiver<NetEvent>) {
        while let Some(ev) = events.recv().await {
            match ev {
                NetEvent::Gossip {
                    id,
                    source,
                    author,
                    data,
                } => {
                    let verdict = self.on_gossip(source, author, &data);
                    if let Some(net) = &self.inner.net {
                        net.report(id, source, verdict).await;
                    }
                }
                NetEvent::Request { id, peer, data } => {
                    let node = self.clone();
                    tokio::spawn(async move {
                        let reply = node.on_request(peer, &data);
                        if let Some(net) = &node.inner.net {
                            match reply {
                                Some(bytes) => net.respond(id, bytes).await,
                                None => net.refuse(id).await,
                            }
                        }
                    });
                }
            }
        }
    }

    fn on_gossip(&self, source: PeerId, author: Option<PeerId>, data: &[u8]) -> MessageAcceptance {
        let sender = author.unwrap_or(source);
        tracing::trace!(%sender, len = data.len(), "gossip received");
        let Some(msg) = self.open_from(sender, data, MAX_GOSSIP_MESSAGE) else {
            return MessageAcceptance::Reject;
        };
        let now = now_ms();
        match msg {
            Message::Announce(ann) => {
                let key = ann.meta.key();
                if let Err(e) = ann.meta.validate(&key, now) {
                    tracing::debug!(%sender, "invalid announce: {e}");
                    self.reject(sender);
                    return MessageAcceptance::Reject;
                }
                match ann.into_entry() {
                    Ok(entry) => {
                        if entry.validate(&key, now).is_err() {
                            self.reject(sender);
                            return MessageAcceptance::Reject;
                        }
                        self.inner.counters.announces_received.inc();
                        self.write_behind(WriteJob::Merge(entry));
                    }
                    Err(meta) => {
                        self.inner.counters.announces_received.inc();
                        let held = self.inner.store.get_meta(&key).ok().flatten();
                        if merge(held.as_ref(), &meta) == Merge::Store {
                            let from = meta.origin.parse().unwrap_or(sender);
                            if meta.body_len <= PREFETCH_MAX_BODY {
                                // Full queue: the body is fetched when first read.
                                let _ = self.inner.prefetch.try_send(((*meta).clone(), from));
                            }
                            if let Ok(mut b) = self.inner.bodyless.lock() {
                                if b.len() >= MAX_BODYLESS {
                                    b.clear();
                                }
                                b.insert(key, (*meta, from));
                            }
                        }
                    }
                }
                MessageAcceptance::Accept
            }
            Message::Refresh(r) => {
                if r.fresh_until_ms < r.fetched_at_ms
                    || r.fresh_until_ms - r.fetched_at_ms > ghmesh_protocol::entry::MAX_TTL_MS
                    || r.fetched_at_ms > now + ghmesh_protocol::entry::MAX_CLOCK_SKEW_MS
                {
                    self.reject(sender);
                    return MessageAcceptance::Reject;
                }
                self.write_behind(WriteJob::Refresh(r));
                MessageAcceptance::Accept
            }
            _ => {
                self.reject(sender);
                MessageAcceptance::Reject
            }
        }
    }

    /// Answers a peer's request; `None` refuses it (it failed to open or made no sense).
    fn on_request(&self, peer: PeerId, data: &[u8]) -> Option<Vec<u8>> {
        let keys = self.inner.keys.as_ref()?;
        let reply = match self.open_from(peer, data, MAX_RR_MESSAGE)? {
            Message::Lookup(l) => {
                if l.request.check().is_err()
                    || l.request.key() != l.key
                    || l.request.method != "GET"
                {
                    self.reject(peer);
                    return None;
                }
                Message::LookupReply(self.answer_lookup(l))
            }
            Message::FetchBody(f) => {
                let body = self
                    .inner
                    .store
                    .get(&f.key)
                    .ok()
                    .flatten()
                    .filter(|e| e.meta.cid == f.cid)
                    .map(|e| BodyReply::Found(e.body))
                    .unwrap_or(BodyReply::NotFound);
                Message::BodyReply(body)
            }
            _ => {
                self.reject(peer);
                return None;
            }
        };
        Some(seal(keys, &reply, now_secs()))
    }

    fn answer_lookup(&self, l: Lookup) -> LookupReply {
        let local = self.local(&l.key);
        if let Some(e) = local.as_ref().filter(|e| e.meta.is_fresh(now_ms())) {
            return LookupReply::Found(Box::new(Announce {
                meta: e.meta.clone(),
                body: Some(e.body.clone()),
            }));
        }
        if self.is_inflight(&l.key) {
            return LookupReply::Pending;
        }
        let room = self
            .inner
            .inflight
            .lock()
            .map(|m| m.len() < MAX_INFLIGHT)
            .unwrap_or(false);
        if l.fetch && self.inner.cfg.mode == MeshMode::Mesh && room {
            // We own this key: fetch it once for everyone (without asking peers, which
            // could bounce the request between nodes that disagree on the owner).
            // An expired copy, if any, makes the owner's fetch a free revalidation.
            let (flight, _) = self.join_or_start(l.request, l.key, local, false);
            drop(flight);
            return LookupReply::Pending;
        }
        LookupReply::NotFound
    }

    /// Stats snapshot.
    pub async fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let net = match &self.inner.net {
            Some(n) => n.stats().await.unwrap_or_default(),
            None => Default::default(),
        };
        let saved = c.saved();
        Stats {
            peer_id: self.inner.peer_id.to_string(),
            p2p: self.inner.net.is_some(),
            connected_peers: net.connected_peers,
            mesh_peers: net.mesh_peers,
            members: net.members,
            entries: self.inner.store.len(),
            bytes: self.inner.store.bytes(),
            hits: c.hits.get(),
            peer_hits: c.peer_hits.get(),
            misses: c.misses.get(),
            revalidated: c.revalidated.get(),
            coalesced: c.coalesced.get(),
            stale_served: c.stale_served.get(),
            bypass: c.bypass.get(),
            upstream_calls: c.upstream_calls.get(),
            upstream_304: c.upstream_304.get(),
            api_calls_saved: saved,
            hit_rate: hit_rate(saved, c.misses.get()),
            rejected_messages: c.rejected_messages.get(),
            lookups_sent: c.lookups_sent.get(),
            lookups_found: c.lookups_found.get(),
            announces_sent: c.announces_sent.get(),
            announces_received: c.announces_received.get(),
            bodies_fetched: c.bodies_fetched.get(),
            dropped_writes: c.dropped_writes.get(),
            dropped_events: net.dropped_events,
            rate_limit: self.inner.upstream.rate_limit(),
            listen: net.listen,
        }
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        match &self.inner.net {
            Some(n) => n.peers().await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Prometheus text exposition of our counters and libp2p's metrics.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        if let Ok(reg) = self.inner.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        }
        out
    }

    /// Makes every queued write durable and records read recency.
    pub async fn flush(&self) {
        self.write(WriteJob::Flush).await;
    }

    /// Flushes the store and stops the network.
    pub async fn shutdown(&self) {
        self.flush().await;
        if let Some(net) = &self.inner.net {
            net.shutdown().await;
        }
    }
}

fn stale(e: Entry) -> Served {
    Served {
        body: Body::Entry(Arc::new(e)),
        status: CacheStatus::Stale,
    }
}

fn kept_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| KEPT_HEADERS.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| NodeError::DataDir {
            path: dir.display().to_string(),
            source,
        })
}

/// The entries a batch will put, by key: later jobs in the batch see earlier ones.
#[derive(Default)]
struct PendingPuts {
    entries: Vec<Entry>,
    index: HashMap<CacheKey, usize>,
}

impl PendingPuts {
    fn upsert(&mut self, key: CacheKey, e: Entry) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i] = e,
            None => {
                self.index.insert(key, self.entries.len());
                self.entries.push(e);
            }
        }
    }

    /// What is held for `key`: this batch's pending entry, else the store's.
    fn held(&self, store: &Store, key: &CacheKey) -> Option<EntryMeta> {
        match self.index.get(key) {
            Some(&i) => Some(self.entries[i].meta.clone()),
            None => store.get_meta(key).ok().flatten(),
        }
    }

    /// Moves freshness forward: in the pending entry, else in the store.
    fn extend(&mut self, store: &Store, key: CacheKey, fetched_at_ms: u64, fresh_until_ms: u64) {
        match self.index.get(&key) {
            Some(&i) => {
                let meta = &mut self.entries[i].meta;
                meta.fresh_until_ms = fresh_until_ms;
                meta.fetched_at_ms = meta.fetched_at_ms.max(fetched_at_ms);
            }
            None => {
                if let Err(e) = store.set_freshness(&key, fetched_at_ms, fresh_until_ms) {
                    tracing::error!("cache freshness update failed: {e}");
                }
            }
        }
    }
}

/// Applies a batch, all its puts in one transaction; returns the keys that changed.
fn apply_batch(store: &Store, jobs: Vec<WriteJob>) -> Vec<CacheKey> {
    let mut puts = PendingPuts::default();
    let mut changed = Vec::new();
    let mut flush = false;
    for job in jobs {
        match job {
            WriteJob::Put(e) => {
                let key = e.meta.key();
                puts.upsert(key, e);
                changed.push(key);
            }
            WriteJob::Merge(e) => {
                let key = e.meta.key();
                match merge(puts.held(store, &key).as_ref(), &e.meta) {
                    Merge::Store => {
                        puts.upsert(key, e);
                        changed.push(key);
                    }
                    Merge::Extend {
                        fresh_until_ms,
                        fetched_at_ms,
                    } => {
                        puts.extend(store, key, fetched_at_ms, fresh_until_ms);
                        changed.push(key);
                    }
                    Merge::Keep => {}
                }
            }
            WriteJob::Refresh(r) => {
                let newer = puts
                    .held(store, &r.key)
                    .is_some_and(|h| h.cid == r.cid && r.fresh_until_ms > h.fresh_until_ms);
                if newer {
                    puts.extend(store, r.key, r.fetched_at_ms, r.fresh_until_ms);
                    changed.push(r.key);
                }
            }
            WriteJob::Flush => flush = true,
        }
    }
    if !puts.entries.is_empty() {
        if let Err(e) = store.put_many(&puts.entries, now_ms()) {
            tracing::error!("cache write failed: {e}");
        }
    }
    if flush {
        if let Err(e) = store.flush() {
            tracing::error!("cache flush failed: {e}");
        }
    }
    changed
}
