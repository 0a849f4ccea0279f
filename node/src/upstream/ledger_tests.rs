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
    book.observe(A, "core", &answer(200, 4000, 2000, "core"), None);
    book.observe(A, "core", &answer(304, 3990, 2000, "core"), None);
    let news = book.news();
    assert_eq!(news.len(), 1, "one entry per budget and resource");
    assert_eq!(news[0].remaining, 3990);
    assert!(book.news().is_empty(), "said once");
    // A member saw less remaining in the same window: it wins, and is not re-gossiped.
    let mut theirs = news[0].clone();
    theirs.remaining = 100;
    theirs.used = 4900;
    assert_eq!(book.heard(&[theirs.clone()]), 1);
    assert_eq!(book.heard(&[theirs]), 0, "old news changes nothing");
    assert!(book.news().is_empty());
    let v = book.view(1000);
    assert_eq!((v[0].remaining, v[0].source), (100, Source::Fleet));
    // Our own higher remaining in that window changes nothing either.
    book.observe(A, "core", &answer(200, 3980, 2000, "core"), None);
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
    );
    assert_eq!(member.heard(&me.news()), 1);
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
    );
    member.heard(&me.news());
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
    );
    member.heard(&me.news());
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
    );
    member.heard(&me.news());
    assert_eq!(member.secondary_streak(B, 1030), None);
}

#[test]
fn the_reserve_stops_spending_within_the_window() {
    let mut book = BudgetBook::default();
    book.observe(A, "core", &answer(200, 60, 2000, "core"), None);
    assert!(book.at_reserve(A, "core", 50, 1000).is_none());
    book.observe(A, "core", &answer(200, 50, 2000, "core"), None);
    assert_eq!(
        book.at_reserve(A, "core", 50, 1000).map(|e| e.reset),
        Some(2000)
    );
    assert!(
        book.at_reserve(A, "core", 0, 1000).is_none(),
        "no reserve, some left"
    );
    book.observe(A, "graphql", &answer(200, 0, 2000, "graphql"), None);
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
        book.observe(id, "core", &answer(200, 10, 1000 + i as u64, "core"), None);
    }
    let v = book.view(0);
    assert_eq!(v.len(), MAX_BUDGETS);
    assert!(
        v.iter().all(|b| b.reset >= 1010),
        "the first windows went first"
    );
}
