//! What a node knows and thinks of each connected peer: whether it proved it holds the
//! key (admission), its standing (probation after unanswered lookups, with backoff
//! that decays), what it may make us do (token buckets, fetches in flight), the nonces
//! it used (replays), and how fast it answers (its lookup budget). Plain state with
//! methods that take `now`; the node holds it behind one lock and only carries out
//! what it says.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use ghmesh_protocol::Reach;
use libp2p::PeerId;

use crate::limits::{LATENCY_MIN_SAMPLES, LATENCY_SAMPLES};
use crate::placement::{self, FleetStanding, Standing};

/// A peer whose hello failed is greeted again after this long (or when it reconnects).
const REGREET_AFTER_MS: u64 = 5_000;
/// A member's own new addresses are passed on at most this often.
pub const REINTRODUCE_EVERY_MS: u64 = 2_000;

use crate::limits::{
    FETCHES_PER_SEC, FETCH_BURST, MAX_FETCHES_PER_PEER, MAX_NONCES_PER_PEER, MAX_PEERS,
    NONCE_WINDOW_MS, PROBATION_BASE, PROBATION_MAX, REQUESTS_PER_SEC, REQUEST_BURST,
    STANDING_DECAY, VIOLATION_WEIGHT,
};

/// How long to wait for a peer's answer: twice its recent slowest answer, within
/// bounds, so a busy but alive fleet keeps coalescing and a dead peer is skipped fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetRule {
    /// Before any answer was measured.
    pub initial: Duration,
    /// Never less.
    pub floor: Duration,
    /// Never more.
    pub ceiling: Duration,
}

/// A token bucket: `rate` tokens a second up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: f64, now_ms: u64) -> Self {
        Self {
            tokens: burst,
            at_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f64, burst: f64, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at_ms = self.at_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a request may be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Go ahead.
    Handle,
    /// This nonce was used before: a replay.
    Replay,
    /// Over this peer's budget: answer `Busy` (or refuse).
    Busy,
}

#[derive(Debug)]
struct PeerState {
    admitted: bool,
    /// When it was admitted (the order in which we learned the fleet).
    admitted_ms: u64,
    introduced: bool,
    /// After a failed greeting, not before this (a keyless peer is not greeted on every
    /// sweep).
    greet_after_ms: u64,
    greeting: bool,
    failures: u32,
    last_failure_ms: u64,
    probation_until_ms: u64,
    requests: TokenBucket,
    fetches: TokenBucket,
    fetching: usize,
    nonces: HashSet<u64>,
    nonce_order: VecDeque<(u64, u64)>,
    latencies_ms: VecDeque<u64>,
    /// What it said of its standing (reachability, direct connections) in its last
    /// hello.
    standing: Standing,
    /// When we last passed its own new addresses on to the other members.
    reintroduced_ms: Option<u64>,
    /// The standing of ours it last heard in a hello it answered.
    told: Option<Standing>,
}

impl PeerState {
    fn new(now_ms: u64) -> Self {
        Self {
            admitted: false,
            admitted_ms: 0,
            introduced: false,
            greet_after_ms: 0,
            greeting: false,
            failures: 0,
            last_failure_ms: 0,
            probation_until_ms: 0,
            requests: TokenBucket::full(REQUEST_BURST, now_ms),
            fetches: TokenBucket::full(FETCH_BURST, now_ms),
            fetching: 0,
            nonces: HashSet::new(),
            nonce_order: VecDeque::new(),
            latencies_ms: VecDeque::new(),
            standing: Standing::default(),
            reintroduced_ms: None,
            told: None,
        }
    }

    fn sample(&mut self, latency: Duration) {
        if self.latencies_ms.len() >= LATENCY_SAMPLES {
            self.latencies_ms.pop_front();
        }
        self.latencies_ms.push_back(latency.as_millis() as u64);
    }

