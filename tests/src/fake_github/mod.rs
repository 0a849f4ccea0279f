//! An in-process stand-in for the GitHub REST API, for tests and simulations.
//!
//! A caching proxy is only as correct as its handling of upstream details, so
//! this server reproduces the ones that matter to a cache rather than serving
//! canned JSON: ETags that differ per token, 304s that cost no quota,
//! per-token rate-limit buckets, `Link` pagination with absolute URLs, and
//! bodies of realistic size.
//!
//! Every body is a pure function of (path, query, the path's content version,
//! the global version). Nothing in a body depends on the token, the port or the
//! clock, so tests can compare bytes and a simulation can tell exactly what a
//! cache should have served.
//!
//! Counting rules, which the proxy's tests rely on:
//! - `total_requests` counts every request, whatever happens to it.
//! - `full_responses` counts quota-spending 200s on GET and HEAD (a HEAD
//!   spends quota and is not a revalidation, so it counts as full).
//! - `not_modified` counts 304s.
//! - `requests_for` counts the two above per exact `path?query`.
//! - `/rate_limit`, 404s, 403s, faults and non-GET methods count only in
//!   `total_requests`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, Method, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod fixtures;
mod graphql;
use fixtures::*;

/// Bodies name the real API host, not this server, so that they stay identical
/// across server instances (ports differ) and look like what GitHub sends.
const API: &str = "https://api.github.com";
const WEB: &str = "https://github.com";
const DOCS_URL: &str = "https://docs.github.com/rest";
const RATE_LIMIT_DOCS_URL: &str =
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";
const SECONDARY_DOCS_URL: &str =
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";

const DEFAULT_TOKEN_LIMIT: u64 = 5000;
/// GitHub gives unauthenticated callers a much smaller, shared budget.
const ANONYMOUS_LIMIT: u64 = 60;
const WINDOW_SECS: u64 = 3600;

const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
/// Three pages is the smallest count that exercises first, middle and last
/// `Link` shapes.
const PAGES: usize = 3;
/// Issue numbers count down from here so that the item at a given position is
/// the same entity whatever `per_page` is.
const NEWEST_NUMBER: usize = PAGES * MAX_PER_PAGE;

/// 2024-01-01T00:00:00Z. Timestamps hang off a fixed epoch, never the clock,
/// so bodies stay byte-identical between runs.
const EPOCH: u64 = 1_704_067_200;
/// Caps the hour offset derived from versions so that dates keep four-digit
/// years even if a test sets an absurd version.
const MAX_REV_HOURS: u64 = 400_000;

const LOGINS: [&str; 6] = [
    "octocat", "hubot", "monalisa", "defunkt", "mojombo", "pjhyett",
];

/// GitHub's secondary rate-limit message (what clients and ghmesh recognise it by).
const SECONDARY_MESSAGE: &str =
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";

/// A failure mode applied to every request until set back to `Fault::None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// 500 with a JSON message.
    ServerError,
    /// 403 with `x-ratelimit-remaining: 0` and GitHub's primary rate-limit message.
    RateLimited,
    /// 429 with `retry-after: 60` (GitHub's secondary rate limit).
    TooManyRequests,
    /// Never answers; the request is released only by `shutdown`.
    Hang,
    /// 403 with quota left and GitHub's secondary rate-limit message, no `retry-after`.
    SecondaryLimit,
}

/// A fake GitHub REST API listening on `127.0.0.1` with an ephemeral port.
pub struct FakeGithub {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
}

impl FakeGithub {
    /// Successful writes change no content from now on (`true`): reads afterwards get
    /// the same bodies and ETags, so a revalidation gets `304`.
    pub fn set_noop_writes(&self, noop: bool) {
        self.shared.noop_writes.store(noop, Ordering::SeqCst);
    }

    /// A successful write to `path` answers `Location: <this fake's URL><location>`.
    pub fn set_write_location(&self, path: &str, location: &str) {
        lock(&self.shared.write_locations).insert(path.to_string(), location.to_string());
    }

    /// Binds `127.0.0.1:0` and serves in a background tokio task.
    pub async fn start() -> anyhow::Result<FakeGithub> {
        Self::serve(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?)
    }

