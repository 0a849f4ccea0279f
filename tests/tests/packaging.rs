//! What packaging relies on, with the real binary: `ghmesh --version` (release assets
//! and bug reports name a version and commit), systemd's readiness protocol, and
//! joining a fleet through one DNS name (a Kubernetes headless Service) with no peer
//! ids given, including pods that come up later.
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

/// `git` run in this source tree, when it is a git checkout (a release tarball is not).
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    // The binary's version is the node crate's; this crate's is the same only because
    // both take the workspace version, so check that rather than assume it.
    let node_manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../node/Cargo.toml"))
            .unwrap();
    assert!(
        node_manifest.contains("version.workspace = true"),
        "ghmesh-node no longer takes the workspace version: compare with its own"
    );
    let out = Command::new(ghmesh_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "ghmesh --version failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // build.rs: "ghmesh <version> (commit <first 12 of GHMESH_BUILD_COMMIT or git
    // HEAD>)", or "(commit unknown)" when built outside a checkout (a tarball).
    let prefix = format!("ghmesh {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = text
        .trim_end()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("expected `{prefix}<commit>)`, got {text:?}"));
    if commit == "unknown" {
        // Only a build with neither GHMESH_BUILD_COMMIT nor a git checkout says so.
        assert_eq!(
            git(&["rev-parse", "--git-dir"]),
            None,
            "built from a git checkout, yet the commit is unknown"
        );
        return;
    }
    assert!(
        commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "the commit should be 12 hex digits, got {commit:?}"
    );
    // In a checkout (a clean clone included) the commit is one of this repository's;
    // not necessarily HEAD, since the binary may predate the latest commit.
    if git(&["rev-parse", "--git-dir"]).is_some() {
        assert!(
            git(&["cat-file", "-e", &format!("{commit}^{{commit}}")]).is_some(),
            "{commit} is not a commit of this repository"
        );
    }
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

/// A hosts file where one name, fleet.test, resolves to three loopback hosts (what a
/// headless Service's A records look like), and a port free on them: every node listens
/// on that port of its own address, as pods do. `None` (after one line saying why) where
/// the nodes cannot be given their own /etc/hosts.
fn fleet_hosts(dir: &tempfile::TempDir) -> Option<(std::path::PathBuf, u16)> {
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
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.11:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Some((hosts, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_mesh_through_one_dns_name_with_no_peer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let Some((hosts, port)) = fleet_hosts(&dir) else {
        return;
    };
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

/// Failed dials to addresses of no known peer (the DNS seeds), from the node's metrics.
async fn failed_seed_dials(node: &Daemon) -> u64 {
    let (status, _, body) = http_get(&format!("{}/_ghmesh/metrics", node.base()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("libp2p_swarm_outgoing_connection_error_total{peer=\"Unknown\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_comes_up_later_is_found_by_re_resolving_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let Some((hosts, port)) = fleet_hosts(&dir) else {
        return;
    };
    let listen = |i: u8| format!("/ip4/127.0.0.1{i}/tcp/{port}");
    let first_args: Vec<String> = [
        "--listen",
        &listen(1),
        "--bootstrap",
        &format!("/dns4/fleet.test/tcp/{port}"),
        "--upstream",
        "http://127.0.0.1:9",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let first = start_daemon_wrapped(
        &with_hosts_file(&hosts),
        dir.path().join("first"),
        &first_args,
        &env("dns-fleet"),
    )
    .await
    .unwrap();
    // Wait until the first resolution has been dialled and found nobody at .12 and
    // .13, so that what follows can only come from resolving the name again.
    let start = Instant::now();
    while failed_seed_dials(&first).await < 2 {
        assert!(
            start.elapsed() < T,
            "the first node should have dialled the other resolved addresses; log: {}",
            std::fs::read_to_string(&first.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(first.stats().await.unwrap()["members"].as_u64(), Some(0));
    // The late pod has no bootstrap of its own (and no mDNS, see start_daemon): it
    // cannot find the first node, only be found by it.
    let late_args: Vec<String> = ["--listen", &listen(2), "--upstream", "http://127.0.0.1:9"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let late = start_daemon(dir.path().join("late"), &late_args, &env("dns-fleet"))
        .await
        .unwrap();
    // The binary re-resolves every 10 s (NodeConfig::discovery_interval): allow one
    // full interval on top of the usual timeout.
    let deadline = T + Duration::from_secs(10);
    let start = Instant::now();
    for node in [&first, &late] {
        loop {
            let members = node.stats().await.unwrap()["members"].as_u64();
            if members == Some(1) {
                break;
            }
            assert!(
                start.elapsed() < deadline,
                "the first node should find the late one by re-resolving the name, {} sees {members:?}; log: {}",
                node.ready.peer_id,
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for mut node in [first, late] {
        assert_eq!(node.terminate().await, Some(0));
    }
}
