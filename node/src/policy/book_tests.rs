//! The peer book's rules, on a clock the tests set.
use super::*;
use crate::placement::DIRECT_GRACE_MS;

fn rule() -> BudgetRule {
    BudgetRule {
        initial: Duration::from_millis(250),
        floor: Duration::from_millis(50),
        ceiling: Duration::from_secs(1),
    }
}

fn admitted(book: &mut PeerBook, now: u64) -> PeerId {
    let p = PeerId::random();
    assert!(book.connected(p, now));
    assert!(!book.connected(p, now), "one greeting at a time");
    assert!(book.greeted(p, true, now));
    p
}

#[test]
fn only_proven_peers_are_members_and_candidates() {
    let mut book = PeerBook::default();
    let stranger = PeerId::random();
    assert!(book.connected(stranger, 0));
    assert!(!book.greeted(stranger, false, 0));
    assert!(!book.is_member(&stranger));
    assert!(!book.connected(stranger, 1), "not on every sweep");
    assert!(
        book.connected(stranger, REGREET_AFTER_MS),
        "but again later"
    );
    let m = admitted(&mut book, 0);
    assert_eq!(book.members(), vec![m]);
    assert_eq!(book.candidates(0), vec![m]);
    book.disconnected(&m, 0);
    assert!(book.members().is_empty());
    assert!(
        !book.greeted(m, true, 0),
        "a greeting that ends after the disconnect"
    );
}

#[test]
fn probation_backs_off_counts_concurrent_timeouts_once_and_decays() {
    let mut book = PeerBook::default();
    let p = admitted(&mut book, 0);
    let base = PROBATION_BASE.as_millis() as u64;
    book.timed_out(&p, Duration::from_millis(1), 1000);
    book.timed_out(&p, Duration::from_millis(1), 1001); // same hang, seen by another read
    assert!(book.candidates(1000 + base - 1).is_empty());
    assert_eq!(
        book.candidates(1000 + base),
        vec![p],
        "readmitted to be tried again"
    );
    // Fails again: twice as long.
    let t = 1000 + base;
    book.timed_out(&p, Duration::from_millis(1), t);
    assert!(book.candidates(t + 2 * base - 1).is_empty());
    assert_eq!(book.candidates(t + 2 * base), vec![p]);
    // An answer ends probation at once.
    book.timed_out(&p, Duration::from_millis(1), t + 2 * base);
    book.answered(&p, Duration::from_millis(10));
    assert_eq!(book.candidates(t + 2 * base), vec![p]);
    // A long clean record starts again from the base.
    let later = t + STANDING_DECAY.as_millis() as u64 + 10 * base;
    book.timed_out(&p, Duration::from_millis(1), later);
    assert_eq!(book.candidates(later + base), vec![p]);
    // A violation weighs more, but never more than the maximum.
    book.violated(&p, later + base);
    assert!(book.candidates(later + base + 4 * base).is_empty());
    for i in 0..40 {
        book.violated(&p, later + base + i);
    }
    let max = PROBATION_MAX.as_millis() as u64;
    assert_eq!(book.candidates(later + base + 40 + max), vec![p]);
}

#[test]
fn budgets_follow_observed_latency_within_bounds() {
    let mut book = PeerBook::default();
    let p = admitted(&mut book, 0);
    assert_eq!(book.budget(&p, rule()), rule().initial);
    book.answered(&p, Duration::from_millis(5));
    assert_eq!(
        book.budget(&p, rule()),
        rule().initial,
        "one answer is not enough"
    );
    for _ in 1..LATENCY_MIN_SAMPLES {
        book.answered(&p, Duration::from_millis(5));
    }
    assert_eq!(book.budget(&p, rule()), rule().floor);
    book.answered(&p, Duration::from_millis(300));
    assert_eq!(book.budget(&p, rule()), Duration::from_millis(600));
    book.answered(&p, Duration::from_secs(3));
    assert_eq!(book.budget(&p, rule()), rule().ceiling);
    for _ in 0..LATENCY_SAMPLES {
        book.answered(&p, Duration::from_millis(100));
    }
    assert_eq!(
        book.budget(&p, rule()),
        Duration::from_millis(200),
        "old samples age out"
    );
}

