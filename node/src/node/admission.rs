//! Membership by proof. A connected peer is only a member (owner candidate, asked on a
//! miss, allowed to ask us) once it answered our sealed hello: a nonce, bound to both
//! peer ids, that only a holder of the mesh key can seal back. Subscribing to the
//! gossip topic proves nothing (anyone connected sees the topic name).
//!
//! A newly admitted member is also asked for the members it knows, and those we lack
//! are dialled: a fleet that joined through one bootstrap converges in about a second
//! instead of one discovery interval.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::Duration;

use ghmesh_protocol::wire::{MAX_ADDR_LEN, MAX_MEMBER_ADDRS, MAX_MEMBER_LIST};
use ghmesh_protocol::{MemberAddr, MemberList, Message};
use libp2p::{Multiaddr, PeerId};

use super::{Inner, Node};
use crate::limits::MAX_SMALL_FRAME;
use crate::network::Channel;

/// How often the book is checked against the connected peers (a connect or
/// disconnect event dropped under load must not leave it wrong for long).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

impl Node {
    /// A connection to `peer` is up: greet it unless it is a member already.
    pub(super) fn on_connected(&self, peer: PeerId) {
        let now = self.now_ms();
        if self.book(|b| b.connected(peer, now)).unwrap_or(false) {
            let node = self.clone();
            self.spawn(async move { node.greet(peer).await });
        }
    }

    /// The last connection to `peer` closed.
    pub(super) fn on_disconnected(&self, peer: PeerId) {
        self.book(|b| b.disconnected(&peer));
    }

    /// Sends our hello and admits `peer` when its reply proves the key.
    async fn greet(&self, peer: PeerId) {
        let proved = self.hello(peer).await;
        let newly = self.book(|b| b.greeted(peer, proved)).unwrap_or(false);
        if !proved {
            self.inner.counters.hellos_failed.inc();
            tracing::debug!(%peer, "peer did not prove it holds the mesh key");
            return;
        }
        if newly {
            self.inner.counters.members_admitted.inc();
            tracing::debug!(%peer, "member admitted");
            if let Some(net) = self.network() {
                net.discover_soon().await;
            }
            self.exchange_members(peer).await;
        }
    }

    async fn hello(&self, peer: PeerId) -> bool {
        let (Some(net), addr) = (self.network(), self.address(peer)) else {
            return false;
        };
        let nonce = addr.nonce;
        let Some(data) = self.seal(&Message::Hello(addr)) else {
            return false;
        };
        let Ok(resp) = net
            .request(peer, Channel::Small, data, self.inner.deadlines.hello)
            .await
        else {
            return false;
        };
        match self.open_reply(peer, &resp, MAX_SMALL_FRAME) {
            Some(Message::HelloReply(a)) => {
                a.nonce == nonce && a.is_between(&peer.to_bytes(), &self.inner.peer_id.to_bytes())
            }
            Some(_) => {
                self.violated(peer);
                false
            }
            None => false,
        }
    }

    /// Asks a new member for its members and dials those we are not connected to.
    async fn exchange_members(&self, peer: PeerId) {
        let Some(net) = self.network() else {
            return;
        };
        let Some(data) = self.seal(&Message::Members(self.address(peer))) else {
            return;
        };
        let Ok(resp) = net
            .request(peer, Channel::Small, data, self.inner.deadlines.hello)
            .await
        else {
            return;
        };
        let list = match self.open_reply(peer, &resp, MAX_SMALL_FRAME) {
            Some(Message::MemberList(l)) if l.members.len() <= MAX_MEMBER_LIST => l,
            Some(_) => {
                self.violated(peer);
                return;
            }
            None => return,
        };
        let known: HashSet<PeerId> = self.members().into_iter().collect();
        for m in list.members {
            let Ok(p) = PeerId::from_bytes(&m.peer) else {
                continue;
            };
            if p == self.inner.peer_id || known.contains(&p) {
                continue;
            }
            let addrs: Vec<Multiaddr> = m
                .addrs
                .iter()
                .take(MAX_MEMBER_ADDRS)
                .filter(|a| a.len() <= MAX_ADDR_LEN)
                .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
                .collect();
            if !addrs.is_empty() {
                net.dial_peer(p, addrs).await;
            }
        }
    }

    /// Our members (but the asker) with the addresses they listen on.
    pub(super) async fn member_list(&self, asker: PeerId) -> MemberList {
        let members: Vec<PeerId> = self
            .members()
            .into_iter()
            .filter(|p| *p != asker)
            .take(MAX_MEMBER_LIST)
            .collect();
        let addrs = match self.network() {
            Some(net) => net.listen_addrs_of(members).await.unwrap_or_default(),
            None => Vec::new(),
        };
        MemberList {
            members: addrs
                .into_iter()
                .map(|(p, a)| MemberAddr {
                    peer: p.to_bytes().into(),
                    addrs: a
                        .into_iter()
                        .map(|a| a.to_vec())
                        .filter(|a| a.len() <= MAX_ADDR_LEN)
                        .take(MAX_MEMBER_ADDRS)
                        .map(Into::into)
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Keeps the book in line with the connected peers: forgets who is gone, greets who is
/// there and was never greeted (an event lost while the node was behind).
pub(super) async fn sweep(node: Weak<Inner>) {
    let Some(stopping) = node.upgrade().map(|i| i.stopping.clone()) else {
        return;
    };
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = stopping.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some(inner) = node.upgrade() else { break };
        let node = Node { inner };
        let Some(net) = node.network() else { break };
        let Ok(peers) = net.peers().await else {
            continue;
        };
        let connected: Vec<PeerId> = peers
            .iter()
            .filter_map(|p| p.peer_id.parse().ok())
            .collect();
        node.book(|b| b.forget_all_but(&connected));
        for p in connected {
            node.on_connected(p);
        }
    }
}
