//! Every branch of the peer phase's decisions: whom to ask, what follows each
//! reply, how to answer a lookup, when a starting node waits.
use super::tests::entry;
use super::*;
use ghmesh_protocol::CanonicalRequest;

fn found() -> LookupReply {
    LookupReply::Found(Box::new(Announce::of(&entry(b"{}", 1, 2))))
}

#[test]
fn a_starting_node_also_asks_its_eldest_members() {
    let [a, b, c, d, e] = [(); 5].map(|_| PeerId::random());
    assert_eq!(
        others_while_starting(&[a, b], &[c, a, d, e], Some(c)),
        vec![a, b, d, e],
        "not the owner, no one twice, at most EXTRA_ASKS more"
    );
    assert_eq!(others_while_starting(&[], &[c], None), vec![c]);
    assert_eq!(others_while_starting(&[a], &[], None), vec![a]);
}

#[test]
fn peer_plan() {
    let key = CanonicalRequest::get("/x").unwrap().key();
    let me = PeerId::random();
    assert_eq!(
        plan_peer_phase(&key, me, &[me], &[]),
        None,
        "alone: nobody to ask"
    );
    let members: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
    let with_me: Vec<PeerId> = members.iter().copied().chain([me]).collect();
    let plan = plan_peer_phase(&key, me, &with_me, &members).unwrap();
    let ranked = placement::ranked(&key, members.iter().copied().chain([me]));
    let expected_owner = (ranked[0] != me).then_some(ranked[0]);
    assert_eq!(plan.owner, expected_owner);
    assert_eq!(plan.others.len(), EXTRA_ASKS);
    assert!(!plan.others.contains(&me));
    assert!(plan.owner.is_none_or(|o| !plan.others.contains(&o)));
    // We own some key among many: then only others are asked.
    let owned = (0..200)
        .map(|i| CanonicalRequest::get(&format!("/k/{i}")).unwrap().key())
        .find(|k| placement::owner(k, members.iter().copied().chain([me])) == Some(me))
        .unwrap();
    let plan = plan_peer_phase(&owned, me, &with_me, &members).unwrap();
    assert_eq!(plan.owner, None);
    assert_eq!(plan.others.len(), EXTRA_ASKS);
    // One other member that is not the owner of a key we own: asked without fetch.
    let one = [members[0]];
    let k = (0..200)
        .map(|i| CanonicalRequest::get(&format!("/j/{i}")).unwrap().key())
        .find(|k| placement::owner(k, [me, members[0]]) == Some(me))
        .unwrap();
    let plan = plan_peer_phase(&k, me, &[me, members[0]], &one).unwrap();
    assert_eq!(plan.owner, None);
    assert_eq!(plan.others, vec![members[0]]);
}

#[test]
fn owner_reply_steps() {
    assert!(matches!(
        after_owner_reply(Some(found())),
        OwnerStep::Accept(_)
    ));
    assert_eq!(
        after_owner_reply(Some(LookupReply::Pending)),
        OwnerStep::Wait
    );
    assert_eq!(
        after_owner_reply(Some(LookupReply::NotFound)),
        OwnerStep::AskOthers
    );
    assert_eq!(
        after_owner_reply(Some(LookupReply::Busy)),
        OwnerStep::AskOthers
    );
    assert_eq!(after_owner_reply(None), OwnerStep::NextOwner);
    let p = PeerId::random();
    assert_eq!(
        after_owner_reply(Some(LookupReply::Redirect(p.to_bytes().into()))),
        OwnerStep::Redirect(p)
    );
    assert_eq!(
        after_owner_reply(Some(LookupReply::Redirect(vec![1, 2, 3].into()))),
        OwnerStep::AskOthers,
        "garbage names nobody"
    );
}