#[test]
fn nonces_are_used_once_and_requests_and_fetches_are_budgeted() {
    let mut book = PeerBook::default();
    let p = admitted(&mut book, 0);
    assert_eq!(book.request(&p, 1, 0), RequestVerdict::Handle);
    assert_eq!(book.request(&p, 1, 10), RequestVerdict::Replay);
    // Forgotten after the window: by then the seal's age refuses it anyway.
    assert_eq!(
        book.request(&p, 1, NONCE_WINDOW_MS + 1),
        RequestVerdict::Handle
    );
    // The request bucket: a burst, then the rate.
    let mut handled = 0;
    for n in 100..100 + 2 * REQUEST_BURST as u64 {
        if book.request(&p, n, NONCE_WINDOW_MS + 1) == RequestVerdict::Handle {
            handled += 1;
        }
    }
    assert!(handled as f64 <= REQUEST_BURST);
    assert_eq!(
        book.request(&PeerId::random(), 5, 0),
        RequestVerdict::Busy,
        "unknown"
    );
    // Fetches: at most MAX_FETCHES_PER_PEER in flight, and a bucket.
    let q = admitted(&mut book, 0);
    let started = (0..100).filter(|_| book.start_fetch(&q, 0)).count();
    assert_eq!(started, MAX_FETCHES_PER_PEER);
    for _ in 0..MAX_FETCHES_PER_PEER {
        book.fetch_done(&q);
    }
    let more = (0..100).filter(|_| {
        let ok = book.start_fetch(&q, 0);
        if ok {
            book.fetch_done(&q);
        }
        ok
    });
    assert_eq!(
        more.count(),
        FETCH_BURST as usize - MAX_FETCHES_PER_PEER,
        "the burst is spent"
    );
    assert!(book.start_fetch(&q, 1000), "refilled at the rate");
    let stranger = PeerId::random();
    book.connected(stranger, 0);
    assert!(!book.start_fetch(&stranger, 0), "never for a non-member");
}

#[test]
fn eldest_members_come_in_admission_order() {
    let mut book = PeerBook::default();
    let first = admitted(&mut book, 10);
    let second = admitted(&mut book, 20);
    let third = admitted(&mut book, 30);
    assert_eq!(book.eldest(40, 2), vec![first, second]);
    book.timed_out(&first, Duration::from_secs(1), 40);
    assert_eq!(
        book.eldest(41, 2),
        vec![second, third],
        "not one on probation"
    );
}

#[test]
fn introductions_happen_once_per_member() {
    let mut book = PeerBook::default();
    let m = admitted(&mut book, 0);
    assert!(book.mark_introduced(&m));
    assert!(!book.mark_introduced(&m), "only once");
    let stranger = PeerId::random();
    assert!(book.connected(stranger, 0));
    assert!(
        !book.mark_introduced(&stranger),
        "no member, no introduction"
    );
}

#[test]
fn peers_whose_disconnect_was_lost_are_forgotten() {
    let mut book = PeerBook::default();
    let kept = admitted(&mut book, 0);
    let lost = admitted(&mut book, 0);
    book.forget_all_but(&[kept]);
    assert!(book.is_member(&kept));
    assert!(!book.is_member(&lost));
    assert_eq!(book.members(), vec![kept]);
}

#[test]
fn a_peer_that_fills_its_nonce_memory_is_busy_until_the_window_passes() {
    let mut book = PeerBook::default();
    let p = admitted(&mut book, 0);
    // At the sustained request rate, so that only the nonce memory can refuse.
    let step = (1000.0 / REQUESTS_PER_SEC) as u64;
    let mut now = 0;
    for nonce in 0..MAX_NONCES_PER_PEER as u64 {
        now += step;
        assert_eq!(
            book.request(&p, nonce, now),
            RequestVerdict::Handle,
            "{nonce}"
        );
    }
    now += step;
    assert_eq!(book.request(&p, u64::MAX, now), RequestVerdict::Busy);
    now += NONCE_WINDOW_MS + step;
    assert_eq!(book.request(&p, u64::MAX, now), RequestVerdict::Handle);
}

