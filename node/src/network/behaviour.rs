//! The libp2p behaviour: gossipsub for announcements, Kademlia for rendezvous, mDNS on
//! the LAN, identify (which feeds Kademlia addresses), request-response for lookups and
//! body fetches, ping for liveness; for reach across NAT, AutoNAT, a circuit relay
//! (server for members, client) and hole punching (DCUtR).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ghmesh_protocol::wire::MAX_GOSSIP_MESSAGE;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, identity, kad, mdns, ping, relay,
    request_response, Multiaddr, PeerId, StreamProtocol,
};
use sha2::{Digest, Sha256};

use super::fleet_only::Gated;
use super::NetError;

use super::codec::{SealedCodec, BODY_PROTOCOL, RR_PROTOCOL};
use crate::limits::{
    BODY_REQUEST_TIMEOUT, KAD_QUERY_TIMEOUT, MAX_BODY_STREAMS, MAX_CONNECTIONS_PER_PEER,
    MAX_INBOUND_CONNECTIONS, MAX_PENDING_INBOUND_CONNECTIONS, MAX_SMALL_STREAMS,
    SMALL_REQUEST_TIMEOUT,
};

/// Private DHT: only ghmesh nodes speak it, so fleets never pollute the public IPFS DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ghmesh/kad/1.0.0");
/// The fleet's gossip protocol: ghmesh's own, not gossipsub's `/meshsub/…`, so that a
/// public DHT node (most speak gossipsub) never hears our subscription, whose topic
/// names the fleet for good. Gossipsub v1.1: a custom id cannot say v1.2, so no
/// IDONTWANT (which ghmesh sent only for messages of 8 KiB or more: below that it cost
/// a peer as much as the duplicate it saved).
pub const GOSSIP_PROTOCOL_PREFIX: &str = "/ghmesh/meshsub";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/ghmesh/id/1.0.0";

/// Tunables of the behaviour that tests and simulations shorten.
#[derive(Debug, Clone)]
pub struct BehaviourConfig {
    /// Gossipsub heartbeat (mesh maintenance, gossip emission).
    pub heartbeat: Duration,
    /// mDNS on (wrapped in a `Toggle`).
    pub mdns: bool,
    /// How often mDNS queries the LAN.
    pub mdns_query_interval: Duration,
    /// Provider record TTL in the DHT (publication runs at a third of it).
    pub provider_ttl: Duration,
    /// How often each connection is pinged.
    pub ping_interval: Duration,
    /// A ping unanswered for this long closes the connection.
    pub ping_timeout: Duration,
    /// Whether this node serves as a circuit relay for members.
    pub relay: RelayMode,
    /// How soon after start AutoNAT first asks, and how often it asks again while it is
    /// not sure (once sure, every [`AUTONAT_REFRESH`]).
    pub autonat_retry: Duration,
    /// A client of the public DHT (`--public-dht`) next to the private one.
    pub public_dht: bool,
}

/// `--relay`: whether this node serves as a circuit relay (v2) for fleet members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    /// While members find it publicly reachable.
    #[default]
    Auto,
    /// Always (a hub on a public VM, whatever AutoNAT says).
    On,
    /// Never.
    Off,
}

/// How often a node that is sure of its reachability checks it again.
pub const AUTONAT_REFRESH: Duration = Duration::from_secs(5 * 60);

/// The members our node admitted, for the relay's access check (read by the relay
/// behaviour inside the swarm, written by the event loop when the node says).
pub type MemberSet = Arc<RwLock<HashSet<PeerId>>>;

/// Refuses relay reservations and circuits to peers that are not admitted members: a
/// fleet relay carries the fleet, not strangers.
struct MembersOnly(MemberSet);

impl relay::RateLimiter for MembersOnly {
    fn try_next(&mut self, peer: PeerId, _addr: &Multiaddr, _now: std::time::Instant) -> bool {
        self.0.read().is_ok_and(|m| m.contains(&peer))
    }
}

/// Every protocol a node speaks, driven by the one event loop.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Caps on connections: strangers cannot fill our tables.
    pub limits: connection_limits::Behaviour,
    /// Announcements and refreshes on the fleet's topic, never over a public relay.
    pub gossipsub: Gated<gossipsub::Behaviour>,
    /// The private DHT: rendezvous providers across networks.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// The public DHT as a rendezvous, a client only; absent without `--public-dht`.
    pub public_kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    /// LAN discovery, off with `--no-mdns`.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Listen addresses and protocols of peers, fed to Kademlia.
    pub identify: identify::Behaviour,
    /// Sealed hellos, lookups and member lists (small frames).
    pub rr: request_response::Behaviour<SealedCodec>,
    /// Bodies by CID (the only large frames).
    pub body: request_response::Behaviour<SealedCodec>,
    /// Liveness of connections: a failed ping closes the connection.
    pub ping: ping::Behaviour,
    /// Whether members can dial us back (v1: it has the confidence logic v2 lacks).
    pub autonat: autonat::Behaviour,
    /// Circuit relay for members behind NAT; absent with `--relay off`.
    pub relay: Toggle<relay::Behaviour>,
    /// Reservations on fleet relays and circuits through them.
    pub relay_client: relay::client::Behaviour,
    /// Upgrades relayed connections to direct ones by hole punching.
    pub dcutr: dcutr::Behaviour,
}

