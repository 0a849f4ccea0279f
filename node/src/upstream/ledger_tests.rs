use super::*;
use bytes::Bytes;

const A: BudgetId = [1; BUDGET_ID_LEN];
const B: BudgetId = [2; BUDGET_ID_LEN];

fn answer(status: u16, remaining: u64, reset: u64, resource: &str) -> UpstreamResponse {
    UpstreamResponse {
        status,
        headers: vec![
            ("x-ratelimit-limit".into(), "5000".into()),
            ("x-ratelimit-remaining".into(), remaining.to_string()),
            ("x-ratelimit-used".into(), (5000 - remaining).to_string()),
            ("x-ratelimit-reset".into(), reset.to_string()),
            ("x-ratelimit-resource".into(), resource.into()),
        ],
        body: Bytes::new(),
    }
}

fn hold(until: u64, secondary: bool, streak: u8) -> Option<NewHold> {
    Some(NewHold {
        until,
        secondary,
        streak,
    })
}

#[test]
fn our_answers_are_news_once_and_members_news_is_merged_not_repeated() {
    let mut book = BudgetBook::default();
    book.observe(A, "core", &answer(200, 4000, 2000, "core"), None, 1000);
    book.observe(A, "core", &answer(304, 3990, 2000, "core"), None, 1000);
    let news = book.news();
    assert_eq!(news.len(), 1, "one entry per budget and resource");
    assert_eq!(news[0].remaining, 3990);
    assert!(book.news().is_empty(), "said once");
    // A member saw less remaining in the same window: it wins, and is not re-gossiped.
    let mut theirs = news[0].clone();
    theirs.remaining = 100;
    theirs.used = 4900;
    assert_eq!(book.heard(&[theirs.clone()], None, 1000), 1);
    assert_eq!(
        book.heard(&[theirs], None, 1000),
        0,
        "old news changes nothing"
    );
    assert!(book.news().is_empty());
    let v = book.view(1000);
    assert_eq!((v[0].remaining, v[0].source), (100, Source::Fleet));
    // Our own higher remaining in that window changes nothing either.
    book.observe(A, "core", &answer(200, 3980, 2000, "core"), None, 1000);
    assert!(book.news().is_empty());
}

#[test]
fn a_refusal_holds_the_budget_fleet_wide_until_its_time() {
    let mut me = BudgetBook::default();
    let mut member = BudgetBook::default();
    me.observe(
        A,
        "core",
        &answer(403, 0, 2000, "core"),
        hold(2000, false, 0),
        1000,
    );
    assert_eq!(member.heard(&me.news(), None, 1000), 1);
    assert_eq!(member.held_until(A, "core", 1500), Some(2000));
    assert_eq!(member.held_until(A, "core", 2000), None, "until the reset");
    assert_eq!(
        member.held_until(A, "search", 1500),
        None,
        "another resource goes on"
    );
    assert_eq!(
        member.held_until(B, "core", 1500),
        None,
        "another budget goes on"
    );
    // A secondary limit holds the budget's every resource.
    me.observe(
        B,
        "core",
        &answer(403, 4000, 5000, "core"),
        hold(1600, true, 0),
        1000,
    );
    member.heard(&me.news(), None, 1000);
    assert_eq!(member.held_until(B, "graphql", 1500), Some(1600));
}

#[test]
fn a_members_secondary_limit_is_remembered_for_the_repeat_window() {
    let mut me = BudgetBook::default();
    let mut member = BudgetBook::default();
    assert_eq!(member.secondary_streak(A, 1000), None);
    me.observe(
        A,
        "core",
        &answer(403, 4000, 5000, "core"),
        hold(1060, true, 1),
        1000,
    );
    member.heard(&me.news(), None, 1000);
    assert_eq!(member.secondary_streak(A, 1030), Some(1), "on");
    assert_eq!(member.secondary_streak(A, 1060 + 3599), Some(1), "a repeat");
    assert_eq!(
        member.secondary_streak(A, 1060 + 3600),
        None,
        "a new offence"
    );
    assert_eq!(member.secondary_streak(B, 1030), None, "another budget");
    // A primary refusal is no streak.
    me.observe(
        B,
        "core",
        &answer(403, 0, 5000, "core"),
        hold(5000, false, 0),
        1000,
    );
    member.heard(&me.news(), None, 1000);
    assert_eq!(member.secondary_streak(B, 1030), None);
}

