//! Counters, kept as prometheus-client metrics so that `/_ghmesh/stats` and
//! `/_ghmesh/metrics` read the same numbers.
//!
//! Adding a counter is one line in the `counters!` list below (name, help, doc) plus
//! the line that increments it: the struct field, the metric registration and the
//! stats field are all generated from that list.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::upstream::RateLimit;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident: $help:literal, )+) => {
        /// The node's counters.
        #[derive(Debug, Default, Clone)]
        pub struct Counters {
            $( $(#[doc = $doc])+ pub $name: Counter, )+
        }

        /// The counters' values at one moment, as serialised into `/_ghmesh/stats`.
        #[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
        pub struct CounterSnapshot {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        impl Counters {
            /// Registers every counter under `ghmesh_`.
            pub fn register(&self, registry: &mut Registry) {
                let r = registry.sub_registry_with_prefix("ghmesh");
                $( r.register(stringify!($name), $help, self.$name.clone()); )+
            }

            /// Reads every counter.
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot { $( $name: self.$name.get(), )+ }
            }
        }
    };
}

counters! {
    /// Fresh, from the local store, fetched by this node.
    hits: "Fresh local hits of entries this node fetched",
    /// Fresh, from the local store or a lookup, the entry came from a peer.
    peer_hits: "Fresh hits of entries that came from peers",
    /// Fetched upstream with quota spent.
    misses: "Requests fetched upstream with quota spent",
    /// Upstream answered 304.
    revalidated: "Expired entries revalidated by a 304",
    /// Joined another in-flight fetch (here or on a peer).
    coalesced: "Requests that joined an in-flight fetch",
    /// Expired copy served because upstream failed.
    stale_served: "Expired entries served because upstream failed",
    /// Passed through uncached.
    bypass: "Requests passed through uncached",
    /// Rate-limit ledger messages published (at most one a second).
    ledger_sent: "Rate-limit ledger messages published",
    /// Their sealed bytes.
    ledger_bytes_sent: "Bytes of rate-limit ledger messages published",
    /// Rate-limit ledger messages from members, believed.
    ledger_received: "Rate-limit ledger messages received",
    /// GraphQL queries served from the cache (here, from a peer, or by a joined fetch).
    graphql_hits: "GraphQL queries served from the fleet cache",
    /// GraphQL queries fetched upstream for the fleet.
    graphql_misses: "GraphQL queries fetched upstream for the fleet",
    /// GraphQL requests passed through uncached: mutations, per-token queries, and
    /// documents that do not parse.
    graphql_bypassed: "GraphQL requests passed through uncached",
    /// Every request actually sent upstream.
    upstream_calls: "Requests sent upstream",
    /// Requests not sent because their token was held after a rate-limit answer.
    upstream_held: "Requests refused locally by a rate-limit hold",
    /// Requests refused because the upstream queue was full.
    upstream_busy: "Requests refused because the upstream queue was full",
    /// Upstream 304 answers.
    upstream_304: "Upstream 304 answers",
    /// Peer messages that failed to open or validate.
    rejected_messages: "Peer messages rejected",
    /// Lookups sent to peers.
    lookups_sent: "Lookups sent to peers",
    /// Lookups answered with an entry.
    lookups_found: "Lookups answered with an entry",
    /// Announces published.
    announces_sent: "Announces published",
    /// Valid announces received.
    announces_received: "Valid announces received",
    /// Bodies fetched by CID after an announce without body.
    bodies_fetched: "Bodies fetched by CID",
    /// Peer announces not stored because the writer was behind.
    dropped_writes: "Peer announces dropped while the writer was behind",
    /// Cached reads made stale by a write (here or on a peer).
    invalidated: "Cached reads made stale by writes",
    /// Store transactions committed: writes per commit is how well group commit groups.
    store_commits: "Store transactions committed",
    /// Store writes that failed (the entries they carried were not acknowledged).
    store_errors: "Store writes that failed",
    /// Peers admitted after proving they hold the key.
    members_admitted: "Peers admitted as members by sealed hello",
    /// Peers that connected but did not prove they hold the key in time.
    hellos_failed: "Peers whose hello failed or timed out",
    /// Lookups a member left unanswered within its budget.
    lookup_timeouts: "Lookups unanswered within the peer's budget",
    /// Lookups not sent to a member reached only through public relays, and lookups
    /// refused that came through one: public relays carry membership only.
    public_relay_held: "Lookups kept off public relays",
    /// Requests refused as replays (a nonce seen before).
    replays_refused: "Peer requests refused as replays",
    /// Peer requests answered `Busy` or dropped for being over the peer's budget.
    peer_busy: "Peer requests over the peer's budget",
    /// Redirects received and followed to the owner another member sees.
    redirects: "Lookups redirected to another owner",
    /// Times the store was reopened after a write failed.
    store_reopens: "Store reopens after a failed write",
    /// Leases we granted as owner (a member fetches for the fleet with its reader's token).
    leases_granted: "Leases granted to members as key owner",
    /// Leases we were granted: we fetched for the fleet with a local client's token.
    leases_taken: "Leases taken from owners",
}

impl Counters {
    /// Requests answered without spending quota.
    pub fn saved(&self) -> u64 {
        self.hits.get()
            + self.peer_hits.get()
            + self.revalidated.get()
            + self.coalesced.get()
            + self.stale_served.get()
    }
}

/// Labels of a rate-limit gauge (contract §10's `{budget,resource}`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// Whose budget: `node` for the node's own token as GitHub last answered it, and
    /// every budget of the fleet's ledger by its id (a keyed hash, never a token).
    pub budget: String,
    /// GitHub's rate-limit resource (`core`, `search`, …, `other`).
    pub resource: String,
}

