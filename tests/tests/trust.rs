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
    // On every method, with the client's own token too.
    for method in ["POST", "PATCH", "PUT", "DELETE", "HEAD"] {
        let (s, _, _) = http_request(
            method,
            &url,
            &[
                ("Origin", "https://evil.example"),
                ("Authorization", "Bearer ghp_clienttoken"),
            ],
            b"",
        )
        .await
        .unwrap();
        assert_eq!(s, 403, "{method}");
    }
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

/// Requests the fake received for `path`, whatever it answered.
fn sent_for(gh: &FakeGithub, path: &str) -> usize {
    gh.requests()
        .iter()
        .filter(|r| r.path_and_query == path)
        .count()
}

fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get_with(
    node: &Daemon,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let value = token.map(auth);
    let headers: Vec<(&str, &str)> = value
        .as_deref()
        .map(|v| vec![("Authorization", v)])
        .unwrap_or_default();
    http_request("GET", &format!("{}{path}", node.base()), &headers, b"")
        .await
        .unwrap()
}

async fn wait_members(nodes: &[&Daemon], want: u64) {
    let start = std::time::Instant::now();
    for n in nodes {
        while n.stats().await.unwrap()["members"].as_u64() != Some(want) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "membership"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A fleet member on `secret`, with `token` as its own (none: no token), bootstrapped
/// to `boot`.
async fn member(
    gh: &FakeGithub,
    dir: &tempfile::TempDir,
    name: &str,
    secret: &str,
    token: Option<&str>,
    boot: Option<&Daemon>,
) -> Daemon {
    let mut args = vec!["--upstream".to_string(), gh.url()];
    if let Some(b) = boot {
        args.extend(["--bootstrap".to_string(), b.ready.listen[0].clone()]);
    }
    let mut env = HashMap::from([("GHMESH_SECRET".to_string(), secret.to_string())]);
    if let Some(t) = token {
        env.insert("GH_TOKEN".to_string(), t.to_string());
    }
    start_daemon(dir.path().join(name), &args, &env)
        .await
        .unwrap()
}

/// The first path `prefix{i}` whose key `nodes[owner]` owns among `nodes`.
fn path_owned_by(prefix: &str, nodes: &[&Daemon], owner: usize) -> String {
    let ids: Vec<libp2p::PeerId> = nodes
        .iter()
        .map(|n| n.ready.peer_id.parse().unwrap())
        .collect();
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|p| {
            let key = ghmesh_protocol::CanonicalRequest::get(p).unwrap().key();
            ghmesh_node::placement::owner(&key, ids.iter().copied()) == Some(ids[owner])
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_answers_stay_with_their_token() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = "identity-fleet";
    let a = member(&gh, &dir, "a", secret, Some("ghp_token_a"), None).await;
    let b = member(&gh, &dir, "b", secret, Some("ghp_token_b"), Some(&a)).await;
    wait_members(&[&a, &b], 1).await;

    for (node, token) in [
        (&a, "ghp_token_a"),
        (&b, "ghp_token_b"),
        (&a, "ghp_token_a"),
    ] {
        let (status, headers, body) = get_with(node, "/user", None).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["login"], FakeGithub::login_of(Some(token)));
        assert_eq!(header(&headers, "x-ghmesh-cache"), Some("bypass"));
    }
    // A client's own token gets its own identity, not the node's.
    let (_, _, body) = get_with(&a, "/user", Some("ghp_token_b")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["login"], FakeGithub::login_of(Some("ghp_token_b")));
    assert_eq!(sent_for(&gh, "/user"), 4, "every /user read went upstream");
    for n in [&a, &b] {
        let s = n.stats().await.unwrap();
        assert_eq!(s["entries"], 0, "never stored");
        assert_eq!(s["lookups_sent"], 0, "never asked of a peer");
        assert_eq!(s["announces_received"], 0, "never announced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_token_fetches_misses_and_shares_only_successes() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir, &[]).await;
    let path = "/repos/acme/widgets/pulls";
    let (status, headers, first) = get_with(&n, path, Some("ghp_client_c")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ghmesh-cache"), Some("miss"));
    let sent = gh.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].authorization.as_deref(),
        Some("Bearer ghp_client_c")
    );

    let (status, headers, again) = get_with(&n, path, Some("ghp_client_d")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ghmesh-cache"), Some("hit"));
    assert_eq!(again, first);
    let (_, headers, _) = get_with(&n, path, None).await;
    assert_eq!(header(&headers, "x-ghmesh-cache"), Some("hit"));
    assert_eq!(gh.total_requests(), 1, "shared: one upstream call");

    // Errors go back to that client only.
    let missing = "/notfound/secret";
    assert_eq!(get_with(&n, missing, Some("ghp_client_c")).await.0, 404);
    assert_eq!(get_with(&n, missing, Some("ghp_client_d")).await.0, 404);
    assert_eq!(
        sent_for(&gh, missing),
        2,
        "a 404 is never served from cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_a_clients_miss_is_fetched_with_its_token_and_only_successes_reach_peers() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = "client-fleet";
    let a = member(&gh, &dir, "a", secret, Some("ghp_token_a"), None).await;
    let b = member(&gh, &dir, "b", secret, Some("ghp_token_b"), Some(&a)).await;
    wait_members(&[&a, &b], 1).await;

    // Enough keys that some are owned by each node: the owner must not fetch a
    // client's miss with its own token.
    let paths: Vec<String> = (0..8).map(|i| format!("/repos/acme/c{i}")).collect();
    for p in &paths {
        let (status, _, _) = get_with(&a, p, Some("ghp_client_c")).await;
        assert_eq!(status, 200, "{p}");
    }
    let sent = gh.requests();
    assert_eq!(sent.len(), paths.len(), "one call per key");
    for r in &sent {
        assert_eq!(
            r.authorization.as_deref(),
            Some(auth("ghp_client_c").as_str()),
            "{} went upstream with another token",
            r.path_and_query
        );
    }
    // The successes are the fleet's now: a peer's reader is served without a call.
    for p in &paths {
        let (status, headers, _) = get_with(&b, p, None).await;
        assert_eq!(status, 200);
        let how = header(&headers, "x-ghmesh-cache").unwrap().to_string();
        assert!(
            ["hit", "peer", "coalesced"].contains(&how.as_str()),
            "{p}: {how}"
        );
    }
    assert_eq!(gh.total_requests(), paths.len() as u64);

    // A client's 404 stays with that client: the peer asks GitHub itself. (A path b
    // owns: a's client fetches it under b's lease, and b then reads it for itself.)
    let missing = path_owned_by("/notfound/private", &[&a, &b], 1);
    let missing = missing.as_str();
    assert_eq!(get_with(&a, missing, Some("ghp_client_c")).await.0, 404);
    assert_eq!(get_with(&b, missing, None).await.0, 404);
    assert_eq!(sent_for(&gh, missing), 2, "a 404 is never shared");
    let last = gh.requests().pop().unwrap();
    assert_eq!(
        last.authorization.as_deref(),
        Some(auth("ghp_token_b").as_str())
    );

    // A path a owns, read on b: a fetches it for b and gets a 404, which it keeps. b's
    // re-polls must not make a fetch it again and again: b asks GitHub itself, once.
    let owned_by_a = path_owned_by("/notfound/gone", &[&a, &b], 0);
    assert_eq!(get_with(&b, &owned_by_a, None).await.0, 404);
    assert_eq!(
        sent_for(&gh, &owned_by_a),
        2,
        "the owner's try, then b's own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_without_node_tokens_coalesces_its_clients_misses_through_leases() {
    // Runners whose tools all bring their own token (an Actions job's GITHUB_TOKEN) and
    // nodes with no token at all: the key's owner cannot fetch for anyone, so it leases
    // the fetch to the first asker and holds everyone else to that.
    let gh = FakeGithub::start().await.unwrap();
    gh.set_latency(std::time::Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let a = member(&gh, &dir, "a", "lease-fleet", None, None).await;
    let b = member(&gh, &dir, "b", "lease-fleet", None, Some(&a)).await;
    let c = member(&gh, &dir, "c", "lease-fleet", None, Some(&a)).await;
    wait_members(&[&a, &b, &c], 2).await;

    // Only a and b have readers: the keys c owns (about a third of 30) can only be
    // fetched through a lease.
    let keys: Vec<String> = (0..30).map(|i| format!("/repos/acme/leased{i}")).collect();
    let nodes = [(&a, "ghp_job_a"), (&b, "ghp_job_b")];
    let reads = nodes.iter().flat_map(|(n, token)| {
        keys.iter().flat_map(move |p| {
            (0..3).map(move |_| async move { get_with(n, p, Some(token)).await.0 })
        })
    });
    let statuses = futures::future::join_all(reads).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        gh.total_requests(),
        keys.len() as u64,
        "one upstream call per key for the fleet"
    );
    for r in gh.requests() {
        let who = r.authorization.as_deref().unwrap_or("none");
        assert!(
            who.starts_with("Bearer ghp_job_"),
            "{}: {who}",
            r.path_and_query
        );
    }
    let (mut granted, mut taken) = (0, 0);
    for n in [&a, &b, &c] {
        let s = n.stats().await.unwrap();
        granted += s["leases_granted"].as_u64().unwrap();
        taken += s["leases_taken"].as_u64().unwrap();
    }
    let by_c = c.stats().await.unwrap()["leases_granted"].as_u64().unwrap();
    assert!(by_c > 0, "c owns some keys and can fetch none itself");
    assert!(
        taken > 0 && taken <= granted,
        "taken {taken}, granted {granted}"
    );
    assert_eq!(
        c.stats().await.unwrap()["upstream_calls"],
        0,
        "c has no token to lend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_fetch_fails_passes_to_the_next_asker() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = member(&gh, &dir, "a", "release-fleet", None, None).await;
    let b = member(&gh, &dir, "b", "release-fleet", None, Some(&a)).await;
    let c = member(&gh, &dir, "c", "release-fleet", None, Some(&a)).await;
    wait_members(&[&a, &b, &c], 2).await;
    // A path c owns, readable only with b's client token.
    let path = path_owned_by("/repos/acme/secret", &[&a, &b, &c], 2);
    gh.set_private(&path, "ghp_job_b");

    // a's reader gets the lease and GitHub's 404, which is never shared: a hands the
    // lease back, so b's reader gets it at once instead of waiting on a for nothing.
    assert_eq!(get_with(&a, &path, Some("ghp_job_a")).await.0, 404);
    let (status, headers, _) = get_with(&b, &path, Some("ghp_job_b")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ghmesh-cache"), Some("miss"));
    let c_stats = c.stats().await.unwrap();
    assert_eq!(c_stats["leases_granted"], 2, "granted to a, then to b");
    assert_eq!(b.stats().await.unwrap()["leases_taken"], 1);
    assert_eq!(sent_for(&gh, &path), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_token_reads_anonymously() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = member(&gh, &dir, "n", "anon-fleet", None, None).await;
    let (status, headers, _) = get_with(&n, "/repos/acme/widgets", None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ghmesh-cache"), Some("miss"));
    let sent = gh.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].authorization, None,
        "no token of its own, none lent"
    );
    // Still cached for the next reader.
    let (_, headers, _) = get_with(&n, "/repos/acme/widgets", None).await;
    assert_eq!(header(&headers, "x-ghmesh-cache"), Some("hit"));
    // A client's own token is used for its miss even with no node token.
    assert_eq!(
        get_with(&n, "/repos/acme/gadgets", Some("ghp_client_c"))
            .await
            .0,
        200
    );
    let last = gh.requests().pop().unwrap();
    assert_eq!(
        last.authorization.as_deref(),
        Some(auth("ghp_client_c").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_bypass_keeps_them_out_of_the_cache() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir, &["--client-tokens", "bypass"]).await;
    let path = "/repos/acme/widgets/pulls";
    for _ in 0..2 {
        let (status, headers, _) = get_with(&n, path, Some("ghp_client_c")).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-ghmesh-cache"), Some("bypass"));
    }
    assert_eq!(gh.requests_for(path), 2);
    assert_eq!(n.stats().await.unwrap()["entries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_client_token_never_holds_the_node_token() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(2);
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir, &[]).await;
    let c = Some("ghp_client_c");
    assert_eq!(get_with(&n, "/repos/acme/r1", c).await.0, 200);
    assert_eq!(get_with(&n, "/repos/acme/r2", c).await.0, 200);
    // GitHub said the client's budget is spent (remaining 0 on r2): its next miss is
    // not sent with that token (nobody is refused), the node's token reads it instead.
    for path in ["/repos/acme/r3"] {
        let (status, _, _) = get_with(&n, path, c).await;
        assert_eq!(status, 200);
        let last = gh.requests().pop().unwrap();
        assert_eq!(last.path_and_query, path);
        assert_eq!(
            last.authorization.as_deref(),
            Some(format!("Bearer {NODE_TOKEN}").as_str())
        );
    }
    assert_eq!(
        gh.total_requests(),
        3,
        "the client's token was never refused"
    );
    // And the node's token was never held by the client's exhaustion.
    assert_eq!(get_with(&n, "/repos/acme/r5", None).await.0, 200);
    let s = n.stats().await.unwrap();
    assert_eq!(
        s["upstream_held"], 1,
        "r3 was not sent with the spent token"
    );
    assert_eq!(
        s["upstream_calls"].as_u64(),
        Some(gh.total_requests()),
        "upstream_calls counts only requests sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_limit_holds_the_token() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir, &[]).await;
    gh.set_fault(ghmesh_tests::fake_github::Fault::SecondaryLimit);
    let (status, _, body) = get_with(&n, "/repos/acme/a", None).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("secondary rate limit"));
    gh.set_fault(ghmesh_tests::fake_github::Fault::None);
    let (status, _, body) = get_with(&n, "/repos/acme/b", None).await;
    assert_eq!(status, 403, "held: GitHub's refusal repeated, not a retry");
    assert!(String::from_utf8_lossy(&body).contains("secondary rate limit"));
    assert_eq!(gh.total_requests(), 1);
    assert_eq!(n.stats().await.unwrap()["upstream_held"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_misses_never_exceed_the_upstream_concurrency() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_latency(std::time::Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    // 5 in flight and 5 × 32 waiting: room for all 150, so none is refused.
    let n = node(&gh, &dir, &["--upstream-concurrency", "5"]).await;
    let reads = (0..150).map(|i| {
        let url = format!("{}/repos/acme/p{i}", n.base());
        async move { http_get(&url).await.unwrap().0 }
    });
    let statuses = futures::future::join_all(reads).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(gh.max_in_flight() <= 5, "{} at once", gh.max_in_flight());
    assert_eq!(gh.total_requests(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_upstream_queue_answers_503_with_retry_after() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_latency(std::time::Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir, &["--upstream-concurrency", "1"]).await;
    // One in flight, 32 waiting: the rest of 60 at once are refused at once.
    let reads = (0..60).map(|i| {
        let url = format!("{}/repos/acme/q{i}", n.base());
        async move { http_get(&url).await.unwrap() }
    });
    let answers = futures::future::join_all(reads).await;
    let busy: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(!busy.is_empty());
    for (_, headers, body) in &busy {
        assert_eq!(header(headers, "retry-after"), Some("1"));
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert!(v["message"].is_string());
    }
    assert!(gh.max_in_flight() <= 1);
    assert_eq!(
        n.stats().await.unwrap()["upstream_busy"].as_u64(),
        Some(busy.len() as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hung_request_exits_0_within_the_bound() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_fault(ghmesh_tests::fake_github::Fault::Hang);
    let dir = tempfile::tempdir().unwrap();
    let mut n = node(&gh, &dir, &[]).await;
    let url = format!("{}/repos/acme/hung", n.base());
    let hung = tokio::spawn(async move { http_get(&url).await });
    let start = std::time::Instant::now();
    while gh.total_requests() == 0 {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // 5 s for requests in flight, then the node's own shutdown (5 s for its tasks).
    let bound = std::time::Duration::from_secs(20);
    let code = tokio::time::timeout(bound, n.terminate())
        .await
        .expect("exits within the bound");
    assert_eq!(code, Some(0));
    hung.abort();
}
