//! The local HTTP API (contract §4): a GitHub REST reverse proxy through the cache,
//! plus `/_ghmesh/{health,stats,peers,metrics,history}` and the operators' page at
//! `/_ghmesh/` (contract §11).
//!
//! Every request first passes [`guard`]: a `Host` we do not answer to gets `421`, a
//! foreign `Origin` gets `403`. Writes are the client's own business: without its own
//! `Authorization` a non-GET request gets `401` and nothing goes upstream; with one, it
//! is forwarded with exactly that header (the node's token is lent only to cacheable
//! reads).

mod dashboard;
pub mod fidelity;
mod graphql;
pub mod guard;
mod respond;

use respond::{answer_conditional, into_response};
pub use respond::{response_parts, rewrite_link, ResponseParts};

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ghmesh_protocol::{is_safe_path, CanonicalRequest};
use tokio::net::TcpListener;

use crate::node::{Body as Answer, GetError, Node, Served};
use crate::upstream::{ClientToken, Credential};

/// A read that accepts a local copy fetched within this many seconds, even if expired
/// (what `ghmesh api --cache DURATION` sends).
pub const MAX_AGE_HEADER: &str = "x-ghmesh-max-age";

pub use crate::limits::{MAX_HEADER_BYTES, MAX_REQUEST_BODY};

#[derive(Clone)]
struct ApiState {
    node: Node,
    upstream_base: String,
    local_addr: SocketAddr,
    hosts: guard::AllowedHosts,
    client_tokens: ClientTokens,
    rewrite_bodies: bool,
}

/// Serves the API on `listener` until `shutdown` completes; requests in flight finish.
/// How the API is served.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// GitHub's base URL, as `--upstream` (for rewriting `Link` URLs).
    pub upstream_base: String,
    /// Names (from `--api-host`) the API answers to besides loopback names and its
    /// bound address.
    pub hosts: Vec<String>,
    /// Timeouts of the HTTP server.
    pub limits: ServerLimits,
    /// What a read with the client's own token does.
    pub client_tokens: ClientTokens,
    /// Leave URLs in JSON bodies as GitHub sent them (`--no-rewrite-bodies`).
    pub no_rewrite_bodies: bool,
}

/// Bounds of the HTTP server: a client can hold a connection only so long without
/// sending a request, and shutdown waits only so long for requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// The whole request head must arrive within this; it also closes keep-alive
    /// connections idle for that long (the timer runs while a head is awaited).
    pub header_read: Duration,
    /// Requests in flight at shutdown get this long to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes; requests in flight then
/// get [`ServerLimits::shutdown_grace`] to finish.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    cfg: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let local_addr = listener.local_addr()?;
    let app = router(node, &cfg, local_addr);
    let connections = GracefulShutdown::new();
    // Owned connection tasks: reaped as they end, aborted if shutdown's grace runs out.
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.limits.header_read)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = connections.watch(conn);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!("API connection: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(cfg.limits.shutdown_grace, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {:?}; stopping anyway",
            cfg.limits.shutdown_grace
        );
    }
    tasks.abort_all();
    Ok(())
}

/// The API router.
fn router(node: Node, cfg: &ApiConfig, local_addr: SocketAddr) -> Router {
    let state = ApiState {
        node,
        upstream_base: cfg.upstream_base.trim_end_matches('/').to_string(),
        local_addr,
        hosts: guard::AllowedHosts::new(local_addr, &cfg.hosts),
        client_tokens: cfg.client_tokens,
        rewrite_bodies: !cfg.no_rewrite_bodies,
    };
    Router::new()
        .route("/_ghmesh/health", get(health))
        .route("/_ghmesh/stats", get(stats))
        .route("/_ghmesh/peers", get(peers))
        .route("/_ghmesh/metrics", get(metrics))
        .route("/_ghmesh/", get(dashboard::status_page))
        .route("/_ghmesh", get(dashboard::status_page))
        .route("/_ghmesh/history", get(dashboard::history))
        .fallback(proxy)
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .with_state(state)
}