    /// Serves on `listener` (bound elsewhere, e.g. inside a network namespace).
    pub fn start_on(listener: std::net::TcpListener) -> anyhow::Result<FakeGithub> {
        listener.set_nonblocking(true)?;
        Self::serve(TcpListener::from_std(listener)?)
    }

    fn serve(listener: TcpListener) -> anyhow::Result<FakeGithub> {
        let addr = listener.local_addr()?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared::new(format!("http://{addr}"), shutdown));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        // Subscribed before spawning so a shutdown requested before the task
        // first runs is still seen.
        let mut stop = shared.shutdown.subscribe();
        let server = tokio::spawn(async move {
            let signal = async move {
                // A closed channel means the owner is gone: stop as well.
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            // serve only fails if accepting fails for good; a test double has
            // nobody to report that to, and clients will see refused requests.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await;
        });
        Ok(FakeGithub {
            shared,
            addr,
            server: Some(server),
        })
    }

    /// A fake whose bodies name its own URL, as a real GitHub (or GHES) does: what a
    /// client that follows URLs from bodies (PyGithub) needs.
    pub async fn start_self_referencing() -> anyhow::Result<FakeGithub> {
        let gh = Self::start().await?;
        gh.shared.self_referencing.store(true, Ordering::SeqCst);
        Ok(gh)
    }

    /// Only `token` may read `path`; every other caller gets 404.
    pub fn set_private(&self, path: &str, token: &str) {
        lock(&self.shared.private).insert(path.to_string(), Identity::of_token(token));
    }

