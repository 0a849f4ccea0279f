//! This node's side of the fleet's rate-limit ledger (contract §10): what GitHub said
//! of every budget the node spends, merged with what members say of the same budgets,
//! and the holds and the reserve that follow from it.
//!
//! The merge rule is the protocol's ([`BudgetEntry::merge`]); this book keeps the
//! entries (bounded), remembers which of them changed from our own answers (the news
//! the node gossips, at most once a second), and answers the two questions a request
//! asks before it goes upstream: is this budget held, and is it down to the reserve.

use std::collections::{BTreeSet, HashMap, HashSet};

use ghmesh_protocol::ledger::{BudgetEntry, ByteBuf, BUDGET_ID_LEN, MAX_LEDGER_ENTRIES};
use libp2p::PeerId;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::holds::REPEAT_WINDOW;
use super::{RateLimit, UpstreamResponse};
use crate::limits::MAX_BUDGETS;

/// A budget's id (a keyed hash; see `keys::budget_id`).
pub type BudgetId = [u8; BUDGET_ID_LEN];

/// Where a budget's figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Our own last answer from GitHub is the newest we know.
    Local,
    /// A member's is.
    Fleet,
}

/// One budget and resource as stats show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetView {
    /// The budget's id, hex.
    pub budget: String,
    /// `core`, `search`, `graphql`, …
    pub resource: String,
    /// `x-ratelimit-limit`.
    pub limit: u64,
    /// The lowest `remaining` anyone in the fleet saw in this window.
    pub remaining: u64,
    /// `x-ratelimit-used`.
    pub used: u64,
    /// When the window ends (unix seconds).
    pub reset: u64,
    /// Until when requests on it are held (unix seconds), if they are.
    pub held_until: Option<u64>,
    /// Whose figures these are.
    pub source: Source,
    /// Members heard spending it in this window (this node not counted): those it is
    /// shared out among near its end.
    pub members_spending: usize,
}

/// This node's place among the nodes that spend a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    /// Nodes, this one included.
    pub size: usize,
    /// This node's rank among them (by peer id: the same order on every member).
    pub rank: usize,
}

impl Fleet {
    /// `me` among `others` (whether or not they include `me`), ranked by peer id:
    /// every member sorts the same set the same way.
    pub fn among<'a>(me: PeerId, others: impl IntoIterator<Item = &'a PeerId>) -> Self {
        let mine = me.to_bytes();
        let (mut size, mut rank) = (1, 0);
        for p in others.into_iter().filter(|p| **p != me) {
            size += 1;
            rank += usize::from(p.to_bytes() < mine);
        }
        Self { size, rank }
    }
}

/// Requests left per spending node below which a budget is near its end: a node's
/// default upstream concurrency. Only then is it shared out, and every answer's
/// figures are news at once.
pub const NEAR_END_PER_NODE: u64 = 8;
/// Spenders remembered per budget and resource (the fleet's peers are bounded alike).
const MAX_SPENDERS: usize = crate::limits::MAX_PEERS;

/// What this node may spend of a budget that is running out (see [`BudgetBook::share`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Requests it may have in flight.
    pub requests: u64,
    /// What the fleet knows is left above the reserve.
    pub left: u64,
    /// When the window ends (unix seconds).
    pub reset: u64,
    /// When the budget's figures, unchanged since, say that nobody is spending it
    /// (unix seconds).
    pub quiet_at: u64,
    /// The fleet, for turns once the budget is quiet.
    pub fleet: Fleet,
    /// Until when (unix seconds) members that said they spend the budget count as its
    /// spenders whether or not they spent yet (see [`LEARN_SECS`]); `None` after.
    pub learning_until: Option<u64>,
}

/// A budget whose figures did not change for this long is not being spent; from then
/// on the nodes without a share take turns of this length, one node each, to spend
/// one request at a time, so that what is left is not stranded with members that have
/// nothing to fetch.
pub const QUIET_SECS: u64 = 1;
/// A request waits at most this long for its node's turn; a later turn is answered
/// held, with the turn as its retry time.
pub const MAX_TURN_WAIT_SECS: u64 = 5;

