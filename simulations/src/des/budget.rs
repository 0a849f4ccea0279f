//! The shared token's budget in simulated time (`--budget N`): GitHub spends one
//! request of the fleet's one token per upstream call and refuses the calls after the
//! last; each node keeps the daemon's own `BudgetBook` and, unless `--no-ledger`,
//! gossips it as the daemon does (a refusal at once, other news once a second). A
//! node whose book holds the budget sends nothing.

use ghmesh_node::upstream::ledger::{
    before_figures, may_spend, spender_rank, BudgetId, NewHold, Spend,
};
use ghmesh_node::upstream::UpstreamResponse;
use ghmesh_protocol::ledger::BudgetEntry;

use libp2p::PeerId;

use super::{Des, Ev, Us};

/// The one token's budget id (its name does not matter here).
const BUDGET: BudgetId = [0x5a; 16];
const RESOURCE: &str = "core";
/// Simulated time starts at this unix second; the window ends an hour later.
const EPOCH_SECS: u64 = 1_700_000_000;
const WINDOW_SECS: u64 = 3600;
/// How often a node's ledger says what changed (the daemon's `LEDGER_EVERY`).
const LEDGER_EVERY_US: u64 = 1_000_000;

impl Des {
    fn unix_secs(&self) -> u64 {
        EPOCH_SECS + self.now / 1_000_000
    }

    /// Whether `n`'s book holds the budget now: a refusal's hold, or a window known
    /// to be spent (the daemon's `fleet_held` with no reserve).
    pub(super) fn budget_held(&self, n: usize) -> bool {
        let (book, now) = (&self.peers[n].budgets, self.unix_secs());
        self.budget_left.is_some()
            && (book.held_until(BUDGET, RESOURCE, now).is_some()
                || book.at_reserve(BUDGET, RESOURCE, 0, now).is_some())
    }

    /// Whether a call of `n` may go beside those it has on their way (the daemon's
    /// `take_share`, from the same book and rules; every member's hello said it spends
    /// the one token, so before any figures the budget's first spenders go one call
    /// at a time and the others wait for figures); always with `--no-ledger`, which
    /// models the daemon before the ledger.
    pub(super) fn budget_spend(&mut self, n: usize) -> Spend {
        if self.budget_left.is_none() || !self.net.ledger {
            return Spend::Go;
        }
        let in_flight = self.in_flight(n);
        let now_us = self.now;
        let now = self.unix_secs();
        let p = &mut self.peers[n];
        let sharers = p.book.members();
        if !sharers.is_empty() && !p.budgets.knows(BUDGET, RESOURCE) {
            let rank = spender_rank(BUDGET, RESOURCE, p.id, &sharers);
            let since = *p.figures_since.get_or_insert(now_us);
            return before_figures(rank, in_flight, (now_us - since) / 1000);
        }
        let share = p.budgets.share(BUDGET, RESOURCE, 0, p.id, &sharers, now);
        may_spend(share, in_flight, now)
    }

    /// The simulated time of unix second `secs`.
    pub(super) fn at_unix_secs(&self, secs: u64) -> Us {
        secs.saturating_sub(EPOCH_SECS)
            .saturating_mul(1_000_000)
            .max(self.now)
    }

    /// GitHub's answer to an upstream call of `n`: true when served, false when
    /// refused (the budget spent). A full answer spends a request; a conditional one
    /// answered 304 spends none, as on GitHub, though it is refused like any other
    /// once nothing is left. `n`'s book records it; a refusal is said at once, other
    /// news at the node's next ledger tick.
    pub(super) fn spend(&mut self, n: usize, conditional: bool) -> bool {
        let Some(left) = self.budget_left else {
            return true;
        };
        let served = left > 0;
        let remaining = if conditional {
            left
        } else {
            left.saturating_sub(1)
        };
        self.budget_left = Some(remaining);
        let resp = self.github_answer(served, remaining);
        let hold = (!served).then_some(NewHold {
            until: EPOCH_SECS + WINDOW_SECS,
            secondary: false,
            streak: 0,
        });
        let now = self.unix_secs();
        // First figures are news at once when members spend the budget too (here every
        // member spends the one token), as in the daemon.
        let first_figures = !self.peers[n].budgets.knows(BUDGET, RESOURCE)
            && !self.peers[n].book.members().is_empty();
        self.peers[n]
            .budgets
            .observe(BUDGET, RESOURCE, &resp, hold, now);
        self.peers[n].budgets.answered(BUDGET, RESOURCE);
        self.refusals += u64::from(!served);
        if !self.net.ledger {
            let _ = self.peers[n].budgets.news();
        } else if !served || first_figures || self.near_end(n) {
            // A refusal, the budget's first figures, or a budget near its end: said at
            // once, as the daemon does.
            self.publish_ledger(n);
        } else if !self.peers[n].ledger_tick {
            self.peers[n].ledger_tick = true;
            self.at(self.now + LEDGER_EVERY_US, Ev::LedgerTick(n));
        }
        served
    }

