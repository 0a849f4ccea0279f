//! The canonical form of a GitHub request and the cache key derived from it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::graphql::GraphqlQuery;

/// Longest path (with query) accepted; GitHub's own URLs are far shorter.
pub const MAX_PATH_LEN: usize = 4096;
/// Most query parameters accepted in one request.
pub const MAX_QUERY_PARAMS: usize = 64;
/// Longest `Accept` or `X-GitHub-Api-Version` value accepted.
pub const MAX_HEADER_VALUE_LEN: usize = 256;

/// Why a request cannot be canonicalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The path does not start with `/`.
    #[error("path must start with '/'")]
    NotAbsolute,
    /// The path or query is longer than [`MAX_PATH_LEN`].
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// More than [`MAX_QUERY_PARAMS`] query parameters.
    #[error("more than {MAX_QUERY_PARAMS} query parameters")]
    TooManyParams,
    /// Control characters, whitespace, `..` segments or a fragment in the path.
    #[error("path contains characters or segments that are not allowed")]
    BadPath,
    /// A header value that is too long or not printable ASCII.
    #[error("header value is too long or not printable")]
    BadHeader,
    /// The method is not an HTTP token.
    #[error("method is not a valid HTTP method")]
    BadMethod,
    /// A GraphQL query that is not normalised, not a query, or too large to share.
    #[error("GraphQL query is not one this node would have built")]
    BadGraphql,
}

/// The 32-byte cache key: SHA-256 of the canonical request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Parses a key from a byte slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(CacheKey)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &hex::encode(self.0)[..16])
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for CacheKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for CacheKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let buf = serde_bytes::ByteBuf::deserialize(d)?;
        CacheKey::from_slice(&buf)
            .ok_or_else(|| serde::de::Error::invalid_length(buf.len(), &"32 bytes"))
    }
}

/// A GitHub request reduced to what determines its response: method, path, sorted
/// query, `Accept` and `X-GitHub-Api-Version`. The token is deliberately not part of
/// it: the mesh scope (secret + repository) decides who may share answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalRequest {
    /// Upper-case HTTP method.
    pub method: String,
    /// Absolute path without the query.
    pub path: String,
    /// Query parameters as sent (not percent-decoded), sorted by name then value.
    pub query: Vec<(String, String)>,
    /// Lower-cased `Accept` header, when the client asked for something other than
    /// GitHub's default JSON representation (see [`is_default_json_accept`]).
    pub accept: Option<String>,
    /// `X-GitHub-Api-Version`, when the client sent one.
    pub api_version: Option<String>,
    /// For `POST /graphql`: the query (absent for every REST request, whose key and
    /// encoding are then what they were before GraphQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql: Option<GraphqlQuery>,
}

/// The path every GraphQL request is keyed and stored under, whichever of GitHub's
/// spellings the client used (`/graphql`, `/api/graphql`, `/api/v3/graphql`).
pub const GRAPHQL_PATH: &str = "/graphql";

/// A path that means the same to every HTTP library between here and GitHub: no
/// backslash, no percent-encoded `.`, `/` or `\` (which a URL parser may decode into a
/// dot segment or a separator, e.g. `/repos/%2e%2e/user` becoming `/user`, or escaping
/// an upstream base such as `/api/v3`), and no `.` or `..` segment.
pub fn is_safe_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !(path.contains('\\')
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.split('/').any(|seg| seg == ".." || seg == "."))
}

/// Paths whose answer depends on who asks (the token's identity, installation, app,
/// notifications, rate limit), not only on what the token may read. Such answers are
/// never shared across the mesh or served to another token.
pub fn varies_by_identity(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        segs.as_slice(),
        ["user", ..]
            | ["notifications", ..]
            | ["rate_limit"]
            | ["installation", ..]
            | ["app", ..]
            | ["authorizations", ..]
            | ["issues"]
            | ["gists"]
            | ["gists", "starred"]
            | ["feeds"]
            | ["repos", _, _, "notifications"]
            // Whether the asker watches a repository or starred a gist.
            | ["repos", _, _, "subscription"]
            | ["gists", _, "star"]
            // A user's own private events appear only when that user asks.
            | ["users", _, "events"]
            | ["users", _, "events", "orgs", ..]
            | ["users", _, "received_events"]
            // Answered only for an app's JWT, with that app's installation.
            | ["repos", _, _, "installation"]
            | ["orgs", _, "installation"]
            | ["users", _, "installation"]
            | ["marketplace_listing", ..]
    )
}

