//! The ghmesh protocol: everything two nodes must agree on, with no I/O.
//!
//! - [`keys`]: the mesh secret and scope become an encryption key, a gossipsub topic
//!   and a Kademlia rendezvous key.
//! - [`seal`]: every byte sent to a peer is a versioned CBOR message inside a Fernet
//!   token; opening checks size, key, integrity, age and version.
//! - [`request`]: the canonical form of a GitHub request and its cache key.
//! - [`entry`]: a cached response with its content id, validation and the rule that
//!   decides which of two versions wins.
//! - [`freshness`]: how long a response stays fresh (contract §6).
//! - [`graphql`]: which operation a GraphQL body runs, whether its answer may be
//!   shared, and the normalised form it is keyed by.
//! - [`ledger`]: the fleet's rate-limit ledger and its merge rule.
//! - [`wire`]: the messages nodes exchange.
//!
//! Times are unix milliseconds passed in by the caller, so every rule here is a pure
//! function that tests can drive with any clock.
#![deny(missing_docs)]

pub mod entry;
pub mod freshness;
pub mod graphql;
pub mod keys;
pub mod ledger;
pub mod request;
pub mod seal;
pub mod wire;

pub use entry::{body_cid, cid_string, merge, Entry, EntryMeta, Merge, PeerRules, ValidationError};
pub use freshness::{freshness_ttl_secs, EndpointClass, TtlSettings};
pub use keys::{token_fingerprint, MeshKeys, PBKDF2_ROUNDS};
pub use request::{
    is_default_json_accept, is_safe_path, varies_by_identity, CacheKey, CanonicalRequest,
    RequestError, GRAPHQL_PATH,
};
pub use seal::{open, seal, OpenError, SealLimits};
pub use wire::{
    Addressing, Announce, BodyReply, FetchBody, Hello, Invalidate, Lookup, LookupReply, MemberAddr,
    MemberList, MembersRequest, Message, Reach, Refresh,
};
