//! The read path's decisions, as plain functions of their inputs and `now`.
//!
//! Async code in [`crate::node`] gathers the inputs (store, member view, in-flight
//! table, a peer's reply, upstream's answer), calls one of these, and carries out what
//! it returns. Nothing here locks, sleeps, seals or counts, so every branch has a unit
//! test below, and a simulator can drive the same rules with simulated time.

use std::time::Duration;

use ghmesh_protocol::entry::{MAX_BODY_LEN, MAX_CLOCK_SKEW_MS, MAX_TTL_MS};
use ghmesh_protocol::{merge, Announce, CacheKey, EntryMeta, LookupReply, Merge, Refresh};
use libp2p::PeerId;

use crate::config::MeshMode;
use crate::node::CacheStatus;
use crate::placement;
use crate::upstream::{classify, UpstreamError, UpstreamResponse, Verdict};

/// Members asked (besides the owner) on a miss, without asking them to fetch.
pub const EXTRA_ASKS: usize = 2;
/// Bodies announced without data are pulled at once up to this size (larger ones when
/// first read): one transfer per node, instead of gossip's push to every mesh peer.
pub const PREFETCH_MAX_BODY: u64 = 512 * 1024;

/// How a fresh local entry is reported: `hit` when this node fetched it, else `peer`.
pub fn local_status(meta: &EntryMeta, me: &str) -> CacheStatus {
    if meta.origin == me {
        CacheStatus::Hit
    } else {
        CacheStatus::Peer
    }
}

/// What a reader that joined another reader's flight reports: it spent nothing, so
/// `coalesced`, unless the answer was an old copy (`stale` stays `stale`).
pub fn joined_status(leader: CacheStatus) -> CacheStatus {
    match leader {
        CacheStatus::Stale => CacheStatus::Stale,
        _ => CacheStatus::Coalesced,
    }
}

/// Whom to ask on a miss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    /// The key's owner, asked to fetch for everyone; `None` when we own it ourselves.
    pub owner: Option<PeerId>,
    /// Next-ranked members, asked only whether they hold the entry (a late joiner's
    /// owner may not, but every member that heard the announce does).
    pub others: Vec<PeerId>,
}

/// Ranks `members` and `me` by rendezvous hashing on `key`. `None`: nobody to ask.
pub fn plan_peer_phase(key: &CacheKey, me: PeerId, members: &[PeerId]) -> Option<PeerPlan> {
    let ranked = placement::ranked(key, members.iter().copied().chain([me]));
    let first = *ranked.first()?;
    let owner = (first != me).then_some(first);
    let others: Vec<PeerId> = ranked
        .into_iter()
        .filter(|p| *p != me && Some(*p) != owner)
        .take(EXTRA_ASKS)
        .collect();
    if owner.is_none() && others.is_empty() {
        return None;
    }
    Some(PeerPlan { owner, others })
}

/// The next step after the owner's answer to a lookup with `fetch: true`.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnerStep {
    /// It had the entry: check and store it.
    Accept(Box<Announce>),
    /// It is fetching (or was asked to): wait for its announce.
    Wait,
    /// It has nothing, or did not answer in time: ask the others.
    AskOthers,
}

/// Decides what follows the owner's reply (`None`: no answer within the budget).
pub fn after_owner_reply(reply: Option<LookupReply>) -> OwnerStep {
    match reply {
        Some(LookupReply::Found(ann)) => OwnerStep::Accept(ann),
        Some(LookupReply::Pending) => OwnerStep::Wait,
        Some(LookupReply::NotFound) | None => OwnerStep::AskOthers,
    }
}

/// The next step while waiting for an owner that said `Pending`, after re-polling it.
#[derive(Debug, Clone, PartialEq)]
pub enum RepollStep {
    /// It has the entry now.
    Accept(Box<Announce>),
    /// Still fetching, or the re-poll got no answer: keep waiting until the deadline.
    KeepWaiting,
    /// It finished without a cacheable answer (an error, a failure): stop waiting.
    GiveUp,
}

/// Decides what follows a re-poll of a `Pending` owner.
pub fn after_repoll(reply: Option<LookupReply>) -> RepollStep {
    match reply {
        Some(LookupReply::Found(ann)) => RepollStep::Accept(ann),
        Some(LookupReply::Pending) | None => RepollStep::KeepWaiting,
        Some(LookupReply::NotFound) => RepollStep::GiveUp,
    }
}

/// The interval before the next re-poll: doubling, up to `max`.
pub fn next_repoll(current: Duration, max: Duration) -> Duration {
    (current * 2).min(max)
}

/// How this node answers a peer's lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupAnswer {
    /// Send the fresh entry we hold.
    Found,
    /// We are resolving the key already; the asker waits for our announce.
    Pending,
    /// Start resolving it for everyone (we own it), then answer `Pending`.
    StartFetch,
    /// Nothing to offer.
    NotFound,
}

/// What this node knows about a looked-up key when it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupView {
    /// We hold a fresh entry.
    pub fresh_local: bool,
    /// We are resolving the key right now.
    pub in_flight: bool,
    /// The asker wants us to fetch on a miss (we are its owner).
    pub fetch_asked: bool,
    /// Mesh or broadcast (broadcast never fetches for others).
    pub mode: MeshMode,
    /// Room for one more resolution in the in-flight table.
    pub room: bool,
}

