//! Library-level node configuration (the CLI maps flags and env vars onto this).

use std::path::PathBuf;
use std::time::Duration;

use ghmesh_protocol::MeshKeys;
use ghmesh_store::Limits;
use libp2p::Multiaddr;

/// How much of the mesh a node uses. `Mesh` is ghmesh; `Broadcast` reproduces the
/// push-only design of the earlier tool (announce on fetch, no lookups, no coalescing
/// across nodes) so simulations can compare the two with the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshMode {
    /// Announce, look up peers on a miss, coalesce with the key's owner.
    Mesh,
    /// Announce only.
    Broadcast,
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Holds `cache.redb` and `identity.key`.
    pub data_dir: PathBuf,
    /// Mesh keys; `None` runs local-only (no P2P).
    pub keys: Option<MeshKeys>,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap addresses.
    pub bootstrap: Vec<Multiaddr>,
    /// Extra external addresses to advertise.
    pub external: Vec<Multiaddr>,
    /// mDNS discovery.
    pub mdns: bool,
    /// Fixed freshness in seconds (`--ttl`), else per-endpoint defaults.
    pub ttl: Option<u64>,
    /// Store limits.
    pub limits: Limits,
    /// Total budget for asking peers on a miss before going upstream.
    pub lookup_timeout: Duration,
    /// How long to wait for an owner that answered `Pending`.
    pub pending_wait: Duration,
    /// Whole upstream request timeout.
    pub upstream_timeout: Duration,
    /// Mesh or broadcast (simulations).
    pub mode: MeshMode,
    /// Gossipsub heartbeat.
    pub heartbeat: Duration,
    /// Rendezvous lookup interval.
    pub discovery_interval: Duration,
    /// mDNS query interval.
    pub mdns_query_interval: Duration,
}

impl NodeConfig {
    /// Defaults for a daemon with its data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            keys: None,
            listen: vec!["/ip4/0.0.0.0/tcp/9100"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty())],
            bootstrap: Vec::new(),
            external: Vec::new(),
            mdns: true,
            ttl: None,
            limits: Limits::default(),
            lookup_timeout: Duration::from_millis(250),
            pending_wait: Duration::from_secs(15),
            upstream_timeout: Duration::from_secs(20),
            mode: MeshMode::Mesh,
            heartbeat: Duration::from_secs(1),
            discovery_interval: Duration::from_secs(10),
            mdns_query_interval: Duration::from_secs(2),
        }
    }

    /// Shorter timers for tests and simulations on loopback.
    pub fn fast(mut self) -> Self {
        self.heartbeat = Duration::from_millis(200);
        self.discovery_interval = Duration::from_millis(300);
        self.mdns_query_interval = Duration::from_millis(500);
        self
    }
}
