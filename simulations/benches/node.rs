//! Latency of the node's hot paths. Run: `cargo build --release && cargo bench -p ghmesh-simulations`.
//! - local hit through the HTTP API (loopback round trip, keep-alive client), REST and
//!   GraphQL (the same 2 KiB answer; GraphQL also parses and normalises the query)
//! - peer lookup on a local miss (two nodes over TCP loopback)
//! - whole-process `ghmesh api` on a hit (needs target/release/ghmesh)
#![allow(clippy::unwrap_used)] // bench set-up: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ghmesh_node::api;
use ghmesh_node::upstream::Upstream;
use ghmesh_protocol::CanonicalRequest;
use ghmesh_tests::fake_upstream::MemoryUpstream;
use ghmesh_tests::harness::{start_node, test_keys};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn api_node() -> (ghmesh_tests::harness::TestNode, String) {
    let up: Arc<dyn Upstream> = Arc::new(MemoryUpstream::new());
    let n = start_node(None, vec![], up).await.unwrap();
    let listener = api::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(
        n.node.clone(),
        listener,
        api::ApiConfig {
            upstream_base: "https://api.github.com".into(),
            ..Default::default()
        },
        std::future::pending(),
    ));
    (n, format!("http://{addr}"))
}

fn local_hit(c: &mut Criterion) {
    let rt = runtime();
    let (_node, base) = rt.block_on(api_node());
    let client = reqwest::Client::new();
    let url = format!("{base}/repos/acme/widgets");
    rt.block_on(async {
        client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    c.bench_function("api_local_hit_2KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.headers()["x-ghmesh-cache"], "hit");
                r.bytes().await.unwrap()
            })
        })
    });
}

/// A query of the size CI tools send (a repository's open pull requests with checks).
const PULLS_QUERY: &str = r#"query PullRequests($owner: String!, $repo: String!, $limit: Int!, $endCursor: String) {
  repository(owner: $owner, name: $repo) {
    pullRequests(first: $limit, after: $endCursor, states: [OPEN], orderBy: {field: UPDATED_AT, direction: DESC}) {
      totalCount
      nodes { number title isDraft headRefName baseRefName author { login } updatedAt
        commits(last: 1) { nodes { commit { oid statusCheckRollup { state } } } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

fn local_hit_graphql(c: &mut Criterion) {
    let rt = runtime();
    let (_node, base) = rt.block_on(api_node());
    let client = reqwest::Client::new();
    let url = format!("{base}/graphql");
    let body = serde_json::json!({
        "query": PULLS_QUERY,
        "variables": { "owner": "acme", "repo": "widgets", "limit": 30 },
    })
    .to_string();
    let post = || {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
    };
    rt.block_on(async { post().send().await.unwrap().bytes().await.unwrap() });
    c.bench_function("api_local_hit_graphql_2KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = post().send().await.unwrap();
                assert_eq!(r.headers()["x-ghmesh-cache"], "hit");
                r.bytes().await.unwrap()
            })
        })
    });
}

fn peer_lookup(c: &mut Criterion) {
    let rt = runtime();
    let keys: Vec<CanonicalRequest> = (0..2000)
        .map(|i| CanonicalRequest::get(&format!("/repos/acme/r{i}/pulls")).unwrap())
        .collect();
    let (a, b) = rt.block_on(async {
        let up: Arc<dyn Upstream> = Arc::new(MemoryUpstream::new());
        let a = start_node(Some(test_keys()), vec![], up.clone())
            .await
            .unwrap();
        for k in &keys {
            a.node.get(k.clone()).await.unwrap();
        }
        // B joins afterwards: it holds nothing and must look every key up.
        let b = start_node(Some(test_keys()), vec![a.addr()], up)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.node.members().is_empty() {
            assert!(Instant::now() < deadline, "no mesh");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (a, b)
    });
    let mut i = 0usize;
    c.bench_function("peer_lookup_on_miss_2KiB", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let k = &keys[i % keys.len()];
                    i += 1;
                    b.node.store().remove(&k.key()).unwrap();
                    let t = Instant::now();
                    let s = b.node.get(k.clone()).await.unwrap();
                    total += t.elapsed();
                    assert_eq!(s.status, ghmesh_node::CacheStatus::Peer);
                }
                total
            })
        })
    });
    drop(a);
}

fn cli_hit(c: &mut Criterion) {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|d| d.parent())
        .map(|p| p.join("ghmesh"))
        .unwrap();
    if !bin.exists() {
        println!(
            "skipping cli_hit: {} is missing; run `cargo build --release` first",
            bin.display()
        );
        return;
    }
    let rt = runtime();
    let (_node, base) = rt.block_on(api_node());
    let addr = base.trim_start_matches("http://").to_string();
    let run = || {
        let o = std::process::Command::new(&bin)
            .args(["api", "repos/acme/widgets"])
            .env("GHMESH_API", &addr)
            .output()
            .unwrap();
        assert!(o.status.success());
        o
    };
    run();
    let mut g = c.benchmark_group("cli");
    g.sample_size(30);
    g.bench_function("ghmesh_api_whole_process_hit", |b| b.iter(run));
    g.finish();
}

criterion_group!(benches, local_hit, local_hit_graphql, peer_lookup, cli_hit);
criterion_main!(benches);
