//! Start real nodes on 127.0.0.1 (port 0) in one process, and poll for conditions.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ghmesh_node::upstream::Upstream;
use ghmesh_node::{Node, NodeConfig};
use ghmesh_protocol::MeshKeys;
use libp2p::Multiaddr;

pub use ghmesh_node::network::PeerInfo;

/// Keys of the test mesh. Derivation takes PBKDF2's 600k rounds: derive once.
pub fn test_keys() -> MeshKeys {
    static K: OnceLock<MeshKeys> = OnceLock::new();
    K.get_or_init(|| MeshKeys::derive(b"test fleet secret", "acme/widgets"))
        .clone()
}

/// Keys with another secret (a different mesh).
pub fn other_secret_keys() -> MeshKeys {
    static K: OnceLock<MeshKeys> = OnceLock::new();
    K.get_or_init(|| MeshKeys::derive(b"some other secret", "acme/widgets"))
        .clone()
}

/// Keys with the same secret but another scope.
pub fn other_scope_keys() -> MeshKeys {
    static K: OnceLock<MeshKeys> = OnceLock::new();
    K.get_or_init(|| MeshKeys::derive(b"test fleet secret", "acme/other"))
        .clone()
}

/// A node config for tests: loopback port 0, no mDNS, fast timers.
pub fn test_config(
    dir: &std::path::Path,
    keys: Option<MeshKeys>,
    bootstrap: Vec<Multiaddr>,
) -> NodeConfig {
    let mut cfg = NodeConfig::new(dir).fast();
    cfg.keys = keys;
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    cfg.bootstrap = bootstrap;
    cfg.mdns = false;
    cfg
}

/// A started node with its data dir.
pub struct TestNode {
    pub node: Node,
    pub dir: tempfile::TempDir,
}

impl TestNode {
    /// First listen address with `/p2p/<id>`.
    pub fn addr(&self) -> Multiaddr {
        self.node
            .listen_addrs()
            .into_iter()
            .next()
            .expect("listening")
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// Starts a node with a fresh temp dir.
pub async fn start_node(
    keys: Option<MeshKeys>,
    bootstrap: Vec<Multiaddr>,
    upstream: Arc<dyn Upstream>,
) -> anyhow::Result<TestNode> {
    start_node_with(keys, bootstrap, upstream, |_| {}).await
}

/// Starts a node with a fresh temp dir, after `adjust` has changed its config (a
/// shared manual clock, a TTL, shorter deadlines…).
pub async fn start_node_with(
    keys: Option<MeshKeys>,
    bootstrap: Vec<Multiaddr>,
    upstream: Arc<dyn Upstream>,
    adjust: impl FnOnce(&mut NodeConfig),
) -> anyhow::Result<TestNode> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(dir.path(), keys, bootstrap);
    adjust(&mut cfg);
    let node = Node::start(cfg, upstream).await?;
    Ok(TestNode { node, dir })
}

/// Starts `n` nodes of the test mesh, each bootstrapped to the first.
pub async fn start_mesh(n: usize, upstream: Arc<dyn Upstream>) -> anyhow::Result<Vec<TestNode>> {
    let first = start_node(Some(test_keys()), vec![], upstream.clone()).await?;
    let boot = first.addr();
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(start_node(Some(test_keys()), vec![boot.clone()], upstream.clone()).await?);
    }
    Ok(nodes)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: &str,
    mut cond: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node sees every other as a member (proved the key by hello).
pub async fn wait_full_membership(
    nodes: &[TestNode],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let want = nodes.len() - 1;
    wait_until(timeout, "full membership", || async {
        nodes.iter().all(|n| n.node.members().len() >= want)
    })
    .await
}

/// Waits for full membership and for every node to have a gossipsub mesh peer: gossip
/// is only delivered once subscriptions are exchanged and the mesh is grafted.
pub async fn wait_gossip_mesh(nodes: &[TestNode], timeout: Duration) -> anyhow::Result<Duration> {
    let members = wait_full_membership(nodes, timeout).await?;
    let mesh = wait_until(timeout, "every node in a gossip mesh", || async {
        for n in nodes {
            if n.node.stats().await.mesh_peers == 0 {
                return false;
            }
        }
        true
    })
    .await?;
    Ok(members + mesh)
}

/// True when `node` holds a fresh entry for `key`.
pub fn holds(node: &Node, key: &ghmesh_protocol::CacheKey) -> bool {
    node.store()
        .get_meta(key)
        .ok()
        .flatten()
        .is_some_and(|m| m.is_fresh(node.clock().now_ms()))
}
