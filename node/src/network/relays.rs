//! Reach across NAT, carried out by the event loop: the connections it holds and how
//! (direct or through a relay), the members that judge our reachability, our
//! reservations on fleet relays, crossed circuits, and what AutoNAT and hole punching
//! report. The decisions themselves are in `reach.rs`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ghmesh_protocol::Reach;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{autonat, dcutr, identify, kad, relay, Multiaddr, PeerId};

use super::behaviour::RelayMode;
use super::codec::RR_PROTOCOL;
use super::event_loop::EventLoop;
use super::reach::{self, SeenAs};
use super::NetEvent;

/// One open connection.
pub(super) struct Conn {
    pub(super) peer: PeerId,
    /// The peer's address on it (the relay's circuit address when relayed).
    pub(super) remote: Multiaddr,
    /// We dialled it (then `remote` is an address the peer listens on).
    pub(super) dialer: bool,
    /// Through a relay's circuit. Not always visible in `remote`: a circuit we accepted
    /// names only the peer (`/p2p/<id>`).
    pub(super) relayed: bool,
    /// It may carry the fleet's traffic: direct, or through a member relay
    /// ([`super::fleet_only::carries_fleet`]).
    pub(super) fleet: bool,
    /// When it was established.
    pub(super) since: tokio::time::Instant,
    /// On a direct connection, whether the peer's identify said it sees us at an
    /// address of our own (`None`: not said yet, or relayed).
    pub(super) seen_untranslated: Option<bool>,
}

/// A reservation we asked a fleet relay for, as the listener on its circuit address.
pub(super) struct Reservation {
    pub(super) listener: ListenerId,
    pub(super) accepted: bool,
}

/// How long a relay that refused us a reservation is left alone: one sweep. The
/// usual refusal is a relay that has not admitted us yet, a moment after we admitted it.
pub(super) const REFUSED_PAUSE: Duration = Duration::from_secs(2);

/// AutoNAT servers remembered as having dialled us back (they are our judges: a few).
const MAX_CONFIRMERS: usize = 64;

impl EventLoop {
    pub(super) fn reach_stats(&self) -> super::ReachStats {
        super::ReachStats {
            reachability: self.reach,
            // The node knows its members' connections; it fills this in.
            direct_to_all: None,
            external_addrs: self
                .swarm
                .external_addresses()
                .map(|a| a.to_string())
                .collect(),
            relay_reservations: self.reservations.values().filter(|r| r.accepted).count(),
            relay_circuits_served: self.circuits_served,
            direct_upgrades: self.direct_upgrades,
            holepunch_failures: self.holepunch_failures,
            public_dht: self.public.is_some(),
            public_dht_peers: self.public.as_ref().map_or(0, |p| p.routing_peers),
        }
    }

