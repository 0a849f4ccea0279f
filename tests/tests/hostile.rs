//! Hostile peers against honest nodes: a rogue member (it holds the key) that floods,
//! replays, lies and sends garbage; a keyless peer that subscribes and stays silent.
//! Each test asserts what the honest nodes do: upstream calls within a stated bound,
//! reads still answered, nothing wrong served or stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ghmesh_node::limits::{FETCHES_PER_SEC, FETCH_BURST, MAX_SMALL_FRAME};
use ghmesh_node::upstream::Upstream;
use ghmesh_node::{placement, CacheStatus};
use ghmesh_protocol::{CanonicalRequest, Entry, Lookup, LookupReply, Message, Refresh};
use ghmesh_tests::fake_upstream::MemoryUpstream;
use ghmesh_tests::harness::*;
use ghmesh_tests::rogue::{Answer, Proto, Rogue};
use libp2p::PeerId;

const T: Duration = Duration::from_secs(20);

fn upstream() -> (Arc<MemoryUpstream>, Arc<dyn Upstream>) {
    let up = Arc::new(MemoryUpstream::new());
    let dynup: Arc<dyn Upstream> = up.clone();
    (up, dynup)
}

fn req(path: &str) -> CanonicalRequest {
    CanonicalRequest::get(path).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Two honest nodes and a rogue member connected to both, every one admitted.
async fn honest_pair_and_rogue(answer: Answer) -> (Arc<MemoryUpstream>, Vec<TestNode>, Rogue) {
    let (up, dynup) = upstream();
    let nodes = start_mesh(2, dynup).await.unwrap();
    wait_full_membership(&nodes, T).await.unwrap();
    let keys = test_keys();
    let rogue = Rogue::start(keys.clone(), keys.topic(), answer)
        .await
        .unwrap();
    for n in &nodes {
        rogue.dial(n.addr()).await;
    }
    let id = rogue.peer_id();
    wait_until(T, "the rogue admitted by both", || async {
        nodes.iter().all(|n| n.node.members().contains(&id))
    })
    .await
    .unwrap();
    (up, nodes, rogue)
}

/// A path whose key `owner` owns among `members`.
fn path_owned_by(owner: PeerId, members: &[PeerId], prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}/{i}"))
        .find(|p| placement::owner(&req(p).key(), members.iter().copied()) == Some(owner))
        .expect("some key lands on every member")
}

/// Lookups the rogue received from `from` (other requests, such as member lists, are
/// not counted).
fn lookups_from(rogue: &Rogue, from: PeerId) -> usize {
    let limits = ghmesh_protocol::SealLimits {
        max_len: 1 << 24,
        max_age_secs: 300,
    };
    let now = now_ms() / 1000;
    rogue
        .captured
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, data)| {
            *p == from
                && matches!(
                    ghmesh_protocol::open(&test_keys(), data, limits, now),
                    Ok(Message::Lookup(_))
                )
        })
        .count()
}