#[test]
fn next_owner_after_a_timeout_or_a_redirect() {
    let key = CanonicalRequest::get("/repos/o/r").unwrap().key();
    let me = PeerId::random();
    let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
    // The best-ranked member (we may rank above it; then it is the first we ask after
    // ourselves, which is the same situation for this rule).
    let hung = crate::placement::ranked(&key, peers.iter().copied())[0];
    let rest: Vec<PeerId> = peers.iter().copied().filter(|p| *p != hung).collect();
    let owners: Vec<PeerId> = rest.iter().copied().chain([me]).collect();
    // The hung owner is on probation (not a candidate) and was asked: the next in
    // rank order, which every node that saw the same timeout picks too.
    let next = next_owner(&OwnerStep::NextOwner, &key, me, &[hung], &owners, 1);
    assert_eq!(
        next,
        crate::placement::owner(&key, rest.iter().copied().chain([me]))
    );
    assert_ne!(next, Some(hung));
    assert_eq!(
        next_owner(&OwnerStep::NextOwner, &key, me, &[hung], &owners, 0),
        None,
        "no asks left"
    );
    // Redirects: to us means fetch ourselves; to a member we may ask, once.
    assert_eq!(
        next_owner(&OwnerStep::Redirect(me), &key, me, &[hung], &owners, 1),
        Some(me)
    );
    let r = rest[0];
    assert_eq!(
        next_owner(&OwnerStep::Redirect(r), &key, me, &[hung], &owners, 1),
        Some(r)
    );
    assert_eq!(
        next_owner(&OwnerStep::Redirect(r), &key, me, &[hung, r], &owners, 1),
        None,
        "asked already"
    );
    let stranger = PeerId::random();
    assert_eq!(
        next_owner(
            &OwnerStep::Redirect(stranger),
            &key,
            me,
            &[hung],
            &owners,
            1
        ),
        None,
        "not a member we may ask"
    );
    assert_eq!(
        next_owner(&OwnerStep::AskOthers, &key, me, &[hung], &owners, 1),
        None
    );
}

#[test]
fn repoll_steps_and_backoff() {
    assert!(matches!(after_repoll(Some(found())), RepollStep::Accept(_)));
    assert_eq!(
        after_repoll(Some(LookupReply::Pending)),
        RepollStep::KeepWaiting
    );
    assert_eq!(after_repoll(None), RepollStep::KeepWaiting);
    assert_eq!(
        after_repoll(Some(LookupReply::NotFound)),
        RepollStep::GiveUp
    );
    assert_eq!(after_repoll(Some(LookupReply::Busy)), RepollStep::GiveUp);
    let max = Duration::from_secs(1);
    assert_eq!(
        next_repoll(Duration::from_millis(50), max),
        Duration::from_millis(100)
    );
    assert_eq!(next_repoll(Duration::from_millis(800), max), max);
}

