//! Trust boundaries of the local API, with the real binary and a fake GitHub that logs
//! the method, path and Authorization of every request it receives.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;

use ghmesh_tests::daemon::*;
use ghmesh_tests::fake_github::FakeGithub;

const NODE_TOKEN: &str = "ghp_nodetoken";

async fn node(gh: &FakeGithub, dir: &tempfile::TempDir, extra: &[&str]) -> Daemon {
    node_at(&gh.url(), dir, extra).await
}

async fn node_at(upstream: &str, dir: &tempfile::TempDir, extra: &[&str]) -> Daemon {
    let mut args = vec!["--upstream".to_string(), upstream.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let env = HashMap::from([
        ("GHMESH_SECRET".to_string(), "trust-fleet".to_string()),
        ("GH_TOKEN".to_string(), NODE_TOKEN.to_string()),
    ]);
    start_daemon(dir.path().join("n"), &args, &env)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_never_sent_with_the_node_token() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir, &[]).await;
    let url = format!("{}/repos/acme/widgets/issues/3/comments", n.base());

    let (status, _, body) = http_request("POST", &url, &[], b"{\"body\":\"hi\"}")
        .await
        .unwrap();
    assert_eq!(status, 401);
    let msg: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(msg["message"].as_str().unwrap().contains("Authorization"));
    for method in ["PATCH", "PUT", "DELETE"] {
        let (status, _, _) = http_request(method, &url, &[], b"").await.unwrap();
        assert_eq!(status, 401, "{method}");
    }
    assert_eq!(gh.total_requests(), 0, "nothing went upstream");

    let (_, headers, _) = http_request(
        "POST",
        &url,
        &[("Authorization", "Bearer ghp_clienttoken")],
        b"{\"body\":\"hi\"}",
    )
    .await
    .unwrap();
    assert_eq!(header(&headers, "x-ghmesh-cache"), Some("bypass"));
    let sent = gh.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(
        sent[0].authorization.as_deref(),
        Some("Bearer ghp_clienttoken"),
        "exactly the client's header"
    );
    // Reads still use the node's token.
    let (status, _, _) = http_get(&format!("{}/repos/acme/widgets", n.base()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let read = gh.requests().pop().unwrap();
    assert_eq!(read.method, "GET");
    assert_eq!(
        read.authorization.as_deref(),
        Some(format!("Bearer {NODE_TOKEN}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused_and_api_host_admits_a_name() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir, &["--api-host", "cache.internal"]).await;
    let url = format!("{}/repos/acme/widgets", n.base());
    let status = |headers: Vec<(&'static str, &'static str)>| {
        let url = url.clone();
        async move { http_request("GET", &url, &headers, b"").await.unwrap().0 }
    };
    assert_eq!(status(vec![("Host", "evil.example")]).await, 421);
    assert_eq!(status(vec![("Host", "evil.example:7711")]).await, 421);
    assert_eq!(status(vec![("Origin", "https://evil.example")]).await, 403);
    assert_eq!(status(vec![("Origin", "null")]).await, 403);
    let stats = format!("{}/_ghmesh/stats", n.base());
    let (s, _, _) = http_request("GET", &stats, &[("Host", "evil.example")], b"")
        .await
        .unwrap();
    assert_eq!(s, 421, "the node's own endpoints too");
    assert_eq!(gh.total_requests(), 0, "nothing refused went upstream");

    assert_eq!(status(vec![("Host", "cache.internal:7711")]).await, 200);
    assert_eq!(status(vec![("Host", "localhost")]).await, 200);
    assert_eq!(status(vec![("Origin", "http://localhost:3000")]).await, 200);
    // Rewritten Link URLs use the validated Host.
    let (_, headers, _) = http_request(
        "GET",
        &format!("{}/repos/acme/widgets/issues", n.base()),
        &[("Host", "cache.internal:7711")],
        b"",
    )
    .await
    .unwrap();
    let link = header(&headers, "link").unwrap();
    assert!(link.contains("<http://cache.internal:7711/"), "{link}");
    assert!(!link.contains(&gh.url()), "{link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_dot_segments_are_refused_before_anything_goes_upstream() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An upstream base with a path prefix (GHES-style) must never be escaped.
    let base = format!("{}/api/v3", gh.url());
    let n = node_at(&base, &dir, &[]).await;
    for path in [
        "/repos/%2e%2e/user",
        "/repos/%2E%2E/%2e%2e/user",
        "/repos/o%2fr",
        "/repos/o%5cr",
        "/repos/o/r/./issues",
    ] {
        for method in ["GET", "POST"] {
            let (status, _, _) = http_request(
                method,
                &format!("{}{path}", n.base()),
                &[("Authorization", "Bearer ghp_clienttoken")],
                b"",
            )
            .await
            .unwrap();
            assert_eq!(status, 400, "{method} {path}");
        }
    }
    assert_eq!(gh.total_requests(), 0);
    let _ = http_get(&format!("{}/repos/acme/widgets", n.base()))
        .await
        .unwrap();
    let sent = gh.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].path_and_query, "/api/v3/repos/acme/widgets",
        "exactly the canonical path under the upstream base"
    );
}