#[test]
fn the_reserve_stops_spending_within_the_window() {
    let mut book = BudgetBook::default();
    book.observe(A, "core", &answer(200, 60, 2000, "core"), None, 1000);
    assert!(book.at_reserve(A, "core", 50, 1000).is_none());
    book.observe(A, "core", &answer(200, 50, 2000, "core"), None, 1000);
    assert_eq!(
        book.at_reserve(A, "core", 50, 1000).map(|e| e.reset),
        Some(2000)
    );
    assert!(
        book.at_reserve(A, "core", 0, 1000).is_none(),
        "no reserve, some left"
    );
    book.observe(A, "graphql", &answer(200, 0, 2000, "graphql"), None, 1000);
    assert!(
        book.at_reserve(A, "graphql", 0, 1000).is_some(),
        "GitHub said nothing is left: the next request would be refused"
    );
    assert_eq!(
        book.view(1000)
            .iter()
            .find(|b| b.resource == "graphql")
            .and_then(|b| b.held_until),
        Some(2000)
    );
    assert!(
        book.at_reserve(A, "core", 50, 2000).is_none(),
        "a new window"
    );
    assert!(
        book.at_reserve(A, "search", 50, 1000).is_none(),
        "nothing known"
    );
}

#[test]
fn the_book_is_bounded_and_forgets_the_oldest_window_first() {
    let mut book = BudgetBook::default();
    for i in 0..MAX_BUDGETS + 10 {
        let mut id = [0u8; BUDGET_ID_LEN];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        book.observe(
            id,
            "core",
            &answer(200, 10, 1000 + i as u64, "core"),
            None,
            1000,
        );
    }
    let v = book.view(0);
    assert_eq!(v.len(), MAX_BUDGETS);
    assert!(
        v.iter().all(|b| b.reset >= 1010),
        "the first windows went first"
    );
}

#[test]
fn a_budget_near_its_end_is_shared_out_among_its_spenders() {
    let mut ids: Vec<libp2p::PeerId> = (0..4).map(|_| libp2p::PeerId::random()).collect();
    ids.sort_by_key(|p| p.to_bytes());
    let mut book = BudgetBook::default();
    assert_eq!(
        book.share(A, "core", 0, ids[0], &[], 1000),
        None,
        "no figures"
    );
    book.observe(A, "core", &answer(200, 20, 2000, "core"), None, 1000);
    let shares = |book: &BudgetBook, reserve| -> Vec<Option<u64>> {
        ids.iter()
            .map(|me| {
                book.share(A, "core", reserve, *me, &[], 1000)
                    .map(|s| s.requests)
            })
            .collect()
    };
    // Alone, 20 left is plenty (8 per spender): no limit.
    assert_eq!(shares(&book, 0), [None, None, None, None]);
    // Members said they spend it too: four spenders (whoever of them is us), 20 < 32,
    // shared out.
    let entry = book.news();
    for p in &ids {
        book.heard(&entry, Some(*p), 1000);
    }
    // Half of what is left goes out at once, the remainder to the first ranks.
    assert_eq!(shares(&book, 0), [Some(3), Some(3), Some(2), Some(2)]);
    // Above a reserve of 16 four are left: two now, to the first two ranks.
    assert_eq!(shares(&book, 16), [Some(1), Some(1), Some(0), Some(0)]);
    // The last request can be spent, by one node.
    book.observe(A, "core", &answer(200, 1, 2000, "core"), None, 1000);
    assert_eq!(shares(&book, 0), [Some(1), Some(0), Some(0), Some(0)]);
    assert_eq!(
        book.share(A, "core", 0, ids[0], &[], 2000),
        None,
        "the window is over"
    );
    // A new window: the spenders of the last one are not counted.
    book.observe(A, "core", &answer(200, 20, 5600, "core"), None, 2000);
    assert_eq!(book.share(A, "core", 0, ids[3], &[], 2000), None);
    assert_eq!(
        book.share(B, "core", 0, ids[0], &[], 1000),
        None,
        "another budget"
    );
}

#[test]
fn every_member_ranks_the_fleet_alike() {
    let ids: Vec<libp2p::PeerId> = (0..5).map(|_| libp2p::PeerId::random()).collect();
    let mut ranks: Vec<usize> = ids
        .iter()
        .map(|me| {
            // Whether or not the set names us.
            let fleet = Fleet::among(*me, &ids);
            assert_eq!(fleet.size, 5);
            fleet.rank
        })
        .collect();
    ranks.sort_unstable();
    assert_eq!(ranks, [0, 1, 2, 3, 4], "one rank each");
}