    fn fail(&mut self, weight: u32, now_ms: u64) {
        if now_ms.saturating_sub(self.last_failure_ms) > STANDING_DECAY.as_millis() as u64 {
            self.failures = 0;
        }
        // Lookups that time out together are one failure: the peer hung once.
        if now_ms < self.probation_until_ms && weight == 1 {
            return;
        }
        self.failures = self.failures.saturating_add(weight);
        self.last_failure_ms = now_ms;
        let shift = self.failures.saturating_sub(1).min(16);
        let backoff = (PROBATION_BASE.as_millis() as u64)
            .saturating_mul(1 << shift)
            .min(PROBATION_MAX.as_millis() as u64);
        self.probation_until_ms = now_ms.saturating_add(backoff);
    }
}

/// How long a member another member listed counts as one of the fleet's: members swap
/// lists at least every 30 s, and a member that left is listed by nobody.
pub const LISTED_FOR_MS: u64 = 90_000;

/// Every connected peer's record, at most [`MAX_PEERS`].
#[derive(Debug, Default)]
pub struct PeerBook {
    peers: HashMap<PeerId, PeerState>,
    /// When the set of members (or greetings under way) last changed.
    last_change_ms: u64,
    /// Our own standing: reachability as our network last found it, direct
    /// connections as the last sweep found them.
    mine: Standing,
    /// Members that members listed to us (member lists), with when we first and last
    /// heard of each, at most [`MAX_PEERS`]: a member we are not connected to at all
    /// is one we are not directly connected to.
    listed: HashMap<PeerId, (u64, u64)>,
    /// Peers we reach only through public relays, which carry hellos and member lists
    /// but none of the fleet's traffic: neither asked nor owners meanwhile. Connected
    /// peers only (the network tells each change, the sweep the whole set).
    public_relay: HashSet<PeerId>,
}

impl PeerBook {
    /// A member we may ask now.
    fn askable(&self, peer: &PeerId, s: &PeerState, now_ms: u64) -> bool {
        s.admitted && now_ms >= s.probation_until_ms && !self.public_relay.contains(peer)
    }

