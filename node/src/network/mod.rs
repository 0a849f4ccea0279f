//! The network layer. Only the event loop (`event_loop.rs`) owns the Swarm; everything else talks to it
//! through the cloneable [`NetworkHandle`] (bounded command channel, oneshot replies)
//! and receives [`NetEvent`]s on a bounded channel. Nothing here knows what a message
//! means: payloads are sealed bytes, opened and judged by the node.

pub mod behaviour;
pub mod codec;
mod discovery;
pub use discovery::{DISCOVERY_MIN_GAP, DISCOVERY_SOON};
mod dns_seeds;
mod event_loop;
pub mod fleet_only;
mod public_dht;
pub mod reach;
pub use public_dht::PublicDhtConfig;
mod relays;
pub use behaviour::RelayMode;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ghmesh_protocol::Reach;
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, MessageId};
use libp2p::metrics::Metrics;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::InboundRequestId;
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, kad, noise, tcp, yamux, Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::limits::{
    COMMAND_QUEUE, EVENT_QUEUE, HANDLE_TIMEOUT, IDLE_CONNECTION_TIMEOUT, LISTEN_WAIT,
};
use behaviour::{Behaviour, BehaviourConfig};
use event_loop::{advertise, EventLoop};

/// Errors of network operations. What went wrong with a request is kept (a timeout is
/// not a refused dial), so that callers can tell a slow peer from a gone one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The event loop has stopped.
    #[error("network is shut down")]
    Closed,
    /// The event loop did not take or answer a command in time.
    #[error("the network loop did not answer")]
    Stalled,
    /// No answer within the time given.
    #[error("request timed out")]
    Timeout,
    /// The peer could not be dialled.
    #[error("cannot dial the peer: {0}")]
    Dial(String),
    /// The peer does not speak the protocol (it refused the stream).
    #[error("the peer refused the protocol")]
    Refused,
    /// The connection closed before the answer came.
    #[error("the connection closed before the answer")]
    ConnectionClosed,
    /// The stream failed (I/O, a frame over its limit).
    #[error("stream failed: {0}")]
    Stream(String),
    /// Publishing failed.
    #[error("publish failed: {0}")]
    Publish(String),
    /// A body was asked of a peer we reach only through a relay: relays carry
    /// signalling, not bodies.
    #[error("the peer is reachable only through a relay")]
    Relayed,
    /// The fleet's traffic was meant for a peer we reach only through public relays,
    /// which carry membership only. Nothing was sent.
    #[error("the peer is reachable only through a public relay")]
    PublicRelay,
    /// Listening or building the transport failed.
    #[error("network setup failed: {0}")]
    Setup(String),
}

impl From<&libp2p::request_response::OutboundFailure> for NetError {
    fn from(f: &libp2p::request_response::OutboundFailure) -> Self {
        use libp2p::request_response::OutboundFailure as F;
        match f {
            F::DialFailure => Self::Dial(f.to_string()),
            F::Timeout => Self::Timeout,
            F::ConnectionClosed => Self::ConnectionClosed,
            F::UnsupportedProtocols => Self::Refused,
            F::Io(e) => Self::Stream(e.to_string()),
        }
    }
}

/// Network configuration.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on (port 0 allowed).
    pub listen: Vec<Multiaddr>,
    /// Addresses to dial at start (with `/p2p/<id>` they also seed Kademlia; a
    /// `/dns4|dns6|dns/<name>/tcp/<port>` without one dials every address of the name,
    /// re-resolved every discovery interval).
    pub bootstrap: Vec<Multiaddr>,
    /// Extra addresses to advertise (e.g. behind NAT).
    pub external: Vec<Multiaddr>,
    /// The gossipsub topic of this mesh (derived from the secret).
    pub topic: String,
    /// The Kademlia key members provide (derived from the secret).
    pub rendezvous: Vec<u8>,
    /// How often to look up the rendezvous providers.
    pub discovery_interval: Duration,
    /// The public DHT as a rendezvous (`--public-dht`); `None`: never a public node.
    pub public_dht: Option<PublicDhtConfig>,
    /// Behaviour tunables.
    pub behaviour: BehaviourConfig,
}

/// Which request-response protocol a request travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Hellos, lookups, member lists: small frames both ways.
    Small,
    /// Bodies by CID: a small request, a large reply.
    Body,
}

/// What a request carries, which decides the connections that may carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Hellos and member lists: what two runners need to meet, through any relay.
    Membership,
    /// Lookups and bodies: the fleet's own, never through a public relay
    /// ([`fleet_only::carries_fleet`]).
    Fleet,
}

