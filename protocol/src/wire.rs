//! Messages nodes exchange. Gossip carries [`Message::Announce`],
//! [`Message::Refresh`] and [`Message::Invalidate`]; request-response carries
//! [`Message::Hello`], [`Message::Lookup`], [`Message::FetchBody`] and
//! [`Message::Members`] with their replies. All of them travel sealed (see
//! [`crate::seal`]) inside an envelope with [`MESSAGE_VERSION`].
//!
//! Every request names its sender, its recipient and a nonce inside the seal
//! ([`Addressing`]): a captured request is refused by anyone but its recipient, and by
//! the recipient when replayed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::entry::{Entry, EntryMeta};
use crate::request::{CacheKey, CanonicalRequest};

/// Version of the CBOR message schema; a receiver refuses any other. Version 2 added
/// addressing to requests, the hello exchange, member lists, and the `Redirect` and
/// `Busy` lookup answers; version 3 added owner leases (`Lookup::lease`,
/// `Lookup::release`, `LookupReply::Lease`); version 4 added GraphQL queries
/// (`CanonicalRequest::graphql`), which a version 3 node would take for a REST `POST`,
/// and the rate-limit ledger (`Message::Ledger`); version 5 made the hello and its reply
/// carry the sender's reachability ([`Hello`]). Later additions that older version 5
/// nodes can ignore come as defaulted fields (`Hello::direct_to_all`,
/// `MemberAddr::reach`).
pub const MESSAGE_VERSION: u16 = 5;

/// Bodies up to this size travel inline in a gossip announce; larger ones are
/// announced without a body and fetched by CID. Gossipsub pushes every message to each
/// mesh peer (so each byte crosses the network about N x D times), while a fetch by CID
/// moves a body once per node: single objects (a few KB) ride along, list pages do not.
pub const INLINE_BODY_LIMIT: usize = 16 * 1024;
/// Largest sealed gossip message a node publishes or accepts (an inline announce is at
/// most 4/3 of [`INLINE_BODY_LIMIT`] plus its metadata).
pub const MAX_GOSSIP_MESSAGE: usize = 64 * 1024;
/// Largest sealed body reply (an 8 MiB body in base64 plus overhead): the only message
/// this large, and only members are ever sent one.
pub const MAX_RR_MESSAGE: usize = 12 * 1024 * 1024;
/// Largest sealed request of any kind, and largest reply other than a body: a lookup
/// carries a canonical request (path and query are bounded well below this), a lookup
/// reply at most an inline body ([`INLINE_BODY_LIMIT`]) with its metadata, a member
/// list at most [`MAX_MEMBER_LIST`] addresses.
pub const MAX_SMALL_MESSAGE: usize = 96 * 1024;
/// Longest peer id (multihash bytes) a message may name.
pub const MAX_PEER_ID_LEN: usize = 64;
/// Most members one member list carries.
pub const MAX_MEMBER_LIST: usize = 64;
/// Most addresses listed per member, and the longest address (bytes).
pub const MAX_MEMBER_ADDRS: usize = 4;
/// Longest multiaddr (bytes) in a member list.
pub const MAX_ADDR_LEN: usize = 128;

/// Who sends a request to whom, with a nonce, all inside the seal. The recipient
/// checks that `from` is the peer the (noise-authenticated) connection belongs to and
/// `to` is itself, and refuses a nonce it has seen from that sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addressing {
    /// Sender's peer id bytes.
    pub from: ByteBuf,
    /// Recipient's peer id bytes.
    pub to: ByteBuf,
    /// Random per request.
    pub nonce: u64,
}

impl Addressing {
    /// Is this addressed from `from` to `to` (peer id bytes), within size bounds?
    pub fn is_between(&self, from: &[u8], to: &[u8]) -> bool {
        self.from.len() <= MAX_PEER_ID_LEN
            && self.from.as_slice() == from
            && self.to.as_slice() == to
    }

    /// The addressing of the answer to this request: the same nonce, the other way.
    pub fn reversed(&self) -> Self {
        Self {
            from: self.to.clone(),
            to: self.from.clone(),
            nonce: self.nonce,
        }
    }
}

/// A member as another member sees it: who, where to dial it, and the reachability it
/// announced in its hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddr {
    /// Peer id bytes.
    pub peer: ByteBuf,
    /// Multiaddr bytes (at most [`MAX_MEMBER_ADDRS`], each at most [`MAX_ADDR_LEN`]).
    pub addrs: Vec<ByteBuf>,
    /// What the member said of its reachability (`Unknown` from senders before it was
    /// listed, or before the member said). A newcomer dials the public members first:
    /// they are the owners it will ask.
    #[serde(default)]
    pub reach: Reach,
}

/// Whether a node takes connections from anywhere its fleet may be, as AutoNAT found.
/// Owners are chosen among the publicly reachable members when there are any: a member
/// behind NAT may be out of reach of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// Not found out yet (or nobody could tell: no member to ask).
    #[default]
    Unknown,
    /// Members dialled it back at an address they see: anyone can reach it.
    Public,
    /// Dial-backs failed: it is behind NAT or a firewall.
    Private,
}

