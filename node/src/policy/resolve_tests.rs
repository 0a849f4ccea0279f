//! The peer phase's state machine, scenario by scenario: each test scripts the inputs
//! a driver would feed and checks every step the machine asks for.
use std::time::Duration;

use ghmesh_protocol::{Announce, CacheKey, CanonicalRequest, LookupReply};
use libp2p::PeerId;

use super::*;
use crate::placement;
use crate::policy::tests::entry;

const MS: Duration = Duration::from_millis(1);
/// The wall clock of the scripts: long after every node started, so nobody is
/// "starting" unless a test says so.
const WALL: u64 = 10_000_000;

fn timers() -> Timers {
    Timers {
        lookup: 1000 * MS,
        body_fetch: 5000 * MS,
        pending_wait: 3000 * MS,
        repoll_first: 100 * MS,
        repoll_max: 400 * MS,
        repoll_lookup_min: 500 * MS,
        first_member: 1000 * MS,
        budget: BudgetRule {
            initial: 1000 * MS,
            floor: 50 * MS,
            ceiling: 1000 * MS,
        },
    }
}

/// A node `me` whose book admits `members` (long ago).
struct Fleet {
    me: PeerId,
    members: Vec<PeerId>,
    book: PeerBook,
    holder: Option<PeerId>,
}

impl Fleet {
    fn of(n: usize) -> Self {
        let mut book = PeerBook::default();
        let members: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        for m in &members {
            book.connected(*m, 0);
            book.greeted(*m, true, 0);
        }
        Self {
            me: PeerId::random(),
            members,
            book,
            holder: None,
        }
    }

    fn view(&self, now: Duration) -> View<'_> {
        View {
            now,
            now_ms: WALL + now.as_millis() as u64,
            book: &self.book,
            lease_holder: self.holder,
        }
    }

    fn everyone(&self) -> Vec<PeerId> {
        self.members.iter().copied().chain([self.me]).collect()
    }

    /// A key whose owner in the full view is `owner`.
    fn key_owned_by(&self, owner: PeerId) -> CacheKey {
        (0..10_000)
            .map(|i| CanonicalRequest::get(&format!("/k/{i}")).unwrap().key())
            .find(|k| placement::owner(k, self.everyone()) == Some(owner))
            .unwrap()
    }

    fn start(&self, key: CacheKey, ask: Ask) -> Start {
        Start {
            key,
            me: self.me,
            ask,
            node_started: Duration::ZERO,
            node_started_ms: 0,
            has_bootstrap: false,
            bodyless_from: None,
            timers: timers(),
        }
    }
}

fn found() -> LookupReply {
    LookupReply::Found(Box::new(Announce::of(&entry(b"{}", 1, 2))))
}

fn is_ask(step: &Step, to: PeerId, what: Ask) -> bool {
    matches!(step, Step::Ask { peer, ask, .. } if *peer == to && *ask == what)
}

#[test]
fn the_owners_entry_is_accepted_and_served_as_a_peers() {
    let f = Fleet::of(3);
    let owner = f.members[0];
    let key = f.key_owned_by(owner);
    let (mut r, step) = Resolution::start(f.start(key, Ask::FETCH), &f.view(Duration::ZERO));
    assert!(is_ask(&step, owner, Ask::FETCH), "{step:?}");
    let step = r.handle(Input::Reply(Some(found())), &f.view(10 * MS));
    assert!(matches!(step, Step::Accept { from, .. } if from == owner));
    assert_eq!(
        r.handle(Input::Accepted(true), &f.view(11 * MS)),
        Step::Done(End::Peer)
    );
    assert_eq!(r.end(), Some(End::Peer));
}

#[test]
fn a_pending_owner_is_waited_for_and_re_polled_with_backoff_until_its_entry_arrives() {
    let f = Fleet::of(3);
    let owner = f.members[0];
    let key = f.key_owned_by(owner);
    let (mut r, _) = Resolution::start(f.start(key, Ask::FETCH), &f.view(Duration::ZERO));
    let step = r.handle(Input::Reply(Some(LookupReply::Pending)), &f.view(5 * MS));
    assert_eq!(
        step,
        Step::Wait {
            peer: owner,
            until: 105 * MS
        },
        "first re-poll after repoll_first"
    );
    let step = r.handle(Input::Tick, &f.view(105 * MS));
    assert!(
        matches!(step, Step::Ask { peer, ask: Ask::FETCH, budget, repoll: true } if peer == owner && budget == 1000 * MS),
        "re-polled as first asked, with max(lookup, repoll_lookup_min): {step:?}"
    );
    let step = r.handle(Input::Reply(Some(LookupReply::Pending)), &f.view(110 * MS));
    assert_eq!(
        step,
        Step::Wait {
            peer: owner,
            until: 310 * MS
        },
        "doubled"
    );
    assert_eq!(
        r.handle(Input::Arrived, &f.view(200 * MS)),
        Step::Done(End::Coalesced)
    );
}

