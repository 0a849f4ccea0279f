//! The read path in one process on a manual clock: expiry, 304 revalidation, the
//! refresh reaching a peer, stale serving, and shutdown. Entries expire because the
//! test advances the clock, never because it sleeps.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use ghmesh_node::clock::ManualClock;
use ghmesh_node::upstream::Upstream;
use ghmesh_node::{CacheStatus, GetError};
use ghmesh_protocol::CanonicalRequest;
use ghmesh_tests::fake_upstream::MemoryUpstream;
use ghmesh_tests::harness::*;

const T: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_secs(60);

fn req(path: &str) -> CanonicalRequest {
    CanonicalRequest::get(path).unwrap()
}

/// A local-only node whose entries live `TTL` on a clock the test moves.
async fn local_node_on_a_manual_clock() -> (Arc<ManualClock>, Arc<MemoryUpstream>, TestNode) {
    let clock = ManualClock::starting_now();
    let (up, dynup) = upstream();
    let n = start_node_with(None, vec![], dynup, |c| {
        c.clock = clock.clone();
        c.ttl = Some(TTL.as_secs());
    })
    .await
    .unwrap();
    (clock, up, n)
}

fn upstream() -> (Arc<MemoryUpstream>, Arc<dyn Upstream>) {
    let up = Arc::new(MemoryUpstream::new());
    (up.clone(), up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_revalidates_for_free_and_the_refresh_reaches_the_peer() {
    let clock = ManualClock::starting_now();
    let (up, dynup) = upstream();
    let with_clock = |c: &mut ghmesh_node::NodeConfig| {
        c.clock = clock.clone();
        c.ttl = Some(TTL.as_secs());
    };
    let a = start_node_with(Some(test_keys()), vec![], dynup.clone(), with_clock)
        .await
        .unwrap();
    let b = start_node_with(Some(test_keys()), vec![a.addr()], dynup, with_clock)
        .await
        .unwrap();
    let nodes = [a, b];
    wait_gossip_mesh(&nodes, T).await.unwrap();

    // Fetch on the key's owner, so that the other node learns it from the announce.
    let r = req("/repos/acme/widgets/issues/7");
    let ids = [nodes[0].node.peer_id(), nodes[1].node.peer_id()];
    let owner_id = ghmesh_node::placement::owner(&r.key(), ids).unwrap();
    let (owner, other) = if owner_id == ids[0] {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    assert_eq!(
        owner.node.get(r.clone()).await.unwrap().status,
        CacheStatus::Miss
    );
    wait_until(T, "announce to reach the other node", || async {
        holds(&other.node, &r.key())
    })
    .await
    .unwrap();

    clock.advance(TTL + Duration::from_secs(1));
    assert!(!holds(&owner.node, &r.key()), "expired on the owner");
    assert!(!holds(&other.node, &r.key()), "expired on the other node");

    let again = owner.node.get(r.clone()).await.unwrap();
    assert_eq!(again.status, CacheStatus::Revalidated);
    assert_eq!(
        (up.full(), up.not_modified()),
        (1, 1),
        "one full answer, one free 304"
    );

    // The refresh extends the other node's copy: it serves it with no request at all.
    wait_until(T, "the refresh to reach the other node", || async {
        holds(&other.node, &r.key())
    })
    .await
    .unwrap();
    let calls = up.calls();
    let served = other.node.get(r.clone()).await.unwrap();
    assert_eq!(served.status, CacheStatus::Peer);
    assert_eq!(up.calls(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_copy_is_served_stale_while_upstream_fails_then_revalidated() {
    let (clock, up, n) = local_node_on_a_manual_clock().await;
    let r = req("/repos/acme/widgets");
    let first = n.node.get(r.clone()).await.unwrap();
    assert_eq!(first.status, CacheStatus::Miss);
    assert_eq!(
        n.node.get(r.clone()).await.unwrap().status,
        CacheStatus::Hit
    );

    clock.advance(TTL);
    up.set_failing(true);
    let stale = n.node.get(r.clone()).await.unwrap();
    assert_eq!(stale.status, CacheStatus::Stale);
    assert_eq!(stale.bytes(), first.bytes());
    assert_eq!(n.node.stats().await.counters.stale_served, 1);

    up.set_failing(false);
    let back = n.node.get(r.clone()).await.unwrap();
    assert_eq!(back.status, CacheStatus::Revalidated);
    assert_eq!(n.node.get(r).await.unwrap().status, CacheStatus::Hit);
    assert_eq!((up.full(), up.not_modified()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_hung_work_within_its_bound_and_refuses_later_reads() {
    let (up, dynup) = upstream();
    let grace = Duration::from_millis(300);
    let n = start_node_with(Some(test_keys()), vec![], dynup, |c| {
        c.deadlines.upstream = Duration::from_secs(60);
        c.deadlines.shutdown = grace;
    })
    .await
    .unwrap();
    up.set_latency(Duration::from_secs(60));
    let reader = {
        let node = n.node.clone();
        tokio::spawn(async move { node.get(req("/repos/acme/hung")).await })
    };
    wait_until(T, "the upstream call to start", || async {
        up.calls() == 1
    })
    .await
    .unwrap();

    let bound = grace * 3;
    tokio::time::timeout(bound, n.node.shutdown())
        .await
        .expect("shutdown returns within three grace periods");

    let hung = tokio::time::timeout(T, reader).await.unwrap().unwrap();
    assert!(matches!(hung, Err(GetError::Closed)), "{hung:?}");
    let later = n.node.get(req("/repos/acme/other")).await;
    assert!(matches!(later, Err(GetError::Closed)), "{later:?}");
    assert_eq!(up.calls(), 1, "nothing is fetched after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_writer_and_every_acknowledged_entry_is_on_disk() {
    let (up, dynup) = upstream();
    let n = start_node_with(None, vec![], dynup, |_| {}).await.unwrap();
    let paths: Vec<String> = (0..64).map(|i| format!("/repos/acme/drain{i}")).collect();
    let reads: Vec<_> = paths
        .iter()
        .map(|p| {
            let node = n.node.clone();
            let r = req(p);
            tokio::spawn(async move { (r.key(), node.get(r).await) })
        })
        .collect();
    // Stop while reads are still landing: some are queued at the writer.
    wait_until(T, "the first upstream answers", || async {
        up.calls() >= 8
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(15), n.node.shutdown())
        .await
        .expect("shutdown returns within its bound");
    let mut acknowledged = Vec::new();
    for r in reads {
        let (key, res) = r.await.unwrap();
        match res {
            Ok(served) if served.stored => acknowledged.push(key),
            Ok(_) | Err(GetError::Closed) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(!acknowledged.is_empty());
    let data = n.dir.path().to_path_buf();
    drop(n.node);
    let store = ghmesh_store::Store::open(data.join("cache.redb"), Default::default()).unwrap();
    for key in &acknowledged {
        assert!(
            store.get(key).unwrap().is_some(),
            "{key} acknowledged but not on disk"
        );
    }
}

/// A node on a store whose disk can be made to fail, retrying reopens for `window`.
async fn node_on_a_failing_disk(
    window: Duration,
) -> (
    tempfile::TempDir,
    Arc<MemoryUpstream>,
    ghmesh_node::Node,
    Arc<ghmesh_store::DiskFaults>,
) {
    let (up, dynup) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path(), None, vec![]);
    cfg.deadlines.store_reopen = window;
    let (store, disk) =
        ghmesh_store::Store::open_with_faults(dir.path().join("cache.redb"), cfg.limits).unwrap();
    let node = ghmesh_node::Node::start_with_store(cfg, Arc::new(store), dynup)
        .await
        .unwrap();
    (dir, up, node, disk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_is_served_never_acknowledged_and_the_store_is_reopened() {
    let (_dir, up, node, disk) = node_on_a_failing_disk(Duration::from_secs(60)).await;
    assert_eq!(node.degraded(), None);
    disk.set_failing(true);
    let r = req("/repos/acme/disk");
    let served = node.get(r.clone()).await.unwrap();
    assert_eq!(
        served.status,
        CacheStatus::Miss,
        "the client still gets its answer"
    );
    assert!(!served.stored, "but it is not labelled stored");
    assert_eq!(node.stats().await.counters.store_errors, 1);
    // Health says so while writes fail, through the API too.
    let reason = node.degraded().expect("degraded while the disk fails");
    assert!(reason.contains("store writes fail"), "{reason}");
    assert_eq!(node.stats().await.degraded, Some(reason.clone()));
    let listener = ghmesh_node::api::bind("127.0.0.1:0").await.unwrap();
    let health = format!("http://{}/_ghmesh/health", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ghmesh_node::api::serve(
        node.clone(),
        listener,
        ghmesh_node::api::ApiConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let (status, _, body) = ghmesh_tests::daemon::http_get(&health).await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("degraded: {reason}")
    );

    // The disk comes back: the writer's reopen succeeds and writes work again.
    disk.set_failing(false);
    wait_until(T, "the store to be reopened", || async {
        node.stats().await.counters.store_reopens >= 1
    })
    .await
    .unwrap();
    // Nothing claims to hold the failed write: the next read goes upstream again.
    let again = node.get(r.clone()).await.unwrap();
    assert_eq!(again.status, CacheStatus::Miss);
    assert!(again.stored);
    assert_eq!(node.degraded(), None, "healthy after a successful commit");
    let (status, _, body) = ghmesh_tests::daemon::http_get(&health).await.unwrap();
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    let _ = stop.send(());
    let _ = server.await;
    assert!(node.store().get_meta(&r.key()).unwrap().is_some());
    assert_eq!(node.get(r).await.unwrap().status, CacheStatus::Hit);
    assert_eq!(up.full(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_reopened_fails_the_node() {
    let (_dir, _up, node, disk) = node_on_a_failing_disk(Duration::from_millis(300)).await;
    disk.set_failing(true);
    let served = node.get(req("/repos/acme/dead-disk")).await.unwrap();
    assert!(!served.stored);
    // The daemon waits on this and exits non-zero with the reason.
    let reason = tokio::time::timeout(T, node.failed())
        .await
        .expect("the node gives up on a store it cannot reopen");
    assert!(reason.contains("could not be reopened"), "{reason}");
    assert!(node.degraded().is_some_and(|d| d == reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_may_accept_an_older_copy_as_ghs_cache_flag_does() {
    let (clock, up, n) = local_node_on_a_manual_clock().await;
    let r = req("/repos/acme/cached");
    assert_eq!(
        n.node.get(r.clone()).await.unwrap().status,
        CacheStatus::Miss
    );
    clock.advance(TTL * 2);
    let within = |secs| Some(Duration::from_secs(secs));
    let cred = ghmesh_node::upstream::Credential::Node;
    let served = n
        .node
        .get_within(r.clone(), cred.clone(), within(3 * TTL.as_secs()))
        .await
        .unwrap();
    assert_eq!(
        served.status,
        CacheStatus::Hit,
        "fetched 2 TTLs ago, 3 accepted"
    );
    assert_eq!(up.calls(), 1);
    let served = n
        .node
        .get_within(r.clone(), cred, within(60))
        .await
        .unwrap();
    assert_eq!(served.status, CacheStatus::Revalidated, "too old for 60 s");
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn a_miss_reaches_its_reader_and_the_http_response_as_githubs_bytes_uncopied() {
    let (_clock, up, n) = local_node_on_a_manual_clock().await;
    let r = req("/repos/acme/widgets/issues/1");
    let served = n.node.get(r.clone()).await.unwrap();
    assert_eq!(served.status, CacheStatus::Miss);
    let sent = up.last_body().unwrap();
    assert_eq!(served.bytes(), &sent[..]);
    assert_eq!(
        served.bytes().as_ptr(),
        sent.as_ptr(),
        "the body the reader gets is the one upstream returned, not a copy"
    );
    let parts = ghmesh_node::api::response_parts(&n.node, &served, "", "", false);
    assert_eq!(parts.body.as_ptr(), sent.as_ptr(), "nor is the response's");
    // A hit reads the store: one copy out of redb's page, then shared the same way.
    let hit = n.node.get(r).await.unwrap();
    assert_eq!(hit.status, CacheStatus::Hit);
    assert_eq!(hit.bytes(), &sent[..]);
    let parts = ghmesh_node::api::response_parts(&n.node, &hit, "", "", false);
    assert_eq!(parts.body.as_ptr(), hit.bytes().as_ptr());
}
