//! Client commands: `ghmesh api` (through the node, or alone on the local store when
//! no node answers), `stats`, `peers`, `id`, `monitor`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ghmesh_protocol::CanonicalRequest;

use super::jq::JqFilter;
use super::settings::{self, EnvLookup};
use super::{ApiArgs, CliError};
use crate::api::{response_parts, ResponseParts};
use crate::upstream::github::{GithubClient, GithubConfig};
use crate::{Node, NodeConfig};

/// Most pages `--paginate` follows: a loop in `Link` headers must end.
const MAX_PAGES: usize = 1000;

pub(super) fn http_client() -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| CliError::failed(format!("HTTP client: {e}")))
}

/// Where requests go: the running node's API, or a node of our own without P2P.
enum Backend {
    Http {
        client: reqwest::Client,
        base: String,
    },
    Alone {
        node: Node,
        upstream: String,
    },
}

impl Backend {
    async fn connect(env: EnvLookup<'_>) -> Result<Self, CliError> {
        let api = settings::api_addr(None, env);
        let base = format!("http://{api}");
        let client = http_client()?;
        let probe = client
            .get(format!("{base}/_ghmesh/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if matches!(&probe, Ok(r) if r.status().is_success()) {
            return Ok(Self::Http { client, base });
        }
        // No node: work alone on the local store and upstream.
        let upstream = settings::upstream_url(None, env)?;
        let mut cfg = NodeConfig::new(settings::data_dir(None, env));
        cfg.keys = None;
        cfg.ttl = settings::ttl(None, env)?;
        cfg.limits = settings::limits(None, None, env)?;
        let github = GithubClient::new(GithubConfig {
            base_url: upstream.clone(),
            token: settings::upstream_token(env),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        })
        .map_err(|e| CliError::failed(e.to_string()))?;
        let node = Node::start(cfg, Arc::new(github)).await.map_err(|e| {
            CliError::usage(format!(
                "no ghmesh node answers at {api}, and working alone failed: {e}"
            ))
        })?;
        Ok(Self::Alone { node, upstream })
    }

    async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Option<Bytes>,
    ) -> Result<ResponseParts, CliError> {
        match self {
            Self::Http { client, base } => {
                let m = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|_| CliError::usage(format!("bad method '{method}'")))?;
                let mut rb = client.request(m, format!("{base}{path_and_query}"));
                for (k, v) in headers {
                    rb = rb.header(k, v);
                }
                if let Some(b) = body {
                    rb = rb.body(b);
                }
                let resp = rb
                    .send()
                    .await
                    .map_err(|e| CliError::failed(format!("request to the node failed: {e}")))?;
                let status = resp.status().as_u16();
                let headers = resp
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                    })
                    .collect();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| CliError::failed(format!("reading the response: {e}")))?;
                Ok(ResponseParts {
                    status,
                    headers,
                    body,
                })
            }
            Self::Alone { node, upstream } => {
                let has_auth = headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
                let served = if method == "GET" && !has_auth {
                    let h = |n: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(n))
                            .map(|(_, v)| v.as_str())
                    };
                    let req = CanonicalRequest::new(
                        "GET",
                        path_and_query,
                        h("accept"),
                        h("x-github-api-version"),
                    )
                    .map_err(|e| CliError::usage(format!("bad endpoint: {e}")))?;
                    let max_age = h(crate::api::MAX_AGE_HEADER)
                        .and_then(|v| v.parse().ok())
                        .map(Duration::from_secs);
                    node.get_within(req, crate::upstream::Credential::Node, max_age)
                        .await
                } else {
                    node.forward(
                        method,
                        path_and_query,
                        headers.to_vec(),
                        body.unwrap_or_default(),
                    )
                    .await
                };
                let served = served.map_err(|e| CliError::failed(e.to_string()))?;
                Ok(response_parts(node, &served, upstream, upstream, false))
            }
        }
    }

    async fn close(self) {
        if let Self::Alone { node, .. } = self {
            node.shutdown().await;
        }
    }
}

