//! End to end with the real `ghmesh` binary: three daemons on loopback (ports 0) and
//! the fake GitHub in this process.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use ghmesh_protocol::CanonicalRequest;
use ghmesh_tests::daemon::*;
use ghmesh_tests::fake_github::{FakeGithub, Fault};

const T: Duration = Duration::from_secs(30);

async fn get(node: &Daemon, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_get(&format!("{}{path}", node.base())).await.unwrap()
}

fn cache(h: &[(String, String)]) -> String {
    header(h, "x-ghmesh-cache").unwrap_or("none").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_upstream_call() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &[], &dir).await.unwrap();
    let path = "/repos/acme/widgets";
    let (s1, h1, b1) = get(&nodes[0], path).await;
    assert_eq!(s1, 200);
    assert!(
        matches!(cache(&h1).as_str(), "miss" | "coalesced"),
        "{}",
        cache(&h1)
    );
    assert!(header(&h1, "etag").is_some());
    for n in &nodes[1..] {
        let (s, h, b) = get(n, path).await;
        assert_eq!(s, 200);
        assert!(
            matches!(cache(&h).as_str(), "peer" | "hit"),
            "{}",
            cache(&h)
        );
        assert_eq!(b, b1, "identical body");
    }
    assert_eq!(gh.full_responses(), 1, "one upstream call for the fleet");
    let saved: u64 = {
        let mut s = 0;
        for n in &nodes {
            s += n.stats().await.unwrap()["api_calls_saved"]
                .as_u64()
                .unwrap();
        }
        s
    };
    assert!(saved >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_revalidate_for_free_and_the_refresh_spreads() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &["--ttl", "2"], &dir).await.unwrap();
    let path = "/repos/acme/widgets/issues?state=open";
    // Read on the key's owner so that its own expiry is revalidated by itself.
    let ids: Vec<libp2p::PeerId> = nodes
        .iter()
        .map(|n| n.ready.peer_id.parse().unwrap())
        .collect();
    let owner =
        ghmesh_node::placement::owner(&CanonicalRequest::get(path).unwrap().key(), ids.clone())
            .unwrap();
    let o = ids.iter().position(|p| *p == owner).unwrap();
    let (_, h, body) = get(&nodes[o], path).await;
    assert_eq!(cache(&h), "miss");
    // Every node holds it (announce).
    for n in &nodes {
        poll("announce", || async {
            n.stats().await.unwrap()["entries"].as_u64() == Some(1)
        })
        .await;
    }
    // Poll until the owner's copy expires and comes back revalidated.
    let started = Instant::now();
    loop {
        let (_, h, b) = get(&nodes[o], path).await;
        assert_eq!(b, body);
        if cache(&h) == "revalidated" {
            break;
        }
        assert!(
            started.elapsed() < T,
            "never revalidated (last: {})",
            cache(&h)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gh.full_responses(), 1, "no full call");
    assert!(gh.not_modified() >= 1);
    let calls = gh.total_requests();
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != o) {
        let (_, h, b) = get(n, path).await;
        assert!(
            matches!(cache(&h).as_str(), "peer" | "hit"),
            "node {i}: {}",
            cache(&h)
        );
        assert_eq!(b, body);
    }
    assert_eq!(
        gh.total_requests(),
        calls,
        "the refresh reached the others: no upstream request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_serve_stale_or_an_error_never_hang() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--upstream",
        &gh.url(),
        "--ttl",
        "1",
        "--upstream-timeout",
        "2",
        "--no-p2p",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = start_daemon(dir.path().join("n"), &args, &env("x"))
        .await
        .unwrap();
    let (s, h, body) = get(&node, "/repos/acme/widgets/pulls").await;
    assert_eq!((s, cache(&h).as_str()), (200, "miss"));

    for fault in [
        Fault::ServerError,
        Fault::RateLimited,
        Fault::TooManyRequests,
        Fault::Hang,
    ] {
        gh.set_fault(fault);
        poll("stale copy", || async {
            let (s, h, b) = get(&node, "/repos/acme/widgets/pulls").await;
            s == 200 && cache(&h) == "stale" && b == body
        })
        .await;
        let started = Instant::now();
        let (s, h, b) = get(&node, &format!("/repos/acme/widgets/unknown-{fault:?}")).await;
        assert!(s >= 400, "{fault:?}: status {s}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{fault:?}: answered in {:?}",
            started.elapsed()
        );
        let json: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(json["message"].is_string(), "{fault:?}: {json}");
        assert_ne!(cache(&h), "stale");
        gh.set_fault(Fault::None);
    }
    let stats = node.stats().await.unwrap();
    assert!(stats["stale_served"].as_u64().unwrap() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_serves_from_disk_with_the_same_peer_id() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = vec!["--upstream".into(), gh.url()];
    let mut node = start_daemon(dir.path().join("n"), &args, &env("k9"))
        .await
        .unwrap();
    let paths: Vec<String> = (1..=5)
        .map(|i| format!("/repos/acme/widgets/issues/{i}"))
        .collect();
    let mut bodies = Vec::new();
    for p in &paths {
        let (s, h, b) = get(&node, p).await;
        assert_eq!((s, cache(&h).as_str()), (200, "miss"));
        bodies.push(b);
    }
    let peer_id = node.ready.peer_id.clone();
    node.kill9().await;
    let node = start_daemon(dir.path().join("n"), &args, &env("k9"))
        .await
        .unwrap();
    assert_eq!(node.ready.peer_id, peer_id, "same peer id after restart");
    for (p, b) in paths.iter().zip(&bodies) {
        let (s, h, body) = get(&node, p).await;
        assert_eq!((s, cache(&h).as_str()), (200, "hit"), "{p}");
        assert_eq!(&body, b);
    }
    assert_eq!(gh.full_responses(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_and_a_second_node_on_the_same_dir_is_refused() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = vec!["--upstream".into(), gh.url()];
    let mut node = start_daemon(dir.path().join("n"), &args, &env("t"))
        .await
        .unwrap();
    let second = start_daemon(dir.path().join("n"), &args, &env("t")).await;
    let err = format!("{:#}", second.err().expect("second node refused"));
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(node.terminate().await, Some(0));
}

fn api_cmd(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    ghmesh_api(args, env).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghmesh_api_like_gh() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = lone_daemon(&gh, &dir).await.unwrap();
    let e = vec![("GHMESH_API", node.ready.api.clone())];

    let o =
        tokio::task::block_in_place(|| api_cmd(&["repos/acme/widgets", "--jq", ".full_name"], &e));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "acme/widgets\n");

    let o =
        tokio::task::block_in_place(|| api_cmd(&["repos/acme/widgets/issues", "--paginate"], &e));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one merged JSON array");
    assert_eq!(
        all.as_array().unwrap().len(),
        300,
        "3 pages of 100 merged: --paginate asks for per_page=100, as gh does"
    );
    assert!(gh
        .requests()
        .iter()
        .any(|r| r.path_and_query == "/repos/acme/widgets/issues?per_page=100"));
    let ids: std::collections::HashSet<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 300, "distinct items from every page");

    let o = tokio::task::block_in_place(|| {
        api_cmd(
            &[
                "repos/acme/widgets/issues",
                "--paginate",
                "--jq",
                ".[].number",
            ],
            &e,
        )
    });
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 300);

    let o = tokio::task::block_in_place(|| api_cmd(&["-i", "repos/acme/widgets"], &e));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("HTTP/1.1 200 OK\n"), "{out}");
    assert!(out.contains("X-Ghmesh-Cache: hit\r\n"), "{out}");
    assert!(out.contains("Etag: "), "{out}");

    let o = tokio::task::block_in_place(|| api_cmd(&["repos/acme/missing"], &e));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 404"));

    // No node: works alone on the local store and upstream, and caches.
    let alone = vec![
        ("GHMESH_API", "127.0.0.1:1".to_string()),
        (
            "GHMESH_DATA_DIR",
            dir.path().join("alone").display().to_string(),
        ),
        ("GHMESH_UPSTREAM", gh.url()),
    ];
    let before = gh.full_responses();
    let o =
        tokio::task::block_in_place(|| api_cmd(&["repos/acme/gadgets", "--jq", ".name"], &alone));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "gadgets\n");
    let o = tokio::task::block_in_place(|| api_cmd(&["-i", "repos/acme/gadgets"], &alone));
    assert!(String::from_utf8_lossy(&o.stdout).contains("X-Ghmesh-Cache: hit"));
    assert_eq!(gh.full_responses(), before + 1);
}

