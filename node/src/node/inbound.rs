//! What peers send us: connections (greeted in [`super::admission`]), gossip
//! (announces, refreshes, invalidations) and requests (hellos, lookups, body fetches,
//! member lists). Everything is opened and checked before it is believed. Gossip that
//! fails is rejected without blaming the peer that relayed it; a request that fails
//! counts against the member that sent it (never for clock skew alone), and only
//! members get anything but a hello answered.

use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use ghmesh_protocol::{
    Announce, BodyReply, CacheKey, Entry, FetchBody, Lookup, LookupReply, Message, Refresh,
};
use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::read::Resolution;
use super::writer::WriteJob;
use super::{Inner, Node};
use crate::network::{Channel, NetEvent, Traffic};
use crate::placement;
use crate::policy::book::RequestVerdict;
use crate::policy::{self, BodylessAction, LookupAnswer, LookupView};
use crate::upstream::Credential;

/// Handles network events until shutdown, or until the node or the network is gone.
pub(super) async fn run(node: Weak<Inner>, mut events: mpsc::Receiver<NetEvent>) {
    let Some(stopping) = node.upgrade().map(|i| i.tasks.stopping.clone()) else {
        return;
    };
    loop {
        let ev = tokio::select! {
            _ = stopping.cancelled() => break,
            ev = events.recv() => ev,
        };
        let (Some(ev), Some(inner)) = (ev, node.upgrade()) else {
            break;
        };
        let node = Node { inner };
        match ev {
            NetEvent::Connected(peer) => node.on_connected(peer),
            NetEvent::Disconnected(peer) => node.on_disconnected(peer),
            NetEvent::Subscribed(_) => node.reannounce(),
            NetEvent::Reach(reach) => node.on_reach(reach),
            NetEvent::Relayed(addrs) => node.on_relayed(addrs),
            NetEvent::PublicRelay { peer, only } => {
                node.book(|b| b.public_relay_of(peer, only));
            }
            NetEvent::Gossip {
                id,
                source,
                author,
                data,
            } => {
                let verdict = node.on_gossip(source, author, &data);
                if let Some(net) = node.network() {
                    net.report(id, source, verdict).await;
                }
            }
            NetEvent::Request {
                id,
                channel,
                peer,
                data,
                public_relay,
            } => {
                let handler = node.clone();
                node.spawn(async move {
                    let reply = handler.on_request(peer, channel, &data, public_relay).await;
                    if let Some(net) = handler.network() {
                        match reply {
                            Some(bytes) => net.respond(channel, id, bytes).await,
                            None => net.refuse(channel, id).await,
                        }
                    }
                });
            }
        }
    }
}

impl Node {
    fn on_gossip(&self, source: PeerId, author: Option<PeerId>, data: &[u8]) -> MessageAcceptance {
        let sender = author.unwrap_or(source);
        tracing::trace!(%sender, len = data.len(), "gossip received");
        let Some(msg) = self.open_gossip(data) else {
            return MessageAcceptance::Reject;
        };
        let accepted = match msg {
            Message::Announce(ann) => self.on_announce(sender, ann),
            Message::Ledger(ledger) => match ledger.check(self.clock().now_secs()) {
                Ok(()) => {
                    self.inner.telemetry.counters.ledger_received.inc();
                    let spender = ledger
                        .spender
                        .as_ref()
                        .and_then(|b| PeerId::from_bytes(b).ok());
                    self.inner.upstream.ledger_heard(&ledger.entries, spender);
                    true
                }
                Err(e) => {
                    tracing::debug!(%sender, "invalid ledger: {e}");
                    false
                }
            },
            Message::Invalidate(inv) => match policy::check_invalidate(&inv, self.now_ms()) {
                Ok(()) => {
                    let node = self.clone();
                    self.spawn(async move {
                        let _ = node.invalidate(inv.paths, inv.at_ms, false).await;
                    });
                    true
                }
                Err(e) => {
                    tracing::debug!(%sender, "invalid invalidation: {e}");
                    false
                }
            },
            Message::Refresh(r) => match policy::check_refresh(&r) {
                Ok(()) => {
                    if let Some(capped) = self.adopt_refresh(r) {
                        self.write_behind(WriteJob::Refresh(capped));
                    }
                    true
                }
                Err(e) => {
                    tracing::debug!(%sender, "invalid refresh: {e}");
                    false
                }
            },
            _ => false,
        };
        if accepted {
            MessageAcceptance::Accept
        } else {
            // Rejected (gossipsub does not forward it) and counted; nobody is blamed:
            // gossip is relayed, and the relaying peer may be honest.
            self.inner.telemetry.counters.rejected_messages.inc();
            MessageAcceptance::Reject
        }
    }

