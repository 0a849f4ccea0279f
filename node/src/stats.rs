//! Counters, kept as prometheus-client metrics so that `/_ghmesh/stats` and
//! `/_ghmesh/metrics` read the same numbers.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::upstream::RateLimit;

/// The node's counters.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Fresh, from the local store, fetched by this node.
    pub hits: Counter,
    /// Fresh, from the local store or a lookup, the entry came from a peer.
    pub peer_hits: Counter,
    /// Fetched upstream with quota spent.
    pub misses: Counter,
    /// Upstream answered 304.
    pub revalidated: Counter,
    /// Joined another in-flight fetch (here or on a peer).
    pub coalesced: Counter,
    /// Expired copy served because upstream failed.
    pub stale_served: Counter,
    /// Passed through uncached.
    pub bypass: Counter,
    /// Every request sent upstream.
    pub upstream_calls: Counter,
    /// Upstream 304 answers.
    pub upstream_304: Counter,
    /// Peer messages that failed to open or validate.
    pub rejected_messages: Counter,
    /// Lookups sent to peers.
    pub lookups_sent: Counter,
    /// Lookups answered with an entry.
    pub lookups_found: Counter,
    /// Announces published.
    pub announces_sent: Counter,
    /// Valid announces received.
    pub announces_received: Counter,
    /// Bodies fetched by CID after an announce without body.
    pub bodies_fetched: Counter,
    /// Peer announces not stored because the writer was behind.
    pub dropped_writes: Counter,
}

impl Counters {
    /// Registers every counter under `ghmesh_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("ghmesh");
        let all: [(&str, &str, &Counter); 16] = [
            (
                "hits",
                "Fresh local hits of entries this node fetched",
                &self.hits,
            ),
            (
                "peer_hits",
                "Fresh hits of entries that came from peers",
                &self.peer_hits,
            ),
            (
                "misses",
                "Requests fetched upstream with quota spent",
                &self.misses,
            ),
            (
                "revalidated",
                "Expired entries revalidated by a 304",
                &self.revalidated,
            ),
            (
                "coalesced",
                "Requests that joined an in-flight fetch",
                &self.coalesced,
            ),
            (
                "stale_served",
                "Expired entries served because upstream failed",
                &self.stale_served,
            ),
            ("bypass", "Requests passed through uncached", &self.bypass),
            (
                "upstream_calls",
                "Requests sent upstream",
                &self.upstream_calls,
            ),
            ("upstream_304", "Upstream 304 answers", &self.upstream_304),
            (
                "rejected_messages",
                "Peer messages rejected",
                &self.rejected_messages,
            ),
            ("lookups_sent", "Lookups sent to peers", &self.lookups_sent),
            (
                "lookups_found",
                "Lookups answered with an entry",
                &self.lookups_found,
            ),
            (
                "announces_sent",
                "Announces published",
                &self.announces_sent,
            ),
            (
                "announces_received",
                "Valid announces received",
                &self.announces_received,
            ),
            (
                "bodies_fetched",
                "Bodies fetched by CID",
                &self.bodies_fetched,
            ),
            (
                "dropped_writes",
                "Peer announces dropped while the writer was behind",
                &self.dropped_writes,
            ),
        ];
        for (name, help, c) in all {
            r.register(name, help, c.clone());
        }
    }

    /// Requests answered without spending quota.
    pub fn saved(&self) -> u64 {
        self.hits.get()
            + self.peer_hits.get()
            + self.revalidated.get()
            + self.coalesced.get()
            + self.stale_served.get()
    }
}

/// `/_ghmesh/stats` (contract §4), plus a few extra fields.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub peer_id: String,
    pub p2p: bool,
    pub connected_peers: usize,
    pub mesh_peers: usize,
    pub members: usize,
    pub entries: u64,
    pub bytes: u64,
    pub hits: u64,
    pub peer_hits: u64,
    pub misses: u64,
    pub revalidated: u64,
    pub coalesced: u64,
    pub stale_served: u64,
    pub bypass: u64,
    pub upstream_calls: u64,
    pub upstream_304: u64,
    pub api_calls_saved: u64,
    pub hit_rate: f64,
    pub rejected_messages: u64,
    pub lookups_sent: u64,
    pub lookups_found: u64,
    pub announces_sent: u64,
    pub announces_received: u64,
    pub bodies_fetched: u64,
    pub dropped_writes: u64,
    pub dropped_events: u64,
    pub rate_limit: RateLimit,
    pub listen: Vec<String>,
}

/// Share of answered requests that spent no quota, in 0..1.
pub fn hit_rate(saved: u64, misses: u64) -> f64 {
    let total = saved + misses;
    if total == 0 {
        0.0
    } else {
        saved as f64 / total as f64
    }
}
