//! The operators' view (contract §11) with the real binary: the status page rendered by
//! a real headless Chromium against a running fleet, `ghmesh dashboard`, and the
//! Grafana dashboard checked against the metrics a node exports.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ghmesh_tests::daemon::*;
use ghmesh_tests::fake_github::FakeGithub;
use ghmesh_tests::harness::wait_until;

const T: Duration = Duration::from_secs(30);

fn env() -> HashMap<String, String> {
    let mut e = HashMap::new();
    e.insert("GHMESH_SECRET".to_string(), "dashboard-fleet".to_string());
    e.insert("GH_TOKEN".to_string(), "ghp_dashboard".to_string());
    e
}

/// A fake GitHub and one daemon reading from it.
async fn lone_node() -> (FakeGithub, tempfile::TempDir, Daemon) {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = vec!["--upstream".to_string(), gh.url()];
    let node = start_daemon(dir.path().join("n"), &args, &env())
        .await
        .unwrap();
    (gh, dir, node)
}

/// Two daemons that are members of each other, against `gh`.
async fn pair(gh: &FakeGithub, dir: &tempfile::TempDir) -> (Daemon, Daemon) {
    let args = vec!["--upstream".to_string(), gh.url()];
    let a = start_daemon(dir.path().join("a"), &args, &env())
        .await
        .unwrap();
    let mut b_args = args.clone();
    b_args.extend(["--bootstrap".to_string(), a.ready.listen[0].clone()]);
    let b = start_daemon(dir.path().join("b"), &b_args, &env())
        .await
        .unwrap();
    for node in [&a, &b] {
        wait_until(T, "the two nodes to admit each other", || async {
            node.stats()
                .await
                .is_ok_and(|s| s["members"].as_u64() == Some(1))
        })
        .await
        .unwrap();
    }
    (a, b)
}

/// Reads that leave misses, hits and peer hits in the counters, and a read of `a`'s own
/// rate limit (answered per token, never shared) so that `a` has a budget to show.
async fn traffic(a: &Daemon, b: &Daemon) {
    let (status, _, _) = http_get(&format!("{}/rate_limit", a.base())).await.unwrap();
    assert_eq!(status, 200);
    for path in ["/repos/acme/widgets", "/repos/acme/widgets/issues"] {
        let (status, _, _) = http_get(&format!("{}{path}", a.base())).await.unwrap();
        assert_eq!(status, 200);
        let (status, _, _) = http_get(&format!("{}{path}", a.base())).await.unwrap();
        assert_eq!(status, 200);
        let (status, _, _) = http_get(&format!("{}{path}", b.base())).await.unwrap();
        assert_eq!(status, 200);
    }
}