/// What the loop tells the node.
#[derive(Debug)]
pub enum NetEvent {
    /// The first connection to a peer is up: greet it.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
    /// A peer subscribed to our topic after a publish found nobody subscribed: it
    /// would reach someone now. A hint only (subscribing proves nothing; membership is
    /// the sealed hello).
    Subscribed(PeerId),
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
        /// The protocol it came on (the answer goes back on it).
        channel: Channel,
        /// Who asked.
        peer: PeerId,
        /// Sealed payload.
        data: Vec<u8>,
        /// It came through a public relay: answer membership only.
        public_relay: bool,
    },
    /// Whether we reach `peer` only through public relays changed: public relays carry
    /// hellos and member lists, none of the fleet's traffic.
    PublicRelay {
        /// The peer.
        peer: PeerId,
        /// Only through public relays now.
        only: bool,
    },
    /// AutoNAT changed its mind about our reachability.
    Reach(Reach),
    /// A relay reserved us a slot: we are reachable at a new relayed address. These
    /// are our addresses now, in the order to pass on; members that could not reach
    /// us before need them.
    Relayed(Vec<Multiaddr>),
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
    /// Proved it holds the mesh key (sealed hello); filled in by the node.
    pub member: bool,
    /// What it said of its reachability in its hello; filled in by the node.
    pub reachability: Reach,
    /// What it said (in its hello) of holding a direct connection to every member
    /// (`null`: not found out yet); filled in by the node.
    pub direct_to_all: Option<bool>,
    /// Direct, or only through a relay.
    pub connection: reach::Connection,
    /// Reached only through public relays, which carry hellos and member lists but
    /// none of the fleet's traffic (neither asked nor an owner then).
    pub public_relay: bool,
    /// The transport of the connection shown (the direct one when there is one).
    pub transport: reach::Transport,
}

/// Counters of the network layer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NetStats {
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers in our gossipsub mesh.
    pub mesh_peers: usize,
    /// Our listen addresses with `/p2p/<id>`.
    pub listen: Vec<String>,
    /// Gossip or requests dropped because the node was not keeping up.
    pub dropped_events: u64,
    /// Reach across NAT.
    pub reach: ReachStats,
}

/// Reach across NAT, in `/_ghmesh/stats` (contract §8).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReachStats {
    /// Whether members can reach us (AutoNAT).
    pub reachability: Reach,
    /// Whether we hold a direct connection to every member (`null`: not found out
    /// yet): with no public member, owners are those that do (`placement::may_own`);
    /// filled in by the node.
    pub direct_to_all: Option<bool>,
    /// Addresses confirmed reachable from outside (AutoNAT, relayed addresses, and
    /// `--external-addr`).
    pub external_addrs: Vec<String>,
    /// Reservations we hold on fleet relays.
    pub relay_reservations: usize,
    /// Circuits we relayed for members, since start.
    pub relay_circuits_served: u64,
    /// Relayed connections upgraded to direct ones by hole punching, since start.
    pub direct_upgrades: u64,
    /// Hole punches that failed, since start.
    pub holepunch_failures: u64,
    /// `--public-dht`: the public DHT serves as a rendezvous.
    pub public_dht: bool,
    /// Public DHT nodes in our routing table (0 without `--public-dht`, or before any
    /// bootstrap node answered).
    pub public_dht_peers: usize,
}

pub(crate) enum Command {
    Publish {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<bool, NetError>>,
    },
    Request {
        peer: PeerId,
        channel: Channel,
        traffic: Traffic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Bytes, NetError>>,
    },
    Respond {
        channel: Channel,
        id: InboundRequestId,
        data: Option<Bytes>,
    },
    DiscoverSoon,
    DialPeer(PeerId, Vec<Multiaddr>),
    ListenAddrsOf(Vec<PeerId>, oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>),
    Report {
        id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    Stats(oneshot::Sender<NetStats>),
    Members(Vec<PeerId>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Dial(Multiaddr),
    Shutdown(oneshot::Sender<()>),
}

/// Cloneable handle to the event loop.
#[derive(Clone)]
pub struct NetworkHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    listen: Arc<Vec<Multiaddr>>,
    /// The event loop: awaited by [`NetworkHandle::shutdown`], so that the swarm (and
    /// with it every connection and the DNS resolver it feeds) is gone when it returns.
    /// A `std::sync::Mutex`: the handle is taken out before it is awaited.
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

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
            Err(_) => Err(NetError::Stalled),
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

    /// Publishes sealed bytes on our topic. `Ok(false)`: nobody subscribed yet.
    pub async fn publish(&self, data: Vec<u8>) -> Result<bool, NetError> {
        self.call(|reply| Command::Publish { data, reply }).await?
    }

    /// Sends a sealed request carrying `traffic` on `channel` and waits for the sealed
    /// response, at most `timeout`.
    pub async fn request(
        &self,
        peer: PeerId,
        channel: Channel,
        traffic: Traffic,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Request {
                peer,
                channel,
                traffic,
                data,
                reply: tx,
            })
            .await
            .map_err(|_| NetError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(NetError::Closed),
            Err(_) => Err(NetError::Timeout),
        }
    }

