//! The simulated-time mode: the node's decision layer on a seeded discrete-event
//! network. Counts and determinism, not times.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use ghmesh_simulations::{run_simulated, NetParams, Report, SimConfig, Workload};

fn cfg(workload: &str, nodes: usize, seed: u64) -> SimConfig {
    let mut cfg = SimConfig::from_workload(Workload::load(workload).unwrap());
    cfg.nodes = nodes;
    cfg.keys = 50;
    cfg.seed = seed;
    cfg.lookup_timeout = Duration::from_secs(1);
    cfg
}

fn accounted(r: &Report) -> u64 {
    r.served_local + r.served_peer + r.served_coalesced + r.served_revalidated + r.served_miss
}

#[test]
fn a_burst_with_full_views_fetches_each_key_once_and_every_read_is_answered() {
    let r = run_simulated(cfg("burst", 60, 1), NetParams::default()).unwrap();
    assert_eq!(r.time, "simulated");
    assert_eq!(r.requests, 60 * 50);
    assert_eq!(accounted(&r), r.requests, "every read has one outcome");
    assert_eq!(r.upstream_calls, 50, "owners agree: one call per key");
    assert_eq!(r.propagation_ms.samples, 50, "every key reached every node");
    assert!(r.view_converged_s.is_finite());
    assert!(
        r.messages > r.requests,
        "lookups, replies and gossip are counted"
    );
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let a = run_simulated(cfg("coldstart", 40, 7), NetParams::default()).unwrap();
    let b = run_simulated(cfg("coldstart", 40, 7), NetParams::default()).unwrap();
    let c = run_simulated(cfg("coldstart", 40, 8), NetParams::default()).unwrap();
    let fingerprint = |r: &Report| {
        (
            r.upstream_calls,
            r.served_peer,
            r.served_coalesced,
            r.messages,
            r.propagation_samples.clone(),
        )
    };
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_ne!(fingerprint(&a), fingerprint(&c));
}

#[test]
fn loss_partial_views_and_churn_still_answer_every_read() {
    let lossy = NetParams {
        loss: 0.1,
        view: 0.6,
        ..NetParams::default()
    };
    let r = run_simulated(cfg("burst", 40, 3), lossy).unwrap();
    assert_eq!(accounted(&r), r.requests);
    assert!(
        r.upstream_calls >= 50,
        "every key was fetched at least once"
    );

    let mut churn = cfg("churn", 10, 3);
    churn.keys = 20;
    let r = run_simulated(churn, NetParams::default()).unwrap();
    let late = r.late_joiners.clone().unwrap();
    assert_eq!(late.nodes, 5);
    // A joiner may itself leave before it has read everything.
    assert!(late.requests > 0 && late.requests <= 5 * 20 * r.rounds as u64);
    assert!(
        late.served_by_peers > 0,
        "late joiners are served by the fleet"
    );
}

#[test]
fn bad_parameters_are_refused() {
    let bad = NetParams {
        loss: 1.0,
        ..NetParams::default()
    };
    assert!(run_simulated(cfg("burst", 5, 1), bad).is_err());
    let bad = NetParams {
        view: 0.0,
        ..NetParams::default()
    };
    assert!(run_simulated(cfg("burst", 5, 1), bad).is_err());
}

#[test]
fn with_the_ledger_a_spent_shared_token_is_refused_once_not_once_per_node() {
    // 60 nodes share one token with 25 requests left; the 50 keys are read as the
    // nodes start over 30 s, so that few calls are in flight when the budget runs out.
    let run = |ledger: bool| {
        let mut c = cfg("burst", 60, 1);
        c.stagger_ms = 30_000;
        let net = NetParams {
            budget: Some(25),
            ledger,
            ..NetParams::default()
        };
        run_simulated(c, net).unwrap()
    };
    let shared = run(true);
    let alone = run(false);
    let (s, a) = (shared.budget.unwrap(), alone.budget.unwrap());
    assert_eq!(shared.upstream_calls, 25, "the budget, all of it");
    assert!(
        a.refusals >= 55,
        "without the ledger every node is refused: {a:?}"
    );
    assert!(s.refusals <= 3, "with it, the fleet about once: {s:?}");
    assert!(s.ledger_messages > 0 && a.ledger_messages == 0);
}