#[test]
fn a_request_goes_within_its_share_waits_beyond_it_and_takes_turns_once_the_budget_is_quiet() {
    let share = |requests, left, rank| Share {
        requests,
        left,
        reset: 2000,
        quiet_at: 1002,
        fleet: Fleet { size: 3, rank },
        learning_until: None,
    };
    assert_eq!(may_spend(None, 50, 1000), Spend::Go, "no figures: no limit");
    assert_eq!(may_spend(Some(share(2, 9, 0)), 1, 1000), Spend::Go);
    // Our share is in flight: the end of one of them wakes us.
    assert_eq!(
        may_spend(Some(share(2, 9, 0)), 2, 1000),
        Spend::Wait { until: None }
    );
    // No share: members spend what is left; once nobody has for a while, the nodes
    // take turns, one each (with 4 left, turn 0 is rank 1's, then 2, 0, 1, …).
    let turn = |rank, now| may_spend(Some(share(0, 4, rank)), 0, now);
    assert_eq!(turn(1, 1000), Spend::Wait { until: Some(1002) });
    assert_eq!(turn(1, 1002), Spend::Go);
    assert_eq!(turn(2, 1002), Spend::Wait { until: Some(1003) });
    assert_eq!(turn(0, 1002), Spend::Wait { until: Some(1004) });
    assert_eq!(turn(0, 1004), Spend::Go);
    assert_eq!(
        turn(1, 1003),
        Spend::Wait { until: Some(1005) },
        "the next round"
    );
    assert_eq!(
        may_spend(Some(share(0, 4, 1)), 1, 1002),
        Spend::Wait { until: None },
        "one at a time"
    );
    // A turn too far away is a hold with the turn as its retry time.
    let big = Share {
        fleet: Fleet { size: 50, rank: 40 },
        ..share(0, 4, 0)
    };
    assert_eq!(may_spend(Some(big), 0, 1002), Spend::Held { until: 1038 });
    // While members that may spend count as spenders, a far turn is looked at again
    // once they have shown who does spend: a wait, not a hold.
    let learning = Share {
        learning_until: Some(1003),
        ..big
    };
    assert_eq!(
        may_spend(Some(learning), 0, 1002),
        Spend::Wait { until: Some(1003) }
    );
    assert_eq!(
        may_spend(Some(learning), 0, 1003),
        Spend::Held { until: 1038 }
    );
    assert_eq!(
        may_spend(Some(share(0, 0, 0)), 0, 1002),
        Spend::Held { until: 2000 },
        "nothing left above the reserve: until the window's end"
    );
}

#[test]
fn figures_are_quiet_a_while_after_they_last_changed() {
    let mut book = BudgetBook::default();
    book.observe(A, "core", &answer(200, 5, 2000, "core"), None, 1000);
    let me = libp2p::PeerId::random();
    let quiet = |book: &BudgetBook| book.share(A, "core", 0, me, &[], 1000).unwrap().quiet_at;
    assert_eq!(quiet(&book), 1001 + QUIET_SECS);
    // The same figures again change nothing; lower ones do.
    let news = book.news();
    book.heard(&news, None, 1001);
    book.observe(A, "core", &answer(200, 5, 2000, "core"), None, 1001);
    assert_eq!(quiet(&book), 1001 + QUIET_SECS);
    book.observe(A, "core", &answer(200, 4, 2000, "core"), None, 1001);
    assert_eq!(quiet(&book), 1002 + QUIET_SECS);
}

#[test]
fn a_budget_nobody_has_figures_of_is_spent_first_by_a_few_members() {
    let members: Vec<libp2p::PeerId> = (0..20).map(|_| libp2p::PeerId::random()).collect();
    let ranks_of = |resource| -> Vec<usize> {
        members
            .iter()
            .map(|me| spender_rank(A, resource, *me, &members))
            .collect()
    };
    let mut ranks = ranks_of("core");
    ranks.sort_unstable();
    assert_eq!(
        ranks,
        (0..20).collect::<Vec<_>>(),
        "every member ranks the fleet alike"
    );
    // Another resource (or budget) ranks them otherwise: not always the same members
    // first.
    assert_ne!(ranks_of("search"), ranks_of("core"));
    // The first four at once, twice as many after each wait.
    let w = FIRST_FIGURES_WAIT_MS;
    let waits: Vec<u64> = [0, 3, 4, 7, 8, 15, 16, 199].map(figures_wait_ms).to_vec();
    assert_eq!(waits, [0, 0, w, w, 2 * w, 2 * w, 3 * w, 6 * w]);
    // One call at a time until figures come; the others wait for them, then go.
    assert_eq!(before_figures(0, 0, 0), Spend::Go);
    assert_eq!(before_figures(0, 1, 0), Spend::Wait { until: None });
    assert_eq!(
        before_figures(5, 0, 300),
        Spend::AwaitFigures { for_ms: w - 300 }
    );
    assert_eq!(before_figures(5, 0, w), Spend::Go);
    assert_eq!(before_figures(5, 1, w), Spend::Wait { until: None });
}

