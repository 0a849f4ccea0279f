//! Every branch of every decision in the policy module.
use super::*;
use bytes::Bytes;
use ghmesh_protocol::{CanonicalRequest, Entry};

pub(super) fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

pub(super) fn entry(body: &[u8], fetched: u64, fresh: u64) -> Entry {
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

fn json(status: u16, body: &str) -> UpstreamResponse {
    UpstreamResponse {
        status,
        headers: Vec::new(),
        body: Bytes::from(body.to_string()),
    }
}

#[test]
fn graphql_answers_are_stored_only_whole() {
    use upstream::{graphql_errors, GraphqlErrors};
    let whole = json(200, r#"{"data":{"viewer":{"login":"a"}}}"#);
    let empty_errors = json(200, r#"{"data":{},"errors":[]}"#);
    let partial = json(
        200,
        r#"{"data":{"a":null},"errors":[{"type":"NOT_FOUND","path":["a"]}]}"#,
    );
    let invalid = json(200, r#"{"errors":[{"message":"Parse error"}]}"#);
    let limited = json(
        200,
        r#"{"errors":[{"type":"RATE_LIMITED","message":"spent"}]}"#,
    );
    let not_json = json(200, "<html>");
    assert_eq!(graphql_errors(&whole.body), GraphqlErrors::None);
    assert_eq!(graphql_errors(&empty_errors.body), GraphqlErrors::None);
    assert_eq!(graphql_errors(&partial.body), GraphqlErrors::Other);
    assert_eq!(graphql_errors(&limited.body), GraphqlErrors::RateLimited);
    assert_eq!(graphql_errors(&not_json.body), GraphqlErrors::Other);
    for (r, copy, action) in [
        (&whole, false, UpstreamAction::Store),
        (&partial, false, UpstreamAction::PassThrough),
        (&partial, true, UpstreamAction::PassThrough),
        (&invalid, true, UpstreamAction::PassThrough),
        (&not_json, false, UpstreamAction::PassThrough),
        (&limited, true, UpstreamAction::ServeStale),
        (&limited, false, UpstreamAction::PassThrough),
    ] {
        assert_eq!(after_upstream(Ok(r), copy, true), action, "{r:?} {copy}");
    }
    // The same bodies from REST are REST's business: a 200 is stored.
    assert_eq!(
        after_upstream(Ok(&partial), false, false),
        UpstreamAction::Store
    );
}

#[test]
fn upstream_actions() {
    let ok = resp(200, &[], 10);
    assert_eq!(after_upstream(Ok(&ok), false, false), UpstreamAction::Store);
    assert_eq!(after_upstream(Ok(&ok), true, false), UpstreamAction::Store);
    let huge = resp(200, &[], MAX_BODY_LEN + 1);
    assert_eq!(
        after_upstream(Ok(&huge), false, false),
        UpstreamAction::PassThrough
    );
    let nm = resp(304, &[], 0);
    assert_eq!(
        after_upstream(Ok(&nm), true, false),
        UpstreamAction::Refresh
    );
    assert_eq!(
        after_upstream(Ok(&nm), false, false),
        UpstreamAction::PassThrough
    );
    let down = resp(502, &[], 0);
    assert_eq!(
        after_upstream(Ok(&down), true, false),
        UpstreamAction::ServeStale
    );
    assert_eq!(
        after_upstream(Ok(&down), false, false),
        UpstreamAction::PassThrough
    );
    let limited = resp(403, &[("x-ratelimit-remaining", "0")], 0);
    assert_eq!(
        after_upstream(Ok(&limited), true, false),
        UpstreamAction::ServeStale
    );
    let missing = resp(404, &[], 0);
    assert_eq!(
        after_upstream(Ok(&missing), true, false),
        UpstreamAction::PassThrough
    );
    let err = UpstreamError::Timeout;
    assert_eq!(
        after_upstream(Err(&err), true, false),
        UpstreamAction::ServeStale
    );
    assert_eq!(
        after_upstream(Err(&err), false, false),
        UpstreamAction::Fail
    );
    let held = UpstreamError::Held(Box::new(limited.clone()));
    assert_eq!(
        after_upstream(Err(&held), true, false),
        UpstreamAction::ServeStale
    );
    assert_eq!(
        after_upstream(Err(&held), false, false),
        UpstreamAction::PassThrough
    );
    let mut secondary = resp(403, &[("x-ratelimit-remaining", "4000")], 0);
    secondary.body = Bytes::from_static(
        b"{\"message\":\"You have exceeded a secondary rate limit. Please wait.\"}",
    );
    assert_eq!(
        after_upstream(Ok(&secondary), true, false),
        UpstreamAction::ServeStale
    );
    assert_eq!(
        after_upstream(Ok(&secondary), false, false),
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
