//! The peer phase of a miss: the key's owner (the next one when it does not answer in
//! its budget, or the one it redirects to), waiting for it, a few other members, and
//! bodies fetched by CID. Peers make things faster, never unavailable: every step has
//! a deadline, and `None` means "go upstream".

use std::time::Duration;

use ghmesh_protocol::{
    Announce, BodyReply, CacheKey, CanonicalRequest, Entry, EntryMeta, FetchBody, Lookup,
    LookupReply, Message,
};
use libp2p::PeerId;
use tokio::time::Instant;

use super::drive::{drive, Carrier};
use super::sealed::NoAnswer;
use super::served::CacheStatus;
use super::writer::WriteJob;
use super::{Node, Served};
use crate::limits::{MAX_BODY_FRAME, MAX_SMALL_FRAME};
use crate::network::Channel;
use crate::policy;
use crate::policy::book::PeerBook;
use crate::policy::resolve::{End, Input, Start, View};

pub(super) use crate::policy::resolve::Ask;

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

/// The daemon's world for a resolution: lookups over the network, entries into the
/// store, waits on tokio's clock and the writer's arrivals.
struct DaemonCarrier<'a> {
    node: &'a Node,
    req: &'a CanonicalRequest,
    key: CacheKey,
    /// The fresh announce without body, when there is one.
    bodyless: Option<EntryMeta>,
    /// The entry accepted last: what `End::Peer` and `End::Coalesced` serve.
    accepted: Option<Served>,
}

impl Carrier for DaemonCarrier<'_> {
    fn view<R>(&mut self, f: impl FnOnce(&View<'_>) -> R) -> R {
        let node = self.node;
        let now_ms = node.now_ms();
        let lease_holder = node.leases(|l| l.holder(&self.key, now_ms)).flatten();
        let now = node.inner.started.at.elapsed();
        let mut f = Some(f);
        let seen = node.book(|book| {
            let view = View {
                now,
                now_ms,
                book,
                lease_holder,
            };
            f.take().map(|f| f(&view))
        });
        match (seen.flatten(), f) {
            (Some(r), _) => r,
            // No book (no mesh, or its lock poisoned): an empty one.
            (_, Some(f)) => f(&View {
                now,
                now_ms,
                book: &PeerBook::default(),
                lease_holder,
            }),
            (None, None) => unreachable!("f runs once, in the book or here"),
        }
    }

    async fn await_member(&mut self, until: Duration) -> Input {
        let node = self.node;
        let Some(mesh) = &node.inner.mesh else {
            return Input::Tick;
        };
        // Registered before the book is read: an admission in between still wakes us.
        let admitted = mesh.admitted.notified();
        tokio::pin!(admitted);
        admitted.as_mut().enable();
        if !node.members().is_empty() {
            return Input::Admitted;
        }
        tokio::select! {
            _ = &mut admitted => Input::Admitted,
            _ = tokio::time::sleep_until(node.instant(until)) => Input::Tick,
            // Shutting down: stop waiting (the machine then sees the window over or a
            // member, and goes on).
            _ = node.inner.tasks.stopping.cancelled() => Input::Tick,
        }
    }

    async fn fetch_body(&mut self, from: PeerId, budget: Duration) -> bool {
        let Some(meta) = &self.bodyless else {
            return false;
        };
        self.accepted = match self.node.fetch_body(from, meta, budget).await {
            Some(entry) => self.node.store_from_peer(entry).await,
            None => None,
        };
        self.accepted.is_some()
    }

    async fn sleep_until(&mut self, until: Duration) {
        tokio::time::sleep_until(self.node.instant(until)).await;
    }

    async fn ask(&mut self, peer: PeerId, ask: Ask, budget: Duration) -> Option<LookupReply> {
        let (node, req, key) = (self.node, self.req, self.key);
        let reply = node.lookup(peer, req, key, ask, budget).await;
        tracing::debug!(%key, %peer, reply = reply_kind(&reply), "lookup");
        reply
    }

    async fn ask_all(
        &mut self,
        peers: &[PeerId],
        budget: Duration,
    ) -> Vec<(PeerId, Option<LookupReply>)> {
        let (node, req, key) = (self.node, self.req, self.key);
        let asks = peers.iter().map(|p| {
            let p = *p;
            async move { (p, node.lookup(p, req, key, Ask::HAVE, budget).await) }
        });
        futures::future::join_all(asks).await
    }

    async fn accept(&mut self, from: PeerId, announce: Announce) -> bool {
        self.accepted = self.node.accept_found(announce, from).await;
        self.accepted.is_some()
    }

    async fn wait(&mut self, _peer: PeerId, until: Duration) -> bool {
        match self.node.wait_for_arrival(&self.key, until).await {
            Some(entry) => {
                self.accepted = Some(Served::entry(entry, CacheStatus::Coalesced));
                true
            }
            None => false,
        }
    }

    fn release(&mut self, owner: PeerId) {
        self.node.release_lease(owner, self.req, self.key);
    }
}

