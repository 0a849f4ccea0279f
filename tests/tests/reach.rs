//! Reach behind NAT, in a lab of network namespaces the test builds (see
//! `ghmesh_tests::lab`): a public hub, runners behind NAT routers, a fake GitHub on the
//! lab's internet. Skips with one line without root, `ip` or `nft`.
//!
//! The public DHT rendezvous (`--public-dht`) is tested against stand-ins for public
//! nodes on the lab's internet (`standin-dht`: libp2p's Kademlia, identify and relay,
//! no ghmesh code).
//!
//! Counts and behaviour are asserted; the times are printed for BENCHMARKS.md.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ghmesh_tests::daemon::{poll, poll_up_to};
use ghmesh_tests::lab::{unavailable, HubFleet, LabNode, Nat, Plan, Transport};

/// One lab at a time: each runs seven or more daemons, and CI has two cores.
static LABS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn skip() -> bool {
    if let Some(why) = unavailable() {
        eprintln!("skipping the NAT lab: {why}");
        return true;
    }
    false
}

/// Where a lab's daemons keep their data and logs: under `dir`, or with
/// `GHMESH_LAB_KEEP=<dir>` under `<dir>/<name>`, kept after the test for reading (with
/// `GHMESH_LAB_LOG=<filter>` for the daemons' log level).
fn kept(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    match std::env::var("GHMESH_LAB_KEEP") {
        Ok(keep) => {
            let path = std::path::Path::new(&keep).join(name);
            let _ = std::fs::remove_dir_all(&path);
            path
        }
        Err(_) => dir.path().to_path_buf(),
    }
}

/// Builds the lab `plan` describes, one lab at a time, with its data under `name`
/// (see [`kept`]); `None`, after one line, where labs cannot run. Bind all three: the
/// fleet goes first, then its directory, then the turn.
async fn lab(
    plan: Plan,
    name: &str,
) -> Option<(
    tokio::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    HubFleet,
)> {
    if skip() {
        return None;
    }
    let one = LABS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = HubFleet::start_plan(&plan, &kept(&dir, name))
        .await
        .unwrap();
    Some((one, dir, fleet))
}

async fn stat(node: &LabNode, field: &str) -> serde_json::Value {
    node.json("stats")
        .await
        .map(|s| s[field].clone())
        .unwrap_or_default()
}

/// Waits until every node counts every other as a member.
async fn full_membership(fleet: &HubFleet) -> Duration {
    let n = fleet.nodes().count() as u64;
    let start = Instant::now();
    for node in fleet.nodes() {
        poll("every node a member of every view", || async {
            stat(node, "members").await.as_u64() == Some(n - 1)
        })
        .await;
    }
    start.elapsed()
}

/// Waits until AutoNAT settled everywhere: hubs public, runners private (a hub's
/// dial-back into a NAT fails after the 10 s TCP dial deadline), and every node has
/// heard each member's verdict. Owners are then the hubs on every node.
async fn reach_settled(fleet: &HubFleet) -> Duration {
    let hubs: HashSet<String> = fleet
        .hubs
        .iter()
        .map(|h| h.daemon.ready.peer_id.clone())
        .collect();
    let expected = |id: &str| {
        if hubs.contains(id) {
            "public"
        } else {
            "private"
        }
    };
    let start = Instant::now();
    for node in fleet.nodes() {
        poll("every node's and every member's reachability", || async {
            if stat(node, "reachability").await != expected(&node.daemon.ready.peer_id) {
                return false;
            }
            let peers = node.json("peers").await.unwrap_or_default();
            let peers = peers.as_array().cloned().unwrap_or_default();
            peers.len() == fleet.nodes().count() - 1
                && peers.iter().all(|p| {
                    p["reachability"] == expected(p["peer_id"].as_str().unwrap_or_default())
                })
        })
        .await;
    }
    start.elapsed()
}