/// Contract §5: like gh, `ghmesh api` sends the caller's token (`GH_TOKEN`, else
/// `GITHUB_TOKEN`; `-H Authorization` wins), so a write through the node acts as the
/// caller instead of getting the node's 401; a write's `Location` points at the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghmesh_api_sends_the_callers_token_as_gh_does() {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_write_location(
        "/repos/acme/widgets/issues/3/comments",
        "/repos/acme/widgets/issues/comments/77",
    );
    let dir = tempfile::tempdir().unwrap();
    let node = lone_daemon(&gh, &dir).await.unwrap();
    let api = ("GHMESH_API", node.ready.api.clone());
    let comment = [
        "-i",
        "repos/acme/widgets/issues/3/comments",
        "-f",
        "body=hi",
    ];
    let last_post = || {
        gh.requests()
            .into_iter()
            .rev()
            .find(|r| r.method == "POST")
            .and_then(|r| r.authorization)
    };

    // No token of the caller's: the node does not lend its own to a write.
    let o = tokio::task::block_in_place(|| api_cmd(&comment, std::slice::from_ref(&api)));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 401"));
    assert_eq!(last_post(), None, "nothing went upstream");

    let caller = vec![api.clone(), ("GH_TOKEN", "ghp_caller".to_string())];
    let o = tokio::task::block_in_place(|| api_cmd(&comment, &caller));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    assert_eq!(last_post().as_deref(), Some("token ghp_caller"));
    assert!(
        out.contains(&format!(
            "Location: http://{}/repos/acme/widgets/issues/comments/77\r\n",
            node.ready.api
        )),
        "the new comment's URL points at the node: {out}"
    );

    let second = vec![api.clone(), ("GITHUB_TOKEN", "ghp_second".to_string())];
    let o = tokio::task::block_in_place(|| api_cmd(&comment, &second));
    assert!(o.status.success());
    assert_eq!(last_post().as_deref(), Some("token ghp_second"));

    let mut explicit = comment.to_vec();
    explicit.extend(["-H", "Authorization: Bearer ghp_explicit"]);
    let o = tokio::task::block_in_place(|| api_cmd(&explicit, &caller));
    assert!(o.status.success());
    assert_eq!(
        last_post().as_deref(),
        Some("Bearer ghp_explicit"),
        "-H wins"
    );

    // A read with the caller's token is still served through the fleet cache: fetched
    // once with that token, then a hit.
    let read = ["-i", "repos/acme/widgets/pulls"];
    let o = tokio::task::block_in_place(|| api_cmd(&read, &caller));
    assert!(o.status.success());
    let o = tokio::task::block_in_place(|| api_cmd(&read, &caller));
    assert!(String::from_utf8_lossy(&o.stdout).contains("X-Ghmesh-Cache: hit"));
    let reads: Vec<_> = gh
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query == "/repos/acme/widgets/pulls")
        .collect();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].authorization.as_deref(), Some("token ghp_caller"));
}

