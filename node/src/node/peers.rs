//! The peer phase of a miss: the key's owner, waiting for it, a few other members, and
//! bodies fetched by CID. Peers make things faster, never unavailable: every step has
//! a deadline, and `None` means "go upstream".

use std::sync::Arc;
use std::time::Duration;

use ghmesh_protocol::wire::MAX_RR_MESSAGE;
use ghmesh_protocol::{
    varies_by_identity, Announce, BodyReply, CacheKey, CanonicalRequest, Entry, EntryMeta,
    FetchBody, Lookup, LookupReply, Message,
};
use libp2p::PeerId;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::served::CacheStatus;
use super::writer::WriteJob;
use super::{Node, Served};
use crate::policy::{self, OwnerStep, RepollStep};

impl Node {
    /// The peer phase of a miss. `None`: go upstream.
    pub(super) async fn ask_peers(&self, req: &CanonicalRequest, key: CacheKey) -> Option<Served> {
        let deadline = Instant::now() + self.inner.deadlines.lookup;

        // Announced without its body: we know who has it, fetch the body by CID.
        if let Some((meta, from)) = self.bodyless(&key) {
            if meta.is_fresh(self.now_ms()) {
                // A large body takes longer than a lookup; its size is known and bounded.
                let budget = self
                    .inner
                    .deadlines
                    .lookup
                    .max(self.inner.deadlines.body_fetch);
                if let Some(entry) = self.fetch_body(from, &meta, budget).await {
                    return self.store_from_peer(entry).await;
                }
            }
        }

        let plan = policy::plan_peer_phase(&key, self.inner.peer_id, &self.candidates())?;

        if let Some(owner) = plan.owner {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.lookup(owner, req, key, true, left).await;
            tracing::debug!(%key, %owner, reply = reply_kind(&reply), "owner lookup");
            match policy::after_owner_reply(reply) {
                OwnerStep::Accept(ann) => {
                    if let Some(served) = self.accept_found(*ann, owner).await {
                        return Some(served);
                    }
                }
                OwnerStep::Wait => {
                    if let Some(served) = self.wait_for_owner(owner, req, key).await {
                        return Some(served);
                    }
                    tracing::debug!(%key, "owner's fetch failed or took too long");
                }
                OwnerStep::AskOthers => {}
            }
        }

        let left = deadline.saturating_duration_since(Instant::now());
        if plan.others.is_empty() || left.is_zero() {
            return None;
        }
        let asks = plan.others.iter().map(|p| {
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

    fn bodyless(&self, key: &CacheKey) -> Option<(EntryMeta, PeerId)> {
        self.inner
            .signals
            .bodyless
            .lock()
            .ok()
            .and_then(|b| b.get(key).cloned())
    }

    async fn lookup(
        &self,
        peer: PeerId,
        req: &CanonicalRequest,
        key: CacheKey,
        fetch: bool,
        timeout: Duration,
    ) -> Option<LookupReply> {
        if timeout.is_zero() {
            return None;
        }
        let net = self.network()?;
        let data = self.seal(&Message::Lookup(Lookup {
            key,
            request: req.clone(),
            fetch,
        }))?;
        self.inner.counters.lookups_sent.inc();
        let resp = net.request(peer, data, timeout).await.ok()?;
        match self.open_from(peer, &resp, MAX_RR_MESSAGE)? {
            Message::LookupReply(r) => Some(r),
            _ => {
                self.distrust(peer);
                None
            }
        }
    }

    /// Waits for an owner that said `Pending`: the entry arrives by gossip (the writer
    /// wakes us), or a re-poll finds it.
    async fn wait_for_owner(
        &self,
        owner: PeerId,
        req: &CanonicalRequest,
        key: CacheKey,
    ) -> Option<Served> {
        let d = self.inner.deadlines;
        let deadline = Instant::now() + d.pending_wait;
        let mut poll = d.repoll_first;
        loop {
            let notify = self.arrival(&key);
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before the store is read: an arrival in between still wakes us.
            notified.as_mut().enable();
            if let Some(e) = self.local_fresh(&key) {
                self.done_waiting(&key, &notify);
                return Some(Served::entry(e, CacheStatus::Coalesced));
            }
            let now = Instant::now();
            if now >= deadline {
                self.done_waiting(&key, &notify);
                return None;
            }
            let woke = tokio::select! {
                _ = &mut notified => true,
                _ = tokio::time::sleep(poll.min(deadline - now)) => false,
            };
            self.done_waiting(&key, &notify);
            if woke {
                continue;
            }
            poll = policy::next_repoll(poll, d.repoll_max);
            let budget = d.lookup.max(d.repoll_lookup_min);
            match policy::after_repoll(self.lookup(owner, req, key, false, budget).await) {
                RepollStep::Accept(ann) => {
                    let mut served = self.accept_found(*ann, owner).await?;
                    served.status = CacheStatus::Coalesced;
                    return Some(served);
                }
                RepollStep::KeepWaiting => {}
                RepollStep::GiveUp => return None,
            }
        }
    }

    fn arrival(&self, key: &CacheKey) -> Arc<Notify> {
        match self.inner.signals.arrivals.lock() {
            Ok(mut m) => m
                .entry(*key)
                .or_insert_with(|| Arc::new(Notify::new()))
                .clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    fn done_waiting(&self, key: &CacheKey, notify: &Arc<Notify>) {
        if let Ok(mut m) = self.inner.signals.arrivals.lock() {
            // Only the map and this waiter hold it: nobody else waits.
            if Arc::strong_count(notify) <= 2 {
                m.remove(key);
            }
        }
    }

    /// Checks a `Found` reply, fetches its body when it came without, stores it.
    async fn accept_found(&self, ann: Announce, from: PeerId) -> Option<Served> {
        let key = ann.meta.key();
        if varies_by_identity(&ann.meta.request.path) {
            self.distrust(from);
            return None;
        }
        let written = self.inner.signals.written_at(&ann.meta.request.path);
        if policy::predates_write(ann.meta.fetched_at_ms, written) {
            tracing::debug!(%from, "peer offered a copy older than the last write");
            return None;
        }
        if let Err(e) = ann.meta.validate(&key, self.now_ms()) {
            tracing::debug!(%from, "invalid lookup reply: {e}");
            self.distrust(from);
            return None;
        }
        let entry = match ann.into_entry() {
            Ok(e) => e,
            Err(meta) => {
                let budget = self.inner.deadlines.body_fetch;
                self.fetch_body(from, &meta, budget).await?
            }
        };
        if entry.validate(&key, self.now_ms()).is_err() {
            self.distrust(from);
            return None;
        }
        self.inner.counters.lookups_found.inc();
        self.store_from_peer(entry).await
    }

    /// Stores a peer's entry and serves it; `stored` says whether the write held.
    async fn store_from_peer(&self, entry: Entry) -> Option<Served> {
        let stored = self.write(WriteJob::Merge(entry.clone())).await.is_ok();
        let mut served = Served::entry(entry, CacheStatus::Peer);
        served.stored = stored;
        Some(served)
    }

    /// Fetches a body by CID from `peer` and checks it against `meta`.
    pub(super) async fn fetch_body(
        &self,
        peer: PeerId,
        meta: &EntryMeta,
        timeout: Duration,
    ) -> Option<Entry> {
        let net = self.network()?;
        let data = self.seal(&Message::FetchBody(FetchBody {
            key: meta.key(),
            cid: meta.cid.clone(),
        }))?;
        let resp = net.request(peer, data, timeout).await.ok()?;
        match self.open_from(peer, &resp, MAX_RR_MESSAGE)? {
            Message::BodyReply(BodyReply::Found(body)) if meta.body_matches(&body) => {
                self.inner.counters.bodies_fetched.inc();
                Some(Entry {
                    meta: meta.clone(),
                    body,
                })
            }
            Message::BodyReply(BodyReply::NotFound) => None,
            // A body that does not hash to its CID, or another message: an attack or a
            // bug, either way not a peer to ask again.
            _ => {
                self.distrust(peer);
                None
            }
        }
    }
}

fn reply_kind(reply: &Option<LookupReply>) -> &'static str {
    match reply {
        Some(LookupReply::Found(_)) => "found",
        Some(LookupReply::Pending) => "pending",
        Some(LookupReply::NotFound) => "not found",
        None => "no answer in time",
    }
}
