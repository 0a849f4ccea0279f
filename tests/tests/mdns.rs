//! mDNS discovery on a real, non-loopback interface: two network namespaces joined by
//! a veth pair, one node in each (each node runs on a thread that entered its
//! namespace). Needs root and `ip`; skips with a message otherwise.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ghmesh_node::upstream::Upstream;
use ghmesh_node::Node;
use ghmesh_tests::fake_upstream::MemoryUpstream;
use ghmesh_tests::harness::{init_tracing, test_config, test_keys, wait_until};

struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces with a veth pair, 10.231.x.1/24 and 10.231.x.2/24.
fn two_hosts() -> Result<Netns, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("not root".into());
    }
    let tag = std::process::id() % 100_000;
    let (a, b) = (format!("ghm-a{tag}"), format!("ghm-b{tag}"));
    let (va, vb) = (format!("gva{tag}"), format!("gvb{tag}"));
    let subnet = tag % 250;
    ip(&["netns", "add", &a])?;
    let mut ns = Netns {
        names: vec![a.clone()],
    };
    ip(&["netns", "add", &b])?;
    ns.names.push(b.clone());
    ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
    ip(&["link", "set", &va, "netns", &a])?;
    ip(&["link", "set", &vb, "netns", &b])?;
    for (n, v, host) in [(&a, &va, 1), (&b, &vb, 2)] {
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("10.231.{subnet}.{host}/24"),
            "dev",
            v,
        ])?;
        ip(&["-n", n, "link", "set", v, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", v])?;
    }
    Ok(ns)
}

/// Runs a node inside namespace `ns` until `stop` fires.
fn node_in(
    ns: String,
    up: Arc<dyn Upstream>,
) -> (
    Node,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    init_tracing();
    let (node_tx, node_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cfg = test_config(dir.path(), Some(test_keys()), vec![]);
            cfg.listen = vec!["/ip4/0.0.0.0/tcp/0".parse().expect("addr")];
            cfg.mdns = true;
            let node = Node::start(cfg, up).await.expect("node starts");
            node_tx.send(node.clone()).expect("send node");
            let _ = stop_rx.await;
            node.shutdown().await;
        });
    });
    let node = node_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("node started");
    (node, stop_tx, handle)
}

#[test]
fn two_nodes_on_a_lan_find_each_other_by_mdns() {
    let ns = match two_hosts() {
        Ok(ns) => ns,
        Err(why) => {
            println!(
                "skipping mDNS test: needs root and iproute2 to create network namespaces ({why})"
            );
            return;
        }
    };
    let up: Arc<dyn Upstream> = Arc::new(MemoryUpstream::new());
    let (a, stop_a, ta) = node_in(ns.names[0].clone(), up.clone());
    let (b, stop_b, tb) = node_in(ns.names[1].clone(), up);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (ida, idb) = (a.peer_id(), b.peer_id());
    let found = rt.block_on(wait_until(
        Duration::from_secs(15),
        "mDNS discovery",
        || async { a.members().contains(&idb) && b.members().contains(&ida) },
    ));
    let took = found.expect("nodes found each other over mDNS with no bootstrap");
    println!("mDNS: two LAN nodes found each other in {took:?}");
    let _ = stop_a.send(());
    let _ = stop_b.send(());
    ta.join().expect("node a thread");
    tb.join().expect("node b thread");
}
