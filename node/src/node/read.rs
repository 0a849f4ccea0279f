//! Where a read enters: the local store, then single flight.
//!
//! Concurrent reads of one key on one node share one resolution: the first starts it
//! in a task of its own (so a client going away does not cancel it for the others),
//! later ones join it.

use ghmesh_protocol::{CacheKey, CanonicalRequest, Entry};

use super::flights::{Flight, Joined, Landing, Upstreaming};
use super::peers::{Ask, PeerPhase};
use super::{GetError, Node, Served};
use crate::config::MeshMode;
use crate::policy;
use crate::upstream::{Conditional, Credential, UpstreamError, UpstreamResponse};

use super::served::CacheStatus;

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
        if self.inner.tasks.stopping.is_cancelled() {
            return Err(GetError::Closed);
        }
        if req.varies_by_identity() {
            return self.read_per_identity(req, cred).await;
        }
        let key = req.key();
        let local = self.local(&key);
        let max_age_ms = max_age.map(|a| a.as_millis() as u64);
        if let Some(e) = &local {
            if policy::servable_locally(&e.meta, self.now_ms(), max_age_ms) {
                let status = policy::local_status(&e.meta, &self.inner.me.text);
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
        self.inner.telemetry.counters.bypass.inc();
        Ok(Served::upstream(resp, CacheStatus::Bypass))
    }

    /// A read whose answer varies by identity: straight upstream with `cred`, never
    /// stored, announced or asked of peers.
    async fn read_per_identity(
        &self,
        req: CanonicalRequest,
        cred: Credential,
    ) -> Result<Served, GetError> {
        let _slot = self.read_slot(&req.path, &cred).await?;
        let upstream = &self.inner.upstream;
        let sent = self
            .call_upstream(upstream.fetch(&req, Conditional::default(), &cred))
            .await;
        let resp = sent.or_else(held_refusal)?;
        self.inner.telemetry.counters.bypass.inc();
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
        let c = &self.inner.telemetry.counters;
        match status {
            CacheStatus::Hit => c.hits.inc(),
            CacheStatus::Peer => c.peer_hits.inc(),
            CacheStatus::Miss => c.misses.inc(),
            CacheStatus::Revalidated => c.revalidated.inc(),
            CacheStatus::Coalesced => c.coalesced.inc(),
            CacheStatus::Stale => c.stale_served.inc(),
            CacheStatus::Bypass => c.bypass.inc(),
            // Counted as `upstream_held` where it was held.
            CacheStatus::Held => 0,
        };
    }

    /// Joins the resolution of its key in progress, or starts one. True: we lead it.
    pub(super) fn join_or_start(&self, r: Resolution) -> (Flight, bool) {
        let (key, cred) = (r.key, &r.cred);
        let flight;
        let who = match cred {
            Credential::Node => None,
            Credential::Client(t) => Some(t.fingerprint()),
        };
        let key_of_flight = (key, who);
        let tx = match self.inner.flights.join_or_open(key_of_flight) {
            Joined::Existing(rx) => return (rx, false),
            Joined::New(tx, rx) => {
                flight = rx;
                tx
            }
        };
        let node = self.clone();
        self.spawn(async move {
            let landing = Landing {
                flights: &node.inner.flights,
                key: key_of_flight,
            };
            // The caller found nothing stored, but a resolution of this key may have
            // stored it and landed between that look and this flight (an owner's own
            // read and a member's lookup asking it to fetch, a few ms apart): serve
            // what it stored rather than fetching it again.
            let landed = match r.local {
                None => node.local_fresh(&r.key),
                Some(_) => None,
            };
            let res = match landed {
                Some(entry) => {
                    let status = policy::local_status(&entry.meta, &node.inner.me.text);
                    Ok(Served::entry(entry, status))
                }
                None => node.resolve(r).await,
            };
            // Remove first: a reader arriving after this sees the stored entry.
            drop(landing);
            let _ = tx.send(Some(res));
        });
        (flight, true)
    }

    pub(super) async fn await_flight(&self, mut flight: Flight) -> Result<Served, GetError> {
        let limit = self.deadlines().flight();
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
                    self.inner.telemetry.counters.leases_taken.inc();
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
