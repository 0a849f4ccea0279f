//! The read path's decisions, as plain functions of their inputs and `now`.
//!
//! Async code in [`crate::node`] gathers the inputs (store, member view, in-flight
//! table, a peer's reply, upstream's answer), calls one of these, and carries out what
//! it returns. Nothing here locks, sleeps, seals or counts, so every branch has a unit
//! test below, and a simulator can drive the same rules with simulated time.

use std::time::Duration;

pub mod book;
pub mod lease;
mod outcome;
pub mod resolve;
pub mod upstream;

pub use outcome::{CacheStatus, MeshMode};

use ghmesh_protocol::entry::{MAX_BODY_LEN, MAX_CLOCK_SKEW_MS};
use ghmesh_protocol::request::MAX_PATH_LEN;
use ghmesh_protocol::wire::MAX_INVALIDATED_PATHS;
use ghmesh_protocol::{
    is_safe_path, merge, Announce, CacheKey, EntryMeta, Invalidate, LookupReply, Merge, Refresh,
};
use libp2p::PeerId;

use crate::placement;
use upstream::{
    classify_graphql_response, classify_response, UpstreamError, UpstreamResponse, Verdict,
};

pub use crate::limits::{EXTRA_ASKS, PREFETCH_MAX_BODY};

/// Serve this local copy without asking anyone? Without a per-request limit, when it
/// is fresh. A request that names a maximum age (`ghmesh api --cache`, header
/// `x-ghmesh-max-age`) sets its own freshness both ways, as gh's flag does: a copy
/// fetched at most `max_age_ms` ago is served even if expired, and an older one is not
/// served even if still fresh (it is revalidated or fetched again).
pub fn servable_locally(meta: &EntryMeta, now_ms: u64, max_age_ms: Option<u64>) -> bool {
    match max_age_ms {
        None => meta.is_fresh(now_ms),
        Some(max_age) => now_ms.saturating_sub(meta.fetched_at_ms) <= max_age,
    }
}

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
        CacheStatus::Held => CacheStatus::Held,
        _ => CacheStatus::Coalesced,
    }
}

/// How long after its start a node may still be learning the fleet (see
/// [`view_settling`]).
pub const STARTUP_SETTLE_MS: u64 = 5_000;
/// A view unchanged for this long counts as settled.
pub const VIEW_SETTLE_MS: u64 = 300;

/// Has this node started within [`STARTUP_SETTLE_MS`]? Then its store may lack what
/// the fleet announced before it came.
pub fn starting(now_ms: u64, started_ms: u64) -> bool {
    now_ms.saturating_sub(started_ms) < STARTUP_SETTLE_MS
}

/// Should a node that would own a missed key wait before fetching it? Only while it
/// is starting up and its view of the members is still changing: greetings under way,
/// or a change less than [`VIEW_SETTLE_MS`] ago.
pub fn view_settling(now_ms: u64, started_ms: u64, last_change_ms: u64, greetings: usize) -> bool {
    starting(now_ms, started_ms)
        && (greetings > 0 || now_ms.saturating_sub(last_change_ms) < VIEW_SETTLE_MS)
}

