//! Every branch of every decision in the policy module.
#![allow(clippy::unwrap_used)]
use super::*;
use bytes::Bytes;
use ghmesh_protocol::{CanonicalRequest, Entry};

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn entry(body: &[u8], fetched: u64, fresh: u64) -> Entry {
    Entry::new(
        CanonicalRequest::get("/repos/o/r").unwrap(),
        h(&[("etag", "\"a\"")]),
        body.to_vec(),
        None,
        fetched,
        fresh,
        "me".into(),
    )
}

fn resp(status: u16, headers: &[(&str, &str)], body_len: usize) -> UpstreamResponse {
    UpstreamResponse {
        status,
        headers: h(headers),
        body: Bytes::from(vec![b'x'; body_len]),
    }
}

fn found() -> LookupReply {
    LookupReply::Found(Box::new(Announce::of(&entry(b"{}", 1, 2))))
}

#[test]
fn local_and_joined_status() {
    let e = entry(b"{}", 1, 2);
    assert_eq!(local_status(&e.meta, "me"), CacheStatus::Hit);
    assert_eq!(local_status(&e.meta, "someone else"), CacheStatus::Peer);
    assert_eq!(joined_status(CacheStatus::Miss), CacheStatus::Coalesced);
    assert_eq!(joined_status(CacheStatus::Peer), CacheStatus::Coalesced);
    assert_eq!(
        joined_status(CacheStatus::Revalidated),
        CacheStatus::Coalesced
    );
    assert_eq!(joined_status(CacheStatus::Stale), CacheStatus::Stale);
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
    assert_eq!(plan_peer_phase(&key, me, &[]), None, "alone: nobody to ask");
    let members: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
    let plan = plan_peer_phase(&key, me, &members).unwrap();
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
    let plan = plan_peer_phase(&owned, me, &members).unwrap();
    assert_eq!(plan.owner, None);
    assert_eq!(plan.others.len(), EXTRA_ASKS);
    // One other member that is not the owner of a key we own: asked without fetch.
    let one = [members[0]];
    let k = (0..200)
        .map(|i| CanonicalRequest::get(&format!("/j/{i}")).unwrap().key())
        .find(|k| placement::owner(k, [me, members[0]]) == Some(me))
        .unwrap();
    let plan = plan_peer_phase(&k, me, &one).unwrap();
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
    // The hung owner is on probation (not a candidate) and was asked: the next in
    // rank order, which every node that saw the same timeout picks too.
    let next = next_owner(&OwnerStep::NextOwner, &key, me, &[hung], &rest, 1);
    assert_eq!(
        next,
        crate::placement::owner(&key, rest.iter().copied().chain([me]))
    );
    assert_ne!(next, Some(hung));
    assert_eq!(
        next_owner(&OwnerStep::NextOwner, &key, me, &[hung], &rest, 0),
        None,
        "no asks left"
    );
    // Redirects: to us means fetch ourselves; to a member we may ask, once.
    assert_eq!(
        next_owner(&OwnerStep::Redirect(me), &key, me, &[hung], &rest, 1),
        Some(me)
    );
    let r = rest[0];
    assert_eq!(
        next_owner(&OwnerStep::Redirect(r), &key, me, &[hung], &rest, 1),
        Some(r)
    );
    assert_eq!(
        next_owner(&OwnerStep::Redirect(r), &key, me, &[hung, r], &rest, 1),
        None,
        "asked already"
    );
    let stranger = PeerId::random();
    assert_eq!(
        next_owner(&OwnerStep::Redirect(stranger), &key, me, &[hung], &rest, 1),
        None,
        "not a member we may ask"
    );
    assert_eq!(
        next_owner(&OwnerStep::AskOthers, &key, me, &[hung], &rest, 1),
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
fn upstream_actions() {
    let ok = resp(200, &[], 10);
    assert_eq!(after_upstream(Ok(&ok), false), UpstreamAction::Store);
    assert_eq!(after_upstream(Ok(&ok), true), UpstreamAction::Store);
    let huge = resp(200, &[], MAX_BODY_LEN + 1);
    assert_eq!(
        after_upstream(Ok(&huge), false),
        UpstreamAction::PassThrough
    );
    let nm = resp(304, &[], 0);
    assert_eq!(after_upstream(Ok(&nm), true), UpstreamAction::Refresh);
    assert_eq!(after_upstream(Ok(&nm), false), UpstreamAction::PassThrough);
    let down = resp(502, &[], 0);
    assert_eq!(after_upstream(Ok(&down), true), UpstreamAction::ServeStale);
    assert_eq!(
        after_upstream(Ok(&down), false),
        UpstreamAction::PassThrough
    );
    let limited = resp(403, &[("x-ratelimit-remaining", "0")], 0);
    assert_eq!(
        after_upstream(Ok(&limited), true),
        UpstreamAction::ServeStale
    );
    let missing = resp(404, &[], 0);
    assert_eq!(
        after_upstream(Ok(&missing), true),
        UpstreamAction::PassThrough
    );
    let err = UpstreamError::Timeout;
    assert_eq!(after_upstream(Err(&err), true), UpstreamAction::ServeStale);
    assert_eq!(after_upstream(Err(&err), false), UpstreamAction::Fail);
    let held = UpstreamError::Held(Box::new(limited.clone()));
    assert_eq!(after_upstream(Err(&held), true), UpstreamAction::ServeStale);
    assert_eq!(
        after_upstream(Err(&held), false),
        UpstreamAction::PassThrough
    );
    let mut secondary = resp(403, &[("x-ratelimit-remaining", "4000")], 0);
    secondary.body = Bytes::from_static(
        b"{\"message\":\"You have exceeded a secondary rate limit. Please wait.\"}",
    );
    assert_eq!(
        after_upstream(Ok(&secondary), true),
        UpstreamAction::ServeStale
    );
    assert_eq!(
        after_upstream(Ok(&secondary), false),
        UpstreamAction::PassThrough
    );
}

#[test]
fn not_modified_header_merge() {
    let held = h(&[
        ("content-type", "application/json"),
        ("etag", "\"old\""),
        ("cache-control", "max-age=60"),
    ]);
    let nm = h(&[
        ("etag", "\"new\""),
        ("cache-control", "max-age=120"),
        ("x-github-media-type", "github.v3"),
        ("x-ratelimit-remaining", "10"),
    ]);
    assert_eq!(
        merge_304_headers(&held, &nm),
        h(&[
            ("content-type", "application/json"),
            ("etag", "\"new\""),
            ("cache-control", "max-age=120"),
            ("x-github-media-type", "github.v3"),
        ]),
        "replaced in place, new kept headers added, others dropped"
    );
    assert_eq!(merge_304_headers(&held, &[]), held);
}

#[test]
fn refresh_checks_and_application() {
    let e = entry(b"{}", 1_000, 2_000);
    let r = |fetched, fresh| Refresh {
        key: e.meta.key(),
        cid: e.meta.cid.clone(),
        fetched_at_ms: fetched,
        fresh_until_ms: fresh,
    };
    let now = 10_000_000;
    assert_eq!(check_refresh(&r(now, now + 60_000)), Ok(()));
    assert_eq!(check_refresh(&r(now, now - 1)), Err(RefreshError::Inverted));
    // Long or from the future: capped when applied, never a reason to refuse a peer.
    assert_eq!(
        check_refresh(&r(now, now + ghmesh_protocol::entry::MAX_TTL_MS + 1)),
        Ok(())
    );
    let future = now + MAX_CLOCK_SKEW_MS + 1;
    assert_eq!(check_refresh(&r(future, future + 1)), Ok(()));
    assert!(refresh_applies(Some(&e.meta), &r(1_500, 3_000)));
    assert!(
        !refresh_applies(Some(&e.meta), &r(1_500, 2_000)),
        "not forward"
    );
    assert!(!refresh_applies(None, &r(1_500, 3_000)), "not held");
    let other = entry(b"[]", 1_000, 2_000);
    let mut wrong = r(1_500, 3_000);
    wrong.cid = other.meta.cid.clone();
    assert!(!refresh_applies(Some(&e.meta), &wrong), "other version");
}

#[test]
fn bodyless_announces() {
    let held = entry(b"{}", 1_000, 2_000);
    let newer_small = entry(b"[1]", 1_500, 3_000);
    assert_eq!(
        on_bodyless(Some(&held.meta), &newer_small.meta),
        BodylessAction::Prefetch
    );
    assert_eq!(
        on_bodyless(None, &newer_small.meta),
        BodylessAction::Prefetch
    );
    let mut newer_big = newer_small.meta.clone();
    newer_big.body_len = PREFETCH_MAX_BODY + 1;
    assert_eq!(on_bodyless(None, &newer_big), BodylessAction::Remember);
    let older = entry(b"[1]", 500, 3_000);
    assert_eq!(
        on_bodyless(Some(&held.meta), &older.meta),
        BodylessAction::Ignore
    );
    let same = entry(b"{}", 1_200, 4_000);
    assert_eq!(
        on_bodyless(Some(&held.meta), &same.meta),
        BodylessAction::Ignore,
        "same body: a freshness extension, nothing to pull"
    );
}

#[test]
fn writes_invalidate_their_target_its_collection_and_location() {
    assert_eq!(
        invalidated_paths("POST", "/repos/o/r/issues/3/comments", 201, None),
        vec!["/repos/o/r/issues/3/comments", "/repos/o/r/issues/3"]
    );
    assert_eq!(
        invalidated_paths(
            "PATCH",
            "/repos/o/r/issues/3/",
            200,
            Some("/repos/o/r/issues/3/comments/9")
        ),
        vec![
            "/repos/o/r/issues/3",
            "/repos/o/r/issues",
            "/repos/o/r/issues/3/comments/9"
        ]
    );
    assert_eq!(
        invalidated_paths("DELETE", "/gists/abc", 204, None),
        vec!["/gists/abc"],
        "never a top-level collection"
    );
    assert!(invalidated_paths("GET", "/repos/o/r", 200, None).is_empty());
    assert!(invalidated_paths("POST", "/repos/o/r/issues", 422, None).is_empty());
    assert_eq!(
        invalidated_paths("POST", "/repos/o/r/issues", 201, Some("/repos/%2e%2e/x")),
        vec!["/repos/o/r/issues", "/repos/o/r"],
        "an unsafe Location is dropped"
    );
}

#[test]
fn invalidations_from_peers_and_what_they_touch() {
    let now = 10_000_000;
    let inv = |paths: &[&str], at| Invalidate {
        paths: paths.iter().map(|p| p.to_string()).collect(),
        at_ms: at,
    };
    assert_eq!(check_invalidate(&inv(&["/repos/o/r"], now), now), Ok(()));
    assert_eq!(
        check_invalidate(&inv(&[], now), now),
        Err(InvalidateError::BadPaths)
    );
    assert_eq!(
        check_invalidate(&inv(&["repos/o/r"], now), now),
        Err(InvalidateError::BadPaths)
    );
    assert_eq!(
        check_invalidate(&inv(&["/repos/%2e%2e"], now), now),
        Err(InvalidateError::BadPaths)
    );
    let many: Vec<&str> = vec!["/a/b"; MAX_INVALIDATED_PATHS + 1];
    assert_eq!(
        check_invalidate(&inv(&many, now), now),
        Err(InvalidateError::BadPaths)
    );
    assert_eq!(
        check_invalidate(&inv(&["/a/b"], now + MAX_CLOCK_SKEW_MS + 1), now),
        Err(InvalidateError::FromFuture)
    );

    let e = entry(b"{}", 1_000, 5_000); // GET /repos/o/r
    let paths = vec!["/repos/o/r".to_string()];
    assert!(invalidates(&e.meta, &paths, 2_000));
    assert!(
        !invalidates(&e.meta, &paths, 500),
        "fetched after the write"
    );
    assert!(!invalidates(&e.meta, &paths, 6_000), "already stale");
    assert!(
        !invalidates(&e.meta, &["/repos/o".to_string()], 2_000),
        "another path"
    );
}

#[test]
fn copies_older_than_a_write_are_refused() {
    assert!(predates_write(1_000, Some(2_000)));
    assert!(predates_write(2_000, Some(2_000)));
    assert!(!predates_write(2_001, Some(2_000)));
    assert!(!predates_write(1_000, None));
}

#[test]
fn a_request_may_accept_older_copies() {
    let e = entry(b"{}", 1_000, 2_000);
    assert!(servable_locally(&e.meta, 1_500, None), "fresh");
    assert!(!servable_locally(&e.meta, 2_500, None), "expired");
    assert!(
        servable_locally(&e.meta, 2_500, Some(3_000)),
        "fetched 1.5 s ago, 3 s accepted"
    );
    assert!(
        !servable_locally(&e.meta, 4_500, Some(3_000)),
        "fetched 3.5 s ago"
    );
    assert!(
        servable_locally(&e.meta, 4_000, Some(3_000)),
        "fetched exactly 3 s ago: within"
    );
}

#[test]
fn a_requests_max_age_also_refuses_fresh_copies_that_are_older() {
    // Fresh for 10 minutes after it was fetched at 1 s.
    let e = entry(b"{}", 1_000, 601_000);
    let five_minutes_later = 301_000;
    assert!(servable_locally(&e.meta, five_minutes_later, None), "fresh");
    assert!(
        !servable_locally(&e.meta, five_minutes_later, Some(10_000)),
        "fresh, but 5 minutes old where 10 s was asked for"
    );
    assert!(
        servable_locally(&e.meta, five_minutes_later, Some(3_600_000)),
        "an hour accepted"
    );
    assert!(
        !servable_locally(&e.meta, five_minutes_later, Some(0)),
        "no age accepted: always asks"
    );
    assert!(
        servable_locally(&e.meta, 500, Some(0)),
        "dated after now (clock skew): age 0"
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