fn lookup(rogue: &Rogue, to: PeerId, path: &str, nonce: u64, fetch: bool) -> Message {
    let r = req(path);
    Message::Lookup(Lookup {
        addr: rogue.addressing(to, nonce),
        key: r.key(),
        request: r,
        fetch,
        lease: false,
        release: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fetch_lookups_spends_a_bounded_quota_and_reads_go_on() {
    let (up, nodes, rogue) = honest_pair_and_rogue(Answer::Member).await;
    let target = nodes[0].node.peer_id();
    let started = Instant::now();
    let mut busy = 0;
    let mut redirects = 0;
    for batch in 0..10u64 {
        let asks = (0..30u64).map(|i| {
            let n = batch * 30 + i;
            let msg = lookup(
                &rogue,
                target,
                &format!("/repos/flood/x/issues/{n}"),
                n,
                true,
            );
            let rogue = &rogue;
            async move { rogue.ask(target, &msg).await }
        });
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(Message::LookupReply(LookupReply::Busy)) => busy += 1,
                Ok(Message::LookupReply(LookupReply::Redirect(_))) => redirects += 1,
                _ => {}
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The target fetches only keys it owns in its own view (about a third of them:
    // the rest are redirected), and for one member at most a burst plus a rate.
    let bound = FETCH_BURST + FETCHES_PER_SEC * elapsed + 1.0;
    let spent = up.calls() as f64;
    assert!(
        spent <= bound,
        "{spent} upstream calls for one member's flood (bound {bound:.0})"
    );
    assert!(
        redirects > 50,
        "keys it does not own are redirected: {redirects}"
    );
    assert!(busy > 0, "past its budget the member is told Busy");
    assert!(nodes[0].node.stats().await.counters.peer_busy > 0);
    // Honest reads on the flooded node are still answered (fetched here or by the
    // honest owner).
    let got = nodes[0].node.get(req("/repos/acme/honest")).await.unwrap();
    assert!(matches!(
        got.status,
        CacheStatus::Miss | CacheStatus::Coalesced
    ));
    assert_eq!(got.bytes(), up.body_for("/repos/acme/honest").as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_and_replayed_requests_are_refused() {
    let (up, nodes, rogue) = honest_pair_and_rogue(Answer::Member).await;
    let (a, b) = (nodes[0].node.clone(), nodes[1].node.clone());
    let members = [a.peer_id(), b.peer_id(), rogue.peer_id()];
    // A read on `a` of a key the rogue owns: `a` asks the rogue, which keeps the bytes.
    let path = path_owned_by(rogue.peer_id(), &members, "/repos/acme/replay");
    assert_eq!(a.get(req(&path)).await.unwrap().status, CacheStatus::Miss);
    let (from, captured) = rogue
        .captured
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| *p == a.peer_id())
        .cloned()
        .expect("a's lookup reached the rogue");
    assert_eq!(from, a.peer_id());
    let calls = up.calls();
    let rejected = |n: &ghmesh_node::Node| {
        let n = n.clone();
        async move { n.stats().await.counters.rejected_messages }
    };
    let (ra, rb) = (rejected(&a).await, rejected(&b).await);
    // Replayed to another member: addressed from `a` to the rogue, not from the rogue
    // to `b`. Replayed to `a` itself: not addressed to `a`.
    assert!(rogue
        .request(b.peer_id(), Proto::Small, captured.clone())
        .await
        .is_err());
    assert!(rogue
        .request(a.peer_id(), Proto::Small, captured)
        .await
        .is_err());
    assert!(rejected(&a).await > ra && rejected(&b).await > rb);
    // The rogue's own request, sent twice with one nonce: the second is a replay.
    let other = path_owned_by(b.peer_id(), &members, "/repos/acme/twice");
    let msg = rogue.seal(&lookup(&rogue, b.peer_id(), &other, 7, false));
    assert!(rogue
        .request(b.peer_id(), Proto::Small, msg.clone())
        .await
        .is_ok());
    assert!(rogue.request(b.peer_id(), Proto::Small, msg).await.is_err());
    assert_eq!(b.stats().await.counters.replays_refused, 1);
    assert_eq!(up.calls(), calls, "no replay started a fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_found_reply_for_another_key_is_never_served() {
    let decoy = Entry::new(
        req("/repos/evil/decoy"),
        vec![("content-type".into(), "application/json".into())],
        b"{\"evil\":true}".to_vec(),
        None,
        now_ms(),
        now_ms() + 60_000,
        "rogue".into(),
    );
    let (up, nodes, rogue) =
        honest_pair_and_rogue(Answer::FoundOther(Box::new(decoy.clone()))).await;
    let a = nodes[0].node.clone();
    let members = [a.peer_id(), nodes[1].node.peer_id(), rogue.peer_id()];
    let path = path_owned_by(rogue.peer_id(), &members, "/repos/acme/asked");
    let got = a.get(req(&path)).await.unwrap();
    assert_eq!(got.status, CacheStatus::Miss, "fell back to upstream");
    assert_eq!(
        got.bytes(),
        up.body_for(&path).as_slice(),
        "the right answer"
    );
    assert!(!holds(&a, &decoy.meta.key()), "the decoy is not stored");
    assert!(a.stats().await.counters.rejected_messages >= 1);
    // The liar is on probation: not asked again for a while.
    assert_eq!(a.stats().await.members_on_probation, 1);
    let path2 = path_owned_by(rogue.peer_id(), &members, "/repos/acme/asked-again");
    let before = lookups_from(&rogue, a.peer_id());
    a.get(req(&path2)).await.unwrap();
    assert_eq!(
        lookups_from(&rogue, a.peer_id()),
        before,
        "not asked while on probation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversize_frames_are_refused_and_cost_standing() {
    let (_up, nodes, rogue) = honest_pair_and_rogue(Answer::Member).await;
    let a = nodes[0].node.clone();
    let before = a.stats().await.counters.rejected_messages;
    // Garbage on the lookup protocol.
    assert!(rogue
        .request(a.peer_id(), Proto::Small, b"not sealed at all".to_vec())
        .await
        .is_err());
    // A frame over the small limit: refused by the codec before it is buffered.
    let huge = vec![b'x'; MAX_SMALL_FRAME + 1];
    assert!(rogue
        .request(a.peer_id(), Proto::Small, huge.clone())
        .await
        .is_err());
    // Requests are small on the body protocol too (only replies may be large).
    assert!(rogue.request(a.peer_id(), Proto::Body, huge).await.is_err());
    // A lookup sent on the body protocol is refused.
    let misrouted = rogue.seal(&lookup(&rogue, a.peer_id(), "/repos/acme/x", 1, false));
    assert!(rogue
        .request(a.peer_id(), Proto::Body, misrouted)
        .await
        .is_err());
    assert!(a.stats().await.counters.rejected_messages > before);
    assert_eq!(a.stats().await.members_on_probation, 1);
    // The node still works.
    let got = a.get(req("/repos/acme/fine")).await.unwrap();
    assert!(matches!(
        got.status,
        CacheStatus::Miss | CacheStatus::Coalesced
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_announces_and_refreshes_are_capped_by_our_own_rules() {
    let (_up, nodes, rogue) = honest_pair_and_rogue(Answer::Member).await;
    let a = nodes[0].node.clone();
    wait_until(T, "the rogue in a's gossip mesh", || async {
        a.stats().await.mesh_peers >= 2
    })
    .await
    .unwrap();
    let now = now_ms();
    // From an hour in the future, fresh for a day, with headers no client should see.
    let poisoned = Entry::new(
        req("/repos/acme/widgets/issues/9"),
        vec![
            ("content-type".into(), "application/json".into()),
            ("set-cookie".into(), "session=evil".into()),
            (
                "link".into(),
                "<https://evil.example/next>; rel=\"next\"".into(),
            ),
        ],
        b"{\"poisoned\":1}".to_vec(),
        None,
        now + 3_600_000,
        now + 3_600_000 + 86_400_000,
        rogue.peer_id().to_string(),
    );
    rogue
        .publish(rogue.seal(&Message::Announce(ghmesh_protocol::Announce::of(&poisoned))))
        .await
        .unwrap();
    let key = poisoned.meta.key();
    wait_until(T, "the announce stored", || async { holds(&a, &key) })
        .await
        .unwrap();
    let held = a.store().get_meta(&key).unwrap().unwrap();
    let after = now_ms();
    assert!(held.fetched_at_ms <= after + ghmesh_protocol::entry::FETCHED_AT_SKEW_MS);
    // An issue is fresh for 60 s by our rule (no cache-control): never a day.
    assert!(
        held.fresh_until_ms <= held.fetched_at_ms + 60_000,
        "{held:?}"
    );
    assert_eq!(
        held.headers,
        vec![("content-type".to_string(), "application/json".to_string())]
    );

    // A refresh that would pin it for a day is capped the same way.
    rogue
        .publish(rogue.seal(&Message::Refresh(Refresh {
            key,
            cid: held.cid.clone(),
            fetched_at_ms: now + 3_600_000,
            fresh_until_ms: now + 3_600_000 + 86_400_000,
        })))
        .await
        .unwrap();
    // A refresh of an entry nobody has changes nothing.
    let never = req("/repos/acme/widgets/issues/10").key();
    rogue
        .publish(rogue.seal(&Message::Refresh(Refresh {
            key: never,
            cid: held.cid.clone(),
            fetched_at_ms: now,
            fresh_until_ms: now + 60_000,
        })))
        .await
        .unwrap();
    // Gossip from one peer is handled in order and its writes are queued in order: once
    // an announce published after both refreshes is stored, both refreshes have been
    // applied (or dropped).
    let marker = Entry::new(
        req("/repos/acme/widgets/issues/11"),
        vec![("content-type".into(), "application/json".into())],
        b"{\"marker\":1}".to_vec(),
        None,
        now,
        now + 60_000,
        rogue.peer_id().to_string(),
    );
    rogue
        .publish(rogue.seal(&Message::Announce(ghmesh_protocol::Announce::of(&marker))))
        .await
        .unwrap();
    let marker_key = marker.meta.key();
    wait_until(T, "the announce after the refreshes stored", || async {
        holds(&a, &marker_key)
    })
    .await
    .unwrap();
    // It may not change anything visible if its cap equals what we hold, so assert the
    // invariant, not a change.
    let m = a.store().get_meta(&key).unwrap().unwrap();
    assert!(m.fresh_until_ms <= now_ms() + ghmesh_protocol::entry::FETCHED_AT_SKEW_MS + 60_000);
    assert!(!holds(&a, &never));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_subscriber_is_never_a_member_nor_waited_for() {
    let (up, dynup) = upstream();
    let nodes = start_mesh(2, dynup).await.unwrap();
    wait_full_membership(&nodes, T).await.unwrap();
    // It knows the topic name (anyone connected sees it) but not the key.
    let silent = Rogue::start(other_secret_keys(), test_keys().topic(), Answer::Silent)
        .await
        .unwrap();
    for n in &nodes {
        silent.dial(n.addr()).await;
    }
    wait_until(T, "both greeted it and gave up", || async {
        let mut ok = true;
        for n in &nodes {
            ok &= n.node.stats().await.counters.hellos_failed >= 1;
        }
        ok
    })
    .await
    .unwrap();
    for n in &nodes {
        assert!(!n.node.members().contains(&silent.peer_id()));
        assert_eq!(n.node.members().len(), 1);
    }
    // Reads are coalesced between the honest pair and never wait on the silent one:
    // it is never asked anything but the hello.
    let asked = |s: &Rogue| {
        nodes
            .iter()
            .map(|n| lookups_from(s, n.node.peer_id()))
            .sum::<usize>()
    };
    for i in 0..10 {
        let r = req(&format!("/repos/acme/quiet/{i}"));
        let (x, y) = tokio::join!(nodes[0].node.get(r.clone()), nodes[1].node.get(r));
        x.unwrap();
        y.unwrap();
    }
    assert_eq!(asked(&silent), 0, "never asked");
    assert_eq!(up.full(), 10, "one upstream call per key");
}
