//! Real clients, unmodified, through a ghmesh node: PyGithub and `@octokit/rest`
//! (installed by `.ci/client-tests` into a virtualenv and an npm prefix under
//! `target/`, which it passes as GHMESH_COMPAT_PYTHON and GHMESH_COMPAT_NPM). The
//! scripts in `tests/compat/` assert what each client sees; this test asserts what
//! reached the fake GitHub.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ghmesh_tests::daemon::*;
use ghmesh_tests::fake_github::FakeGithub;

fn compat_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("compat")
        .join(name)
}

async fn node(gh: &FakeGithub, dir: &tempfile::TempDir) -> Daemon {
    let env = HashMap::from([("GHMESH_SECRET".to_string(), "clients-fleet".to_string())]);
    let args = vec!["--upstream".to_string(), gh.url()];
    start_daemon(dir.path().join("n"), &args, &env)
        .await
        .unwrap()
}

/// Runs a client script; its stdout's last line is JSON with `ok: true`.
async fn run_client(mut cmd: tokio::process::Command, base: &str) -> serde_json::Value {
    cmd.env("GHMESH_BASE", base).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the client finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["ok"], true);
    v
}

/// What reached GitHub: the client's own token on every request, and the write once.
fn check_upstream(gh: &FakeGithub, token: &str, comments: &str) {
    let sent = gh.requests();
    assert!(
        sent.iter().all(
            |r| r.authorization.as_deref() == Some(&format!("token {token}"))
                || r.authorization.as_deref() == Some(&format!("Bearer {token}"))
        ),
        "{sent:?}"
    );
    let writes: Vec<_> = sent.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].path_and_query, comments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygithub_works_unmodified_through_the_proxy() {
    let Ok(python) = std::env::var("GHMESH_COMPAT_PYTHON") else {
        println!("skipping PyGithub compatibility: run .ci/client-tests (installs PyGithub into target/)");
        return;
    };
    let gh = FakeGithub::start_self_referencing().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(compat_script("pygithub_compat.py"));
    let seen = run_client(cmd, &n.base()).await;
    assert!(seen["after"].as_u64() > seen["before"].as_u64());
    check_upstream(&gh, "ghp_pygithub", "/repos/acme/widgets/issues/3/comments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn octokit_works_unmodified_through_the_proxy() {
    let Ok(npm) = std::env::var("GHMESH_COMPAT_NPM") else {
        println!("skipping octokit compatibility: run .ci/client-tests (installs @octokit/rest into target/)");
        return;
    };
    let gh = FakeGithub::start_self_referencing().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    // ES modules resolve packages from the script's own folder: run a copy placed next
    // to the installed node_modules.
    let script = Path::new(&npm).join("octokit_compat.mjs");
    std::fs::copy(compat_script("octokit_compat.mjs"), &script).unwrap();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script);
    let seen = run_client(cmd, &n.base()).await;
    assert!(seen["issues"].as_u64() > Some(30));
    check_upstream(&gh, "ghp_octokit", "/repos/acme/widgets/issues/5/comments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn octokit_graphql_works_unmodified_through_the_proxy() {
    let Ok(npm) = std::env::var("GHMESH_COMPAT_NPM") else {
        println!("skipping octokit GraphQL compatibility: run .ci/client-tests (installs @octokit/graphql into target/)");
        return;
    };
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(&gh, &dir).await;
    let script = Path::new(&npm).join("octokit_graphql.mjs");
    std::fs::copy(compat_script("octokit_graphql.mjs"), &script).unwrap();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script);
    let seen = run_client(cmd, &n.base()).await;
    assert_eq!(seen["pages"], 250);
    assert_ne!(seen["alice"], seen["bob"]);
    // What reached GitHub: the repository query once for three reads in two
    // spellings; three pages; the comments read, the mutation and the read after it;
    // each viewer; the missing repository (an error, never stored).
    assert_eq!(gh.graphql_requests(), 1 + 3 + 3 + 2 + 1);
    let sent = gh.requests();
    assert!(
        sent.iter()
            .all(|r| r.path_and_query == "/graphql" && r.method == "POST"),
        "{sent:?}"
    );
    assert!(
        sent.iter().all(|r| r.if_none_match.is_none()),
        "no validators upstream"
    );
}
