//! What an upstream answer means for the cache: the response as received, the failures
//! that produced none, and their classification. Decisions over them live in
//! [`super::after_upstream`]; the client that produces them in [`crate::upstream`].

use bytes::Bytes;

/// An HTTP response from upstream, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

impl UpstreamResponse {
    /// A header value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A JSON error like GitHub's, for failures that never reached GitHub.
    pub fn json_error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "message": message }).to_string();
        Self {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: Bytes::from(body),
        }
    }
}

/// Failures that produced no HTTP response.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No answer within the request timeout.
    #[error("upstream timed out")]
    Timeout,
    /// Connection refused, DNS failure, TLS failure…
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// The response body exceeded the size limit.
    #[error("upstream response too large")]
    TooLarge,
    /// Not sent: this token is held after a rate-limit answer; GitHub's refusal is
    /// repeated instead.
    #[error("upstream rate limit: held until it resets")]
    Held(Box<UpstreamResponse>),
}

/// What a response means for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200: cache and share it.
    Cacheable,
    /// 304: the held copy is still good.
    NotModified,
    /// Rate limited (403/429 with rate-limit signals) or 5xx: serve stale if possible.
    Failure,
    /// Anything else (404, 401, 422, a 403 that is not a rate limit…): pass through,
    /// never cache.
    PassThrough,
}

/// Classifies an upstream response (pure: headers and status only).
pub fn classify(status: u16, headers: &[(String, String)]) -> Verdict {
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    match status {
        200 => Verdict::Cacheable,
        304 => Verdict::NotModified,
        429 => Verdict::Failure,
        403 if header("x-ratelimit-remaining") == Some("0") || header("retry-after").is_some() => {
            Verdict::Failure
        }
        500..=599 => Verdict::Failure,
        _ => Verdict::PassThrough,
    }
}

/// A GitHub secondary rate limit: a 403 or 429 whose message says so (GitHub sends it
/// with quota left, with or without `retry-after`).
pub fn is_secondary_limit(resp: &UpstreamResponse) -> bool {
    matches!(resp.status, 403 | 429)
        && String::from_utf8_lossy(&resp.body[..resp.body.len().min(4096)])
            .to_ascii_lowercase()
            .contains("secondary rate limit")
}

/// What a GraphQL answer's `errors` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphqlErrors {
    /// None: the answer is whole.
    None,
    /// `RATE_LIMITED`: the token's `graphql` budget is spent.
    RateLimited,
    /// Partial data, a validation error, anything else: for the asker alone.
    Other,
}

/// Reads the top-level `errors` of a GraphQL answer (a body that is not JSON counts as
/// an error: it is nothing to share).
pub fn graphql_errors(body: &[u8]) -> GraphqlErrors {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        errors: Option<Vec<Error>>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        #[serde(default, rename = "type")]
        kind: Option<String>,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer { errors: None }) => GraphqlErrors::None,
        Ok(Answer { errors: Some(e) }) if e.is_empty() => GraphqlErrors::None,
        Ok(Answer { errors: Some(e) })
            if e.iter().any(|e| e.kind.as_deref() == Some("RATE_LIMITED")) =>
        {
            GraphqlErrors::RateLimited
        }
        _ => GraphqlErrors::Other,
    }
}

/// A `200` that refuses a GraphQL query for the token's spent budget: GitHub's primary
/// GraphQL rate limit, which it answers with `200` and a `RATE_LIMITED` error.
pub fn is_graphql_rate_limited(resp: &UpstreamResponse) -> bool {
    resp.status == 200
        && mentions_rate_limited(&resp.body)
        && graphql_errors(&resp.body) == GraphqlErrors::RateLimited
}

/// A cheap look before parsing: most answers never say it.
fn mentions_rate_limited(body: &[u8]) -> bool {
    body.windows(b"RATE_LIMITED".len())
        .any(|w| w == b"RATE_LIMITED")
}

/// [`classify_response`] for a GraphQL answer: a `200` is cacheable only without
/// `errors`; `RATE_LIMITED` is a rate-limit failure (a copy is served stale).
pub fn classify_graphql_response(resp: &UpstreamResponse) -> Verdict {
    match classify_response(resp) {
        Verdict::Cacheable => match graphql_errors(&resp.body) {
            GraphqlErrors::None => Verdict::Cacheable,
            GraphqlErrors::RateLimited => Verdict::Failure,
            GraphqlErrors::Other => Verdict::PassThrough,
        },
        v => v,
    }
}

/// [`classify`], also reading the body for GitHub's secondary rate limit.
pub fn classify_response(resp: &UpstreamResponse) -> Verdict {
    if is_secondary_limit(resp) {
        Verdict::Failure
    } else {
        classify(resp.status, &resp.headers)
    }
}
