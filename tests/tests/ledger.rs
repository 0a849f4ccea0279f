//! The fleet's rate-limit ledger (contract §10) with real daemons sharing one token
//! against the fake GitHub: a refusal one node gets holds the budget on every node
//! once the ledger's message arrives, so the fleet is refused once, not once per node;
//! the reserve keeps the last requests of a budget for people; Actions job tokens of
//! one repository are one budget.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use ghmesh_node::clock::{Clock, ManualClock};
use ghmesh_node::upstream::github::{BudgetRules, GithubClient, GithubConfig};
use ghmesh_node::upstream::holds::SECONDARY_FIRST;
use ghmesh_node::CacheStatus;
use ghmesh_protocol::CanonicalRequest;
use ghmesh_tests::daemon::*;
use ghmesh_tests::fake_github::{FakeGithub, Fault};
use ghmesh_tests::harness::{start_node_with, test_keys, wait_full_membership, wait_until};
use serde_json::Value;

/// The burst test's bound (one refusal at most) rests on members' figures arriving
/// within a round trip or two; daemons of the other tests sharing the two cores made
/// them late enough to cost a second refusal (2 of 8 whole-file runs). It runs alone;
/// the others run together.
static CORES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn read(node: &Daemon, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (status, h, _) = http_request("GET", &format!("{}{path}", node.base()), &headers, b"")
        .await
        .unwrap();
    (
        status,
        header(&h, "x-ghmesh-cache").unwrap_or("").to_string(),
    )
}

