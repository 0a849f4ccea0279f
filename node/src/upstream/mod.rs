//! The upstream: where a miss is finally answered. A trait, so that the mesh is
//! testable without HTTP; [`github::GithubClient`] is the real one.

pub mod github;
pub mod holds;
pub mod ledger;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use ghmesh_protocol::{CanonicalRequest, EntryMeta};

/// A boxed future, for the object-safe [`Upstream`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Validators for a conditional request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditional {
    /// Sent as `If-None-Match`.
    pub etag: Option<String>,
    /// Sent as `If-Modified-Since`.
    pub last_modified: Option<String>,
}

impl Conditional {
    /// Validators for revalidating `meta` with the token whose fingerprint is `token_fp`.
    /// GitHub ETags are per token: an ETag is only sent by the token that received it,
    /// any other token falls back to `Last-Modified`.
    pub fn for_entry(meta: &EntryMeta, token_fp: Option<[u8; 8]>) -> Self {
        let same_token = meta.etag_token.as_ref().map(|t| t.as_slice())
            == token_fp.as_ref().map(|t| t.as_slice());
        Self {
            etag: meta.etag.clone().filter(|_| same_token),
            last_modified: meta.last_modified.clone(),
        }
    }

    /// No validators at all.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// Whose token a read is sent with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The node's own token (or anonymous when it has none): lent to cacheable reads.
    Node,
    /// A local client's own `Authorization`, sent exactly as the client sent it.
    Client(ClientToken),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node => f.write_str("Node"),
            Self::Client(t) => write!(f, "Client({})", hex_fp(&t.fingerprint)),
        }
    }
}

fn hex_fp(fp: &[u8; 8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client's `Authorization` header: the value to send, and the fingerprint that
/// keys its ETags and rate-limit holds. Never logged (its `Debug` shows only the
/// fingerprint).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken {
    header: String,
    fingerprint: [u8; 8],
}

impl ClientToken {
    /// From an `Authorization` value (`Bearer …`, `token …`, or a bare token).
    pub fn from_header(value: &str) -> Self {
        Self {
            header: value.to_string(),
            fingerprint: ghmesh_protocol::token_fingerprint(bare_token(value)),
        }
    }

    /// The header value, exactly as the client sent it.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// Fingerprint of the token.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientToken({})", hex_fp(&self.fingerprint))
    }
}

/// The token in an `Authorization` value, without its scheme.
pub fn bare_token(value: &str) -> &str {
    let v = value.trim();
    for scheme in ["Bearer ", "bearer ", "token ", "Token "] {
        if let Some(t) = v.strip_prefix(scheme) {
            return t.trim();
        }
    }
    v
}

pub use crate::policy::upstream::{
    classify, classify_response, is_secondary_limit, UpstreamError, UpstreamResponse, Verdict,
};

/// Last known rate-limit state of the upstream token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateLimit {
    /// `x-ratelimit-limit`.
    pub limit: Option<u64>,
    /// `x-ratelimit-remaining`.
    pub remaining: Option<u64>,
    /// `x-ratelimit-reset`, unix seconds.
    pub reset: Option<u64>,
    /// `x-ratelimit-used`.
    pub used: Option<u64>,
    /// `x-ratelimit-resource` (`core`, `search`, `graphql`, …), when GitHub named one
    /// it documents; any other name reads as `other`.
    pub resource: Option<&'static str>,
}

/// The rate-limit resources GitHub documents (`GET /rate_limit`). Kept as a closed set
/// so that a header can never add a label value of its own to the metrics.
const RESOURCES: &[&str] = &[
    "core",
    "search",
    "code_search",
    "graphql",
    "integration_manifest",
    "source_import",
    "code_scanning_upload",
    "code_scanning_autofix",
    "actions_runner_registration",
    "scim",
    "dependency_snapshots",
    "dependency_sbom",
    "audit_log",
    "audit_log_streaming",
];

impl RateLimit {
    /// Reads the `x-ratelimit-*` headers; `None` when the response had none.
    pub fn from_headers(headers: &[(String, String)]) -> Option<Self> {
        let num = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        };
        let rl = Self {
            limit: num("x-ratelimit-limit"),
            remaining: num("x-ratelimit-remaining"),
            reset: num("x-ratelimit-reset"),
            used: num("x-ratelimit-used"),
            resource: None,
        };
        (rl != Self::default()).then_some(Self {
            resource: headers
                .iter()
                .find(|(k, _)| k == "x-ratelimit-resource")
                .map(|(_, v)| {
                    let v = v.trim();
                    RESOURCES
                        .iter()
                        .find(|r| **r == v)
                        .copied()
                        .unwrap_or("other")
                }),
            ..rl
        })
    }
}

