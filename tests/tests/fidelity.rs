//! HTTP cache fidelity with the real binary and the fake GitHub: a client's own
//! conditional requests, one cache entry per representation, GHES-style paths,
//! `//`, HEAD, and the headers hits keep.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;

use ghmesh_tests::daemon::*;
use ghmesh_tests::fake_github::FakeGithub;

async fn node(gh: &FakeGithub, dir: &tempfile::TempDir) -> Daemon {
    let env = HashMap::from([
        ("GHMESH_SECRET".to_string(), "fidelity-fleet".to_string()),
        ("GH_TOKEN".to_string(), "ghp_fidelity".to_string()),
    ]);
    let args = vec!["--upstream".to_string(), gh.url()];
    start_daemon(dir.path().join("n"), &args, &env)
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
