//! Where a read enters: the local store, then single flight.
//!
//! Concurrent reads of one key on one node share one resolution: the first starts it
//! in a task of its own (so a client going away does not cancel it for the others),
//! later ones join it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ghmesh_protocol::{varies_by_identity, CacheKey, CanonicalRequest, Entry};
use tokio::sync::watch;

use super::peers::{Ask, PeerPhase};
use super::{GetError, Node, Served};
use crate::config::MeshMode;
use crate::limits::MAX_INFLIGHT;
use crate::policy;
use crate::upstream::{Conditional, Credential, UpstreamError, UpstreamResponse};

use super::served::CacheStatus;

type Outcome = Option<Result<Served, GetError>>;
type Flight = watch::Receiver<Outcome>;

/// A resolution: the key, and whose token fetches it (None: the node's). Readers
/// with different tokens never join each other's flight: an error one token gets is
/// never served to another.
type FlightKey = (CacheKey, Option<[u8; 8]>);

/// Keys being resolved on this node, each with the channel its result arrives on, per
/// token. Keyed by cache key first: every inbound lookup asks whether a key is in flight.
/// Beside it, the keys whose resolution is in its upstream phase (asking GitHub now,
/// waiting on nobody): only those are `Pending` to a member that did not ask us to
/// fetch, so that waiting on such an answer can never wait in a circle.
#[derive(Default)]
pub(super) struct Flights {
    by_key: Mutex<HashMap<CacheKey, PerToken>>,
    upstream: Mutex<HashSet<CacheKey>>,
}

/// The flights of one key, by token fingerprint (None: the node's own).
type PerToken = HashMap<Option<[u8; 8]>, Flight>;

impl Flights {
    /// Some resolution of `key` is in progress, whoever's token it uses.
    pub(super) fn contains(&self, key: &CacheKey) -> bool {
        self.by_key
            .lock()
            .map(|m| m.contains_key(key))
            .unwrap_or(false)
    }

    /// `key` is being fetched from upstream right now.
    pub(super) fn fetching(&self, key: &CacheKey) -> bool {
        self.upstream
            .lock()
            .map(|s| s.contains(key))
            .unwrap_or(false)
    }

    /// Room for resolutions of one more key.
    pub(super) fn has_room(&self) -> bool {
        self.by_key
            .lock()
            .map(|m| m.len() < MAX_INFLIGHT)
            .unwrap_or(false)
    }

    fn remove(&self, (key, who): &FlightKey) {
        if let Ok(mut m) = self.by_key.lock() {
            if let Some(per_token) = m.get_mut(key) {
                per_token.remove(who);
                if per_token.is_empty() {
                    m.remove(key);
                }
            }
        }
    }
}

/// Marks a key as fetched upstream for as long as it lives.
struct Upstreaming<'a> {
    flights: &'a Flights,
    key: CacheKey,
}

impl<'a> Upstreaming<'a> {
    fn start(flights: &'a Flights, key: CacheKey) -> Self {
        if let Ok(mut s) = flights.upstream.lock() {
            s.insert(key);
        }
        Self { flights, key }
    }
}

impl Drop for Upstreaming<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.flights.upstream.lock() {
            s.remove(&self.key);
        }
    }
}

/// Removes a key from the in-flight table however its resolution ends (also when the
/// task is dropped at shutdown), so a later read never joins a flight that is gone.
struct Landing<'a> {
    flights: &'a Flights,
    key: FlightKey,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.flights.remove(&self.key);
    }
}

impl Node {
    /// Reads `req` through the cache with the node's own token.
    pub async fn get(&self, req: CanonicalRequest) -> Result<Served, GetError> {
        self.get_as(req, Credential::Node).await
    }

    /// Reads `req` through the cache; on a miss upstream is asked with `cred`'s token.
    /// Answers that vary by identity are never cached or shared: they go upstream
    /// with `cred` each time.
    pub async fn get_as(
        &self,
        req: CanonicalRequest,
        cred: Credential,
    ) -> Result<Served, GetError> {
        self.get_within(req, cred, None).await
    }

