//! The upstream phase: one request to GitHub (conditional when a copy is held), and
//! what its answer means for the cache (decided by [`policy::after_upstream`]).

use ghmesh_protocol::Refresh;
use ghmesh_protocol::{freshness_ttl_secs, Announce, CacheKey, CanonicalRequest, Entry, Message};

use super::served::CacheStatus;
use super::writer::WriteJob;
use super::{GetError, Node, Served};
use crate::policy::{self, UpstreamAction};
use crate::upstream::{Conditional, Credential, UpstreamError, UpstreamResponse};

impl Node {
    pub(super) async fn fetch_upstream(
        &self,
        req: CanonicalRequest,
        key: CacheKey,
        local: Option<Entry>,
        cred: Credential,
    ) -> Result<Served, GetError> {
        let _slot = self.read_slot(&req.path, &cred).await?;
        tracing::debug!(path = %req.path, revalidate = local.is_some(), "fetching upstream");
        let (mut outcome, mut token) = self.fetch_with(&req, local.as_ref(), &cred).await;
        if matches!(outcome, Err(UpstreamError::Held(_))) && cred != Credential::Node {
            // A client's held token: reads may use the node's token instead.
            (outcome, token) = self
                .fetch_with(&req, local.as_ref(), &Credential::Node)
                .await;
        }
        let graphql = req.graphql.is_some();
        let action = policy::after_upstream(outcome.as_ref(), local.is_some(), graphql);
        let now = self.now_ms();
        match (action, outcome, local) {
            (UpstreamAction::Store, Ok(resp), _) => {
                let ttl = freshness_ttl_secs(&req, &resp.headers, self.inner.cfg.ttl_settings());
                let entry = Entry::new(
                    req,
                    policy::kept_headers(&resp.headers),
                    resp.body.clone(),
                    token,
                    now,
                    now + ttl * 1000,
                    self.inner.me.text.clone(),
                );
                // Durable before the response that carried it is sent (contract §6). A
                // failed write is served to this client but neither acknowledged as
                // stored nor announced: peers would ask us for what we do not hold.
                let stored = self.write(WriteJob::Put(entry.clone())).await.is_ok();
                if stored {
                    self.publish(Message::Announce(Announce::of(&entry)));
                }
                let mut served = Served::entry(entry, CacheStatus::Miss);
                served.stored = stored;
                Ok(served)
            }
            (UpstreamAction::Refresh, Ok(resp), Some(mut entry)) => {
                self.inner.telemetry.counters.upstream_304.inc();
                let headers = policy::merge_304_headers(&entry.meta.headers, &resp.headers);
                let ttl = freshness_ttl_secs(
                    &entry.meta.request,
                    &headers,
                    self.inner.cfg.ttl_settings(),
                );
                entry.meta.headers = headers;
                entry.meta.fetched_at_ms = now;
                entry.meta.fresh_until_ms = now + ttl * 1000;
                let refresh = Refresh {
                    key,
                    cid: entry.meta.cid.clone(),
                    fetched_at_ms: now,
                    fresh_until_ms: entry.meta.fresh_until_ms,
                };
                let stored = self.write(WriteJob::Refresh(refresh.clone())).await.is_ok();
                if stored {
                    self.publish(Message::Refresh(refresh));
                }
                let mut served = Served::entry(entry, CacheStatus::Revalidated);
                served.stored = stored;
                Ok(served)
            }
            (UpstreamAction::ServeStale, _, Some(entry)) => {
                Ok(Served::entry(entry, CacheStatus::Stale))
            }
            (UpstreamAction::Fail, Err(e), _) => {
                tracing::debug!(path = %req.path, "upstream failed: {e}");
                Err(e.into())
            }
            (_, Ok(resp), _) => Ok(Served::upstream(resp, CacheStatus::Miss)),
            (_, Err(UpstreamError::Held(refusal)), _) => {
                Ok(Served::upstream(*refusal, CacheStatus::Held))
            }
            (_, Err(e), _) => Err(e.into()),
        }
    }

    /// One upstream request with `cred` (conditional when a copy is held), counted;
    /// returns the outcome and the fingerprint of the token used.
    async fn fetch_with(
        &self,
        req: &CanonicalRequest,
        local: Option<&Entry>,
        cred: &Credential,
    ) -> (Result<UpstreamResponse, UpstreamError>, Option<[u8; 8]>) {
        let upstream = &self.inner.upstream;
        let token = upstream.fingerprint_of(cred);
        let cond = local
            .map(|e| Conditional::for_entry(&e.meta, token))
            .unwrap_or_default();
        let outcome = self.call_upstream(upstream.fetch(req, cond, cred)).await;
        (outcome, token)
    }

    /// A place among the requests in flight to GitHub; `Busy` (counted) when the queue
    /// is full. Held for the whole call.
    pub(super) async fn upstream_slot(&self) -> Result<super::gate::Slot, GetError> {
        self.inner.gate.enter().await.inspect_err(|_| {
            self.inner.telemetry.counters.upstream_busy.inc();
        })
    }

    /// [`Self::upstream_slot`] for a read of `path` with `cred`: a read that must wait
    /// for its fleet share of a budget near its end waits before taking the place
    /// (within the upstream deadline), so that it does not keep other budgets' reads
    /// from GitHub meanwhile.
    pub(super) async fn read_slot(
        &self,
        path: &str,
        cred: &Credential,
    ) -> Result<super::gate::Slot, GetError> {
        let ready = self.inner.upstream.share_ready(path, cred);
        let _ = tokio::time::timeout(self.deadlines().upstream, ready).await;
        self.upstream_slot().await
    }

    /// One upstream call within the upstream deadline, counted as sent or as refused
    /// locally by a hold.
    pub(super) async fn call_upstream(
        &self,
        call: impl std::future::Future<Output = Result<UpstreamResponse, UpstreamError>>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let outcome = tokio::time::timeout(self.deadlines().upstream, call)
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        match &outcome {
            Err(UpstreamError::Held(_)) => self.inner.telemetry.counters.upstream_held.inc(),
            _ => self.inner.telemetry.counters.upstream_calls.inc(),
        };
        if self.inner.upstream.take_ledger_urgent() {
            if let Some(mesh) = &self.inner.mesh {
                mesh.ledger_urgent.notify_one();
            }
        }
        outcome
    }
}
