//! HTTP cache fidelity with the real binary and the fake GitHub: a client's own
//! conditional requests, one cache entry per representation, GHES-style paths,
//! `//`, HEAD, the headers hits keep, URLs in bodies, what writes invalidate, and the
//! errors the node answers itself.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;

use ghmesh_tests::daemon::*;
use ghmesh_tests::fake_github::FakeGithub;

const NODE_TOKEN: &str = "ghp_fidelity";

async fn node(gh: &FakeGithub, dir: &tempfile::TempDir) -> Daemon {
    node_with(&gh.url(), dir, "n", &[]).await
}

async fn node_with(upstream: &str, dir: &tempfile::TempDir, name: &str, extra: &[&str]) -> Daemon {
    let env = HashMap::from([
        ("GHMESH_SECRET".to_string(), "fidelity-fleet".to_string()),
        ("GH_TOKEN".to_string(), NODE_TOKEN.to_string()),
    ]);
    let mut args = vec!["--upstream".to_string(), upstream.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    start_daemon(dir.path().join(name), &args, &env)
        .await
        .unwrap()
}

async fn get(
    n: &Daemon,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_request("GET", &format!("{}{path}", n.base()), headers, b"")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_conditional_request_gets_304() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    let (s, h, _) = get(&n, "/repos/acme/widgets", &[]).await;
    assert_eq!(s, 200);
    let etag = header(&h, "etag").unwrap().to_string();
    let modified = header(&h, "last-modified").unwrap().to_string();

    let (s, h, body) = get(&n, "/repos/acme/widgets", &[("If-None-Match", &etag)]).await;
    assert_eq!(s, 304);
    assert!(body.is_empty());
    assert_eq!(header(&h, "etag"), Some(etag.as_str()));
    assert_eq!(header(&h, "last-modified"), Some(modified.as_str()));
    assert_eq!(
        header(&h, "cache-control"),
        Some("private, max-age=60, s-maxage=60"),
        "GitHub's, as on the 200"
    );
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("hit"));
    assert!(header(&h, "cache-status")
        .unwrap()
        .starts_with("ghmesh; hit"));
    // The same tag with the other strength matches too (weak comparison).
    let flipped = match etag.strip_prefix("W/") {
        Some(strong) => strong.to_string(),
        None => format!("W/{etag}"),
    };
    assert_eq!(
        get(&n, "/repos/acme/widgets", &[("If-None-Match", &flipped)])
            .await
            .0,
        304
    );
    assert_eq!(
        get(
            &n,
            "/repos/acme/widgets",
            &[("If-Modified-Since", &modified)]
        )
        .await
        .0,
        304
    );
    assert_eq!(
        get(&n, "/repos/acme/widgets", &[("If-None-Match", "\"other\"")])
            .await
            .0,
        200
    );
    assert_eq!(gh.total_requests(), 1, "none of these went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivalent_accepts_share_one_entry_and_other_media_types_do_not() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("application/vnd.github+json"),
        Some("application/vnd.github.v3+json"),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| vec![("Accept", a)]).unwrap_or_default();
        assert_eq!(get(&n, "/users/hubot", &headers).await.0, 200);
    }
    assert_eq!(
        gh.total_requests(),
        1,
        "one upstream call for five spellings"
    );
    get(
        &n,
        "/users/hubot",
        &[("Accept", "application/vnd.github.raw")],
    )
    .await;
    assert_eq!(
        gh.total_requests(),
        2,
        "another media type is another entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghes_paths_double_slashes_head_and_the_headers_hits_keep() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    // go-github's WithEnterpriseURLs: /api/v3/<path>, and Link URLs keep the prefix.
    let (s, h, _) = get(&n, "/api/v3/repos/acme/widgets/issues", &[]).await;
    assert_eq!(s, 200);
    let link = header(&h, "link").unwrap();
    assert!(
        link.contains(&format!("<{}/api/v3/repos/acme/widgets/issues", n.base())),
        "{link}"
    );
    assert_eq!(
        gh.requests()[0].path_and_query,
        "/repos/acme/widgets/issues"
    );
    // The same entry without the prefix, and through a leading `//`.
    let (_, h, _) = get(&n, "/repos/acme/widgets/issues", &[]).await;
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("hit"));
    let (s, h, get_body) = get(&n, "//repos/acme/widgets/issues", &[]).await;
    assert_eq!((s, header(&h, "x-ghmesh-cache")), (200, Some("hit")));
    assert_eq!(gh.total_requests(), 1);
    // HEAD: the GET's headers, with its real length.
    let (s, h, body) = http_request(
        "HEAD",
        &format!("{}/repos/acme/widgets/issues", n.base()),
        &[],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    assert!(body.is_empty());
    assert_eq!(
        header(&h, "content-length"),
        Some(get_body.len().to_string().as_str())
    );
    // Hits keep what GitHub sent besides the body.
    for name in [
        "vary",
        "x-ratelimit-resource",
        "x-ratelimit-used",
        "x-github-api-version-selected",
        "etag",
        "cache-status",
    ] {
        assert!(header(&h, name).is_some(), "{name} on a hit: {h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_invalidates_what_it_changed_here_and_on_peers() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = HashMap::from([
        ("GHMESH_SECRET".to_string(), "fidelity-fleet".to_string()),
        ("GH_TOKEN".to_string(), "ghp_fidelity".to_string()),
    ]);
    let args = vec!["--upstream".to_string(), gh.url()];
    let a = start_daemon(dir.path().join("a"), &args, &env)
        .await
        .unwrap();
    let mut b_args = args.clone();
    b_args.extend(["--bootstrap".to_string(), a.ready.listen[0].clone()]);
    let b = start_daemon(dir.path().join("b"), &b_args, &env)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    for n in [&a, &b] {
        while n.stats().await.unwrap()["mesh_peers"].as_u64() != Some(1) {
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "mesh");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let comments = "/repos/acme/widgets/issues/3/comments";
    let issue = "/repos/acme/widgets/issues/3";
    for path in [comments, issue] {
        assert_eq!(get(&a, path, &[]).await.0, 200);
        assert_eq!(get(&b, path, &[]).await.0, 200);
        let (_, h, _) = get(&b, path, &[]).await;
        assert!(matches!(header(&h, "x-ghmesh-cache"), Some("hit" | "peer")));
    }

    let (s, _, _) = http_request(
        "POST",
        &format!("{}{comments}", a.base()),
        &[
            ("Authorization", "Bearer ghp_writer"),
            ("content-type", "application/json"),
        ],
        b"{\"body\":\"hello\"}",
    )
    .await
    .unwrap();
    assert_eq!(s, 201);
    // The fake answers the changed target and collection with new content (a new
    // "version"), as GitHub would. At once on the node that wrote:
    let version =
        |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap()["version"].clone();
    let (_, h, body) = get(&a, comments, &[]).await;
    // Refetched rather than served from the old copy. Who fetched depends on timing:
    // this node ("miss"), or the owner once the invalidation reached it first
    // ("coalesced"); either way the content must be the new one.
    assert!(
        matches!(header(&h, "x-ghmesh-cache"), Some("miss" | "coalesced")),
        "refetched, not served: {h:?}"
    );
    assert_eq!(version(&body), 1);
    // And on the peer once the invalidation arrives.
    let start = std::time::Instant::now();
    while b.stats().await.unwrap()["invalidated"].as_u64() < Some(2) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "peer never invalidated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for path in [comments, issue] {
        let (s, _, body) = get(&b, path, &[]).await;
        assert_eq!(s, 200);
        assert_eq!(version(&body), 1, "{path}: the peer serves the new answer");
    }
    assert_eq!(a.stats().await.unwrap()["invalidated"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_validators_are_never_sent_upstream_on_a_miss() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    // The very validators upstream would answer 304 to, had the node passed them on.
    let auth = format!("Bearer {NODE_TOKEN}");
    let (s, h, _) = http_request(
        "GET",
        &format!("{}/repos/acme/widgets", gh.url()),
        &[("Authorization", &auth)],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let etag = header(&h, "etag").unwrap().to_string();
    let modified = header(&h, "last-modified").unwrap().to_string();

    let (s, h, _) = get(&n, "/repos/acme/widgets", &[("If-None-Match", &etag)]).await;
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("miss"));
    assert_eq!(s, 304, "the client holds what the node just fetched");
    // Another resource last modified at the same time: the client's date covers it.
    let (s, h, _) = get(
        &n,
        "/repos/acme/widgets/pulls",
        &[("If-Modified-Since", &modified)],
    )
    .await;
    assert_eq!((s, header(&h, "x-ghmesh-cache")), (304, Some("miss")));

    assert_eq!(gh.not_modified(), 0, "upstream answered in full both times");
    let sent: Vec<_> = gh
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query.starts_with("/repos/acme/widgets"))
        .skip(1) // the test's own request above
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    for r in sent {
        assert_eq!(
            (r.if_none_match, r.if_modified_since),
            (None, None),
            "{}",
            r.path_and_query
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_body_urls_point_at_the_node_unless_turned_off() {
    // Bodies name the fake's own URL, the node's upstream, as GitHub's name GitHub.
    let gh = FakeGithub::start_self_referencing().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    let off = node_with(&gh.url(), &dir, "off", &["--no-rewrite-bodies"]).await;
    let path = "/repos/acme/widgets";
    let (s, _, upstream) = http_get(&format!("{}{path}", gh.url())).await.unwrap();
    assert_eq!(s, 200);
    let upstream = String::from_utf8(upstream).unwrap();
    assert!(upstream.contains(&format!("\"url\":\"{}{path}\"", gh.url())));

    let (s, _, body) = get(&n, path, &[]).await;
    assert_eq!(s, 200);
    let body = String::from_utf8(body).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["url"], format!("{}{path}", n.base()));
    assert_eq!(
        v["issues_url"],
        format!("{}{path}/issues{{/number}}", n.base())
    );
    assert_ne!(
        v["html_url"], v["url"],
        "web URLs are not the API's: left alone"
    );
    // Only the upstream base changed: every other byte (key order, numbers, escapes)
    // is GitHub's.
    assert_eq!(body, upstream.replace(&gh.url(), &n.base()));

    // Under /api/v3 the URLs keep the prefix the client used.
    let (_, h, body) = get(&n, &format!("/api/v3{path}"), &[]).await;
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("hit"));
    let body = String::from_utf8(body).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["url"], format!("{}/api/v3{path}", n.base()));
    assert_eq!(
        body,
        upstream.replace(&gh.url(), &format!("{}/api/v3", n.base()))
    );

    // Turned off: GitHub's bytes.
    let (s, _, body) = get(&off, path, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(String::from_utf8(body).unwrap(), upstream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_changes_nothing_is_revalidated_for_free() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_noop_writes(true);
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    let issue = "/repos/acme/widgets/issues/7";
    let (_, h, before) = get(&n, issue, &[]).await;
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("miss"));
    let (_, h, _) = get(&n, issue, &[]).await;
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("hit"));

    let (s, h, _) = http_request(
        "PATCH",
        &format!("{}{issue}", n.base()),
        &[
            ("Authorization", "Bearer ghp_writer"),
            ("content-type", "application/json"),
        ],
        b"{\"state\":\"open\"}",
    )
    .await
    .unwrap();
    assert_eq!((s, header(&h, "x-ghmesh-cache")), (200, Some("bypass")));
    let (s, h, after) = get(&n, issue, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(
        header(&h, "x-ghmesh-cache"),
        Some("revalidated"),
        "marked stale by the write, then a 304: {h:?}"
    );
    assert_eq!(after, before);
    assert_eq!(gh.not_modified(), 1);
    assert_eq!(gh.full_responses(), 1, "no second full answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_resources_location_is_invalidated() {
    let gh = FakeGithub::start().await.unwrap();
    let issues = "/repos/acme/widgets/issues";
    let created = "/repos/acme/widgets/issues/301";
    let other = "/repos/acme/widgets/issues/302";
    gh.set_write_location(issues, created);
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    for path in [created, other] {
        assert_eq!(get(&n, path, &[]).await.0, 200);
        let (_, h, _) = get(&n, path, &[]).await;
        assert_eq!(header(&h, "x-ghmesh-cache"), Some("hit"));
    }
    let (s, h, _) = http_request(
        "POST",
        &format!("{}{issues}", n.base()),
        &[
            ("Authorization", "Bearer ghp_writer"),
            ("content-type", "application/json"),
        ],
        b"{\"title\":\"new\"}",
    )
    .await
    .unwrap();
    assert_eq!(s, 201);
    // It points back at the node, as `Link` URLs do, so a client following it reads
    // through the cache.
    assert_eq!(
        header(&h, "location"),
        Some(format!("{}{created}", n.base()).as_str())
    );
    // Neither the target nor its collection: only the Location names it. Its content
    // did not change (the fake changes the target and collection), so a free 304.
    let (_, h, _) = get(&n, created, &[]).await;
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("revalidated"));
    let (_, h, _) = get(&n, other, &[]).await;
    assert_eq!(
        header(&h, "x-ghmesh-cache"),
        Some("hit"),
        "a sibling the write did not name stays cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_the_node_answers_itself_carry_its_cache_headers() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: GitHub is unreachable.
    let n = node_with("http://127.0.0.1:1", &dir, "unreachable", &[]).await;
    let (s, h, body) = get(&n, "/repos/acme/widgets", &[]).await;
    assert_eq!(s, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["message"].as_str().unwrap().contains("unreachable"));
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("miss"));
    assert_eq!(
        header(&h, "cache-status"),
        Some("ghmesh; fwd=miss; detail=upstream-unreachable")
    );
    let (s, h, _) = http_request(
        "POST",
        &format!("{}/repos/acme/widgets/issues", n.base()),
        &[("Authorization", "Bearer ghp_writer")],
        b"{}",
    )
    .await
    .unwrap();
    assert_eq!(s, 502);
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("bypass"));
    assert_eq!(
        header(&h, "cache-status"),
        Some("ghmesh; fwd=request; detail=upstream-unreachable")
    );

    // One request in flight (it hangs), 32 waiting: the rest are refused at once.
    let gh = FakeGithub::start().await.unwrap();
    gh.set_fault(ghmesh_tests::fake_github::Fault::Hang);
    let busy = node_with(&gh.url(), &dir, "busy", &["--upstream-concurrency", "1"]).await;
    let mut answers: futures::stream::FuturesUnordered<_> = (0..40)
        .map(|i| {
            let url = format!("{}/repos/acme/h{i}", busy.base());
            async move { http_get(&url).await }
        })
        .collect();
    let refused = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let (s, h, body) = answers.next().await.expect("an answer").unwrap();
            if s == 503 {
                return (h, body);
            }
        }
    })
    .await
    .expect("a 503 while the queue is full");
    let (h, body) = refused;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["message"].is_string());
    assert_eq!(header(&h, "retry-after"), Some("1"));
    assert_eq!(header(&h, "x-ghmesh-cache"), Some("miss"));
    assert_eq!(
        header(&h, "cache-status"),
        Some("ghmesh; fwd=miss; detail=busy")
    );
    drop(answers);
    gh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_passed_through_has_the_gets_length() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node_with(&gh.url(), &dir, "n", &["--client-tokens", "bypass"]).await;
    let own = [("Authorization", "Bearer ghp_someone")];
    let url = format!("{}/repos/acme/widgets", n.base());
    let (s, h, body) = http_request("GET", &url, &own, b"").await.unwrap();
    assert_eq!((s, header(&h, "x-ghmesh-cache")), (200, Some("bypass")));
    assert!(!body.is_empty());
    let (s, h, head_body) = http_request("HEAD", &url, &own, b"").await.unwrap();
    assert_eq!((s, header(&h, "x-ghmesh-cache")), (200, Some("bypass")));
    assert!(head_body.is_empty());
    assert_eq!(
        header(&h, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(header(&h, "etag").is_some());
}