/// Chromium from Debian's package (`.ci/run` installs it when missing).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `target/`, where the screenshot is kept.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Runs headless Chromium on `url` with `args` and returns its stdout. The flags keep
/// it off the network (this machine has none) and need no sandbox (CI runs as root).
async fn headless(browser: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let run = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    assert!(out.status.success(), "chromium: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `n` as the page writes it (en-US digit groups).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The `data-value` of the element with `id` in a dumped DOM.
fn shown(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let tag = &dom[at..at + dom[at..].find('>').unwrap()];
    let value = tag
        .split("data-value=\"")
        .nth(1)
        .unwrap_or_else(|| panic!("#{id} has no data-value: {tag}"));
    value[..value.find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_a_real_browser_shows_the_nodes_figures() {
    let Some(browser) = chromium() else {
        println!("skipped: no chromium on PATH (Debian package `chromium`; .ci/run installs it)");
        return;
    };
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&gh, &dir).await;
    traffic(&a, &b).await;
    let stats = a.stats().await.unwrap();
    assert!(stats["api_calls_saved"].as_u64().unwrap() >= 2, "{stats}");

    let url = format!("{}/_ghmesh/", a.base());
    let profile = tempfile::tempdir().unwrap();
    // Counters move only with requests, and none are made now; the budgets move when
    // the fleet's ledger reaches `a` (gossip, on its own time), so the page is compared
    // with stats that were the same before and after it was drawn.
    let mut settled = None;
    for _ in 0..5 {
        let before = a.stats().await.unwrap();
        // Virtual time runs the page's timers; it pauses while the page's fetches are out.
        let dom = headless(
            &browser,
            profile.path(),
            &url,
            &["--virtual-time-budget=3000", "--dump-dom"],
        )
        .await;
        let after = a.stats().await.unwrap();
        if before["rate_limits"] == after["rate_limits"] {
            settled = Some((dom, after));
            break;
        }
    }
    let (dom, stats) = settled.expect("the fleet's budgets settled within five page loads");
    assert!(
        dom.contains("data-rendered=\"1\""),
        "the page never drew itself from the stats:\n{dom}"
    );
    assert_eq!(shown(&dom, "members"), stats["members"].to_string());
    assert_eq!(shown(&dom, "members"), "1");
    assert_eq!(
        shown(&dom, "saved"),
        stats["api_calls_saved"].to_string(),
        "calls saved shown = stats"
    );
    assert_eq!(shown(&dom, "upstream"), stats["upstream_calls"].to_string());
    assert!(
        dom.contains(&b.ready.peer_id),
        "the member is listed among the peers"
    );
    assert!(dom.contains(">direct<") && dom.contains(">tcp<"), "{dom}");
    // On loopback nobody can tell whether the member is publicly reachable.
    assert!(
        dom.contains(">unknown<"),
        "the member's reachability: {dom}"
    );
    // Every budget the node knows is shown as the stats say: this node's own when it
    // fetched (it owned a key), the fleet's as the ledger heard it either way.
    let budgets = stats["rate_limits"].as_array().unwrap();
    assert!(!budgets.is_empty(), "{stats}");
    for budget in budgets {
        let remaining = budget["remaining"].as_u64().unwrap();
        let limit = budget["limit"].as_u64().unwrap();
        let seen_by = if budget["source"] == "fleet" {
            ">the fleet<"
        } else {
            ">this node<"
        };
        assert!(
            dom.contains(seen_by)
                && dom.contains(&format!(">{} of {}<", grouped(remaining), grouped(limit))),
            "the budget {budget} is shown as the stats say:\n{dom}"
        );
    }
    let samples = dom
        .split("data-samples=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse::<u32>().ok())
        .expect("the chart was drawn from the history");
    assert!(samples >= 2, "the node's start and now");
    let chart = &dom[dom.find("<svg id=\"chart\"").unwrap()..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    // Everything a saved since its start falls in the one step from start to now.
    assert_eq!(chart.matches("class=\"saved\"").count(), 1, "{chart}");
    let spent = stats["upstream_calls"].as_u64().unwrap();
    assert_eq!(chart.contains("class=\"spent\""), spent > 0, "{chart}");

    let shot = target_dir().join("ghmesh-status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        profile.path(),
        &url,
        &[
            "--virtual-time-budget=3000",
            "--window-size=1200,740",
            &format!("--screenshot={}", shot.display()),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture"
    );
    println!("screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_history_obey_the_apis_host_and_origin_rules() {
    let (_gh, _dir, node) = lone_node().await;
    let page = format!("{}/_ghmesh/", node.base());
    let (status, headers, body) = http_get(&page).await.unwrap();
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let csp = header(&headers, "content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert!(String::from_utf8_lossy(&body).contains("<svg id=\"chart\""));

    for path in ["/_ghmesh/", "/_ghmesh/history"] {
        let url = format!("{}{path}", node.base());
        let (status, _, _) = http_request("GET", &url, &[("Host", "evil.example")], &[])
            .await
            .unwrap();
        assert_eq!(status, 421, "{path}: a foreign Host (DNS rebinding)");
        let (status, _, _) = http_request("GET", &url, &[("Origin", "http://evil.example")], &[])
            .await
            .unwrap();
        assert_eq!(status, 403, "{path}: a foreign Origin");
    }

    let (status, _, body) = http_get(&format!("{}/_ghmesh/history", node.base()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h["interval_ms"], 10_000);
    let samples = h["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "the node's start, then now: {h}");
    let last = samples.last().unwrap();
    for field in ["t", "upstream_calls", "api_calls_saved", "members"] {
        assert!(last[field].is_u64(), "{field} in {last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghmesh_dashboard_prints_the_url_and_opens_it_with_the_desktops_opener() {
    let (_gh, dir, node) = lone_node().await;
    // A stand-in opener that records what it was asked to open.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = dir.path().join("opened");
    let opener = bin.join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();

    let run = |api: String, open: bool| {
        let mut cmd = std::process::Command::new(ghmesh_bin());
        cmd.arg("dashboard")
            .env_clear()
            .env("GHMESH_API", api)
            .env("PATH", &bin);
        if open {
            cmd.arg("--open");
        }
        cmd.output().unwrap()
    };
    let want = format!("http://{}/_ghmesh/\n", node.ready.api);
    let out = run(node.ready.api.clone(), false);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    assert!(!opened.exists(), "without --open nothing is opened");

    let out = run(node.ready.api.clone(), true);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    assert_eq!(std::fs::read_to_string(&opened).unwrap(), want.trim_end());

    // No node there: exit 1 and one line saying what to do.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = free.local_addr().unwrap().to_string();
    drop(free);
    let out = run(nobody, false);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no ghmesh node answers"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// Every metric name in a PromQL expression (`ghmesh_…`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("ghmesh_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_metrics_a_node_exports() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/dist/grafana/ghmesh.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        assert!(
            !p["targets"].as_array().unwrap().is_empty(),
            "{} has a query",
            p["title"]
        );
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "asks on import");
    }
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let mut names: Vec<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    names.sort();
    names.dedup();
    for wanted in [
        "ghmesh_hits_total",
        "ghmesh_members",
        "ghmesh_connected_peers",
        "ghmesh_upstream_held_total",
        "ghmesh_ratelimit_remaining",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} is charted");
    }

    // A node that has spent its token once: every series the dashboard reads exists.
    let (_gh, _dir, node) = lone_node().await;
    let (status, _, _) = http_get(&format!("{}/repos/acme/widgets", node.base()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _, body) = http_get(&format!("{}/_ghmesh/metrics", node.base()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    for name in &names {
        let sampled = text.lines().any(|l| {
            l.strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        });
        assert!(sampled, "{name} is not exported:\n{text}");
    }
    assert!(
        text.contains("ghmesh_ratelimit_remaining{budget=\"node\",resource=\"core\"} "),
        "{text}"
    );
}
