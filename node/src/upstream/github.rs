//! The real upstream: GitHub's REST API over reqwest (rustls).
//!
//! - Sends the token as `Authorization: Bearer …` and a User-Agent.
//! - Tracks `x-ratelimit-*`. After a rate-limit answer (403/429 with
//!   `x-ratelimit-remaining: 0` or `Retry-After`), it sends nothing upstream until the
//!   reset time and answers with the same refusal at once: many runners retrying a
//!   limited token would only extend the ban (no retry storm).
//! - Connect and whole-request timeouts; bodies over the size limit are refused.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use ghmesh_protocol::{entry::MAX_BODY_LEN, token_fingerprint, CanonicalRequest};

use super::{BoxFuture, Conditional, RateLimit, Upstream, UpstreamError, UpstreamResponse};

/// Headers a client may not pass through (hop-by-hop, or ours to set).
const DROP_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
    "accept-encoding",
];

/// Configuration of the GitHub client.
#[derive(Clone)]
pub struct GithubConfig {
    /// Base URL, e.g. `https://api.github.com` (no trailing slash needed).
    pub base_url: String,
    /// Token for cached requests; None means anonymous.
    pub token: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// GitHub REST client used by the node.
pub struct GithubClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    token_fp: Option<[u8; 8]>,
    state: Mutex<LimitState>,
}

#[derive(Default)]
struct LimitState {
    last: RateLimit,
    /// While set and in the future, answer `refusal` without calling GitHub.
    blocked_until: Option<Instant>,
    refusal: Option<UpstreamResponse>,
}

impl GithubClient {
    /// Builds the client.
    pub fn new(cfg: GithubConfig) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .user_agent(concat!("ghmesh/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base: cfg.base_url.trim_end_matches('/').to_string(),
            token_fp: cfg.token.as_deref().map(token_fingerprint),
            token: cfg.token,
            state: Mutex::new(LimitState::default()),
        })
    }

    fn blocked(&self) -> Option<UpstreamResponse> {
        let state = self.state.lock().ok()?;
        match (state.blocked_until, &state.refusal) {
            (Some(until), Some(resp)) if Instant::now() < until => Some(resp.clone()),
            _ => None,
        }
    }

    fn observe(&self, resp: &UpstreamResponse) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some(rl) = RateLimit::from_headers(&resp.headers) {
            state.last = rl;
        }
        if let Some(wait) = backoff(resp, unix_now()) {
            // Bounded: a bogus header must not silence upstream for days.
            let wait = wait.min(Duration::from_secs(3600));
            tracing::warn!(
                status = resp.status,
                wait_s = wait.as_secs(),
                "GitHub rate limit reached; holding requests until reset"
            );
            state.blocked_until = Some(Instant::now() + wait);
            state.refusal = Some(resp.clone());
        } else if resp.status < 400 {
            state.blocked_until = None;
            state.refusal = None;
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut rb = self.http.request(method, &url);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        if let Some(body) = body {
            rb = rb.body(body);
        }
        let resp = rb.send().await.map_err(map_err)?;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_BODY_LEN as u64 * 2)
        {
            return Err(UpstreamError::TooLarge);
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(map_err)?;
            if body.len() + chunk.len() > MAX_BODY_LEN * 2 {
                return Err(UpstreamError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let resp = UpstreamResponse {
            status,
            headers,
            body: Bytes::from(body),
        };
        self.observe(&resp);
        Ok(resp)
    }
}

fn map_err(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else {
        UpstreamError::Unreachable(without_url(&e))
    }
}

/// reqwest errors embed the URL; ours never carries secrets, but keep errors short.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(url.as_str(), "upstream");
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long to hold requests after this response, if it is a rate-limit refusal:
/// `Retry-After` seconds, else until `x-ratelimit-reset`, else a minute.
pub fn backoff(resp: &UpstreamResponse, now_secs: u64) -> Option<Duration> {
    let limited = resp.status == 429
        || (resp.status == 403
            && (resp.header("x-ratelimit-remaining") == Some("0")
                || resp.header("retry-after").is_some()));
    if !limited {
        return None;
    }
    if let Some(secs) = resp
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(secs));
    }
    if let Some(reset) = resp
        .header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(reset.saturating_sub(now_secs).max(1)));
    }
    Some(Duration::from_secs(60))
}

impl Upstream for GithubClient {
    fn fetch<'a>(
        &'a self,
        req: &'a CanonicalRequest,
        cond: Conditional,
    ) -> BoxFuture<'a, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            if let Some(refusal) = self.blocked() {
                return Ok(refusal);
            }
            let mut headers = Vec::new();
            headers.push((
                "accept".to_string(),
                req.accept
                    .clone()
                    .unwrap_or_else(|| "application/vnd.github+json".into()),
            ));
            if let Some(v) = &req.api_version {
                headers.push(("x-github-api-version".into(), v.clone()));
            }
            if let Some(t) = &self.token {
                headers.push(("authorization".into(), format!("Bearer {t}")));
            }
            if let Some(etag) = cond.etag {
                headers.push(("if-none-match".into(), etag));
            }
            if let Some(lm) = cond.last_modified {
                headers.push(("if-modified-since".into(), lm));
            }
            let method = reqwest::Method::from_bytes(req.method.as_bytes())
                .map_err(|_| UpstreamError::Unreachable("bad method".into()))?;
            self.send(method, &req.path_and_query(), headers, None)
                .await
        })
    }

    fn forward<'a>(
        &'a self,
        method: &'a str,
        path_and_query: &'a str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> BoxFuture<'a, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| UpstreamError::Unreachable("bad method".into()))?;
            // Exactly the client's headers: the node's token is lent only to cacheable
            // reads (`fetch`), never added here.
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(k, _)| !DROP_REQUEST_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
                .collect();
            let body = (!body.is_empty()).then_some(body);
            self.send(method, path_and_query, headers, body).await
        })
    }

    fn token_fingerprint(&self) -> Option<[u8; 8]> {
        self.token_fp
    }

    fn rate_limit(&self) -> RateLimit {
        self.state.lock().map(|s| s.last).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, h: &[(&str, &str)]) -> UpstreamResponse {
        UpstreamResponse {
            status,
            headers: h
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn backoff_rules() {
        assert_eq!(backoff(&resp(200, &[]), 0), None);
        assert_eq!(backoff(&resp(403, &[]), 0), None);
        assert_eq!(
            backoff(&resp(429, &[("retry-after", "7")]), 0),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            backoff(
                &resp(
                    403,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", "1100")
                    ]
                ),
                1000
            ),
            Some(Duration::from_secs(100))
        );
        assert_eq!(backoff(&resp(429, &[]), 0), Some(Duration::from_secs(60)));
    }

    #[test]
    fn debug_hides_token() {
        let cfg = GithubConfig {
            base_url: "https://api.github.com".into(),
            token: Some("ghp_supersecret".into()),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?}").contains("supersecret"));
    }
}
