//! What makes the proxy look like GitHub to real clients (PyGithub, octokit, go-github,
//! gh, curl): URLs in JSON bodies that point back at the proxy, answers to the client's
//! own conditional requests, GHES-style `/api/v3` paths, and RFC 9211 `Cache-Status`.
//! Plain functions of their inputs.

use std::time::SystemTime;

use crate::node::CacheStatus;

/// The GHES-style prefix tools such as go-github's `WithEnterpriseURLs` put before
/// every path.
pub const GHES_PREFIX: &str = "/api/v3";

/// A request path as the client sent it, split into the prefix it used (kept in the
/// URLs we hand back) and the GitHub path. A leading `//` (a base URL given with a
/// trailing slash) counts as one `/`.
pub fn split_prefix(path_and_query: &str) -> (&'static str, String) {
    let trimmed = format!("/{}", path_and_query.trim_start_matches('/'));
    match trimmed.strip_prefix(GHES_PREFIX) {
        Some(rest) if rest.is_empty() || rest.starts_with('?') => (GHES_PREFIX, format!("/{rest}")),
        Some(rest) if rest.starts_with('/') => {
            (GHES_PREFIX, format!("/{}", rest.trim_start_matches('/')))
        }
        _ => ("", trimmed),
    }
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2): `W/` is ignored.
fn weak_eq(a: &str, b: &str) -> bool {
    let opaque = |t: &str| {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t).to_string()
    };
    opaque(a) == opaque(b)
}

/// The entity tags of an `If-None-Match` list (`*` is returned as itself). Tags may
/// contain commas inside their quotes, so the list is read tag by tag.
fn tags(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        if let Some(r) = rest.strip_prefix('*') {
            out.push("*");
            rest = r;
            continue;
        }
        let start = rest;
        let body = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(quoted) = body.strip_prefix('"') else {
            break; // not a tag: stop rather than guess
        };
        let Some(end) = quoted.find('"') else {
            break;
        };
        let len = (start.len() - quoted.len()) + end + 1;
        out.push(&start[..len]);
        rest = &start[len..];
    }
    out
}

