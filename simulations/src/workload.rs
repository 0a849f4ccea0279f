//! Named workloads in TOML (`workloads/*.toml`, built in) or from a file.

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
}

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
        Ok(w)
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
}
