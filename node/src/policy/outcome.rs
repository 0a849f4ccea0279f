//! What the read path's decisions are about: how an answer was produced, and how much
//! of the mesh a node uses. Here, at the bottom, so that the decisions depend on
//! nothing above them.

/// How a response was produced: the `x-ghmesh-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// Fresh, local, fetched by this node.
    Hit,
    /// Fresh, the entry came from a peer.
    Peer,
    /// Fetched upstream, quota spent.
    Miss,
    /// Expired, upstream answered 304.
    Revalidated,
    /// Joined an in-flight fetch here or on a peer.
    Coalesced,
    /// Expired, upstream failed, old copy served.
    Stale,
    /// Not cacheable, passed through.
    Bypass,
    /// Not sent: the budget is held (a refusal here or in the fleet, or the reserve),
    /// no copy to serve; GitHub's shape of refusal answered instead.
    Held,
}

impl CacheStatus {
    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Peer => "peer",
            Self::Miss => "miss",
            Self::Revalidated => "revalidated",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
            Self::Held => "held",
        }
    }
}

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