/// `200 ok`, or `503 degraded: <reason>` while the store cannot write.
async fn health(State(s): State<ApiState>) -> Response {
    match s.node.degraded() {
        None => "ok".into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: {reason}"),
        )
            .into_response(),
    }
}

/// The `Host` and `Origin` checks, for every route.
async fn admit(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(refusal) = refuse(&s.hosts, req.headers()) {
        return refusal;
    }
    next.run(req).await
}

/// `Some(answer)` when the request's `Host` or `Origin` is not ours.
fn refuse(hosts: &guard::AllowedHosts, headers: &HeaderMap) -> Option<Response> {
    let header = |name| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    if header(axum::http::header::HOST).is_some_and(|h| !hosts.admits_host(h)) {
        return Some(json_error(
            StatusCode::MISDIRECTED_REQUEST,
            "this API does not answer to that Host; use 127.0.0.1, localhost, or a name given with --api-host",
        ));
    }
    if header(axum::http::header::ORIGIN).is_some_and(|o| !hosts.admits_origin(o)) {
        return Some(json_error(
            StatusCode::FORBIDDEN,
            "cross-origin requests to this API are refused",
        ));
    }
    None
}

async fn stats(State(s): State<ApiState>) -> Response {
    axum::Json(s.node.stats().await).into_response()
}

async fn peers(State(s): State<ApiState>) -> Response {
    axum::Json(s.node.peers().await).into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.node.metrics().await,
    )
        .into_response()
}

/// A JSON error in GitHub's shape.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// The client's own token: an `Authorization` that is not the node's own token.
fn own_authorization(
    headers: &HeaderMap,
    upstream_token_fp: Option<[u8; 8]>,
) -> Option<ClientToken> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok())?;
    let token = ClientToken::from_header(auth);
    (Some(token.fingerprint()) != upstream_token_fp).then_some(token)
}

/// What a cacheable read with the client's own token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTokens {
    /// Served from the fleet cache; a miss is fetched with the client's token and a
    /// 200 is shared; errors go back to that client only.
    #[default]
    Share,
    /// Passed through untouched, never cached (`x-ghmesh-cache: bypass`).
    Bypass,
}

/// A GitHub request through the node: checked, then read through the cache or passed
/// through, then answered as GitHub would.
async fn proxy(State(s): State<ApiState>, req: Request) -> Response {
    proxy_checked(&s, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The node's own refusal of a request, answered as a JSON error in GitHub's shape.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        json_error(self.0, &self.1)
    }
}

async fn proxy_checked(s: &ApiState, req: Request) -> Result<Response, Refusal> {
    check_header_size(req.headers())?;
    let method = req.method().clone();
    let head = method == Method::HEAD;
    let sent = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // `/api/v3/...` (GHES-style base URLs) is served as `...`; URLs handed back keep it.
    let (prefix, pq) = fidelity::split_prefix(sent);
    let pq = pq.to_string();
    check_path(&pq)?;
    let local_base = format!("{}{prefix}", local_base(req.headers(), s.local_addr));
    let (served, cacheable, client_validators) =
        if method == Method::POST && graphql::is_graphql_path(&pq) {
            // GraphQL has no conditional requests: a client's validators mean nothing.
            let (served, cacheable) = graphql::serve(s, req).await?;
            (served, cacheable, (None, None))
        } else {
            let client_validators = (
                header_string(req.headers(), "if-none-match"),
                header_string(req.headers(), "if-modified-since"),
            );
            let (served, cacheable) = rest(s, req, &method, &pq).await?;
            (served, cacheable, client_validators)
        };
    Ok(match served {
        Ok(served) => match answer_conditional(&served, &client_validators) {
            Some(not_modified) => not_modified,
            None => {
                let parts = response_parts(
                    &s.node,
                    &served,
                    &s.upstream_base,
                    &local_base,
                    s.rewrite_bodies,
                );
                into_response(parts, head)
            }
        },
        Err(e) => failed(&e, cacheable),
    })
}

