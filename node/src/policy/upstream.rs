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

/// [`classify`], also reading the body for GitHub's secondary rate limit.
pub fn classify_response(resp: &UpstreamResponse) -> Verdict {
    if is_secondary_limit(resp) {
        Verdict::Failure
    } else {
        classify(resp.status, &resp.headers)
    }
}
