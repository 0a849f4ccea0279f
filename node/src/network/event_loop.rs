//! The event loop: the only owner of the Swarm. It turns commands from the
//! [`NetworkHandle`](super::NetworkHandle) into swarm calls and swarm events into
//! [`NetEvent`]s for the node, and runs discovery (rendezvous providers, mDNS, identify
//! feeding Kademlia).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, TopicHash};
use libp2p::metrics::{Metrics, Recorder};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, kad, mdns, ping, relay, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use ghmesh_protocol::Reach;

use super::behaviour::{Behaviour, BehaviourEvent, MemberSet, RelayMode};
use super::discovery::next_seeds;
use super::public_dht::PublicDht;
use super::reach::{self, Connection};
use super::relays::{Conn, Reservation, REFUSED_PAUSE};
use super::{Channel, Command, NetError, NetEvent, NetStats, PeerInfo, Traffic};
use crate::limits::MAX_PROVIDER_DIALS;
use crate::limits::{MAX_PENDING_INBOUND, MAX_PENDING_INBOUND_PER_PEER};

/// Where the answer to one of our requests goes.
pub(super) type ReplyTo = oneshot::Sender<Result<Bytes, NetError>>;

/// An inbound request waiting for the node's answer.
pub(super) struct PendingInbound {
    peer: PeerId,
    reply: ResponseChannel<Bytes>,
}

/// How often the public DHT's rendezvous is looked at (`public_dht::plan` decides
/// what, if anything, is due).
const PUBLIC_ROUND: Duration = Duration::from_secs(1);

/// Which listen addresses to advertise to the DHT: real interfaces always; loopback
/// only when the operator asked for loopback explicitly (tests, single-host fleets).
pub(super) fn advertise(addr: &Multiaddr, requested: &[Multiaddr]) -> bool {
    !reach::is_loopback(addr) || requested.iter().any(reach::is_loopback)
}

pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) events: mpsc::Sender<NetEvent>,
    pub(super) topic: TopicHash,
    pub(super) rendezvous: kad::RecordKey,
    pub(super) discovery_interval: Duration,
    pub(super) listen: Vec<Multiaddr>,
    pub(super) outbound: HashMap<(Channel, OutboundRequestId), ReplyTo>,
    pub(super) inbound: HashMap<(Channel, InboundRequestId), PendingInbound>,
    /// Inbound requests pending per peer.
    pub(super) inbound_per_peer: HashMap<PeerId, usize>,
    /// What each connected peer said (identify) it listens on, at most 8 addresses.
    pub(super) listen_of: HashMap<PeerId, Vec<Multiaddr>>,
    pub(super) addrs: HashMap<PeerId, Vec<Multiaddr>>,
    pub(super) providing: bool,
    /// A publish found nobody subscribed since the last subscription was passed on:
    /// only then is a subscription worth telling the node about. Gossipsub reports
    /// every subscribe message, and anyone connected may send them in a loop.
    pub(super) refused_publish: bool,
    pub(super) dropped_events: u64,
    pub(super) metrics: Metrics,
    /// Resolved DNS bootstrap addresses, from `dns_seeds::run`.
    pub(super) seeds: Option<mpsc::Receiver<Vec<Multiaddr>>>,
    /// Each current DNS bootstrap address, with the peer that answered there.
    pub(super) seed_peers: HashMap<Multiaddr, Option<PeerId>>,
    /// When the next discovery round was brought forward to.
    pub(super) discover_at: Option<tokio::time::Instant>,
    /// A discovery round has run with a connection up.
    pub(super) discovered_once: bool,
    /// When the last discovery round ran.
    pub(super) last_discovery: Option<tokio::time::Instant>,
    /// `--relay`.
    pub(super) relay_mode: RelayMode,
    /// The node's admitted members (the relay's access list reads it too).
    pub(super) members: MemberSet,
    /// Every open connection.
    pub(super) conns: HashMap<ConnectionId, Conn>,
    /// Connected peers that offer relaying (identify lists the relay's HOP protocol).
    pub(super) hop: HashSet<PeerId>,
    /// Connected peers that serve AutoNAT (identify lists it).
    pub(super) autonat_offered: HashSet<PeerId>,
    /// Our reservations, by relay.
    pub(super) reservations: HashMap<PeerId, Reservation>,
    /// Our reachability (`reach::verdict`).
    pub(super) reach: Reach,
    /// AutoNAT's own status.
    pub(super) autonat_says: Reach,
    /// AutoNAT servers that dialled us back since the status was last not public.
    pub(super) confirmed_by: HashSet<PeerId>,
    pub(super) circuits_served: u64,
    pub(super) direct_upgrades: u64,
    pub(super) holepunch_failures: u64,
    /// Members we added as AutoNAT servers (see `reach::may_judge_us`).
    pub(super) judges: HashSet<PeerId>,
    /// Since when every member has been connected directly at a private address
    /// (`reach::private_network`).
    pub(super) private_since: Option<tokio::time::Instant>,
    /// When a member last saw us through a NAT (`reach::TRANSLATED_MEMORY`).
    pub(super) translated_seen: Option<tokio::time::Instant>,
    /// Relays that refused us a reservation, not asked again before then.
    pub(super) refused: HashMap<PeerId, tokio::time::Instant>,
    /// Peers with dials under way, and the addresses given to them (at most
    /// `MAX_PEERS` peers).
    pub(super) dialing: HashMap<PeerId, Vec<Multiaddr>>,
    /// The rendezvous on the public DHT (`--public-dht`).
    pub(super) public: Option<PublicDht>,
    /// With the public DHT on: connected peers whose identify said they speak ghmesh's
    /// requests. Only they are passed on to be greeted; public nodes are not.
    pub(super) speaks_ghmesh: HashSet<PeerId>,
    /// Connected peers we reach only through public relays, as last told to the node.
    pub(super) public_relay_only: HashSet<PeerId>,
}