/// A REST request: a `GET` or `HEAD` read through the cache, anything else passed
/// through. Also says whether it was a read through the cache.
async fn rest(
    s: &ApiState,
    req: Request,
    method: &Method,
    pq: &str,
) -> Result<(Result<Served, GetError>, bool), Refusal> {
    let cred = credential(s, method, req.headers())?;
    let max_age = max_age(req.headers())?;
    let cacheable = (*method == Method::GET || *method == Method::HEAD) && cred.is_some();
    Ok(match cred.filter(|_| cacheable) {
        Some(cred) => {
            // Body is not Sync: nothing borrowed from the request may live across an
            // await, so the request is made canonical first.
            let canonical = canonical_get(req.headers(), pq)?;
            (s.node.get_within(canonical, cred, max_age).await, true)
        }
        None => (pass_through(s, req, method, pq).await?, false),
    })
}

/// `431` when the request's headers are larger than [`MAX_HEADER_BYTES`] in total.
fn check_header_size(headers: &HeaderMap) -> Result<(), Refusal> {
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers are too large",
        ));
    }
    Ok(())
}

/// `400` for a path that could reach outside what it names.
fn check_path(pq: &str) -> Result<(), Refusal> {
    let path = pq.split('?').next().unwrap_or("");
    if !is_safe_path(path) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad request: the path has an encoded '.', '/' or '\\', a backslash, or a dot segment",
        ));
    }
    Ok(())
}

/// Whose token a read goes upstream with: the node's (`Some(Node)`), the client's own
/// shared through the cache (`Some(Client)`), or none (passed through untouched). A
/// write without the client's own token is refused: the node's token is lent only for
/// cacheable reads (contract §2).
fn credential(
    s: &ApiState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Credential>, Refusal> {
    let read = *method == Method::GET || *method == Method::HEAD;
    if !(read || headers.contains_key("authorization")) {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "ghmesh forwards writes only with your own token: send Authorization: Bearer <token>",
        ));
    }
    Ok(
        match own_authorization(headers, s.node.upstream().token_fingerprint()) {
            None => Some(Credential::Node),
            Some(token) if s.client_tokens == ClientTokens::Share => {
                Some(Credential::Client(token))
            }
            Some(_) => None,
        },
    )
}

/// The client's [`MAX_AGE_HEADER`], at most a year.
fn max_age(headers: &HeaderMap) -> Result<Option<Duration>, Refusal> {
    match headers
        .get(MAX_AGE_HEADER)
        .map(|v| v.to_str().map(str::parse::<u64>))
    {
        None => Ok(None),
        Some(Ok(Ok(secs))) if secs <= 366 * 24 * 3600 => Ok(Some(Duration::from_secs(secs))),
        Some(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "x-ghmesh-max-age must be a number of seconds up to a year",
        )),
    }
}

/// The cache's form of a read (`400` when it has none).
fn canonical_get(headers: &HeaderMap, pq: &str) -> Result<CanonicalRequest, Refusal> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    CanonicalRequest::new("GET", pq, header("accept"), header("x-github-api-version"))
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("bad request: {e}")))
}

/// Anything else, forwarded upstream untouched with the client's own headers; a write
/// that succeeded makes what it changed stale, here and fleet-wide, before the client
/// hears back.
async fn pass_through(
    s: &ApiState,
    req: Request,
    method: &Method,
    pq: &str,
) -> Result<Result<Served, GetError>, Refusal> {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BODY).await else {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is too large",
        ));
    };
    // A HEAD passed through is sent upstream as a GET: its answer carries no body, and
    // the client is owed the length of the body it would get (rewritten URLs
    // included), which only the GET's body gives.
    let sent_method = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let forwarded = forward_upstream(s, &parts.headers, body, sent_method, pq).await;
    if let Ok(answer) = &forwarded {
        invalidate_after_write(s, method.as_str(), pq, answer).await;
    }
    Ok(forwarded)
}

