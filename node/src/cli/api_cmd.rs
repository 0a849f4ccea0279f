//! Client commands: `ghmesh api` (through the node, or alone on the local store when
//! no node answers), `stats`, `peers`, `id`, `monitor`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ghmesh_protocol::CanonicalRequest;

use super::gh_format::{include_block, join_array_pages, parse_duration, reason, with_per_page};
use super::graphql_cmd;
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
        cfg.graphql_ttl = settings::graphql_ttl(None, env)?;
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
                let h = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(n))
                        .map(|(_, v)| v.as_str())
                };
                let cached = if has_auth {
                    None
                } else {
                    let how = (h("accept"), h("x-github-api-version"));
                    cached_read(method, path_and_query, body.as_deref(), how)?
                };
                let served = if let Some(req) = cached {
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

/// The cache's form of a request made alone, when it is a read the cache serves: a
/// `GET`, or a GraphQL query (`None`: pass it through).
fn cached_read(
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    (accept, version): (Option<&str>, Option<&str>),
) -> Result<Option<CanonicalRequest>, CliError> {
    if method == "GET" {
        return CanonicalRequest::new("GET", path_and_query, accept, version)
            .map(Some)
            .map_err(|e| CliError::usage(format!("bad endpoint: {e}")));
    }
    if method != "POST" || path_and_query != ghmesh_protocol::GRAPHQL_PATH {
        return Ok(None);
    }
    let query = body
        .and_then(|b| ghmesh_protocol::graphql::GraphqlRequest::parse(b).ok())
        .and_then(|g| g.query());
    Ok(match query {
        Some(q) => CanonicalRequest::graphql(q, accept, version).ok(),
        None => None,
    })
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
    let graphql = path == ghmesh_protocol::GRAPHQL_PATH;
    let mut paging = Paging::Link;
    let (first, body) = if graphql && method == "POST" {
        let sent = graphql_cmd::body(params);
        let body = Bytes::from(serde_json::Value::Object(sent.clone()).to_string());
        headers.push(("content-type".into(), "application/json".into()));
        paging = Paging::Cursor(sent);
        (path, Some(body))
    } else if method == "GET" || method == "HEAD" {
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
    if let Backend::Http { .. } = backend {
        // Alone, the caller's token is already the node's own (the same environment).
        if let Some(auth) = caller_authorization(&headers, env) {
            headers.push(("authorization".into(), auth));
        }
    }
    let request = Request {
        method: &method,
        headers: &headers,
        paging,
    };
    let result = fetch_and_print(&backend, &request, first, body, &args, filter.as_ref()).await;
    backend.close().await;
    result
}

/// The `Authorization` gh would send for the caller: `token <GH_TOKEN>`, else
/// `GITHUB_TOKEN`'s; `None` when the caller gave one with `-H` (it wins) or has none.
/// The node answers writes and per-token reads (`user`) as that caller, and serves
/// other reads from the fleet cache as for any client with its own token.
fn caller_authorization(headers: &[(String, String)], env: EnvLookup<'_>) -> Option<String> {
    if headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        return None;
    }
    settings::upstream_token(env).map(|token| format!("token {token}"))
}

/// How `--paginate` finds the next page.
enum Paging {
    /// REST: the `rel="next"` URL of `Link`, the same body.
    Link,
    /// GraphQL: the same query with `$endCursor` set from the page (this body sent).
    Cursor(serde_json::Map<String, serde_json::Value>),
}

impl Paging {
    /// The path and body of the page after `resp`, if there is one.
    fn next(
        &self,
        pq: &str,
        body: Option<Bytes>,
        resp: &ResponseParts,
    ) -> Option<(String, Option<Bytes>)> {
        match self {
            Self::Link => {
                let link = resp
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("link"))?;
                Some((next_link(&link.1)?, body))
            }
            Self::Cursor(sent) => {
                let next = graphql_cmd::next_page(sent, &resp.body)?;
                Some((pq.to_string(), Some(next)))
            }
        }
    }
}

/// What every page is asked with.
struct Request<'a> {
    method: &'a str,
    headers: &'a [(String, String)],
    paging: Paging,
}

/// Sends the request (following `Link: rel="next"` with `--paginate`) and prints what
/// `gh api` prints when its output is not a terminal: each body as received, with no
/// newline added; with `--paginate`, JSON array pages joined into one array, unless
/// `-i` shows each page's headers (then, as gh, every page is printed as it came, its
/// headers first, pages separated by a newline); `--jq` runs on each page.
///
/// GraphQL pages follow `$endCursor`; an answer with `errors` is printed, then the
/// command fails with their messages, as gh does.
async fn fetch_and_print(
    backend: &Backend,
    request: &Request<'_>,
    first: String,
    body: Option<Bytes>,
    args: &ApiArgs,
    filter: Option<&JqFilter>,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    // gh merges array pages only when nothing else is printed between them.
    let merge_arrays = args.paginate && !args.include && filter.is_none();
    let mut next = Some((first, body));
    let mut array_pages: Vec<Bytes> = Vec::new();
    let mut pages = 0;
    let mut failure = None;
    while let Some((pq, body)) = next.take() {
        pages += 1;
        let resp = backend
            .request(request.method, &pq, request.headers, body.clone())
            .await?;
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
            // The pages that came before the error come first, as gh streams them.
            if !array_pages.is_empty() {
                let _ = out.write_all(&join_array_pages(&std::mem::take(&mut array_pages)));
            }
            let _ = out.write_all(&resp.body);
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
        } else if merge_arrays && resp.body.trim_ascii_start().starts_with(b"[") {
            array_pages.push(resp.body.clone());
        } else {
            // Object pages are written one after another with nothing between them,
            // as gh does.
            let _ = out.write_all(&resp.body);
        }
        if let (Paging::Cursor(_), Some(e)) = (&request.paging, graphql_cmd::errors(&resp.body)) {
            failure = Some(CliError::failed(e));
            break;
        }
        if args.paginate && pages < MAX_PAGES {
            next = request.paging.next(&pq, body, &resp);
        }
    }
    if !array_pages.is_empty() {
        let _ = out.write_all(&join_array_pages(&array_pages));
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
    fn the_callers_token_goes_as_gh_sends_it_unless_given_with_h() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[("GH_TOKEN", "ghp_gh"), ("GITHUB_TOKEN", "ghp_github")]);
        assert_eq!(
            caller_authorization(&[], &both).as_deref(),
            Some("token ghp_gh")
        );
        let second = env(&[("GITHUB_TOKEN", "ghp_github")]);
        assert_eq!(
            caller_authorization(&[], &second).as_deref(),
            Some("token ghp_github")
        );
        let given = [("Authorization".to_string(), "Bearer mine".to_string())];
        assert_eq!(caller_authorization(&given, &both), None, "-H wins");
        assert_eq!(caller_authorization(&[], &env(&[])), None, "anonymous");
    }

    #[test]
    fn next_links() {
        let link = r#"<http://127.0.0.1:7711/repos/o/r/issues?page=1>; rel="prev", <http://127.0.0.1:7711/repos/o/r/issues?page=3>; rel="next", <http://127.0.0.1:7711/repos/o/r/issues?page=9>; rel="last""#;
        assert_eq!(next_link(link).as_deref(), Some("/repos/o/r/issues?page=3"));
        assert_eq!(next_link(r#"<http://x/a?page=1>; rel="prev""#), None);
    }
}