/// Where misses are answered.
pub trait Upstream: Send + Sync + 'static {
    /// A cacheable GET (conditional when `cond` has validators), with `cred`'s token.
    /// A token held after a rate-limit answer is not sent: [`UpstreamError::Held`].
    fn fetch<'a>(
        &'a self,
        req: &'a CanonicalRequest,
        cond: Conditional,
        cred: &'a Credential,
    ) -> BoxFuture<'a, Result<UpstreamResponse, UpstreamError>>;

    /// Any other request, passed through untouched (non-GET, or a client's own token)
    /// with the client's headers minus hop-by-hop ones: never with the node's token.
    fn forward<'a>(
        &'a self,
        method: &'a str,
        path_and_query: &'a str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> BoxFuture<'a, Result<UpstreamResponse, UpstreamError>>;

    /// Fingerprint of the node's own token (None: anonymous).
    fn token_fingerprint(&self) -> Option<[u8; 8]>;

    /// The base URL requests go to, when there is one: `Link` headers from peers must
    /// point there to be kept.
    fn base(&self) -> Option<&str> {
        None
    }

    /// Fingerprint of the token `cred` sends (None: anonymous).
    fn fingerprint_of(&self, cred: &Credential) -> Option<[u8; 8]> {
        match cred {
            Credential::Node => self.token_fingerprint(),
            Credential::Client(t) => Some(t.fingerprint()),
        }
    }

    /// Last rate-limit state seen.
    fn rate_limit(&self) -> RateLimit;

    /// What this node learned of the budgets it spends since last asked: the
    /// ledger's news to gossip (contract §10). None where no budgets are kept.
    fn ledger_news(&self) -> Vec<ghmesh_protocol::ledger::BudgetEntry> {
        Vec::new()
    }

    /// Whether a refusal started a hold, or GitHub said a budget is down to the
    /// reserve or spent, since last asked: the ledger then says so at once instead of at its next tick, so that
    /// members do not spend into a refusal in the meantime.
    fn take_ledger_urgent(&self) -> bool {
        false
    }

    /// Ready when the ledger should speak now although no upstream call ended (a read
    /// began to wait for its share of a budget: members must count this node among
    /// its spenders at once). Never ready where no budgets are kept.
    fn ledger_wake(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    /// What a member (`spender`, when its message named it) learned of budgets
    /// (entries already checked); how many changed what this node knows.
    fn ledger_heard(
        &self,
        _entries: &[ghmesh_protocol::ledger::BudgetEntry],
        _spender: Option<libp2p::PeerId>,
    ) -> usize {
        0
    }

    /// This node's peer id: its rank among the spenders of a budget near its end.
    fn set_peer_id(&self, _me: libp2p::PeerId) {}

    /// The node's members changed: who may share the node token's budget (see
    /// `ledger::BudgetBook::share`).
    fn set_members(&self, _members: &[libp2p::PeerId]) {}

    /// What `peer`'s hello said its own token spends (`None`: no token, or a sender
    /// from before hellos said).
    fn member_spends(&self, _peer: libp2p::PeerId, _budget: Option<ledger::BudgetId>) {}

    /// The budget the node's own token spends, for its hellos. None where no budgets
    /// are kept.
    fn own_budget(&self) -> Option<ledger::BudgetId> {
        None
    }

    /// What this node knows of the budgets' current windows, for a member that just
    /// joined (carried by hellos). None where no budgets are kept.
    fn ledger_snapshot(&self) -> Vec<ghmesh_protocol::ledger::BudgetEntry> {
        Vec::new()
    }

    /// Waits until a request for `path` with `cred` would be sent at once as far as the
    /// fleet's shares of budgets near their end go (or would be refused): called before
    /// a place among the requests in flight is taken, so that a request waiting for its
    /// share or turn does not keep other budgets' requests from GitHub. `fetch` looks
    /// again (a place taken meanwhile is waited for there). Ready at once where no
    /// budgets are kept.
    fn share_ready<'a>(&'a self, _path: &'a str, _cred: &'a Credential) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Requests that waited for their share or turn of a budget near its end, since
    /// start (stats' `share_waits`).
    fn share_waits(&self) -> u64 {
        0
    }

    /// Every budget known, ours and the fleet's (stats' `rate_limits`).
    fn rate_limits(&self) -> Vec<ledger::BudgetView> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghmesh_protocol::{token_fingerprint, Entry};

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn classification() {
        assert_eq!(classify(200, &[]), Verdict::Cacheable);
        assert_eq!(classify(304, &[]), Verdict::NotModified);
        assert_eq!(classify(404, &[]), Verdict::PassThrough);
        assert_eq!(
            classify(403, &[]),
            Verdict::PassThrough,
            "permission denied is not a rate limit"
        );
        assert_eq!(
            classify(403, &h(&[("x-ratelimit-remaining", "0")])),
            Verdict::Failure
        );
        assert_eq!(
            classify(403, &h(&[("retry-after", "30")])),
            Verdict::Failure
        );
        assert_eq!(classify(429, &[]), Verdict::Failure);
        assert_eq!(classify(502, &[]), Verdict::Failure);
    }

    #[test]
    fn etag_only_for_the_token_that_got_it() {
        let e = Entry::new(
            CanonicalRequest::get("/repos/o/r").unwrap(),
            h(&[
                ("etag", "\"e1\""),
                ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ]),
            b"{}".to_vec(),
            Some(token_fingerprint("ghp_a")),
            0,
            1,
            "x".into(),
        );
        let same = Conditional::for_entry(&e.meta, Some(token_fingerprint("ghp_a")));
        assert_eq!(same.etag.as_deref(), Some("\"e1\""));
        let other = Conditional::for_entry(&e.meta, Some(token_fingerprint("ghp_b")));
        assert_eq!(other.etag, None);
        assert!(other.last_modified.is_some());
        let anon = Conditional::for_entry(&e.meta, None);
        assert_eq!(anon.etag, None);
    }

    #[test]
    fn rate_limit_headers() {
        let rl = RateLimit::from_headers(&h(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1700000000"),
        ]))
        .unwrap();
        assert_eq!(
            rl,
            RateLimit {
                limit: Some(5000),
                remaining: Some(4999),
                reset: Some(1_700_000_000),
                used: None,
                resource: None,
            }
        );
        assert_eq!(RateLimit::from_headers(&[]), None);
        let named = |r: &str| {
            RateLimit::from_headers(&h(&[
                ("x-ratelimit-remaining", "1"),
                ("x-ratelimit-resource", r),
            ]))
            .and_then(|rl| rl.resource)
        };
        assert_eq!(named("search"), Some("search"));
        assert_eq!(named(" graphql "), Some("graphql"));
        assert_eq!(
            named("made-up\"\n"),
            Some("other"),
            "a header adds no label of its own"
        );
    }
}