    /// The most requests this fake was answering at once.
    pub fn max_in_flight(&self) -> u64 {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// The login `/user` answers for `token` (None: anonymous).
    pub fn login_of(token: Option<&str>) -> String {
        match token {
            Some(t) => Self::login_of_identity(&Identity::of_token(t)),
            None => "anonymous".into(),
        }
    }

    fn login_of_identity(who: &Identity) -> String {
        match who {
            Identity::Token(fp) => format!("user-{fp}"),
            Identity::Anonymous => "anonymous".into(),
        }
    }

    /// GraphQL requests that spent a point (see `graphql`).
    pub fn graphql_requests(&self) -> u64 {
        self.shared.graphql_full.load(Ordering::SeqCst)
    }

    /// Sets every token's GraphQL budget per hour.
    pub fn set_graphql_limit(&self, limit: u64) {
        self.shared.graphql_limit.store(limit, Ordering::SeqCst);
    }

    /// The requests received so far (the last [`MAX_LOGGED`]), oldest first.
    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// Base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Quota-spending 200s (GET and HEAD), i.e. requests a cache failed to absorb.
    pub fn full_responses(&self) -> u64 {
        self.shared.full.load(Ordering::SeqCst)
    }

    /// 304 responses.
    pub fn not_modified(&self) -> u64 {
        self.shared.not_modified.load(Ordering::SeqCst)
    }

    /// Every request received, including faulted and non-GET ones.
    pub fn total_requests(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Full 200s plus 304s for one exact `path?query`, as the client sent it.
    pub fn requests_for(&self, path_and_query: &str) -> u64 {
        lock(&self.shared.per_path)
            .get(path_and_query)
            .copied()
            .unwrap_or(0)
    }

    /// Delay added before answering every request (faults included).
    pub fn set_latency(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.shared.latency_nanos.store(nanos, Ordering::SeqCst);
    }

    pub fn set_fault(&self, f: Fault) {
        *lock(&self.shared.fault) = f;
    }

    /// Sets the content version of one path (query excluded, so every page of
    /// a list changes together); its bodies, ETags and Last-Modified change.
    pub fn set_version(&self, path: &str, v: u64) {
        lock(&self.shared.versions).insert(path.to_string(), v);
    }

    /// Bumps the global version: every body, ETag and Last-Modified changes.
    pub fn bump_all(&self) {
        self.shared.global_version.fetch_add(1, Ordering::SeqCst);
    }

    /// Per-token quota per window (default 5000). The anonymous bucket stays at 60.
    pub fn set_rate_limit(&self, limit: u64) {
        self.shared.token_limit.store(limit, Ordering::SeqCst);
    }

    /// Zeroes the request counters; rate-limit buckets are left alone (see
    /// `reset_rate_limits`).
    pub fn reset_counters(&self) {
        self.shared.full.store(0, Ordering::SeqCst);
        self.shared.not_modified.store(0, Ordering::SeqCst);
        self.shared.total.store(0, Ordering::SeqCst);
        lock(&self.shared.per_path).clear();
    }

    /// Refills every rate-limit bucket, as if a new window had started.
    pub fn reset_rate_limits(&self) {
        lock(&self.shared.buckets).clear();
    }

    /// Stops accepting, releases hung and delayed requests, and waits for the
    /// server task.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            // Graceful shutdown waits for open connections; a client that holds
            // one open mid-request must not be able to stall the caller.
            if tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        // A test that panics before `shutdown` must not leave hung requests
        // and the listener alive for the rest of the process.
        self.shared.shutdown.send_replace(true);
    }
}

struct Shared {
    base_url: String,
    shutdown: watch::Sender<bool>,
    latency_nanos: AtomicU64,
    fault: Mutex<Fault>,
    global_version: AtomicU64,
    versions: Mutex<HashMap<String, u64>>,
    token_limit: AtomicU64,
    buckets: Mutex<HashMap<Identity, Bucket>>,
    full: AtomicU64,
    not_modified: AtomicU64,
    total: AtomicU64,
    per_path: Mutex<HashMap<String, u64>>,
    /// The last requests received, oldest first (bounded by [`MAX_LOGGED`]).
    log: Mutex<std::collections::VecDeque<Logged>>,
    /// URLs in bodies name this fake instead of `https://api.github.com`, as GitHub's
    /// own bodies name the host that served them (set by `start_self_referencing`).
    self_referencing: std::sync::atomic::AtomicBool,
    /// Paths only one token may read (others get 404), by the token's identity.
    private: Mutex<HashMap<String, Identity>>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Writes succeed without changing any content (a write that sets what is already
    /// set), so reads afterwards are answered as before (set by `set_noop_writes`).
    noop_writes: std::sync::atomic::AtomicBool,
    /// `Location` (a path under this fake's URL) answered to a successful write to a
    /// path, as GitHub names what a `POST` created (set by `set_write_location`).
    write_locations: Mutex<HashMap<String, String>>,
    /// GraphQL budgets per token, apart from the REST ones as on GitHub.
    graphql_buckets: Mutex<HashMap<Identity, Bucket>>,
    graphql_limit: AtomicU64,
    graphql_full: AtomicU64,
    /// Comments added through GraphQL, by subject id.
    graphql_comments: Mutex<HashMap<String, Vec<String>>>,
}

/// Requests kept in the log.
const MAX_LOGGED: usize = 1024;

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// HTTP method.
    pub method: String,
    /// Path and query as received.
    pub path_and_query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `If-None-Match` header, if any.
    pub if_none_match: Option<String>,
    /// The `If-Modified-Since` header, if any.
    pub if_modified_since: Option<String>,
}

impl Shared {
    fn new(base_url: String, shutdown: watch::Sender<bool>) -> Shared {
        Shared {
            base_url,
            shutdown,
            latency_nanos: AtomicU64::new(0),
            fault: Mutex::new(Fault::None),
            global_version: AtomicU64::new(0),
            versions: Mutex::new(HashMap::new()),
            token_limit: AtomicU64::new(DEFAULT_TOKEN_LIMIT),
            buckets: Mutex::new(HashMap::new()),
            full: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            total: AtomicU64::new(0),
            per_path: Mutex::new(HashMap::new()),
            log: Mutex::new(std::collections::VecDeque::new()),
            private: Mutex::new(HashMap::new()),
            self_referencing: std::sync::atomic::AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            noop_writes: std::sync::atomic::AtomicBool::new(false),
            write_locations: Mutex::new(HashMap::new()),
            graphql_buckets: Mutex::new(HashMap::new()),
            graphql_limit: AtomicU64::new(graphql::DEFAULT_GRAPHQL_LIMIT),
            graphql_full: AtomicU64::new(0),
            graphql_comments: Mutex::new(HashMap::new()),
        }
    }

