//! The network layer. Only [`EventLoop`] owns the Swarm; everything else talks to it
//! through the cloneable [`NetworkHandle`] (bounded command channel, oneshot replies)
//! and receives [`NetEvent`]s on a bounded channel. Nothing here knows what a message
//! means: payloads are sealed bytes, opened and judged by the node.

pub mod behaviour;
pub mod codec;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, TopicHash};
use libp2p::metrics::{Metrics, Recorder};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{dial_opts::DialOpts, SwarmEvent};
use libp2p::{identify, identity, kad, mdns, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use behaviour::{Behaviour, BehaviourConfig, BehaviourEvent, KAD_PROTOCOL};

/// Capacity of the command channel (handle -> loop).
const COMMAND_QUEUE: usize = 1024;
/// Capacity of the event channel (loop -> node). When full, gossip is dropped (its
/// validation times out) and requests are refused: the loop never blocks on the node.
const EVENT_QUEUE: usize = 4096;
/// Most inbound requests waiting for the node's answer at once.
const MAX_PENDING_INBOUND: usize = 1024;
/// Most providers dialled per rendezvous lookup.
const MAX_PROVIDER_DIALS: usize = 16;
/// Most peers we keep connections with; beyond it discovery stops dialling.
const MAX_PEERS: usize = 256;

/// Errors of network operations.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The event loop has stopped.
    #[error("network is shut down")]
    Closed,
    /// The peer did not answer, or the connection failed.
    #[error("request failed: {0}")]
    Request(String),
    /// Publishing failed.
    #[error("publish failed: {0}")]
    Publish(String),
    /// Listening or building the transport failed.
    #[error("network setup failed: {0}")]
    Setup(String),
}

/// Network configuration.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on (port 0 allowed).
    pub listen: Vec<Multiaddr>,
    /// Addresses to dial at start (with `/p2p/<id>` they also seed Kademlia).
    pub bootstrap: Vec<Multiaddr>,
    /// Extra addresses to advertise (e.g. behind NAT).
    pub external: Vec<Multiaddr>,
    /// The gossipsub topic of this mesh (derived from the secret).
    pub topic: String,
    /// The Kademlia key members provide (derived from the secret).
    pub rendezvous: Vec<u8>,
    /// How often to look up the rendezvous providers.
    pub discovery_interval: Duration,
    /// Behaviour tunables.
    pub behaviour: BehaviourConfig,
}

/// What the loop tells the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message on our topic; the node must answer with
    /// [`NetworkHandle::report`] (the message is not forwarded before that).
    Gossip {
        /// Gossipsub message id.
        id: MessageId,
        /// The peer that forwarded it.
        source: PeerId,
        /// The original publisher (messages are signed).
        author: Option<PeerId>,
        /// Sealed payload.
        data: Vec<u8>,
    },
    /// A request; answer with [`NetworkHandle::respond`] or [`NetworkHandle::refuse`].
    Request {
        /// Handle for the answer.
        id: InboundRequestId,
        /// Who asked.
        peer: PeerId,
        /// Sealed payload.
        data: Vec<u8>,
    },
}

/// One connected peer, for `/_ghmesh/peers`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerInfo {
    /// Peer id.
    pub peer_id: String,
    /// Addresses of our connections to it.
    pub addrs: Vec<String>,
    /// In our gossipsub mesh for the topic.
    pub in_mesh: bool,
    /// Subscribed to our topic (a candidate member; membership is proven by sealing).
    pub member: bool,
}

/// Counters of the network layer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NetStats {
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers in our gossipsub mesh.
    pub mesh_peers: usize,
    /// Peers subscribed to our topic.
    pub members: usize,
    /// Our listen addresses with `/p2p/<id>`.
    pub listen: Vec<String>,
    /// Gossip or requests dropped because the node was not keeping up.
    pub dropped_events: u64,
}