/// A budget nobody in the fleet has figures of yet, spent with a token other members
/// said they spend too: this many of them (ranked by the budget, [`spender_rank`]) may
/// spend it at once, one request each until figures come; twice as many may after
/// each [`FIRST_FIGURES_WAIT_MS`] without figures (the first ones may have nothing to
/// fetch on it). The first answer's figures are news at once, and every member that
/// said it spends the budget counts as a spender for [`LEARN_SECS`], so a fleet that
/// starts at once on a budget near its end sends a few blind requests, not one per
/// node.
pub const FIRST_SPENDERS: usize = 4;
/// How long each doubling of the members that may spend a budget without figures waits.
pub const FIRST_FIGURES_WAIT_MS: u64 = 500;
/// For this long after a node first has a window's figures, every member that said it
/// spends the budget counts as a spender (see [`BudgetBook::share`]): who is about to
/// spend shows only as their news arrives.
pub const LEARN_SECS: u64 = 2;

/// `me`'s rank among `sharers` (and itself) for spending `budget` on `resource` before
/// anyone has figures of it: a rendezvous ranking, the same order on every member.
pub fn spender_rank(budget: BudgetId, resource: &str, me: PeerId, sharers: &[PeerId]) -> usize {
    let rank = |p: &PeerId| {
        let mut h = Sha256::new();
        h.update(budget);
        h.update(resource.as_bytes());
        h.update(p.to_bytes());
        h.finalize()
    };
    let mine = rank(&me);
    sharers
        .iter()
        .filter(|p| **p != me)
        .filter(|p| rank(p) < mine)
        .count()
}

/// How long a member of `rank` waits for a budget's first figures before it may send a
/// request without them: 0 for the first [`FIRST_SPENDERS`], then one more
/// [`FIRST_FIGURES_WAIT_MS`] for each doubling.
pub fn figures_wait_ms(rank: usize) -> u64 {
    let (mut width, mut tier) = (FIRST_SPENDERS.max(1), 0u64);
    while rank >= width {
        width = width.saturating_mul(2);
        tier += 1;
    }
    tier * FIRST_FIGURES_WAIT_MS
}

/// A request on a budget this node (of `rank`, see [`spender_rank`]) has no figures
/// of, after its first such request has waited `waited_ms`: one at a time (its answer
/// brings them), once its [`figures_wait_ms`] has passed.
pub fn before_figures(rank: usize, in_flight: u64, waited_ms: u64) -> Spend {
    let wait = figures_wait_ms(rank);
    if in_flight > 0 {
        Spend::Wait { until: None }
    } else if waited_ms >= wait {
        Spend::Go
    } else {
        Spend::AwaitFigures {
            for_ms: wait - waited_ms,
        }
    }
}

/// What a request on a budget does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Send it.
    Go,
    /// Wait until one of ours ends, members' figures change, or `until` (unix
    /// seconds: this node's turn).
    Wait {
        /// This node's turn, if nothing changes before.
        until: Option<u64>,
    },
    /// Wait for the budget's first figures (news, or one of ours ending), at most
    /// `for_ms` more.
    AwaitFigures {
        /// Milliseconds left to wait.
        for_ms: u64,
    },
    /// Held until `until` (unix seconds): nothing is left above the reserve (the
    /// window's end), or this node's turn is further away than [`MAX_TURN_WAIT_SECS`].
    Held {
        /// When to try again.
        until: u64,
    },
}

/// Whether a request on a budget may go now, given this node's `share` of it (`None`:
/// no figures) and its requests `in_flight` on it.
pub fn may_spend(share: Option<Share>, in_flight: u64, now_secs: u64) -> Spend {
    let Some(s) = share else {
        return Spend::Go;
    };
    if s.left == 0 {
        return Spend::Held { until: s.reset };
    }
    if in_flight < s.requests {
        return Spend::Go;
    }
    if in_flight > 0 {
        // The end of one of ours wakes us.
        return Spend::Wait { until: None };
    }
    // No share: once the budget is quiet, turn `k` is rank `(left + k) % size`'s.
    let size = s.fleet.size.max(1) as u64;
    let rank = (s.fleet.rank as u64).min(size - 1);
    let from = now_secs.max(s.quiet_at);
    let k0 = (from - s.quiet_at) / QUIET_SECS;
    let mine = (rank + size - s.left % size) % size;
    let k = k0 + (mine + size - k0 % size) % size;
    let turn = s.quiet_at.saturating_add(k.saturating_mul(QUIET_SECS));
    if turn <= now_secs {
        Spend::Go
    } else if turn - now_secs <= MAX_TURN_WAIT_SECS {
        Spend::Wait { until: Some(turn) }
    } else if let Some(learnt) = s.learning_until.filter(|t| *t > now_secs) {
        // Counting every member that may spend makes a turn far away; once the fleet
        // has shown who does spend, it may be near: looked at again then, not held.
        Spend::Wait {
            until: Some(learnt),
        }
    } else {
        Spend::Held {
            until: turn.min(s.reset),
        }
    }
}

