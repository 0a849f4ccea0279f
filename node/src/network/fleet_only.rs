//! Keeps the fleet's gossip off public relays. A public relay (a public DHT node, not a
//! member) carries what two members need to meet: hellos, member lists and the hole
//! punch's signalling. It is a stranger's service with a 128 KiB / 2 minute allowance
//! per circuit, and the fleet's traffic is none of its business. Requests are held
//! back by the event loop (it knows which requests are membership); gossipsub has no
//! such hook, since it sends on any of a peer's connections, so [`Gated`] never shows
//! it such a connection at all: gossipsub sees the peer once a direct connection (or
//! one through a member relay) exists, as if that were the first, and exchanges
//! subscriptions on it.

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::derive_prelude::Either;
use libp2p::swarm::{
    behaviour::{ConnectionClosed, ConnectionEstablished},
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::reach;

/// Public nodes remembered (the bootstrap list, the DHT nodes and relays met), and
/// direct connections' addresses.
pub const MAX_PUBLIC_NODES: usize = 1024;

/// Whether a connection may carry the fleet's traffic: `relay` is the relay of a
/// circuit (`None`: direct, `Some(None)`: a relay we cannot name). A circuit through a
/// node identify showed to be public does not; a relay not known to be public is a
/// fleet member's (a ghmesh relay serves its members only), or a public node we met a
/// moment ago whose identify has not come yet: the fleet's traffic then crosses it until
/// the direct connection replaces it, rather than a member's circuit being cut off
/// from gossip for its lifetime when a guess goes wrong.
pub fn carries_fleet(relay: Option<Option<PeerId>>, is_public: impl Fn(&PeerId) -> bool) -> bool {
    match relay {
        None | Some(None) => true,
        Some(Some(r)) => !is_public(&r),
    }
}

/// A behaviour that sees only the connections that may carry the fleet's traffic
/// ([`carries_fleet`]); the others get a handler that speaks nothing.
pub struct Gated<B> {
    inner: B,
    /// Peers identify showed to be public nodes (with `--public-dht`: they do not speak
    /// ghmesh's requests), as the event loop tells, at most [`MAX_PUBLIC_NODES`].
    public: HashSet<PeerId>,
    /// Established connections the inner behaviour knows of, per peer.
    shown: HashMap<PeerId, Vec<ConnectionId>>,
    /// Connections kept from it (from their handler to their closing).
    hidden: HashSet<ConnectionId>,
    /// The peer at the other end of each direct connection, by its remote address: a
    /// circuit we accepted names its relay only by the address of our connection to it
    /// when that relay dialled us.
    direct: HashMap<Multiaddr, PeerId>,
}

impl<B> Gated<B> {
    /// `inner`, shown every connection until told of public nodes.
    pub fn new(inner: B) -> Self {
        Gated {
            inner,
            public: HashSet::new(),
            shown: HashMap::new(),
            hidden: HashSet::new(),
            direct: HashMap::new(),
        }
    }

    /// Identify showed whether `peer` is a public node (for connections opened later).
    pub fn set_public(&mut self, peer: PeerId, public: bool) {
        if !public {
            self.public.remove(&peer);
        } else if self.public.len() < MAX_PUBLIC_NODES {
            self.public.insert(peer);
        }
    }

    /// Whether the established `connection` is shown (it may carry the fleet's traffic).
    pub fn shown(&self, connection: ConnectionId) -> bool {
        !self.hidden.contains(&connection)
    }

    /// The relay of a connection with these addresses (see [`carries_fleet`]).
    fn relay(&self, addrs: &[&Multiaddr]) -> Option<Option<PeerId>> {
        let relayed = addrs.iter().find(|a| reach::is_relayed(a))?;
        if let Some(r) = reach::relay_of(relayed) {
            return Some(Some(r));
        }
        let mut relay_addr = (*relayed).clone();
        while let Some(p) = relay_addr.pop() {
            if p == libp2p::multiaddr::Protocol::P2pCircuit {
                break;
            }
        }
        Some(self.direct.get(&relay_addr).copied())
    }

    fn shows(&self, addrs: &[&Multiaddr]) -> bool {
        carries_fleet(self.relay(addrs), |p| self.public.contains(p))
    }
}

impl<B> Deref for Gated<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> DerefMut for Gated<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Gated<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.shows(&[local_addr, remote_addr]) {
            self.hidden.insert(connection_id);
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        self.inner
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(Either::Left)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.shows(&[addr]) {
            self.hidden.insert(connection_id);
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        self.inner
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(Either::Left)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            // The inner behaviour counts only the connections it was shown: the first
            // one it sees is the one it greets the peer on (gossipsub sends its
            // subscriptions there).
            FromSwarm::ConnectionEstablished(e) => {
                let remote = e.endpoint.get_remote_address();
                if !e.endpoint.is_relayed() && self.direct.len() < MAX_PUBLIC_NODES {
                    self.direct.insert(remote.clone(), e.peer_id);
                }
                if self.hidden.contains(&e.connection_id) {
                    return;
                }
                let shown = self.shown.entry(e.peer_id).or_default();
                let other_established = shown.len();
                shown.push(e.connection_id);
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established,
                        ..e
                    },
                ));
            }
            FromSwarm::ConnectionClosed(e) => {
                if !e.endpoint.is_relayed() {
                    self.direct.remove(e.endpoint.get_remote_address());
                }
                if self.hidden.remove(&e.connection_id) {
                    return;
                }
                let remaining_established = match self.shown.get_mut(&e.peer_id) {
                    Some(shown) => {
                        shown.retain(|c| *c != e.connection_id);
                        let left = shown.len();
                        if left == 0 {
                            self.shown.remove(&e.peer_id);
                        }
                        left
                    }
                    None => 0,
                };
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..e
                    }));
            }
            FromSwarm::AddressChange(e) if self.hidden.contains(&e.connection_id) => {}
            // A connection another behaviour refused after ours made its handler.
            FromSwarm::DialFailure(e) => {
                self.hidden.remove(&e.connection_id);
                self.inner.on_swarm_event(event);
            }
            FromSwarm::ListenFailure(e) => {
                self.hidden.remove(&e.connection_id);
                self.inner.on_swarm_event(event);
            }
            _ => self.inner.on_swarm_event(event),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(e) => self
                .inner
                .on_connection_handler_event(peer_id, connection_id, e),
            Either::Right(never) => match never {},
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<B::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            let ev = match self.inner.poll(cx) {
                Poll::Ready(ev) => ev,
                Poll::Pending => return Poll::Pending,
            };
            // "Any connection" could pick a hidden one, whose handler takes nothing.
            if let ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::Any,
                event,
            } = ev
            {
                match self.shown.get(&peer_id).and_then(|c| c.first()) {
                    Some(id) => {
                        return Poll::Ready(ToSwarm::NotifyHandler {
                            peer_id,
                            handler: NotifyHandler::One(*id),
                            event: Either::Left(event),
                        })
                    }
                    // It knows the peer by no connection we showed it: nothing to carry it.
                    None => continue,
                }
            }
            return Poll::Ready(ev.map_in(Either::Left));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relays_known_to_be_public_are_kept_from_the_fleet() {
        let (public, member) = (PeerId::random(), PeerId::random());
        let is_public = |p: &PeerId| *p == public;
        assert!(carries_fleet(None, is_public), "direct");
        assert!(!carries_fleet(Some(Some(public)), is_public));
        assert!(carries_fleet(Some(Some(member)), is_public));
        assert!(
            carries_fleet(Some(None), is_public),
            "a relay we cannot name"
        );
    }

    #[test]
    fn the_relay_of_an_accepted_circuit_is_found_by_its_address() {
        let relay = PeerId::random();
        let mut gated = Gated::new(());
        gated.set_public(relay, true);
        let to_relay: Multiaddr = "/ip4/198.51.100.9/tcp/40123".parse().unwrap();
        let peer: Multiaddr = format!("/p2p/{}", PeerId::random()).parse().unwrap();
        // Our reservation went over a connection the relay dialled: no `/p2p/<relay>`.
        let local = to_relay
            .clone()
            .with(libp2p::multiaddr::Protocol::P2pCircuit);
        assert_eq!(gated.relay(&[&local, &peer]), Some(None));
        assert!(gated.shows(&[&local, &peer]), "unknown: shown");
        gated.direct.insert(to_relay, relay);
        assert_eq!(gated.relay(&[&local, &peer]), Some(Some(relay)));
        assert!(!gated.shows(&[&local, &peer]));
        let named: Multiaddr = format!("/ip4/198.51.100.9/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        assert_eq!(gated.relay(&[&named]), Some(Some(relay)));
        let direct: Multiaddr = "/ip4/203.0.113.5/tcp/9100".parse().unwrap();
        assert_eq!(gated.relay(&[&direct]), None);
    }
}