impl CanonicalRequest {
    /// Canonicalises `path_and_query` (e.g. `/repos/o/r/issues?state=open&page=2`).
    pub fn new(
        method: &str,
        path_and_query: &str,
        accept: Option<&str>,
        api_version: Option<&str>,
    ) -> Result<Self, RequestError> {
        if method.is_empty()
            || method.len() > 16
            || !method.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return Err(RequestError::BadMethod);
        }
        if path_and_query.len() > MAX_PATH_LEN {
            return Err(RequestError::TooLong);
        }
        if !path_and_query.starts_with('/') {
            return Err(RequestError::NotAbsolute);
        }
        if path_and_query
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || !b.is_ascii())
        {
            return Err(RequestError::BadPath);
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        if path.starts_with("//") || !is_safe_path(path) {
            return Err(RequestError::BadPath);
        }
        // A parameter without a name (`?=x`) means nothing upstream and could not be
        // written back out: dropped, so that every canonical request passes its own
        // check (found by fuzzing).
        let mut params: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .filter(|(k, _)| !k.is_empty())
            .collect();
        if params.len() > MAX_QUERY_PARAMS {
            return Err(RequestError::TooManyParams);
        }
        params.sort();
        Ok(Self {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            query: params,
            accept: clean_header(accept, true)?.filter(|a| !is_default_json_accept(a)),
            api_version: clean_header(api_version, false)?,
            graphql: None,
        })
    }

    /// A GraphQL query, keyed under [`GRAPHQL_PATH`] with `POST`.
    pub fn graphql(
        query: GraphqlQuery,
        accept: Option<&str>,
        api_version: Option<&str>,
    ) -> Result<Self, RequestError> {
        let mut req = Self::new("POST", GRAPHQL_PATH, accept, api_version)?;
        req.graphql = Some(query);
        Ok(req)
    }

    /// Whether the answer depends on who asks: never shared or served to another
    /// token (see [`varies_by_identity`] for REST; a GraphQL query that reads per-token
    /// fields).
    pub fn varies_by_identity(&self) -> bool {
        varies_by_identity(&self.path) || self.graphql.as_ref().is_some_and(|q| q.per_token)
    }

    /// A read the cache may serve and peers may be asked for: a REST `GET`, or a
    /// GraphQL query.
    pub fn is_cacheable_read(&self) -> bool {
        match &self.graphql {
            None => self.method == "GET",
            Some(_) => self.method == "POST" && self.path == GRAPHQL_PATH,
        }
    }

    /// A `GET` with no `Accept` or API version: convenient for tests and tools.
    pub fn get(path_and_query: &str) -> Result<Self, RequestError> {
        Self::new("GET", path_and_query, None, None)
    }

    /// The cache key: SHA-256 over length-prefixed fields, so that no two different
    /// requests can produce the same byte string.
    pub fn key(&self) -> CacheKey {
        let mut h = Sha256::new();
        // v2: the default JSON media type in all its spellings is one key (no Accept).
        h.update(b"ghmesh/request/v2\0");
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.method.as_bytes());
        field(self.path.as_bytes());
        field(&(self.query.len() as u64).to_be_bytes());
        for (k, v) in &self.query {
            field(k.as_bytes());
            field(v.as_bytes());
        }
        field(self.accept.as_deref().unwrap_or("").as_bytes());
        field(self.api_version.as_deref().unwrap_or("").as_bytes());
        // Only GraphQL requests add fields: every REST key is what it was.
        if let Some(q) = &self.graphql {
            field(b"graphql/v1");
            field(q.document.as_bytes());
            field(q.operation_name.as_deref().unwrap_or("").as_bytes());
            field(q.variables.as_bytes());
        }
        CacheKey(h.finalize().into())
    }

    /// Path and sorted query, as sent upstream.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        format!("{}?{}", self.path, q.join("&"))
    }

    /// Checks the bounds that [`CanonicalRequest::new`] enforces, for requests that
    /// arrive already built (from a peer).
    pub fn check(&self) -> Result<(), RequestError> {
        let rebuilt = match &self.graphql {
            None => Self::new(
                &self.method,
                &self.path_and_query(),
                self.accept.as_deref(),
                self.api_version.as_deref(),
            )?,
            Some(q) => {
                q.check().map_err(|_| RequestError::BadGraphql)?;
                Self::graphql(
                    q.clone(),
                    self.accept.as_deref(),
                    self.api_version.as_deref(),
                )?
            }
        };
        if &rebuilt == self {
            Ok(())
        } else {
            Err(RequestError::BadPath)
        }
    }
}

