//! This node's side of the fleet's rate-limit ledger (contract §10): what GitHub said
//! of every budget the node spends, merged with what members say of the same budgets,
//! and the holds and the reserve that follow from it.
//!
//! The merge rule is the protocol's ([`BudgetEntry::merge`]); this book keeps the
//! entries (bounded), remembers which of them changed from our own answers (the news
//! the node gossips, at most once a second), and answers the two questions a request
//! asks before it goes upstream: is this budget held, and is it down to the reserve.

use std::collections::{BTreeSet, HashMap};

use ghmesh_protocol::ledger::{BudgetEntry, ByteBuf, BUDGET_ID_LEN, MAX_LEDGER_ENTRIES};
use serde::Serialize;

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
}

/// Every budget this node spends or hears of, by id and resource.
#[derive(Default)]
pub struct BudgetBook {
    slots: HashMap<(BudgetId, String), Slot>,
    /// Slots changed by our own answers since the last news.
    news: BTreeSet<(BudgetId, String)>,
}

impl BudgetBook {
    /// Records an answer GitHub gave on `budget` for `resource`, and the hold it
    /// started, if any.
    pub fn observe(
        &mut self,
        budget: BudgetId,
        resource: &str,
        resp: &UpstreamResponse,
        hold: Option<NewHold>,
    ) {
        let rl = RateLimit::from_headers(&resp.headers).unwrap_or_default();
        let resource = rl.resource.unwrap_or(resource).to_string();
        let (Some(limit), Some(remaining), Some(reset)) = (rl.limit, rl.remaining, rl.reset) else {
            // A refusal without the figures (a secondary limit's) still holds.
            if let Some(hold) = hold {
                self.hold(budget, &resource, hold);
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
        self.record(entry, Source::Local);
    }

    /// A hold without figures (a refusal that named none).
    fn hold(&mut self, budget: BudgetId, resource: &str, hold: NewHold) {
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
        self.record(entry, Source::Local);
    }

    /// Merges what members said (already checked). Not news: only what we saw
    /// ourselves is gossiped, so that the ledger's traffic follows upstream calls.
    pub fn heard(&mut self, entries: &[BudgetEntry]) -> usize {
        entries
            .iter()
            .filter(|e| self.merge(e, Source::Fleet))
            .count()
    }

    fn record(&mut self, entry: BudgetEntry, source: Source) {
        if self.merge(&entry, source) {
            if let Ok(id) = <BudgetId>::try_from(entry.budget.as_slice()) {
                self.news.insert((id, entry.resource));
            }
        }
    }

    /// Merges `entry`; true when it changed what we know.
    fn merge(&mut self, entry: &BudgetEntry, source: Source) -> bool {
        let Ok(id) = <BudgetId>::try_from(entry.budget.as_slice()) else {
            return false;
        };
        let key = (id, entry.resource.clone());
        if let Some(slot) = self.slots.get_mut(&key) {
            let changed = slot.entry.merge(entry);
            if changed {
                slot.source = source;
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
            },
        );
        true
    }

    /// What changed from our own answers since last asked, at most one message's worth.
    pub fn news(&mut self) -> Vec<BudgetEntry> {
        let keys: Vec<_> = self.news.iter().take(MAX_LEDGER_ENTRIES).cloned().collect();
        keys.iter()
            .filter_map(|k| {
                self.news.remove(k);
                self.slots.get(k).map(|s| s.entry.clone())
            })
            .collect()
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
            .max_by_key(|(_, s)| s.entry.held_until)
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
            })
            .collect();
        out.sort_by(|a, b| (&a.budget, &a.resource).cmp(&(&b.budget, &b.resource)));
        out
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
