//! Runs the real `ghmesh` binary as child processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::fake_github::FakeGithub;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Path of the `ghmesh` binary built by this workspace (`target/<profile>/ghmesh`).
/// `cargo test --workspace` builds it, because `ghmesh-node` has integration tests.
pub fn ghmesh_bin() -> PathBuf {
    target_bin("ghmesh")
}

/// A binary of this workspace next to the running test (`cargo test` builds the
/// binaries of the package under test, and `--workspace` builds them all).
pub fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run the whole suite with `cargo test --workspace` (it builds the binary)",
        bin.display()
    );
    bin
}

/// The ready line of a started daemon.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Ready {
    pub event: String,
    pub peer_id: String,
    pub api: String,
    pub listen: Vec<String>,
}

/// A running `ghmesh node`; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub ready: Ready,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// `http://<api>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.ready.api)
    }

    /// Sends SIGKILL and waits.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM and waits for the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .ok()?
            .ok()?
            .code()
    }

    /// Stats JSON.
    pub async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        get_json(&format!("{}/_ghmesh/stats", self.base())).await
    }
}

async fn get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    let body = http_get(url).await?.2;
    Ok(serde_json::from_slice(&body)?)
}

/// Minimal HTTP GET over a raw TCP connection (keeps this crate free of an HTTP client
/// dependency): returns (status, headers, body).
pub async fn http_get(url: &str) -> anyhow::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    http_request("GET", url, &[], &[]).await
}

/// Minimal HTTP/1.1 request (Connection: close).
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let host = url_host(url)?;
    let stream = tokio::net::TcpStream::connect(host).await?;
    http_request_over(stream, method, url, headers, body).await
}

/// The `host:port` of an `http://` URL.
pub fn url_host(url: &str) -> anyhow::Result<&str> {
    let rest = url.strip_prefix("http://").context("http URL")?;
    Ok(&rest[..rest.find('/').unwrap_or(rest.len())])
}

/// [`http_request`] over a connection the caller made (e.g. inside a network
/// namespace).
pub async fn http_request_over(
    mut stream: tokio::net::TcpStream,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    // A `Host` given by the caller replaces the default one.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    // A server may answer before the whole body is sent (a 413 to a body too large) and
    // close: what it answered is still to be read, as curl does.
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    };
    let cut_short = match stream.write_all(body).await {
        Err(e) if !gone(&e) => return Err(e.into()),
        Err(_) => true,
        Ok(()) => false,
    };
    let mut raw = Vec::new();
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                // The reset of a server that closed with our body unread may follow
                // its answer.
                Err(e) if cut_short && gone(&e) && !raw.is_empty() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok((status, headers, body))
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])?
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).context("short chunk")?);
        data = data.get(size + 2..).context("chunk end")?;
    }
}

/// A header value from a response.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Starts `ghmesh node` with loopback addresses and `args`, waits for its ready line.
pub async fn start_daemon(
    data_dir: PathBuf,
    args: &[String],
    env: &HashMap<String, String>,
) -> anyhow::Result<Daemon> {
    start_daemon_wrapped(&[], data_dir, args, env).await
}

/// [`start_daemon`] run through `wrapper` (a command that ends by running its
/// arguments, e.g. `unshare --mount … sh -c '…; exec "$@"'`).
pub async fn start_daemon_wrapped(
    wrapper: &[String],
    data_dir: PathBuf,
    args: &[String],
    env: &HashMap<String, String>,
) -> anyhow::Result<Daemon> {
    let local = [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
        "--no-mdns",
    ]
    .map(String::from);
    start_daemon_with(wrapper, data_dir, &[&local[..], args].concat(), env).await
}

/// Starts `ghmesh node` with exactly `args` (after `--data-dir`), run through
/// `wrapper`, and waits for its ready line.
pub async fn start_daemon_with(
    wrapper: &[String],
    data_dir: PathBuf,
    args: &[String],
    env: &HashMap<String, String>,
) -> anyhow::Result<Daemon> {
    std::fs::create_dir_all(&data_dir)?;
    let log = data_dir.with_extension("log");
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(ghmesh_bin());
            c
        }
        None => Command::new(ghmesh_bin()),
    };
    cmd.arg("node")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawn ghmesh")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("no ready line within 60 s")??
        .with_context(|| {
            format!(
                "ghmesh exited before ready; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
    let ready: Ready =
        serde_json::from_str(&line).with_context(|| format!("ready line: {line}"))?;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Daemon {
        child,
        ready,
        data_dir,
        log,
    })
}

/// How long fleet helpers wait for a real event before failing the test.
pub const FLEET_WAIT: Duration = Duration::from_secs(30);

/// The environment of a fleet's daemons: its secret and a token for GitHub.
pub fn env(secret: &str) -> HashMap<String, String> {
    let mut e = HashMap::new();
    e.insert("GHMESH_SECRET".to_string(), secret.to_string());
    e.insert("GH_TOKEN".to_string(), "ghp_e2etoken".to_string());
    e
}

/// Polls `f` until it holds, failing the test after [`FLEET_WAIT`]; how long it took.
pub async fn poll<F, Fut>(what: &str, f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_up_to(FLEET_WAIT, what, f).await
}

/// Polls `f` until it holds, failing the test after `limit`; how long it took.
pub async fn poll_up_to<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Starts `n` daemons; all but the first bootstrap to the first. Waits until every
/// node has every other as a peer.
pub async fn fleet(
    n: usize,
    gh: &FakeGithub,
    extra: &[&str],
    dir: &tempfile::TempDir,
) -> anyhow::Result<Vec<Daemon>> {
    let mut args: Vec<String> = vec!["--upstream".into(), gh.url()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let first = start_daemon(dir.path().join("n0"), &args, &env("e2e-fleet")).await?;
    let boot = first.ready.listen[0].clone();
    let mut nodes = vec![first];
    for i in 1..n {
        let mut a = args.clone();
        a.extend(["--bootstrap".to_string(), boot.clone()]);
        nodes.push(start_daemon(dir.path().join(format!("n{i}")), &a, &env("e2e-fleet")).await?);
    }
    for node in &nodes {
        poll("full mesh membership", || async {
            node.stats()
                .await
                .map(|s| s["members"].as_u64() == Some(n as u64 - 1))
                .unwrap_or(false)
        })
        .await;
    }
    Ok(nodes)
}

/// Runs `ghmesh api ARGS` with only `env` in its environment.
pub fn ghmesh_api(args: &[&str], env: &[(&str, String)]) -> std::io::Result<std::process::Output> {
    std::process::Command::new(ghmesh_bin())
        .arg("api")
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
}

/// One daemon reading from `gh` alone (`--no-p2p`), its data under `dir`.
pub async fn lone_daemon(gh: &FakeGithub, dir: &tempfile::TempDir) -> anyhow::Result<Daemon> {
    let args: Vec<String> = vec!["--upstream".into(), gh.url(), "--no-p2p".into()];
    start_daemon(dir.path().join("n"), &args, &env("lone")).await
}