/// `ghmesh api` against what `gh api` prints when its output is not a terminal
/// (gh's pkg/cmd/api): bodies as received with no newline added, `--jq` per page,
/// object pages back to back, `-i --paginate` with each page's headers before its own
/// body, and `--cache` as a per-request freshness both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghmesh_api_prints_what_gh_prints() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = lone_daemon(&gh, &dir).await.unwrap();
    let e = vec![("GHMESH_API", node.ready.api.clone())];
    let run = |args: &[&str]| {
        let o = tokio::task::block_in_place(|| api_cmd(args, &e));
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };

    // A body exactly as the API sent it: no newline added.
    let out = run(&["repos/acme/widgets"]);
    let (_, _, body) = get(&node, "/repos/acme/widgets").await;
    assert_eq!(out, body);
    assert!(!out.ends_with(b"\n"));

    // --jq runs on each page: one number per page (3 pages of 40), not the total.
    let out = run(&[
        "repos/acme/widgets/issues?per_page=40",
        "--paginate",
        "--jq",
        "length",
    ]);
    assert_eq!(String::from_utf8_lossy(&out), "40\n40\n40\n");
    assert!(gh
        .requests()
        .iter()
        .any(|r| r.path_and_query == "/repos/acme/widgets/issues?per_page=40"));

    // Object pages are written back to back, each as received, as gh does.
    let mut pages = Vec::new();
    let mut next = Some("/repos/acme/widgets/actions/runs?per_page=2".to_string());
    while let Some(path) = next.take() {
        let (s, h, body) = get(&node, &path).await;
        assert_eq!(s, 200);
        pages.extend_from_slice(&body);
        next = header(&h, "link").and_then(|l| {
            l.split(',')
                .find(|p| p.contains("rel=\"next\""))
                .and_then(|p| p.split_once('<')?.1.split_once('>'))
                .and_then(|(url, _)| url.strip_prefix(&node.base()))
                .map(str::to_string)
        });
    }
    assert!(pages.starts_with(b"{\"total_count\""));
    let out = run(&["repos/acme/widgets/actions/runs?per_page=2", "--paginate"]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&pages)
    );

    // -i --paginate: no merging; each page's status line and headers, then that
    // page's body; pages separated by one newline.
    let out = run(&["-i", "--paginate", "repos/acme/widgets/issues?per_page=50"]);
    let out = String::from_utf8(out).unwrap();
    let blocks: Vec<&str> = out.split("HTTP/1.1 200 OK\n").collect();
    assert_eq!(blocks[0], "", "starts with a status line: {out}");
    assert_eq!(blocks.len(), 4, "3 pages, each with its headers: {out}");
    for (i, block) in blocks[1..].iter().enumerate() {
        let (head, body) = block.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("X-Ghmesh-Cache: "), "{head}");
        assert!(head.contains("Link: "), "{head}");
        let body = if i < 2 {
            body.strip_suffix('\n').expect("a newline between pages")
        } else {
            body
        };
        let page: serde_json::Value = serde_json::from_str(body).expect("one page's array");
        assert_eq!(page.as_array().unwrap().len(), 50, "page {}", i + 1);
    }

    // --cache limits how old a served copy may be, even a fresh one...
    let before = gh.total_requests();
    let out = run(&["-i", "--cache", "0s", "repos/acme/widgets"]);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("X-Ghmesh-Cache: revalidated\r\n"), "{out}");
    assert_eq!(gh.total_requests(), before + 1);
    let out = run(&["-i", "--cache", "1h", "repos/acme/widgets"]);
    assert!(String::from_utf8_lossy(&out).contains("X-Ghmesh-Cache: hit\r\n"));

    // ...and accepts an expired copy fetched within it (--ttl 0: nothing is fresh).
    let args: Vec<String> = vec![
        "--upstream".into(),
        gh.url(),
        "--no-p2p".into(),
        "--ttl".into(),
        "0".into(),
    ];
    let expiring = start_daemon(dir.path().join("t"), &args, &env("g"))
        .await
        .unwrap();
    let e = vec![("GHMESH_API", expiring.ready.api.clone())];
    let run_i = |args: &[&str]| {
        let o = tokio::task::block_in_place(|| api_cmd(args, &e));
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(run_i(&["-i", "repos/acme/gadgets"]).contains("X-Ghmesh-Cache: miss\r\n"));
    assert!(run_i(&["-i", "repos/acme/gadgets"]).contains("X-Ghmesh-Cache: revalidated\r\n"));
    let before = gh.total_requests();
    let out = run_i(&["-i", "--cache", "1h", "repos/acme/gadgets"]);
    assert!(out.contains("X-Ghmesh-Cache: hit\r\n"), "{out}");
    assert_eq!(gh.total_requests(), before, "served locally, expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_node_keeps_serving() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = lone_daemon(&gh, &dir).await.unwrap();
    let base = node.base();

    let (s, _, b) = http_get(&format!("{base}/repos/../etc/passwd"))
        .await
        .unwrap();
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    let huge = "x".repeat(40 * 1024);
    let (s, _, _) = http_request(
        "GET",
        &format!("{base}/repos/acme/widgets"),
        &[("x-junk", &huge)],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(s, 431);
    let body = vec![b'a'; 11 * 1024 * 1024];
    let (s, _, _) = http_request(
        "POST",
        &format!("{base}/repos/acme/widgets/issues"),
        &[("authorization", "Bearer ghp_writer")],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(s, 413);
    let (s, h, b) = http_request(
        "POST",
        &format!("{base}/repos/acme/widgets/issues"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer ghp_writer"),
        ],
        b"{\"title\":\"t\"}",
    )
    .await
    .unwrap();
    assert_eq!((s, cache(&h).as_str()), (201, "bypass"));
    assert!(String::from_utf8_lossy(&b).contains("POST"));
    let (s, h, _) = http_request(
        "GET",
        &format!("{base}/repos/acme/widgets"),
        &[("authorization", "Bearer ghp_someoneelse")],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        (s, cache(&h).as_str()),
        (200, "miss"),
        "a client's own token fetches the miss (--client-tokens share)"
    );

    let (s, _, b) = http_get(&format!("{base}/_ghmesh/health")).await.unwrap();
    assert_eq!((s, b.as_slice()), (200, b"ok".as_slice()));
    let (s, h, _) = get(&node, "/repos/acme/widgets").await;
    assert_eq!(
        (s, cache(&h).as_str()),
        (200, "hit"),
        "and the 200 is shared"
    );
    let (s, _, m) = http_get(&format!("{base}/_ghmesh/metrics")).await.unwrap();
    let m = String::from_utf8_lossy(&m);
    assert_eq!(s, 200);
    assert!(m.contains("ghmesh_misses_total 1"), "{m}");
    assert!(m.contains("libp2p") || !m.is_empty());
    let (s, _, p) = http_get(&format!("{base}/_ghmesh/peers")).await.unwrap();
    assert_eq!(s, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&p)
        .unwrap()
        .is_array());
}

/// A member stopped with SIGSTOP keeps its TCP connections (the kernel answers for
/// it) but answers nothing. The first lookups to it time out, it goes on probation,
/// and every node that saw the timeout asks the same next owner: the same reads cost
/// no more upstream calls than with the stopped node absent (one per key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_costs_no_extra_upstream_calls() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = fleet(3, &gh, &[], &dir).await.unwrap();
    let stopped = Pid::from_raw(nodes[2].child.id().unwrap() as i32);
    kill(stopped, Signal::SIGSTOP).unwrap();

    let before = gh.total_requests();
    let keys: Vec<String> = (0..20)
        .map(|i| format!("/repos/acme/widgets/issues/{i}"))
        .collect();
    // The bound on any read: two owners asked (each within the lookup ceiling), the
    // others' lookup, and the upstream request (node defaults).
    let d = ghmesh_node::Deadlines::default();
    let bound = d.peer_asks() + d.lookup + d.upstream;
    let reads = keys.iter().flat_map(|k| {
        nodes[..2].iter().map(move |n| async move {
            let started = Instant::now();
            let (status, _, _) = get(n, k).await;
            (status, started.elapsed())
        })
    });
    for (status, took) in futures::future::join_all(reads).await {
        assert_eq!(status, 200);
        assert!(took < bound, "a read took {took:?}, over {bound:?}");
    }
    let calls = gh.total_requests() - before;
    assert!(
        calls <= keys.len() as u64,
        "{calls} upstream calls for {} keys",
        keys.len()
    );
    let on_probation = nodes[0].stats().await.unwrap()["members_on_probation"]
        .as_u64()
        .unwrap()
        + nodes[1].stats().await.unwrap()["members_on_probation"]
            .as_u64()
            .unwrap();
    assert!(on_probation >= 1, "the stopped member is on probation");

    kill(stopped, Signal::SIGCONT).unwrap();
    for n in &mut nodes {
        n.terminate().await;
    }
}

/// Ephemeral runners read the moment they are up. Three daemons started together,
/// each bootstrapped to the first, read 10 new keys 9 times each (90 reads at once) as
/// soon as every one has a gossip mesh peer: one upstream call per key, because the
/// members exchange their member lists on admission and views are full before the
/// first heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fleet_spends_one_upstream_call_per_key() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = vec!["--upstream".into(), gh.url()];
    let first = start_daemon(dir.path().join("n0"), &args, &env("cold-fleet"))
        .await
        .unwrap();
    let mut joined = args.clone();
    joined.extend(["--bootstrap".to_string(), first.ready.listen[0].clone()]);
    let fleet_env = env("cold-fleet");
    let (b, c) = tokio::join!(
        start_daemon(dir.path().join("n1"), &joined, &fleet_env),
        start_daemon(dir.path().join("n2"), &joined, &fleet_env),
    );
    let mut nodes = vec![first, b.unwrap(), c.unwrap()];
    for n in &nodes {
        poll("a gossip mesh peer", || async {
            n.stats()
                .await
                .map(|s| s["mesh_peers"].as_u64() >= Some(1))
                .unwrap_or(false)
        })
        .await;
    }
    let keys: Vec<String> = (0..10)
        .map(|i| format!("/repos/acme/cold/issues/{i}"))
        .collect();
    let reads = keys.iter().flat_map(|k| {
        nodes
            .iter()
            .flat_map(move |n| (0..3).map(move |_| async move { get(n, k).await.0 }))
    });
    let statuses = futures::future::join_all(reads).await;
    assert_eq!(statuses.len(), 90);
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(
        gh.total_requests(),
        keys.len() as u64,
        "one upstream call per key"
    );
    for n in &mut nodes {
        n.terminate().await;
    }
}
