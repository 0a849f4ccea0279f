//! What peers send us: gossip (announces, refreshes) and requests (lookups, body
//! fetches). Everything is opened and checked before it is believed; what fails is
//! rejected, counted, and its sender distrusted.

use std::sync::Weak;

use ghmesh_protocol::wire::{MAX_GOSSIP_MESSAGE, MAX_RR_MESSAGE};
use ghmesh_protocol::{varies_by_identity, Announce, BodyReply, Lookup, LookupReply, Message};
use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::read::Resolution;
use super::writer::WriteJob;
use super::{Inner, Node, MAX_BODYLESS};
use crate::network::NetEvent;
use crate::policy::{self, BodylessAction, LookupAnswer, LookupView};
use crate::upstream::Credential;

/// Handles network events until shutdown, or until the node or the network is gone.
pub(super) async fn run(node: Weak<Inner>, mut events: mpsc::Receiver<NetEvent>) {
    let Some(stopping) = node.upgrade().map(|i| i.stopping.clone()) else {
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
            NetEvent::Request { id, peer, data } => {
                let handler = node.clone();
                node.spawn(async move {
                    let reply = handler.on_request(peer, &data);
                    if let Some(net) = handler.network() {
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

impl Node {
    fn on_gossip(&self, source: PeerId, author: Option<PeerId>, data: &[u8]) -> MessageAcceptance {
        let sender = author.unwrap_or(source);
        tracing::trace!(%sender, len = data.len(), "gossip received");
        let Some(msg) = self.open_from(sender, data, MAX_GOSSIP_MESSAGE) else {
            return MessageAcceptance::Reject;
        };
        let accepted = match msg {
            Message::Announce(ann) => self.on_announce(sender, ann),
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
            Message::Refresh(r) => match policy::check_refresh(&r, self.now_ms()) {
                Ok(()) => {
                    self.write_behind(WriteJob::Refresh(r));
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
            self.distrust(sender);
            MessageAcceptance::Reject
        }
    }

    /// True when the announce is valid (whether or not we keep it).
    fn on_announce(&self, sender: PeerId, ann: Announce) -> bool {
        let now = self.now_ms();
        let key = ann.meta.key();
        if varies_by_identity(&ann.meta.request.path) {
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
                self.inner.counters.announces_received.inc();
                self.write_behind(WriteJob::Merge(entry));
            }
            Err(meta) => {
                self.inner.counters.announces_received.inc();
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
                if let Ok(mut b) = self.inner.signals.bodyless.lock() {
                    if b.len() >= MAX_BODYLESS {
                        b.clear();
                    }
                    b.insert(key, (*meta, from));
                }
            }
        }
        true
    }

    /// Answers a peer's request; `None` refuses it (it failed to open or made no sense).
    fn on_request(&self, peer: PeerId, data: &[u8]) -> Option<Vec<u8>> {
        let reply = match self.open_from(peer, data, MAX_RR_MESSAGE)? {
            Message::Lookup(l) => {
                if l.request.check().is_err()
                    || l.request.key() != l.key
                    || l.request.method != "GET"
                {
                    self.distrust(peer);
                    return None;
                }
                Message::LookupReply(self.answer_lookup(l))
            }
            Message::FetchBody(f) => {
                let body = self
                    .local(&f.key)
                    .filter(|e| e.meta.cid == f.cid)
                    .map(|e| BodyReply::Found(e.body))
                    .unwrap_or(BodyReply::NotFound);
                Message::BodyReply(body)
            }
            _ => {
                self.distrust(peer);
                return None;
            }
        };
        self.seal(&reply)
    }

    fn answer_lookup(&self, l: Lookup) -> LookupReply {
        let local = self.local(&l.key);
        let view = LookupView {
            shareable: !varies_by_identity(&l.request.path),
            fresh_local: local
                .as_ref()
                .is_some_and(|e| e.meta.is_fresh(self.now_ms())),
            in_flight: self.inner.flights.contains(&l.key),
            fetch_asked: l.fetch,
            mode: self.inner.cfg.mode,
            room: self.inner.flights.has_room(),
        };
        match (policy::answer_lookup(view), local) {
            (LookupAnswer::Found, Some(e)) => LookupReply::Found(Box::new(Announce {
                meta: e.meta,
                body: Some(e.body),
            })),
            (LookupAnswer::Pending, _) => LookupReply::Pending,
            (LookupAnswer::StartFetch, local) => {
                // An expired copy, if any, makes the owner's fetch a free revalidation.
                // With our own token: an asker's token never leaves its node.
                let _ = self.join_or_start(Resolution {
                    req: l.request,
                    key: l.key,
                    local,
                    ask_peers: false,
                    cred: Credential::Node,
                });
                LookupReply::Pending
            }
            _ => LookupReply::NotFound,
        }
    }
}