/// The node's state as Prometheus gauges, set from [`Stats`] when the metrics are
/// read, so that a dashboard can chart what `/_ghmesh/stats` shows.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    members: Gauge,
    connected_peers: Gauge,
    mesh_peers: Gauge,
    entries: Gauge,
    store_bytes: Gauge,
    ratelimit_remaining: Family<BudgetLabels, Gauge>,
    ratelimit_limit: Family<BudgetLabels, Gauge>,
}

impl Gauges {
    /// Registers every gauge under `ghmesh_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("ghmesh");
        r.register("members", "Peers admitted as members", self.members.clone());
        r.register(
            "connected_peers",
            "Peers with an open connection",
            self.connected_peers.clone(),
        );
        r.register(
            "mesh_peers",
            "Peers in the gossipsub mesh",
            self.mesh_peers.clone(),
        );
        r.register("entries", "Entries in the store", self.entries.clone());
        r.register(
            "store_bytes",
            "Bytes in the store",
            self.store_bytes.clone(),
        );
        r.register(
            "ratelimit_remaining",
            "Requests left in a rate-limit budget, as GitHub last said",
            self.ratelimit_remaining.clone(),
        );
        r.register(
            "ratelimit_limit",
            "Size of a rate-limit budget, as GitHub last said",
            self.ratelimit_limit.clone(),
        );
    }

    /// Sets every gauge from `stats`.
    pub fn set(&self, stats: &Stats) {
        let g = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.members.set(g(stats.members as u64));
        self.connected_peers.set(g(stats.connected_peers as u64));
        self.mesh_peers.set(g(stats.mesh_peers as u64));
        self.entries.set(g(stats.entries));
        self.store_bytes.set(g(stats.bytes));
        // Budgets come and go with the ledger (bounded there): the families are set
        // anew each time, so that a forgotten budget is not reported for ever.
        self.ratelimit_remaining.clear();
        self.ratelimit_limit.clear();
        for b in &stats.rate_limits {
            let labels = BudgetLabels {
                budget: b.budget.clone(),
                resource: b.resource.clone(),
            };
            self.ratelimit_remaining
                .get_or_create(&labels)
                .set(g(b.remaining));
            self.ratelimit_limit.get_or_create(&labels).set(g(b.limit));
        }
        let rl = &stats.rate_limit;
        let labels = BudgetLabels {
            budget: "node".into(),
            resource: rl.resource.unwrap_or("core").into(),
        };
        if let Some(remaining) = rl.remaining {
            self.ratelimit_remaining
                .get_or_create(&labels)
                .set(g(remaining));
        }
        if let Some(limit) = rl.limit {
            self.ratelimit_limit.get_or_create(&labels).set(g(limit));
        }
    }
}

/// `/_ghmesh/stats` (contract §4): the counters plus the node's and network's state.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// This node's peer id.
    pub peer_id: String,
    /// P2P is on.
    pub p2p: bool,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers in our gossipsub mesh.
    pub mesh_peers: usize,
    /// Peers admitted to the mesh (proved they hold the key).
    pub members: usize,
    /// Members on probation (left lookups unanswered; not asked until it ends).
    pub members_on_probation: usize,
    /// Current lookup budget per member, in ms (adapts to its observed latency).
    pub peer_budgets_ms: std::collections::BTreeMap<String, u64>,
    /// Why the node is degraded (`None`: healthy); see `/_ghmesh/health`.
    pub degraded: Option<String>,
    /// Entries in the store.
    pub entries: u64,
    /// Bytes in the store.
    pub bytes: u64,
    /// Every counter, flattened into this object.
    #[serde(flatten)]
    pub counters: CounterSnapshot,
    /// Requests answered without spending quota.
    pub api_calls_saved: u64,
    /// Share of answered requests that spent no quota, in 0..1.
    pub hit_rate: f64,
    /// Gossip or requests dropped because the node was not keeping up.
    pub dropped_events: u64,
    /// Last rate-limit state seen upstream.
    pub rate_limit: RateLimit,
    /// Every rate-limit budget known, this node's and the fleet's (contract §10).
    pub rate_limits: Vec<crate::upstream::ledger::BudgetView>,
    /// Upstream requests that waited for their share or turn of a budget near its end
    /// (the fleet's last requests of a window), or for a budget's first figures, since
    /// start.
    pub share_waits: u64,
    /// Our listen addresses with `/p2p/<id>`.
    pub listen: Vec<String>,
    /// Reach across NAT (contract §8), flattened into this object.
    #[serde(flatten)]
    pub reach: crate::network::ReachStats,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_registered_and_serialised() {
        let c = Counters::default();
        c.hits.inc();
        c.store_errors.inc();
        let mut reg = Registry::default();
        c.register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("ghmesh_hits_total 1"), "{text}");
        assert!(text.contains("ghmesh_store_errors_total 1"), "{text}");
        let json = serde_json::to_value(c.snapshot()).unwrap();
        assert_eq!(json["hits"], 1);
        assert_eq!(json["store_errors"], 1);
        // Every counter is in both: as many JSON fields as Prometheus counters.
        let exported = text.matches("# TYPE ghmesh_").count();
        assert_eq!(json.as_object().unwrap().len(), exported, "{text}");
        assert!(exported >= 27);
    }

    #[test]
    fn hit_rate_is_a_share() {
        assert_eq!(hit_rate(0, 0), 0.0);
        assert_eq!(hit_rate(3, 1), 0.75);
    }
}