    /// Closes our relayed connections to `peer` but `keep`: with a direct one up they
    /// would go on carrying a share of the requests (request-response spreads them over
    /// connections), bodies included.
    pub(super) fn close_circuits(&mut self, peer: PeerId, keep: ConnectionId) {
        let relayed: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(id, c)| **id != keep && c.peer == peer && c.relayed)
            .map(|(id, _)| *id)
            .collect();
        for id in relayed {
            self.swarm.close_connection(id);
        }
    }

    /// Closes public relays' circuits to `peer` once another connection to it may carry
    /// the fleet's traffic: request-response spreads requests over every connection,
    /// and the fleet's requests are refused on a public relay's.
    pub(super) fn close_public_circuits(&mut self, peer: PeerId) {
        let of_peer = || self.conns.iter().filter(move |(_, c)| c.peer == peer);
        if !of_peer().any(|(_, c)| c.fleet) {
            return;
        }
        let public: Vec<ConnectionId> = of_peer()
            .filter(|(_, c)| !c.fleet)
            .map(|(id, _)| *id)
            .collect();
        for id in public {
            self.swarm.close_connection(id);
        }
    }

    /// Two members that learn each other's relayed address at once dial each other
    /// through the relay, and each circuit starts its own hole punch from the same
    /// ports: the punches collide and both fail. Of two circuits between the same
    /// peers, both sides keep the one the smaller peer id dialled.
    pub(super) fn drop_crossed_circuit(&mut self, peer: PeerId) {
        let me = *self.swarm.local_peer_id();
        let circuits: Vec<(ConnectionId, bool)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer == peer && c.relayed)
            .map(|(id, c)| (*id, c.dialer))
            .collect();
        if circuits.len() < 2 {
            return;
        }
        let keep_ours = me < peer;
        if circuits.iter().any(|(_, dialer)| *dialer == keep_ours) {
            for (id, dialer) in circuits {
                if dialer != keep_ours {
                    self.swarm.close_connection(id);
                }
            }
        }
    }

    /// How each connected peer sees us, from what its direct connections' identify
    /// said: through a NAT when any says so.
    fn seen_by_peer(&self) -> HashMap<PeerId, SeenAs> {
        let mut seen = HashMap::new();
        for c in self.conns.values() {
            let said = match c.seen_untranslated {
                Some(false) => SeenAs::Translated,
                Some(true) => SeenAs::Untranslated,
                None => continue,
            };
            let slot = seen.entry(c.peer).or_insert(said);
            if said == SeenAs::Translated {
                *slot = said;
            }
        }
        seen
    }

    /// Connected to `peer`, but only through public relays: none of our connections to
    /// it may carry the fleet's traffic.
    pub(super) fn only_public_relay(&self, peer: &PeerId) -> bool {
        let mut conns = self.conns.values().filter(|c| c.peer == *peer).peekable();
        conns.peek().is_some() && conns.all(|c| !c.fleet)
    }

    /// Tells the node when whether we reach `peer` only through public relays changed
    /// (after a connection to it opened or closed).
    pub(super) fn tell_public_relay(&mut self, peer: PeerId) {
        let only = self.only_public_relay(&peer);
        let was = self.public_relay_only.contains(&peer);
        if only == was {
            return;
        }
        if only {
            self.public_relay_only.insert(peer);
        } else {
            self.public_relay_only.remove(&peer);
        }
        self.send_event(NetEvent::PublicRelay { peer, only });
    }

    /// Connected to `peer` only through relays.
    pub(super) fn only_relayed(&self, peer: &PeerId) -> bool {
        self.shown_conn(peer).is_some_and(|c| c.relayed)
    }

    /// The connection to show for `peer`: a direct one when there is one.
    pub(super) fn shown_conn(&self, peer: &PeerId) -> Option<&Conn> {
        let mut found = None;
        for c in self.conns.values().filter(|c| c.peer == *peer) {
            if !c.relayed {
                return Some(c);
            }
            found = Some(c);
        }
        found
    }

    /// The node's members changed: the relay's access list follows, and so do the
    /// peers that judge our reachability and the relays we reserve on.
    pub(super) fn set_members(&mut self, members: Vec<PeerId>) {
        let members: HashSet<PeerId> = members.into_iter().collect();
        if let Ok(mut m) = self.members.write() {
            *m = members;
        }
        self.tend_judges();
        self.tend_relays();
    }

    /// AutoNAT asks only peers `reach::may_judge_us` allows: members that reach us
    /// directly from a public address, or on one private network those whose dial-back
    /// tests what lies between us and the fleet; and with the public DHT on, public nodes
    /// that serve AutoNAT (a runner on a public address is then found public, and serves
    /// its fleet as a relay, with no hub).
    pub(super) fn tend_judges(&mut self) {
        let Ok(members) = self.members.read().map(|m| m.clone()) else {
            return;
        };
        let now = tokio::time::Instant::now();
        let member_conns = || self.conns.values().filter(|c| members.contains(&c.peer));
        let (private_network, since) = reach::private_network(
            member_conns().map(|c| (&c.remote, c.relayed)),
            self.public.is_some(),
            self.private_since,
            now,
        );
        self.private_since = since;
        let seen = self.seen_by_peer();
        let seen_as = |p: &PeerId| seen.get(p).copied().unwrap_or(SeenAs::Unknown);
        if members.iter().any(|p| seen_as(p) == SeenAs::Translated) {
            self.translated_seen = Some(now);
        }
        let ours: Vec<std::net::IpAddr> = self
            .swarm
            .listeners()
            .filter(|l| !reach::is_relayed(l) && !reach::is_loopback(l))
            .filter_map(reach::ip_of)
            .collect();
        let on_our_subnet = |remote: &Multiaddr| {
            reach::ip_of(remote).is_some_and(|ip| ours.iter().any(|o| reach::same_subnet(*o, ip)))
        };
        let view = reach::JudgeView {
            private_network,
            anyone_translates: self
                .translated_seen
                .is_some_and(|t| now.duration_since(t) < reach::TRANSLATED_MEMORY),
            // On one private network every member is direct at a private address.
            anyone_routed: private_network && member_conns().any(|c| !on_our_subnet(&c.remote)),
        };
        let mut judges: HashMap<PeerId, Option<Multiaddr>> = HashMap::new();
        let public_judge = |p: &PeerId| {
            self.public.is_some()
                && !self.speaks_ghmesh.contains(p)
                && self.autonat_offered.contains(p)
        };
        for c in self.conns.values() {
            if (members.contains(&c.peer) || public_judge(&c.peer))
                && !c.relayed
                && reach::may_judge_us(&c.remote, seen_as(&c.peer), on_our_subnet(&c.remote), view)
            {
                let addr = c.dialer.then(|| c.remote.clone());
                let slot = judges.entry(c.peer).or_default();
                if slot.is_none() {
                    *slot = addr;
                }
            }
        }
        let autonat = &mut self.swarm.behaviour_mut().autonat;
        for gone in self.judges.iter().filter(|p| !judges.contains_key(p)) {
            autonat.remove_server(gone);
        }
        for (peer, addr) in &judges {
            if !self.judges.contains(peer) {
                autonat.add_server(*peer, addr.clone());
            }
        }
        // A peer that confirmed us, still connected but no judge now (members came from
        // beyond the private network or our NAT, or it came back as one that may not
        // judge): what it found of us no longer holds for every member. One that left
        // keeps its word.
        let demoted: Vec<PeerId> = self
            .confirmed_by
            .iter()
            .filter(|p| !judges.contains_key(p) && self.swarm.is_connected(p))
            .copied()
            .collect();
        self.judges = judges.into_keys().collect();
        let before = self.confirmed_by.len();
        self.confirmed_by.retain(|p| !demoted.contains(p));
        if self.confirmed_by.len() != before {
            self.settle_reach();
        }
    }

    /// What a connected peer says it listens on and speaks: its addresses for member
    /// lists; whether it relays and judges reachability; with the public DHT on, whether
    /// it speaks ghmesh (then it is greeted) or is a public DHT node that answered.
    pub(super) fn on_identify(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        info: &identify::Info,
    ) {
        if !self.swarm.is_connected(&peer) {
            return;
        }
        let speaks = |p| info.protocols.contains(&p);
        if self.public.is_some() {
            let ghmesh = speaks(RR_PROTOCOL);
            // A circuit through a public node never carries the fleet's gossip.
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_public(peer, !ghmesh);
            if ghmesh {
                if self.speaks_ghmesh.insert(peer) {
                    self.on_first_connection(peer);
                }
            } else if speaks(kad::PROTOCOL_NAME) {
                self.public_answered(peer);
            }
        }
        // How it sees us, from a direct connection only: over a circuit it sees the
        // relay's address (or none), which says nothing about a NAT between us.
        let observed = &info.observed_addr;
        if let (Some(ip), false) = (reach::ip_of(observed), reach::is_relayed(observed)) {
            let ours = self
                .swarm
                .listeners()
                .filter(|l| !reach::is_relayed(l))
                .any(|l| reach::ip_of(l) == Some(ip));
            if let Some(c) = self.conns.get_mut(&connection).filter(|c| !c.relayed) {
                c.seen_untranslated = Some(ours);
            }
        }
        let addrs = reach::order_for_sharing(&info.listen_addrs);
        self.listen_of
            .insert(peer, addrs.into_iter().take(8).collect());
        if speaks(relay::HOP_PROTOCOL_NAME) {
            self.hop.insert(peer);
        } else {
            self.hop.remove(&peer);
        }
        if speaks(autonat::DEFAULT_PROTOCOL_NAME)
            && self.autonat_offered.insert(peer)
            && self.public.is_some()
        {
            self.tend_judges();
        }
        self.tend_relays();
    }

    /// Holds reservations on up to two fleet relays while we are not publicly
    /// reachable; none once we are.
    pub(super) fn tend_relays(&mut self) {
        if self.reach == Reach::Public {
            for (_, r) in self.reservations.drain() {
                self.swarm.remove_listener(r.listener);
            }
            return;
        }
        let now = tokio::time::Instant::now();
        self.refused.retain(|_, until| *until > now);
        let Some(members) = self.members.read().map(|m| m.clone()).ok() else {
            return;
        };
        let usable = |p: &PeerId| !self.only_relayed(p) && !self.refused.contains_key(p);
        let offers: Vec<RelayOffer> = self
            .hop
            .iter()
            .filter(|p| usable(p))
            .map(|p| RelayOffer {
                peer: *p,
                member: members.contains(p),
                speaks_ghmesh: self.speaks_ghmesh.contains(p),
            })
            .collect();
        let held: Vec<(PeerId, bool, bool)> = self
            .reservations
            .iter()
            .map(|(p, r)| (*p, members.contains(p), r.accepted))
            .collect();
        let (offered, leave) = choose_relays(&offers, &held, self.public.is_some());
        let fleet_offered = self.public.is_some() && offered.iter().any(|p| members.contains(p));
        for relay in leave {
            if let Some(r) = self.reservations.remove(&relay) {
                tracing::debug!(%relay, "leaving a public relay for a fleet relay");
                self.swarm.remove_listener(r.listener);
            }
        }
        // Fleet relays are reserved on next to public ones held until a fleet one accepts.
        let held: Vec<PeerId> = self
            .reservations
            .keys()
            .filter(|p| !fleet_offered || members.contains(p))
            .copied()
            .collect();
        let me = *self.swarm.local_peer_id();
        for relay in reach::relays_to_add(&me, self.reach, &offered, &held) {
            let Some(addr) = self.relay_addr(&relay) else {
                continue;
            };
            let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    tracing::debug!(%relay, "asking for a relay reservation");
                    self.reservations.insert(
                        relay,
                        Reservation {
                            listener,
                            accepted: false,
                        },
                    );
                }
                Err(e) => tracing::debug!(%circuit, "cannot reserve: {e}"),
            }
        }
    }

    /// Where to reach `relay` directly: the address we dialled it at, else one it
    /// listens on.
    pub(super) fn relay_addr(&self, relay: &PeerId) -> Option<Multiaddr> {
        let strip = |a: &Multiaddr| {
            a.iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect::<Multiaddr>()
        };
        self.conns
            .values()
            .find(|c| c.peer == *relay && c.dialer && !c.relayed)
            .map(|c| strip(&c.remote))
            .or_else(|| {
                self.listen_of
                    .get(relay)?
                    .iter()
                    .find(|a| !reach::is_relayed(a))
                    .map(strip)
            })
    }

    pub(super) fn on_autonat_event(&mut self, ev: autonat::Event) {
        match ev {
            autonat::Event::StatusChanged { new, .. } => {
                self.autonat_says = reach::reach_of(&new);
                if self.autonat_says != Reach::Public {
                    self.confirmed_by.clear();
                }
            }
            autonat::Event::OutboundProbe(autonat::OutboundProbeEvent::Response {
                peer, ..
            }) => {
                if self.confirmed_by.len() < MAX_CONFIRMERS {
                    self.confirmed_by.insert(peer);
                }
            }
            _ => return,
        }
        self.settle_reach();
    }

    /// Our reachability from AutoNAT's status and who confirmed it (`reach::verdict`),
    /// carried out when it changed.
    fn settle_reach(&mut self) {
        let (from_members, from_others) = match self.members.read() {
            Ok(m) => {
                let n = self.confirmed_by.iter().filter(|p| m.contains(p)).count();
                (n, self.confirmed_by.len() - n)
            }
            Err(_) => (0, self.confirmed_by.len()),
        };
        let reach = reach::verdict(self.autonat_says, from_members, from_others);
        if reach == self.reach {
            return;
        }
        tracing::info!(reachability = ?reach, "AutoNAT changed its verdict");
        self.reach = reach;
        if self.relay_mode == RelayMode::Auto {
            if let Some(relay) = self.swarm.behaviour_mut().relay.as_mut() {
                relay.set_status(Some(if reach == Reach::Public {
                    relay::Status::Enable
                } else {
                    relay::Status::Disable
                }));
            }
        }
        self.tend_relays();
        self.send_event(NetEvent::Reach(reach));
    }

    pub(super) fn on_dcutr_event(&mut self, ev: dcutr::Event) {
        match ev.result {
            Ok(direct) => {
                self.direct_upgrades += 1;
                tracing::debug!(peer = %ev.remote_peer_id, "hole punched: direct connection");
                self.close_circuits(ev.remote_peer_id, direct);
            }
            Err(e) => {
                self.holepunch_failures += 1;
                tracing::debug!(peer = %ev.remote_peer_id, "hole punching failed: {e}");
            }
        }
    }
}