/// Should a miss wait for this node's first member? Only within `wait_ms` of the
/// node's start (`Deadlines::first_member`), with no member yet, and with the fleet
/// known to be somewhere (`rendezvous`: a bootstrap address, or a connection being
/// greeted). A runner reads the moment it starts: a fetch made alone is a second fetch
/// of whatever a member was fetching, and what it stores reaches nobody until it has a
/// peer. A node with nowhere to look (the fleet's first, one that only listens for
/// mDNS and has heard nobody yet, a local-only one) never waits.
pub fn awaiting_first_member(
    since_start_ms: u64,
    wait_ms: u64,
    members: usize,
    rendezvous: bool,
) -> bool {
    members == 0 && rendezvous && since_start_ms < wait_ms
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

/// The owner of `key` among `owners` (see [`book::PeerBook::owners`]: us among them
/// when we may own keys) and the next-ranked of the `members` we may ask. `None`:
/// nobody to ask. An owner of `None` in the plan means we own the key, or nobody may.
pub fn plan_peer_phase(
    key: &CacheKey,
    me: PeerId,
    owners: &[PeerId],
    members: &[PeerId],
) -> Option<PeerPlan> {
    let owner = placement::owner(key, owners.iter().copied()).filter(|o| *o != me);
    let others: Vec<PeerId> = placement::ranked(key, members.iter().copied())
        .into_iter()
        .filter(|p| *p != me && Some(*p) != owner)
        .take(EXTRA_ASKS)
        .collect();
    if owner.is_none() && others.is_empty() {
        return None;
    }
    Some(PeerPlan { owner, others })
}

/// Whom a node still starting asks besides the next-ranked members: its eldest members
/// (see [`book::PeerBook::eldest`]), which were up before it and heard what was
/// announced before it came. In a fleet that is still growing, the next-ranked members
/// are as likely as we are to have joined after the announce. At most [`EXTRA_ASKS`]
/// more; never the owner, already asked.
pub fn others_while_starting(
    others: &[PeerId],
    eldest: &[PeerId],
    owner: Option<PeerId>,
) -> Vec<PeerId> {
    let mut all = others.to_vec();
    let extra = eldest
        .iter()
        .filter(|p| !others.contains(p) && Some(**p) != owner)
        .take(EXTRA_ASKS);
    all.extend(extra);
    all
}

/// The next step after the owner's answer to a lookup with `fetch: true`.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnerStep {
    /// It had the entry: check and store it.
    Accept(Box<Announce>),
    /// It is fetching (or was asked to): wait for its announce. Binding: we do not
    /// fetch in parallel while it holds the fetch.
    Wait,
    /// It sees another owner: ask that one (once).
    Redirect(PeerId),
    /// It did not answer in time: it goes on probation; ask the next owner.
    NextOwner,
    /// It has nothing, or is too busy for us: ask the others, then upstream.
    AskOthers,
    /// It granted us the lease: fetch upstream now (with our reader's token) and
    /// announce; the fleet waits for us.
    Fetch,
}

/// Decides what follows the owner's reply (`None`: no answer within the budget).
/// A redirect naming an unparsable peer is treated as "nothing".
pub fn after_owner_reply(reply: Option<LookupReply>) -> OwnerStep {
    match reply {
        Some(LookupReply::Found(ann)) => OwnerStep::Accept(ann),
        Some(LookupReply::Pending) => OwnerStep::Wait,
        Some(LookupReply::Redirect(to)) => match PeerId::from_bytes(&to) {
            Ok(p) => OwnerStep::Redirect(p),
            Err(_) => OwnerStep::AskOthers,
        },
        None => OwnerStep::NextOwner,
        Some(LookupReply::Lease) => OwnerStep::Fetch,
        Some(LookupReply::NotFound | LookupReply::Busy) => OwnerStep::AskOthers,
    }
}