#[test]
fn while_a_window_is_new_every_member_that_spends_the_budget_counts_as_a_spender() {
    let mut ids: Vec<libp2p::PeerId> = (0..200).map(|_| libp2p::PeerId::random()).collect();
    ids.sort_by_key(|p| p.to_bytes());
    let mut book = BudgetBook::default();
    assert!(!book.knows(A, "core"));
    // A first spender's answer: 46 left. Alone, that is plenty.
    book.observe(A, "core", &answer(200, 46, 5000, "core"), None, 1000);
    assert!(book.knows(A, "core"));
    assert_eq!(book.share(A, "core", 0, ids[0], &[], 1000), None);
    // With 200 members that said they spend it, any of whom may be about to, it is
    // near its end: 23 requests now, one each for the first 23 ranks.
    let shares: Vec<u64> = ids
        .iter()
        .map(|me| {
            book.share(A, "core", 0, *me, &ids, 1000)
                .map_or(u64::MAX, |s| s.requests)
        })
        .collect();
    assert_eq!(shares.iter().sum::<u64>(), 23);
    assert!(shares.iter().all(|s| *s <= 1));
    let learnt = book.share(A, "core", 0, ids[0], &ids, 1000).unwrap();
    assert_eq!(learnt.learning_until, Some(1000 + LEARN_SECS));
    // Once the window is no longer new, only the members that said they spent count.
    let later = 1000 + LEARN_SECS;
    assert_eq!(book.share(A, "core", 0, ids[0], &ids, later), None);
    // A new window is new again.
    book.observe(A, "core", &answer(200, 46, 8600, "core"), None, 5000);
    assert!(book.share(A, "core", 0, ids[0], &ids, 5000).is_some());
    // An answer without figures (GitHub Enterprise Server without rate limits) is
    // known too: nothing to wait for.
    assert!(!book.knows(B, "core"));
    book.answered(B, "core");
    assert!(book.knows(B, "core"));
}

#[test]
fn a_snapshot_for_a_newcomer_carries_the_current_windows_nearest_their_end_first() {
    let mut book = BudgetBook::default();
    book.observe(A, "core", &answer(200, 4000, 5000, "core"), None, 1000);
    book.observe(B, "core", &answer(200, 12, 5000, "core"), None, 1000);
    book.observe(B, "search", &answer(200, 29, 1500, "search"), None, 1000);
    let snap = book.snapshot(1000);
    assert_eq!(
        snap.iter().map(|e| e.remaining).collect::<Vec<_>>(),
        [12, 29, 4000]
    );
    assert_eq!(
        book.snapshot(2000).len(),
        2,
        "a window that ended is not told"
    );
    let mut newcomer = BudgetBook::default();
    assert_eq!(newcomer.heard(&snap, None, 1000), 3);
    assert_eq!(newcomer.view(1000).len(), 3);
}

#[test]
fn a_node_waiting_for_its_share_says_once_per_window_that_it_spends() {
    let mut book = BudgetBook::default();
    assert!(!book.wants(A, "core"), "no figures: nothing to share yet");
    // Members' figures: not ours to tell.
    let mut other = BudgetBook::default();
    other.observe(A, "core", &answer(200, 10, 2000, "core"), None, 1000);
    book.heard(&other.news(), None, 1000);
    assert!(book.news().is_empty());
    // A request of ours waits for its share: members must hear we spend it, once.
    assert!(book.wants(A, "core"));
    assert!(!book.wants(A, "core"), "already to be said");
    assert_eq!(book.news().len(), 1);
    assert!(!book.wants(A, "core"), "said this window");
    // A new window: said again when we wait again.
    book.heard(
        &[BudgetEntry {
            reset: 5600,
            ..other.snapshot(1000)[0].clone()
        }],
        None,
        2000,
    );
    assert!(book.wants(A, "core"));
}