    async fn until_shutdown(&self) {
        let mut rx = self.shutdown.subscribe();
        // The sender lives in `self`, so this only returns once shutdown is set.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    fn limit_for(&self, who: &Identity) -> u64 {
        match who {
            Identity::Anonymous => ANONYMOUS_LIMIT,
            Identity::Token(_) => self.token_limit.load(Ordering::SeqCst),
        }
    }

    /// The bucket's state without spending from it or starting its window.
    fn peek(&self, who: &Identity) -> Rate {
        let limit = self.limit_for(who);
        let now = unix_now();
        match lock(&self.buckets).get(who) {
            Some(b) if now < b.reset_at => Rate {
                limit,
                used: b.used,
                reset: b.reset_at,
            },
            _ => Rate {
                limit,
                used: 0,
                reset: now + WINDOW_SECS,
            },
        }
    }

    /// Spends one request from the caller's bucket, or reports it exhausted.
    fn consume(&self, who: &Identity) -> Result<Rate, Rate> {
        spend(&self.buckets, who, self.limit_for(who))
    }

    /// The same from the caller's GraphQL bucket.
    fn consume_graphql(&self, who: &Identity) -> Result<Rate, Rate> {
        spend(
            &self.graphql_buckets,
            who,
            self.graphql_limit.load(Ordering::SeqCst),
        )
    }

    fn count(&self, counter: &AtomicU64, path_and_query: &str) {
        counter.fetch_add(1, Ordering::SeqCst);
        *lock(&self.per_path)
            .entry(path_and_query.to_string())
            .or_insert(0) += 1;
    }
}

/// Spends one request of `limit` from `who`'s bucket in `buckets`, or reports it
/// exhausted.
fn spend(
    buckets: &Mutex<HashMap<Identity, Bucket>>,
    who: &Identity,
    limit: u64,
) -> Result<Rate, Rate> {
    let now = unix_now();
    let mut buckets = lock(buckets);
    let fresh = Bucket {
        used: 0,
        reset_at: now + WINDOW_SECS,
    };
    let b = buckets.entry(who.clone()).or_insert(fresh);
    if now >= b.reset_at {
        *b = fresh;
    }
    if b.used >= limit {
        return Err(Rate {
            limit,
            used: b.used,
            reset: b.reset_at,
        });
    }
    b.used += 1;
    Ok(Rate {
        limit,
        used: b.used,
        reset: b.reset_at,
    })
}

/// A poisoned lock only means another request panicked; the counters and maps
/// behind it are still usable, and a test double should keep answering.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Identity {
    Anonymous,
    /// A fingerprint, not the token, so secrets never sit in the maps.
    Token(String),
}

impl Identity {
    fn from_headers(headers: &HeaderMap) -> Identity {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Identity::Anonymous;
        };
        // Unparseable credentials fall back to anonymous rather than 401: the
        // proxy under test is what should be checked for header hygiene.
        match value.trim().split_once(' ') {
            Some((scheme, token))
                if (scheme.eq_ignore_ascii_case("bearer")
                    || scheme.eq_ignore_ascii_case("token"))
                    && !token.trim().is_empty() =>
            {
                Identity::of_token(token)
            }
            _ => Identity::Anonymous,
        }
    }

    fn of_token(token: &str) -> Identity {
        // Actions job tokens draw on their repository's budget, as on GitHub; this
        // fake serves one repository's jobs.
        let token = token.trim();
        let whose = if token.starts_with("ghs_") {
            "ghs_"
        } else {
            token
        };
        let digest = sha256_hex(&["token", whose]);
        Identity::Token(digest[..16].to_string())
    }

    fn fingerprint(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::Token(fp) => fp,
        }
    }

    /// What GitHub names in its "rate limit exceeded for ..." message.
    fn describe(&self) -> String {
        match self {
            Identity::Anonymous => "127.0.0.1".to_string(),
            Identity::Token(fp) => format!("user ID {}", hash_u64(&["user", fp]) % 100_000_000),
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    used: u64,
    reset_at: u64,
}

struct Rate {
    limit: u64,
    used: u64,
    reset: u64,
}

impl Rate {
    fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    fn headers(&self) -> Headers {
        vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining().to_string()),
            ("x-ratelimit-reset", self.reset.to_string()),
            ("x-ratelimit-used", self.used.to_string()),
            ("x-ratelimit-resource", "core".to_string()),
        ]
    }

    fn to_json(&self) -> Value {
        json!({
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining(),
            "reset": self.reset,
        })
    }
}