/// Does this `Accept` select GitHub's default JSON representation? Absent, empty,
/// `*/*`, `application/json`, `application/vnd.github+json` and
/// `application/vnd.github.v3+json` all do, with any parameters or q-values: GitHub
/// answers them with the same body, so they share one cache entry. Other media types
/// (`.raw`, `.html`, `.text`, `.full`, `.diff`, `.patch`, `.sha`, previews…) are distinct.
pub fn is_default_json_accept(value: &str) -> bool {
    value.split(',').all(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        [
            "",
            "*/*",
            "application/json",
            "application/vnd.github+json",
            "application/vnd.github.v3+json",
        ]
        .iter()
        .any(|d| media.eq_ignore_ascii_case(d))
    })
}

fn clean_header(value: Option<&str>, lowercase: bool) -> Result<Option<String>, RequestError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() > MAX_HEADER_VALUE_LEN || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(RequestError::BadHeader);
    }
    Ok(Some(if lowercase {
        v.to_ascii_lowercase()
    } else {
        v.to_string()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameless_query_parameters_are_dropped_and_every_canonical_request_checks() {
        // Found by the canonical_request fuzz target: `?=` became a parameter with an
        // empty name that `path_and_query` could not write back, so the request failed
        // its own check and an honest peer's lookup for it was refused.
        let r = CanonicalRequest::new("M", "/f_/___Z_____///%!?=", None, None).unwrap();
        assert!(r.query.is_empty());
        assert_eq!(r.check(), Ok(()));
        let r = CanonicalRequest::get("/repos/o/r/issues?=x&state=open&=").unwrap();
        assert_eq!(r.path_and_query(), "/repos/o/r/issues?state=open");
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            r.key(),
            CanonicalRequest::get("/repos/o/r/issues?state=open")
                .unwrap()
                .key()
        );
    }

    #[test]
    fn default_json_accepts_share_one_key_and_other_media_types_do_not() {
        let key = |accept: Option<&str>| {
            CanonicalRequest::new("GET", "/users/hubot", accept, None)
                .unwrap()
                .key()
        };
        let default = key(None);
        for same in [
            "",
            "*/*",
            "application/json",
            "Application/JSON",
            "application/vnd.github+json",
            "application/vnd.github.v3+json",
            "application/vnd.github.v3+json; charset=utf-8",
            "application/json;q=0.9, */*;q=0.1",
        ] {
            assert_eq!(key(Some(same)), default, "{same}");
        }
        for other in [
            "application/vnd.github.raw",
            "application/vnd.github.v3.raw",
            "application/vnd.github.html+json",
            "application/vnd.github.diff",
            "application/vnd.github.sha",
            "application/vnd.github.v3.raw, application/json",
            "text/plain",
        ] {
            assert_ne!(key(Some(other)), default, "{other}");
        }
        assert_ne!(
            key(Some("application/vnd.github.diff")),
            key(Some("application/vnd.github.patch"))
        );
        let versioned = CanonicalRequest::new("GET", "/users/hubot", None, Some("2022-11-28"))
            .unwrap()
            .key();
        assert_ne!(versioned, default, "the API version stays in the key");
    }

    #[test]
    fn identity_dependent_paths() {
        for p in [
            "/user",
            "/user/repos",
            "/user/installations",
            "/notifications",
            "/notifications/threads/1",
            "/rate_limit",
            "/installation/repositories",
            "/app",
            "/app/installations",
            "/authorizations",
            "/issues",
            "/gists",
            "/gists/starred",
            "/feeds",
            "/repos/o/r/notifications",
            "/repos/o/r/subscription",
            "/gists/abc123/star",
            "/users/octocat/events",
            "/users/octocat/events/orgs/acme",
            "/users/octocat/received_events",
            "/repos/o/r/installation",
            "/orgs/o/installation",
            "/users/octocat/installation",
            "/marketplace_listing/plans",
        ] {
            assert!(varies_by_identity(p), "{p}");
        }
        for p in [
            "/users/octocat",
            "/repos/o/r",
            "/repos/o/r/issues",
            "/gists/abc123",
            "/users/octocat/events/public",
            "/users/octocat/received_events/public",
            "/orgs/o/installations",
            "/meta",
        ] {
            assert!(!varies_by_identity(p), "{p}");
        }
    }

    #[test]
    fn encoded_dots_slashes_and_backslashes_are_refused() {
        for bad in [
            "/repos/%2e%2e/user",
            "/repos/%2E%2E/user",
            "/repos/o/%2e/r",
            "/repos/o%2fr",
            "/repos/o%2Fr",
            "/repos/o%5cr",
            "/repos/o\\r",
            "/repos/../user",
            "/repos/./o",
        ] {
            assert!(!is_safe_path(bad), "{bad}");
            assert_eq!(
                CanonicalRequest::get(bad).map(|_| ()),
                Err(RequestError::BadPath),
                "{bad}"
            );
        }
        for good in [
            "/repos/o/r",
            "/repos/o/r.js/issues",
            "/search/issues",
            "/repos/o/r%20x",
        ] {
            assert!(is_safe_path(good), "{good}");
        }
    }

    #[test]
    fn query_order_does_not_matter() {
        let a = CanonicalRequest::get("/repos/o/r/issues?state=open&page=2").unwrap();
        let b = CanonicalRequest::get("/repos/o/r/issues?page=2&state=open").unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.path_and_query(), "/repos/o/r/issues?page=2&state=open");
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = CanonicalRequest::new(
            "GET",
            "/a?x=1",
            Some("application/json"),
            Some("2022-11-28"),
        )
        .unwrap();
        let variants = [
            CanonicalRequest::new(
                "HEAD",
                "/a?x=1",
                Some("application/json"),
                Some("2022-11-28"),
            ),
            CanonicalRequest::new(
                "GET",
                "/b?x=1",
                Some("application/json"),
                Some("2022-11-28"),
            ),
            CanonicalRequest::new(
                "GET",
                "/a?x=2",
                Some("application/json"),
                Some("2022-11-28"),
            ),
            CanonicalRequest::new("GET", "/a?x=1", Some("text/plain"), Some("2022-11-28")),
            CanonicalRequest::new("GET", "/a?x=1", Some("application/json"), None),
        ];
        for v in variants {
            assert_ne!(v.unwrap().key(), base.key());
        }
        // Accept is case-insensitive; method is normalised.
        let same = CanonicalRequest::new(
            "get",
            "/a?x=1",
            Some("Application/JSON"),
            Some("2022-11-28"),
        )
        .unwrap();
        assert_eq!(same.key(), base.key());
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = CanonicalRequest::get("/a?b=c&d").unwrap();
        let b = CanonicalRequest::get("/a?b=c%26d").unwrap();
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn bad_requests_are_rejected() {
        assert_eq!(
            CanonicalRequest::get("repos"),
            Err(RequestError::NotAbsolute)
        );
        assert_eq!(CanonicalRequest::get("/a/../b"), Err(RequestError::BadPath));
        assert_eq!(CanonicalRequest::get("/a b"), Err(RequestError::BadPath));
        assert_eq!(CanonicalRequest::get("/a\n"), Err(RequestError::BadPath));
        assert_eq!(
            CanonicalRequest::get(&format!("/{}", "a".repeat(MAX_PATH_LEN))),
            Err(RequestError::TooLong)
        );
        let many: Vec<String> = (0..=MAX_QUERY_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert_eq!(
            CanonicalRequest::get(&format!("/a?{}", many.join("&"))),
            Err(RequestError::TooManyParams)
        );
        assert_eq!(
            CanonicalRequest::new("G T", "/a", None, None),
            Err(RequestError::BadMethod)
        );
        assert_eq!(
            CanonicalRequest::new("GET", "/a", Some("x\u{7}"), None),
            Err(RequestError::BadHeader)
        );
    }

    #[test]
    fn check_accepts_canonical_and_rejects_hand_built_junk() {
        let ok = CanonicalRequest::get("/a?z=1&b=2").unwrap();
        assert!(ok.check().is_ok());
        let mut unsorted = ok.clone();
        unsorted.query.reverse();
        assert!(unsorted.check().is_err());
        let mut evil = ok;
        evil.path = "/a/../../etc".into();
        assert!(evil.check().is_err());
    }
}
