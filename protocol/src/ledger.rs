//! The fleet's rate-limit ledger (contract §10): what GitHub said of each budget, as
//! members share it, and the one rule every member merges it by.
//!
//! A budget is named by a keyed hash ([`crate::keys::budget_id`]), never by its
//! token: per token for personal and app tokens, per repository for Actions job tokens
//! (`ghs_…`), which GitHub counts per repository.

use serde::{Deserialize, Serialize};
pub use serde_bytes::ByteBuf;

/// Bytes of a budget id.
pub const BUDGET_ID_LEN: usize = 16;
/// Most entries in one ledger message.
pub const MAX_LEDGER_ENTRIES: usize = 64;
/// Longest resource name (`core`, `graphql`, `code_scanning_autofix`, …).
pub const MAX_RESOURCE_LEN: usize = 32;
/// How far ahead a reset or a hold may lie: GitHub's windows are an hour long, holds
/// are at most an hour; beyond that (plus clock skew) an entry is not believed.
pub const MAX_AHEAD_SECS: u64 = 3600 + 300;

/// What one member knows of one budget and resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetEntry {
    /// The budget's id ([`BUDGET_ID_LEN`] bytes).
    pub budget: ByteBuf,
    /// `x-ratelimit-resource`.
    pub resource: String,
    /// `x-ratelimit-limit`.
    pub limit: u64,
    /// `x-ratelimit-remaining`.
    pub remaining: u64,
    /// `x-ratelimit-used`.
    pub used: u64,
    /// `x-ratelimit-reset`: when the window ends (unix seconds).
    pub reset: u64,
    /// Until when requests on this budget and resource are held (unix seconds; 0:
    /// none): a refusal somebody in the fleet got.
    pub held_until: u64,
    /// The hold is for a secondary limit (which also holds the token's other
    /// resources, and backs off on repeats).
    pub secondary: bool,
    /// How many secondary limits came just before this hold's (0: the first), so that
    /// the next one anywhere in the fleet holds twice as long. Entries from members
    /// that predate the field read as first offences.
    #[serde(default)]
    pub streak: u8,
}

/// Gossip: what a member learned of the budgets it spends since it last said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// At most [`MAX_LEDGER_ENTRIES`].
    pub entries: Vec<BudgetEntry>,
    /// The member that spent them (its peer id's bytes): gossip is anonymous, and the
    /// members sharing out a budget near its end are the ones that spend it. Messages
    /// from members that predate the field name nobody.
    #[serde(default)]
    pub spender: Option<ByteBuf>,
}

/// Longest peer id, in bytes (an identity multihash of an Ed25519 key is 38).
pub const MAX_SPENDER_LEN: usize = 64;

/// Why a ledger entry from a peer is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// More than [`MAX_LEDGER_ENTRIES`].
    #[error("more than {MAX_LEDGER_ENTRIES} ledger entries")]
    TooMany,
    /// A budget id of the wrong length or a resource name that is not one.
    #[error("bad budget id or resource name")]
    BadName,
    /// Figures that cannot be (more remaining than the limit).
    #[error("impossible rate-limit figures")]
    Impossible,
    /// A reset or hold further ahead than [`MAX_AHEAD_SECS`].
    #[error("reset or hold too far in the future")]
    FromFuture,
}

impl Ledger {
    /// Checks every entry as [`BudgetEntry::check`] does, and the count.
    pub fn check(&self, now_secs: u64) -> Result<(), LedgerError> {
        if self.entries.len() > MAX_LEDGER_ENTRIES {
            return Err(LedgerError::TooMany);
        }
        if self
            .spender
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SPENDER_LEN)
        {
            return Err(LedgerError::BadName);
        }
        self.entries.iter().try_for_each(|e| e.check(now_secs))
    }
}