    /// A peer's 304 news, capped by our own freshness rule for the entry we hold; `None`
    /// when we do not hold that body (a refresh for something we never had changes
    /// nothing).
    fn adopt_refresh(&self, r: Refresh) -> Option<Refresh> {
        let held = self.inner.store.get_meta(&r.key).ok().flatten()?;
        if held.cid != r.cid {
            return None;
        }
        let (fetched_at_ms, fresh_until_ms) = held.adopt_refresh(
            r.fetched_at_ms,
            r.fresh_until_ms,
            self.peer_rules(),
            self.now_ms(),
        );
        Some(Refresh {
            fetched_at_ms,
            fresh_until_ms,
            ..r
        })
    }

    /// True when the announce is valid (whether or not we keep it).
    fn on_announce(&self, sender: PeerId, mut ann: Announce) -> bool {
        let now = self.now_ms();
        let key = ann.meta.key();
        ann.meta = ann.meta.adopt(self.peer_rules(), now);
        if ann.meta.request.varies_by_identity() {
            tracing::debug!(%sender, "announce of an identity-dependent answer");
            return false;
        }
        if let Err(e) = ann.meta.validate(&key, now) {
            tracing::debug!(%sender, "invalid announce: {e}");
            return false;
        }
        match ann.into_entry() {
            Ok(entry) => {
                if entry.validate(&key, now).is_err() {
                    return false;
                }
                self.inner.telemetry.counters.announces_received.inc();
                self.write_behind(WriteJob::Merge(entry));
            }
            Err(meta) => {
                self.inner.telemetry.counters.announces_received.inc();
                let held = self.inner.store.get_meta(&key).ok().flatten();
                let action = policy::on_bodyless(held.as_ref(), &meta);
                if action == BodylessAction::Ignore {
                    return true;
                }
                let from = meta.origin.parse().unwrap_or(sender);
                if action == BodylessAction::Prefetch {
                    // Full queue: the body is fetched when first read.
                    let _ = self.inner.prefetch.try_send(((*meta).clone(), from));
                }
                self.inner.signals.bodyless_announced(key, *meta, from);
            }
        }
        true
    }