/// Gossipsub mesh sizes for fleets from two runners to a few hundred. `build()` no
/// longer validates these (a regression since gossipsub 0.49), so [`check_mesh_params`] does.
/// Smaller than gossipsub's 6: an author floods its own messages to every subscribed
/// peer, so the mesh only relays to peers it is not connected to and repairs lost sends,
/// while every receiver forwards each message to all its mesh peers. At 6 those
/// duplicates come to an estimated 115 transmissions per announce in a 20-node fleet
/// (19 from the author, about 5 from each receiver); at 4 the
/// 20-node burst took 6 % less CPU and the 50-node one 20 % less (BENCHMARKS.md).
pub const MESH_N: usize = 4;
/// Lower mesh bound.
pub const MESH_N_LOW: usize = 3;
/// Upper mesh bound.
pub const MESH_N_HIGH: usize = 8;
/// Outbound peers kept in the mesh.
pub const MESH_OUTBOUND_MIN: usize = 2;

/// The invariants gossipsub assumes but no longer checks.
pub fn check_mesh_params(outbound_min: usize, low: usize, n: usize, high: usize) -> bool {
    outbound_min <= low && low <= n && n <= high && 2 * outbound_min <= n
}

impl Behaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        cfg: &BehaviourConfig,
        members: MemberSet,
    ) -> Result<Self, NetError> {
        let peer_id = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(format!("ghmesh/{}", env!("CARGO_PKG_VERSION")))
                // A relayed address appears after the connections that would pass it
                // on: push it, so that member lists carry it.
                .with_push_listen_addr_updates(true),
        );
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established_incoming(Some(MAX_INBOUND_CONNECTIONS))
                .with_max_pending_incoming(Some(MAX_PENDING_INBOUND_CONNECTIONS))
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER)),
        );
        Ok(Self {
            limits,
            gossipsub: Gated::new(gossipsub(cfg)?),
            kad: kademlia(peer_id, cfg),
            public_kad: Toggle::from(cfg.public_dht.then(|| public_kademlia(peer_id))),
            mdns: Toggle::from(mdns(peer_id, cfg)),
            identify,
            rr: request_response::Behaviour::with_codec(
                SealedCodec::SMALL,
                [(RR_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(SMALL_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(MAX_SMALL_STREAMS),
            ),
            body: request_response::Behaviour::with_codec(
                SealedCodec::BODY,
                [(BODY_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(BODY_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(MAX_BODY_STREAMS),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(cfg.ping_interval)
                    .with_timeout(cfg.ping_timeout),
            ),
            autonat: autonat::Behaviour::new(
                peer_id,
                autonat::Config {
                    boot_delay: cfg.autonat_retry,
                    retry_interval: cfg.autonat_retry,
                    refresh_interval: AUTONAT_REFRESH,
                    throttle_server_period: cfg.autonat_retry,
                    // Servers are the members `reach::may_judge_us` picks, added by the
                    // event loop: a connected LAN neighbour would call us public.
                    use_connected: false,
                    // Judged by `reach::may_judge_us` instead: AutoNAT's notion of a
                    // global address would also refuse every documentation range.
                    only_global_ips: false,
                    ..Default::default()
                },
            ),
            relay: Toggle::from(
                (cfg.relay != RelayMode::Off)
                    .then(|| relay::Behaviour::new(peer_id, relay_config(members))),
            ),
            relay_client,
            dcutr: dcutr::Behaviour::new(peer_id),
        })
    }
}

/// A fleet relay: members only, and since only hellos, lookups, gossip and hole-punch
/// signalling cross it (bodies are refused over relayed connections), circuits may last
/// longer and carry more than libp2p's public-relay defaults (2 minutes, 128 KiB), which
/// would cut a member behind a NAT that cannot be punched off every two minutes.
fn relay_config(members: MemberSet) -> relay::Config {
    // Members only, and no more: libp2p's default rate limits are for strangers, and
    // their per-IP bucket is shared by every runner behind one NAT, so one member's
    // retries would starve the others' reservations. The counts above bound a member.
    relay::Config {
        max_reservations: 256,
        max_reservations_per_peer: 4,
        max_circuits: 256,
        max_circuits_per_peer: 16,
        max_circuit_duration: Duration::from_secs(60 * 60),
        max_circuit_bytes: 32 << 20,
        reservation_rate_limiters: vec![Box::new(MembersOnly(members.clone()))],
        circuit_src_rate_limiters: vec![Box::new(MembersOnly(members))],
        ..Default::default()
    }
}

fn gossipsub(cfg: &BehaviourConfig) -> Result<gossipsub::Behaviour, NetError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| NetError::Setup(format!("{what}: {e}"));
    if !check_mesh_params(MESH_OUTBOUND_MIN, MESH_N_LOW, MESH_N, MESH_N_HIGH) {
        return Err(NetError::Setup(
            "gossipsub mesh parameters are inconsistent".into(),
        ));
    }
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        // No per-message signatures: a signature proves a peer id, not membership,
        // and membership is proven by the sealed payload. Verifying ed25519 on every
        // copy of every message was the largest single CPU cost at 20+ nodes.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .protocol_id_prefix(GOSSIP_PROTOCOL_PREFIX)
        .validate_messages()
        // Content-addressed ids: stable across builds, unlike DefaultHasher.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(Sha256::digest(&m.data)[..20].to_vec())
        })
        .max_transmit_size(MAX_GOSSIP_MESSAGE + 4096)
        .heartbeat_interval(cfg.heartbeat)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .mesh_n(MESH_N)
        .mesh_n_low(MESH_N_LOW)
        .mesh_n_high(MESH_N_HIGH)
        .mesh_outbound_min(MESH_OUTBOUND_MIN)
        // Small fleets: publish straight to every subscribed peer for latency.
        .flood_publish(true)
        .build()
        .map_err(|e| setup("gossipsub config", &e))?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_cfg)
        .map_err(|e| setup("gossipsub", &e))
}