type Headers = Vec<(&'static str, String)>;

const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
const CACHE_CONTROL: &str = "private, max-age=60, s-maxage=60";
const VARY: &str = "Accept, Authorization, Cookie, X-GitHub-OTP";
/// The REST API version GitHub answers with when the request names none.
const API_VERSION: &str = "2022-11-28";

fn build(status: StatusCode, headers: Headers, body: Bytes) -> Response {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body)).unwrap_or_else(|e| {
        // Only reachable if a header value built from the request is not a
        // legal header value; say so instead of dropping the connection.
        let mut resp = Response::new(Body::from(format!("fake_github: {e}")));
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        resp
    })
}

fn json_response(status: StatusCode, mut headers: Headers, body: &Value) -> Response {
    headers.push(("content-type", JSON_CONTENT_TYPE.to_string()));
    build(status, headers, Bytes::from(body.to_string()))
}

fn message(msg: &str, docs: &str) -> Value {
    json!({ "message": msg, "documentation_url": docs })
}

fn not_found(rate: &Rate) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        rate.headers(),
        &message("Not Found", DOCS_URL),
    )
}

fn rate_limited(who: &Identity, rate: &Rate) -> Response {
    let mut msg = format!("API rate limit exceeded for {}.", who.describe());
    if *who == Identity::Anonymous {
        msg.push_str(
            " (But here's the good news: Authenticated requests get a higher rate limit. \
             Check out the documentation for more details.)",
        );
    }
    json_response(
        StatusCode::FORBIDDEN,
        rate.headers(),
        &message(&msg, RATE_LIMIT_DOCS_URL),
    )
}

/// What a hung or delayed request gets once shutdown releases it.
fn unavailable() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Vec::new(),
        &message("Server shutting down", DOCS_URL),
    )
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.total.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&shared);
    {
        let mut log = lock(&shared.log);
        if log.len() == MAX_LOGGED {
            log.pop_front();
        }
        log.push_back(Logged {
            method: req.method().to_string(),
            path_and_query: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            authorization: req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            if_none_match: req
                .headers()
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            if_modified_since: req
                .headers()
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
    }

    let latency = Duration::from_nanos(shared.latency_nanos.load(Ordering::SeqCst));
    if !latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = shared.until_shutdown() => return unavailable(),
        }
    }

    let (parts, body) = req.into_parts();
    let fault = *lock(&shared.fault);
    match fault {
        Fault::None => {}
        Fault::ServerError => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                Vec::new(),
                &message("Server Error", DOCS_URL),
            )
        }
        Fault::RateLimited => {
            let who = Identity::from_headers(&parts.headers);
            let mut rate = shared.peek(&who);
            rate.used = rate.limit;
            return rate_limited(&who, &rate);
        }
        Fault::TooManyRequests => {
            return json_response(
                StatusCode::TOO_MANY_REQUESTS,
                vec![("retry-after", "60".to_string())],
                &message(SECONDARY_MESSAGE, SECONDARY_DOCS_URL),
            )
        }
        Fault::Hang => {
            shared.until_shutdown().await;
            return unavailable();
        }
        Fault::SecondaryLimit => {
            return json_response(
                StatusCode::FORBIDDEN,
                vec![("x-ratelimit-remaining", "4000".to_string())],
                &message(SECONDARY_MESSAGE, SECONDARY_DOCS_URL),
            )
        }
    }

    if parts.method == Method::POST && matches!(parts.uri.path(), "/graphql" | "/api/graphql") {
        return match axum::body::to_bytes(body, 8 << 20).await {
            Ok(bytes) => graphql::serve(&shared, &parts, &bytes),
            Err(_) => json_response(
                StatusCode::BAD_REQUEST,
                Vec::new(),
                &message("Problems parsing JSON", DOCS_URL),
            ),
        };
    }
    if parts.method == Method::GET || parts.method == Method::HEAD {
        // axum strips the body of HEAD responses but keeps the content-length
        // of the GET body, which is what GitHub does too.
        serve_get(&shared, &parts)
    } else {
        let mut answer = echo(&parts, body).await;
        let location = lock(&shared.write_locations)
            .get(parts.uri.path())
            .map(|l| format!("{}{l}", shared.base_url));
        if let Some(value) = location.and_then(|l| http::HeaderValue::from_str(&l).ok()) {
            if answer.status().is_success() {
                answer.headers_mut().insert(header::LOCATION, value);
            }
        }
        if answer.status().is_success() && !shared.noop_writes.load(Ordering::SeqCst) {
            // What a write changes reads differently afterwards: the target and the
            // collection it belongs to.
            let path = parts.uri.path().trim_end_matches('/').to_string();
            let mut versions = lock(&shared.versions);
            *versions.entry(path.clone()).or_insert(0) += 1;
            if let Some((parent, _)) = path.rsplit_once('/') {
                *versions.entry(parent.to_string()).or_insert(0) += 1;
            }
        }
        answer
    }
}

