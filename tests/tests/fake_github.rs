#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use std::time::{Duration, Instant};

use ghmesh_tests::fake_github::{FakeGithub, Fault};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn get(gh: &FakeGithub, path: &str, token: Option<&str>) -> Response {
    let mut req = client().get(format!("{}{path}", gh.url()));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.unwrap()
}

async fn get_json<T: serde::de::DeserializeOwned>(gh: &FakeGithub, path: &str) -> T {
    get(gh, path, None).await.json().await.unwrap()
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn bodies_are_deterministic_and_github_shaped() {
    let gh = FakeGithub::start().await.unwrap();
    let a = get(&gh, "/repos/o/r", Some("t1")).await;
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(
        header(&a, "content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(
        header(&a, "cache-control"),
        "private, max-age=60, s-maxage=60"
    );
    assert_eq!(header(&a, "x-github-media-type"), "github.v3; format=json");
    assert_eq!(header(&a, "x-ratelimit-resource"), "core");
    assert!(header(&a, "last-modified").ends_with(" GMT"));
    let etag_a = header(&a, "etag");
    assert!(
        etag_a.starts_with("W/\"") && etag_a.len() == 32 + 4,
        "{etag_a}"
    );
    let body_a = a.bytes().await.unwrap();

    let b = get(&gh, "/repos/o/r", Some("t2")).await;
    let etag_b = header(&b, "etag");
    let body_b = b.bytes().await.unwrap();
    assert_eq!(body_a, body_b, "body must not depend on the token");
    assert_ne!(etag_a, etag_b, "etag must depend on the token");

    let repo: Value = serde_json::from_slice(&body_a).unwrap();
    assert_eq!(repo["full_name"], "o/r");
    assert_eq!(repo["owner"]["login"], "o");
    assert_eq!(repo["default_branch"], "main");
    assert!(repo["issues_url"]
        .as_str()
        .unwrap()
        .ends_with("/issues{/number}"));
    assert!(
        (4000..8000).contains(&body_a.len()),
        "repo is {} bytes",
        body_a.len()
    );

    // Another instance (different port) serves the same bytes.
    let other = FakeGithub::start().await.unwrap();
    let c = get(&other, "/repos/o/r", Some("t1")).await;
    assert_eq!(header(&c, "etag"), etag_a);
    assert_eq!(c.bytes().await.unwrap(), body_a);

    let generic: Value = get_json(&gh, "/orgs/acme/teams?x=1").await;
    assert_eq!(generic["path"], "/orgs/acme/teams");
    assert_eq!(generic["query"], "x=1");
    assert_eq!(generic["version"], 0);
    gh.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn list_sizes_and_wrappers() {
    let gh = FakeGithub::start().await.unwrap();
    for path in [
        "/repos/o/r/issues",
        "/repos/o/r/pulls",
        "/repos/o/r/commits",
    ] {
        let body = get(&gh, path, None).await.bytes().await.unwrap();
        let items: Vec<Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(items.len(), 30, "{path}");
        let per_item = body.len() / items.len();
        assert!((900..3500).contains(&per_item), "{path}: {per_item} B/item");
    }
    let five: Vec<Value> = get_json(&gh, "/repos/o/r/issues?per_page=5").await;
    assert_eq!(five.len(), 5);
    let capped: Vec<Value> = get_json(&gh, "/repos/o/r/issues?per_page=500").await;
    assert_eq!(capped.len(), 100);
    // The item at a position is the same entity whatever the page size.
    assert_eq!(five[0]["id"], capped[0]["id"]);

    let runs: Value = get_json(&gh, "/repos/o/r/actions/runs?per_page=10").await;
    assert_eq!(runs["workflow_runs"].as_array().unwrap().len(), 10);
    assert_eq!(runs["total_count"], 30);
    let runners: Value = get_json(&gh, "/repos/o/r/actions/runners").await;
    assert_eq!(runners["runners"].as_array().unwrap().len(), 30);
    assert_eq!(runners["total_count"], 90);
    let jobs: Value = get_json(&gh, "/repos/o/r/actions/runs/42/jobs").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 30);
    assert_eq!(jobs["jobs"][0]["run_id"], 42);

    let page2: Vec<Value> = get_json(&gh, "/repos/o/r/issues?page=2").await;
    assert_ne!(page2[0]["id"], capped[0]["id"]);
    assert_eq!(page2[0]["id"], capped[30]["id"]);
    let beyond: Vec<Value> = get_json(&gh, "/repos/o/r/issues?page=4").await;
    assert!(beyond.is_empty());
    gh.shutdown().await;
}

#[tokio::test]
async fn link_headers() {
    let gh = FakeGithub::start().await.unwrap();
    let base = format!("{}/repos/o/r/issues", gh.url());
    let p1 = get(&gh, "/repos/o/r/issues", None).await;
    assert_eq!(
        header(&p1, "link"),
        format!(
            "<{base}?per_page=30&page=2>; rel=\"next\", <{base}?per_page=30&page=3>; rel=\"last\""
        )
    );
    let p2 = get(
        &gh,
        "/repos/o/r/issues?state=closed&page=2&per_page=10",
        None,
    )
    .await;
    assert_eq!(
        header(&p2, "link"),
        format!(
            "<{base}?state=closed&per_page=10&page=1>; rel=\"prev\", \
             <{base}?state=closed&per_page=10&page=3>; rel=\"next\", \
             <{base}?state=closed&per_page=10&page=3>; rel=\"last\", \
             <{base}?state=closed&per_page=10&page=1>; rel=\"first\""
        )
    );
    let p3 = get(&gh, "/repos/o/r/issues?page=3", None).await;
    assert_eq!(
        header(&p3, "link"),
        format!(
            "<{base}?per_page=30&page=2>; rel=\"prev\", <{base}?per_page=30&page=1>; rel=\"first\""
        )
    );
    assert!(get(&gh, "/repos/o/r", None)
        .await
        .headers()
        .get("link")
        .is_none());
    gh.shutdown().await;
}

#[tokio::test]
async fn conditional_requests() {
    let gh = FakeGithub::start().await.unwrap();
    let path = "/repos/o/r/issues";
    let first = get(&gh, path, Some("alice")).await;
    let etag = header(&first, "etag");
    let last_modified = header(&first, "last-modified");
    let remaining = header(&first, "x-ratelimit-remaining");

    let url = format!("{}{path}", gh.url());
    let revalidate = client()
        .get(&url)
        .header("authorization", "token alice")
        .header("if-none-match", format!("\"nope\", {}", &etag[2..]))
        .send()
        .await
        .unwrap();
    assert_eq!(revalidate.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&revalidate, "etag"), etag);
    assert_eq!(header(&revalidate, "last-modified"), last_modified);
    assert_eq!(
        header(&revalidate, "x-ratelimit-remaining"),
        remaining,
        "a 304 costs no quota"
    );
    assert!(revalidate.bytes().await.unwrap().is_empty());

    let other_token = client()
        .get(&url)
        .header("authorization", "Bearer bob")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(other_token.status(), StatusCode::OK);
    assert!(!other_token.bytes().await.unwrap().is_empty());

    let since = client()
        .get(&url)
        .header("authorization", "Bearer alice")
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(since.status(), StatusCode::NOT_MODIFIED);
    let older = client()
        .get(&url)
        .header("authorization", "Bearer alice")
        .header("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(older.status(), StatusCode::OK);

    assert_eq!(gh.not_modified(), 2);
    assert_eq!(gh.full_responses(), 3);
    gh.shutdown().await;
}

#[tokio::test]
async fn versions_change_body_and_etag() {
    let gh = FakeGithub::start().await.unwrap();
    let path = "/repos/o/r/commits";
    let v0 = get(&gh, path, Some("t")).await;
    let (etag0, lm0) = (header(&v0, "etag"), header(&v0, "last-modified"));
    let body0 = v0.bytes().await.unwrap();
    let other0 = get(&gh, "/repos/o/r", Some("t"))
        .await
        .bytes()
        .await
        .unwrap();

    gh.set_version(path, 1);
    let v1 = get(&gh, path, Some("t")).await;
    let (etag1, lm1) = (header(&v1, "etag"), header(&v1, "last-modified"));
    let body1 = v1.bytes().await.unwrap();
    assert_ne!(body0, body1);
    assert_ne!(etag0, etag1);
    assert_ne!(lm0, lm1);
    // Other paths are untouched by a per-path bump.
    assert_eq!(
        get(&gh, "/repos/o/r", Some("t"))
            .await
            .bytes()
            .await
            .unwrap(),
        other0
    );

    let stale = client()
        .get(format!("{}{path}", gh.url()))
        .header("authorization", "Bearer t")
        .header("if-none-match", &etag0)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);

    gh.bump_all();
    assert_ne!(
        get(&gh, path, Some("t")).await.bytes().await.unwrap(),
        body1
    );
    assert_ne!(
        get(&gh, "/repos/o/r", Some("t"))
            .await
            .bytes()
            .await
            .unwrap(),
        other0
    );
    gh.shutdown().await;
}

#[tokio::test]
async fn rate_limit_exhaustion() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(3);
    let mut etag = String::new();
    for i in 1..=3u64 {
        let r = get(&gh, "/repos/o/r", Some("limited")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-ratelimit-limit"), "3");
        assert_eq!(header(&r, "x-ratelimit-used"), i.to_string());
        assert_eq!(header(&r, "x-ratelimit-remaining"), (3 - i).to_string());
        etag = header(&r, "etag");
    }
    let denied = get(&gh, "/repos/o/r", Some("limited")).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&denied, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&denied, "x-ratelimit-limit"), "3");
    let reset: u64 = header(&denied, "x-ratelimit-reset").parse().unwrap();
    assert!(reset > 1_700_000_000);
    let body: Value = denied.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("API rate limit exceeded for "));
    assert!(body["documentation_url"].is_string());

    // Revalidation still works with an empty bucket, and other tokens are unaffected.
    let reval = client()
        .get(format!("{}/repos/o/r", gh.url()))
        .header("authorization", "Bearer limited")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(reval.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        get(&gh, "/repos/o/r", Some("fresh")).await.status(),
        StatusCode::OK
    );

    let anon = get(&gh, "/repos/o/r", None).await;
    assert_eq!(header(&anon, "x-ratelimit-limit"), "60");
    assert_eq!(header(&anon, "x-ratelimit-remaining"), "59");

    // /rate_limit reports the bucket without spending from it.
    for _ in 0..2 {
        let status: Value = get(&gh, "/rate_limit", Some("limited"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(status["resources"]["core"]["remaining"], 0);
        assert_eq!(status["rate"]["used"], 3);
    }

    gh.reset_rate_limits();
    assert_eq!(
        get(&gh, "/repos/o/r", Some("limited")).await.status(),
        StatusCode::OK
    );
    gh.shutdown().await;
}

#[tokio::test]
async fn faults() {
    let gh = FakeGithub::start().await.unwrap();

    gh.set_fault(Fault::ServerError);
    assert_eq!(
        get(&gh, "/repos/o/r", None).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );

    gh.set_fault(Fault::RateLimited);
    let r = get(&gh, "/repos/o/r", Some("t")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    let body: Value = r.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("API rate limit exceeded"));

    gh.set_fault(Fault::TooManyRequests);
    let r = get(&gh, "/repos/o/r", None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), "60");

    gh.set_fault(Fault::Hang);
    let hung = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .get(format!("{}/repos/o/r", gh.url()))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());

    gh.set_fault(Fault::None);
    assert_eq!(get(&gh, "/repos/o/r", None).await.status(), StatusCode::OK);

    assert_eq!(gh.total_requests(), 5);
    assert_eq!(gh.full_responses(), 1);
    assert_eq!(gh.not_modified(), 0);
    gh.shutdown().await;
}