/// The hello and its reply: the addressing whose nonce proves the key, and the
/// sender's standing: its reachability and whether it is directly connected to every
/// member (sent again when either changes; owners are chosen by them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Who greets whom, with the nonce to seal back.
    pub addr: Addressing,
    /// The sender's reachability.
    pub reach: Reach,
    /// Whether the sender holds a direct (not relayed) connection to every member it
    /// knows: with no public member, members that said `false` own no keys while any
    /// said `true`. `None`: not found out yet (no member, or a newcomer's grace), or a
    /// sender from before the field existed; such a member is not left out.
    #[serde(default)]
    pub direct_to_all: Option<bool>,
    /// What the sender knows of the rate-limit budgets' current windows (at most
    /// [`crate::ledger::MAX_LEDGER_ENTRIES`], checked like a ledger message's), so that
    /// a member that just joined knows them before its first request. Empty from senders
    /// before the field existed.
    #[serde(default)]
    pub ledger: Vec<crate::ledger::BudgetEntry>,
    /// The budget the sender's own token spends (its id, keyed like a ledger entry's;
    /// [`crate::ledger::BUDGET_ID_LEN`] bytes), so that members sharing a token know
    /// each other before any of them has spent it. `None`: no token, or a sender from
    /// before the field existed.
    #[serde(default)]
    pub spends: Option<crate::ledger::ByteBuf>,
}

/// An entry announced to the mesh: with its body when small, else only its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The entry's metadata.
    pub meta: EntryMeta,
    /// The body, when at most [`INLINE_BODY_LIMIT`] bytes.
    pub body: Option<Bytes>,
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
    /// Sender, recipient, nonce.
    pub addr: Addressing,
    /// The key asked for.
    pub key: CacheKey,
    /// The request behind it, so that the key's owner can fetch it once for everyone.
    pub request: CanonicalRequest,
    /// Ask the receiver to fetch upstream when it has nothing (sent to the key's owner).
    pub fetch: bool,
    /// The asker fetches with its own credential (a local client's token): it asks the
    /// key's owner for the lease, the right to be the one fleet member fetching it now.
    #[serde(default)]
    pub lease: bool,
    /// The asker held the lease and its fetch gave nothing to share: pass it on.
    #[serde(default)]
    pub release: bool,
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
    /// The receiver does not own the key in its view of the members: this one does
    /// (peer id bytes). Asked once, then the asker falls back.
    Redirect(ByteBuf),
    /// The receiver will not do more for this asker now: fall back at once.
    Busy,
    /// The asker holds the lease: fetch upstream now and announce the answer. Until it
    /// announces, releases or its lease expires, other askers are told `Pending`.
    Lease,
}

/// Ask for a body by content id (after an announce without body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBody {
    /// Sender, recipient, nonce.
    pub addr: Addressing,
    /// Which entry.
    pub key: CacheKey,
    /// Which body.
    pub cid: ByteBuf,
}

/// Answer to [`FetchBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyReply {
    /// The body; the receiver verifies it against the CID it asked for.
    Found(Bytes),
    /// Not held (evicted, or replaced by a newer version).
    NotFound,
}

/// Members exchange: "here are members I know (perhaps only a newcomer), which do
/// you know?" Each side dials the ones it lacks, so views fill from either end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersRequest {
    /// Sender, recipient, nonce.
    pub addr: Addressing,
    /// Members the sender knows (at most [`MAX_MEMBER_LIST`]).
    pub known: Vec<MemberAddr>,
    /// The sender has just joined: introduce it to your members (done at most once
    /// per connection).
    pub new: bool,
}

/// Answer to [`Message::Members`]: the members the answerer has admitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// At most [`MAX_MEMBER_LIST`].
    pub members: Vec<MemberAddr>,
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
    /// Request: prove you hold the mesh key. Answered with [`Message::HelloReply`]
    /// carrying the same nonce the other way, which only a key holder can seal.
    Hello(Hello),
    /// Response to [`Message::Hello`].
    HelloReply(Hello),
    /// Request (members only): these members I know; which do you know?
    Members(MembersRequest),
    /// Response to [`Message::Members`].
    MemberList(MemberList),
    /// Gossip: what a member learned of the rate-limit budgets it spends.
    Ledger(crate::ledger::Ledger),
}

impl Message {
    /// The addressing of a request (`None` for gossip and replies).
    pub fn addressing(&self) -> Option<&Addressing> {
        match self {
            Message::Lookup(l) => Some(&l.addr),
            Message::FetchBody(f) => Some(&f.addr),
            Message::Hello(h) => Some(&h.addr),
            Message::Members(m) => Some(&m.addr),
            _ => None,
        }
    }
}

/// The versioned wrapper that is CBOR-encoded and sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub v: u16,
    pub msg: Message,
}

/// The same wrapper for sealing, borrowing the message: a body is not copied to be
/// encoded.
#[derive(Serialize)]
pub(crate) struct EnvelopeRef<'a> {
    pub v: u16,
    pub msg: &'a Message,
}

/// Only the version, decoded when a message fails to decode so that a message of
/// another version is reported as such rather than as garbage.
#[derive(Deserialize)]
pub(crate) struct VersionProbe {
    pub v: u16,
}
