//! Every bound on what peers (and a busy fleet) can make a node hold, wait for or do,
//! in one place. Each is enforced where the work happens; the comment says where and
//! what a peer that hits it sees.

use std::time::Duration;

// --- Connections and streams (network layer) ---

/// Most peers we keep connections with; beyond it discovery stops dialling.
pub const MAX_PEERS: usize = 256;
/// Most established inbound connections (libp2p connection limits): a stranger cannot
/// fill our connection table.
pub const MAX_INBOUND_CONNECTIONS: u32 = 192;
/// Most inbound connections still handshaking.
pub const MAX_PENDING_INBOUND_CONNECTIONS: u32 = 32;
/// Most connections per peer: two nodes that dial each other at once keep both, and
/// beside them a relayed circuit and an AutoNAT dial-back, which is a new connection
/// by design (with two, a member that had judged us once refused every later dial-back
/// at its own limit, and we were called private: the NAT lab caught it).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Most yamux streams open on one connection.
pub const MAX_STREAMS_PER_CONNECTION: usize = 64;
/// Most concurrent lookup/hello/member streams per connection (request-response).
pub const MAX_SMALL_STREAMS: usize = 32;
/// Most concurrent body streams per connection.
pub const MAX_BODY_STREAMS: usize = 8;
/// Inbound requests waiting for the node's answer, in total; beyond it they are
/// dropped unanswered (the asker's request fails).
pub const MAX_PENDING_INBOUND: usize = 1024;
/// The same, per peer.
pub const MAX_PENDING_INBOUND_PER_PEER: usize = 64;

// --- Frames (checked before a byte of the payload is buffered) ---

/// Requests of every kind, and every reply but a body.
pub const MAX_SMALL_FRAME: usize = ghmesh_protocol::wire::MAX_SMALL_MESSAGE;
/// Body replies, read only on the body protocol, which we only use towards members.
pub const MAX_BODY_FRAME: usize = ghmesh_protocol::wire::MAX_RR_MESSAGE;
/// Gossip messages (gossipsub's transmit limit is this plus framing).
pub const MAX_GOSSIP_FRAME: usize = ghmesh_protocol::wire::MAX_GOSSIP_MESSAGE;

// --- Sealed messages ---

/// Oldest sealed gossip accepted: replaying captured announcements later is refused.
pub const GOSSIP_MAX_AGE_SECS: u64 = 300;
/// Oldest sealed request accepted; nonces are remembered for this long plus the
/// allowed clock skew, so a replay inside the window is caught by its nonce and one
/// outside it by its age.
pub const REQUEST_MAX_AGE_SECS: u64 = 60;
/// How long a request nonce is remembered.
pub const NONCE_WINDOW_MS: u64 = (REQUEST_MAX_AGE_SECS + 60) * 1000;
/// Most nonces remembered per peer; a peer past it gets `Busy` until old ones expire.
pub const MAX_NONCES_PER_PEER: usize = 4096;

// --- Work per peer ---

/// Requests per second a member may send us (token bucket); excess gets `Busy`.
pub const REQUESTS_PER_SEC: f64 = 200.0;
/// Burst of requests above the rate.
pub const REQUEST_BURST: f64 = 400.0;
/// Upstream fetches per second a member may make us start on its behalf.
pub const FETCHES_PER_SEC: f64 = 10.0;
/// Burst of such fetches.
pub const FETCH_BURST: f64 = 20.0;
/// Fetches on one member's behalf in flight at once.
pub const MAX_FETCHES_PER_PEER: usize = 8;
/// Keys being resolved at once on this node; beyond it peers' fetch requests get
/// `Busy`.
pub const MAX_INFLIGHT: usize = 4096;
/// Owners asked to fetch on one miss (the first, and the next after a timeout or a
/// redirect); then upstream.
pub const MAX_OWNER_ASKS: usize = 2;
/// Members asked (besides the owner) on a miss, without asking them to fetch.
pub const EXTRA_ASKS: usize = 2;

// --- Standing (liveness) ---

/// First probation after a member leaves a lookup unanswered; doubles with each
/// further failure.
pub const PROBATION_BASE: Duration = Duration::from_secs(2);
/// Longest probation.
pub const PROBATION_MAX: Duration = Duration::from_secs(300);
/// A member with no failure for this long starts again from a clean record.
pub const STANDING_DECAY: Duration = Duration::from_secs(600);
/// A protocol violation (a reply that fails its checks) counts as this many failures.
pub const VIOLATION_WEIGHT: u32 = 4;

// --- Client requests (the local HTTP API) ---

/// Largest request body accepted (non-GET requests passed through).
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
/// Largest total size of request headers accepted.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

// --- Memory ---

/// Bodies announced without data are pulled at once up to this size (larger ones when
/// first read): one transfer per node, instead of gossip's push to every mesh peer.
pub const PREFETCH_MAX_BODY: u64 = 512 * 1024;