    /// Answers a peer's request; `None` refuses it (it failed to open, was not
    /// addressed to us, came from a non-member, was a replay, or made no sense).
    async fn on_request(
        &self,
        peer: PeerId,
        channel: Channel,
        data: &[u8],
        public_relay: bool,
    ) -> Option<Bytes> {
        let msg = self.open_request(peer, data)?;
        if public_relay && super::sealed::traffic_of(&msg) == Traffic::Fleet {
            // A member that thought it had another way to us; it asks elsewhere.
            self.inner.telemetry.counters.public_relay_held.inc();
            return None;
        }
        let nonce = msg.addressing()?.nonce;
        let hello = matches!(msg, Message::Hello(_));
        if hello {
            // Its hello may come before our own connection event: know it (and greet it
            // back) now, or its nonce could not be recorded and it would be refused.
            self.on_connected(peer);
        }
        if !hello && !self.book(|b| b.is_member(&peer)).unwrap_or(false) {
            tracing::debug!(%peer, "request from a peer that is not a member");
            return None;
        }
        let now = self.now_ms();
        match self.book(|b| b.request(&peer, nonce, now))? {
            RequestVerdict::Handle => {}
            RequestVerdict::Replay => {
                self.inner.telemetry.counters.replays_refused.inc();
                self.violated(peer);
                return None;
            }
            RequestVerdict::Busy => {
                self.inner.telemetry.counters.peer_busy.inc();
                return match msg {
                    Message::Lookup(_) => self
                        .seal(&Message::LookupReply(LookupReply::Busy))
                        .map(Bytes::from),
                    _ => None,
                };
            }
        }
        let on_body_channel = matches!(msg, Message::FetchBody(_));
        if on_body_channel != (channel == Channel::Body) {
            self.violated(peer);
            return None;
        }
        let reply = match msg {
            Message::Hello(h) => {
                self.heard_hello_budgets(peer, &h);
                let now = self.now_ms();
                let standing = super::admission::standing_of(&h);
                if self.book(|b| b.set_standing(&peer, standing, now)) == Some(true) {
                    self.tell_standing();
                }
                let mine = self.book(|b| b.mine()).unwrap_or_default();
                let up = &self.inner.upstream;
                let (ledger, spends) = (up.ledger_snapshot(), up.own_budget());
                let addr = h.addr.reversed();
                Message::HelloReply(super::admission::hello_of(addr, mine, ledger, spends))
            }
            Message::Lookup(l) => {
                if l.request.check().is_err()
                    || l.request.key() != l.key
                    || !l.request.is_cacheable_read()
                {
                    self.violated(peer);
                    return None;
                }
                Message::LookupReply(self.answer_lookup(peer, l))
            }
            Message::FetchBody(f) => return self.body_reply(&f),
            Message::Members(m) => {
                if m.known.len() > ghmesh_protocol::wire::MAX_MEMBER_LIST {
                    self.violated(peer);
                    return None;
                }
                let node = self.clone();
                let new = m.new;
                let now = self.now_ms();
                // A member telling us its own new addresses (it became reachable
                // through a relay): the members it could not reach need them, and only
                // we (who reach both) can pass them on. At most once per
                // REINTRODUCE_EVERY per member.
                let own = m
                    .known
                    .iter()
                    .find(|e| e.peer.as_slice() == peer.to_bytes().as_slice())
                    .cloned()
                    .filter(|_| {
                        self.book(|b| b.may_reintroduce(&peer, now))
                            .unwrap_or(false)
                    });
                if let Some(own) = own {
                    let node = self.clone();
                    self.spawn(async move { node.pass_on(peer, own).await });
                }
                self.spawn(async move {
                    // Introduced to someone who may be dialling us from the list it
                    // pulled: a moment's jitter makes crossing dials rarer.
                    let jitter = Duration::from_millis(rand::random::<u64>() % 100);
                    tokio::time::sleep(jitter).await;
                    node.dial_unknown(m.known).await;
                    if new {
                        node.introduce(peer).await;
                    }
                });
                Message::MemberList(self.member_list(peer).await)
            }
            _ => {
                self.violated(peer);
                return None;
            }
        };
        self.seal(&reply).map(Bytes::from)
    }

    /// The sealed reply to a body request: sealed once per body and reused for the
    /// other members that pull it (see `reply_cache`).
    fn body_reply(&self, f: &FetchBody) -> Option<Bytes> {
        let mesh = self.inner.mesh.as_ref()?;
        let now = self.clock().now_secs();
        if let Some(cached) = mesh.cached_reply(&f.key, &f.cid, now) {
            return Some(cached);
        }
        let Some(entry) = self.local(&f.key).filter(|e| e.meta.cid == f.cid) else {
            return self
                .seal(&Message::BodyReply(BodyReply::NotFound))
                .map(Bytes::from);
        };
        let sealed = Bytes::from(self.seal(&Message::BodyReply(BodyReply::Found(entry.body)))?);
        mesh.keep_reply(f.key, &f.cid, sealed.clone(), now);
        Some(sealed)
    }

