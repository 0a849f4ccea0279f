//! Where a read enters: the local store, then single flight.
//!
//! Concurrent reads of one key on one node share one resolution: the first starts it
//! in a task of its own (so a client going away does not cancel it for the others),
//! later ones join it.

use std::collections::HashMap;
use std::sync::Mutex;

use ghmesh_protocol::{CacheKey, CanonicalRequest, Entry};
use tokio::sync::watch;

use super::{GetError, Node, Served, MAX_INFLIGHT};
use crate::config::MeshMode;
use crate::policy;
use crate::upstream::UpstreamError;

use super::served::CacheStatus;

type Outcome = Option<Result<Served, GetError>>;
type Flight = watch::Receiver<Outcome>;

/// Keys being resolved on this node, each with the channel its result arrives on.
#[derive(Default)]
pub(super) struct Flights(Mutex<HashMap<CacheKey, Flight>>);

impl Flights {
    pub(super) fn contains(&self, key: &CacheKey) -> bool {
        self.0.lock().map(|m| m.contains_key(key)).unwrap_or(false)
    }

    /// Room for one more resolution.
    pub(super) fn has_room(&self) -> bool {
        self.0
            .lock()
            .map(|m| m.len() < MAX_INFLIGHT)
            .unwrap_or(false)
    }

    fn remove(&self, key: &CacheKey) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

/// Removes a key from the in-flight table however its resolution ends (also when the
/// task is dropped at shutdown), so a later read never joins a flight that is gone.
struct Landing<'a> {
    flights: &'a Flights,
    key: CacheKey,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.flights.remove(&self.key);
    }
}

impl Node {
    /// Reads `req` through the cache.
    pub async fn get(&self, req: CanonicalRequest) -> Result<Served, GetError> {
        if self.inner.stopping.is_cancelled() {
            return Err(GetError::Closed);
        }
        let key = req.key();
        let local = self.local(&key);
        if let Some(e) = &local {
            if e.meta.is_fresh(self.now_ms()) {
                let status = policy::local_status(&e.meta, &self.inner.me);
                self.count(status);
                return Ok(Served::entry(e.clone(), status));
            }
        }
        let (flight, leader) = self.join_or_start(req, key, local, true);
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
        self.inner.counters.upstream_calls.inc();
        self.inner.counters.bypass.inc();
        let resp = tokio::time::timeout(
            self.inner.deadlines.upstream,
            self.inner
                .upstream
                .forward(method, path_and_query, headers, body),
        )
        .await
        .map_err(|_| UpstreamError::Timeout)??;
        Ok(Served::upstream(resp, CacheStatus::Bypass))
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

    /// Joins the resolution of `key` in progress, or starts one. True: we lead it.
    /// `ask_peers` is false when a peer asked us to fetch as the key's owner: asking
    /// peers then could bounce the request between nodes that disagree on the owner.
    pub(super) fn join_or_start(
        &self,
        req: CanonicalRequest,
        key: CacheKey,
        local: Option<Entry>,
        ask_peers: bool,
    ) -> (Flight, bool) {
        let Ok(mut map) = self.inner.flights.0.lock() else {
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
        self.spawn(async move {
            let landing = Landing {
                flights: &node.inner.flights,
                key,
            };
            let res = node.resolve(req, key, local, ask_peers).await;
            // Remove first: a reader arriving after this sees the stored entry.
            drop(landing);
            let _ = tx.send(Some(res));
        });
        (rx, true)
    }

    async fn await_flight(&self, mut flight: Flight) -> Result<Served, GetError> {
        let limit = self.inner.deadlines.flight();
        let waited = tokio::time::timeout(limit, flight.wait_for(|v| v.is_some())).await;
        match waited {
            Ok(Ok(v)) => v.clone().unwrap_or(Err(GetError::Closed)),
            Ok(Err(_)) => Err(GetError::Closed),
            Err(_) => Err(GetError::Upstream(UpstreamError::Timeout)),
        }
    }

    async fn resolve(
        &self,
        req: CanonicalRequest,
        key: CacheKey,
        local: Option<Entry>,
        ask_peers: bool,
    ) -> Result<Served, GetError> {
        if ask_peers && self.inner.cfg.mode == MeshMode::Mesh && self.inner.mesh.is_some() {
            if let Some(served) = self.ask_peers(&req, key).await {
                return Ok(served);
            }
        }
        self.fetch_upstream(req, key, local).await
    }
}