    /// GitHub's answer with its rate-limit figures.
    fn github_answer(&self, served: bool, remaining: u64) -> UpstreamResponse {
        let limit = self.net.budget.unwrap_or(0).max(1);
        UpstreamResponse {
            status: if served { 200 } else { 403 },
            headers: vec![
                ("x-ratelimit-limit".into(), limit.to_string()),
                ("x-ratelimit-remaining".into(), remaining.to_string()),
                (
                    "x-ratelimit-used".into(),
                    (limit - remaining.min(limit)).to_string(),
                ),
                (
                    "x-ratelimit-reset".into(),
                    (EPOCH_SECS + WINDOW_SECS).to_string(),
                ),
                ("x-ratelimit-resource".into(), RESOURCE.into()),
            ],
            body: Default::default(),
        }
    }

    /// Every node starts knowing the window's figures and that every other node spends
    /// the budget (`--budget-known`).
    pub(super) fn knows_the_window(&mut self) {
        let Some(left) = self.net.budget else {
            return;
        };
        let resp = self.github_answer(true, left);
        let now = self.unix_secs();
        let ids: Vec<PeerId> = self.peers.iter().map(|p| p.id).collect();
        for p in &mut self.peers {
            p.budgets.observe(BUDGET, RESOURCE, &resp, None, now);
            let told = p.budgets.news();
            for id in &ids {
                p.budgets.heard(&told, Some(*id), now);
            }
        }
    }

    /// A call of `n` waits for its share: whether members must now hear that `n`
    /// spends the budget (the daemon's `BudgetBook::wants`, said at once).
    pub(super) fn budget_wanted(&mut self, n: usize) -> bool {
        self.net.ledger && self.peers[n].budgets.wants(BUDGET, RESOURCE)
    }

    /// A hello carries what each side knows of the budget's window, as the daemon's
    /// does: a member that joins knows the figures before its first call.
    pub(super) fn hello_ledgers(&mut self, a: usize, b: usize) {
        if self.budget_left.is_none() || !self.net.ledger {
            return;
        }
        let now = self.unix_secs();
        let told = [
            (b, self.peers[a].budgets.snapshot(now)),
            (a, self.peers[b].budgets.snapshot(now)),
        ];
        for (to, entries) in told {
            if self.peers[to].budgets.heard(&entries, None, now) > 0 {
                self.share_freed(to);
            }
        }
    }

    /// Gossips what changed in `n`'s book, if anything did.
    pub(super) fn publish_ledger(&mut self, n: usize) {
        let entries = self.peers[n].budgets.news();
        if entries.is_empty() {
            return;
        }
        self.ledger_messages += 1;
        let spender = self.peers[n].id;
        for (to, at) in self.gossip_deliveries(n) {
            let entries = entries.clone();
            self.at(
                at,
                Ev::Ledger {
                    to,
                    entries,
                    spender,
                },
            );
        }
    }

    /// Whether `n`'s book says the budget is near its end (shared out): every answer's
    /// figures are then news at once, as in the daemon.
    fn near_end(&self, n: usize) -> bool {
        let p = &self.peers[n];
        let now = self.unix_secs();
        let sharers = p.book.members();
        p.budgets
            .share(BUDGET, RESOURCE, 0, p.id, &sharers, now)
            .is_some()
    }

    /// `spender`'s ledger message reached `to`.
    pub(super) fn ledger_arrives(&mut self, to: usize, entries: &[BudgetEntry], spender: PeerId) {
        let now = self.unix_secs();
        let heard = self.peers[to].budgets.heard(entries, Some(spender), now);
        if self.peers[to].up && heard > 0 {
            self.share_freed(to);
        }
    }
}