/// Does the client already hold this representation? `If-None-Match` decides when
/// present (weak comparison; `*` matches any entry); otherwise `If-Modified-Since` not
/// older than the entry's `Last-Modified`.
pub fn client_has_it(
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> bool {
    if let Some(list) = if_none_match {
        return tags(list)
            .iter()
            .any(|t| *t == "*" || etag.is_some_and(|e| weak_eq(t, e)));
    }
    let date =
        |v: Option<&str>| -> Option<SystemTime> { httpdate::parse_http_date(v?.trim()).ok() };
    match (date(if_modified_since), date(last_modified)) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// Rewrites, in one pass, every JSON string that begins with `from` (the upstream base)
/// to begin with `to` (the proxy's base as the client reached it). Every other byte
/// stays as GitHub sent it (key order, number formatting, escapes). Only a whole host
/// matches: `from` must be followed by `/`, `?`, `#`, `{` or the end of the string.
/// `None` when nothing changed.
pub fn rewrite_json_urls(body: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    let f = from.as_bytes();
    if f.is_empty() || !body.windows(f.len()).any(|w| w == f) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut changed = false;
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        out.push(b);
        i += 1;
        if in_string {
            match b {
                b'\\' => {
                    if let Some(&escaped) = body.get(i) {
                        out.push(escaped);
                        i += 1;
                    }
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
            let rest = &body[i..];
            if rest.starts_with(f)
                && matches!(rest.get(f.len()), Some(b'/' | b'?' | b'#' | b'{' | b'"'))
            {
                out.extend_from_slice(to.as_bytes());
                i += f.len();
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// Is this a JSON response (`application/json`, `application/vnd.github…+json`)?
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        media == "application/json" || media.ends_with("+json")
    })
}

/// The RFC 9211 `Cache-Status` value for an answer. `status` is the HTTP status of
/// what was served; `stored` whether the entry is durably in the store.
pub fn cache_status(how: CacheStatus, status: u16, stored: bool) -> String {
    let stored = if stored { "; stored" } else { "" };
    match how {
        CacheStatus::Hit => "ghmesh; hit".into(),
        CacheStatus::Peer => "ghmesh; hit; detail=peer".into(),
        CacheStatus::Miss => format!("ghmesh; fwd=miss; fwd-status={status}{stored}"),
        CacheStatus::Revalidated => format!("ghmesh; fwd=stale; fwd-status=304{stored}"),
        CacheStatus::Coalesced => "ghmesh; fwd=miss; collapsed".into(),
        CacheStatus::Stale => "ghmesh; fwd=stale; detail=upstream-failed".into(),
        CacheStatus::Bypass => format!("ghmesh; fwd=request; fwd-status={status}"),
        CacheStatus::Held => "ghmesh; fwd=miss; detail=rate-limit-held".into(),
    }
}

/// The RFC 9211 `Cache-Status` of an error the node answers itself (`502` upstream
/// unreachable, `503` busy or the store failing): forwarded (`fwd=miss` for a read
/// through the cache, `fwd=request` for one passed through), nothing stored, and why
/// in `detail`.
pub fn failed_cache_status(how: CacheStatus, detail: &str) -> String {
    let fwd = match how {
        CacheStatus::Bypass => "request",
        _ => "miss",
    };
    format!("ghmesh; fwd={fwd}; detail={detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_double_slashes() {
        assert_eq!(split_prefix("/repos/o/r"), ("", "/repos/o/r".into()));
        assert_eq!(
            split_prefix("//repos/o/r?x=1"),
            ("", "/repos/o/r?x=1".into())
        );
        assert_eq!(
            split_prefix("/api/v3/repos/o/r"),
            (GHES_PREFIX, "/repos/o/r".into())
        );
        assert_eq!(
            split_prefix("/api/v3//repos/o/r"),
            (GHES_PREFIX, "/repos/o/r".into())
        );
        assert_eq!(split_prefix("//api/v3/user"), (GHES_PREFIX, "/user".into()));
        assert_eq!(split_prefix("/api/v3"), (GHES_PREFIX, "/".into()));
        assert_eq!(split_prefix("/api/v3?x"), (GHES_PREFIX, "/?x".into()));
        assert_eq!(
            split_prefix("/api/v30/x"),
            ("", "/api/v30/x".into()),
            "not the prefix"
        );
    }

    #[test]
    fn conditional_requests_per_rfc_9110() {
        let etag = Some("\"abc\"");
        assert!(client_has_it(Some("\"abc\""), None, etag, None));
        assert!(client_has_it(Some("W/\"abc\""), None, etag, None), "weak");
        assert!(
            client_has_it(Some("\"x\", W/\"abc\""), None, etag, None),
            "list"
        );
        assert!(
            client_has_it(Some("\"a,b\", \"abc\""), None, etag, None),
            "comma in a tag"
        );
        assert!(client_has_it(Some("*"), None, etag, None));
        assert!(!client_has_it(Some("\"other\""), None, etag, None));
        assert!(
            !client_has_it(Some("\"abc\""), None, None, None),
            "no etag held"
        );
        let lm = Some("Mon, 01 Jan 2024 00:00:00 GMT");
        assert!(client_has_it(None, lm, None, lm));
        assert!(client_has_it(
            None,
            Some("Tue, 02 Jan 2024 00:00:00 GMT"),
            None,
            lm
        ));
        assert!(!client_has_it(
            None,
            Some("Sun, 31 Dec 2023 00:00:00 GMT"),
            None,
            lm
        ));
        assert!(!client_has_it(None, Some("garbage"), None, lm));
        assert!(
            !client_has_it(Some("\"other\""), lm, etag, lm),
            "If-None-Match decides when present"
        );
        assert!(!client_has_it(None, None, etag, lm));
    }

    #[test]
    fn urls_in_json_point_back_at_the_proxy_and_nothing_else_changes() {
        let up = "https://api.github.com";
        let local = "http://127.0.0.1:7711";
        let body = br#"{"z":1.50,"url":"https://api.github.com/repos/o/r","a":[{"issues_url":"https://api.github.com/repos/o/r/issues{/number}"}],"html_url":"https://github.com/o/r","note":"see https://api.github.com/x","esc":"q\"https://api.github.com/x","evil":"https://api.github.com.evil.example/x","root":"https://api.github.com","n":1e3}"#;
        let out = rewrite_json_urls(body, up, local).unwrap();
        let expected = br#"{"z":1.50,"url":"http://127.0.0.1:7711/repos/o/r","a":[{"issues_url":"http://127.0.0.1:7711/repos/o/r/issues{/number}"}],"html_url":"https://github.com/o/r","note":"see https://api.github.com/x","esc":"q\"https://api.github.com/x","evil":"https://api.github.com.evil.example/x","root":"http://127.0.0.1:7711","n":1e3}"#;
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(expected.to_vec()).unwrap()
        );
        assert_eq!(rewrite_json_urls(b"{\"a\":1}", up, local), None);
        assert_eq!(
            rewrite_json_urls(br#"{"k":"\\","u":"https://api.github.com/x"}"#, up, local).unwrap(),
            br#"{"k":"\\","u":"http://127.0.0.1:7711/x"}"#.to_vec(),
            "an escaped backslash ends no string early"
        );
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("application/vnd.github.v3+json")));
        assert!(!is_json(Some("application/vnd.github.v3.raw")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }

    #[test]
    fn cache_status_values() {
        assert_eq!(cache_status(CacheStatus::Hit, 200, true), "ghmesh; hit");
        assert_eq!(
            cache_status(CacheStatus::Miss, 200, true),
            "ghmesh; fwd=miss; fwd-status=200; stored"
        );
        assert_eq!(
            cache_status(CacheStatus::Miss, 404, false),
            "ghmesh; fwd=miss; fwd-status=404"
        );
        assert!(cache_status(CacheStatus::Stale, 200, true).starts_with("ghmesh; fwd=stale"));
        assert!(cache_status(CacheStatus::Coalesced, 200, true).contains("collapsed"));
        assert_eq!(
            failed_cache_status(CacheStatus::Miss, "upstream-unreachable"),
            "ghmesh; fwd=miss; detail=upstream-unreachable"
        );
        assert_eq!(
            failed_cache_status(CacheStatus::Bypass, "busy"),
            "ghmesh; fwd=request; detail=busy"
        );
    }
}