    /// [`Node::get_as`] that also accepts a local copy fetched within `max_age`, even
    /// if expired (`ghmesh api --cache`, like gh's flag of that name).
    pub async fn get_within(
        &self,
        req: CanonicalRequest,
        cred: Credential,
        max_age: Option<std::time::Duration>,
    ) -> Result<Served, GetError> {
        if self.inner.stopping.is_cancelled() {
            return Err(GetError::Closed);
        }
        if varies_by_identity(&req.path) {
            return self.read_per_identity(req, cred).await;
        }
        let key = req.key();
        let local = self.local(&key);
        let max_age_ms = max_age.map(|a| a.as_millis() as u64);
        if let Some(e) = &local {
            if policy::servable_locally(&e.meta, self.now_ms(), max_age_ms) {
                let status = policy::local_status(&e.meta, &self.inner.me);
                self.count(status);
                return Ok(Served::entry(e.clone(), status));
            }
        }
        // A copy refused for its age (`--cache`) is fetched again: a peer's copy may be
        // as old as ours.
        let ask_peers = max_age.is_none() || local.is_none();
        let (flight, leader) = self.join_or_start(Resolution {
            req,
            key,
            local,
            ask_peers,
            cred,
        });
        let mut served = self.await_flight(flight).await?;
        if !leader {
            served.status = policy::joined_status(served.status);
        }
        self.count(served.status);
        Ok(served)
    }

    /// Passes a request through uncached (non-GET, or the client's own token).
    pub async fn forward(
        &self,
        method: &str,
        path_and_query: &str,
        headers: Vec<(String, String)>,
        body: bytes::Bytes,
    ) -> Result<Served, GetError> {
        let _slot = self.upstream_slot().await?;
        let upstream = &self.inner.upstream;
        let sent = self
            .call_upstream(upstream.forward(method, path_and_query, headers, body))
            .await;
        let resp = sent.or_else(held_refusal)?;
        self.inner.counters.bypass.inc();
        Ok(Served::upstream(resp, CacheStatus::Bypass))
    }

    /// A read whose answer varies by identity: straight upstream with `cred`, never
    /// stored, announced or asked of peers.
    async fn read_per_identity(
        &self,
        req: CanonicalRequest,
        cred: Credential,
    ) -> Result<Served, GetError> {
        let _slot = self.upstream_slot().await?;
        let upstream = &self.inner.upstream;
        let sent = self
            .call_upstream(upstream.fetch(&req, Conditional::default(), &cred))
            .await;
        let resp = sent.or_else(held_refusal)?;
        self.inner.counters.bypass.inc();
        Ok(Served::upstream(resp, CacheStatus::Bypass))
    }

    /// A place among the requests in flight to GitHub; `Busy` (counted) when the queue
    /// is full. Held for the whole call.
    pub(super) async fn upstream_slot(&self) -> Result<super::gate::Slot, GetError> {
        self.inner.gate.enter().await.inspect_err(|_| {
            self.inner.counters.upstream_busy.inc();
        })
    }

    /// One upstream call within the upstream deadline, counted as sent or as refused
    /// locally by a hold.
    pub(super) async fn call_upstream(
        &self,
        call: impl std::future::Future<Output = Result<UpstreamResponse, UpstreamError>>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let outcome = tokio::time::timeout(self.inner.deadlines.upstream, call)
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        match &outcome {
            Err(UpstreamError::Held(_)) => self.inner.counters.upstream_held.inc(),
            _ => self.inner.counters.upstream_calls.inc(),
        };
        outcome
    }

