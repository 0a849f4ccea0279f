//! Idle RSS of a real `ghmesh node` process holding N entries.
//! Run: `cargo build --release && cargo run --release -p ghmesh-simulations --example idle_rss -- 10000`
#![allow(clippy::unwrap_used)] // measurement tool: a panic is the failure report

use std::collections::HashMap;
use std::time::Duration;

use ghmesh_tests::daemon::{http_get, start_daemon};
use ghmesh_tests::fake_github::FakeGithub;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let entries: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(u64::MAX / 4);
    let dir = tempfile::tempdir().unwrap();
    let mut env = HashMap::new();
    env.insert("GHMESH_SECRET".to_string(), "rss".to_string());
    env.insert("RUST_LOG".to_string(), "warn".to_string());
    env.insert("GH_TOKEN".to_string(), "ghp_rss_measurement".to_string());
    let node = start_daemon(dir.path().join("n"), &["--upstream".into(), gh.url()], &env)
        .await
        .unwrap();
    let pid = node.child.id().unwrap();
    let base = node.base();
    println!("started: RSS {} MB", rss_kb(pid) / 1024);
    // A mix like a fleet's: repository objects (~5 KB) and other objects (~1 KB).
    for i in 0..entries {
        let path = if i % 2 == 0 {
            format!("/repos/acme/r{i}")
        } else {
            format!("/repos/acme/r{i}/issues/1")
        };
        let (s, _, _) = http_get(&format!("{base}{path}")).await.unwrap();
        assert_eq!(s, 200, "GET {path}");
    }
    let stats: serde_json::Value =
        serde_json::from_slice(&http_get(&format!("{base}/_ghmesh/stats")).await.unwrap().2)
            .unwrap();
    println!(
        "filled: {} entries, {} MB in the store",
        stats["entries"],
        stats["bytes"].as_u64().unwrap_or(0) / 1_048_576
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "idle RSS with {entries} entries: {:.1} MB",
        rss_kb(pid) as f64 / 1024.0
    );
}
