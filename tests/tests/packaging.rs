//! What packaging relies on, with the real binary: systemd's readiness protocol, and
//! joining a fleet through one DNS name (a Kubernetes headless Service) with no peer
//! ids given.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use ghmesh_tests::daemon::*;

const T: Duration = Duration::from_secs(30);

fn env(secret: &str) -> HashMap<String, String> {
    HashMap::from([("GHMESH_SECRET".to_string(), secret.to_string())])
}

/// The next datagram on `sock`, waiting at most `T`.
fn recv(sock: &UnixDatagram) -> String {
    sock.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_after_the_ready_line_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut e = env("notify-fleet");
    e.insert("NOTIFY_SOCKET".into(), path.display().to_string());
    let mut node = start_daemon(dir.path().join("n"), &[], &e).await.unwrap();
    // start_daemon returned after the ready line: READY=1 follows it.
    let ready = tokio::task::spawn_blocking({
        let sock = sock.try_clone().unwrap();
        move || recv(&sock)
    })
    .await
    .unwrap();
    assert_eq!(ready, "READY=1");
    assert_eq!(node.terminate().await, Some(0));
    let stopping = tokio::task::spawn_blocking(move || recv(&sock))
        .await
        .unwrap();
    assert_eq!(stopping, "STOPPING=1");
}

/// Runs the daemon in a private mount namespace whose `/etc/hosts` is `hosts`.
fn with_hosts_file(hosts: &std::path::Path) -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/hosts && exec "$@""#,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([hosts.display().to_string()])
    .collect()
}

/// Can this process give a child its own `/etc/hosts`?
fn private_hosts_file_works(hosts: &std::path::Path) -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("not root".into());
    }
    let mut wrapper = with_hosts_file(hosts);
    let program = wrapper.remove(0);
    let out = Command::new(program)
        .args(wrapper)
        .args(["getent", "ahostsv4", "fleet.test"])
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains("127.0.0.13") {
        Ok(())
    } else {
        Err(format!(
            "unshare/mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_mesh_through_one_dns_name_with_no_peer_ids() {
    let dir = tempfile::tempdir().unwrap();
    // One name, three hosts: what a headless Service's A records look like.
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.11 fleet.test\n127.0.0.12 fleet.test\n127.0.0.13 fleet.test\n",
    )
    .unwrap();
    if let Err(why) = private_hosts_file_works(&hosts) {
        println!(
            "skipping DNS bootstrap test: needs root and unshare to give the nodes their own /etc/hosts ({why})"
        );
        return;
    }
    // Every node listens on the same port of its own address, as pods do.
    let port = std::net::TcpListener::bind("127.0.0.11:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bootstrap = format!("/dns4/fleet.test/tcp/{port}");
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let args: Vec<String> = [
            "--listen",
            &format!("/ip4/127.0.0.1{i}/tcp/{port}"),
            "--bootstrap",
            &bootstrap,
            "--upstream",
            "http://127.0.0.1:9",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let node = start_daemon_wrapped(
            &with_hosts_file(&hosts),
            dir.path().join(format!("n{i}")),
            &args,
            &env("dns-fleet"),
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    let start = Instant::now();
    for node in &nodes {
        loop {
            let members = node.stats().await.unwrap()["members"].as_u64();
            if members == Some(2) {
                break;
            }
            assert!(
                start.elapsed() < T,
                "every node should see both others as members, {} sees {members:?}; log: {}",
                node.ready.peer_id,
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for mut node in nodes {
        assert_eq!(node.terminate().await, Some(0));
    }
}