#[test]
fn owners_are_the_publicly_reachable_members_when_there_are_any() {
    let mut book = PeerBook::default();
    let me = PeerId::random();
    let [a, b, c] = [(); 3].map(|_| admitted(&mut book, 0));
    let set = |v: Vec<PeerId>| v.into_iter().collect::<HashSet<PeerId>>();
    // Nobody known to be public (a LAN, or AutoNAT not done): everyone may own keys.
    assert_eq!(set(book.owners(me, 1)), set(vec![a, b, c, me]));
    // One member announced it is public: only it, and we are not among them.
    book.set_standing(&b, reach(Reach::Private), 1);
    book.set_standing(&a, reach(Reach::Public), 1);
    assert_eq!(book.owners(me, 2), vec![a]);
    assert_eq!(book.last_change_ms(), 1, "owners moved: the view changed");
    // We are public too: both of us.
    assert!(book.set_my_reach(Reach::Public, 3));
    assert!(!book.set_my_reach(Reach::Public, 4), "no change");
    assert_eq!(set(book.owners(me, 5)), set(vec![a, me]));
    // A public member on probation is not asked, but still draws the line: the
    // private members do not become owners because one public member is slow.
    for t in 0..3 {
        book.timed_out(&a, Duration::from_secs(1), 6 + t);
    }
    assert_eq!(book.owners(me, 10), vec![me]);
    assert!(book.set_my_reach(Reach::Private, 11));
    assert!(
        book.owners(me, 12).is_empty(),
        "nobody we may ask owns keys now"
    );
    // The public member left: everyone again.
    book.disconnected(&a, 13);
    assert_eq!(set(book.owners(me, 14)), set(vec![b, c, me]));
    assert_eq!(book.members_standing().len(), 2);
}

fn reach(reach: Reach) -> Standing {
    Standing {
        reach,
        direct_to_all: None,
    }
}

/// Reachability unknown, directly connected to every member or not.
fn direct(direct_to_all: bool) -> Standing {
    Standing {
        reach: Reach::Unknown,
        direct_to_all: Some(direct_to_all),
    }
}

#[test]
fn with_no_public_member_the_members_directly_connected_to_all_own_keys() {
    let mut book = PeerBook::default();
    let me = PeerId::random();
    let [a, b] = [(); 2].map(|_| admitted(&mut book, 0));
    let set = |v: Vec<PeerId>| v.into_iter().collect::<HashSet<PeerId>>();
    let reaches_all = direct(true);
    book.set_standing(&a, reaches_all, 1);
    assert_eq!(
        set(book.owners(me, 2)),
        set(vec![a, b, me]),
        "a reaches everyone directly; b and we did not find out yet"
    );
    let relayed = direct(false);
    book.set_standing(&b, relayed, 2);
    assert_eq!(
        set(book.owners(me, 2)),
        set(vec![a, me]),
        "b found it is not"
    );
    // We hold direct connections to both: we own too, and the members must hear it.
    book.told(&a, book.mine());
    book.told(&b, book.mine());
    assert!(book.set_my_direct(&set(vec![a, b]), 3));
    assert!(!book.set_my_direct(&set(vec![a, b]), 4), "no change");
    assert_eq!(set(book.owners(me, 5)), set(vec![a, me]));
    assert_eq!(set(book.untold()), set(vec![a, b]), "our hellos tell it");
    // A newcomer reached only through a relay: we keep our standing through its grace,
    // and lose it after.
    let c = admitted(&mut book, 10);
    let ours = set(vec![a, b]);
    assert!(!book.set_my_direct(&ours, 10 + DIRECT_GRACE_MS - 1));
    assert!(book.set_my_direct(&ours, 10 + DIRECT_GRACE_MS));
    assert_eq!(book.mine().direct_to_all, Some(false));
    assert_eq!(
        set(book.owners(me, 10 + DIRECT_GRACE_MS)),
        set(vec![a, c]),
        "c has not found out yet"
    );
    // Back to direct with all three; then a member lists one we never reached.
    assert!(book.set_my_direct(&set(vec![a, b, c]), 10 + DIRECT_GRACE_MS + 1));
    let t = 20_000;
    let far = PeerId::random();
    book.listed(far, t);
    assert!(!book.set_my_direct(&set(vec![a, b, c]), t + 1), "its grace");
    assert!(
        book.set_my_direct(&set(vec![a, b, c]), t + DIRECT_GRACE_MS),
        "a member we cannot reach at all"
    );
    // Nobody lists it any more (it left): it stops counting.
    let gone = t + LISTED_FOR_MS;
    assert!(book.set_my_direct(&set(vec![a, b, c]), gone));
    // A public member outranks them all.
    book.set_standing(&c, reach(Reach::Public), gone);
    assert_eq!(book.owners(me, gone + 1), vec![c]);
}

#[test]
fn a_member_s_new_addresses_are_passed_on_at_most_so_often() {
    let mut book = PeerBook::default();
    let a = admitted(&mut book, 0);
    assert!(book.may_reintroduce(&a, 10));
    assert!(!book.may_reintroduce(&a, 10 + REINTRODUCE_EVERY_MS - 1));
    assert!(book.may_reintroduce(&a, 10 + REINTRODUCE_EVERY_MS));
    assert!(!book.may_reintroduce(&PeerId::random(), 0), "members only");
}