#[tokio::test]
async fn hang_does_not_block_others_and_shutdown_releases_it() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_fault(Fault::Hang);
    let url = format!("{}/repos/o/r", gh.url());
    let hung = tokio::spawn(async move { client().get(url).send().await });
    // Wait until the hung request has reached the server.
    while gh.total_requests() == 0 {
        tokio::task::yield_now().await;
    }
    gh.set_fault(Fault::None);
    assert_eq!(get(&gh, "/repos/o/r", None).await.status(), StatusCode::OK);

    tokio::time::timeout(Duration::from_secs(3), gh.shutdown())
        .await
        .expect("shutdown must not wait on a hung request");
    let released = tokio::time::timeout(Duration::from_secs(3), hung)
        .await
        .unwrap()
        .unwrap();
    // Either a 503 or a closed connection is fine; it must not hang.
    if let Ok(resp) = released {
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn latency_is_applied() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_latency(Duration::from_millis(150));
    let start = Instant::now();
    assert_eq!(get(&gh, "/repos/o/r", None).await.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(150));
    gh.set_latency(Duration::ZERO);
    gh.shutdown().await;
}

#[tokio::test]
async fn counters_and_requests_for() {
    let gh = FakeGithub::start().await.unwrap();
    let r = get(&gh, "/repos/o/r/pulls?per_page=2", Some("t")).await;
    let etag = header(&r, "etag");
    get(&gh, "/repos/o/r/pulls?per_page=2", Some("t")).await;
    get(&gh, "/repos/o/r/pulls", Some("t")).await;
    client()
        .get(format!("{}/repos/o/r/pulls?per_page=2", gh.url()))
        .header("authorization", "Bearer t")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    get(&gh, "/rate_limit", Some("t")).await;
    get(&gh, "/notfound/x", Some("t")).await;

    let posted = client()
        .post(format!("{}/repos/o/r/issues", gh.url()))
        .json(&serde_json::json!({"title": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::CREATED);
    let echo: Value = posted.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/repos/o/r/issues");
    assert_eq!(echo["body"]["title"], "hi");
    let deleted = client()
        .delete(format!("{}/repos/o/r/issues/1", gh.url()))
        .body("plain text")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let echo: Value = deleted.json().await.unwrap();
    assert_eq!(echo["body"], "plain text");

    let head = client()
        .head(format!("{}/repos/o/r", gh.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.headers().contains_key("etag"));
    assert!(head.bytes().await.unwrap().is_empty());

    assert_eq!(gh.total_requests(), 9);
    assert_eq!(gh.full_responses(), 4);
    assert_eq!(gh.not_modified(), 1);
    assert_eq!(gh.requests_for("/repos/o/r/pulls?per_page=2"), 3);
    assert_eq!(gh.requests_for("/repos/o/r/pulls"), 1);
    assert_eq!(gh.requests_for("/repos/o/r"), 1);
    assert_eq!(gh.requests_for("/rate_limit"), 0);
    assert_eq!(gh.requests_for("/notfound/x"), 0);

    gh.reset_counters();
    assert_eq!(gh.total_requests(), 0);
    assert_eq!(gh.full_responses(), 0);
    assert_eq!(gh.not_modified(), 0);
    assert_eq!(gh.requests_for("/repos/o/r/pulls?per_page=2"), 0);
    gh.shutdown().await;
}

#[tokio::test]
async fn not_found_paths() {
    let gh = FakeGithub::start().await.unwrap();
    for path in [
        "/notfound/thing",
        "/repos/o/missing",
        "/repos/o/missing/issues",
    ] {
        let r = get(&gh, path, Some("t")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(!header(&r, "x-ratelimit-used").is_empty());
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest"
            })
        );
    }
    let r = get(&gh, "/repos/o/r", Some("t")).await;
    assert_eq!(header(&r, "x-ratelimit-used"), "4", "404s spend quota");
    assert_eq!(gh.full_responses(), 1);
    gh.shutdown().await;
}
