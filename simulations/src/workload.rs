//! Named workloads in TOML (`workloads/*.toml`, built in) or from a file.

use ghmesh_protocol::graphql::GraphqlRequest;
use ghmesh_protocol::CanonicalRequest;
use serde::Deserialize;

/// How nodes come and go during a run.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Churn {
    /// How many nodes are replaced by fresh ones during the run.
    pub replace: usize,
    /// Time between replacements.
    pub every_ms: u64,
}

/// A workload: who reads what, how often. Command-line flags override its values.
#[derive(Debug, Clone, Deserialize)]
pub struct Workload {
    /// Name.
    pub name: String,
    /// One line on what it models.
    #[serde(default)]
    pub description: String,
    /// Nodes.
    pub nodes: Option<usize>,
    /// Distinct requests.
    pub keys: Option<usize>,
    /// Times each node reads every key.
    pub rounds: Option<usize>,
    /// Nodes start reading spread over this window.
    pub stagger_ms: Option<u64>,
    /// Freshness of entries.
    pub ttl: Option<u64>,
    /// Pause between a node's rounds.
    #[serde(default)]
    pub interval_ms: u64,
    /// Path templates; `{i}` becomes a number so that `keys` distinct paths result.
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
    /// Nodes joining and leaving.
    pub churn: Option<Churn>,
    /// Every node starts reading as soon as it is up, without waiting for the mesh
    /// (ephemeral runners that read right after they start).
    #[serde(default)]
    pub coldstart: bool,
    /// The share of keys read as GraphQL queries (a repository's open pull requests,
    /// as `gh pr list` asks), spread evenly among the keys.
    #[serde(default)]
    pub graphql_share: f64,
}

/// The query GraphQL keys read: `gh pr list`'s shape, one repository per key.
const GRAPHQL_QUERY: &str = "query PullRequestList($owner: String!, $repo: String!, $limit: Int!) { repository(owner: $owner, name: $repo) { pullRequests(first: $limit, states: [OPEN]) { totalCount nodes { number title } pageInfo { hasNextPage endCursor } } } }";

fn default_paths() -> Vec<String> {
    [
        "/repos/acme/repo{i}",
        "/repos/acme/repo{i}/actions/runs?status=queued",
        "/repos/acme/repo{i}/actions/runners",
        "/repos/acme/repo{i}/issues?state=open",
        "/repos/acme/repo{i}/pulls",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

const BUILT_IN: &[(&str, &str)] = &[
    ("burst", include_str!("../workloads/burst.toml")),
    ("autoscaler", include_str!("../workloads/autoscaler.toml")),
    ("churn", include_str!("../workloads/churn.toml")),
    ("coldstart", include_str!("../workloads/coldstart.toml")),
];

impl Default for Workload {
    fn default() -> Self {
        Self {
            name: "default".into(),
            description: "every node reads every key in a shuffled order".into(),
            nodes: None,
            keys: None,
            rounds: None,
            stagger_ms: None,
            ttl: None,
            interval_ms: 0,
            paths: default_paths(),
            churn: None,
            coldstart: false,
            graphql_share: 0.0,
        }
    }
}

impl Workload {
    /// A built-in workload by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> anyhow::Result<Self> {
        let text =
            match BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
                Some((_, t)) => t.to_string(),
                None => std::fs::read_to_string(name_or_path).map_err(|e| {
                    anyhow::anyhow!(
                    "workload '{name_or_path}' is neither built in ({}) nor a readable file: {e}",
                    BUILT_IN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )
                })?,
            };
        let w: Workload = toml::from_str(&text)?;
        anyhow::ensure!(!w.paths.is_empty(), "workload '{}' has no paths", w.name);
        anyhow::ensure!(
            (0.0..=1.0).contains(&w.graphql_share),
            "workload '{}': graphql_share must be in [0, 1]",
            w.name
        );
        Ok(w)
    }

    /// Whether key `k` is read as a GraphQL query: `graphql_share` of the keys, spread
    /// evenly.
    pub fn is_graphql(&self, k: usize) -> bool {
        ((k + 1) as f64 * self.graphql_share).floor() > (k as f64 * self.graphql_share).floor()
    }

    /// The `keys` distinct requests: REST reads of the paths, and GraphQL queries for
    /// `graphql_share` of them.
    pub fn requests(&self, keys: usize) -> anyhow::Result<Vec<CanonicalRequest>> {
        self.key_paths(keys)
            .iter()
            .enumerate()
            .map(|(k, path)| {
                if !self.is_graphql(k) {
                    return Ok(CanonicalRequest::get(path)?);
                }
                let body = serde_json::json!({
                    "query": GRAPHQL_QUERY,
                    "variables": { "owner": "acme", "repo": format!("repo{k}"), "limit": 30 },
                });
                let parsed = GraphqlRequest::parse(body.to_string().as_bytes())?;
                let query = parsed
                    .query()
                    .ok_or_else(|| anyhow::anyhow!("the workload's GraphQL is not a query"))?;
                Ok(CanonicalRequest::graphql(query, None, None)?)
            })
            .collect()
    }

    /// The `keys` distinct request paths.
    pub fn key_paths(&self, keys: usize) -> Vec<String> {
        (0..keys)
            .map(|k| {
                let t = &self.paths[k % self.paths.len()];
                t.replace("{i}", &(k / self.paths.len()).to_string())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_parse_and_keys_are_distinct() {
        for (name, _) in BUILT_IN {
            let w = Workload::load(name).unwrap();
            let paths = w.key_paths(w.keys.unwrap_or(100));
            let unique: std::collections::HashSet<_> = paths.iter().collect();
            assert_eq!(unique.len(), paths.len(), "{name}");
        }
        assert!(Workload::load("churn").unwrap().churn.is_some());
        assert!(Workload::load("coldstart").unwrap().coldstart);
        assert!(Workload::load("no-such-workload").is_err());
    }

    #[test]
    fn a_graphql_share_is_spread_evenly_and_every_request_is_distinct() {
        let w = Workload {
            graphql_share: 0.2,
            ..Workload::default()
        };
        let requests = w.requests(100).unwrap();
        let graphql = requests.iter().filter(|r| r.graphql.is_some()).count();
        assert_eq!(graphql, 20);
        assert!((0..10).any(|k| w.is_graphql(k)), "not all at the end");
        let keys: std::collections::HashSet<_> = requests.iter().map(|r| r.key()).collect();
        assert_eq!(keys.len(), 100);
        assert!(
            requests.iter().all(|r| r.check().is_ok()),
            "as a peer would check them"
        );
        assert_eq!(
            Workload::default()
                .requests(10)
                .unwrap()
                .iter()
                .filter(|r| r.graphql.is_some())
                .count(),
            0
        );
    }
}
