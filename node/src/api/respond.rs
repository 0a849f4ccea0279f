//! Turning a served answer into the client's response: GitHub's headers, current
//! quota headers, `x-ghmesh-cache` and `Cache-Status`, URLs pointing back at the proxy,
//! `HEAD`, and `304` for the client's own conditional requests.

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use super::fidelity;
use crate::node::{Body as Answer, CacheStatus, Node, Served};

/// Response headers passed from upstream answers to the client.
const PASS_HEADERS: &[&str] = &[
    "content-type",
    "etag",
    "last-modified",
    "link",
    "x-github-media-type",
    "x-github-request-id",
    "retry-after",
    "location",
    "cache-control",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
    "vary",
    "x-github-api-version-selected",
];

/// A `304` when the client already holds the fresh entry it asked for (its own
/// `If-None-Match` / `If-Modified-Since`), with the validators and our cache headers.
pub(super) fn answer_conditional(
    served: &Served,
    (if_none_match, if_modified_since): &(Option<String>, Option<String>),
) -> Option<Response> {
    let Answer::Entry(e) = &served.body else {
        return None;
    };
    if served.status == CacheStatus::Stale
        || (if_none_match.is_none() && if_modified_since.is_none())
    {
        return None;
    }
    let (etag, last_modified) = (e.meta.header("etag"), e.meta.header("last-modified"));
    if !fidelity::client_has_it(
        if_none_match.as_deref(),
        if_modified_since.as_deref(),
        etag,
        last_modified,
    ) {
        return None;
    }
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    for name in ["etag", "last-modified", "cache-control", "vary"] {
        if let Some(v) = e
            .meta
            .header(name)
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    let status = served.status;
    h.insert("x-ghmesh-cache", HeaderValue::from_static(status.as_str()));
    if let Ok(v) = HeaderValue::from_str(&fidelity::cache_status(status, 200, served.stored)) {
        h.insert("cache-status", v);
    }
    Some(resp)
}

/// A response as status, headers and body, independent of the HTTP library: the API
/// and `ghmesh api` (working alone) render the same thing.
#[derive(Debug, Clone)]
pub struct ResponseParts {
    /// HTTP status.
    pub status: u16,
    /// Headers in order, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

/// Builds the client-facing response for a served request: GitHub's headers, current
/// rate-limit headers, `x-ghmesh-cache`, and `Link` rewritten to `local_base`.
pub fn response_parts(
    node: &Node,
    served: &Served,
    upstream_base: &str,
    local_base: &str,
    rewrite_bodies: bool,
) -> ResponseParts {
    let (status, src_headers, mut body) = match &served.body {
        Answer::Entry(e) => (e.meta.status, e.meta.headers.clone(), e.body.clone()),
        Answer::Upstream(r) => (r.status, r.headers.clone(), r.body.clone()),
    };
    let content_type = src_headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    if rewrite_bodies && !upstream_base.is_empty() && fidelity::is_json(content_type) {
        if let Some(rewritten) = fidelity::rewrite_json_urls(&body, upstream_base, local_base) {
            body = Bytes::from(rewritten);
        }
    }
    let from_entry = matches!(served.body, Answer::Entry(_));
    // An entry's quota headers describe the moment it was fetched: current ones are
    // added below (its x-ratelimit-resource, a property of the endpoint, stays).
    let stale_quota =
        |k: &str| from_entry && k.starts_with("x-ratelimit") && k != "x-ratelimit-resource";
    let mut headers: Vec<(String, String)> = src_headers
        .into_iter()
        .filter(|(k, _)| PASS_HEADERS.contains(&k.as_str()))
        .filter(|(k, _)| !stale_quota(k))
        .map(|(k, v)| {
            let v = match k.as_str() {
                "link" => rewrite_link(&v, upstream_base, local_base),
                "location" => rewrite_location(&v, upstream_base, local_base),
                _ => v,
            };
            (k, v)
        })
        .collect();
    if matches!(served.body, Answer::Entry(_)) {
        let rl = node.upstream().rate_limit();
        for (name, v) in [
            ("x-ratelimit-limit", rl.limit),
            ("x-ratelimit-remaining", rl.remaining),
            ("x-ratelimit-reset", rl.reset),
            ("x-ratelimit-used", rl.used),
        ] {
            if let Some(v) = v {
                headers.push((name.to_string(), v.to_string()));
            }
        }
    }
    headers.push(("x-ghmesh-cache".into(), served.status.as_str().into()));
    headers.push((
        "cache-status".into(),
        fidelity::cache_status(served.status, status, served.stored),
    ));
    ResponseParts {
        status,
        headers,
        body,
    }
}

pub(super) fn into_response(parts: ResponseParts, head: bool) -> Response {
    let status = StatusCode::from_u16(parts.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let length = parts.body.len();
    let mut resp = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(parts.body))
    };
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if head {
        // The GET's length, as RFC 9110 §9.3.2 allows and clients expect.
        h.insert(
            axum::http::header::CONTENT_LENGTH,
            HeaderValue::from(length),
        );
    }
    for (k, v) in parts.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            h.append(k, v);
        }
    }
    resp
}

/// Points `Link` URLs at this API instead of GitHub, so that clients paginate through
/// the cache.
pub fn rewrite_link(link: &str, upstream_base: &str, local_base: &str) -> String {
    if upstream_base.is_empty() {
        return link.to_string();
    }
    link.replace(&format!("<{upstream_base}"), &format!("<{local_base}"))
}

/// Points a `Location` on GitHub (a write's new resource, a redirect) at this API, as
/// `Link` URLs are, so that a client following it reads through the cache. Only a URL
/// under the upstream base is changed: `https://api.github.com.example/` is not.
pub fn rewrite_location(location: &str, upstream_base: &str, local_base: &str) -> String {
    match location.strip_prefix(upstream_base) {
        Some(rest)
            if !upstream_base.is_empty()
                && (rest.is_empty() || rest.starts_with(['/', '?', '#'])) =>
        {
            format!("{local_base}{rest}")
        }
        _ => location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_on_github_points_back_at_the_api() {
        let gh = "https://api.github.com";
        let local = "http://127.0.0.1:7711";
        assert_eq!(
            rewrite_location(
                "https://api.github.com/repos/o/r/issues/comments/7",
                gh,
                local
            ),
            "http://127.0.0.1:7711/repos/o/r/issues/comments/7"
        );
        for elsewhere in [
            "https://api.github.com.example/x",
            "https://github.com/o/r/issues/7",
            "/relative/path",
        ] {
            assert_eq!(rewrite_location(elsewhere, gh, local), elsewhere);
        }
        assert_eq!(rewrite_location("https://x/y", "", local), "https://x/y");
    }

    #[test]
    fn links_point_back_at_the_api() {
        let link = r#"<https://api.github.com/repos/o/r/issues?page=2>; rel="next", <https://api.github.com/repos/o/r/issues?page=5>; rel="last""#;
        let out = rewrite_link(link, "https://api.github.com", "http://127.0.0.1:7711");
        assert_eq!(
            out,
            r#"<http://127.0.0.1:7711/repos/o/r/issues?page=2>; rel="next", <http://127.0.0.1:7711/repos/o/r/issues?page=5>; rel="last""#
        );
        assert_eq!(
            rewrite_link(
                "<https://elsewhere/x>; rel=\"next\"",
                "https://api.github.com",
                "http://l"
            ),
            "<https://elsewhere/x>; rel=\"next\""
        );
    }
}