/// Sealed body replies kept for the other members pulling the same body (node
/// `reply_cache`): how many, their total size, and how long one is reused. The age is
/// far inside every receiver's window ([`GOSSIP_MAX_AGE_SECS`]), and short enough that
/// a body replaced or evicted here is soon no longer served.
pub const REPLY_CACHE_MAX_ENTRIES: usize = 256;
/// See [`REPLY_CACHE_MAX_ENTRIES`].
pub const REPLY_CACHE_MAX_BYTES: usize = 32 * 1024 * 1024;
/// See [`REPLY_CACHE_MAX_ENTRIES`].
pub const REPLY_CACHE_MAX_AGE_SECS: u64 = 10;

/// Entries announced without their body, remembered (with who has them).
pub const BODYLESS_MAX_ENTRIES: usize = 8192;
/// Their total size (metadata as sent), least recently announced dropped first.
pub const BODYLESS_MAX_BYTES: usize = 16 * 1024 * 1024;

// --- Queues (everything between tasks is bounded) ---

/// Capacity of the command channel (handle -> loop).
pub const COMMAND_QUEUE: usize = 1024;
/// Capacity of the event channel (loop -> node). When full, gossip is dropped (its
/// validation times out) and requests are refused: the loop never blocks on the node.
pub const EVENT_QUEUE: usize = 4096;
/// Most providers dialled per rendezvous lookup.
pub const MAX_PROVIDER_DIALS: usize = 16;
/// Writes waiting for the group commit.
pub const WRITE_QUEUE: usize = 4096;
/// Announced bodies waiting to be pulled; beyond it they are fetched when read.
pub const PREFETCH_QUEUE: usize = 1024;
/// Most written-to paths remembered (see `Signals::written`).
pub const MAX_WRITTEN_PATHS: usize = 4096;
/// Keys stored while no peer was subscribed to the topic, announced when one is; beyond
/// it the oldest are forgotten (members still find them by lookup while starting).
pub const MAX_UNANNOUNCED: usize = 1024;
/// Store notifications buffered for slow subscribers (they miss events, never block).
pub const STORED_EVENTS: usize = 4096;
/// Upstream requests that may wait for a slot, per request allowed in flight; beyond
/// it a read gets `Busy` (503) at once instead of queueing without end.
pub const UPSTREAM_QUEUE_PER_SLOT: usize = 32;
/// Most addresses taken from one resolution of all DNS seeds (a huge record set must
/// not turn into a dial storm).
pub const MAX_SEED_ADDRS: usize = 64;
/// Body pulls in flight at once.
pub const PREFETCH_CONCURRENCY: usize = 8;
/// Group commit: most writes per transaction.
pub const MAX_WRITE_BATCH: usize = 256;
/// Most rate-limit budgets × resources the ledger keeps; the window that ended first
/// goes first.
pub const MAX_BUDGETS: usize = 1024;
/// How often a node gossips what changed in its rate-limit ledger, however busy: one
/// message a second, beside the urgent ones below.
pub const LEDGER_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Least time between two urgent ledger messages (a refusal, a budget down to the
/// reserve, or every answer on a budget near its end, which is shared out by the
/// figures): at most ten a second per node however many answers arrive.
pub const LEDGER_URGENT_GAP: std::time::Duration = std::time::Duration::from_millis(100);
/// Most holds remembered (tokens × resources); expired ones go first.
pub const MAX_HOLDS: usize = 4096;
/// Lookup latencies remembered per peer for its budget.
pub const LATENCY_SAMPLES: usize = 32;
/// Answers measured before a member's budget follows them: a few fast answers before
/// a burst must not shrink it to the floor just as the burst slows everyone down.
pub const LATENCY_MIN_SAMPLES: usize = 8;

// --- Fixed safety nets behind the `Deadlines` ---
//
// Not tunable on purpose: each only bounds work whose real deadline is one of the
// `Deadlines` (a lookup budget, the upstream timeout, shutdown), so that a bug or a
// silent peer cannot keep a stream, a query or a caller alive for ever.

/// A Kademlia query (provider lookup, bootstrap) is abandoned after this.
pub const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// A lookup, hello or member-list stream is closed after this, whatever the asker's
/// own (shorter) budget.
pub const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// A body stream (up to the body frame size) is closed after this.
pub const BODY_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one attempt to reopen the store may wait for the database lock.
pub const STORE_REOPEN_ATTEMPT: Duration = Duration::from_secs(1);
/// Every wait on the network loop is bounded: a wedged loop must not wedge callers.
pub const HANDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection with nothing open closes after this. Gossipsub keeps a connection
/// alive only while the peer is in our mesh; lookups need connections to every member,
/// and libp2p's default (10 s) would close them.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);
/// Start-up fails when the listeners report no address within this.
pub const LISTEN_WAIT: Duration = Duration::from_secs(10);

// --- Leases ---

/// Most leases an owner keeps granted at once (one per key being fetched by a member).
pub const MAX_LEASES: usize = 4096;

/// Longest a TCP dial (connect, noise, yamux) or an inbound handshake may take. QUIC
/// has its own handshake timeout (5 s).
pub const TCP_DIAL_TIMEOUT: Duration = Duration::from_secs(10);