/// A hold one of our answers started, as the ledger records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewHold {
    /// Until when (unix seconds).
    pub until: u64,
    /// For a secondary limit.
    pub secondary: bool,
    /// Secondary limits just before it.
    pub streak: u8,
}

struct Slot {
    entry: BudgetEntry,
    source: Source,
    /// When the figures last changed (unix seconds).
    changed: u64,
    /// Members that said they spent this budget in the current window.
    spenders: BTreeSet<PeerId>,
    /// When this node first had figures of the current window (unix seconds).
    window_since: u64,
    /// This node told members it spends the budget this window (its news names it as
    /// a spender).
    told_spending: bool,
}

/// Every budget this node spends or hears of, by id and resource.
#[derive(Default)]
pub struct BudgetBook {
    slots: HashMap<(BudgetId, String), Slot>,
    /// Slots changed by our own answers since the last news.
    news: BTreeSet<(BudgetId, String)>,
    /// Budgets and resources (as the request's path names them) GitHub answered us on,
    /// with figures or without (GitHub Enterprise Server without rate limits sends
    /// none), at most [`MAX_BUDGETS`].
    answered: HashSet<(BudgetId, String)>,
}

impl BudgetBook {
    /// Records an answer GitHub gave on `budget` for `resource` at `now_secs`, and the
    /// hold it started, if any.
    pub fn observe(
        &mut self,
        budget: BudgetId,
        resource: &str,
        resp: &UpstreamResponse,
        hold: Option<NewHold>,
        now_secs: u64,
    ) {
        let rl = RateLimit::from_headers(&resp.headers).unwrap_or_default();
        let resource = rl.resource.unwrap_or(resource).to_string();
        let (Some(limit), Some(remaining), Some(reset)) = (rl.limit, rl.remaining, rl.reset) else {
            // A refusal without the figures (a secondary limit's) still holds.
            if let Some(hold) = hold {
                self.hold(budget, &resource, hold, now_secs);
            }
            return;
        };
        let hold = hold.unwrap_or_default();
        let entry = BudgetEntry {
            budget: ByteBuf::from(budget.to_vec()),
            resource: resource.clone(),
            limit,
            remaining: remaining.min(limit),
            used: rl.used.unwrap_or(limit - remaining.min(limit)).min(limit),
            reset,
            held_until: hold.until,
            secondary: hold.secondary,
            streak: hold.streak,
        };
        self.record(entry, Source::Local, now_secs);
    }

    /// A hold without figures (a refusal that named none).
    fn hold(&mut self, budget: BudgetId, resource: &str, hold: NewHold, now_secs: u64) {
        let key = (budget, resource.to_string());
        let entry = match self.slots.get(&key) {
            Some(s) => BudgetEntry {
                held_until: hold.until,
                secondary: hold.secondary,
                streak: hold.streak,
                ..s.entry.clone()
            },
            None => BudgetEntry {
                budget: ByteBuf::from(budget.to_vec()),
                resource: resource.to_string(),
                limit: 0,
                remaining: 0,
                used: 0,
                reset: hold.until,
                held_until: hold.until,
                secondary: hold.secondary,
                streak: hold.streak,
            },
        };
        self.record(entry, Source::Local, now_secs);
    }

    /// Merges what members said (already checked). Not news: only what we saw
    /// ourselves is gossiped, so that the ledger's traffic follows upstream calls.
    /// `spender`: the member that spent them, if its message named it.
    pub fn heard(
        &mut self,
        entries: &[BudgetEntry],
        spender: Option<PeerId>,
        now_secs: u64,
    ) -> usize {
        let mut changed = 0;
        for e in entries {
            changed += usize::from(self.merge(e, Source::Fleet, now_secs));
            let (Some(p), Ok(id)) = (spender, <BudgetId>::try_from(e.budget.as_slice())) else {
                continue;
            };
            if let Some(slot) = self.slots.get_mut(&(id, e.resource.clone())) {
                if slot.entry.reset == e.reset && slot.spenders.len() < MAX_SPENDERS {
                    slot.spenders.insert(p);
                }
            }
        }
        changed
    }

    fn record(&mut self, entry: BudgetEntry, source: Source, now_secs: u64) {
        if self.merge(&entry, source, now_secs) {
            if let Ok(id) = <BudgetId>::try_from(entry.budget.as_slice()) {
                self.news.insert((id, entry.resource));
            }
        }
    }