/// Decides the answer to a lookup.
pub fn answer_lookup(v: LookupView) -> LookupAnswer {
    if v.fresh_local {
        LookupAnswer::Found
    } else if v.in_flight {
        LookupAnswer::Pending
    } else if v.fetch_asked && v.mode == MeshMode::Mesh && v.room {
        LookupAnswer::StartFetch
    } else {
        LookupAnswer::NotFound
    }
}

/// What to do with upstream's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAction {
    /// A 200 within size: store it durably, announce it, serve it as `miss`.
    Store,
    /// A 304 for our copy: extend its freshness here and on every peer.
    Refresh,
    /// Upstream failed (5xx, rate limit, timeout, unreachable) and we hold a copy.
    ServeStale,
    /// Any other answer: pass it to this client only, never cache or share it.
    PassThrough,
    /// No answer at all and no copy: the read fails.
    Fail,
}

/// Decides what upstream's outcome means, given whether an old copy is held.
pub fn after_upstream(
    outcome: Result<&UpstreamResponse, &UpstreamError>,
    have_copy: bool,
) -> UpstreamAction {
    let resp = match outcome {
        Ok(r) => r,
        Err(_) if have_copy => return UpstreamAction::ServeStale,
        Err(_) => return UpstreamAction::Fail,
    };
    match classify(resp.status, &resp.headers) {
        Verdict::Cacheable if resp.body.len() <= MAX_BODY_LEN => UpstreamAction::Store,
        Verdict::NotModified if have_copy => UpstreamAction::Refresh,
        Verdict::Failure if have_copy => UpstreamAction::ServeStale,
        _ => UpstreamAction::PassThrough,
    }
}

/// The headers of a copy revalidated by a 304: the held ones, each replaced by the
/// 304's value when it sent one (RFC 9111 §4.3.4), new kept headers added.
pub fn merge_304_headers(
    held: &[(String, String)],
    not_modified: &[(String, String)],
) -> Vec<(String, String)> {
    let mut merged = held.to_vec();
    for (k, v) in kept_headers(not_modified) {
        match merged.iter_mut().find(|(mk, _)| *mk == k) {
            Some(slot) => slot.1 = v,
            None => merged.push((k, v)),
        }
    }
    merged
}

/// The response headers an entry keeps.
pub fn kept_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| ghmesh_protocol::entry::KEPT_HEADERS.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// Why a peer's `Refresh` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// Fresh until before it was fetched.
    #[error("fresh before fetched")]
    Inverted,
    /// Longer than any entry may be fresh.
    #[error("freshness too long")]
    TooLong,
    /// Fetched further in the future than clock skew explains.
    #[error("fetched in the future")]
    FromFuture,
}

/// Checks a peer's `Refresh` on its own, at `now_ms`.
pub fn check_refresh(r: &Refresh, now_ms: u64) -> Result<(), RefreshError> {
    if r.fresh_until_ms < r.fetched_at_ms {
        Err(RefreshError::Inverted)
    } else if r.fresh_until_ms - r.fetched_at_ms > MAX_TTL_MS {
        Err(RefreshError::TooLong)
    } else if r.fetched_at_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        Err(RefreshError::FromFuture)
    } else {
        Ok(())
    }
}

/// Does a (checked) `Refresh` change what we hold? Only for the same body, and only
/// forward: a refresh never shortens freshness or applies to another version.
pub fn refresh_applies(held: Option<&EntryMeta>, r: &Refresh) -> bool {
    held.is_some_and(|h| h.cid == r.cid && r.fresh_until_ms > h.fresh_until_ms)
}

/// What to do with an announce that came without its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodylessAction {
    /// We hold the same or a newer version.
    Ignore,
    /// Remember who has it; pull the body when it is first read.
    Remember,
    /// Remember it and pull the body now (small enough).
    Prefetch,
}

/// Decides about an announce without body, given what we hold for its key.
pub fn on_bodyless(held: Option<&EntryMeta>, incoming: &EntryMeta) -> BodylessAction {
    match merge(held, incoming) {
        Merge::Store if incoming.body_len <= PREFETCH_MAX_BODY => BodylessAction::Prefetch,
        Merge::Store => BodylessAction::Remember,
        Merge::Extend { .. } | Merge::Keep => BodylessAction::Ignore,
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(after_owner_reply(None), OwnerStep::AskOthers);
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
            fresh_local: false,
            in_flight: false,
            fetch_asked: true,
            mode: MeshMode::Mesh,
            room: true,
        };
        assert_eq!(answer_lookup(base), LookupAnswer::StartFetch);
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
        let broadcast = LookupView {
            mode: MeshMode::Broadcast,
            ..base
        };
        assert_eq!(answer_lookup(broadcast), LookupAnswer::NotFound);
        let full = LookupView {
            room: false,
            ..base
        };
        assert_eq!(answer_lookup(full), LookupAnswer::NotFound);
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
        assert_eq!(check_refresh(&r(now, now + 60_000), now), Ok(()));
        assert_eq!(
            check_refresh(&r(now, now - 1), now),
            Err(RefreshError::Inverted)
        );
        assert_eq!(
            check_refresh(&r(now, now + MAX_TTL_MS + 1), now),
            Err(RefreshError::TooLong)
        );
        let future = now + MAX_CLOCK_SKEW_MS + 1;
        assert_eq!(
            check_refresh(&r(future, future + 1), now),
            Err(RefreshError::FromFuture)
        );
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
}