/// Reads `keys` keys on every node at once, key after key; every read must succeed.
/// Returns the slowest read.
async fn read_everywhere(fleet: &HubFleet, keys: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for k in 0..keys {
        let path = format!("/repos/lab/r{k}");
        let reads = fleet.nodes().map(|node| {
            let path = path.clone();
            async move {
                let t = Instant::now();
                let r = node.get(&path).await;
                (node.ns.clone(), r, t.elapsed())
            }
        });
        for (ns, r, took) in futures::future::join_all(reads).await {
            let (status, body) = r.unwrap_or_else(|e| panic!("{ns} {path}: {e}"));
            assert_eq!(
                status,
                200,
                "{ns} {path}: {}",
                String::from_utf8_lossy(&body)
            );
            slowest = slowest.max(took);
        }
    }
    slowest
}

/// Pairs of runners behind different NATs, by namespace: (a, b, how a sees b: direct,
/// relayed, or public relay when only public relays reach b, transport and addresses).
async fn cross_connections(fleet: &HubFleet) -> Vec<(String, String, String, String)> {
    let nat_of: std::collections::HashMap<String, usize> = fleet
        .runners
        .iter()
        .enumerate()
        .flat_map(|(j, rs)| rs.iter().map(move |r| (r.daemon.ready.peer_id.clone(), j)))
        .collect();
    let names = ghmesh_tests::lab::names(fleet);
    let mut out = Vec::new();
    for (j, rs) in fleet.runners.iter().enumerate() {
        for r in rs {
            let peers = r.json("peers").await.unwrap_or_default();
            for p in peers.as_array().into_iter().flatten() {
                let id = p["peer_id"].as_str().unwrap_or_default();
                if nat_of.get(id).is_some_and(|other| *other != j) {
                    out.push((
                        r.ns.clone(),
                        names.get(id).cloned().unwrap_or_default(),
                        if p["public_relay"] == true {
                            "public relay".to_string()
                        } else {
                            p["connection"].as_str().unwrap_or_default().to_string()
                        },
                        format!(
                            "{} {}",
                            p["transport"].as_str().unwrap_or_default(),
                            p["addrs"]
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// The fleet spent exactly one upstream call per key. An owner out of reach (what this
/// lab guards against) costs a call per runner and key; a flight opened a moment after
/// another landed used to cost one more (the owner's own read and a member's lookup
/// asking it to fetch, a few ms apart).
fn one_call_per_key(fleet: &HubFleet, keys: usize) {
    let calls: Vec<String> = fleet
        .gh
        .requests()
        .into_iter()
        .map(|r| format!("{} {:?}", r.path_and_query, r.authorization))
        .collect();
    assert_eq!(
        calls.len(),
        keys,
        "one upstream call per key for every node: {calls:?}"
    );
}

async fn total(fleet: &HubFleet, field: &str) -> u64 {
    let mut sum = 0;
    for node in fleet.nodes() {
        sum += stat(node, field).await.as_u64().unwrap_or(0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_behind_nat_join_through_a_hub_and_punch_through_to_each_other_over_tcp() {
    punch_through(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_behind_nat_join_through_a_hub_and_punch_through_to_each_other_over_quic() {
    punch_through(Transport::Quic).await;
}

/// Hub topology, both NATs endpoint-independent, runners joining over `join`.
async fn punch_through(join: Transport) {
    let plan = Plan {
        join,
        ..Plan::default()
    };
    let Some((_one, _dir, fleet)) = lab(plan, &format!("punch-{join:?}")).await else {
        return;
    };
    let joined = full_membership(&fleet).await;

    // The hub is found public by the runners' dial-backs; every runner behind NAT holds
    // a reservation on it and is reachable through it.
    let hub = &fleet.hubs[0];
    let settled = reach_settled(&fleet).await;
    for r in fleet.runners.iter().flatten() {
        assert_eq!(stat(r, "relay_reservations").await, 1, "{}", r.ns);
        let external = stat(r, "external_addrs").await;
        assert!(
            external.to_string().contains("p2p-circuit"),
            "{}: {external}",
            r.ns
        );
    }
    assert!(stat(hub, "relay_circuits_served").await.as_u64() > Some(0));

    // Runners behind different NATs connected through the hub, then punched through.
    let punched = poll("direct connections between NATs", || async {
        let cross = cross_connections(&fleet).await;
        let want = if join == Transport::Quic {
            "quic"
        } else {
            "tcp"
        };
        let done = cross.len() == 18
            && cross
                .iter()
                .all(|c| c.2 == "direct" && c.3.starts_with(want));
        if !done && std::env::var("GHMESH_LAB_KEEP").is_ok() {
            eprintln!("{cross:?}");
        }
        done
    })
    .await;
    assert!(total(&fleet, "direct_upgrades").await > 0);

    let slowest = read_everywhere(&fleet, 20).await;
    one_call_per_key(&fleet, 20);
    eprintln!(
        "NAT lab, hub + 2 endpoint-independent NATs x 3 runners joining over {join:?}: full membership {joined:?}, \
         reachability settled after {settled:?} more, all 18 cross-NAT pairs direct after {punched:?} more, \
         slowest of 140 reads {slowest:?}, upstream calls {}",
        fleet.gh.total_requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_random_port_nat_reads_go_through_reachable_owners() {
    let plan = Plan {
        nats: vec![Nat::EndpointIndependent, Nat::RandomPort],
        ..Plan::default()
    };
    let Some((_one, _dir, fleet)) = lab(plan, "random").await else {
        return;
    };
    let joined = full_membership(&fleet).await;
    reach_settled(&fleet).await;
    // Every member hears that the hub is public: owners are the hub only, so nobody
    // waits on an owner it cannot reach.
    let slowest = read_everywhere(&fleet, 20).await;
    one_call_per_key(&fleet, 20);
    // Runners behind the random-port NAT stay relayed to the other NAT's runners.
    let cross = cross_connections(&fleet).await;
    let random_side: HashSet<&str> = fleet.runners[1].iter().map(|r| r.ns.as_str()).collect();
    let relayed = cross
        .iter()
        .filter(|c| random_side.contains(c.0.as_str()) && c.2 == "relayed")
        .count();
    assert!(
        cross
            .iter()
            .filter(|c| random_side.contains(c.0.as_str()))
            .all(|c| c.2 == "relayed"),
        "{cross:?}"
    );
    // DCUtR gives up after three dials, each waiting out the 10 s TCP dial deadline
    // (the NAT drops what it did not map): the failures are counted then.
    let counted = poll_up_to(
        Duration::from_secs(60),
        "hole punch failures counted",
        || async { total(&fleet, "holepunch_failures").await > 0 },
    )
    .await;
    eprintln!(
        "NAT lab, hub + endpoint-independent NAT + random-port NAT x 3 runners: full membership \
         {joined:?}, {relayed} relayed cross-NAT connections seen from the random side, \
         holepunch failures {} ({counted:?} after the reads), slowest of 140 reads \
         {slowest:?}, upstream calls {}",
        total(&fleet, "holepunch_failures").await,
        fleet.gh.total_requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_relay_is_replaced_and_reads_go_on() {
    let plan = Plan {
        hubs: 3,
        nats: vec![Nat::EndpointIndependent],
        per_nat: 2,
        ..Plan::default()
    };
    let Some((_one, _dir, mut fleet)) = lab(plan, "relays").await else {
        return;
    };
    full_membership(&fleet).await;
    let runner = &fleet.runners[0][0];
    poll("two reservations", || async {
        stat(runner, "relay_reservations").await == 2
    })
    .await;
    let external = stat(runner, "external_addrs").await.to_string();
    let held = fleet
        .hubs
        .iter()
        .position(|h| external.contains(&h.daemon.ready.peer_id))
        .expect("a reservation on a hub");
    let namespaces = fleet.namespaces();
    fleet.hubs[held].daemon.kill9().await;
    let stopped = Instant::now();
    let runner = &fleet.runners[0][0];
    let (status, _) = runner.get("/repos/lab/after-stop").await.unwrap();
    assert_eq!(status, 200, "reads go on while the relay is replaced");
    poll("a reservation on the third relay", || async {
        stat(runner, "relay_reservations").await == 2
    })
    .await;
    let moved = stopped.elapsed();
    let external = stat(runner, "external_addrs").await.to_string();
    assert!(!external.contains(&fleet.hubs[held].daemon.ready.peer_id));
    eprintln!("NAT lab, 3 hubs: a stopped relay replaced after {moved:?}");
    drop(fleet);
    // Every namespace is gone with the fleet.
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    for ns in namespaces {
        assert!(!left.contains(&ns), "{ns} left behind");
    }
}

/// Runners behind two endpoint-independent NATs with nothing but the secret and the
/// (stand-in) public DHT: no ghmesh node on the lab's internet, no `--bootstrap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_behind_nat_find_each_other_through_the_public_dht_alone() {
    let Some((_one, _dir, fleet)) = lab(
        Plan {
            hubs: 0,
            standins: 3,
            public_bootstrap: true,
            public_dht: true,
            ..Plan::default()
        },
        "public-dht",
    )
    .await
    else {
        return;
    };
    let up = fleet.begun.elapsed();
    let joined = full_membership(&fleet).await;
    for r in fleet.runners.iter().flatten() {
        // Every stand-in answered, the one with an RSA key (`Qm…`, as the oldest public
        // bootstrap nodes) too.
        poll("every stand-in answered", || async {
            stat(r, "public_dht_peers").await == 3
        })
        .await;
        let external = stat(r, "external_addrs").await.to_string();
        assert!(
            external.contains("p2p-circuit"),
            "{}: reachable through a public relay: {external}",
            r.ns
        );
    }
    let punched = poll("direct connections between NATs", || async {
        let cross = cross_connections(&fleet).await;
        cross.len() == 18 && cross.iter().all(|c| c.2 == "direct")
    })
    .await;
    let slowest = read_everywhere(&fleet, 20).await;
    one_call_per_key(&fleet, 20);
    let mut reached = 0;
    for s in &fleet.standins {
        reached += s.packets_from_fleet().unwrap();
        // The stand-ins speak gossipsub as public nodes do: the fleet's topic never
        // reaches them.
        assert_eq!(s.heard_topics(), Vec::<String>::new(), "{}", s.ns);
        assert_eq!(s.circuits_over_their_bytes(), 0, "{}", s.ns);
    }
    assert!(reached > 0, "the runners used the stand-in DHT");
    eprintln!(
        "NAT lab, public DHT stand-ins (3) + 2 endpoint-independent NATs x 3 runners, no hub: \
         daemons up after {up:?}, full membership {joined:?} later ({:?} from the start), \
         all 18 cross-NAT pairs direct after {punched:?} more, slowest of 120 reads \
         {slowest:?}, upstream calls {}, direct upgrades {}, holepunch failures {}",
        up + joined,
        fleet.gh.total_requests(),
        total(&fleet, "direct_upgrades").await,
        total(&fleet, "holepunch_failures").await,
    );
}

/// The public DHT with a random-port NAT on one side: punching cannot work there, the
/// runners meet through public relays and every read succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_random_port_nat_the_public_dht_still_joins_and_reads_succeed() {
    let Some((_one, _dir, fleet)) = lab(
        Plan {
            hubs: 0,
            nats: vec![Nat::EndpointIndependent, Nat::RandomPort],
            standins: 3,
            public_bootstrap: true,
            public_dht: true,
            ..Plan::default()
        },
        "public-dht-random",
    )
    .await
    else {
        return;
    };
    let joined = full_membership(&fleet).await;
    let slowest = read_everywhere(&fleet, 20).await;
    // No punch goes through a random-port NAT: the runners across it stay members
    // through public relays, which carry their hellos and member lists but none of the
    // fleet's gossip or lookups. Before that rule the reads' gossip spent each circuit's
    // 128 KiB and the relays cut them.
    let cross = cross_connections(&fleet).await;
    assert_eq!(
        cross.len(),
        18,
        "every cross-NAT pair still connected: {cross:?}"
    );
    assert!(cross.iter().all(|c| c.2 == "public relay"), "{cross:?}");
    for s in &fleet.standins {
        assert_eq!(s.circuits_over_their_bytes(), 0, "{}", s.ns);
    }
    // Nobody asks across, so each side fetches a key once.
    assert!(
        fleet.gh.total_requests() <= 40,
        "at most one call per key on each side of the NAT: {}",
        fleet.gh.total_requests()
    );
    let held = total(&fleet, "public_relay_held").await;
    eprintln!(
        "NAT lab, public DHT stand-ins (3) + endpoint-independent NAT + random-port NAT x 3 \
         runners, no hub: full membership {joined:?}, {} cross-NAT connections left (through public relays) \
         after the reads, slowest of 120 reads {slowest:?}, upstream calls {} for 20 keys, \
         lookups kept off public relays {held}, holepunch failures {}",
        cross.len(),
        fleet.gh.total_requests(),
        total(&fleet, "holepunch_failures").await,
    );
}

/// A fleet member on a public address, found through the public DHT like the runners
/// (no `--bootstrap`, no `--relay on`): public DHT nodes find it public (AutoNAT), so
/// it relays for the fleet and owns every key, and runners behind a random-port NAT read
/// through it as through a hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_member_found_through_the_public_dht_serves_as_the_fleets_relay() {
    let Some((_one, _dir, fleet)) = lab(
        Plan {
            hubs: 1,
            hub_relay_on: false,
            bootstrap_hubs: false,
            nats: vec![Nat::EndpointIndependent, Nat::RandomPort],
            standins: 3,
            public_bootstrap: true,
            public_dht: true,
            ..Plan::default()
        },
        "public-dht-member",
    )
    .await
    else {
        return;
    };
    let joined = full_membership(&fleet).await;
    let hub = &fleet.hubs[0];
    let hub_id = hub.daemon.ready.peer_id.clone();
    let relayed = poll("runners reserve on the public member", || async {
        for r in fleet.runners.iter().flatten() {
            if !stat(r, "external_addrs")
                .await
                .to_string()
                .contains(&hub_id)
            {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(stat(hub, "reachability").await, "public");
    // Every runner heard the member's verdict: it alone owns keys.
    for r in fleet.runners.iter().flatten() {
        poll("the member's verdict heard", || async {
            let peers = r.json("peers").await.unwrap_or_default();
            peers.as_array().into_iter().flatten().any(|p| {
                p["peer_id"].as_str() == Some(hub_id.as_str()) && p["reachability"] == "public"
            })
        })
        .await;
    }
    let slowest = read_everywhere(&fleet, 20).await;
    one_call_per_key(&fleet, 20);
    eprintln!(
        "NAT lab, public DHT stand-ins (3) + a member on a public address (relay auto) + \
         endpoint-independent NAT + random-port NAT x 3 runners, no bootstrap: full \
         membership {joined:?}, every runner reserved on the member {relayed:?} later, \
         slowest of 140 reads {slowest:?}, upstream calls {}",
        fleet.gh.total_requests()
    );
}

/// Two fleets (different secrets) on the same public DHT: their keys differ, so
/// neither finds, dials or admits the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleets_with_different_secrets_on_one_public_dht_never_meet() {
    let Some((_one, _dir, fleet)) = lab(
        Plan {
            hubs: 0,
            per_nat: 2,
            standins: 2,
            public_bootstrap: true,
            public_dht: true,
            secrets: vec![("r1-".into(), "another-fleet".into())],
            ..Plan::default()
        },
        "two-fleets",
    )
    .await
    else {
        return;
    };
    for node in fleet.nodes() {
        poll("each runner a member of its own fleet", || async {
            stat(node, "members").await.as_u64() == Some(1)
        })
        .await;
    }
    // The same three keys read in both fleets: one call per key per fleet.
    for k in 0..3 {
        let path = format!("/repos/lab/two-{k}");
        for node in fleet.nodes() {
            let (status, _) = node.get(&path).await.unwrap();
            assert_eq!(status, 200, "{} {path}", node.ns);
        }
    }
    assert_eq!(fleet.gh.total_requests(), 6, "{:?}", fleet.gh.requests());
    for (j, side) in fleet.runners.iter().enumerate() {
        let others: HashSet<String> = fleet.runners[1 - j]
            .iter()
            .map(|r| r.daemon.ready.peer_id.clone())
            .collect();
        for r in side {
            assert_eq!(stat(r, "members").await, 1, "{}", r.ns);
            let peers = r.json("peers").await.unwrap();
            for p in peers.as_array().unwrap() {
                let id = p["peer_id"].as_str().unwrap_or_default();
                assert!(!others.contains(id), "{} met {id} of the other fleet", r.ns);
            }
        }
    }
}

/// `--public-dht` is off by default: runners given the public bootstrap addresses but
/// not the flag send nothing to them (counted by nftables on the stand-ins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_public_dht_no_packet_reaches_a_public_node() {
    let Some((_one, _dir, fleet)) = lab(
        Plan {
            per_nat: 2,
            standins: 2,
            public_bootstrap: true,
            public_dht: false,
            ..Plan::default()
        },
        "no-public-dht",
    )
    .await
    else {
        return;
    };
    full_membership(&fleet).await;
    read_everywhere(&fleet, 3).await;
    for s in &fleet.standins {
        assert_eq!(s.packets_from_fleet().unwrap(), 0, "{} was contacted", s.ns);
    }
}

/// Two LANs routed without NAT on a private network, and a third LAN behind a NAT inside
/// that network; no hub, no public address anywhere: runners join through the first
/// runner. The routed runners see every member directly at a private address and are
/// seen at their own, so after a short settling they judge each other across subnets and
/// are found public (AutoNAT alone would never count a private address); the runners
/// behind the NAT are seen translated by the routed ones, which alone judge them (their
/// neighbours would dial them back across the LAN): they are found private. Owners are
/// then the routed runners: one call per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_private_routed_network_members_judge_each_other_and_own_the_keys() {
    let Some((_one, _dir, fleet)) = lab(
        Plan {
            hubs: 0,
            bootstrap_hubs: false,
            nats: vec![Nat::Routed, Nat::Routed, Nat::EndpointIndependent],
            per_nat: 2,
            private_core: true,
            bootstrap_first_runner: true,
            ..Plan::default()
        },
        "routed-private",
    )
    .await
    else {
        return;
    };
    let joined = full_membership(&fleet).await;
    let routed: HashSet<String> = fleet.runners[..2]
        .iter()
        .flatten()
        .map(|r| r.daemon.ready.peer_id.clone())
        .collect();
    let started = Instant::now();
    for node in fleet.nodes() {
        // The settling (20 s) and a probe: longer than `poll` waits.
        poll_up_to(
            Duration::from_secs(90),
            "routed runners found public, and heard",
            || async {
                let peers = node.json("peers").await.unwrap_or_default();
                let public_routed = peers
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        let id = p["peer_id"].as_str().unwrap_or_default();
                        routed.contains(id) && p["reachability"] == "public"
                    })
                    .count();
                let me_routed = routed.contains(&node.daemon.ready.peer_id);
                public_routed == routed.len() - usize::from(me_routed)
                    && (!me_routed || stat(node, "reachability").await == "public")
            },
        )
        .await;
    }
    let settled = started.elapsed();
    for node in fleet.nodes() {
        assert_eq!(
            stat(node, "direct_to_all").await,
            true,
            "{}: every connection here is direct",
            node.ns
        );
    }
    let slowest = read_everywhere(&fleet, 20).await;
    one_call_per_key(&fleet, 20);
    // Behind the NAT: judged by the members beyond it (their dial-backs fail), never
    // by its neighbours (theirs would succeed across the LAN).
    for r in &fleet.runners[2] {
        // After the settling, the dial-backs into the NAT time out (10 s).
        poll_up_to(
            Duration::from_secs(60),
            "runners behind the NAT found private",
            || async { stat(r, "reachability").await == "private" },
        )
        .await;
    }
    // And it holds: a neighbour allowed to judge would flip it back with its next
    // probe (AutoNAT probes every 5 s here).
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(12) {
        for r in &fleet.runners[2] {
            assert_eq!(stat(r, "reachability").await, "private", "{}", r.ns);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Each runner calls GitHub with its own token (`ghp_lab_<name>`): owners fetch.
    let calls: Vec<String> = fleet
        .gh
        .requests()
        .into_iter()
        .map(|r| r.authorization.unwrap_or_default())
        .collect();
    assert!(
        calls.iter().all(|c| !c.contains("ghp_lab_r2-")),
        "a runner behind the NAT owned a key: {calls:?}"
    );
    eprintln!(
        "NAT lab, one private routed network (2 routed LANs + a NAT LAN inside it) x 2 \
         runners, no hub: full membership {joined:?}, routed runners found public and heard \
         {settled:?} later, slowest of 120 reads {slowest:?}, upstream calls {}",
        fleet.gh.total_requests()
    );
}