impl EventLoop {
    pub(super) async fn run(mut self) {
        let mut discovery = tokio::time::interval(self.discovery_interval);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let mut public_rounds = tokio::time::interval(PUBLIC_ROUND);
        public_rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(at) = self.discover_at.take() {
                discovery.reset_at(at);
            }
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(Command::DiscoverSoon) => self.discover_soon(),
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = discovery.tick() => {
                    ticks += 1;
                    self.discover(ticks);
                }
                Some(addrs) = next_seeds(&mut self.seeds) => self.dial_seeds(addrs),
                _ = public_rounds.tick(), if self.public.is_some() => self.public_round(),
            }
        }
        tracing::debug!("network loop stopped");
    }

    pub(super) fn send_event(&mut self, ev: NetEvent) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(_) => {
                self.dropped_events += 1;
                false
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish { data, reply } => {
                let _ = reply.send(self.publish(data));
            }
            Command::Request {
                peer,
                channel,
                traffic,
                data,
                reply,
            } => {
                if channel == Channel::Body && self.only_relayed(&peer) {
                    let _ = reply.send(Err(NetError::Relayed));
                    return;
                }
                if traffic == Traffic::Fleet && self.only_public_relay(&peer) {
                    let _ = reply.send(Err(NetError::PublicRelay));
                    return;
                }
                let b = self.swarm.behaviour_mut();
                let id = match channel {
                    Channel::Small => b.rr.send_request(&peer, data),
                    Channel::Body => b.body.send_request(&peer, data),
                };
                self.outbound.insert((channel, id), reply);
            }
            Command::Respond { channel, id, data } => self.respond(channel, id, data),
            Command::Report {
                id,
                source,
                acceptance,
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Command::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::debug!(%addr, "dial failed: {e}");
                }
            }
            Command::DialPeer(peer, addrs) => self.dial_peer(peer, addrs),
            Command::ListenAddrsOf(peers, reply) => {
                let found = peers
                    .into_iter()
                    .filter_map(|p| self.listen_of.get(&p).map(|a| (p, a.clone())))
                    .collect();
                let _ = reply.send(found);
            }
            Command::Members(members) => self.set_members(members),
            Command::DiscoverSoon => {}
            Command::Shutdown(_) => {}
        }
    }

    /// Publishes on the fleet's topic: `Ok(false)` when no peer is subscribed to hear
    /// it (remembered, so the node can announce it again when one subscribes).
    fn publish(&mut self, data: Vec<u8>) -> Result<bool, NetError> {
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        match gossipsub.publish(self.topic.clone(), data) {
            Ok(_) => Ok(true),
            // Identical bytes already published: the mesh has them.
            Err(gossipsub::PublishError::Duplicate) => Ok(true),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                self.refused_publish = true;
                Ok(false)
            }
            Err(e) => Err(NetError::Publish(e.to_string())),
        }
    }

    fn stats(&self) -> NetStats {
        NetStats {
            connected_peers: self.swarm.connected_peers().count(),
            mesh_peers: self
                .swarm
                .behaviour()
                .gossipsub
                .mesh_peers(&self.topic)
                .count(),
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
            dropped_events: self.dropped_events,
            reach: self.reach_stats(),
        }
    }

    /// Connected peers, their addresses, and whether they are in our gossip mesh.
    fn peers(&self) -> Vec<PeerInfo> {
        let mesh: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .mesh_peers(&self.topic)
            .copied()
            .collect();
        self.swarm
            .connected_peers()
            .filter(|p| self.may_greet(p))
            .map(|p| {
                let shown = self.shown_conn(p);
                PeerInfo {
                    peer_id: p.to_string(),
                    addrs: self
                        .addrs
                        .get(p)
                        .map(|a| a.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    in_mesh: mesh.contains(p),
                    member: false,
                    reachability: Reach::Unknown,
                    direct_to_all: None,
                    connection: match shown {
                        Some(c) if c.relayed => Connection::Relayed,
                        _ => Connection::Direct,
                    },
                    public_relay: self.only_public_relay(p),
                    transport: shown
                        .map_or(reach::Transport::Tcp, |c| reach::transport_of(&c.remote)),
                }
            })
            .collect()
    }

    /// Answers (or, with `None`, refuses) a pending inbound request.
    fn respond(&mut self, channel: Channel, id: InboundRequestId, data: Option<Bytes>) {
        let Some(p) = self.inbound.remove(&(channel, id)) else {
            return;
        };
        self.inbound_done(p.peer);
        if let Some(data) = data {
            let b = self.swarm.behaviour_mut();
            let _ = match channel {
                Channel::Small => b.rr.send_response(p.reply, data),
                Channel::Body => b.body.send_response(p.reply, data),
            };
        }
    }

    fn inbound_done(&mut self, peer: PeerId) {
        if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_per_peer.remove(&peer);
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&ev);
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                let me = Protocol::P2p(*self.swarm.local_peer_id());
                // A relayed address names us already (`…/p2p-circuit/p2p/<us>`).
                let full = if address.iter().last() == Some(me.clone()) {
                    address.clone()
                } else {
                    address.clone().with(me)
                };
                if self.listen.contains(&full) {
                    // A renewed reservation: nothing new to tell the members.
                    return;
                }
                self.listen.push(full);
                if reach::is_relayed(&address) {
                    let plain: Vec<Multiaddr> = self
                        .listen
                        .iter()
                        .map(|a| {
                            let mut a = a.clone();
                            a.pop();
                            a
                        })
                        .collect();
                    self.send_event(NetEvent::Relayed(reach::order_for_sharing(&plain)));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.conns.insert(
                    connection_id,
                    Conn {
                        peer: peer_id,
                        remote: endpoint.get_remote_address().clone(),
                        dialer: endpoint.is_dialer(),
                        relayed: endpoint.is_relayed(),
                        fleet: self.swarm.behaviour().gossipsub.shown(connection_id),
                        since: tokio::time::Instant::now(),
                        seen_untranslated: None,
                    },
                );
                if endpoint.is_relayed() {
                    self.drop_crossed_circuit(peer_id);
                } else {
                    self.close_circuits(peer_id, connection_id);
                }
                self.close_public_circuits(peer_id);
                self.dialing.remove(&peer_id);
                self.tell_public_relay(peer_id);
                if num_established.get() == 1 && self.public.is_none() {
                    self.on_first_connection(peer_id);
                }
                let addr = endpoint.get_remote_address().clone();
                if let Some(seed) = self.seed_peers.get_mut(&addr) {
                    *seed = Some(peer_id);
                    // A peer a DNS seed resolved to is a rendezvous point, learned only now.
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                let known = self.addrs.entry(peer_id).or_default();
                if !known.contains(&addr) && known.len() < 8 {
                    known.push(addr);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                ..
            } => {
                self.dialing.remove(&peer);
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                num_established,
                ..
            } if num_established > 0 => {
                if let Some(c) = self.conns.remove(&connection_id) {
                    self.tell_public_relay(c.peer);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                self.conns.remove(&connection_id);
                self.public_relay_only.remove(&peer_id);
                self.speaks_ghmesh.remove(&peer_id);
                self.hop.remove(&peer_id);
                self.autonat_offered.remove(&peer_id);
                self.refused.remove(&peer_id);
                if self.judges.remove(&peer_id) {
                    self.swarm.behaviour_mut().autonat.remove_server(&peer_id);
                }
                self.addrs.remove(&peer_id);
                self.listen_of.remove(&peer_id);
                self.inbound_per_peer.remove(&peer_id);
                // A missed Disconnected would leave a member that is gone: the node
                // also sweeps its book against the connected peers.
                self.send_event(NetEvent::Disconnected(peer_id));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
                ..
            } => {
                let me = Protocol::P2p(*self.swarm.local_peer_id());
                self.listen.retain(|a| {
                    !addresses
                        .iter()
                        .any(|x| a == x || *a == x.clone().with(me.clone()))
                });
                let gone = self
                    .reservations
                    .iter()
                    .find(|(_, r)| r.listener == listener_id)
                    .map(|(p, _)| *p);
                if let Some(relay) = gone {
                    tracing::debug!(%relay, "relay reservation ended");
                    self.reservations.remove(&relay);
                    // A relay still connected that ended it refused (not a member in its
                    // view yet, full): asking it again at once would only be refused
                    // again, in a loop.
                    if reason.is_err() && self.swarm.is_connected(&relay) {
                        self.refused
                            .insert(relay, tokio::time::Instant::now() + REFUSED_PAUSE);
                    }
                    self.tend_relays();
                }
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(ev) => {
                self.metrics.record(&ev);
                self.on_gossipsub_event(ev);
            }
            BehaviourEvent::Kad(ev) => {
                self.metrics.record(&ev);
                self.on_kad_event(ev);
            }
            // Not recorded in the metrics: they would mix with the private DHT's.
            BehaviourEvent::PublicKad(ev) => self.on_public_kad_event(ev),
            BehaviourEvent::Mdns(ev) => {
                if let mdns::Event::Discovered(found) = ev {
                    let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                    for (peer, addr) in found {
                        by_peer.entry(peer).or_default().push(addr);
                    }
                    // Dialled, not put in the DHT's routing table: see `Behaviour::new`.
                    for (peer, addrs) in by_peer {
                        self.dial_peer(peer, addrs);
                    }
                }
            }
            BehaviourEvent::Identify(ev) => {
                self.metrics.record(&ev);
                if let identify::Event::Received {
                    peer_id,
                    connection_id,
                    info,
                } = ev
                {
                    self.on_identify(peer_id, connection_id, &info);
                }
            }
            BehaviourEvent::Rr(ev) => self.on_rr_event(Channel::Small, ev),
            BehaviourEvent::Body(ev) => self.on_rr_event(Channel::Body, ev),
            BehaviourEvent::Ping(ev) => {
                self.metrics.record(&ev);
                // A peer that stops answering pings (hung, SIGSTOPped, cut off) keeps its
                // TCP connection open for as long as the kernel answers for it; ping
                // failures do not close connections by themselves, so we do.
                if let Err(e) = &ev.result {
                    if !matches!(e, ping::Failure::Unsupported) {
                        tracing::debug!(peer = %ev.peer, "ping failed, closing: {e}");
                        self.swarm.close_connection(ev.connection);
                    }
                }
            }
            BehaviourEvent::Limits(ev) => match ev {},
            BehaviourEvent::Autonat(ev) => self.on_autonat_event(ev),
            BehaviourEvent::Relay(ev) => {
                self.metrics.record(&ev);
                if let relay::Event::CircuitReqAccepted { .. } = ev {
                    self.circuits_served += 1;
                }
            }
            BehaviourEvent::RelayClient(ev) => {
                if let relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } = ev {
                    if let Some(r) = self.reservations.get_mut(&relay_peer_id) {
                        r.accepted = true;
                    }
                }
            }
            BehaviourEvent::Dcutr(ev) => {
                self.metrics.record(&ev);
                self.on_dcutr_event(ev);
            }
        }
    }

    /// A peer the node may greet is connected (for the first time, or again).
    pub(super) fn on_first_connection(&mut self, peer: PeerId) {
        self.send_event(NetEvent::Connected(peer));
        if !self.discovered_once {
            self.discover_soon();
        }
    }

    /// Whether the node hears of `peer`: every peer, or with the public DHT on, only
    /// those that said they speak ghmesh (a public node never gets a hello).
    pub(super) fn may_greet(&self, peer: &PeerId) -> bool {
        self.public.is_none() || self.speaks_ghmesh.contains(peer)
    }

    fn on_gossipsub_event(&mut self, ev: gossipsub::Event) {
        match ev {
            // Subscriptions prove nothing (anyone connected sees the topic name;
            // membership is the node's sealed hello): passed on only as the moment a
            // publish refused for want of subscribers would reach someone.
            gossipsub::Event::Subscribed { peer_id, topic }
                if topic == self.topic && self.refused_publish =>
            {
                self.refused_publish = false;
                self.send_event(NetEvent::Subscribed(peer_id));
            }
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                if message.topic != self.topic {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                    return;
                }
                self.send_event(NetEvent::Gossip {
                    id: message_id,
                    source: propagation_source,
                    author: message.source,
                    data: message.data,
                });
            }
            _ => {}
        }
    }

    fn on_kad_event(&mut self, ev: kad::Event) {
        let kad::Event::OutboundQueryProgressed { result, .. } = ev else {
            return;
        };
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                for p in providers.into_iter().take(MAX_PROVIDER_DIALS) {
                    // Only peer ids come back; their addresses live in the running
                    // query, so dial now while it knows them.
                    self.dial_peer(p, Vec::new());
                }
            }
            kad::QueryResult::StartProviding(Ok(_)) => self.providing = true,
            kad::QueryResult::StartProviding(Err(e)) => {
                tracing::debug!("providing the rendezvous key failed: {e}");
            }
            _ => {}
        }
    }

    fn on_rr_event(&mut self, kind: Channel, ev: request_response::Event<Vec<u8>, Bytes>) {
        if let request_response::Event::Message { peer, .. } = &ev {
            // It speaks ghmesh, whatever identify said or failed to say.
            if self.public.is_some() {
                self.speaks_ghmesh.insert(*peer);
            }
        }
        match ev {
            request_response::Event::Message {
                peer,
                connection_id,
                message,
            } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    let of_peer = self.inbound_per_peer.get(&peer).copied().unwrap_or(0);
                    if self.inbound.len() >= MAX_PENDING_INBOUND
                        || of_peer >= MAX_PENDING_INBOUND_PER_PEER
                    {
                        self.dropped_events += 1;
                        return; // dropping the channel refuses the request
                    }
                    let public_relay = self.conns.get(&connection_id).is_some_and(|c| !c.fleet);
                    if self.send_event(NetEvent::Request {
                        id: request_id,
                        channel: kind,
                        peer,
                        data: request,
                        public_relay,
                    }) {
                        *self.inbound_per_peer.entry(peer).or_default() += 1;
                        self.inbound.insert(
                            (kind, request_id),
                            PendingInbound {
                                peer,
                                reply: channel,
                            },
                        );
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.outbound.remove(&(kind, request_id)) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.outbound.remove(&(kind, request_id)) {
                    let _ = reply.send(Err(NetError::from(&error)));
                }
            }
            request_response::Event::InboundFailure { request_id, .. } => {
                if let Some(p) = self.inbound.remove(&(kind, request_id)) {
                    self.inbound_done(p.peer);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_advertised_only_when_asked_for() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let lan: Multiaddr = "/ip4/10.1.2.3/tcp/1".parse().unwrap();
        let any: Multiaddr = "/ip4/0.0.0.0/tcp/0".parse().unwrap();
        let lo_req: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        assert!(advertise(&lan, std::slice::from_ref(&any)));
        assert!(!advertise(&lo, &[any]));
        assert!(advertise(&lo, &[lo_req]));
    }
}