enum Command {
    Publish {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<bool, NetError>>,
    },
    Request {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    Respond {
        id: InboundRequestId,
        data: Option<Vec<u8>>,
    },
    Report {
        id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    Stats(oneshot::Sender<NetStats>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Dial(Multiaddr),
    Shutdown(oneshot::Sender<()>),
}

/// Cloneable handle to the event loop.
#[derive(Clone)]
pub struct NetworkHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    members: Arc<RwLock<BTreeSet<PeerId>>>,
    listen: Arc<Vec<Multiaddr>>,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// Every wait on the loop is bounded: a wedged loop must not wedge callers forever.
const HANDLE_TIMEOUT: Duration = Duration::from_secs(30);

impl NetworkHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NetError::Closed)?;
        match tokio::time::timeout(HANDLE_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(NetError::Closed),
            Err(_) => Err(NetError::Request("network loop did not answer".into())),
        }
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses we listen on, each with `/p2p/<id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.as_ref().clone()
    }

    /// Peers currently subscribed to our topic (candidate members).
    pub fn members(&self) -> Vec<PeerId> {
        self.members
            .read()
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Publishes sealed bytes on our topic. `Ok(false)`: nobody subscribed yet.
    pub async fn publish(&self, data: Vec<u8>) -> Result<bool, NetError> {
        self.call(|reply| Command::Publish { data, reply }).await?
    }

    /// Sends a sealed request and waits for the sealed response, at most `timeout`.
    pub async fn request(
        &self,
        peer: PeerId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Request {
                peer,
                data,
                reply: tx,
            })
            .await
            .map_err(|_| NetError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(NetError::Closed),
            Err(_) => Err(NetError::Request("timed out".into())),
        }
    }

    /// Answers an inbound request.
    pub async fn respond(&self, id: InboundRequestId, data: Vec<u8>) {
        let _ = self
            .tx
            .send(Command::Respond {
                id,
                data: Some(data),
            })
            .await;
    }

    /// Drops an inbound request unanswered (the asker sees a failure).
    pub async fn refuse(&self, id: InboundRequestId) {
        let _ = self.tx.send(Command::Respond { id, data: None }).await;
    }

    /// Reports the validation result of a gossip message.
    pub async fn report(&self, id: MessageId, source: PeerId, acceptance: MessageAcceptance) {
        let _ = self
            .tx
            .send(Command::Report {
                id,
                source,
                acceptance,
            })
            .await;
    }

    /// Network counters.
    pub async fn stats(&self) -> Result<NetStats, NetError> {
        self.call(Command::Stats).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.call(Command::Peers).await
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.tx
            .send(Command::Dial(addr))
            .await
            .map_err(|_| NetError::Closed)
    }

    /// Stops the loop and closes every connection.
    pub async fn shutdown(&self) {
        let _ = self.call(Command::Shutdown).await;
    }
}

/// Builds the swarm, starts listening, waits for the first listen addresses and spawns
/// the loop. Returns the handle and the event receiver.
pub async fn start(
    keypair: identity::Keypair,
    cfg: NetConfig,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<(NetworkHandle, mpsc::Receiver<NetEvent>), NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let behaviour_cfg = cfg.behaviour.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_dns()
        .map_err(|e| setup(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| {
            Behaviour::new(key, &behaviour_cfg)
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| setup(&e))?
        // Gossipsub keeps a connection alive only while the peer is in our mesh; lookups
        // need connections to every member (libp2p-notes pitfall 1).
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    let metrics = Metrics::new(registry);
    let peer_id = *swarm.local_peer_id();
    let topic = IdentTopic::new(cfg.topic.clone());
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| setup(&e))?;

    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Setup(format!("cannot listen on {addr}: {e}")))?;
    }
    // Wait until every listener reports an address (port 0 becomes a real port).
    let mut listen = Vec::new();
    let mut pending: HashSet<_> = (0..cfg.listen.len()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() {
        let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| NetError::Setup("listen addresses did not come up".into()))?;
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                pending.clear();
                listen.push(address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(NetError::Setup(format!("listener failed: {error}")))
            }
            SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
                return Err(NetError::Setup(format!("listener closed: {e}")))
            }
            _ => {}
        }
    }
    // Give the OS a moment's worth of already-queued events (one listener may expand to
    // several interface addresses) without waiting on the network.
    while let Some(Some(ev)) = futures::FutureExt::now_or_never(swarm.next()) {
        if let SwarmEvent::NewListenAddr { address, .. } = ev {
            listen.push(address);
        }
    }
    for addr in &listen {
        if advertise(addr, &cfg.listen) {
            swarm.add_external_address(addr.clone());
        }
    }
    for addr in &cfg.external {
        swarm.add_external_address(addr.clone());
    }
    for addr in &cfg.bootstrap {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            let mut plain = addr.clone();
            plain.pop();
            swarm.behaviour_mut().kad.add_address(&peer, plain);
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, "cannot dial bootstrap address: {e}");
        }
    }

    let with_id: Vec<Multiaddr> = listen
        .iter()
        .map(|a| a.clone().with(Protocol::P2p(peer_id)))
        .collect();
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let members = Arc::new(RwLock::new(BTreeSet::new()));
    let handle = NetworkHandle {
        tx: cmd_tx,
        peer_id,
        members: members.clone(),
        listen: Arc::new(with_id.clone()),
    };
    let event_loop = EventLoop {
        swarm,
        commands: cmd_rx,
        events: ev_tx,
        topic: topic.hash(),
        rendezvous: kad::RecordKey::new(&cfg.rendezvous),
        discovery_interval: cfg.discovery_interval,
        members,
        listen: with_id,
        outbound: HashMap::new(),
        inbound: HashMap::new(),
        addrs: HashMap::new(),
        providing: false,
        dropped_events: 0,
        metrics,
    };
    tokio::spawn(event_loop.run());
    Ok((handle, ev_rx))
}

/// Which listen addresses to advertise to the DHT: real interfaces always; loopback
/// only when the operator asked for loopback explicitly (tests, single-host fleets).
fn advertise(addr: &Multiaddr, requested: &[Multiaddr]) -> bool {
    let loopback = addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    });
    if !loopback {
        return true;
    }
    requested.iter().any(|r| {
        r.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_loopback(),
            Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    })
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    topic: TopicHash,
    rendezvous: kad::RecordKey,
    discovery_interval: Duration,
    members: Arc<RwLock<BTreeSet<PeerId>>>,
    listen: Vec<Multiaddr>,
    outbound: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, NetError>>>,
    inbound: HashMap<InboundRequestId, ResponseChannel<Vec<u8>>>,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    providing: bool,
    dropped_events: u64,
    metrics: Metrics,
}

impl EventLoop {
    async fn run(mut self) {
        let mut discovery = tokio::time::interval(self.discovery_interval);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = discovery.tick() => {
                    ticks += 1;
                    self.discover(ticks);
                }
            }
        }
        tracing::debug!("network loop stopped");
    }

    /// Provide the rendezvous key and look up its providers. Re-provide every 30
    /// rounds: a record must outlive churn of the peers that store it.
    fn discover(&mut self, ticks: u64) {
        if self.swarm.connected_peers().next().is_none() {
            return;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        if !self.providing || ticks.is_multiple_of(30) {
            if let Err(e) = kad.start_providing(self.rendezvous.clone()) {
                tracing::debug!("start_providing: {e}");
            }
        }
        kad.get_providers(self.rendezvous.clone());
        if ticks % 30 == 1 {
            let _ = kad.bootstrap();
        }
    }

    fn send_event(&mut self, ev: NetEvent) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(_) => {
                self.dropped_events += 1;
                false
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let b = self.swarm.behaviour_mut();
        match cmd {
            Command::Publish { data, reply } => {
                let r = match b.gossipsub.publish(self.topic.clone(), data) {
                    Ok(_) => Ok(true),
                    // Identical bytes already published: the mesh has them.
                    Err(gossipsub::PublishError::Duplicate) => Ok(true),
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(false),
                    Err(e) => Err(NetError::Publish(e.to_string())),
                };
                let _ = reply.send(r);
            }
            Command::Request { peer, data, reply } => {
                let id = b.rr.send_request(&peer, data);
                self.outbound.insert(id, reply);
            }
            Command::Respond { id, data } => {
                if let Some(channel) = self.inbound.remove(&id) {
                    if let Some(data) = data {
                        let _ = b.rr.send_response(channel, data);
                    }
                }
            }
            Command::Report {
                id,
                source,
                acceptance,
            } => {
                let _ = b
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::Stats(reply) => {
                let stats = NetStats {
                    connected_peers: self.swarm.connected_peers().count(),
                    mesh_peers: self
                        .swarm
                        .behaviour()
                        .gossipsub
                        .mesh_peers(&self.topic)
                        .count(),
                    members: self.members.read().map(|m| m.len()).unwrap_or(0),
                    listen: self.listen.iter().map(|a| a.to_string()).collect(),
                    dropped_events: self.dropped_events,
                };
                let _ = reply.send(stats);
            }
            Command::Peers(reply) => {
                let mesh: HashSet<PeerId> = b.gossipsub.mesh_peers(&self.topic).copied().collect();
                let members = self.members.read().map(|m| m.clone()).unwrap_or_default();
                let peers = self
                    .swarm
                    .connected_peers()
                    .map(|p| PeerInfo {
                        peer_id: p.to_string(),
                        addrs: self
                            .addrs
                            .get(p)
                            .map(|a| a.iter().map(|a| a.to_string()).collect())
                            .unwrap_or_default(),
                        in_mesh: mesh.contains(p),
                        member: members.contains(p),
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::debug!(%addr, "dial failed: {e}");
                }
            }
            Command::Shutdown(_) => {}
        }
    }

    fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.swarm.connected_peers().count() >= MAX_PEERS
        {
            return;
        }
        // A fresh source port: two nodes that discover each other at the same moment
        // would otherwise dial from their listening ports, turning the crossing dials
        // into one TCP simultaneous open that both handshakes reject.
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .allocate_new_port()
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::trace!(%peer, "dial: {e}");
        }
    }

    fn set_member(&mut self, peer: PeerId, member: bool) {
        if let Ok(mut m) = self.members.write() {
            if member {
                m.insert(peer);
            } else {
                m.remove(&peer);
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&ev);
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address
                    .clone()
                    .with(Protocol::P2p(*self.swarm.local_peer_id()));
                if !self.listen.contains(&full) {
                    self.listen.push(full);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                let known = self.addrs.entry(peer_id).or_default();
                if !known.contains(&addr) && known.len() < 8 {
                    known.push(addr);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.addrs.remove(&peer_id);
                self.set_member(peer_id, false);
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(ev) => {
                self.metrics.record(&ev);
                match ev {
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
                    gossipsub::Event::Subscribed { peer_id, topic } if topic == self.topic => {
                        self.set_member(peer_id, true);
                    }
                    gossipsub::Event::Unsubscribed { peer_id, topic } if topic == self.topic => {
                        self.set_member(peer_id, false);
                    }
                    _ => {}
                }
            }
            BehaviourEvent::Kad(ev) => {
                self.metrics.record(&ev);
                if let kad::Event::OutboundQueryProgressed { result, .. } = ev {
                    match result {
                        kad::QueryResult::GetProviders(Ok(
                            kad::GetProvidersOk::FoundProviders { providers, .. },
                        )) => {
                            for p in providers.into_iter().take(MAX_PROVIDER_DIALS) {
                                // Addresses live in the running query; dial now (pitfall 13).
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
            }
            BehaviourEvent::Mdns(ev) => {
                if let mdns::Event::Discovered(found) = ev {
                    let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                    for (peer, addr) in found {
                        by_peer.entry(peer).or_default().push(addr);
                    }
                    for (peer, addrs) in by_peer {
                        for a in &addrs {
                            self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
                        }
                        self.dial_peer(peer, addrs);
                    }
                }
            }
            BehaviourEvent::Identify(ev) => {
                self.metrics.record(&ev);
                if let identify::Event::Received { peer_id, info, .. } = ev {
                    // Kademlia does not learn addresses from identify by itself (pitfall 12).
                    if info.protocols.contains(&KAD_PROTOCOL) {
                        for addr in info.listen_addrs.into_iter().take(8) {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            BehaviourEvent::Rr(ev) => self.on_rr_event(ev),
            BehaviourEvent::Ping(ev) => self.metrics.record(&ev),
        }
    }

    fn on_rr_event(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    if self.inbound.len() >= MAX_PENDING_INBOUND {
                        self.dropped_events += 1;
                        return; // dropping the channel refuses the request
                    }
                    if self.send_event(NetEvent::Request {
                        id: request_id,
                        peer,
                        data: request,
                    }) {
                        self.inbound.insert(request_id, channel);
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.outbound.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Request(error.to_string())));
                }
            }
            request_response::Event::InboundFailure { request_id, .. } => {
                self.inbound.remove(&request_id);
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