    /// A connection to `peer` is up. True when we should greet it (prove the key to
    /// each other): not admitted, no greeting under way, and room in the book.
    pub fn connected(&mut self, peer: PeerId, now_ms: u64) -> bool {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            return false;
        }
        let st = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerState::new(now_ms));
        if st.admitted || st.greeting || now_ms < st.greet_after_ms {
            return false;
        }
        st.greeting = true;
        self.last_change_ms = now_ms;
        true
    }

    /// Greetings under way.
    pub fn greeting(&self) -> usize {
        self.peers.values().filter(|s| s.greeting).count()
    }

    /// When the members last changed (an admission, a departure, a greeting begun).
    pub fn last_change_ms(&self) -> u64 {
        self.last_change_ms
    }

    /// The greeting ended; `proved`: the peer answered our nonce under the key. True
    /// when this admitted a member that was not one.
    pub fn greeted(&mut self, peer: PeerId, proved: bool, now_ms: u64) -> bool {
        let Some(st) = self.peers.get_mut(&peer) else {
            return false; // disconnected meanwhile
        };
        st.greeting = false;
        if !proved {
            st.greet_after_ms = now_ms.saturating_add(REGREET_AFTER_MS);
        }
        let newly = proved && !st.admitted;
        st.admitted |= proved;
        if newly {
            st.admitted_ms = now_ms;
        }
        self.last_change_ms = now_ms;
        newly
    }

    /// The last connection to `peer` closed: forget it (it is greeted again when it
    /// comes back; what it did is forgotten too, as the connection that did it is gone).
    pub fn disconnected(&mut self, peer: &PeerId, now_ms: u64) {
        if self.peers.remove(peer).is_some_and(|s| s.admitted) {
            self.last_change_ms = now_ms;
        }
        // Listed again (with a new grace) only if it is still a member elsewhere: a
        // member that left would otherwise count as one we cannot reach, from when we
        // first heard of it, until its last listing expired.
        self.listed.remove(peer);
        self.public_relay.remove(peer);
    }

    /// Forgets every peer not in `connected` (their disconnect event was lost).
    pub fn forget_all_but(&mut self, connected: &[PeerId]) {
        let gone: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|p| !connected.contains(p))
            .copied()
            .collect();
        for p in gone {
            self.peers.remove(&p);
            self.listed.remove(&p);
        }
        self.public_relay.retain(|p| connected.contains(p));
    }

    /// Records that `peer` (a member) was introduced to our members; false when it
    /// was already, or is no member.
    pub fn mark_introduced(&mut self, peer: &PeerId) -> bool {
        match self.peers.get_mut(peer) {
            Some(st) if st.admitted && !st.introduced => {
                st.introduced = true;
                true
            }
            _ => false,
        }
    }

    /// `peer` (a member) told us its own new addresses: pass them on, unless we did
    /// less than [`REINTRODUCE_EVERY_MS`] ago (each pass costs a message to every
    /// member).
    pub fn may_reintroduce(&mut self, peer: &PeerId, now_ms: u64) -> bool {
        match self.peers.get_mut(peer) {
            Some(st)
                if st.admitted
                    && st
                        .reintroduced_ms
                        .is_none_or(|t| now_ms.saturating_sub(t) >= REINTRODUCE_EVERY_MS) =>
            {
                st.reintroduced_ms = Some(now_ms);
                true
            }
            _ => false,
        }
    }

    /// Connected (in the book), member or not.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Proved it holds the key.
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|s| s.admitted)
    }

    /// `peer` said (in a hello) how reachable it is. Kept while it is connected; a
    /// change that moves owners counts as a change of the view (true).
    pub fn set_standing(&mut self, peer: &PeerId, standing: Standing, now_ms: u64) -> bool {
        self.restand(now_ms, |book| {
            if let Some(st) = book.peers.get_mut(peer) {
                st.standing = standing;
            }
        })
    }

    /// Who may own keys as the standings say: the admitted members that may, sorted,
    /// and whether we may.
    fn owning(&self) -> (Vec<PeerId>, bool) {
        let fleet = self.fleet();
        let mut peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.admitted && placement::may_own(s.standing, fleet))
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        (peers, placement::may_own(self.mine, fleet))
    }

    /// Changes a standing with `change`: when that moved who may own keys, the view
    /// changed (true). Other changes (a member saying it is directly connected to all
    /// while nobody says otherwise) move no owner and do not hold claims back.
    fn restand(&mut self, now_ms: u64, change: impl FnOnce(&mut Self)) -> bool {
        let before = self.owning();
        change(self);
        let moved = self.owning() != before;
        if moved {
            self.last_change_ms = now_ms;
        }
        moved
    }

    /// The fleet's standing, ours included.
    fn fleet(&self) -> FleetStanding {
        FleetStanding::of(
            self.peers
                .values()
                .filter(|s| s.admitted)
                .map(|s| s.standing)
                .chain([self.mine]),
        )
    }

    /// `peer` answered a hello that told it our standing was `standing`.
    pub fn told(&mut self, peer: &PeerId, standing: Standing) {
        if let Some(st) = self.peers.get_mut(peer) {
            st.told = Some(standing);
        }
    }

    /// Members that have not heard our standing as it is now (a hello lost, or sent
    /// before it changed): owners are chosen by it, so they must. While no member (we
    /// neither) says it is not directly connected to all, saying so or not yet saying
    /// anything choose the same owners ([`placement::may_own`]): a fleet where everyone
    /// is direct sends no hellos when its members find out.
    pub fn untold(&self) -> Vec<PeerId> {
        let anyone_not_direct = self.mine.direct_to_all == Some(false)
            || self
                .peers
                .values()
                .any(|s| s.admitted && s.standing.direct_to_all == Some(false));
        let heard = |told| placement::owns_alike(told, self.mine, anyone_not_direct);
        self.peers
            .iter()
            .filter(|(_, s)| s.admitted && !s.told.is_some_and(heard))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Our own reachability changed (true) or not.
    pub fn set_my_reach(&mut self, reach: Reach, now_ms: u64) -> bool {
        let changed = self.mine.reach != reach;
        self.restand(now_ms, |book| book.mine.reach = reach);
        changed
    }

    /// A member listed `peer` as a member (not us). Listings older than
    /// [`LISTED_FOR_MS`] go at the next [`Self::set_my_direct`].
    pub fn listed(&mut self, peer: PeerId, now_ms: u64) {
        if let Some((_, last)) = self.listed.get_mut(&peer) {
            *last = now_ms;
        } else if self.listed.len() < MAX_PEERS {
            self.listed.insert(peer, (now_ms, now_ms));
        }
    }

    /// Whether we hold a direct connection to every member, from the members `direct`
    /// connections go to (see [`placement::direct_to_all`]); true when that changed.
    /// Members others listed within [`LISTED_FOR_MS`] that we are not a member with
    /// count as not direct, from when we first heard of them.
    pub fn set_my_direct(&mut self, direct: &HashSet<PeerId>, now_ms: u64) -> bool {
        self.listed
            .retain(|_, (_, last)| now_ms.saturating_sub(*last) < LISTED_FOR_MS);
        let admitted = |p: &PeerId| self.peers.get(p).is_some_and(|s| s.admitted);
        let members: Vec<(u64, bool)> = self
            .peers
            .iter()
            .filter(|(_, s)| s.admitted)
            .map(|(p, s)| (s.admitted_ms, direct.contains(p)))
            .chain(
                self.listed
                    .iter()
                    .filter(|(p, _)| !admitted(p))
                    .map(|(_, (first, _))| (*first, false)),
            )
            .collect();
        let now = placement::direct_to_all(self.mine.direct_to_all, &members, now_ms);
        let changed = self.mine.direct_to_all != now;
        self.restand(now_ms, |book| book.mine.direct_to_all = now);
        changed
    }

    /// Our own reachability.
    pub fn my_reach(&self) -> Reach {
        self.mine.reach
    }

    /// Our own standing, as our hellos tell it.
    pub fn mine(&self) -> Standing {
        self.mine
    }

    /// Who may own keys (see [`placement::may_own`]): the members we may ask and we
    /// (`me`) ourselves, only the publicly reachable ones when any member is. Members
    /// on probation count when deciding whether any member is public, so that every
    /// node draws the line the same way whatever its own timeouts.
    pub fn owners(&self, me: PeerId, now_ms: u64) -> Vec<PeerId> {
        let fleet = self.fleet();
        let mut owners: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, s)| self.askable(p, s, now_ms))
            .filter(|(_, s)| placement::may_own(s.standing, fleet))
            .map(|(p, _)| *p)
            .collect();
        if placement::may_own(self.mine, fleet) {
            owners.push(me);
        }
        owners
    }

    /// Every admitted member with the standing it announced.
    pub fn members_standing(&self) -> Vec<(PeerId, Standing)> {
        self.peers
            .iter()
            .filter(|(_, s)| s.admitted)
            .map(|(p, s)| (*p, s.standing))
            .collect()
    }

    /// Every admitted member.
    pub fn members(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, s)| s.admitted)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Members we may ask (owner candidates): admitted and not on probation.
    pub fn candidates(&self, now_ms: u64) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(p, s)| self.askable(p, s, now_ms))
            .map(|(p, _)| *p)
            .collect()
    }

    /// The `n` candidates we admitted first: the bootstrap and the members it introduced
    /// us to, which were up before we came.
    pub fn eldest(&self, now_ms: u64, n: usize) -> Vec<PeerId> {
        let mut c: Vec<(u64, PeerId)> = self
            .peers
            .iter()
            .filter(|(p, s)| self.askable(p, s, now_ms))
            .map(|(p, s)| (s.admitted_ms, *p))
            .collect();
        c.sort();
        c.into_iter().take(n).map(|(_, p)| p).collect()
    }

    /// Which peers we reach only through public relays (from our connections, each
    /// sweep): members among them are neither asked nor owners until another
    /// connection exists.
    pub fn set_public_relay(&mut self, only_public: &HashSet<PeerId>) {
        self.public_relay = only_public.iter().take(MAX_PEERS).copied().collect();
    }

    /// Whether we reach `peer` only through public relays changed (the network says).
    pub fn public_relay_of(&mut self, peer: PeerId, only: bool) {
        if !only {
            self.public_relay.remove(&peer);
        } else if self.public_relay.len() < MAX_PEERS {
            self.public_relay.insert(peer);
        }
    }

    /// Members on probation now.
    pub fn on_probation(&self, now_ms: u64) -> usize {
        self.peers
            .values()
            .filter(|s| s.admitted && now_ms < s.probation_until_ms)
            .count()
    }

    /// A lookup to `peer` got no answer within `budget`. Besides the probation, the
    /// budget counts as a sample: if the peer was only slow, its next budget is twice
    /// as long (within the ceiling).
    pub fn timed_out(&mut self, peer: &PeerId, budget: Duration, now_ms: u64) {
        if let Some(st) = self.peers.get_mut(peer) {
            st.fail(1, now_ms);
            st.sample(budget);
        }
    }

    /// A lookup to `peer`, given `given`, got no answer. Only a member given its whole
    /// budget failed it: one asked with what was left of ours (the others, late in the
    /// peer phase) did not.
    pub fn lookup_unanswered(
        &mut self,
        peer: &PeerId,
        given: Duration,
        rule: BudgetRule,
        now_ms: u64,
    ) {
        if given >= self.budget(peer, rule) {
            self.timed_out(peer, given, now_ms);
        }
    }

    /// `peer` sent something that failed its checks (never for clock skew alone).
    pub fn violated(&mut self, peer: &PeerId, now_ms: u64) {
        if let Some(st) = self.peers.get_mut(peer) {
            st.fail(VIOLATION_WEIGHT, now_ms);
        }
    }

    /// `peer` answered within `latency`: off probation, and the sample feeds its
    /// budget.
    pub fn answered(&mut self, peer: &PeerId, latency: Duration) {
        if let Some(st) = self.peers.get_mut(peer) {
            st.probation_until_ms = 0;
            st.sample(latency);
        }
    }

    /// How long to wait for `peer`'s answer to a lookup.
    pub fn budget(&self, peer: &PeerId, rule: BudgetRule) -> Duration {
        let Some(slowest) = self
            .peers
            .get(peer)
            .filter(|s| s.latencies_ms.len() >= LATENCY_MIN_SAMPLES)
            .and_then(|s| s.latencies_ms.iter().max().copied())
        else {
            return rule.initial;
        };
        Duration::from_millis(slowest.saturating_mul(2)).clamp(rule.floor, rule.ceiling)
    }

    /// Every member's current budget, for stats.
    pub fn budgets(&self, rule: BudgetRule) -> Vec<(PeerId, Duration)> {
        self.peers
            .iter()
            .filter(|(_, s)| s.admitted)
            .map(|(p, _)| (*p, self.budget(p, rule)))
            .collect()
    }

    /// A request with `nonce` arrived from `peer`: may it be handled?
    pub fn request(&mut self, peer: &PeerId, nonce: u64, now_ms: u64) -> RequestVerdict {
        let Some(st) = self.peers.get_mut(peer) else {
            return RequestVerdict::Busy;
        };
        while st
            .nonce_order
            .front()
            .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > NONCE_WINDOW_MS)
        {
            if let Some((_, n)) = st.nonce_order.pop_front() {
                st.nonces.remove(&n);
            }
        }
        if st.nonces.contains(&nonce) {
            return RequestVerdict::Replay;
        }
        if st.nonces.len() >= MAX_NONCES_PER_PEER
            || !st.requests.take(REQUESTS_PER_SEC, REQUEST_BURST, now_ms)
        {
            return RequestVerdict::Busy;
        }
        st.nonces.insert(nonce);
        st.nonce_order.push_back((now_ms, nonce));
        RequestVerdict::Handle
    }

    /// May `peer` make us start an upstream fetch for it now? Counts it in flight
    /// when yes; call [`PeerBook::fetch_done`] when it ends.
    pub fn start_fetch(&mut self, peer: &PeerId, now_ms: u64) -> bool {
        let Some(st) = self.peers.get_mut(peer) else {
            return false;
        };
        if !st.admitted || st.fetching >= MAX_FETCHES_PER_PEER {
            return false;
        }
        if !st.fetches.take(FETCHES_PER_SEC, FETCH_BURST, now_ms) {
            return false;
        }
        st.fetching += 1;
        true
    }

    /// A fetch started for `peer` ended.
    pub fn fetch_done(&mut self, peer: &PeerId) {
        if let Some(st) = self.peers.get_mut(peer) {
            st.fetching = st.fetching.saturating_sub(1);
        }
    }
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;