    /// Answers an inbound request.
    pub async fn respond(&self, channel: Channel, id: InboundRequestId, data: Bytes) {
        let _ = self
            .tx
            .send(Command::Respond {
                channel,
                id,
                data: Some(data),
            })
            .await;
    }

    /// Drops an inbound request unanswered (the asker sees a failure).
    pub async fn refuse(&self, channel: Channel, id: InboundRequestId) {
        let _ = self
            .tx
            .send(Command::Respond {
                channel,
                id,
                data: None,
            })
            .await;
    }

    /// Dials `peer` at `addrs` unless connected already (a member another member told
    /// us about).
    pub async fn dial_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let _ = self.tx.send(Command::DialPeer(peer, addrs)).await;
    }

    /// The addresses these peers said (identify) they listen on.
    pub async fn listen_addrs_of(
        &self,
        peers: Vec<PeerId>,
    ) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, NetError> {
        self.call(|reply| Command::ListenAddrsOf(peers, reply))
            .await
    }

    /// The members the node admitted now: the relay serves only them, and only they
    /// may judge our reachability.
    pub async fn set_members(&self, members: Vec<PeerId>) {
        let _ = self.tx.send(Command::Members(members)).await;
    }

    /// Runs a discovery round soon (a member was admitted: its neighbours may be ours).
    pub async fn discover_soon(&self) {
        let _ = self.tx.send(Command::DiscoverSoon).await;
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

    /// Stops the loop and waits for it to end, closing every connection.
    pub async fn shutdown(&self) {
        let _ = self.call(Command::Shutdown).await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Builds the swarm, starts listening, waits for the first listen addresses and spawns
/// the loop. Returns the handle and the event receiver.
pub async fn start(
    keypair: identity::Keypair,
    cfg: NetConfig,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<(NetworkHandle, mpsc::Receiver<NetEvent>), NetError> {
    let members = behaviour::MemberSet::default();
    let mut swarm = build_swarm(keypair, &cfg.behaviour, members.clone(), registry)?;
    if cfg.behaviour.relay == RelayMode::On {
        if let Some(relay) = swarm.behaviour_mut().relay.as_mut() {
            relay.set_status(Some(libp2p::relay::Status::Enable));
        }
    } else if let Some(relay) = swarm.behaviour_mut().relay.as_mut() {
        // Every node holds its listen addresses as confirmed external ones (Kademlia
        // wants them), which would make libp2p's relay advertise itself at once:
        // under `auto` the event loop enables it when AutoNAT finds us public.
        relay.set_status(Some(libp2p::relay::Status::Disable));
    }
    let metrics = Metrics::new(registry);
    let peer_id = *swarm.local_peer_id();
    let topic = IdentTopic::new(cfg.topic.clone());
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NetError::Setup(e.to_string()))?;
    let listen = listen_on(&mut swarm, &cfg.listen).await?;
    for addr in &listen {
        if advertise(addr, &cfg.listen) {
            swarm.add_external_address(addr.clone());
        }
    }
    for addr in &cfg.external {
        swarm.add_external_address(addr.clone());
    }
    let seeds = dial_bootstrap(&mut swarm, &cfg.bootstrap);

    let with_id: Vec<Multiaddr> = listen
        .iter()
        .map(|a| a.clone().with(Protocol::P2p(peer_id)))
        .collect();
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let task = Arc::new(std::sync::Mutex::new(None));
    let handle = NetworkHandle {
        tx: cmd_tx,
        peer_id,
        listen: Arc::new(with_id.clone()),
        task: task.clone(),
    };
    // The resolver task ends when the event loop (its receiver) is gone.
    let seeds = (!seeds.is_empty()).then(|| {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(dns_seeds::run(seeds, cfg.discovery_interval, tx));
        rx
    });
    let event_loop = EventLoop {
        swarm,
        commands: cmd_rx,
        events: ev_tx,
        topic: topic.hash(),
        rendezvous: kad::RecordKey::new(&cfg.rendezvous),
        discovery_interval: cfg.discovery_interval,
        listen: with_id,
        outbound: HashMap::new(),
        inbound: HashMap::new(),
        inbound_per_peer: HashMap::new(),
        listen_of: HashMap::new(),
        addrs: HashMap::new(),
        providing: false,
        refused_publish: false,
        dropped_events: 0,
        metrics,
        seeds,
        seed_peers: HashMap::new(),
        discover_at: None,
        discovered_once: false,
        last_discovery: None,
        relay_mode: cfg.behaviour.relay,
        members,
        conns: HashMap::new(),
        hop: HashSet::new(),
        autonat_offered: HashSet::new(),
        reservations: HashMap::new(),
        reach: Reach::Unknown,
        autonat_says: Reach::Unknown,
        confirmed_by: HashSet::new(),
        private_since: None,
        translated_seen: None,
        circuits_served: 0,
        direct_upgrades: 0,
        holepunch_failures: 0,
        judges: HashSet::new(),
        refused: HashMap::new(),
        dialing: HashMap::new(),
        public: cfg.public_dht.map(public_dht::PublicDht::new),
        speaks_ghmesh: HashSet::new(),
        public_relay_only: HashSet::new(),
    };
    let running = tokio::spawn(event_loop.run());
    if let Ok(mut t) = task.lock() {
        *t = Some(running);
    }
    Ok((handle, ev_rx))
}

fn yamux_config() -> yamux::Config {
    let mut y = yamux::Config::default();
    y.set_max_num_streams(crate::limits::MAX_STREAMS_PER_CONNECTION);
    y
}

/// The swarm: TCP with noise and yamux, QUIC, DNS, relayed connections (noise and
/// yamux over a relay's circuit), bandwidth metrics, our behaviour.
fn build_swarm(
    keypair: identity::Keypair,
    behaviour_cfg: &behaviour::BehaviourConfig,
    members: behaviour::MemberSet,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<libp2p::Swarm<Behaviour>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        // TCP with a deadline on the whole dial (connect, noise, yamux), which libp2p's
        // own TCP phase lacks: a dial to an address behind a NAT that drops it (an
        // AutoNAT dial-back, a member's LAN address seen from another network) would
        // otherwise wait out the kernel's SYN retries, about two minutes, and AutoNAT
        // would never hear that it failed.
        .with_other_transport(|key| {
            use libp2p::Transport as _;
            let noise = noise::Config::new(key)
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)?;
            Ok(
                tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux_config())
                    .timeout(crate::limits::TCP_DIAL_TIMEOUT),
            )
        })
        .map_err(|e| setup(&e))?
        .with_dns()
        .map_err(|e| setup(&e))?
        .with_relay_client(noise::Config::new, yamux_config)
        .map_err(|e| setup(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| {
            Behaviour::new(key, relay_client, behaviour_cfg, members)
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| setup(&e))?
        // Lookups need connections to every member, not only gossip mesh peers.
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build())
}

/// Listens on `addrs` and returns the addresses the listeners came up on (port 0
/// becomes a real port), within [`LISTEN_WAIT`].
async fn listen_on(
    swarm: &mut libp2p::Swarm<Behaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>, NetError> {
    for addr in addrs {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Setup(format!("cannot listen on {addr}: {e}")))?;
    }
    let mut listen = Vec::new();
    let mut pending: HashSet<_> = (0..addrs.len()).collect();
    let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
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
    Ok(listen)
}

/// Dials every bootstrap address (a peer id's also seeds Kademlia); DNS names without
/// a peer id are returned, for the resolver task.
fn dial_bootstrap(
    swarm: &mut libp2p::Swarm<Behaviour>,
    bootstrap: &[Multiaddr],
) -> Vec<dns_seeds::DnsSeed> {
    let mut seeds = Vec::new();
    for addr in bootstrap {
        if let Some(seed) = dns_seeds::DnsSeed::parse(addr) {
            seeds.push(seed);
            continue;
        }
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            let mut plain = addr.clone();
            plain.pop();
            swarm.behaviour_mut().kad.add_address(&peer, plain);
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, "cannot dial bootstrap address: {e}");
        }
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::OutboundFailure;

    #[test]
    fn a_failed_request_says_how_it_failed() {
        assert!(matches!(
            NetError::from(&OutboundFailure::Timeout),
            NetError::Timeout
        ));
        assert!(matches!(
            NetError::from(&OutboundFailure::DialFailure),
            NetError::Dial(_)
        ));
        assert!(matches!(
            NetError::from(&OutboundFailure::UnsupportedProtocols),
            NetError::Refused
        ));
        assert!(matches!(
            NetError::from(&OutboundFailure::ConnectionClosed),
            NetError::ConnectionClosed
        ));
        let io = std::io::Error::other("frame too large");
        assert!(
            matches!(NetError::from(&OutboundFailure::Io(io)), NetError::Stream(m) if m.contains("frame too large"))
        );
    }
}