#[test]
fn a_wait_that_runs_out_goes_on_to_the_others_and_then_upstream() {
    let f = Fleet::of(4);
    let owner = f.members[0];
    let key = f.key_owned_by(owner);
    let (mut r, _) = Resolution::start(f.start(key, Ask::FETCH), &f.view(Duration::ZERO));
    let mut step = r.handle(Input::Reply(Some(LookupReply::Pending)), &f.view(5 * MS));
    let mut now = 5 * MS;
    let mut polls = 0;
    // Silence from the owner: re-polls until the pending wait is over.
    while let Step::Wait { until, .. } = step {
        now = until;
        step = r.handle(Input::Tick, &f.view(now));
        if let Step::Ask { repoll: true, .. } = step {
            polls += 1;
            step = r.handle(Input::Reply(None), &f.view(now));
        }
    }
    assert!(now >= 3005 * MS, "waited the pending wait: {now:?}");
    assert!(
        (7..=10).contains(&polls),
        "100, 200, then every 400 ms: {polls}"
    );
    // The phase's own budget is long spent: nobody else is asked.
    assert_eq!(step, Step::Done(End::Upstream));
}

#[test]
fn a_silent_owner_with_a_lease_asked_gets_it_handed_back_and_the_next_owner_is_asked() {
    let f = Fleet::of(3);
    let owner = f.members[0];
    let key = f.key_owned_by(owner);
    // The next in rank, which may be us.
    let next = placement::ranked(&key, f.everyone())[1];
    let (mut r, step) = Resolution::start(f.start(key, Ask::LEASE), &f.view(Duration::ZERO));
    assert!(is_ask(&step, owner, Ask::LEASE));
    assert_eq!(
        r.handle(Input::Reply(None), &f.view(1000 * MS)),
        Step::Release { owner }
    );
    let step = r.handle(Input::Released, &f.view(1000 * MS));
    if next == f.me {
        assert_eq!(step, Step::Done(End::Upstream), "we are next: we fetch");
    } else {
        assert!(is_ask(&step, next, Ask::LEASE), "{step:?}");
        assert_eq!(
            r.handle(Input::Reply(Some(LookupReply::Lease)), &f.view(1001 * MS)),
            Step::Done(End::Leased(next))
        );
    }
}

#[test]
fn a_redirect_to_us_means_we_fetch_and_is_counted() {
    let f = Fleet::of(3);
    let owner = f.members[0];
    let key = f.key_owned_by(owner);
    let (mut r, _) = Resolution::start(f.start(key, Ask::FETCH), &f.view(Duration::ZERO));
    let to_me = LookupReply::Redirect(f.me.to_bytes().into());
    assert_eq!(
        r.handle(Input::Reply(Some(to_me)), &f.view(3 * MS)),
        Step::Done(End::Upstream)
    );
    assert_eq!(r.redirects, 1);
}

#[test]
fn owning_a_key_leased_to_a_member_means_waiting_for_that_member() {
    let mut f = Fleet::of(3);
    let key = f.key_owned_by(f.me);
    let holder = f.members[1];
    f.holder = Some(holder);
    let (mut r, step) = Resolution::start(f.start(key, Ask::FETCH), &f.view(Duration::ZERO));
    assert_eq!(
        step,
        Step::Wait {
            peer: holder,
            until: 100 * MS
        }
    );
    let step = r.handle(Input::Tick, &f.view(100 * MS));
    assert!(
        is_ask(&step, holder, Ask::HAVE),
        "only whether it has it: {step:?}"
    );
    // It failed and passed the lease on: to us.
    assert_eq!(
        r.handle(Input::Reply(Some(LookupReply::Lease)), &f.view(101 * MS)),
        Step::Done(End::Leased(holder))
    );
}

#[test]
fn owning_a_key_nobody_fetches_asks_the_others_then_waits_for_one_that_is_fetching() {
    let f = Fleet::of(4);
    let key = f.key_owned_by(f.me);
    let (mut r, step) = Resolution::start(f.start(key, Ask::FETCH), &f.view(Duration::ZERO));
    let Step::AskAll { peers, budget } = step else {
        panic!("{step:?}")
    };
    assert_eq!(peers.len(), EXTRA_ASKS);
    assert_eq!(budget, 1000 * MS);
    let replies = vec![
        (peers[0], Some(LookupReply::Pending)),
        (peers[1], Some(found())),
    ];
    let step = r.handle(Input::Replies(replies), &f.view(20 * MS));
    assert!(matches!(step, Step::Accept { from, .. } if from == peers[1]));
    // The offered copy did not check out: wait for the one that is fetching, asking
    // it to fetch for us as the owner would have been asked.
    let step = r.handle(Input::Accepted(false), &f.view(21 * MS));
    assert_eq!(
        step,
        Step::Wait {
            peer: peers[0],
            until: 121 * MS
        }
    );
    let step = r.handle(Input::Tick, &f.view(121 * MS));
    assert!(is_ask(&step, peers[0], Ask::FETCH), "{step:?}");
    assert_eq!(
        r.handle(Input::Reply(Some(LookupReply::NotFound)), &f.view(122 * MS)),
        Step::Done(End::Upstream),
        "it gave up: so do we"
    );
}

