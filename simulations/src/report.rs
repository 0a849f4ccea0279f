//! The JSON report of a run (contract §7).

use serde::{Deserialize, Serialize};

/// Percentiles of the time from an entry's upstream fetch to its presence everywhere.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Propagation {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// Keys measured (fetched once and then present on every node).
    pub samples: usize,
}

/// Percentiles of peer lookups on a local miss (requests answered by a peer).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Lookup {
    pub p50: f64,
    pub p99: f64,
    pub samples: usize,
}

/// What happened to nodes that joined during the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LateJoiners {
    pub nodes: usize,
    pub requests: u64,
    /// Answered by peers (lookup, or entries that reached them by gossip).
    pub served_by_peers: u64,
    /// Fetched upstream with quota spent.
    pub misses: u64,
}

/// The network a simulated-time run modelled.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// One-way latency between two nodes, mean, ms.
    pub latency_ms: f64,
    /// Each delay is the mean times a uniform factor in `1 ± jitter`.
    pub jitter: f64,
    /// Probability that one message is lost.
    pub loss: f64,
    /// GitHub's answer time, ms.
    pub upstream_ms: f64,
    /// Fraction of the other nodes each node can ever reach (1: everyone).
    pub view: f64,
    /// Nodes start this far apart, ms.
    pub join_gap_ms: f64,
}

/// A run whose fleet shared one token with a budget (`--budget`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BudgetRun {
    /// Requests the token had left.
    pub budget: u64,
    /// Calls GitHub refused once it was spent (the fleet's offences).
    pub refusals: u64,
    /// Reads that ended held or refused (nothing served).
    pub held_reads: u64,
    /// Ledger messages published (0 with `--no-ledger`).
    pub ledger_messages: u64,
    /// Whether nodes shared their books.
    pub ledger: bool,
}

/// The rate-limit ledger's traffic over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LedgerTraffic {
    /// Messages published, all nodes.
    pub messages: u64,
    /// Their sealed bytes.
    pub bytes: u64,
    /// Messages per node per second of the workload.
    pub per_node_per_second: f64,
}

/// Upstream calls of the keys read as GraphQL queries, beside the REST ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphqlShare {
    /// Keys read as GraphQL queries.
    pub keys: usize,
    /// Their upstream calls.
    pub upstream_calls: u64,
    /// upstream_calls / keys.
    pub upstream_per_key: f64,
    /// The REST keys' calls per key, for comparison.
    pub rest_upstream_per_key: f64,
}

impl GraphqlShare {
    /// The share of a run whose `keys` included GraphQL ones that cost `calls`;
    /// `None` when the workload reads none. `total` is every upstream call.
    pub fn of(
        workload: &crate::workload::Workload,
        keys: usize,
        calls: u64,
        total: u64,
    ) -> Option<Self> {
        let graphql = (0..keys).filter(|&k| workload.is_graphql(k)).count();
        (graphql > 0).then(|| Self {
            keys: graphql,
            upstream_calls: calls,
            upstream_per_key: calls as f64 / graphql as f64,
            rest_upstream_per_key: total.saturating_sub(calls) as f64
                / (keys - graphql).max(1) as f64,
        })
    }
}

/// A run's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// `wall`: real nodes on loopback, timed by the wall clock (figures depend on the
    /// machine's cores); `simulated`: the node's decision layer on a seeded
    /// discrete-event network, timed by simulated time (they do not).
    pub time: String,
    /// The modelled network (simulated time only).
    pub network: Option<Network>,
    /// Messages between nodes (lookups, replies, gossip deliveries, hellos, member
    /// lists); counted in simulated time only.
    pub messages: u64,
    /// messages / requests.
    pub messages_per_request: f64,
    /// Rate-limit ledger messages every node published, and their sealed bytes (wall
    /// time: the nodes share one token, so every upstream answer is news).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerTraffic>,
    /// With `--budget` (simulated time): what the fleet's one token was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetRun>,
    pub workload: String,
    pub nodes: usize,
    pub keys: usize,
    pub rounds: usize,
    pub strategy: String,
    pub seed: u64,
    pub stagger_ms: u64,
    pub ttl: u64,
    /// Peer-phase budget on a miss, ms.
    pub lookup_timeout_ms: u64,
    /// Requests made by all nodes.
    pub requests: u64,
    /// Quota-spending upstream requests (full 200 answers).
    pub upstream_calls: u64,
    /// Free revalidations (304).
    pub upstream_304: u64,
    /// upstream_calls / keys.
    pub upstream_per_key: f64,
    /// The GraphQL keys' share of it (none when the workload reads no GraphQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql: Option<GraphqlShare>,
    /// Answered from the node's own store (fresh hit, whoever fetched it).
    pub served_local: u64,
    /// Answered by a peer on a local miss.
    pub served_peer: u64,
    /// Joined an in-flight fetch (here or on the key's owner).
    pub served_coalesced: u64,
    /// Revalidated with a 304.
    pub served_revalidated: u64,
    /// Fetched upstream.
    pub served_miss: u64,
    /// Failed requests.
    pub errors: u64,
    pub propagation_ms: Propagation,
    pub lookup_ms: Lookup,
    /// Time for every node to see every other as a member before the workload.
    pub mesh_formation_s: f64,
    /// From the first node's start until every node has every other as a member.
    pub view_converged_s: f64,
    /// Workload time.
    pub wall_s: f64,
    /// Peak RSS of the whole process (all nodes and the fake GitHub).
    pub peak_rss_mb: f64,
    /// peak_rss_mb / nodes.
    pub peak_rss_mb_per_node: f64,
    pub late_joiners: Option<LateJoiners>,
    /// Raw propagation samples (ms), so charts can be redrawn from a report.
    pub propagation_samples: Vec<f64>,
}