#[test]
fn lookup_answers() {
    let base = LookupView {
        shareable: true,
        fresh_local: false,
        in_flight: false,
        fetching: false,
        fetch_asked: true,
        lease_asked: false,
        leased_to_other: false,
        failed_recently: false,
        mode: MeshMode::Mesh,
        room: true,
        owner: None,
    };
    assert_eq!(answer_lookup(base), LookupAnswer::StartFetch);
    let other = PeerId::random();
    let not_ours = LookupView {
        owner: Some(other),
        ..base
    };
    assert_eq!(
        answer_lookup(not_ours),
        LookupAnswer::Redirect(other),
        "never fetch a key another member owns"
    );
    assert_eq!(
        answer_lookup(LookupView {
            fresh_local: true,
            ..not_ours
        }),
        LookupAnswer::Found,
        "what we hold we give, owner or not"
    );
    assert_eq!(
        answer_lookup(LookupView {
            in_flight: true,
            ..not_ours
        }),
        LookupAnswer::Pending
    );
    let fresh = LookupView {
        fresh_local: true,
        in_flight: true,
        ..base
    };
    assert_eq!(answer_lookup(fresh), LookupAnswer::Found);
    let busy = LookupView {
        in_flight: true,
        ..base
    };
    assert_eq!(answer_lookup(busy), LookupAnswer::Pending);
    let not_asked = LookupView {
        fetch_asked: false,
        ..base
    };
    assert_eq!(answer_lookup(not_asked), LookupAnswer::NotFound);
    let asking_peers_too = LookupView {
        in_flight: true,
        ..not_asked
    };
    assert_eq!(
        answer_lookup(asking_peers_too),
        LookupAnswer::NotFound,
        "a resolution still in its peer phase is no promise to a mere asker"
    );
    let fetching = LookupView {
        fetching: true,
        ..asking_peers_too
    };
    assert_eq!(answer_lookup(fetching), LookupAnswer::Pending);
    let broadcast = LookupView {
        mode: MeshMode::Broadcast,
        ..base
    };
    assert_eq!(answer_lookup(broadcast), LookupAnswer::NotFound);
    let full = LookupView {
        room: false,
        ..base
    };
    assert_eq!(answer_lookup(full), LookupAnswer::Busy);
    let failed = LookupView {
        failed_recently: true,
        ..base
    };
    assert_eq!(
        answer_lookup(failed),
        LookupAnswer::NotFound,
        "a re-poll does not restart a fetch that just failed"
    );
    assert_eq!(
        answer_lookup(LookupView {
            in_flight: true,
            ..failed
        }),
        LookupAnswer::Pending,
        "one under way is still waited for"
    );
    let per_identity = LookupView {
        shareable: false,
        fresh_local: true,
        in_flight: true,
        ..base
    };
    assert_eq!(
        answer_lookup(per_identity),
        LookupAnswer::NotFound,
        "never answered, never fetched for another node"
    );
}

#[test]
fn only_a_starting_node_with_a_changing_view_waits() {
    let start = 1_000_000;
    // Greeting a peer right after start: wait.
    assert!(view_settling(start + 100, start, start + 50, 1));
    // A member admitted 100 ms ago: wait; 300 ms ago: settled.
    assert!(view_settling(start + 200, start, start + 100, 0));
    assert!(!view_settling(start + 400, start, start + 100, 0));
    // Long after start nothing waits, whatever changes.
    let later = start + STARTUP_SETTLE_MS;
    assert!(!view_settling(later, start, later, 3));
    // Alone: nothing ever changed, nothing to wait for.
    assert!(!view_settling(start + 10, start, 0, 0));
}

#[test]
fn only_a_node_just_started_with_somewhere_to_look_waits_for_its_first_member() {
    let wait = 1_000;
    // Just started, a bootstrap address (or a greeting) and nobody yet: wait.
    assert!(awaiting_first_member(0, wait, 0, true));
    assert!(awaiting_first_member(wait - 1, wait, 0, true));
    // The wait is bounded from the start: a dead bootstrap costs it once.
    assert!(!awaiting_first_member(wait, wait, 0, true));
    // A member is enough: the rest is `view_settling`'s.
    assert!(!awaiting_first_member(0, wait, 1, true));
    // The fleet's first node, or one with nowhere to look, reads at once.
    assert!(!awaiting_first_member(0, wait, 0, false));
}

#[test]
fn behind_nat_we_ask_the_public_owner_and_never_own_a_key() {
    let me = PeerId::random();
    let public = PeerId::random();
    let private: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
    let members: Vec<PeerId> = private.iter().copied().chain([public]).collect();
    for i in 0..50 {
        let key = CanonicalRequest::get(&format!("/k/{i}")).unwrap().key();
        let plan = plan_peer_phase(&key, me, &[public], &members).unwrap();
        assert_eq!(plan.owner, Some(public));
        // The others asked whether they hold it are any members, not only owners.
        assert!(plan.others.iter().all(|p| *p != me && *p != public));
        assert_eq!(plan.others.len(), EXTRA_ASKS.min(private.len()));
        // The public owner did not answer: no other owner, on to the others.
        assert_eq!(
            next_owner(&OwnerStep::NextOwner, &key, me, &[public], &[public], 2),
            None
        );
    }
}
