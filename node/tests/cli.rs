//! The binary's command-line contract: help, exit codes, one-line errors. (Also makes
//! `cargo test --workspace` build `target/<profile>/ghmesh` for the end-to-end tests.)
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::{Command, Output};

fn ghmesh(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ghmesh"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run ghmesh")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn help_names_every_flag_and_its_env_vars() {
    let o = ghmesh(&["node", "--help"], &[]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "--data-dir",
        "GHMESH_DATA_DIR",
        "CACHE_DIR",
        "--listen",
        "GHMESH_LISTEN",
        "CACHE_LISTEN_PORT",
        "--api",
        "GHMESH_API",
        "--bootstrap",
        "GHMESH_BOOTSTRAP",
        "CACHE_BOOTSTRAP_PEERS",
        "--no-mdns",
        "GHMESH_MDNS",
        "--no-p2p",
        "CACHE_ENABLE_P2P",
        "--upstream",
        "GHMESH_UPSTREAM",
        "GITHUB_API_URL",
        "--ttl",
        "GHMESH_TTL",
        "CACHE_DEFAULT_TTL",
        "--max-entries",
        "GHMESH_MAX_ENTRIES",
        "CACHE_MAX_SIZE",
        "--max-bytes",
        "GHMESH_MAX_BYTES",
        "--secret-file",
        "GHMESH_SECRET",
        "CACHE_P2P_SHARED_SECRET",
        "--repo",
        "GHMESH_REPO",
        "GITHUB_REPOSITORY",
        "--log-format",
        "--api-host",
        "GHMESH_API_HOST",
        "--client-tokens",
        "GHMESH_CLIENT_TOKENS",
        "--upstream-concurrency",
        "GHMESH_UPSTREAM_CONCURRENCY",
        "--no-rewrite-bodies",
        "GHMESH_REWRITE_BODIES",
        "Trust model",
    ] {
        assert!(help.contains(needle), "node --help lacks {needle}");
    }
    let o = ghmesh(&["api", "--help"], &[]);
    let help = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "--method",
        "--header",
        "--raw-field",
        "--field",
        "--jq",
        "--paginate",
        "--include",
        "--cache",
        "GHMESH_API",
    ] {
        assert!(help.contains(needle), "api --help lacks {needle}");
    }
    for cmd in ["stats", "peers", "id", "monitor"] {
        assert!(
            ghmesh(&[cmd, "--help"], &[]).status.success(),
            "{cmd} --help"
        );
    }
}

#[test]
fn usage_errors_exit_2_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec!["node", "--bogus"], vec![], "--bogus"),
        (
            vec!["node", "--data-dir", d, "--listen", "not-a-multiaddr"],
            vec![],
            "multiaddr",
        ),
        (
            vec!["node", "--data-dir", d, "--bootstrap", "/ip4/1.2.3.4/tcp/x"],
            vec![],
            "bootstrap",
        ),
        (
            vec![
                "node",
                "--data-dir",
                d,
                "--secret-file",
                "/nonexistent/secret",
            ],
            vec![],
            "secret-file",
        ),
        (
            vec!["node", "--data-dir", "/proc/ghmesh-cannot-write-here"],
            vec![],
            "data dir",
        ),
        (
            vec!["node", "--data-dir", d],
            vec![("GHMESH_TTL", "soon")],
            "GHMESH_TTL",
        ),
        (
            vec!["node", "--data-dir", d, "--upstream", "ftp://x"],
            vec![],
            "upstream",
        ),
    ];
    for (args, env, needle) in cases {
        let o = ghmesh(&args, &env);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: {err}");
        if !args.contains(&"--bogus") {
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        }
    }
}

#[test]
fn secrets_never_appear_in_errors_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let o = ghmesh(
        &[
            "node",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "bad",
        ],
        &[
            ("GHMESH_SECRET", "s3cr3t-fleet-value"),
            ("GH_TOKEN", "ghp_verysecrettoken"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(!all.contains("s3cr3t-fleet-value") && !all.contains("ghp_verysecrettoken"));
}

#[test]
fn client_commands_without_a_node_exit_1() {
    let o = ghmesh(&["stats"], &[("GHMESH_API", "127.0.0.1:1")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no ghmesh node answers"),
        "{}",
        stderr(&o)
    );
    let o = ghmesh(&["monitor", "--once"], &[("GHMESH_API", "127.0.0.1:1")]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn id_without_a_node_reads_a_stable_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let env = [("GHMESH_API", "127.0.0.1:1"), ("GHMESH_DATA_DIR", d)];
    let a = ghmesh(&["id"], &env);
    let b = ghmesh(&["id"], &env);
    assert!(a.status.success(), "{}", stderr(&a));
    let first = String::from_utf8_lossy(&a.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert!(first.starts_with("12D3Koo"), "{first}");
    assert_eq!(a.stdout, b.stdout, "same identity twice");
}

/// Runs `ghmesh node` until its ready line, then SIGTERM; returns stderr.
fn node_log(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    node_log_in(dir.path(), env)
}

/// [`node_log`] with the data dir `dir`.
fn node_log_in(dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ghmesh"))
        .args(["node", "--data-dir", dir.to_str().unwrap()])
        .args([
            "--api",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ])
        .env_clear()
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.contains("\"event\":\"ready\""), "{ready}");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn start_up_says_local_only_or_warns_about_job_tokens_once() {
    let log = node_log(&[]);
    assert_eq!(log.matches("running local-only").count(), 1, "{log}");
    let log = node_log(&[("GITHUB_TOKEN", "ghs_perjobtoken")]);
    assert_eq!(log.matches("per-job Actions token").count(), 1, "{log}");
    assert!(
        !log.contains("ghs_perjobtoken"),
        "the secret is never logged"
    );
}

#[test]
fn short_secrets_are_warned_about_and_loose_data_dirs_are_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let log = node_log(&[("GHMESH_SECRET", "short")]);
    assert_eq!(log.matches("shorter than 16 bytes").count(), 1, "{log}");
    let log = node_log(&[("GHMESH_SECRET", "a-long-enough-fleet-secret")]);
    assert!(!log.contains("shorter than"), "{log}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = node_log_in(&data, &[]);
    assert_eq!(log.matches("set it to 0700").count(), 1, "{log}");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let log = node_log_in(&data, &[]);
    assert!(
        !log.contains("set it to 0700"),
        "warned once, not every start"
    );
}

#[test]
fn a_data_dir_owned_by_someone_else_is_refused_with_exit_2() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipping: needs root to give a directory to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("theirs");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let o = ghmesh(
        &[
            "node",
            "--data-dir",
            data.to_str().unwrap(),
            "--api",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("belongs to another user"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
