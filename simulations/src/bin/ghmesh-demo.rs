//! `ghmesh-demo`: a 3-node mesh on loopback with the fake GitHub, showing the shared
//! cache at work. Needs no token and no network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ghmesh_node::upstream::github::{GithubClient, GithubConfig};
use ghmesh_node::{api, Node, NodeConfig};
use ghmesh_protocol::MeshKeys;
use ghmesh_tests::daemon::{header, http_get};
use ghmesh_tests::fake_github::FakeGithub;

/// Starts three ghmesh nodes and a fake GitHub on 127.0.0.1, makes requests through
/// the nodes' HTTP APIs and narrates what each one cost upstream.
#[derive(Parser, Debug)]
#[command(name = "ghmesh-demo", version)]
struct Args {
    /// Keep the nodes running afterwards so you can try them with curl or `ghmesh api`
    #[arg(long)]
    serve: bool,
}

struct DemoNode {
    node: Node,
    base: String,
    _dir: tempfile::TempDir,
}

async fn start(
    i: usize,
    gh: &FakeGithub,
    keys: &MeshKeys,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> anyhow::Result<DemoNode> {
    let dir = tempfile::tempdir()?;
    let mut cfg = NodeConfig::new(dir.path()).fast();
    cfg.keys = Some(keys.clone());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    cfg.bootstrap = bootstrap;
    cfg.mdns = false;
    cfg.ttl = Some(3);
    let upstream = GithubClient::new(GithubConfig {
        base_url: gh.url(),
        token: Some("ghp_demo_fleet_token".into()),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
    })?;
    let node = Node::start(cfg, Arc::new(upstream)).await?;
    let listener = api::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(api::serve(
        node.clone(),
        listener,
        api::ApiConfig {
            upstream_base: gh.url(),
            ..Default::default()
        },
        std::future::pending(),
    ));
    println!("  node {i}: API http://{addr}  peer {}", node.peer_id());
    Ok(DemoNode {
        node,
        base: format!("http://{addr}"),
        _dir: dir,
    })
}

async fn show(n: usize, node: &DemoNode, path: &str, gh: &FakeGithub) -> anyhow::Result<()> {
    let t = Instant::now();
    let (status, headers, body) = http_get(&format!("{}{path}", node.base)).await?;
    println!(
        "  GET {path:<45} on node {n}: {status} {:<11} {:>6} bytes {:>7.1} ms   GitHub: {} full, {} free 304s",
        header(&headers, "x-ghmesh-cache").unwrap_or("?"),
        body.len(),
        t.elapsed().as_secs_f64() * 1000.0,
        gh.full_responses(),
        gh.not_modified()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("ghmesh demo: a fake GitHub that counts calls, and three nodes sharing one secret\n");
    let gh = FakeGithub::start().await?;
    println!("  fake GitHub: {}", gh.url());
    let nodes = start_mesh(&gh).await?;
    one_asks_all_get_it(&nodes, &gh).await?;
    thundering_herd(&nodes, &gh).await?;
    expired_and_revalidated(&nodes, &gh).await?;
    stale_while_down(&nodes, &gh).await?;
    totals(&nodes, &gh).await;
    if args.serve {
        serve_until_ctrl_c(&nodes).await?;
    }
    for n in &nodes {
        n.node.shutdown().await;
    }
    Ok(())
}

/// Three nodes, the second and third bootstrapping from the first, once each has the
/// other two as members.
async fn start_mesh(gh: &FakeGithub) -> anyhow::Result<Vec<DemoNode>> {
    let keys = MeshKeys::derive(b"demo fleet secret", "acme/widgets");
    let first = start(1, gh, &keys, vec![]).await?;
    let boot = first.node.listen_addrs();
    let nodes = vec![
        first,
        start(2, gh, &keys, boot.clone()).await?,
        start(3, gh, &keys, boot).await?,
    ];
    let t = Instant::now();
    while !nodes.iter().all(|n| n.node.members().len() == 2) {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(20),
            "the nodes did not find each other"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "  mesh formed in {:.0} ms\n",
        t.elapsed().as_secs_f64() * 1000.0
    );
    Ok(nodes)
}

async fn one_asks_all_get_it(nodes: &[DemoNode], gh: &FakeGithub) -> anyhow::Result<()> {
    println!("1. One runner asks; the others get the answer from the mesh:");
    for (i, n) in nodes.iter().enumerate() {
        show(i + 1, n, "/repos/acme/widgets", gh).await?;
    }
    Ok(())
}

async fn thundering_herd(nodes: &[DemoNode], gh: &FakeGithub) -> anyhow::Result<()> {
    println!("\n2. Thirty runners ask for the same new thing at once (thundering herd):");
    let before = gh.full_responses();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let url = format!(
            "{}/repos/acme/widgets/actions/runs?status=queued",
            nodes[i % 3].base
        );
        tasks.push(tokio::spawn(async move { http_get(&url).await }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "  30 requests over 3 nodes cost {} GitHub call(s)",
        gh.full_responses() - before
    );
    Ok(())
}

async fn expired_and_revalidated(nodes: &[DemoNode], gh: &FakeGithub) -> anyhow::Result<()> {
    println!("\n3. Entries expire (TTL 3 s here) and are revalidated for free:");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for (i, n) in nodes.iter().enumerate() {
        show(i + 1, n, "/repos/acme/widgets", gh).await?;
    }
    Ok(())
}

async fn stale_while_down(nodes: &[DemoNode], gh: &FakeGithub) -> anyhow::Result<()> {
    println!("\n4. GitHub goes down: expired copies are still served (stale):");
    gh.set_fault(ghmesh_tests::fake_github::Fault::ServerError);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    show(2, &nodes[1], "/repos/acme/widgets", gh).await?;
    gh.set_fault(ghmesh_tests::fake_github::Fault::None);
    Ok(())
}

async fn totals(nodes: &[DemoNode], gh: &FakeGithub) {
    let mut answered = 0;
    for n in nodes {
        let s = n.node.stats().await;
        answered += s.api_calls_saved + s.counters.misses;
    }
    println!(
        "\nIn all: the nodes answered {answered} requests; GitHub gave {} full answers (quota) and {} free 304s.",
        gh.full_responses(),
        gh.not_modified()
    );
}

async fn serve_until_ctrl_c(nodes: &[DemoNode]) -> anyhow::Result<()> {
    println!("\nThe nodes keep running. Try:");
    println!("  curl -i {}/repos/acme/widgets", nodes[0].base);
    println!(
        "  GHMESH_API={} ghmesh api repos/acme/widgets/issues --paginate --jq '.[].title'",
        nodes[1].base.trim_start_matches("http://")
    );
    println!("  curl {}/_ghmesh/stats", nodes[2].base);
    println!("Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
