//! Multi-node tests of the mesh: real nodes over TCP on 127.0.0.1 in one process.
//! Each waits by polling with a timeout; none sleeps for a fixed time.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use ghmesh_node::upstream::Upstream;
use ghmesh_node::CacheStatus;
use ghmesh_protocol::CanonicalRequest;
use ghmesh_tests::fake_upstream::MemoryUpstream;
use ghmesh_tests::harness::*;

const T: Duration = Duration::from_secs(20);

fn req(path: &str) -> CanonicalRequest {
    CanonicalRequest::get(path).unwrap()
}

fn upstream() -> (Arc<MemoryUpstream>, Arc<dyn Upstream>) {
    let up = Arc::new(MemoryUpstream::new());
    (up.clone(), up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_announce_reaches_the_other() {
    let (up, dynup) = upstream();
    let nodes = start_mesh(2, dynup).await.unwrap();
    wait_gossip_mesh(&nodes, T).await.unwrap();

    let r = req("/repos/acme/widgets/issues?state=open");
    // Fetch on the key's owner, so that the other node learns it from the announce
    // (a miss on the other node would ask the owner to fetch instead).
    let (src, dst) = owner_first(&nodes, &r);
    let a = src.node.get(r.clone()).await.unwrap();
    assert_eq!(a.status, CacheStatus::Miss);
    wait_until(T, "announce to reach the other node", || async {
        holds(&dst.node, &r.key())
    })
    .await
    .unwrap();
    let b = dst.node.get(r.clone()).await.unwrap();
    assert_eq!(b.status, CacheStatus::Peer);
    assert_eq!(b.bytes(), a.bytes());
    assert_eq!(up.full(), 1);
    assert!(dst.node.stats().await.counters.announces_received >= 1);
    assert_eq!(
        dst.node.stats().await.counters.lookups_sent,
        0,
        "served from the announce, no lookup"
    );
}

/// (owner of the request's key, the other node) of a two-node mesh.
fn owner_first<'a>(nodes: &'a [TestNode], r: &CanonicalRequest) -> (&'a TestNode, &'a TestNode) {
    let ids = [nodes[0].node.peer_id(), nodes[1].node.peer_id()];
    let owner = ghmesh_node::placement::owner(&r.key(), ids).unwrap();
    if owner == ids[0] {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_finds_earlier_entries_by_lookup() {
    let (up, dynup) = upstream();
    let pair = start_mesh(2, dynup.clone()).await.unwrap();
    wait_gossip_mesh(&pair, T).await.unwrap();
    let keys: Vec<CanonicalRequest> = (0..5)
        .map(|i| req(&format!("/repos/acme/widgets/pulls/{i}")))
        .collect();
    for r in &keys {
        pair[0].node.get(r.clone()).await.unwrap();
    }
    assert_eq!(up.full(), 5);
    // Joins after the announces were heard (gossip keeps no history).
    let late = start_node(Some(test_keys()), vec![pair[0].addr()], dynup)
        .await
        .unwrap();
    let mut trio = pair;
    trio.push(late);
    wait_full_membership(&trio, T).await.unwrap();
    for r in &keys {
        let started = Instant::now();
        let got = trio[2].node.get(r.clone()).await.unwrap();
        assert_eq!(got.status, CacheStatus::Peer, "lookup on a miss finds it");
        println!("lookup on a miss: {:?}", started.elapsed());
    }
    assert_eq!(up.full(), 5, "no upstream call for the late joiner");
    let late = trio[2].node.stats().await.counters;
    assert_eq!(late.peer_hits, 5);
    assert!(late.lookups_found >= 5, "found by lookup, not by gossip");
}

/// The fleet's first node, alone, after reading `n` keys: announces nobody heard.
async fn first_node_after_reading_alone(
    n: usize,
    upstream: Arc<dyn Upstream>,
) -> (TestNode, Vec<CanonicalRequest>) {
    let first = start_node(Some(test_keys()), vec![], upstream)
        .await
        .unwrap();
    let keys: Vec<CanonicalRequest> = (0..n)
        .map(|i| req(&format!("/repos/acme/widgets/pulls/{i}")))
        .collect();
    for r in &keys {
        first.node.get(r.clone()).await.unwrap();
    }
    (first, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_first_node_stored_alone_is_announced_when_a_member_joins() {
    let (up, dynup) = upstream();
    let (first, keys) = first_node_after_reading_alone(3, dynup.clone()).await;
    // Nobody heard those announces. The next node does not read them: whoever owns a
    // key in the full view would not know to ask the first node, so it must hear them.
    let second = start_node(Some(test_keys()), vec![first.addr()], dynup)
        .await
        .unwrap();
    wait_until(
        T,
        "the entries stored alone to reach the new peer",
        || async { keys.iter().all(|r| holds(&second.node, &r.key())) },
    )
    .await
    .unwrap();
    assert_eq!(up.full(), 3);
    assert_eq!(
        second.node.stats().await.counters.lookups_sent,
        0,
        "heard, not asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_subscribing_does_not_take_what_was_kept_for_members() {
    let (up, dynup) = upstream();
    let (first, keys) = first_node_after_reading_alone(2, dynup.clone()).await;
    // It knows the topic name, not the key: it subscribes, and is never admitted.
    let (_out_up, out_dynup) = upstream();
    let outsider = start_node(
        Some(other_secret_keys().impersonating(&test_keys())),
        vec![first.addr()],
        out_dynup,
    )
    .await
    .unwrap();
    wait_until(
        T,
        "the outsider in the first node's gossip mesh",
        || async {
            first.node.stats().await.mesh_peers >= 1 && outsider.node.stats().await.mesh_peers >= 1
        },
    )
    .await
    .unwrap();
    let member = start_node(Some(test_keys()), vec![first.addr()], dynup)
        .await
        .unwrap();
    wait_until(T, "the kept announces to reach the member", || async {
        keys.iter().all(|r| holds(&member.node, &r.key()))
    })
    .await
    .unwrap();
    assert_eq!(up.full(), 2);
    assert_eq!(outsider.node.store().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reading_the_moment_it_starts_waits_for_its_first_member() {
    let (up, dynup) = upstream();
    let pair = start_mesh(2, dynup.clone()).await.unwrap();
    wait_gossip_mesh(&pair, T).await.unwrap();
    let r = req("/repos/acme/widgets/pulls/7");
    pair[0].node.get(r.clone()).await.unwrap();
    wait_until(T, "the announce to reach the other", || async {
        holds(&pair[1].node, &r.key())
    })
    .await
    .unwrap();
    // An ephemeral runner: it reads before it has met anyone. Alone in its own view it
    // would fetch the key itself; it waits for its bootstrap peer and finds it there.
    // A generous bound: a loaded test machine must not make the first member late.
    let runner = start_node_with(Some(test_keys()), vec![pair[0].addr()], dynup, |c| {
        c.deadlines.first_member = Duration::from_secs(15)
    })
    .await
    .unwrap();
    let got = runner.node.get(r.clone()).await.unwrap();
    assert_eq!(got.status, CacheStatus::Peer);
    assert_eq!(up.full(), 1, "no second upstream call");
}

/// An outsider that learned the topic name but not the key: it hears everything and
/// learns nothing; its messages are rejected and counted; it makes members do nothing.
async fn outsider_learns_nothing(outsider_keys: ghmesh_protocol::MeshKeys) {
    let (up, dynup) = upstream();
    let members = start_mesh(2, dynup).await.unwrap();
    let (out_up, out_dynup) = upstream();
    let outsider = start_node(
        Some(outsider_keys.impersonating(&test_keys())),
        vec![members[0].addr()],
        out_dynup,
    )
    .await
    .unwrap();
    wait_until(T, "members admitted each other", || async {
        members.iter().all(|n| n.node.members().len() == 1)
    })
    .await
    .unwrap();
    wait_until(T, "outsider in a gossip mesh", || async {
        outsider.node.stats().await.mesh_peers >= 1
    })
    .await
    .unwrap();

    // Members fetch; the outsider cannot open their announces.
    for i in 0..6 {
        let r = req(&format!("/repos/acme/widgets/commits/{i}"));
        members[i % 2].node.get(r).await.unwrap();
    }
    wait_until(T, "outsider rejected member messages", || async {
        outsider.node.stats().await.counters.rejected_messages >= 1
    })
    .await
    .unwrap();
    assert_eq!(outsider.node.store().len(), 0, "outsider stored nothing");
    // Subscribed to the topic, connected, but never admitted: its hello could not be
    // sealed with the key, and it could not open ours.
    assert!(outsider.node.members().is_empty());
    for m in &members {
        assert!(!m.node.members().contains(&outsider.node.peer_id()));
    }

    // The outsider fetches and asks: members reject, answer nothing, fetch nothing.
    let before_member_calls = up.calls();
    for i in 0..6 {
        let r = req(&format!("/repos/acme/widgets/releases/{i}"));
        let got = outsider.node.get(r.clone()).await.unwrap();
        assert_eq!(
            got.status,
            CacheStatus::Miss,
            "outsider had to go upstream itself"
        );
    }
    wait_until(T, "members rejected outsider messages", || async {
        members[0].node.stats().await.counters.rejected_messages
            + members[1].node.stats().await.counters.rejected_messages
            >= 1
    })
    .await
    .unwrap();
    assert_eq!(
        up.calls(),
        before_member_calls,
        "outsider started no upstream fetch on members"
    );
    assert_eq!(out_up.full(), 6);
    for m in &members {
        for i in 0..6 {
            assert!(!holds(
                &m.node,
                &req(&format!("/repos/acme/widgets/releases/{i}")).key()
            ));
        }
        assert_eq!(m.node.stats().await.counters.lookups_found, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_secret_gets_nothing() {
    outsider_learns_nothing(other_secret_keys()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_another_scope_gets_nothing() {
    outsider_learns_nothing(other_scope_keys()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_through_one_bootstrap_mesh_and_hear_every_announce() {
    let (up, dynup) = upstream();
    let started = Instant::now();
    let nodes = start_mesh(10, dynup).await.unwrap();
    wait_gossip_mesh(&nodes, T).await.unwrap();
    println!("10 nodes meshed in {:?}", started.elapsed());

    let mut latencies = Vec::new();
    for (round, from) in [3usize, 7, 0, 9, 5].into_iter().enumerate() {
        let r = req(&format!("/repos/acme/widgets/actions/runs?round={round}"));
        let t0 = Instant::now();
        nodes[from].node.get(r.clone()).await.unwrap();
        let key = r.key();
        let took = wait_until(T, "announce reaches all nine", || async {
            nodes.iter().all(|n| holds(&n.node, &key))
        })
        .await
        .unwrap();
        latencies.push(t0.elapsed().max(took));
    }
    latencies.sort();
    println!(
        "announce-to-all latency, 10 nodes: median {:?} (runs {latencies:?})",
        latencies[2]
    );
    assert_eq!(up.full(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_find_each_other_through_a_non_member_dht_node() {
    let (_up, dynup) = upstream();
    // The only node both members know runs another mesh: it stores the provider
    // record for our rendezvous key without being able to read anything.
    let stranger = start_node(Some(other_secret_keys()), vec![], dynup.clone())
        .await
        .unwrap();
    let a = start_node(Some(test_keys()), vec![stranger.addr()], dynup.clone())
        .await
        .unwrap();
    let b = start_node(Some(test_keys()), vec![stranger.addr()], dynup)
        .await
        .unwrap();
    let (ida, idb) = (a.node.peer_id(), b.node.peer_id());
    wait_until(
        T,
        "members discover each other via the provider record",
        || async { a.node.members().contains(&idb) && b.node.members().contains(&ida) },
    )
    .await
    .unwrap();
    assert!(
        !stranger.node.members().contains(&ida),
        "the stranger is not part of our mesh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_across_five_nodes_cost_one_upstream_call() {
    let (up, dynup) = upstream();
    // Slow upstream: every request arrives while the first fetch is still in flight.
    up.set_latency(Duration::from_millis(300));
    let nodes = start_mesh(5, dynup).await.unwrap();
    wait_full_membership(&nodes, T).await.unwrap();

    let r = req("/repos/acme/widgets/actions/runners");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let node = nodes[i % 5].node.clone();
        let r = r.clone();
        tasks.push(tokio::spawn(async move { node.get(r).await }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap().unwrap().bytes().to_vec());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "everyone got the same body"
    );
    // Every node picks the same owner from the same member set, so one fetch is the
    // rule. A second is possible only when a node's member view is still incomplete
    // and it picks a different owner (or itself) before the first fetch is announced.
    let full = up.full_for(&r.path_and_query());
    assert!((1..=2).contains(&full), "upstream fetched {full} times");
    let coalesced: u64 = {
        let mut c = 0;
        for n in &nodes {
            c += n.node.stats().await.counters.coalesced;
        }
        c
    };
    assert!(
        coalesced >= 15,
        "most requests joined a flight (coalesced {coalesced})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_entry_travels_as_announce_then_fetch_by_cid() {
    let (up, dynup) = upstream();
    let path = "/repos/acme/widgets/git/trees/main?recursive=1";
    up.set_size(path, 1024 * 1024);
    let nodes = start_mesh(2, dynup).await.unwrap();
    wait_gossip_mesh(&nodes, T).await.unwrap();
    let r = req(path);
    // Fetch on the key's owner: a miss elsewhere would make the owner fetch it (and
    // the owner would then be the announcer, not a receiver).
    let (src, dst) = owner_first(&nodes, &r);
    let a = src.node.get(r.clone()).await.unwrap();
    assert_eq!(a.status, CacheStatus::Miss);
    assert_eq!(a.bytes().len(), 1024 * 1024);
    wait_until(T, "announce without body received", || async {
        dst.node.stats().await.counters.announces_received >= 1
    })
    .await
    .unwrap();
    assert!(!holds(&dst.node, &r.key()), "body not pushed by gossip");
    let b = dst.node.get(r.clone()).await.unwrap();
    assert_eq!(b.status, CacheStatus::Peer);
    assert_eq!(b.bytes(), a.bytes());
    assert_eq!(
        dst.node.stats().await.counters.bodies_fetched,
        1,
        "fetched by CID"
    );
    assert_eq!(up.full(), 1);
    assert!(holds(&dst.node, &r.key()));
}