async fn echo(parts: &Parts, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, 8 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                Vec::new(),
                &message(&format!("Problems reading the body: {e}"), DOCS_URL),
            )
        }
    };
    let parsed = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let status = if parts.method == Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(
        status,
        Vec::new(),
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "body": parsed,
        }),
    )
}

fn serve_get(shared: &Shared, parts: &Parts) -> Response {
    let who = Identity::from_headers(&parts.headers);
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let path_and_query = parts.uri.path_and_query().map_or(path, |pq| pq.as_str());

    let route = Route::parse(path);
    if let Route::RateLimit = route {
        return rate_limit_status(&shared.peek(&who));
    }
    let owner = lock(&shared.private).get(path).cloned();
    if owner.is_some_and(|o| o != who) {
        return match shared.consume(&who) {
            Ok(rate) => not_found(&rate),
            Err(rate) => rate_limited(&who, &rate),
        };
    }
    if path == "/user" {
        // Who the token is: the answer that differs per token.
        let login = match &who {
            Identity::Anonymous => return not_found(&shared.peek(&who)),
            Identity::Token(fp) => format!("user-{fp}"),
        };
        return match shared.consume(&who) {
            Ok(rate) => json_response(StatusCode::OK, rate.headers(), &json!({ "login": login })),
            Err(rate) => rate_limited(&who, &rate),
        };
    }

    let pv = lock(&shared.versions).get(path).copied().unwrap_or(0);
    let gv = shared.global_version.load(Ordering::SeqCst);
    // A 404 spends quota on GitHub, so a proxy that hammers missing resources
    // must see its bucket drain here too.
    let Some(mut content) = render(&route, path, query, pv, gv, &shared.base_url) else {
        return match shared.consume(&who) {
            Ok(rate) => not_found(&rate),
            Err(rate) => rate_limited(&who, &rate),
        };
    };

    if shared.self_referencing.load(Ordering::SeqCst) {
        let own = String::from_utf8_lossy(&content.body).replace(API, &shared.base_url);
        content.body = Bytes::from(own);
    }
    let etag = etag_for(&who, &content.body);
    let modified = EPOCH + rev_hours(pv, gv) * 3600;
    let validators = vec![
        ("etag", etag.clone()),
        ("last-modified", http_date(modified)),
        ("cache-control", CACHE_CONTROL.to_string()),
        ("vary", VARY.to_string()),
        ("x-github-api-version-selected", API_VERSION.to_string()),
    ];

    // Checked before the quota: GitHub does not charge for a 304, so a
    // client with a valid validator still gets one when its bucket is empty.
    if is_not_modified(&parts.headers, &etag, modified) {
        shared.count(&shared.not_modified, path_and_query);
        let mut headers = validators;
        headers.extend(shared.peek(&who).headers());
        return build(StatusCode::NOT_MODIFIED, headers, Bytes::new());
    }

    let rate = match shared.consume(&who) {
        Ok(rate) => rate,
        Err(rate) => return rate_limited(&who, &rate),
    };
    shared.count(&shared.full, path_and_query);
    let mut headers = validators;
    headers.push(("content-type", JSON_CONTENT_TYPE.to_string()));
    headers.push(("x-github-media-type", "github.v3; format=json".to_string()));
    headers.extend(rate.headers());
    if let Some(link) = content.link {
        headers.push(("link", link));
    }
    build(StatusCode::OK, headers, content.body)
}