    /// Merges `entry`; true when it changed what we know.
    fn merge(&mut self, entry: &BudgetEntry, source: Source, now_secs: u64) -> bool {
        let Ok(id) = <BudgetId>::try_from(entry.budget.as_slice()) else {
            return false;
        };
        let key = (id, entry.resource.clone());
        if let Some(slot) = self.slots.get_mut(&key) {
            let window = slot.entry.reset;
            let changed = slot.entry.merge(entry);
            if changed {
                slot.source = source;
                slot.changed = now_secs;
            }
            if slot.entry.reset != window {
                slot.spenders.clear();
                slot.window_since = now_secs;
                slot.told_spending = false;
            }
            return changed;
        }
        if self.slots.len() >= MAX_BUDGETS {
            // The window that ended first goes first: its figures mean nothing now.
            if let Some(oldest) = self
                .slots
                .iter()
                .min_by_key(|(_, s)| s.entry.reset.max(s.entry.held_until))
                .map(|(k, _)| k.clone())
            {
                self.slots.remove(&oldest);
                self.news.remove(&oldest);
            }
        }
        self.slots.insert(
            key,
            Slot {
                entry: entry.clone(),
                source,
                changed: now_secs,
                spenders: BTreeSet::new(),
                window_since: now_secs,
                told_spending: false,
            },
        );
        true
    }

    /// GitHub answered a request on `budget` for `resource` (the resource its path
    /// names, which the answer's own may not be).
    pub fn answered(&mut self, budget: BudgetId, resource: &str) {
        let key = (budget, resource.to_string());
        if self.answered.contains(&key) {
            return;
        }
        if self.answered.len() >= MAX_BUDGETS {
            // Forgetting costs at most one more wait for figures.
            self.answered.clear();
        }
        self.answered.insert(key);
    }

    /// Whether this node has had figures of `budget` for `resource` (a window that
    /// ended since is known too: GitHub starts the next one full), or an answer on it.
    pub fn knows(&self, budget: BudgetId, resource: &str) -> bool {
        let key = (budget, resource.to_string());
        self.slots.contains_key(&key) || self.answered.contains(&key)
    }

    /// What this node knows of every window not over yet, at most one message's worth,
    /// for a member that just joined (its hello carries it): ledger messages carry only
    /// news, so a newcomer would otherwise know nothing of a budget until someone
    /// spends it again, and spend it as if it were alone.
    pub fn snapshot(&self, now_secs: u64) -> Vec<BudgetEntry> {
        let mut current: Vec<&Slot> = self
            .slots
            .values()
            .filter(|s| s.entry.reset.max(s.entry.held_until) > now_secs)
            .collect();
        // The budgets nearest their end matter most.
        current.sort_by_key(|s| (s.entry.remaining, s.entry.reset));
        current
            .into_iter()
            .take(MAX_LEDGER_ENTRIES)
            .map(|s| s.entry.clone())
            .collect()
    }

    /// What changed from our own answers since last asked, at most one message's worth.
    pub fn news(&mut self) -> Vec<BudgetEntry> {
        let keys: Vec<_> = self.news.iter().take(MAX_LEDGER_ENTRIES).cloned().collect();
        keys.iter()
            .filter_map(|k| {
                self.news.remove(k);
                self.slots.get_mut(k).map(|s| {
                    s.told_spending = true;
                    s.entry.clone()
                })
            })
            .collect()
    }

    /// A request of ours waits for its share of `budget` for `resource`: members must
    /// count us among its spenders, or each would share it out as if we wanted none
    /// (and we would spend as if we had a share). True when that is news (once per
    /// window, until we have said so): the node should say it at once.
    pub fn wants(&mut self, budget: BudgetId, resource: &str) -> bool {
        let key = (budget, resource.to_string());
        match self.slots.get(&key) {
            Some(s) if !s.told_spending && !self.news.contains(&key) => {
                self.news.insert(key);
                true
            }
            _ => false,
        }
    }

    /// Until when `budget` is held for `resource` at `now_secs` (by a hold on the
    /// resource, or a secondary limit on any of its resources).
    pub fn held_until(&self, budget: BudgetId, resource: &str, now_secs: u64) -> Option<u64> {
        self.slots
            .iter()
            .filter(|((id, r), s)| *id == budget && (r == resource || s.entry.secondary))
            .map(|(_, s)| s.entry.held_until)
            .filter(|until| *until > now_secs)
            .max()
    }