fn kademlia(
    peer_id: libp2p::PeerId,
    cfg: &BehaviourConfig,
) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
    kad_cfg.set_query_timeout(KAD_QUERY_TIMEOUT);
    kad_cfg.set_provider_record_ttl(Some(cfg.provider_ttl));
    kad_cfg.set_provider_publication_interval(Some(cfg.provider_ttl / 3));
    // The event loop bootstraps once it has a connection; kad's own timer would only
    // warn "no known peers" on a node that starts alone.
    kad_cfg.set_periodic_bootstrap_interval(None);
    // The routing table holds rendezvous points only: bootstrap addresses and the
    // peers DNS seeds resolve to. Members find each other through the provider record
    // those points hold, then through member lists. Inserting every connected member
    // made Kademlia bootstrap on each node start (libp2p-kad does so whenever a peer
    // joins a table of fewer than 20, with a query per bucket sent to every known
    // peer): more than a quarter of a 20-node burst's CPU, and at 50 nodes the queueing
    // that made members fetch instead of waiting.
    kad_cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
    // Runners of one fleet can reach each other; without an explicitly confirmed
    // external address Kademlia would stay a client and store no provider records
    // (it waits for a confirmed external address, which LANs and tests never get).
    // See README "Discovery".
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// The public DHT (`/ipfs/kad/1.0.0`) as its clients use it: we ask, we never answer
/// nor join anyone's routing table (a server would carry strangers' queries and be
/// listed to the world), whatever external addresses we hold.
fn public_kademlia(peer_id: libp2p::PeerId) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut kad_cfg = kad::Config::new(kad::PROTOCOL_NAME);
    kad_cfg.set_query_timeout(KAD_QUERY_TIMEOUT);
    // Our record is republished by the event loop as the hour turns and when our
    // addresses change (`public_dht::plan`), not on kad's 12-hour timer.
    kad_cfg.set_provider_publication_interval(None);
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
    kad.set_mode(Some(kad::Mode::Client));
    kad
}

/// mDNS when asked for and the sandbox allows it; a node without it still runs.
fn mdns(peer_id: libp2p::PeerId, cfg: &BehaviourConfig) -> Option<mdns::tokio::Behaviour> {
    if !cfg.mdns {
        return None;
    }
    let mdns_cfg = mdns::Config {
        query_interval: cfg.mdns_query_interval,
        ..Default::default()
    };
    match mdns::tokio::Behaviour::new(mdns_cfg, peer_id) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("mDNS unavailable, continuing without it: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_parameters_are_consistent() {
        assert!(check_mesh_params(
            MESH_OUTBOUND_MIN,
            MESH_N_LOW,
            MESH_N,
            MESH_N_HIGH
        ));
        assert!(!check_mesh_params(3, 4, 5, 12), "2*outbound_min > n");
        assert!(!check_mesh_params(1, 6, 5, 12), "low > n");
    }
}
