//! Messages nodes exchange. Gossip carries [`Message::Announce`] and
//! [`Message::Refresh`]; request-response carries [`Message::Lookup`] /
//! [`Message::FetchBody`] and their replies. All of them travel sealed (see
//! [`crate::seal`]) inside an envelope with [`MESSAGE_VERSION`].

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::entry::{Entry, EntryMeta};
use crate::request::{CacheKey, CanonicalRequest};

/// Version of the CBOR message schema; a receiver refuses any other.
pub const MESSAGE_VERSION: u16 = 1;

/// Bodies up to this size travel inline in a gossip announce; larger ones are
/// announced without a body and fetched by CID. Gossipsub pushes every message to each
/// mesh peer (so each byte crosses the network about N x D times), while a fetch by CID
/// moves a body once per node: single objects (a few KB) ride along, list pages do not.
pub const INLINE_BODY_LIMIT: usize = 16 * 1024;
/// Largest sealed gossip message a node publishes or accepts (an inline announce is at
/// most 4/3 of [`INLINE_BODY_LIMIT`] plus its metadata).
pub const MAX_GOSSIP_MESSAGE: usize = 64 * 1024;
/// Largest sealed request-response message (an 8 MiB body in base64 plus overhead).
pub const MAX_RR_MESSAGE: usize = 12 * 1024 * 1024;

/// An entry announced to the mesh: with its body when small, else only its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The entry's metadata.
    pub meta: EntryMeta,
    /// The body, when at most [`INLINE_BODY_LIMIT`] bytes.
    pub body: Option<ByteBuf>,
}

impl Announce {
    /// Announce for an entry, inlining the body when small enough.
    pub fn of(entry: &Entry) -> Self {
        Self {
            meta: entry.meta.clone(),
            body: (entry.body.len() <= INLINE_BODY_LIMIT).then(|| entry.body.clone()),
        }
    }

    /// The full entry, when the body travelled inline.
    pub fn into_entry(self) -> Result<Entry, Box<EntryMeta>> {
        match self.body {
            Some(body) => Ok(Entry {
                meta: self.meta,
                body,
            }),
            None => Err(Box::new(self.meta)),
        }
    }
}

/// After a 304: the same body (CID) is fresh until a later time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    /// Which entry.
    pub key: CacheKey,
    /// The body the 304 confirmed; a receiver holding another body ignores this.
    pub cid: ByteBuf,
    /// When the 304 came, unix ms.
    pub fetched_at_ms: u64,
    /// New freshness, unix ms.
    pub fresh_until_ms: u64,
}

/// Most paths one [`Invalidate`] names.
pub const MAX_INVALIDATED_PATHS: usize = 8;

/// Gossip after a successful write through a node's API (RFC 9111 §4.4): cached reads
/// of these paths (any query, any representation) are stale from `at_ms` on. Nodes
/// before this message existed cannot decode it and reject it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidate {
    /// Absolute request paths, without query.
    pub paths: Vec<String>,
    /// When the write succeeded, unix ms: entries fetched after it are not touched.
    pub at_ms: u64,
}

/// "Do you have this key?" sent on a local miss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    /// The key asked for.
    pub key: CacheKey,
    /// The request behind it, so that the key's owner can fetch it once for everyone.
    pub request: CanonicalRequest,
    /// Ask the receiver to fetch upstream when it has nothing (sent to the key's owner).
    pub fetch: bool,
}

/// Answer to a [`Lookup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupReply {
    /// A fresh copy (body included when at most the inline limit; else fetch by CID).
    Found(Box<Announce>),
    /// Nothing here.
    NotFound,
    /// The receiver is fetching it now: wait for the result instead of fetching too.
    Pending,
}

/// Ask for a body by content id (after an announce without body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBody {
    /// Which entry.
    pub key: CacheKey,
    /// Which body.
    pub cid: ByteBuf,
}

/// Answer to [`FetchBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyReply {
    /// The body; the receiver verifies it against the CID it asked for.
    Found(ByteBuf),
    /// Not held (evicted, or replaced by a newer version).
    NotFound,
}

/// Every message that travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Gossip: a new entry.
    Announce(Announce),
    /// Gossip: an entry revalidated by a 304.
    Refresh(Refresh),
    /// Request: do you have this key?
    Lookup(Lookup),
    /// Response to [`Message::Lookup`].
    LookupReply(LookupReply),
    /// Request: send me this body.
    FetchBody(FetchBody),
    /// Response to [`Message::FetchBody`].
    BodyReply(BodyReply),
    /// Gossip: reads of these paths changed upstream.
    Invalidate(Invalidate),
}

/// The versioned wrapper that is CBOR-encoded and sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub v: u16,
    pub msg: Message,
}

/// Only the version, decoded first so that a message of another version is reported
/// as such rather than as garbage.
#[derive(Deserialize)]
pub(crate) struct VersionProbe {
    pub v: u16,
}