/// A connected peer that offers relaying, as `tend_relays` sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct RelayOffer {
    pub(super) peer: PeerId,
    /// An admitted member: a fleet relay.
    pub(super) member: bool,
    /// Speaks ghmesh (a ghmesh node, ours or another fleet's): never a public relay.
    pub(super) speaks_ghmesh: bool,
}

/// Which relays to reserve on (`relays_to_add` picks among them) and which public
/// reservations to leave, from the relays offered and our reservations
/// (`(relay, is a member, accepted)`). Fleet relays first. With the public DHT on
/// (`public`) and no fleet relay, public relays (offering relay v2, not speaking ghmesh);
/// public reservations are left once a fleet relay has accepted us, not before: a fleet
/// relay may refuse a member it has not admitted yet, and the node would be unreachable
/// meanwhile.
pub(super) fn choose_relays(
    offers: &[RelayOffer],
    held: &[(PeerId, bool, bool)],
    public: bool,
) -> (Vec<PeerId>, Vec<PeerId>) {
    let fleet: Vec<PeerId> = offers.iter().filter(|o| o.member).map(|o| o.peer).collect();
    if !public {
        return (fleet, Vec::new());
    }
    let fleet_accepted = held
        .iter()
        .any(|(_, member, accepted)| *member && *accepted);
    let leave: Vec<PeerId> = if fleet_accepted {
        held.iter()
            .filter(|(_, member, _)| !member)
            .map(|(p, _, _)| *p)
            .collect()
    } else {
        Vec::new()
    };
    if !fleet.is_empty() {
        return (fleet, leave);
    }
    let public_relays = offers
        .iter()
        .filter(|o| !o.member && !o.speaks_ghmesh)
        .map(|o| o.peer)
        .collect();
    (public_relays, leave)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_relays_first_public_ones_only_with_the_public_dht_and_left_once_a_fleet_one_took_us() {
        let (hub, public, other_fleet) = (PeerId::random(), PeerId::random(), PeerId::random());
        let offer = |peer, member, speaks_ghmesh| RelayOffer {
            peer,
            member,
            speaks_ghmesh,
        };
        let offers = [
            offer(hub, true, true),
            offer(public, false, false),
            offer(other_fleet, false, true),
        ];
        assert_eq!(choose_relays(&offers, &[], false), (vec![hub], vec![]));
        assert_eq!(choose_relays(&offers, &[], true), (vec![hub], vec![]));
        let only_public = [offers[1], offers[2]];
        assert_eq!(
            choose_relays(&only_public, &[], false),
            (vec![], vec![]),
            "no public relay without --public-dht"
        );
        assert_eq!(
            choose_relays(&only_public, &[], true),
            (vec![public], vec![]),
            "never a ghmesh node of another fleet"
        );
        // Holding a public reservation while the hub's is pending: keep it.
        let pending = [(public, false, true), (hub, true, false)];
        assert_eq!(choose_relays(&offers, &pending, true), (vec![hub], vec![]));
        let accepted = [(public, false, true), (hub, true, true)];
        assert_eq!(
            choose_relays(&offers, &accepted, true),
            (vec![hub], vec![public])
        );
    }
}