/// `gh api`-style endpoint: `repos/o/r` or `/repos/o/r` or a full URL; `{owner}` and
/// `{repo}` are filled from the repository scope.
pub fn normalize_endpoint(endpoint: &str, repo: Option<&str>) -> Result<String, CliError> {
    let mut path = endpoint.trim().to_string();
    if let Some(rest) = path
        .strip_prefix("https://")
        .or_else(|| path.strip_prefix("http://"))
    {
        path = rest
            .find('/')
            .map(|i| rest[i..].to_string())
            .unwrap_or_else(|| "/".into());
    }
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if path.contains("{owner}") || path.contains("{repo}") {
        let (owner, name) = repo.and_then(|r| r.split_once('/')).ok_or_else(|| {
            CliError::usage(
                "{owner}/{repo} needs GHMESH_REPO or GITHUB_REPOSITORY set to OWNER/NAME",
            )
        })?;
        path = path.replace("{owner}", owner).replace("{repo}", name);
    }
    Ok(path)
}

/// A `-F` value: true/false/null/integers typed, `@file` read, else a string.
fn typed_value(v: &str) -> Result<serde_json::Value, CliError> {
    Ok(match v {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        "null" => serde_json::Value::Null,
        _ if v.starts_with('@') => {
            let path = &v[1..];
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("cannot read field file {path}: {e}")))?;
            serde_json::Value::String(text.trim_end_matches('\n').to_string())
        }
        _ => match v.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::String(v.to_string()),
        },
    })
}

/// Parsed `-f`/`-F` fields, in order.
pub fn fields(
    raw: &[String],
    typed: &[String],
) -> Result<Vec<(String, serde_json::Value)>, CliError> {
    let split = |f: &String| {
        f.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .ok_or_else(|| CliError::usage(format!("bad field '{f}': expected key=value")))
    };
    let mut out = Vec::new();
    for f in raw {
        let (k, v) = split(f)?;
        out.push((k, serde_json::Value::String(v)));
    }
    for f in typed {
        let (k, v) = split(f)?;
        out.push((k, typed_value(&v)?));
    }
    Ok(out)
}

fn with_query(path: &str, params: &[(String, serde_json::Value)]) -> String {
    if params.is_empty() {
        return path.to_string();
    }
    let q: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!(
                "{}={}",
                url::form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>(),
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect();
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{}", q.join("&"))
}

/// The `rel="next"` URL of a `Link` header, as a path and query.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim() == "rel=\"next\"") {
            return None;
        }
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        normalize_endpoint(url, None).ok()
    })
}