impl Node {
    /// The peer phase of a miss; `ask` is what the key's owner is asked for. Every
    /// decision is [`crate::policy::resolve::Resolution`]'s; [`DaemonCarrier`] carries
    /// its steps out.
    pub(super) async fn ask_peers(
        &self,
        req: &CanonicalRequest,
        key: CacheKey,
        ask: Ask,
    ) -> PeerPhase {
        let bodyless = self
            .inner
            .signals
            .bodyless(&key)
            .filter(|(meta, _)| meta.is_fresh(self.now_ms()));
        let start = Start {
            key,
            me: self.inner.me.id,
            ask,
            node_started: Duration::ZERO,
            node_started_ms: self.inner.started.unix_ms,
            has_bootstrap: !self.inner.cfg.bootstrap.is_empty(),
            bodyless_from: bodyless.as_ref().map(|(_, from)| *from),
            timers: self.deadlines().timers(),
        };
        let mut carrier = DaemonCarrier {
            node: self,
            req,
            key,
            bodyless: bodyless.map(|(meta, _)| meta),
            accepted: None,
        };
        let (end, redirects) = drive(&mut carrier, start).await;
        self.inner
            .telemetry
            .counters
            .redirects
            .inc_by(u64::from(redirects));
        match (end, carrier.accepted) {
            (End::Peer, Some(served)) => PeerPhase::Served(served),
            (End::Coalesced, Some(mut served)) => {
                served.status = CacheStatus::Coalesced;
                PeerPhase::Served(served)
            }
            (End::Leased(owner), _) => PeerPhase::Leased(owner),
            _ => PeerPhase::Upstream,
        }
    }

    /// The moment `at` on the resolution's time axis (from the node's start).
    fn instant(&self, at: Duration) -> Instant {
        self.inner
            .started
            .at
            .checked_add(at)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// A fresh copy of `key` held now or arriving before `until` (the writer wakes us).
    async fn wait_for_arrival(&self, key: &CacheKey, until: Duration) -> Option<Entry> {
        let deadline = self.instant(until);
        loop {
            let notify = self.inner.signals.arrival(key);
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before the store is read: an arrival in between still wakes us.
            notified.as_mut().enable();
            if let Some(e) = self.local_fresh(key) {
                self.inner.signals.done_waiting(key, &notify);
                return Some(e);
            }
            let woke = tokio::select! {
                _ = &mut notified => true,
                _ = tokio::time::sleep_until(deadline) => false,
            };
            self.inner.signals.done_waiting(key, &notify);
            if !woke {
                return None;
            }
        }
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
        let rule = self.deadlines().budget_rule();
        self.book(|b| b.budget(&peer, rule)).unwrap_or(rule.initial)
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
        self.inner.telemetry.counters.lookups_sent.inc();
        let started = Instant::now();
        let answer = match self
            .ask(peer, Channel::Small, &msg, timeout, MAX_SMALL_FRAME)
            .await
        {
            Ok(answer) => answer,
            Err(NoAnswer::NotCarried) => {
                self.inner.telemetry.counters.public_relay_held.inc();
                self.book(|b| b.public_relay_of(peer, true));
                return None;
            }
            Err(NoAnswer::Silent) => {
                self.inner.telemetry.counters.lookup_timeouts.inc();
                let (now, rule) = (self.now_ms(), self.deadlines().budget_rule());
                self.book(|b| b.lookup_unanswered(&peer, timeout, rule, now));
                return None;
            }
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

    /// Checks a `Found` reply (its key was checked against the one asked when it
    /// arrived, in `lookup`), makes its metadata ours (our freshness rule, our clock, the
    /// kept headers), fetches its body when it came without, stores it.
    async fn accept_found(&self, mut ann: Announce, from: PeerId) -> Option<Served> {
        let key = ann.meta.key();
        if ann.meta.request.varies_by_identity() {
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
                let budget = self.deadlines().body_fetch;
                self.fetch_body(from, &meta, budget).await?
            }
        };
        self.inner.telemetry.counters.lookups_found.inc();
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
                self.inner.telemetry.counters.bodies_fetched.inc();
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