/// Sends a request upstream untouched, with exactly the client's headers.
async fn forward_upstream(
    s: &ApiState,
    headers: &HeaderMap,
    body: bytes::Bytes,
    method: &str,
    pq: &str,
) -> Result<Served, GetError> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    s.node.forward(method, pq, headers, body).await
}

/// The node's own answer when nothing was served: a JSON error in GitHub's shape,
/// labelled like any proxied answer, so that the client can tell a failed read through
/// the cache from one passed through, and why nothing was served.
fn failed(e: &GetError, cacheable: bool) -> Response {
    let (status, message, detail) = match e {
        GetError::Upstream(e) => (
            StatusCode::BAD_GATEWAY,
            format!("GitHub is unreachable: {e}"),
            "upstream-unreachable",
        ),
        GetError::Busy => (StatusCode::SERVICE_UNAVAILABLE, e.to_string(), "busy"),
        GetError::Store { .. } => (StatusCode::SERVICE_UNAVAILABLE, e.to_string(), "store"),
        // Closed, and whatever a later version adds: the node cannot answer.
        _ => (StatusCode::SERVICE_UNAVAILABLE, e.to_string(), "closed"),
    };
    let mut resp = json_error(status, &message);
    let h = resp.headers_mut();
    if matches!(e, GetError::Busy) {
        h.insert("retry-after", HeaderValue::from_static("1"));
    }
    let how = if cacheable {
        crate::node::CacheStatus::Miss
    } else {
        crate::node::CacheStatus::Bypass
    };
    h.insert("x-ghmesh-cache", HeaderValue::from_static(how.as_str()));
    if let Ok(v) = HeaderValue::from_str(&fidelity::failed_cache_status(how, detail)) {
        h.insert("cache-status", v);
    }
    resp
}

/// After a successful write: what it changed is stale here and on every member
/// before the client hears back, so its next read never sees the old answer.
async fn invalidate_after_write(s: &ApiState, method: &str, pq: &str, answer: &Served) {
    let Answer::Upstream(resp) = &answer.body else {
        return;
    };
    let location = resp
        .header("location")
        .and_then(|l| l.strip_prefix(s.upstream_base.as_str()))
        .map(|l| l.split(['?', '#']).next().unwrap_or(l));
    let path = pq.split('?').next().unwrap_or(pq);
    let paths = crate::policy::invalidated_paths(method, path, resp.status, location);
    let at = s.node.clock().now_ms();
    match s.node.invalidate(paths, at, true).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(n, path, "write invalidated cached reads"),
        Err(e) => tracing::warn!(path, "invalidation after a write failed: {e}"),
    }
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn local_base(headers: &HeaderMap, addr: SocketAddr) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.len() < 256 && !h.contains(['/', ' ', '<', '>']))
        .map(str::to_string)
        .unwrap_or_else(|| addr.to_string());
    format!("http://{host}")
}

/// Binds the API address; port 0 picks a free port.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_own_token_is_told_apart_from_the_nodes() {
        let fp = Some(ghmesh_protocol::token_fingerprint("ghp_ours"));
        let mut h = HeaderMap::new();
        assert!(own_authorization(&h, fp).is_none(), "no header: use ours");
        h.insert("authorization", HeaderValue::from_static("Bearer ghp_ours"));
        assert!(
            own_authorization(&h, fp).is_none(),
            "same token: the node's"
        );
        h.insert("authorization", HeaderValue::from_static("token ghp_ours"));
        assert!(own_authorization(&h, fp).is_none());
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer ghp_theirs"),
        );
        let theirs = own_authorization(&h, fp).unwrap();
        assert_eq!(
            theirs.header(),
            "Bearer ghp_theirs",
            "sent exactly as given"
        );
        assert_eq!(
            theirs.fingerprint(),
            ghmesh_protocol::token_fingerprint("ghp_theirs")
        );
        assert!(
            !format!("{theirs:?}").contains("ghp_theirs"),
            "never logged"
        );
        assert!(
            own_authorization(&h, None).is_some(),
            "any token while we are anonymous is the client's"
        );
    }
}