/// Whom to ask next after `step`, given who was asked already and who may own keys
/// now (`owners`, us among them when we may). `None`: nobody; go on to the others (or
/// upstream). `Some(me)` means we own the key in our own view now: fetch it ourselves.
pub fn next_owner(
    step: &OwnerStep,
    key: &CacheKey,
    me: PeerId,
    asked: &[PeerId],
    owners: &[PeerId],
    asks_left: usize,
) -> Option<PeerId> {
    if asks_left == 0 {
        return None;
    }
    match step {
        OwnerStep::Redirect(p) if *p == me => Some(me),
        OwnerStep::Redirect(p) if owners.contains(p) && !asked.contains(p) => Some(*p),
        OwnerStep::NextOwner => {
            let left = owners.iter().copied().filter(|p| !asked.contains(p));
            placement::owner(key, left)
        }
        _ => None,
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
    /// The lease we waited on passed to us (its holder failed, left or ran out of
    /// time): fetch now.
    Fetch,
}

/// Decides what follows a re-poll of a `Pending` owner.
pub fn after_repoll(reply: Option<LookupReply>) -> RepollStep {
    match reply {
        Some(LookupReply::Found(ann)) => RepollStep::Accept(ann),
        Some(LookupReply::Pending) | None => RepollStep::KeepWaiting,
        Some(LookupReply::Lease) => RepollStep::Fetch,
        Some(LookupReply::NotFound | LookupReply::Redirect(_) | LookupReply::Busy) => {
            RepollStep::GiveUp
        }
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
    /// Start resolving it for everyone (we own it), then answer `Pending`, if the
    /// asker is within its budget (else `Busy`).
    StartFetch,
    /// We do not own the key in our view: this member does.
    Redirect(PeerId),
    /// Grant the asker the lease: it fetches with its own credential and announces.
    GrantLease,
    /// No room to resolve another key now.
    Busy,
    /// Nothing to offer.
    NotFound,
}

/// What this node knows about a looked-up key when it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupView {
    /// The answer may be shared at all (it does not vary by identity).
    pub shareable: bool,
    /// We hold a fresh entry.
    pub fresh_local: bool,
    /// We are resolving the key right now.
    pub in_flight: bool,
    /// ... and in the upstream phase of it (waiting on GitHub, not on a peer).
    pub fetching: bool,
    /// The asker wants us to fetch on a miss (we are its owner).
    pub fetch_asked: bool,
    /// The asker can fetch with its own credential and asks for the lease.
    pub lease_asked: bool,
    /// Another member holds the lease on the key: it is fetching for the fleet.
    pub leased_to_other: bool,
    /// Our last fetch of the key for others failed a moment ago (its error is ours).
    pub failed_recently: bool,
    /// Mesh or broadcast (broadcast never fetches for others).
    pub mode: MeshMode,
    /// Room for one more resolution in the in-flight table.
    pub room: bool,
    /// The key's owner in our view of the members (`None`: us).
    pub owner: Option<PeerId>,
}

/// Decides the answer to a lookup.
pub fn answer_lookup(v: LookupView) -> LookupAnswer {
    if !v.shareable {
        LookupAnswer::NotFound
    } else if v.fresh_local {
        LookupAnswer::Found
    } else if v.in_flight && (v.fetch_asked || v.lease_asked || v.fetching) {
        // To a member that asks us to fetch (or for the lease), any resolution of ours
        // is the one it waits for; to one that only asks whether we have it, only an
        // upstream fetch (a resolution still asking peers might be waiting for it).
        LookupAnswer::Pending
    } else if v.leased_to_other && (v.fetch_asked || v.lease_asked) {
        // Binding: the lease holder fetches for everyone.
        LookupAnswer::Pending
    } else if !(v.fetch_asked || v.lease_asked) || v.mode != MeshMode::Mesh {
        LookupAnswer::NotFound
    } else if let Some(owner) = v.owner {
        // Fetching keys we do not own would let any member make us spend quota on
        // anything; the asker tries the owner we see.
        LookupAnswer::Redirect(owner)
    } else if v.lease_asked {
        LookupAnswer::GrantLease
    } else if v.failed_recently {
        // Not again for every re-poll: the asker fetches with its own credential.
        LookupAnswer::NotFound
    } else if !v.room {
        LookupAnswer::Busy
    } else {
        LookupAnswer::StartFetch
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

/// Decides what upstream's outcome means, given whether an old copy is held and
/// whether it answered a GraphQL query (whose `200` may carry errors).
pub fn after_upstream(
    outcome: Result<&UpstreamResponse, &UpstreamError>,
    have_copy: bool,
    graphql: bool,
) -> UpstreamAction {
    let resp = match outcome {
        Ok(r) => r,
        Err(_) if have_copy => return UpstreamAction::ServeStale,
        // Held: GitHub's own refusal, repeated, goes to this client.
        Err(UpstreamError::Held(_)) => return UpstreamAction::PassThrough,
        Err(_) => return UpstreamAction::Fail,
    };
    let verdict = if graphql {
        classify_graphql_response(resp)
    } else {
        classify_response(resp)
    };
    match verdict {
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

/// Why a peer's `Refresh` is refused. Times are not a reason: a refresh from the
/// future or for too long is capped by our own rule when applied
/// ([`EntryMeta::adopt_refresh`](ghmesh_protocol::EntryMeta::adopt_refresh)), so a
/// peer with a skewed clock is never refused for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// Fresh until before it was fetched.
    #[error("fresh before fetched")]
    Inverted,
}

/// Checks a peer's `Refresh` on its own.
pub fn check_refresh(r: &Refresh) -> Result<(), RefreshError> {
    if r.fresh_until_ms < r.fetched_at_ms {
        Err(RefreshError::Inverted)
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

/// The cached reads a successful write changes (RFC 9111 §4.4): its target path, the
/// collection the target belongs to (its parent: `POST …/issues/3/comments` changes
/// `…/issues/3` too), and the `Location` it answered with. Each path covers every
/// query and representation of it. Nothing for reads, failures, or unsafe paths.
pub fn invalidated_paths(
    method: &str,
    path: &str,
    status: u16,
    location_path: Option<&str>,
) -> Vec<String> {
    let write = !(method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD"));
    if !write || !(200..300).contains(&status) {
        return Vec::new();
    }
    let target = path.trim_end_matches('/');
    let mut paths = vec![target.to_string()];
    if let Some((parent, _)) = target.rsplit_once('/') {
        // Never a top-level collection ("/repos"): that would touch the whole cache.
        if parent.matches('/').count() >= 2 {
            paths.push(parent.to_string());
        }
    }
    if let Some(loc) = location_path {
        paths.push(loc.trim_end_matches('/').to_string());
    }
    paths.retain(|p| p.starts_with('/') && p.len() <= MAX_PATH_LEN && is_safe_path(p));
    paths.dedup();
    paths.truncate(MAX_INVALIDATED_PATHS);
    paths
}

/// Why a peer's `Invalidate` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidateError {
    /// No path, too many, or a path that is not a safe absolute path.
    #[error("bad paths")]
    BadPaths,
    /// Dated further in the future than clock skew explains.
    #[error("from the future")]
    FromFuture,
}

/// Checks a peer's `Invalidate` on its own, at `now_ms`.
pub fn check_invalidate(inv: &Invalidate, now_ms: u64) -> Result<(), InvalidateError> {
    let sane = |p: &String| p.starts_with('/') && p.len() <= MAX_PATH_LEN && is_safe_path(p);
    if inv.paths.is_empty()
        || inv.paths.len() > MAX_INVALIDATED_PATHS
        || !inv.paths.iter().all(sane)
    {
        Err(InvalidateError::BadPaths)
    } else if inv.at_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        Err(InvalidateError::FromFuture)
    } else {
        Ok(())
    }
}

/// Does an invalidation at `at_ms` of `paths` make this entry stale? Only a copy that
/// is still fresh and was fetched before the write.
pub fn invalidates(meta: &EntryMeta, paths: &[String], at_ms: u64) -> bool {
    meta.fetched_at_ms <= at_ms && meta.fresh_until_ms > at_ms && paths.contains(&meta.request.path)
}

/// Was a copy fetched before the last write to its path (`written_at`)? Then it is
/// the old answer: a peer's copy of it is refused until a newer one is fetched.
pub fn predates_write(fetched_at_ms: u64, written_at: Option<u64>) -> bool {
    written_at.is_some_and(|at| fetched_at_ms <= at)
}

#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod tests;
