//! Freshness rules of contract §6, as a pure function.

use crate::request::CanonicalRequest;

/// TTL when nothing else applies.
pub const DEFAULT_TTL_SECS: u64 = 60;
/// Self-hosted runner lists change as runners come and go.
pub const RUNNERS_TTL_SECS: u64 = 30;
/// Workflow runs and jobs.
pub const RUNS_TTL_SECS: u64 = 60;
/// Repository metadata changes rarely.
pub const REPO_TTL_SECS: u64 = 300;
/// GraphQL answers (`--graphql-ttl`'s default): GitHub sends no freshness for them.
pub const GRAPHQL_TTL_SECS: u64 = 60;

/// What a node's settings say about freshness: `--ttl` for REST, `--graphql-ttl` for
/// GraphQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TtlSettings {
    /// Fixed freshness of every REST answer (`--ttl`), else the rules below.
    pub rest: Option<u64>,
    /// Freshness of GraphQL answers, else [`GRAPHQL_TTL_SECS`].
    pub graphql: Option<u64>,
}

impl TtlSettings {
    /// `--ttl` alone, GraphQL at its default.
    pub fn rest(ttl: Option<u64>) -> Self {
        Self {
            rest: ttl,
            graphql: None,
        }
    }
}

/// The kinds of endpoint with their own default freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointClass {
    /// `…/actions/runners` of a repository, organisation or enterprise.
    RunnerList,
    /// Workflow runs and jobs (`…/actions/runs…`, `…/actions/jobs…`,
    /// `…/actions/workflows/{id}/runs`).
    RunsAndJobs,
    /// `/repos/{owner}/{repo}` itself.
    RepoMetadata,
    /// Anything else: GitHub's `Cache-Control: max-age`, else the default.
    Other,
}

impl EndpointClass {
    /// Classifies a request path.
    pub fn of(path: &str) -> Self {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["repos", _, _] => Self::RepoMetadata,
            ["repos", _, _, "actions", "runners"]
            | ["orgs", _, "actions", "runners"]
            | ["enterprises", _, "actions", "runners"] => Self::RunnerList,
            ["repos", _, _, "actions", "runs", ..]
            | ["repos", _, _, "actions", "jobs", ..]
            | ["repos", _, _, "actions", "workflows", _, "runs"] => Self::RunsAndJobs,
            _ => Self::Other,
        }
    }
}

/// How many seconds a response stays fresh: for GraphQL, `--graphql-ttl`; else `--ttl` when given, else
/// the endpoint default, else GitHub's `Cache-Control` (`max-age`; `no-store` and
/// `no-cache` mean 0), else [`DEFAULT_TTL_SECS`]; never more than
/// [`MAX_TTL_MS`](crate::entry::MAX_TTL_MS), so that what an honest node creates every
/// receiver accepts.
pub fn freshness_ttl_secs(
    request: &CanonicalRequest,
    response_headers: &[(String, String)],
    settings: TtlSettings,
) -> u64 {
    uncapped_ttl_secs(request, response_headers, settings).min(crate::entry::MAX_TTL_MS / 1000)
}

fn uncapped_ttl_secs(
    request: &CanonicalRequest,
    response_headers: &[(String, String)],
    settings: TtlSettings,
) -> u64 {
    if request.graphql.is_some() {
        return settings.graphql.unwrap_or(GRAPHQL_TTL_SECS);
    }
    if let Some(ttl) = settings.rest {
        return ttl;
    }
    match EndpointClass::of(&request.path) {
        EndpointClass::RunnerList => RUNNERS_TTL_SECS,
        EndpointClass::RunsAndJobs => RUNS_TTL_SECS,
        EndpointClass::RepoMetadata => REPO_TTL_SECS,
        EndpointClass::Other => response_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("cache-control"))
            .and_then(|(_, v)| cache_control_max_age(v))
            .unwrap_or(DEFAULT_TTL_SECS),
    }
}

fn cache_control_max_age(value: &str) -> Option<u64> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse().ok();
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(path: &str, cc: Option<&str>, over: Option<u64>) -> u64 {
        let req = CanonicalRequest::get(path).unwrap();
        let headers: Vec<(String, String)> = cc
            .map(|v| vec![("Cache-Control".to_string(), v.to_string())])
            .unwrap_or_default();
        freshness_ttl_secs(&req, &headers, TtlSettings::rest(over))
    }

    #[test]
    fn endpoint_defaults() {
        assert_eq!(ttl("/repos/o/r/actions/runners", None, None), 30);
        assert_eq!(ttl("/orgs/acme/actions/runners", None, None), 30);
        assert_eq!(ttl("/repos/o/r/actions/runs?status=queued", None, None), 60);
        assert_eq!(ttl("/repos/o/r/actions/runs/5/jobs", None, None), 60);
        assert_eq!(
            ttl("/repos/o/r/actions/workflows/ci.yml/runs", None, None),
            60
        );
        assert_eq!(ttl("/repos/o/r", Some("max-age=10"), None), 300);
    }

    #[test]
    fn cache_control_then_default() {
        assert_eq!(
            ttl(
                "/repos/o/r/issues",
                Some("private, max-age=120, s-maxage=60"),
                None
            ),
            120
        );
        assert_eq!(ttl("/repos/o/r/issues", Some("no-store"), None), 0);
        assert_eq!(ttl("/repos/o/r/issues", Some("private"), None), 60);
        assert_eq!(ttl("/repos/o/r/issues", None, None), 60);
        assert_eq!(ttl("/repos/o/r/issues", Some("max-age=oops"), None), 60);
    }

    #[test]
    fn a_day_at_most_whatever_github_or_the_operator_says() {
        assert_eq!(
            ttl("/repos/o/r/issues", Some("max-age=31536000"), None),
            86_400
        );
        assert_eq!(ttl("/repos/o/r", None, Some(10 * 86_400)), 86_400);
    }

    #[test]
    fn override_wins() {
        assert_eq!(ttl("/repos/o/r", None, Some(5)), 5);
        assert_eq!(
            ttl("/repos/o/r/actions/runners", Some("max-age=1"), Some(7)),
            7
        );
    }
}
