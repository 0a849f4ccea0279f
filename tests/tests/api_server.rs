//! The HTTP server's own bounds, in process with short limits: a client that never
//! finishes its request head, or idles on a keep-alive connection, is cut off; shutdown
//! waits for a slow request only for the grace period.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use ghmesh_node::api::{self, ApiConfig, ServerLimits};
use ghmesh_node::upstream::Upstream;
use ghmesh_tests::fake_upstream::MemoryUpstream;
use ghmesh_tests::harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than the limits under test: reaching it means the bound did not hold.
const T: Duration = Duration::from_secs(10);

const LIMITS: ServerLimits = ServerLimits {
    header_read: Duration::from_millis(300),
    shutdown_grace: Duration::from_millis(300),
};

async fn serve(
    up: Arc<dyn Upstream>,
) -> (
    TestNode,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let n = start_node(None, vec![], up).await.unwrap();
    let listener = api::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = ApiConfig {
        upstream_base: "https://api.github.com".into(),
        hosts: Vec::new(),
        limits: LIMITS,
        ..Default::default()
    };
    let server = tokio::spawn(api::serve(n.node.clone(), listener, cfg, async {
        let _ = stopped.await;
    }));
    (n, addr, stop, server)
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(conn: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(T, conn.read_to_end(&mut all))
        .await
        .expect("the server closes the connection")
        .ok();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_and_idle_keep_alive_connections_are_closed() {
    let up: Arc<dyn Upstream> = Arc::new(MemoryUpstream::new());
    let (_n, addr, _stop, _server) = serve(up).await;

    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /repos/acme/widgets HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut half).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "no request was completed, so none was answered"
    );

    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /_ghmesh/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "answered, then cut off when idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_slow_request_only_for_the_grace_period() {
    let mem = Arc::new(MemoryUpstream::new());
    mem.set_latency(Duration::from_secs(60));
    let (_n, addr, stop, server) = serve(mem.clone()).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /repos/acme/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    wait_until(T, "the slow request to reach upstream", || async {
        mem.calls() == 1
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(T, server)
        .await
        .expect("serve returns after the grace period, not after the slow request")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_max_age_header_accepts_an_older_copy() {
    let clock = ghmesh_node::clock::ManualClock::starting_now();
    let mem = Arc::new(MemoryUpstream::new());
    let up: Arc<dyn Upstream> = mem.clone();
    let n = start_node_with(None, vec![], up, |c| {
        c.clock = clock.clone();
        c.ttl = Some(60);
    })
    .await
    .unwrap();
    let listener = api::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(
        n.node.clone(),
        listener,
        ApiConfig::default(),
        std::future::pending(),
    ));
    let get = |extra: &'static str| async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /repos/acme/aged HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&until_closed(&mut c).await).into_owned()
    };
    assert!(get("").await.contains("x-ghmesh-cache: miss"));
    clock.advance(Duration::from_secs(120));
    assert!(get("x-ghmesh-max-age: 3600\r\n")
        .await
        .contains("x-ghmesh-cache: hit"));
    assert_eq!(mem.calls(), 1, "no upstream call for the accepted copy");
    assert!(get("x-ghmesh-max-age: soon\r\n")
        .await
        .starts_with("HTTP/1.1 400"));
    assert!(get("").await.contains("x-ghmesh-cache: revalidated"));
}