fn rate_limit_status(core: &Rate) -> Response {
    let reset_soon = unix_now() + 60;
    let small =
        |limit: u64| json!({ "limit": limit, "used": 0, "remaining": limit, "reset": reset_soon });
    let body = json!({
        "resources": {
            "core": core.to_json(),
            "search": small(30),
            "graphql": small(5000),
            "integration_manifest": small(5000),
            "source_import": small(100),
            "code_scanning_upload": small(1000),
            "actions_runner_registration": small(10000),
            "scim": small(15000),
            "dependency_snapshots": small(100),
            "code_search": small(10),
        },
        "rate": core.to_json(),
    });
    let mut headers = core.headers();
    headers.push(("cache-control", "no-cache".to_string()));
    json_response(StatusCode::OK, headers, &body)
}

/// ETags are scoped to the token like GitHub's, so a cache that hands one
/// user's validator to another gets a full response instead of a 304.
fn etag_for(who: &Identity, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(who.fingerprint().as_bytes());
    h.update([0u8]);
    h.update(body);
    let hex = hex::encode(h.finalize());
    format!("W/\"{}\"", &hex[..32])
}

fn is_not_modified(headers: &HeaderMap, etag: &str, modified: u64) -> bool {
    let current = strip_weak(etag);
    let mut if_none_match = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    // RFC 9110: If-Modified-Since is ignored when If-None-Match is present.
    if if_none_match.peek().is_some() {
        return if_none_match
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || strip_weak(tag) == current);
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .is_some_and(|since| since >= modified as i64)
}

fn strip_weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

enum Route<'a> {
    RateLimit,
    NotFound,
    Repo {
        owner: &'a str,
        repo: &'a str,
    },
    List {
        kind: ListKind,
        owner: &'a str,
        repo: &'a str,
    },
    /// Anything else gets a small deterministic object, so simulations can hit
    /// arbitrary endpoints without the fake having to know them.
    Generic,
}

#[derive(Clone, Copy)]
enum ListKind {
    Issues,
    Pulls,
    Commits,
    WorkflowRuns,
    Runners,
    Jobs { run_id: u64 },
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Route<'a> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let list = |kind, owner, repo| Route::List { kind, owner, repo };
        match segments.as_slice() {
            ["rate_limit"] => Route::RateLimit,
            ["notfound", ..] | ["repos", _, "missing", ..] => Route::NotFound,
            ["repos", owner, repo] => Route::Repo { owner, repo },
            ["repos", o, r, "issues"] => list(ListKind::Issues, o, r),
            ["repos", o, r, "pulls"] => list(ListKind::Pulls, o, r),
            ["repos", o, r, "commits"] => list(ListKind::Commits, o, r),
            ["repos", o, r, "actions", "runs"] => list(ListKind::WorkflowRuns, o, r),
            ["repos", o, r, "actions", "runners"] => list(ListKind::Runners, o, r),
            ["repos", o, r, "actions", "runs", id, "jobs"] => match id.parse() {
                Ok(run_id) => list(ListKind::Jobs { run_id }, o, r),
                Err(_) => Route::NotFound,
            },
            _ => Route::Generic,
        }
    }
}

struct Content {
    body: Bytes,
    link: Option<String>,
}

/// `None` means the resource does not exist (a 404).
fn render(
    route: &Route<'_>,
    path: &str,
    query: &str,
    pv: u64,
    gv: u64,
    base_url: &str,
) -> Option<Content> {
    let rev = rev_hours(pv, gv);
    let (value, link) = match *route {
        Route::Repo { owner, repo } => (repository(owner, repo, rev), None),
        Route::List { kind, owner, repo } => {
            let paging = Paging::parse(query);
            let ctx = Ctx {
                owner,
                repo,
                seed: format!("{path}\0{}\0{pv}\0{gv}", paging.others.join("&")),
                rev,
            };
            let items: Vec<Value> = paging
                .positions()
                .map(|pos| match kind {
                    ListKind::Issues => issue(&ctx, pos, &paging),
                    ListKind::Pulls => pull(&ctx, pos),
                    ListKind::Commits => commit(&ctx, pos),
                    ListKind::WorkflowRuns => workflow_run(&ctx, pos),
                    ListKind::Runners => runner(&ctx, pos),
                    ListKind::Jobs { run_id } => job(&ctx, run_id, pos),
                })
                .collect();
            let total = PAGES * paging.per_page;
            let value = match kind {
                ListKind::WorkflowRuns => json!({ "total_count": total, "workflow_runs": items }),
                ListKind::Runners => json!({ "total_count": total, "runners": items }),
                ListKind::Jobs { .. } => json!({ "total_count": total, "jobs": items }),
                _ => Value::Array(items),
            };
            (value, Some(paging.link(base_url, path)))
        }
        Route::Generic => (generic(path, query, pv, gv, rev), None),
        Route::RateLimit | Route::NotFound => return None,
    };
    Some(Content {
        body: Bytes::from(value.to_string()),
        link,
    })
}

