//! `POST /graphql` (also `/api/graphql`, and `/api/v3/graphql` through the GHES
//! prefix) through the node, as contract §9 says:
//!
//! - a query is read through the fleet cache like a REST `GET`, keyed by its normalised
//!   document, operation name and canonical variables; only a `200` without `errors`
//!   is stored and shared (decided in `policy::upstream::classify_graphql_response`);
//! - a query that reads per-token fields (`viewer`, `rateLimit`, `viewer…`) goes
//!   upstream with the asker's token and is never stored or shared, as is one too
//!   large to share;
//! - mutations, subscriptions and documents that do not parse pass through with
//!   exactly the client's `Authorization` (`401` without), and a mutation answered
//!   `200` without `errors` makes every cached GraphQL answer stale, here and on every
//!   member.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use ghmesh_protocol::graphql::{GraphqlRequest, OperationKind, MAX_SHARED_QUERY};
use ghmesh_protocol::{CanonicalRequest, GRAPHQL_PATH};

use super::{credential, forward_upstream, max_age, ApiState, Refusal, MAX_REQUEST_BODY};
use crate::node::{Body as Answer, CacheStatus, GetError, Served};
use crate::policy::upstream::{graphql_errors, GraphqlErrors};

/// Whether `pq` (after the GHES prefix is taken off) is GitHub's GraphQL endpoint.
pub(super) fn is_graphql_path(pq: &str) -> bool {
    let path = pq.split('?').next().unwrap_or("");
    matches!(path.trim_end_matches('/'), "/graphql" | "/api/graphql")
}

/// Serves a GraphQL request: what was served, and whether it was a read through the
/// cache (for how a failure is labelled).
pub(super) async fn serve(
    s: &ApiState,
    req: Request,
) -> Result<(Result<Served, GetError>, bool), Refusal> {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BODY).await else {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is too large",
        ));
    };
    let counters = s.node.counters();
    match GraphqlRequest::parse(&body) {
        Ok(g) if g.kind == OperationKind::Query => query(s, &parts.headers, g, body).await,
        parsed => {
            counters.graphql_bypassed.inc();
            // What we cannot parse may be a mutation GitHub can: treated as one.
            let may_write = !matches!(&parsed, Ok(g) if g.kind == OperationKind::Subscription);
            Ok((
                pass_through(s, &parts.headers, body, may_write).await?,
                false,
            ))
        }
    }
}

/// A query: through the cache with the node's token or the client's, as a `GET` is.
async fn query(
    s: &ApiState,
    headers: &HeaderMap,
    g: GraphqlRequest,
    body: Bytes,
) -> Result<(Result<Served, GetError>, bool), Refusal> {
    let counters = s.node.counters();
    let Some(cred) = credential(s, &Method::GET, headers)? else {
        // A client token while the node is told to pass such reads through.
        counters.graphql_bypassed.inc();
        let headers = without_validators(headers);
        let forwarded = forward_upstream(s, &headers, body, "POST", GRAPHQL_PATH).await;
        return Ok((forwarded, false));
    };
    let max_age = max_age(headers)?;
    let Some(mut q) = g.query() else {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "not a GraphQL query"));
    };
    if q.len() <= MAX_SHARED_QUERY && q.check().is_err() {
        // The normalised document is what goes upstream, with the node's token: one
        // that is not the query the client sent is not read through the cache.
        counters.graphql_bypassed.inc();
        return Ok((pass_through(s, headers, body, true).await?, false));
    }
    // Too large to send to a peer: read alone, as a per-token query is.
    q.per_token |= q.len() > MAX_SHARED_QUERY;
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let req = CanonicalRequest::graphql(q, header("accept"), header("x-github-api-version"))
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("bad request: {e}")))?;
    let alone = req.varies_by_identity();
    let served = s.node.get_within(req, cred, max_age).await;
    let counter = match &served {
        _ if alone => &counters.graphql_bypassed,
        Ok(sv) if sv.status == CacheStatus::Miss => &counters.graphql_misses,
        Ok(sv) if sv.status == CacheStatus::Bypass => &counters.graphql_bypassed,
        Ok(_) => &counters.graphql_hits,
        Err(_) => &counters.graphql_misses,
    };
    counter.inc();
    Ok((served, true))
}

/// A mutation, subscription or unparsable document: upstream with exactly the
/// client's headers but its validators (`401` without its own `Authorization`). What
/// `may_write` (a mutation, or a document we could not read) and succeeded makes every
/// cached GraphQL answer stale, here and fleet-wide, before the client hears back:
/// GraphQL answers are not keyed by what they read.
async fn pass_through(
    s: &ApiState,
    headers: &HeaderMap,
    body: Bytes,
    may_write: bool,
) -> Result<Result<Served, GetError>, Refusal> {
    credential(s, &Method::POST, headers)?;
    let headers = without_validators(headers);
    let forwarded = forward_upstream(s, &headers, body, "POST", GRAPHQL_PATH).await;
    if let Ok(Served {
        body: Answer::Upstream(resp),
        ..
    }) = &forwarded
    {
        if may_write && resp.status == 200 && graphql_errors(&resp.body) == GraphqlErrors::None {
            let at = s.node.clock().now_ms();
            if let Err(e) = s.node.invalidate(vec![GRAPHQL_PATH.into()], at, true).await {
                tracing::warn!("invalidation after a GraphQL mutation failed: {e}");
            }
        }
    }
    Ok(forwarded)
}

/// The client's headers without validators: GraphQL has no conditional requests, and
/// GitHub answers one with `412`.
fn without_validators(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    for name in [
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
    ] {
        headers.remove(name);
    }
    headers
}