/// A duration as gh (Go's `time.ParseDuration`) writes it: a sequence of numbers with
/// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h` (`90s`, `1h30m`, `1.5h`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, CliError> {
    let bad = || {
        CliError::usage(format!(
            "bad --cache '{text}': use a duration such as 3600s, 60m or 1h30m"
        ))
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds_per;
        rest = &rest[unit_len..];
    }
    if !(total.is_finite() && total <= 366.0 * 86400.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Adds `per_page=100` unless the request names a page size (gh does the same for
/// `--paginate`: fewer, larger pages).
pub(crate) fn with_per_page(path_and_query: &str) -> String {
    let query = path_and_query.split_once('?').map(|(_, q)| q).unwrap_or("");
    let chosen = query.split('&').any(|p| {
        p.split_once('=')
            .is_some_and(|(k, v)| k == "per_page" && !v.is_empty())
    });
    if chosen {
        return path_and_query.to_string();
    }
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{path_and_query}{sep}per_page=100")
}

/// Pages of a JSON array joined into one array byte for byte, as gh joins them: every
/// item keeps GitHub's key order and number formatting.
pub(crate) fn join_array_pages(pages: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages.iter().map(|p| p.len()).sum());
    let last = pages.len().saturating_sub(1);
    for (i, page) in pages.iter().enumerate() {
        let mut b = page.trim_ascii();
        if i > 0 {
            if let Some(rest) = b.strip_prefix(b"[") {
                out.push(if rest.trim_ascii_start().starts_with(b"]") {
                    b' '
                } else {
                    b','
                });
                b = rest;
            }
        }
        if i < last {
            b = b.strip_suffix(b"]").unwrap_or(b);
        }
        out.extend_from_slice(b);
    }
    out
}

/// A header name as gh (Go's net/http) prints it: `X-Ghmesh-Cache`.
fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// `-i` output: the status line, then the headers sorted by name (repeated names
/// joined with ", "), then a blank line, as `gh api -i` prints them.
pub(crate) fn include_block(status: u16, headers: &[(String, String)]) -> String {
    let mut by_name: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for (k, v) in headers {
        by_name.entry(canonical_header(k)).or_default().push(v);
    }
    let mut out = format!("HTTP/1.1 {status} {}\n", reason(status));
    for (name, values) in by_name {
        out.push_str(&format!("{name}: {}\r\n", values.join(", ")));
    }
    out.push_str("\r\n");
    out
}

fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// `ghmesh api`.
pub async fn run(args: ApiArgs, env: EnvLookup<'_>) -> Result<(), CliError> {
    let repo = settings::first_env(env, &["GHMESH_REPO", "GITHUB_REPOSITORY"]).map(|(_, v)| v);
    let path = normalize_endpoint(&args.endpoint, repo.as_deref())?;
    let params = fields(&args.raw_fields, &args.fields)?;
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| {
            if params.is_empty() {
                "GET".into()
            } else {
                "POST".into()
            }
        })
        .to_ascii_uppercase();
    let max_age = args.cache.as_deref().map(parse_duration).transpose()?;
    let mut headers = Vec::new();
    if let Some(age) = max_age {
        // Whole seconds, rounded up: "within 1.5 s" still accepts a copy 1 s old.
        let secs = age.as_secs() + u64::from(age.subsec_nanos() > 0);
        headers.push((crate::api::MAX_AGE_HEADER.to_string(), secs.to_string()));
    }
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| CliError::usage(format!("bad header '{h}': expected \"Key: Value\"")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let filter = args
        .jq
        .as_deref()
        .map(JqFilter::compile)
        .transpose()
        .map_err(|e| CliError::usage(e.to_string()))?;
    let (first, body) = if method == "GET" || method == "HEAD" {
        let first = with_query(&path, &params);
        // As gh: a paginated read asks for the largest page unless it chose one.
        let first = if args.paginate {
            with_per_page(&first)
        } else {
            first
        };
        (first, None)
    } else {
        let obj: serde_json::Map<String, serde_json::Value> = params.into_iter().collect();
        let body =
            (!obj.is_empty()).then(|| Bytes::from(serde_json::Value::Object(obj).to_string()));
        if body.is_some() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        (path, body)
    };

    let backend = Backend::connect(env).await?;
    let result = fetch_and_print(
        &backend,
        &method,
        first,
        &headers,
        body,
        &args,
        filter.as_ref(),
    )
    .await;
    backend.close().await;
    result
}

async fn fetch_and_print(
    backend: &Backend,
    method: &str,
    first: String,
    headers: &[(String, String)],
    body: Option<Bytes>,
    args: &ApiArgs,
    filter: Option<&JqFilter>,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let mut next = Some(first);
    let mut array_pages: Vec<Bytes> = Vec::new();
    let mut pages = 0;
    let mut failure = None;
    while let Some(pq) = next.take() {
        pages += 1;
        let resp = backend.request(method, &pq, headers, body.clone()).await?;
        if args.include {
            if pages > 1 {
                let _ = writeln!(out);
            }
            let _ = out.write_all(include_block(resp.status, &resp.headers).as_bytes());
        }
        if resp.status >= 400 {
            let msg = serde_json::from_slice::<serde_json::Value>(&resp.body)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| reason(resp.status).to_string());
            let _ = out.write_all(&resp.body);
            let _ = writeln!(out);
            failure = Some(CliError::failed(format!("{msg} (HTTP {})", resp.status)));
            break;
        }
        if let Some(f) = filter {
            let value: serde_json::Value = serde_json::from_slice(&resp.body)
                .map_err(|e| CliError::failed(format!("response is not JSON: {e}")))?;
            let rendered = f
                .render(&value)
                .map_err(|e| CliError::failed(e.to_string()))?;
            let _ = out.write_all(rendered.as_bytes());
        } else if args.paginate {
            if resp.body.trim_ascii_start().starts_with(b"[") {
                array_pages.push(resp.body.clone());
            } else {
                // Object pages are written one after another, as gh does.
                let _ = out.write_all(&resp.body);
            }
        } else {
            let _ = out.write_all(&resp.body);
            if !resp.body.ends_with(b"\n") && !resp.body.is_empty() {
                let _ = writeln!(out);
            }
        }
        if args.paginate && pages < MAX_PAGES {
            next = resp
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("link"))
                .and_then(|(_, v)| next_link(v));
        }
    }
    if !array_pages.is_empty() {
        let _ = out.write_all(&join_array_pages(&array_pages));
    }
    if args.paginate && filter.is_none() && pages > 0 {
        let _ = writeln!(out);
    }
    let _ = out.flush();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_like_gh() {
        assert_eq!(
            with_per_page("/repos/o/r/issues"),
            "/repos/o/r/issues?per_page=100"
        );
        assert_eq!(
            with_per_page("/repos/o/r/issues?state=all"),
            "/repos/o/r/issues?state=all&per_page=100"
        );
        assert_eq!(with_per_page("/x?per_page=30"), "/x?per_page=30");
        let pages = [
            Bytes::from_static(br#"[{"z":1,"a":2.50}]"#),
            Bytes::from_static(br#"[{"b":3}, {"c":4}]"#),
            Bytes::from_static(br#"[{"d":5}]"#),
        ];
        assert_eq!(
            String::from_utf8(join_array_pages(&pages)).unwrap(),
            r#"[{"z":1,"a":2.50},{"b":3}, {"c":4},{"d":5}]"#,
            "GitHub's bytes: key order and number formatting kept"
        );
        let with_empty_last = [Bytes::from_static(b"[1]"), Bytes::from_static(b"[]")];
        let joined = join_array_pages(&with_empty_last);
        let v: serde_json::Value = serde_json::from_slice(&joined).unwrap();
        assert_eq!(v, serde_json::json!([1]));
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_duration("3600s").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("60m").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "10", "1d", "h", "1h-", "9999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn include_like_gh() {
        let h = vec![
            ("x-ghmesh-cache".to_string(), "hit".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
            ("etag".to_string(), "\"a\"".to_string()),
            ("vary".to_string(), "Accept".to_string()),
            ("vary".to_string(), "Authorization".to_string()),
        ];
        assert_eq!(
            include_block(200, &h),
            "HTTP/1.1 200 OK\nContent-Type: application/json\r\nEtag: \"a\"\r\nVary: Accept, Authorization\r\nX-Ghmesh-Cache: hit\r\n\r\n"
        );
    }

    #[test]
    fn endpoints_like_gh() {
        assert_eq!(normalize_endpoint("repos/o/r", None).unwrap(), "/repos/o/r");
        assert_eq!(
            normalize_endpoint("/repos/o/r", None).unwrap(),
            "/repos/o/r"
        );
        assert_eq!(
            normalize_endpoint("https://api.github.com/repos/o/r?x=1", None).unwrap(),
            "/repos/o/r?x=1"
        );
        assert_eq!(
            normalize_endpoint("repos/{owner}/{repo}/pulls", Some("a/b")).unwrap(),
            "/repos/a/b/pulls"
        );
        assert_eq!(
            normalize_endpoint("repos/{owner}/{repo}", None)
                .unwrap_err()
                .code,
            2
        );
    }

    #[test]
    fn fields_and_queries() {
        let f = fields(
            &["state=open".into()],
            &["per_page=5".into(), "draft=false".into()],
        )
        .unwrap();
        assert_eq!(f[1].1, serde_json::json!(5));
        assert_eq!(f[2].1, serde_json::json!(false));
        assert_eq!(with_query("/a", &f), "/a?state=open&per_page=5&draft=false");
        assert_eq!(with_query("/a?x=1", &f[..1]), "/a?x=1&state=open");
        assert_eq!(fields(&["novalue".into()], &[]).unwrap_err().code, 2);
    }

    #[test]
    fn next_links() {
        let link = r#"<http://127.0.0.1:7711/repos/o/r/issues?page=1>; rel="prev", <http://127.0.0.1:7711/repos/o/r/issues?page=3>; rel="next", <http://127.0.0.1:7711/repos/o/r/issues?page=9>; rel="last""#;
        assert_eq!(next_link(link).as_deref(), Some("/repos/o/r/issues?page=3"));
        assert_eq!(next_link(r#"<http://x/a?page=1>; rel="prev""#), None);
    }
}