    /// The stored entry for `key`, fresh or not. A failed read is a miss: the read
    /// goes on to peers and upstream rather than failing.
    pub(super) fn local(&self, key: &CacheKey) -> Option<Entry> {
        match self.inner.store.get(key) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%key, "store read failed, treating as a miss: {e}");
                None
            }
        }
    }

    /// The stored entry for `key` when it is fresh now.
    pub(super) fn local_fresh(&self, key: &CacheKey) -> Option<Entry> {
        self.local(key).filter(|e| e.meta.is_fresh(self.now_ms()))
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

    /// Joins the resolution of its key in progress, or starts one. True: we lead it.
    pub(super) fn join_or_start(&self, r: Resolution) -> (Flight, bool) {
        let (key, cred) = (r.key, &r.cred);
        let who = match cred {
            Credential::Node => None,
            Credential::Client(t) => Some(t.fingerprint()),
        };
        let key_of_flight = (key, who);
        let Ok(mut map) = self.inner.flights.by_key.lock() else {
            let (_tx, rx) = watch::channel(Some(Err(GetError::Closed)));
            return (rx, true);
        };
        let per_token = map.entry(key).or_default();
        if let Some(rx) = per_token.get(&who) {
            return (rx.clone(), false);
        }
        let (tx, rx) = watch::channel(None);
        per_token.insert(who, rx.clone());
        drop(map);
        let node = self.clone();
        self.spawn(async move {
            let landing = Landing {
                flights: &node.inner.flights,
                key: key_of_flight,
            };
            let res = node.resolve(r).await;
            // Remove first: a reader arriving after this sees the stored entry.
            drop(landing);
            let _ = tx.send(Some(res));
        });
        (rx, true)
    }

    pub(super) async fn await_flight(&self, mut flight: Flight) -> Result<Served, GetError> {
        let limit = self.inner.deadlines.flight();
        let waited = tokio::time::timeout(limit, flight.wait_for(|v| v.is_some())).await;
        match waited {
            Ok(Ok(v)) => v.clone().unwrap_or(Err(GetError::Closed)),
            Ok(Err(_)) => Err(GetError::Closed),
            Err(_) => Err(GetError::Upstream(UpstreamError::Timeout)),
        }
    }

    async fn resolve(&self, r: Resolution) -> Result<Served, GetError> {
        let mut leased = None;
        if r.ask_peers && self.inner.cfg.mode == MeshMode::Mesh && self.inner.mesh.is_some() {
            // A client's own token pays for its misses (contract §4): the owner is never
            // asked to fetch with its own token for this client; it is asked for the
            // lease, so that this node fetches once for the whole fleet.
            let ask = match r.cred {
                Credential::Node => Ask::FETCH,
                Credential::Client(_) => Ask::LEASE,
            };
            match self.ask_peers(&r.req, r.key, ask).await {
                PeerPhase::Served(served) => return Ok(served),
                PeerPhase::Leased(owner) => {
                    self.inner.counters.leases_taken.inc();
                    leased = Some((owner, r.req.clone()));
                }
                PeerPhase::Upstream => {}
            }
        }
        let _upstreaming = Upstreaming::start(&self.inner.flights, r.key);
        let res = self.fetch_upstream(r.req, r.key, r.local, r.cred).await;
        if let Some((owner, req)) = leased {
            // Stored entries are announced; anything else (an error, a failed write)
            // leaves the fleet waiting on us: hand the lease on.
            if !res.as_ref().is_ok_and(Served::shared) {
                self.release_lease(owner, &req, r.key);
            }
        }
        res
    }
}

/// One resolution of a key: what to fetch, the copy held (for a conditional request),
/// and with whose token.
pub(super) struct Resolution {
    pub(super) req: CanonicalRequest,
    pub(super) key: CacheKey,
    pub(super) local: Option<Entry>,
    /// Whether to ask peers first. When a peer asked us to fetch as the key's owner, we
    /// own it in our view too, so only the others are asked (never an owner: that could
    /// bounce the request between nodes that disagree), and only while we are starting.
    pub(super) ask_peers: bool,
    pub(super) cred: Credential,
}

/// A held token's repeated refusal is GitHub's own answer, passed to this client.
fn held_refusal(e: UpstreamError) -> Result<UpstreamResponse, GetError> {
    match e {
        UpstreamError::Held(resp) => Ok(*resp),
        other => Err(other.into()),
    }
}