impl Report {
    /// One-paragraph summary for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "{workload} / {strategy} ({time} time): {nodes} nodes x {keys} keys x {rounds} rounds = {requests} requests\n\
             upstream: {up} full calls ({upk:.2} per key), {nm} free 304s\n\
             served: {local} local, {peer} peer, {co} coalesced, {rv} revalidated, {miss} miss, {err} errors\n\
             propagation ms: p50 {pp50:.1} p95 {pp95:.1} p99 {pp99:.1} max {pmax:.1} ({ps} keys)\n\
             lookup ms: p50 {lp50:.2} p99 {lp99:.2} ({ls} lookups)\n\
             mesh formed in {mf:.2}s (full views {vc:.2}s after the first start), workload {wall:.2}s, peak RSS {rss:.0} MB ({rssn:.1} MB/node)\n",
            workload = self.workload,
            strategy = self.strategy,
            time = if self.time.is_empty() { "wall" } else { &self.time },
            nodes = self.nodes,
            keys = self.keys,
            rounds = self.rounds,
            requests = self.requests,
            up = self.upstream_calls,
            upk = self.upstream_per_key,
            nm = self.upstream_304,
            local = self.served_local,
            peer = self.served_peer,
            co = self.served_coalesced,
            rv = self.served_revalidated,
            miss = self.served_miss,
            err = self.errors,
            pp50 = self.propagation_ms.p50,
            pp95 = self.propagation_ms.p95,
            pp99 = self.propagation_ms.p99,
            pmax = self.propagation_ms.max,
            ps = self.propagation_ms.samples,
            lp50 = self.lookup_ms.p50,
            lp99 = self.lookup_ms.p99,
            ls = self.lookup_ms.samples,
            mf = self.mesh_formation_s,
            vc = self.view_converged_s,
            wall = self.wall_s,
            rss = self.peak_rss_mb,
            rssn = self.peak_rss_mb_per_node,
        ) + &(match &self.budget {
            Some(b) => format!(
                "budget: {} requests; {} refused by GitHub, {} reads held or refused, {} ledger messages{}\n",
                b.budget,
                b.refusals,
                b.held_reads,
                b.ledger_messages,
                if b.ledger { "" } else { " (no ledger)" }
            ),
            None => String::new(),
        }) + &(match &self.ledger {
            Some(l) => format!(
                "ledger: {} messages, {} bytes ({:.2} messages per node per second)\n",
                l.messages, l.bytes, l.per_node_per_second
            ),
            None => String::new(),
        }) + &(match &self.graphql {
            Some(g) => format!(
                "GraphQL: {} of the keys, {} calls ({:.2} per key; REST {:.2} per key)\n",
                g.keys, g.upstream_calls, g.upstream_per_key, g.rest_upstream_per_key
            ),
            None => String::new(),
        }) + &(if self.time == "simulated" {
            format!(
                "messages: {} ({:.1} per request)\n",
                self.messages, self.messages_per_request
            )
        } else {
            String::new()
        }) + &self
            .late_joiners
            .as_ref()
            .map(|l| {
                format!(
                    "late joiners: {} nodes, {} requests, {} served by peers, {} upstream misses\n",
                    l.nodes, l.requests, l.served_by_peers, l.misses
                )
            })
            .unwrap_or_default()
    }
}

impl Propagation {
    /// Percentiles of sorted samples (ms).
    pub fn of(sorted: &[f64]) -> Self {
        Self {
            p50: quantile(sorted, 0.5),
            p95: quantile(sorted, 0.95),
            p99: quantile(sorted, 0.99),
            max: sorted.last().copied().unwrap_or(0.0),
            samples: sorted.len(),
        }
    }
}

impl Lookup {
    /// Percentiles of sorted samples (ms).
    pub fn of(sorted: &[f64]) -> Self {
        Self {
            p50: quantile(sorted, 0.5),
            p99: quantile(sorted, 0.99),
            samples: sorted.len(),
        }
    }
}

/// The q-quantile (0..=1) of sorted samples; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Peak resident set of this process, in MB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
