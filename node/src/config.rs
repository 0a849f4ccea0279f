//! Library-level node configuration (the CLI maps flags and env vars onto this).

use std::path::PathBuf;
use std::time::Duration;

use ghmesh_protocol::MeshKeys;
use ghmesh_store::Limits;
use libp2p::Multiaddr;

use crate::clock::{self, SharedClock};

pub use crate::policy::MeshMode;

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
    /// Whether to serve as a circuit relay for members (`--relay`).
    pub relay: crate::network::RelayMode,
    /// `--public-dht`: the public DHT's bootstrap addresses to enter it through, as a
    /// rendezvous; `None` (the default) never contacts a public node.
    pub public_dht: Option<Vec<Multiaddr>>,
    /// mDNS discovery.
    pub mdns: bool,
    /// Fixed freshness in seconds (`--ttl`), else per-endpoint defaults.
    pub ttl: Option<u64>,
    /// Freshness of GraphQL answers in seconds (`--graphql-ttl`), else 60.
    pub graphql_ttl: Option<u64>,
    /// Store limits.
    pub limits: Limits,
    /// Every timeout the node applies.
    pub deadlines: Deadlines,
    /// Mesh or broadcast (simulations).
    pub mode: MeshMode,
    /// Gossipsub heartbeat.
    pub heartbeat: Duration,
    /// Rendezvous lookup interval.
    pub discovery_interval: Duration,
    /// mDNS query interval.
    pub mdns_query_interval: Duration,
    /// Where the node reads wall-clock time (freshness, message age).
    pub clock: SharedClock,
    /// Most requests in flight to GitHub at once (GitHub allows 100 across REST and
    /// GraphQL per user, and asks for serial requests).
    pub upstream_concurrency: usize,
}

impl NodeConfig {
    /// The freshness settings, as entries are made and adopted.
    pub fn ttl_settings(&self) -> ghmesh_protocol::TtlSettings {
        ghmesh_protocol::TtlSettings {
            rest: self.ttl,
            graphql: self.graphql_ttl,
        }
    }

    /// Defaults for a daemon with its data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            keys: None,
            listen: ["/ip4/0.0.0.0/tcp/9100", "/ip4/0.0.0.0/udp/9100/quic-v1"]
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            bootstrap: Vec::new(),
            external: Vec::new(),
            relay: crate::network::RelayMode::Auto,
            public_dht: None,
            mdns: true,
            ttl: None,
            graphql_ttl: None,
            limits: Limits::default(),
            deadlines: Deadlines::default(),
            mode: MeshMode::Mesh,
            heartbeat: Duration::from_secs(1),
            discovery_interval: Duration::from_secs(10),
            mdns_query_interval: Duration::from_secs(2),
            clock: clock::system(),
            upstream_concurrency: 8,
        }
    }

    /// Shorter timers for tests and simulations on loopback.
    pub fn fast(mut self) -> Self {
        self.heartbeat = Duration::from_millis(200);
        self.discovery_interval = Duration::from_millis(300);
        self.mdns_query_interval = Duration::from_millis(500);
        self.deadlines.hello = Duration::from_secs(2);
        self.deadlines.ping_interval = Duration::from_secs(1);
        self.deadlines.ping_timeout = Duration::from_secs(5);
        self.deadlines.autonat_retry = Duration::from_secs(1);
        self
    }
}