/// Hours past `EPOCH` for the `updated_at`/Last-Modified of a version pair.
/// Any version bump moves it forward, so If-Modified-Since sees the change.
fn rev_hours(pv: u64, gv: u64) -> u64 {
    pv.saturating_add(gv).min(MAX_REV_HOURS)
}

struct Paging<'q> {
    per_page: usize,
    page: usize,
    /// The other raw `k=v` pairs, in request order, for the Link URLs.
    others: Vec<&'q str>,
}

impl<'q> Paging<'q> {
    fn parse(query: &'q str) -> Paging<'q> {
        let mut paging = Paging {
            per_page: DEFAULT_PER_PAGE,
            page: 1,
            others: Vec::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                // GitHub clamps oversized pages and ignores junk rather than failing.
                "per_page" => {
                    if let Ok(n) = value.parse::<usize>() {
                        if n >= 1 {
                            paging.per_page = n.min(MAX_PER_PAGE);
                        }
                    }
                }
                "page" => {
                    if let Ok(n) = value.parse::<usize>() {
                        paging.page = n.max(1);
                    }
                }
                _ => paging.others.push(pair),
            }
        }
        paging
    }

    /// Absolute positions in the full list; empty past the last page, as on GitHub.
    fn positions(&self) -> std::ops::Range<usize> {
        if self.page > PAGES {
            return 0..0;
        }
        let start = (self.page - 1) * self.per_page;
        start..start + self.per_page
    }

    /// GitHub's order is prev, next, last, first; each present only when it
    /// leads somewhere other than the current page.
    fn link(&self, base_url: &str, path: &str) -> String {
        let mut prefix = String::new();
        for pair in &self.others {
            prefix.push_str(pair);
            prefix.push('&');
        }
        let url = |page: usize| {
            format!(
                "<{base_url}{path}?{prefix}per_page={}&page={page}>",
                self.per_page
            )
        };
        let mut rels = Vec::new();
        if self.page > 1 {
            rels.push(format!("{}; rel=\"prev\"", url(self.page - 1)));
        }
        if self.page < PAGES {
            rels.push(format!("{}; rel=\"next\"", url(self.page + 1)));
            rels.push(format!("{}; rel=\"last\"", url(PAGES)));
        }
        if self.page > 1 {
            rels.push(format!("{}; rel=\"first\"", url(1)));
        }
        rels.join(", ")
    }
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        // Separator keeps ("ab","c") and ("a","bc") from colliding.
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

fn hash_u64(parts: &[&str]) -> u64 {
    let hex = sha256_hex(parts);
    u64::from_str_radix(&hex[..16], 16).unwrap_or(0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Hand-rolled IMF-fixdate because the dependency set is fixed and only
/// this one format (which we emit ourselves) needs round-tripping.
fn http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let rem = secs % 86_400;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Accepts IMF-fixdate only; per RFC 9110 an unparseable date is ignored,
/// which here means "not a conditional request".
fn parse_http_date(s: &str) -> Option<i64> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    let [_weekday, day, month, year, time, "GMT"] = fields.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|t| t.parse::<i64>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + sec)
}

fn iso(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian, days
// relative to 1970-01-01).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_round_trips() {
        for secs in [
            0,
            EPOCH,
            EPOCH + 12_345_678,
            951_782_400, /* 2000-02-29 */
        ] {
            assert_eq!(parse_http_date(&http_date(secs)), Some(secs as i64));
        }
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(iso(EPOCH), "2024-01-01T00:00:00Z");
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