    /// Answers a member's lookup: what we hold, who fetches, or that we fetch for it.
    fn answer_lookup(&self, asker: PeerId, l: Lookup) -> LookupReply {
        if l.release {
            self.leases(|ls| ls.release(&l.key, &asker));
            return LookupReply::NotFound;
        }
        let now = self.now_ms();
        let local = self.local(&l.key);
        let view = self.lookup_view(asker, &l, local.as_ref(), now);
        match (policy::answer_lookup(view), local) {
            // Large bodies go by CID on the body protocol: lookup replies stay small.
            (LookupAnswer::Found, Some(e)) => LookupReply::Found(Box::new(Announce::of(&e))),
            (LookupAnswer::Pending, _) => LookupReply::Pending,
            (LookupAnswer::Redirect(p), _) => LookupReply::Redirect(p.to_bytes().into()),
            (LookupAnswer::GrantLease, _) => self.grant_lease(asker, l.key, now),
            (LookupAnswer::Busy, _) => {
                self.inner.telemetry.counters.peer_busy.inc();
                LookupReply::Busy
            }
            (LookupAnswer::StartFetch, local) => self.fetch_for(asker, l, local),
            _ => LookupReply::NotFound,
        }
    }

    /// What the lookup decision needs to know of `l` on this node at `now`.
    fn lookup_view(
        &self,
        asker: PeerId,
        l: &Lookup,
        local: Option<&Entry>,
        now: u64,
    ) -> LookupView {
        let holder = self.leases(|ls| ls.holder(&l.key, now)).flatten();
        let me = self.inner.me.id;
        let owner = placement::owner(&l.key, self.owners()).filter(|o| *o != me);
        LookupView {
            shareable: !l.request.varies_by_identity(),
            fresh_local: local.is_some_and(|e| e.meta.is_fresh(now)),
            in_flight: self.inner.flights.contains(&l.key),
            fetching: self.inner.flights.fetching(&l.key),
            fetch_asked: l.fetch,
            lease_asked: l.lease,
            leased_to_other: holder.is_some_and(|h| h != asker),
            failed_recently: self
                .leases(|ls| ls.failed_recently(&l.key, now))
                .unwrap_or(false),
            mode: self.inner.cfg.mode,
            room: self.inner.flights.has_room(),
            owner,
        }
    }

    /// Lets `asker` fetch `key` for the fleet (or says `Pending` when someone else
    /// just took the lease).
    fn grant_lease(&self, asker: PeerId, key: CacheKey, now: u64) -> LookupReply {
        // As long as the holder's resolution may take (its upstream call and the queue
        // before it): a slow GitHub must not end the lease mid-fetch. A holder that
        // fails releases it; one that leaves loses it.
        let until = now.saturating_add(self.deadlines().flight().as_millis() as u64);
        match self.leases(|ls| ls.grant(key, asker, now, until)) {
            Some(true) => {
                self.inner.telemetry.counters.leases_granted.inc();
                LookupReply::Lease
            }
            _ => LookupReply::Pending,
        }
    }

    /// Fetches `l` for `asker` (and the fleet) as its owner, within the asker's share
    /// of our fetches.
    fn fetch_for(&self, asker: PeerId, l: Lookup, local: Option<Entry>) -> LookupReply {
        let now = self.now_ms();
        if !self.book(|b| b.start_fetch(&asker, now)).unwrap_or(false) {
            self.inner.telemetry.counters.peer_busy.inc();
            return LookupReply::Busy;
        }
        // An expired copy, if any, makes the owner's fetch a free revalidation. With
        // our own token: an asker's token never leaves its node. An owner that has
        // just joined may lack what older members heard announced before it came: it
        // asks them first.
        let starting = policy::starting(now, self.inner.started.unix_ms);
        tracing::debug!(%asker, path = %l.request.path, "a member asked us to fetch");
        let (flight, led) = self.join_or_start(Resolution {
            req: l.request,
            key: l.key,
            local,
            ask_peers: starting,
            cred: Credential::Node,
        });
        tracing::debug!(%asker, led, "fetch for a member: a new resolution or joined one");
        let node = self.clone();
        let key = l.key;
        self.spawn(async move {
            let stored = node.await_flight(flight).await.is_ok_and(|s| s.shared());
            node.book(|b| b.fetch_done(&asker));
            if !stored {
                // Long enough for every waiter's next re-poll (at most `repoll_max`
                // apart) to learn it; short enough that a later asker, after a
                // transient error, gets one fetch for all again.
                let now = node.now_ms();
                let until = now + 2 * node.deadlines().repoll_max.as_millis() as u64;
                node.leases(|ls| ls.fetch_failed(key, now, until));
            }
        });
        LookupReply::Pending
    }
}