/// Every wait of the node. Each has a bound, so that no peer, upstream or disk can
/// hold a request (or shutdown) forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// How long to wait for a member's answer to a lookup before its latency is known;
    /// then twice its recent slowest answer, within `lookup_floor..=lookup_ceiling`.
    pub lookup: Duration,
    /// Least time a lookup is given.
    pub lookup_floor: Duration,
    /// Most time a lookup is given.
    pub lookup_ceiling: Duration,
    /// Every connection is pinged this often.
    pub ping_interval: Duration,
    /// A ping unanswered this long closes the connection.
    pub ping_timeout: Duration,
    /// How soon after start AutoNAT first asks members to dial us back, and how often
    /// it asks again until it is sure.
    pub autonat_retry: Duration,
    /// How long after its start a node with a bootstrap address (or a connection being
    /// greeted) and no member yet waits for its first member before it reads as if
    /// alone (see [`crate::policy::awaiting_first_member`]).
    pub first_member: Duration,
    /// How long a peer has to answer our hello before it is left unadmitted (it is
    /// greeted again when it reconnects).
    pub hello: Duration,
    /// How long to wait for an owner that answered `Pending`.
    pub pending_wait: Duration,
    /// A whole upstream request.
    pub upstream: Duration,
    /// Added to the sum of the above for readers joining a flight: the leader's own
    /// bounds end it first, this only guards against a lost wake-up.
    pub flight_slack: Duration,
    /// Fetching a body by CID: larger than a lookup (it may be megabytes), but bounded.
    pub body_fetch: Duration,
    /// First re-poll of an owner that said `Pending` and whose announce has not come.
    pub repoll_first: Duration,
    /// Re-polls back off up to this interval.
    pub repoll_max: Duration,
    /// Floor of a re-poll lookup's own timeout: the owner is busy fetching.
    pub repoll_lookup_min: Duration,
    /// Read recency is written with writes; an idle node writes it this often.
    pub recency_flush: Duration,
    /// How long `shutdown` lets background work finish before ending it.
    pub shutdown: Duration,
    /// Lifetime of our rendezvous provider record in the DHT.
    pub provider_ttl: Duration,
    /// After a store I/O error, how long reopening is retried before the node gives up
    /// (and the daemon exits non-zero).
    pub store_reopen: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            // Generous before anything is measured: a busy owner that answers in 400 ms
            // is still the cheapest way to the answer, while a dead one is skipped
            // after this once (probation) and a measured fast one after 50 ms.
            lookup: Duration::from_secs(1),
            lookup_floor: Duration::from_millis(50),
            lookup_ceiling: Duration::from_secs(1),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(10),
            autonat_retry: Duration::from_secs(5),
            first_member: Duration::from_secs(1),
            hello: Duration::from_secs(5),
            pending_wait: Duration::from_secs(15),
            upstream: Duration::from_secs(20),
            flight_slack: Duration::from_secs(5),
            body_fetch: Duration::from_secs(5),
            repoll_first: Duration::from_millis(50),
            repoll_max: Duration::from_secs(1),
            repoll_lookup_min: Duration::from_millis(500),
            recency_flush: Duration::from_secs(10),
            shutdown: Duration::from_secs(5),
            provider_ttl: Duration::from_secs(3600),
            store_reopen: Duration::from_secs(5),
        }
    }
}

impl Deadlines {
    /// The longest the peer phase of a miss asks owners: each owner asked gets at
    /// most the ceiling, and at most `MAX_OWNER_ASKS` are asked.
    pub fn peer_asks(&self) -> Duration {
        self.lookup_ceiling.max(self.lookup) * crate::limits::MAX_OWNER_ASKS as u32
    }

    /// The longest a reader waits on a flight it joined.
    pub fn flight(&self) -> Duration {
        self.first_member
            + self.upstream
            + self.pending_wait
            + self.peer_asks()
            + self.lookup
            + self.flight_slack
    }

    /// The timers of a miss's peer phase ([`crate::policy::resolve`]).
    pub fn timers(&self) -> crate::policy::resolve::Timers {
        crate::policy::resolve::Timers {
            lookup: self.lookup,
            body_fetch: self.body_fetch,
            pending_wait: self.pending_wait,
            repoll_first: self.repoll_first,
            repoll_max: self.repoll_max,
            repoll_lookup_min: self.repoll_lookup_min,
            first_member: self.first_member,
            budget: self.budget_rule(),
        }
    }

    /// How lookup budgets adapt.
    pub fn budget_rule(&self) -> crate::policy::book::BudgetRule {
        crate::policy::book::BudgetRule {
            initial: self.lookup,
            floor: self.lookup_floor,
            ceiling: self.lookup_ceiling.max(self.lookup_floor),
        }
    }
}
