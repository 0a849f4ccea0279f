//! The peer phase of a miss: the key's owner (the next one when it does not answer in
//! its budget, or the one it redirects to), waiting for it, a few other members, and
//! bodies fetched by CID. Peers make things faster, never unavailable: every step has
//! a deadline, and `None` means "go upstream".

use std::sync::Arc;
use std::time::Duration;

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
use crate::limits::{MAX_BODY_FRAME, MAX_OWNER_ASKS, MAX_SMALL_FRAME};
use crate::network::Channel;
use crate::policy::{self, OwnerStep, RepollStep};

/// What a lookup asks of its receiver besides "do you have it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ask {
    /// Fetch it for us on a miss (we read with the node's token: the owner's serves).
    pub fetch: bool,
    /// Let us fetch it for the fleet (we read with a local client's own token).
    pub lease: bool,
    /// We held the lease and got nothing to share: pass it on.
    pub release: bool,
}

impl Ask {
    /// Whether the receiver has (or is fetching) the entry, nothing more.
    pub const HAVE: Self = Self {
        fetch: false,
        lease: false,
        release: false,
    };
    /// Fetch it for us on a miss.
    pub const FETCH: Self = Self {
        fetch: true,
        ..Self::HAVE
    };
    /// Grant us the lease on a miss.
    pub const LEASE: Self = Self {
        lease: true,
        ..Self::HAVE
    };
    /// Give the lease back.
    const RELEASE: Self = Self {
        release: true,
        ..Self::HAVE
    };
}

/// How the peer phase of a miss ended.
pub(super) enum PeerPhase {
    /// A peer's entry (or the one we waited for).
    Served(Served),
    /// Nothing from peers: go upstream.
    Upstream,
    /// This owner leased the key to us: go upstream now, for the fleet, and release
    /// the lease if the answer cannot be shared.
    Leased(PeerId),
}

impl From<Option<Served>> for PeerPhase {
    fn from(s: Option<Served>) -> Self {
        s.map_or(Self::Upstream, Self::Served)
    }
}