impl BudgetEntry {
    /// What every receiver checks before believing an entry.
    pub fn check(&self, now_secs: u64) -> Result<(), LedgerError> {
        let name_ok = !self.resource.is_empty()
            && self.resource.len() <= MAX_RESOURCE_LEN
            && self
                .resource
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'*');
        if self.budget.len() != BUDGET_ID_LEN || !name_ok {
            return Err(LedgerError::BadName);
        }
        if self.remaining > self.limit || self.used > self.limit {
            return Err(LedgerError::Impossible);
        }
        let horizon = now_secs.saturating_add(MAX_AHEAD_SECS);
        if self.reset > horizon || self.held_until > horizon {
            return Err(LedgerError::FromFuture);
        }
        Ok(())
    }

    /// Whether `self` and `other` speak of the same budget and resource.
    pub fn same_budget(&self, other: &BudgetEntry) -> bool {
        self.budget == other.budget && self.resource == other.resource
    }

    /// Merges what another member says of the same budget and resource: a later
    /// window replaces an earlier one; within one window the lowest `remaining` (and
    /// highest `used`) wins; the later hold wins whatever its window (a secondary hold
    /// is not tied to one). Returns whether anything changed.
    pub fn merge(&mut self, other: &BudgetEntry) -> bool {
        let before = self.clone();
        if other.reset > self.reset {
            let held = (self.held_until, self.secondary, self.streak);
            *self = other.clone();
            if held > (self.held_until, self.secondary, self.streak) {
                (self.held_until, self.secondary, self.streak) = held;
            }
        } else if other.reset == self.reset {
            self.remaining = self.remaining.min(other.remaining);
            self.used = self.used.max(other.used);
            self.limit = self.limit.max(other.limit);
        }
        // Compared whole, so that two holds ending in the same second merge alike on
        // every member whatever the order.
        let theirs = (other.held_until, other.secondary, other.streak);
        if theirs > (self.held_until, self.secondary, self.streak) {
            (self.held_until, self.secondary, self.streak) = theirs;
        }
        *self != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(remaining: u64, reset: u64, held_until: u64) -> BudgetEntry {
        BudgetEntry {
            budget: ByteBuf::from(vec![7; BUDGET_ID_LEN]),
            resource: "core".into(),
            limit: 5000,
            remaining,
            used: 5000 - remaining,
            reset,
            held_until,
            secondary: false,
            streak: 0,
        }
    }

    #[test]
    fn the_lowest_remaining_of_a_window_and_the_latest_window_win() {
        let mut a = entry(100, 1000, 0);
        assert!(a.merge(&entry(40, 1000, 0)));
        assert_eq!((a.remaining, a.used), (40, 4960));
        assert!(
            !a.merge(&entry(90, 1000, 0)),
            "a higher remaining of the window is old news"
        );
        assert!(a.merge(&entry(4999, 4600, 0)), "a new window");
        assert_eq!(a.remaining, 4999);
        assert!(
            !a.merge(&entry(0, 1000, 0)),
            "an earlier window says nothing now"
        );
        // Merging is order-free: every member ends with the same entry.
        let news = [
            entry(10, 1000, 0),
            entry(4000, 4600, 0),
            entry(3000, 4600, 2000),
        ];
        let mut one = entry(500, 1000, 0);
        let mut two = entry(500, 1000, 0);
        for n in &news {
            one.merge(n);
        }
        for n in news.iter().rev() {
            two.merge(n);
        }
        assert_eq!(one, two);
        assert_eq!(
            (one.remaining, one.reset, one.held_until),
            (3000, 4600, 2000)
        );
    }

    #[test]
    fn a_hold_outlives_its_window_and_the_later_hold_wins() {
        let mut a = entry(0, 1000, 1000);
        let mut secondary = entry(4000, 1000, 1600);
        secondary.secondary = true;
        secondary.streak = 2;
        assert!(a.merge(&secondary));
        assert_eq!((a.held_until, a.secondary, a.streak), (1600, true, 2));
        assert!(a.merge(&entry(4999, 4600, 0)), "a new window");
        assert_eq!(
            (a.held_until, a.secondary, a.streak),
            (1600, true, 2),
            "the hold and its streak stay"
        );
        assert!(!a.merge(&entry(4999, 4600, 1200)));
    }

    #[test]
    fn holds_ending_in_the_same_second_merge_alike_in_any_order() {
        let mut first = entry(4000, 1000, 1600);
        first.secondary = true;
        first.streak = 1;
        let mut second = entry(4000, 1000, 1600);
        second.secondary = true;
        second.streak = 2;
        let (mut a, mut b) = (first.clone(), second.clone());
        a.merge(&second);
        b.merge(&first);
        assert_eq!(a, b);
        assert_eq!(a.streak, 2);
    }

    #[test]
    fn an_entry_without_a_streak_reads_as_a_first_offence() {
        // The entry as members before the streak wrote it: the same map, one key less.
        #[derive(Serialize)]
        struct Before {
            budget: ByteBuf,
            resource: String,
            limit: u64,
            remaining: u64,
            used: u64,
            reset: u64,
            held_until: u64,
            secondary: bool,
        }
        let before = Before {
            budget: ByteBuf::from(vec![7; BUDGET_ID_LEN]),
            resource: "core".into(),
            limit: 5000,
            remaining: 0,
            used: 5000,
            reset: 1000,
            held_until: 1060,
            secondary: true,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&before, &mut bytes).unwrap();
        let read: BudgetEntry = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(
            (read.held_until, read.secondary, read.streak),
            (1060, true, 0)
        );
    }

    #[test]
    fn entries_a_peer_could_not_have_seen_are_refused() {
        let now = 10_000;
        assert_eq!(entry(5, now + 60, 0).check(now), Ok(()));
        let mut short = entry(5, now, 0);
        short.budget = ByteBuf::from(vec![1; 4]);
        assert_eq!(short.check(now), Err(LedgerError::BadName));
        let mut label = entry(5, now, 0);
        label.resource = "Core\n".into();
        assert_eq!(label.check(now), Err(LedgerError::BadName));
        let mut more = entry(5, now, 0);
        more.remaining = 6000;
        assert_eq!(more.check(now), Err(LedgerError::Impossible));
        assert_eq!(
            entry(5, now + MAX_AHEAD_SECS + 1, 0).check(now),
            Err(LedgerError::FromFuture)
        );
        assert_eq!(
            entry(5, now, now + MAX_AHEAD_SECS + 1).check(now),
            Err(LedgerError::FromFuture)
        );
        let many = Ledger {
            entries: vec![entry(5, now, 0); MAX_LEDGER_ENTRIES + 1],
            spender: None,
        };
        assert_eq!(many.check(now), Err(LedgerError::TooMany));
        let named = Ledger {
            entries: vec![entry(5, now, 0)],
            spender: Some(ByteBuf::from(vec![0; MAX_SPENDER_LEN + 1])),
        };
        assert_eq!(named.check(now), Err(LedgerError::BadName));
    }
}