    /// The streak of the latest secondary limit anyone in the fleet got on `budget`,
    /// if it is on or ended less than [`REPEAT_WINDOW`] before `now_secs`.
    pub fn secondary_streak(&self, budget: BudgetId, now_secs: u64) -> Option<u32> {
        self.slots
            .iter()
            .filter(|((id, _), s)| *id == budget && s.entry.secondary)
            .filter(|(_, s)| now_secs < s.entry.held_until.saturating_add(REPEAT_WINDOW.as_secs()))
            .max_by_key(|(_, s)| (s.entry.held_until, s.entry.streak))
            .map(|(_, s)| u32::from(s.entry.streak))
    }

    /// The window's figures for `budget` and `resource` when its `remaining` is down to
    /// `reserve` (the window not over yet; a reserve of 0: nothing left).
    pub fn at_reserve(
        &self,
        budget: BudgetId,
        resource: &str,
        reserve: u64,
        now_secs: u64,
    ) -> Option<&BudgetEntry> {
        let slot = self.slots.get(&(budget, resource.to_string()))?;
        // With no reserve, a window GitHub said is spent (`remaining: 0` on the last
        // request it answered) holds too: the next request would only be refused.
        (slot.entry.reset > now_secs && slot.entry.remaining <= reserve).then_some(&slot.entry)
    }

    /// How many requests on `budget` for `resource` this node (`me`) may have in
    /// flight at `now_secs`, when the budget is near its end ([`NEAR_END_PER_NODE`]
    /// per spender): an equal share among its spenders (the members that said they
    /// spent it this window, and us) of half of what the fleet knows is left above
    /// `reserve` (rounded down, but the last request can be spent), the remainder to
    /// the lowest ranks. The spenders' requests in flight then fit in what GitHub will
    /// still answer even when their figures are a round trip apart (each round spends
    /// at most half of what is left), where a burst on a budget near its end would
    /// otherwise be refused once per request already on its way. For [`LEARN_SECS`]
    /// after this node first had the window's figures, `sharers` (members that said
    /// they spend the budget) count as spenders too. `None`: no limit (no figures for
    /// this window, or plenty left).
    pub fn share(
        &self,
        budget: BudgetId,
        resource: &str,
        reserve: u64,
        me: PeerId,
        sharers: &[PeerId],
        now_secs: u64,
    ) -> Option<Share> {
        let slot = self.slots.get(&(budget, resource.to_string()))?;
        if slot.entry.reset <= now_secs {
            return None;
        }
        let left = slot.entry.remaining.saturating_sub(reserve);
        // Who else is about to spend it shows only as their news arrives: until then
        // every member that said it spends the budget counts (a fleet that starts at
        // once would otherwise find a budget near its end far from it, and each node
        // spend as if alone).
        let learnt = slot.window_since.saturating_add(LEARN_SECS);
        let learning = now_secs < learnt && !sharers.is_empty();
        let fleet = if learning {
            let everyone: BTreeSet<&PeerId> = slot.spenders.iter().chain(sharers).collect();
            Fleet::among(me, everyone)
        } else {
            Fleet::among(me, &slot.spenders)
        };
        if left >= (fleet.size as u64).saturating_mul(NEAR_END_PER_NODE) {
            return None;
        }
        // Halved down, so that at the very end (3, 2, 1 left) views a round trip
        // apart agree: one request, rank 0's.
        let now = (left / 2).max(left.min(1));
        let size = fleet.size as u64;
        let rank = fleet.rank as u64;
        Some(Share {
            requests: now / size + u64::from(rank < now % size),
            left,
            reset: slot.entry.reset,
            // `changed` is a whole second: quiet starts a whole turn after its end.
            quiet_at: slot.changed.saturating_add(1 + QUIET_SECS),
            fleet,
            learning_until: learning.then_some(learnt),
        })
    }

    /// Every budget, for stats (held ones carry their hold).
    pub fn view(&self, now_secs: u64) -> Vec<BudgetView> {
        let mut out: Vec<BudgetView> = self
            .slots
            .iter()
            .map(|((id, resource), s)| BudgetView {
                budget: id.iter().map(|b| format!("{b:02x}")).collect(),
                resource: resource.clone(),
                limit: s.entry.limit,
                remaining: s.entry.remaining,
                used: s.entry.used,
                reset: s.entry.reset,
                held_until: if s.entry.held_until > now_secs {
                    Some(s.entry.held_until)
                } else {
                    // Spent: held until the window ends.
                    (s.entry.remaining == 0 && s.entry.reset > now_secs).then_some(s.entry.reset)
                },
                source: s.source,
                members_spending: s.spenders.len(),
            })
            .collect();
        out.sort_by(|a, b| (&a.budget, &a.resource).cmp(&(&b.budget, &b.resource)));
        out
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