impl Node {
    /// The peer phase of a miss; `ask` is what the key's owner is asked for.
    pub(super) async fn ask_peers(
        &self,
        req: &CanonicalRequest,
        key: CacheKey,
        ask: Ask,
    ) -> PeerPhase {
        self.await_first_member().await;
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
                    return self.store_from_peer(entry).await.into();
                }
            }
        }

        let me = self.inner.peer_id;
        let mut plan = policy::plan_peer_phase(&key, me, &self.candidates());
        if plan.as_ref().is_none_or(|p| p.owner.is_none()) {
            // We would own it (or know nobody): unless our view is still filling in.
            // At most half the budget: the members that heard the key announced before
            // we came still need the rest to answer us.
            self.settle_view(deadline - self.inner.deadlines.lookup / 2)
                .await;
            plan = policy::plan_peer_phase(&key, me, &self.candidates());
        }
        let Some(plan) = plan else {
            return PeerPhase::Upstream;
        };

        if plan.owner.is_none() {
            // We own the key: a member we leased it to is fetching it for everyone.
            if let Some(waited) = self.wait_for_lease_holder(req, key).await {
                return waited;
            }
        }
        let mut asked: Vec<PeerId> = Vec::new();
        let mut next = plan.owner;
        while let Some(owner) = next.take() {
            if owner == me {
                // We own the key in our view now (the owner before us did not answer,
                // or redirected to us): fetch it ourselves, at once, unless we leased it
                // to a member that is fetching it for everyone.
                let waited = self.wait_for_lease_holder(req, key).await;
                return waited.unwrap_or(PeerPhase::Upstream);
            }
            asked.push(owner);
            let budget = self.budget_for(owner);
            let reply = self.lookup(owner, req, key, ask, budget).await;
            if reply.is_none() && ask.lease {
                // The owner may have granted a lease whose answer we lost: hand it back
                // rather than leave the fleet waiting on a fetch we do not know we own.
                self.release_lease(owner, req, key);
            }
            tracing::debug!(%key, %owner, reply = reply_kind(&reply), "owner lookup");
            let step = policy::after_owner_reply(reply);
            match &step {
                OwnerStep::Accept(ann) => {
                    if let Some(served) = self.accept_found((**ann).clone(), owner).await {
                        return PeerPhase::Served(served);
                    }
                }
                OwnerStep::Wait => match self.wait_for_owner(owner, req, key, ask).await {
                    PeerPhase::Upstream => {
                        tracing::debug!(%key, "owner's fetch failed or took too long")
                    }
                    done => return done,
                },
                OwnerStep::Fetch => return PeerPhase::Leased(owner),
                OwnerStep::Redirect(_) => {
                    self.inner.counters.redirects.inc();
                }
                OwnerStep::NextOwner | OwnerStep::AskOthers => {}
            }
            let candidates = self.candidates();
            let left = MAX_OWNER_ASKS.saturating_sub(asked.len());
            next = policy::next_owner(&step, &key, me, &asked, &candidates, left);
        }

        let left = deadline.saturating_duration_since(Instant::now());
        let now = self.now_ms();
        let mut others = plan.others;
        if policy::starting(now, self.inner.started_ms) {
            let eldest = self
                .book(|b| b.eldest(now, crate::policy::EXTRA_ASKS))
                .unwrap_or_default();
            others = policy::others_while_starting(&others, &eldest, plan.owner);
        }
        others.retain(|p| !asked.contains(p));
        if others.is_empty() || left.is_zero() {
            return PeerPhase::Upstream;
        }
        let asks = others.iter().map(|p| {
            let p = *p;
            async move { (p, self.lookup(p, req, key, Ask::HAVE, left).await) }
        });
        let mut fetching = None;
        for (peer, reply) in futures::future::join_all(asks).await {
            match reply {
                Some(LookupReply::Found(ann)) => {
                    if let Some(served) = self.accept_found(*ann, peer).await {
                        return PeerPhase::Served(served);
                    }
                }
                // It is asking GitHub right now (a member whose view put the owner
                // elsewhere): wait for it rather than ask GitHub too.
                Some(LookupReply::Pending) => fetching = fetching.or(Some(peer)),
                _ => {}
            }
        }
        match fetching {
            // Re-polled as first asked: a client's miss never makes a peer fetch for it.
            Some(peer) => {
                let again = if ask.lease { Ask::LEASE } else { Ask::FETCH };
                self.wait_for_owner(peer, req, key, again).await
            }
            None => PeerPhase::Upstream,
        }
    }

    /// We own `key`: if we leased it to a member, that member is fetching it for the
    /// fleet, so we wait for it as any asker would (binding, like `Pending`); a holder
    /// that fails answers a re-poll with a redirect to us, and we fetch.
    /// `None`: no lease is held on it.
    async fn wait_for_lease_holder(
        &self,
        req: &CanonicalRequest,
        key: CacheKey,
    ) -> Option<PeerPhase> {
        let now = self.now_ms();
        let holder = self.leases(|l| l.holder(&key, now)).flatten()?;
        // Only whether it has it or is asking GitHub now: a holder with another flight
        // of the key that waits on us must not keep us waiting on it in turn.
        Some(self.wait_for_owner(holder, req, key, Ask::HAVE).await)
    }

    /// Gives back a lease `owner` granted us (our fetch gave nothing to share), so that
    /// the next asker gets it at once. Best effort: otherwise it expires.
    pub(super) fn release_lease(&self, owner: PeerId, req: &CanonicalRequest, key: CacheKey) {
        let node = self.clone();
        let req = req.clone();
        let budget = self.budget_for(owner);
        self.spawn(async move {
            let _ = node.lookup(owner, &req, key, Ask::RELEASE, budget).await;
        });
    }

    /// How long `peer` gets to answer a lookup (adapts to its latency).
    fn budget_for(&self, peer: PeerId) -> Duration {
        let rule = self.inner.deadlines.budget_rule();
        self.book(|b| b.budget(&peer, rule)).unwrap_or(rule.initial)
    }

    fn bodyless(&self, key: &CacheKey) -> Option<(EntryMeta, PeerId)> {
        self.inner
            .signals
            .bodyless
            .lock()
            .ok()
            .and_then(|b| b.get(key))
    }

    /// Asks `peer` for `key` within `timeout`. `None`: no usable answer in time (the
    /// peer's standing drops). A reply for another key than the one asked is a
    /// violation and counts as nothing found.
    async fn lookup(
        &self,
        peer: PeerId,
        req: &CanonicalRequest,
        key: CacheKey,
        ask: Ask,
        timeout: Duration,
    ) -> Option<LookupReply> {
        if timeout.is_zero() {
            return None;
        }
        let msg = Message::Lookup(Lookup {
            addr: self.address(peer),
            key,
            request: req.clone(),
            fetch: ask.fetch,
            lease: ask.lease,
            release: ask.release,
        });
        self.inner.counters.lookups_sent.inc();
        let started = Instant::now();
        let Ok(answer) = self
            .ask(peer, Channel::Small, &msg, timeout, MAX_SMALL_FRAME)
            .await
        else {
            self.inner.counters.lookup_timeouts.inc();
            // Only a peer given its whole budget failed it: one asked with what was
            // left of ours (the others, late in the peer phase) did not.
            if timeout >= self.budget_for(peer) {
                let now = self.now_ms();
                self.book(|b| b.timed_out(&peer, timeout, now));
            }
            return None;
        };
        let elapsed = started.elapsed();
        match answer? {
            Message::LookupReply(LookupReply::Found(ann)) if ann.meta.key() != key => {
                tracing::debug!(%peer, "lookup answered with another key");
                self.violated(peer);
                Some(LookupReply::NotFound)
            }
            Message::LookupReply(r) => {
                self.book(|b| b.answered(&peer, elapsed));
                Some(r)
            }
            _ => {
                self.violated(peer);
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
        ask: Ask,
    ) -> PeerPhase {
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
                return PeerPhase::Served(Served::entry(e, CacheStatus::Coalesced));
            }
            let now = Instant::now();
            if now >= deadline {
                self.done_waiting(&key, &notify);
                return PeerPhase::Upstream;
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
            // Asked as the first time: a resolution of ours is what it waits for.
            match policy::after_repoll(self.lookup(owner, req, key, ask, budget).await) {
                RepollStep::Accept(ann) => {
                    let Some(mut served) = self.accept_found(*ann, owner).await else {
                        return PeerPhase::Upstream;
                    };
                    served.status = CacheStatus::Coalesced;
                    return PeerPhase::Served(served);
                }
                RepollStep::KeepWaiting => {}
                RepollStep::GiveUp => return PeerPhase::Upstream,
                // The lease passed to us: its holder failed, left, or ran out of time.
                RepollStep::Fetch => return PeerPhase::Leased(owner),
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

    /// Checks a `Found` reply (its key was checked against the one asked when it
    /// arrived, in `lookup`), makes its metadata ours (our freshness rule, our clock, the
    /// kept headers), fetches its body when it came without, stores it.
    async fn accept_found(&self, mut ann: Announce, from: PeerId) -> Option<Served> {
        let key = ann.meta.key();
        if varies_by_identity(&ann.meta.request.path) {
            self.violated(from);
            return None;
        }
        ann.meta = ann.meta.adopt(self.peer_rules(), self.now_ms());
        let written = self.inner.signals.written_at(&ann.meta.request.path);
        if policy::predates_write(ann.meta.fetched_at_ms, written) {
            tracing::debug!(%from, "peer offered a copy older than the last write");
            return None;
        }
        if let Err(e) = ann.meta.validate(&key, self.now_ms()) {
            tracing::debug!(%from, "invalid lookup reply: {e}");
            self.violated(from);
            return None;
        }
        // Each body is hashed once: one pulled by CID was checked against the (validated)
        // metadata as it arrived; an inline one is checked here.
        let entry = match ann.into_entry() {
            Ok(e) => {
                if e.validate(&key, self.now_ms()).is_err() {
                    self.violated(from);
                    return None;
                }
                e
            }
            Err(meta) => {
                let budget = self.inner.deadlines.body_fetch;
                self.fetch_body(from, &meta, budget).await?
            }
        };
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
        // Body replies are the only large frames we read: only from members.
        if !self.book(|b| b.is_member(&peer)).unwrap_or(false) {
            return None;
        }
        let msg = Message::FetchBody(FetchBody {
            addr: self.address(peer),
            key: meta.key(),
            cid: meta.cid.clone(),
        });
        let answer = self.ask(peer, Channel::Body, &msg, timeout, MAX_BODY_FRAME);
        match answer.await.ok()?? {
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
                self.violated(peer);
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
        Some(LookupReply::Redirect(_)) => "redirect",
        Some(LookupReply::Busy) => "busy",
        Some(LookupReply::Lease) => "lease",
        None => "no answer in time",
    }
}