#[test]
fn members_that_did_not_hear_our_reachability_are_told_again() {
    let mut book = PeerBook::default();
    let [a, b] = [(); 2].map(|_| admitted(&mut book, 0));
    let set = |v: Vec<PeerId>| v.into_iter().collect::<HashSet<PeerId>>();
    assert_eq!(set(book.untold()), set(vec![a, b]), "never told");
    book.told(&a, reach(Reach::Unknown));
    book.told(&b, reach(Reach::Unknown));
    assert!(book.untold().is_empty());
    assert!(book.set_my_reach(Reach::Private, 1));
    book.told(&a, reach(Reach::Private));
    assert_eq!(book.untold(), vec![b], "its hello was lost");
}

#[test]
fn finding_out_that_everyone_is_direct_moves_no_owner_and_sends_no_hello() {
    let mut book = PeerBook::default();
    let [a, b] = [(); 2].map(|_| admitted(&mut book, 0));
    book.told(&a, book.mine());
    book.told(&b, book.mine());
    let changed = book.last_change_ms();
    let reaches_all = direct(true);
    book.set_standing(&a, reaches_all, 5);
    let set = |v: Vec<PeerId>| v.into_iter().collect::<HashSet<PeerId>>();
    assert!(book.set_my_direct(&set(vec![a, b]), 6));
    assert_eq!(book.last_change_ms(), changed, "no owner moved");
    assert!(book.untold().is_empty(), "nobody needs to hear it");
    // Once a member says it is not, who is matters: both hear ours, owners move.
    let relayed = direct(false);
    book.set_standing(&b, relayed, 7);
    assert_eq!(book.last_change_ms(), 7);
    assert_eq!(set(book.untold()), set(vec![a, b]));
}

#[test]
fn a_member_that_left_is_not_one_we_cannot_reach() {
    let mut book = PeerBook::default();
    let [a, b] = [(); 2].map(|_| admitted(&mut book, 0));
    book.listed(a, 0);
    book.listed(b, 0);
    let set = |v: Vec<PeerId>| v.into_iter().collect::<HashSet<PeerId>>();
    assert!(book.set_my_direct(&set(vec![a, b]), 1));
    assert_eq!(book.mine().direct_to_all, Some(true));
    // b leaves long after we first heard of it: we are still direct to every member.
    let later = 60_000;
    book.disconnected(&b, later);
    assert!(!book.set_my_direct(&set(vec![a]), later + 1));
    assert_eq!(book.mine().direct_to_all, Some(true));
    // Nor when its disconnect was missed and the sweep forgot it.
    book.forget_all_but(&[]);
    let c = admitted(&mut book, later + 2);
    book.listed(a, later + 2);
    assert!(!book.set_my_direct(&set(vec![c]), later + 3));
    assert_eq!(
        book.mine().direct_to_all,
        Some(true),
        "a stale listing of a starts a new grace"
    );
}

#[test]
fn members_reached_only_through_public_relays_are_neither_asked_nor_owners() {
    let mut book = PeerBook::default();
    let me = PeerId::random();
    let near = admitted(&mut book, 0);
    let far = admitted(&mut book, 0);
    let all = |mut v: Vec<PeerId>| {
        v.sort();
        v
    };
    assert_eq!(all(book.owners(me, 0)), all(vec![near, far, me]));
    // The network found only public relays to it.
    book.public_relay_of(far, true);
    assert_eq!(all(book.owners(me, 0)), all(vec![near, me]));
    assert_eq!(book.candidates(0), vec![near]);
    assert_eq!(book.eldest(0, 5), vec![near]);
    assert_eq!(all(book.members()), all(vec![near, far]), "still a member");
    // The sweep found a direct connection (or one through a member relay).
    book.set_public_relay(&HashSet::new());
    assert_eq!(all(book.owners(me, 0)), all(vec![near, far, me]));
    book.set_public_relay(&HashSet::from([near]));
    assert_eq!(book.candidates(0), vec![far]);
    book.public_relay_of(near, false);
    assert_eq!(book.candidates(0).len(), 2);
    book.public_relay_of(near, true);
    book.disconnected(&near, 0);
    assert!(book.connected(near, 0));
    assert!(book.greeted(near, true, 0));
    assert!(
        book.candidates(0).contains(&near),
        "a new connection starts unmarked"
    );
}