/// The node's view of its budgets (`rate_limits` in stats).
async fn budgets(node: &Daemon) -> Vec<Value> {
    node.stats().await.unwrap()["rate_limits"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until every node holds a budget for `resource` (a hold heard or seen).
async fn held_everywhere(nodes: &[Daemon], resource: &str) {
    for n in nodes {
        poll("the hold on every node", || async {
            budgets(n)
                .await
                .iter()
                .any(|b| b["resource"] == resource && b["held_until"].is_u64())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_shared_budget_holds_every_node() {
    let _shared = CORES.read().await;
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(5);
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &[], &dir).await.unwrap();
    // Spend the fleet's token: five reads. GitHub's fifth answer says none remain, so
    // the sixth is held (403 in GitHub's shape, `held`) instead of being refused.
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(read(&nodes[0], &format!("/repos/acme/r{i}"), None).await);
    }
    assert_eq!(
        statuses.iter().filter(|(s, _)| *s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses[5], (403, "held".to_string()));
    assert_eq!(gh.total_requests(), 5, "nothing sent into a refusal");
    held_everywhere(&nodes, "core").await;
    let sent = gh.total_requests();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..3 {
            let (status, cache) = read(node, &format!("/repos/acme/n{n}-{i}"), None).await;
            assert_eq!((status, cache.as_str()), (403, "held"));
        }
    }
    assert_eq!(
        gh.total_requests(),
        sent,
        "held on every node: nothing sent"
    );
    // Every node names the budget alike, and none names the token.
    let ids: Vec<String> = futures::future::join_all(nodes.iter().map(budgets))
        .await
        .iter()
        .map(|b| b[0]["budget"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.iter()
            .all(|id| *id == ids[0] && !id.contains("e2etoken")),
        "{ids:?}"
    );
    // Only one node got GitHub's "none remain", and nobody was refused: the other two
    // learned it from the ledger.
    let mut heard = 0;
    for n in &nodes {
        heard += n.stats().await.unwrap()["ledger_received"]
            .as_u64()
            .unwrap_or(0);
    }
    assert!(heard >= 2, "{heard}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_refusal_holds_the_fleet_once() {
    let _shared = CORES.read().await;
    one_refusal_holds_the_fleet(Fault::RateLimited).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_refusal_holds_the_fleet_once() {
    let _shared = CORES.read().await;
    one_refusal_holds_the_fleet(Fault::SecondaryLimit).await;
}

/// One node is refused (`fault`); once the ledger's message arrives every node holds
/// the budget: nothing more is sent, copies are served, and new reads are held.
async fn one_refusal_holds_the_fleet(fault: Fault) {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &[], &dir).await.unwrap();
    let (status, _) = read(&nodes[0], "/repos/acme/warm", None).await;
    assert_eq!(status, 200);
    gh.set_fault(fault);
    let (status, _) = read(&nodes[0], "/repos/acme/offence", None).await;
    assert_eq!(status, 403);
    gh.set_fault(Fault::None);
    held_everywhere(&nodes, "core").await;
    let sent = gh.total_requests();
    for (n, node) in nodes.iter().enumerate() {
        let (status, cache) = read(node, &format!("/repos/acme/after{n}"), None).await;
        assert_eq!((status, cache.as_str()), (403, "held"));
        // Stale is served where a copy exists.
        let (status, cache) = read(node, "/repos/acme/warm", None).await;
        assert_eq!(status, 200);
        assert!(
            cache == "hit" || cache == "peer" || cache == "stale",
            "{cache}"
        );
    }
    assert_eq!(gh.total_requests(), sent, "one offence for the fleet");

    // A runner of another fleet spending the same token is not held by this fleet's
    // ledger: it is never admitted, and its budget ids are keyed by its own secret.
    let mut args = vec!["--upstream".to_string(), gh.url()];
    args.extend(["--bootstrap".to_string(), nodes[0].ready.listen[0].clone()]);
    let stranger = start_daemon(dir.path().join("other"), &args, &env("another-fleet"))
        .await
        .unwrap();
    let (status, cache) = read(&stranger, "/repos/acme/elsewhere", None).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(gh.total_requests(), sent + 1);
    let theirs = budgets(&stranger).await;
    assert!(
        theirs.iter().all(|b| b["held_until"].is_null()),
        "{theirs:?}"
    );
    assert!(
        budgets(&nodes[0])
            .await
            .iter()
            .all(|b| theirs.iter().all(|t| t["budget"] != b["budget"])),
        "another fleet names the same token's budget otherwise"
    );
    assert_eq!(stranger.stats().await.unwrap()["members"], 0);
}

/// Three in-process nodes on one manual clock sharing one token: a secondary limit on
/// one, then, after its hold, another on a second node is the fleet's repeat, and the
/// whole fleet holds twice as long (GitHub backs off per account, not per runner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_secondary_limit_on_another_node_holds_the_fleet_twice_as_long() {
    let _shared = CORES.read().await;
    let gh = FakeGithub::start().await.unwrap();
    let clock = ManualClock::starting_now();
    let github = || -> Arc<GithubClient> {
        let client = GithubClient::new(GithubConfig {
            base_url: gh.url(),
            token: Some("ghp_e2etoken".into()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        })
        .unwrap()
        .with_clock(clock.clone())
        .with_budgets(BudgetRules {
            key: test_keys().budget_key(),
            repository: None,
            reserve: 0,
        });
        Arc::new(client)
    };
    let on_clock = |c: &mut ghmesh_node::NodeConfig| c.clock = clock.clone();
    let first = start_node_with(Some(test_keys()), vec![], github(), on_clock)
        .await
        .unwrap();
    let boot = first.addr();
    let mut nodes = vec![first];
    for _ in 0..2 {
        let n = start_node_with(Some(test_keys()), vec![boot.clone()], github(), on_clock)
            .await
            .unwrap();
        nodes.push(n);
    }
    wait_full_membership(&nodes, Duration::from_secs(30))
        .await
        .unwrap();
    let get = |n: usize, path: &str| {
        let node = nodes[n].node.clone();
        let req = CanonicalRequest::get(path).unwrap();
        async move { node.get(req).await.unwrap() }
    };
    // Every node's hold ends at least `secs` from now.
    let held_for = |secs: u64| {
        let nodes = &nodes;
        let clock = &clock;
        async move {
            for n in nodes {
                wait_until(Duration::from_secs(10), "the fleet's hold", || async {
                    let until = n
                        .node
                        .stats()
                        .await
                        .rate_limits
                        .iter()
                        .filter_map(|b| b.held_until)
                        .max();
                    until.is_some_and(|u| u >= clock.now_secs() + secs - 1)
                })
                .await
                .unwrap();
            }
        }
    };
    gh.set_fault(Fault::SecondaryLimit);
    assert_eq!(get(0, "/repos/acme/one").await.http_status(), 403);
    held_for(SECONDARY_FIRST.as_secs()).await;
    clock.advance(SECONDARY_FIRST + Duration::from_secs(1));
    // The hold is over; the limit is not: the next node to try is refused again.
    assert_eq!(get(1, "/repos/acme/two").await.http_status(), 403);
    held_for(2 * SECONDARY_FIRST.as_secs()).await;
    let sent = gh.total_requests();
    clock.advance(SECONDARY_FIRST + Duration::from_secs(1));
    let held = get(2, "/repos/acme/three").await;
    assert_eq!((held.http_status(), held.status), (403, CacheStatus::Held));
    assert_eq!(gh.total_requests(), sent, "still held a minute later");
}

/// A budget near its end is shared out among the members that spend it: a burst of
/// misses on every node at once spends what is left with at most the fleet's one
/// refusal (each node keeps its requests in flight within its share of the fleet's
/// figures), and what does not fit is held, not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_every_node_spends_a_budget_near_its_end_with_one_refusal_at_most() {
    let _alone = CORES.write().await;
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(40);
    gh.set_latency(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &[], &dir).await.unwrap();
    // Every node spends the token (reads until each has fetched a key it owns), and
    // every node hears from the others that they do.
    let mut warm = 0;
    loop {
        let mut idle = 0;
        for n in &nodes {
            idle += usize::from(n.stats().await.unwrap()["upstream_calls"] == 0);
        }
        if idle == 0 {
            break;
        }
        let (status, _) = read(&nodes[0], &format!("/repos/acme/warm{warm}"), None).await;
        assert_eq!(status, 200);
        warm += 1;
        assert!(warm < 30, "a node that owns nothing");
    }
    let left = 40 - warm as u64;
    for n in &nodes {
        poll("the fleet's figures and spenders on every node", || async {
            budgets(n).await.iter().any(|b| {
                b["resource"] == "core"
                    && b["remaining"].as_u64() == Some(left)
                    && b["members_spending"] == 2
            })
        })
        .await;
    }
    // Eighteen misses more than what is left, on all three nodes at once.
    let misses = left as usize + 18;
    let reads = (0..misses).map(|i| {
        let node = &nodes[i % 3];
        async move { read(node, &format!("/repos/acme/burst{i}"), None).await }
    });
    let answers = futures::future::join_all(reads).await;
    // Without shares every node sends as many as its upstream concurrency allows, and
    // those beyond what is left are refused.
    // With them, the last two requests may both go when one node's figures are a
    // round trip older than another's (news near the end goes out at most every
    // 100 ms): the fleet's one offence, which then holds everyone.
    let refused_by_github = gh.total_requests() - gh.full_responses() - gh.not_modified();
    assert!(refused_by_github <= 1, "{refused_by_github}: {answers:?}");
    println!("{left} left for {misses} misses; refused by GitHub: {refused_by_github}");
    let served = answers.iter().filter(|(s, _)| *s == 200).count() as u64;
    assert_eq!(served, left, "what was left is spent: {answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 403),
        "{answers:?}"
    );
    assert_eq!(
        gh.full_responses(),
        40,
        "the whole budget, and not one more"
    );
}

/// A fleet that starts spending a token all at once before anyone has heard GitHub's
/// figures: the members that said in their hellos that they spend it send one request
/// each, the first figures go out at once, and for a moment every such member counts
/// as a spender, so the burst spends what is left with at most one refusal. Without
/// it each node sends as many as its upstream concurrency allows into a budget it
/// knows nothing of (10 of the 30 refused in a run without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fleet_bursting_on_a_budget_near_its_end_is_refused_once_at_most() {
    let _alone = CORES.write().await;
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(12);
    gh.set_latency(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &[], &dir).await.unwrap();
    for n in &nodes {
        assert!(budgets(n).await.is_empty(), "nobody has figures yet");
    }
    let misses = 30;
    let reads = (0..misses).map(|i| {
        let node = &nodes[i % 3];
        async move { read(node, &format!("/repos/acme/cold{i}"), None).await }
    });
    let answers = futures::future::join_all(reads).await;
    let refused_by_github = gh.total_requests() - gh.full_responses() - gh.not_modified();
    println!("12 left for {misses} misses; refused by GitHub: {refused_by_github}");
    assert!(refused_by_github <= 1, "{refused_by_github}: {answers:?}");
    let served = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(served, 12, "what was left is spent: {answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 403),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserve_keeps_the_last_requests_for_people_on_every_node() {
    let _shared = CORES.read().await;
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(60);
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &["--rate-limit-reserve", "50"], &dir)
        .await
        .unwrap();
    let mut i = 0;
    loop {
        let (status, cache) = read(&nodes[0], &format!("/repos/acme/k{i}"), None).await;
        i += 1;
        if cache == "held" {
            assert_eq!(status, 403);
            break;
        }
        assert!(i < 30, "never held");
    }
    // Every node learns that the fleet is down to the reserve, then spends nothing.
    for n in &nodes {
        poll("the reserve on every node", || async {
            budgets(n)
                .await
                .iter()
                .any(|b| b["remaining"].as_u64() <= Some(50))
        })
        .await;
    }
    let sent = gh.total_requests();
    for (n, node) in nodes.iter().enumerate() {
        let (status, cache) = read(node, &format!("/repos/acme/more{n}"), None).await;
        assert_eq!((status, cache.as_str()), (403, "held"));
    }
    assert_eq!(gh.total_requests(), sent);
    assert!(
        gh.total_requests() <= 12,
        "stopped at the reserve: {}",
        gh.total_requests()
    );
    // A person's own write still goes through: the reserve is for misses.
    let auth = "Bearer ghp_e2etoken";
    let (status, _, _) = http_request(
        "POST",
        &format!("{}/repos/acme/k0/issues", nodes[1].base()),
        &[
            ("authorization", auth),
            ("content-type", "application/json"),
        ],
        b"{\"title\":\"t\"}",
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_tokens_of_one_repository_are_one_budget_and_other_tokens_go_on() {
    let _shared = CORES.read().await;
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(3);
    let dir = tempfile::tempdir().unwrap();
    // One node: reads with a client's token go upstream with that token (in a larger
    // fleet a key's owner may fetch it with its own).
    let nodes = fleet(1, &gh, &["--repo", "acme/widgets"], &dir)
        .await
        .unwrap();
    // Two jobs' tokens spend one repository's budget.
    for i in 0..3 {
        let token = if i % 2 == 0 {
            "ghs_jobone"
        } else {
            "ghs_jobtwo"
        };
        let (status, _) = read(&nodes[0], &format!("/repos/acme/j{i}"), Some(token)).await;
        assert_eq!(status, 200);
    }
    // GitHub said the repository's budget is spent (remaining 0 on the third answer):
    // a third job's token is held without being sent, and nobody is refused. (The
    // read is then made with the node's own token, as for any held client token.)
    let (status, _) = read(&nodes[0], "/repos/acme/j4", Some("ghs_jobthree")).await;
    assert_eq!(status, 200);
    let sent_with: Vec<_> = gh.requests().into_iter().map(|r| r.authorization).collect();
    assert_eq!(
        sent_with.last().cloned().flatten().as_deref(),
        Some("Bearer ghp_e2etoken")
    );
    assert!(!sent_with
        .iter()
        .any(|a| a.as_deref() == Some("Bearer ghs_jobthree")));
    assert_eq!(
        sent_with.len(),
        4,
        "three jobs' reads, then the node's: {sent_with:?}"
    );
    // Another token's budget is another budget: it goes on.
    let (status, _) = read(&nodes[0], "/repos/acme/j5", Some("ghp_person")).await;
    assert_eq!(status, 200);
    let known = budgets(&nodes[0]).await;
    assert_eq!(
        known.len(),
        3,
        "the jobs' one budget, the node's, the person's: {known:?}"
    );
    let held = known.iter().filter(|b| b["held_until"].is_u64()).count();
    assert_eq!(held, 1, "{known:?}");
}

/// A read waiting for its share of a budget near its end waits before it takes a place
/// among the requests in flight: with two places, one read of the node's nearly spent
/// budget hanging at GitHub and two more waiting for their share, a read with another
/// token still reaches GitHub at once (it used to queue behind the waiting reads for
/// as long as the first one hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_waiting_for_their_share_leave_other_budgets_a_place() {
    let _shared = CORES.read().await;
    let gh = FakeGithub::start().await.unwrap();
    // Four requests an hour: after one, three are left, fewer than a share's eight,
    // so this node (the only spender) keeps one request in flight on the budget.
    gh.set_rate_limit(4);
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(1, &gh, &["--upstream-concurrency", "2"], &dir)
        .await
        .unwrap();
    let node = Arc::new(nodes.into_iter().next().unwrap());
    assert_eq!(read(&node, "/repos/acme/a0", None).await.0, 200);
    gh.set_fault(Fault::Hang);
    let spawn_read = |k: usize| {
        let n = node.clone();
        tokio::spawn(async move { read(&n, &format!("/repos/acme/a{k}"), None).await })
    };
    // The first hangs at GitHub; then two more wait for the budget's one place.
    let mut reads = vec![spawn_read(1)];
    poll("the first read at GitHub", || async {
        gh.total_requests() == 2
    })
    .await;
    reads.extend([spawn_read(2), spawn_read(3)]);
    poll("two reads waiting for their share", || async {
        node.stats().await.unwrap()["share_waits"].as_u64() >= Some(2)
    })
    .await;
    let n = node.clone();
    reads.push(tokio::spawn(async move {
        read(&n, "/repos/acme/b0", Some("ghp_anothertoken")).await
    }));
    poll("the other token's read at GitHub", || async {
        gh.total_requests() == 3
    })
    .await;
    assert!(
        gh.requests().iter().any(|r| r
            .authorization
            .as_deref()
            .is_some_and(|a| a.contains("ghp_anothertoken"))),
        "the third request is the other token's"
    );
    for r in reads {
        r.abort();
    }
}

/// A member that joins hears the fleet's budgets in its hello, before its first
/// request: it neither waits for figures nor spends as if it knew nothing (a new
/// runner in a fleet near the end of its token's window). Ledger messages carry only
/// news, so without the hello it would learn nothing until someone spends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_joins_knows_the_fleets_budgets_before_its_first_request() {
    let _shared = CORES.read().await;
    let gh = FakeGithub::start().await.unwrap();
    gh.set_rate_limit(40);
    let dir = tempfile::tempdir().unwrap();
    // One runner alone spends three requests: its ledger news reaches nobody.
    let nodes = fleet(1, &gh, &[], &dir).await.unwrap();
    for i in 0..3 {
        let path = format!("/repos/acme/j{i}");
        assert_eq!(read(&nodes[0], &path, None).await.0, 200);
    }
    let sent = gh.total_requests();
    let args = vec![
        "--upstream".to_string(),
        gh.url(),
        "--bootstrap".to_string(),
        nodes[0].ready.listen[0].clone(),
    ];
    let newcomer = start_daemon(dir.path().join("late"), &args, &env("e2e-fleet"))
        .await
        .unwrap();
    // Its first view of the budget comes with no ledger message received: a hello's.
    // (Without the hello's list it learns the figures only from the ledger news the
    // first runner sends once it has a peer.)
    let first_view = std::sync::Mutex::new(Value::Null);
    poll("the fleet's budget known to the newcomer", || async {
        let stats = newcomer.stats().await.unwrap();
        let known = stats["rate_limits"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["resource"] == "core" && b["remaining"].as_u64() == Some(40 - 3))
        });
        if known {
            *first_view.lock().unwrap() = stats;
        }
        known
    })
    .await;
    let first_view = first_view.into_inner().unwrap();
    assert_eq!(first_view["ledger_received"], 0, "{first_view}");
    assert_eq!(gh.total_requests(), sent, "the newcomer sent nothing");
}