#[test]
fn a_node_just_started_with_a_bootstrap_waits_for_its_first_member() {
    let mut f = Fleet::of(0);
    let key = CanonicalRequest::get("/x").unwrap().key();
    let mut start = f.start(key, Ask::FETCH);
    start.has_bootstrap = true;
    let (mut r, step) = Resolution::start(start.clone(), &f.view(Duration::ZERO));
    assert_eq!(step, Step::AwaitMember { until: 1000 * MS });
    // An input it did not ask for changes nothing.
    assert_eq!(
        r.handle(Input::Arrived, &f.view(1 * MS)),
        Step::AwaitMember { until: 1000 * MS }
    );
    let member = PeerId::random();
    f.book.connected(member, WALL);
    f.book.greeted(member, true, WALL);
    f.members.push(member);
    let step = r.handle(Input::Admitted, &f.view(300 * MS));
    assert!(
        matches!(step, Step::Ask { .. } | Step::AskAll { .. }),
        "with a member, the miss goes on: {step:?}"
    );
    // Past its window, a lone node reads alone at once.
    let alone = Fleet::of(0);
    let (_, step) = Resolution::start(start, &alone.view(1000 * MS));
    assert_eq!(step, Step::Done(End::Upstream));
}

#[test]
fn a_fresh_bodyless_announce_is_pulled_first_and_served_as_a_peers() {
    let f = Fleet::of(2);
    let key = f.key_owned_by(f.members[0]);
    let mut start = f.start(key, Ask::FETCH);
    start.bodyless_from = Some(f.members[1]);
    let (mut r, step) = Resolution::start(start.clone(), &f.view(Duration::ZERO));
    assert_eq!(
        step,
        Step::FetchBody {
            from: f.members[1],
            budget: 5000 * MS
        }
    );
    assert_eq!(
        r.handle(Input::Body(true), &f.view(9 * MS)),
        Step::Done(End::Peer)
    );
    // A failed pull goes on to the owner as any miss does.
    let (mut r, _) = Resolution::start(start, &f.view(Duration::ZERO));
    let step = r.handle(Input::Body(false), &f.view(9 * MS));
    assert!(is_ask(&step, f.members[0], Ask::FETCH), "{step:?}");
}

#[test]
fn a_node_whose_view_is_still_filling_in_settles_before_claiming_a_key() {
    let mut f = Fleet::of(2);
    let key = f.key_owned_by(f.me);
    // A greeting is under way, just after the node's start.
    f.book.connected(PeerId::random(), WALL);
    let mut start = f.start(key, Ask::FETCH);
    start.node_started_ms = WALL;
    let (mut r, step) = Resolution::start(start, &f.view(Duration::ZERO));
    assert_eq!(step, Step::Sleep { until: 20 * MS });
    let mut now = Duration::ZERO;
    let mut step = step;
    while let Step::Sleep { until } = step {
        now = until;
        step = r.handle(Input::Tick, &f.view(now));
    }
    assert_eq!(now, 500 * MS, "at most half the budget");
    assert!(matches!(step, Step::AskAll { .. }), "{step:?}");
}

#[test]
fn a_silent_owner_that_another_member_names_is_asked_again_once() {
    let f = Fleet::of(4);
    let owner = f.members[0];
    let key = f.key_owned_by(owner);
    let next = placement::ranked(&key, f.everyone())[1];
    if next == f.me {
        return; // we would fetch at once: nobody to redirect us
    }
    let (mut r, _) = Resolution::start(f.start(key, Ask::FETCH), &f.view(Duration::ZERO));
    let step = r.handle(Input::Reply(None), &f.view(1000 * MS));
    assert!(is_ask(&step, next, Ask::FETCH), "{step:?}");
    let back = LookupReply::Redirect(owner.to_bytes().into());
    let step = r.handle(Input::Reply(Some(back.clone())), &f.view(1002 * MS));
    assert!(
        is_ask(&step, owner, Ask::FETCH),
        "our lookup or its answer was lost: {step:?}"
    );
    // Silent again: no third time; the others are asked, with what is left (nothing).
    let step = r.handle(Input::Reply(None), &f.view(2002 * MS));
    assert_eq!(step, Step::Done(End::Upstream));
    assert_eq!(r.redirects, 1);
}
