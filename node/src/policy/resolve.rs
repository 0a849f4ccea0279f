//! The peer phase of a miss as one state machine, free of I/O: the daemon
//! (`node/src/node/peers.rs`) and the simulator's simulated-time mode drive this very
//! machine, each with its own clock and transport.
//!
//! A driver calls [`Resolution::start`], carries out the [`Step`] it gets, and feeds
//! what happened back as an [`Input`] with a fresh [`View`] of the node (its peer book,
//! the lease on the key, the time), until a step is [`Step::Done`]. Each step waits for
//! exactly one input, named on the step. Everything the machine decides comes from
//! the functions of [`crate::policy`] and the timers in [`Timers`]; it keeps no clock of
//! its own, so the same inputs at the same times give the same steps.
//!
//! Time here is a monotonic [`Duration`] from an origin the driver picks (the daemon:
//! the node's start; the simulator: the start of the run). Peer-book questions use the
//! wall clock in [`View::now_ms`], as the book records it.

use std::time::Duration;

use ghmesh_protocol::{Announce, CacheKey, LookupReply};
use libp2p::PeerId;

use super::book::{BudgetRule, PeerBook};
use super::{
    after_owner_reply, after_repoll, awaiting_first_member, next_owner, next_repoll,
    others_while_starting, plan_peer_phase, starting, view_settling, OwnerStep, RepollStep,
    EXTRA_ASKS,
};
use crate::limits::MAX_OWNER_ASKS;

/// How often a node that would own a key re-reads its member view while the view is
/// still filling in after its start.
pub const SETTLE_POLL: Duration = Duration::from_millis(20);

/// What a lookup asks of its receiver besides "do you have it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Fetch it for us on a miss (we read with the node's token: the owner's serves).
    pub fetch: bool,
    /// Let us fetch it for the fleet (we read with a local client's own token).
    pub lease: bool,
    /// We held the lease and got nothing to share: pass it on.
    pub release: bool,
}

impl Ask {
    /// Whether the receiver has (or is fetching) the entry, nothing more.
    pub const HAVE: Self = Self {
        fetch: false,
        lease: false,
        release: false,
    };
    /// Fetch it for us on a miss.
    pub const FETCH: Self = Self {
        fetch: true,
        ..Self::HAVE
    };
    /// Grant us the lease on a miss.
    pub const LEASE: Self = Self {
        lease: true,
        ..Self::HAVE
    };
    /// Give the lease back.
    pub const RELEASE: Self = Self {
        release: true,
        ..Self::HAVE
    };
}

/// The timers of a resolution (the daemon's come from its `Deadlines`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// The peer phase's whole budget, and an unmeasured member's lookup budget.
    pub lookup: Duration,
    /// Pulling a body by CID.
    pub body_fetch: Duration,
    /// Waiting for a member that said `Pending`.
    pub pending_wait: Duration,
    /// First re-poll of that member.
    pub repoll_first: Duration,
    /// Re-polls back off up to this.
    pub repoll_max: Duration,
    /// Floor of a re-poll's own budget.
    pub repoll_lookup_min: Duration,
    /// How long after its start a node waits for its first member.
    pub first_member: Duration,
    /// Each member's lookup budget, adapted to its latency.
    pub budget: BudgetRule,
}

/// What a resolution is started with.
#[derive(Debug, Clone)]
pub struct Start {
    /// The key missed.
    pub key: CacheKey,
    /// This node.
    pub me: PeerId,
    /// What the owner is asked: [`Ask::FETCH`] for the node's token, [`Ask::LEASE`]
    /// for a client's own.
    pub ask: Ask,
    /// The node's start on the machine's time axis.
    pub node_started: Duration,
    /// The node's start on the wall clock (unix ms), as the book records times.
    pub node_started_ms: u64,
    /// The node knows where its fleet is (a bootstrap address): it waits for its first
    /// member (see [`awaiting_first_member`]).
    pub has_bootstrap: bool,
    /// A member announced the entry without its body and it is still fresh: pull it.
    pub bodyless_from: Option<PeerId>,
    /// The timers.
    pub timers: Timers,
}

/// The node as the machine sees it at one input.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Now, on the machine's time axis.
    pub now: Duration,
    /// Now, on the wall clock (unix ms).
    pub now_ms: u64,
    /// The node's peer book.
    pub book: &'a PeerBook,
    /// The member we leased this key to, while the lease holds (we are its owner).
    pub lease_holder: Option<PeerId>,
}

/// What the driver does next. Each names the input it is answered with.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait for the node's first member until `until`: [`Input::Admitted`] when one is
    /// admitted, [`Input::Tick`] at `until`.
    AwaitMember {
        /// Give up waiting then.
        until: Duration,
    },
    /// Pull the fresh body `from` announced, within `budget`, and store it:
    /// [`Input::Body`].
    FetchBody {
        /// The member that announced it.
        from: PeerId,
        /// How long the pull may take.
        budget: Duration,
    },
    /// Nothing to do until `until` (the member view is settling): [`Input::Tick`].
    Sleep {
        /// Answer then.
        until: Duration,
    },
    /// Ask `peer` within `budget`: [`Input::Reply`], `None` when it did not answer in
    /// time.
    Ask {
        /// Whom.
        peer: PeerId,
        /// What.
        ask: Ask,
        /// How long it has.
        budget: Duration,
        /// A re-poll of a member we wait for.
        repoll: bool,
    },
    /// Ask every one of `peers` whether it has the key, at once, each within `budget`:
    /// [`Input::Replies`], in the order of `peers`.
    AskAll {
        /// Whom.
        peers: Vec<PeerId>,
        /// How long each has.
        budget: Duration,
    },
    /// Check and store the entry `from` offered: [`Input::Accepted`].
    Accept {
        /// Who offered it.
        from: PeerId,
        /// What it offered.
        announce: Box<Announce>,
    },
    /// Waiting for `peer`'s fetch: [`Input::Arrived`] at once if a fresh copy is held
    /// now; else [`Input::Arrived`] when one arrives, or [`Input::Tick`] at `until`.
    Wait {
        /// The member fetching the key.
        peer: PeerId,
        /// Answer then when nothing arrives.
        until: Duration,
    },
    /// Give back the lease `owner` granted us (we lost its answer), without waiting:
    /// [`Input::Released`] at once.
    Release {
        /// Who granted it.
        owner: PeerId,
    },
    /// The peer phase is over.
    Done(End),
}

/// How the peer phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The entry accepted last (a pulled body, a member's entry) is served as a peer's.
    Peer,
    /// A fresh copy that arrived while we waited, or a waited-for member's entry, is
    /// served as coalesced.
    Coalesced,
    /// Nothing from peers: go upstream.
    Upstream,
    /// This owner leased the key to us: go upstream now, for the fleet, and release
    /// the lease if the answer cannot be shared.
    Leased(PeerId),
}

/// What happened, fed back to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A member was admitted.
    Admitted,
    /// The time asked for came.
    Tick,
    /// The body pulled and stored (`true`), or not.
    Body(bool),
    /// The asked member's answer; `None`: none in time, or not a usable one.
    Reply(Option<LookupReply>),
    /// Every answer of an [`Step::AskAll`], in its order.
    Replies(Vec<(PeerId, Option<LookupReply>)>),
    /// The offered entry was checked and stored (`true`), or refused.
    Accepted(bool),
    /// A fresh copy of the key is held now.
    Arrived,
    /// The lease was handed back (or that is under way).
    Released,
}

/// What a wait for a member's fetch returns to when it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The owner loop goes on (next owner, then the others).
    Owner,
    /// The peer phase ends: go upstream.
    Upstream,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    AwaitMember,
    Body,
    Settle {
        until: Duration,
    },
    Owner {
        owner: PeerId,
    },
    /// The owner's entry is being accepted; `step` is what its reply meant.
    OwnerAccept,
    Release {
        owner: PeerId,
        step: OwnerStep,
    },
    Others,
    OthersAccept {
        replies: std::collections::VecDeque<(PeerId, Option<LookupReply>)>,
        fetching: Option<PeerId>,
    },
    Waiting(Waiting),
    Done(End),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    peer: PeerId,
    ask: Ask,
    deadline: Duration,
    poll: Duration,
    then: Then,
    /// Where in the wait: at the top (a wait step out), re-polling, accepting.
    at: WaitAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitAt {
    Top { expired: bool },
    Repoll,
    Accepting,
}

/// One miss's peer phase.
#[derive(Debug, Clone)]
pub struct Resolution {
    start: Start,
    /// The phase's budget ends here (set once the first-member wait is over).
    deadline: Duration,
    /// The first plan's owner (`None`: we own the key) and others.
    owner: Option<PeerId>,
    others: Vec<PeerId>,
    asked: Vec<PeerId>,
    /// Owners that did not answer in time.
    silent: Vec<PeerId>,
    /// One of them was asked again (at most one is).
    asked_again: bool,
    state: State,
    /// The step the machine waits on, returned again for an input it did not ask for.
    last: Step,
    /// Redirects followed, for the node's counters.
    pub redirects: u32,
}

impl Resolution {
    /// Starts the peer phase of a miss; returns the machine and its first step.
    pub fn start(start: Start, view: &View<'_>) -> (Self, Step) {
        let mut r = Self {
            deadline: view.now + start.timers.lookup,
            start,
            owner: None,
            others: Vec::new(),
            asked: Vec::new(),
            silent: Vec::new(),
            asked_again: false,
            state: State::AwaitMember,
            last: Step::Done(End::Upstream),
            redirects: 0,
        };
        let step = r.await_member(view);
        r.last = step.clone();
        (r, step)
    }

    /// The end, once a step was [`Step::Done`].
    pub fn end(&self) -> Option<End> {
        match self.state {
            State::Done(end) => Some(end),
            _ => None,
        }
    }

    /// Feeds what happened; returns the next step. An input the current step did not
    /// ask for is ignored (the same step is returned again).
    pub fn handle(&mut self, input: Input, view: &View<'_>) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done(End::Upstream));
        let step = match (state, input) {
            (State::AwaitMember, Input::Admitted | Input::Tick) => self.await_member(view),
            (State::Body, Input::Body(true)) => self.done(End::Peer),
            (State::Body, Input::Body(false)) => self.plan(view),
            (State::Settle { until }, Input::Tick) => self.settle(until, view),
            (State::Owner { owner }, Input::Reply(reply)) => self.owner_replied(owner, reply, view),
            (State::Release { owner, step }, Input::Released) => self.carry_out(owner, step, view),
            (State::OwnerAccept, Input::Accepted(true)) => self.done(End::Peer),
            // As an owner that had nothing: the next owner is only for one that did
            // not answer or redirected.
            (State::OwnerAccept, Input::Accepted(false)) => {
                self.after_owner(OwnerStep::AskOthers, view)
            }
            (State::Others, Input::Replies(all)) => self.next_other(all.into(), None, view),
            (State::OthersAccept { .. }, Input::Accepted(true)) => self.done(End::Peer),
            (State::OthersAccept { replies, fetching }, Input::Accepted(false)) => {
                self.next_other(replies, fetching, view)
            }
            (State::Waiting(w), input) => match self.waiting(w, input, view) {
                Some(step) => step,
                None => return self.last.clone(),
            },
            (state, _) => {
                self.state = state;
                return self.last.clone();
            }
        };
        self.last = step.clone();
        step
    }

    fn done(&mut self, end: End) -> Step {
        self.state = State::Done(end);
        Step::Done(end)
    }

    /// The first-member wait: only within its window from the node's start, with no
    /// member yet, and when the fleet is known to be somewhere.
    fn await_member(&mut self, view: &View<'_>) -> Step {
        let t = self.start.timers;
        let until = self.start.node_started + t.first_member;
        let since_start = view.now.saturating_sub(self.start.node_started);
        let rendezvous = self.start.has_bootstrap || view.book.greeting() > 0;
        let members = view.book.members().len();
        if view.now < until
            && awaiting_first_member(
                since_start.as_millis() as u64,
                t.first_member.as_millis() as u64,
                members,
                rendezvous,
            )
        {
            self.state = State::AwaitMember;
            return Step::AwaitMember { until };
        }
        self.deadline = view.now + t.lookup;
        match self.start.bodyless_from {
            Some(from) => {
                self.state = State::Body;
                // A large body takes longer than a lookup; its size is known and bounded.
                Step::FetchBody {
                    from,
                    budget: t.lookup.max(t.body_fetch),
                }
            }
            None => self.plan(view),
        }
    }

    fn candidates(&self, view: &View<'_>) -> Vec<PeerId> {
        view.book.candidates(view.now_ms)
    }

    fn owners(&self, view: &View<'_>) -> Vec<PeerId> {
        view.book.owners(self.start.me, view.now_ms)
    }

    /// Ranks the members for the key; when we would own it (or know nobody), first
    /// lets a view that is still filling in settle (greetings under way, members
    /// admitted a moment ago, introductions landing): otherwise two runners that joined
    /// through one bootstrap at once each think they own the key the other owns, and
    /// both fetch it. At most half the budget: the members that heard the key
    /// announced before we came need the rest to answer.
    fn plan(&mut self, view: &View<'_>) -> Step {
        let plan = plan_peer_phase(
            &self.start.key,
            self.start.me,
            &self.owners(view),
            &self.candidates(view),
        );
        if plan.as_ref().is_none_or(|p| p.owner.is_none()) {
            let until = self.deadline.saturating_sub(self.start.timers.lookup / 2);
            return self.settle(until, view);
        }
        self.planned(view)
    }

    fn settle(&mut self, until: Duration, view: &View<'_>) -> Step {
        let book = view.book;
        if view.now < until
            && view_settling(
                view.now_ms,
                self.start.node_started_ms,
                book.last_change_ms(),
                book.greeting(),
            )
        {
            self.state = State::Settle { until };
            return Step::Sleep {
                until: (view.now + SETTLE_POLL).min(until),
            };
        }
        self.planned(view)
    }

    /// The plan with the view as it is now: the owner loop, or (we own the key) the
    /// member we leased it to.
    fn planned(&mut self, view: &View<'_>) -> Step {
        let me = self.start.me;
        let owners = self.owners(view);
        let Some(plan) = plan_peer_phase(&self.start.key, me, &owners, &self.candidates(view))
        else {
            return self.done(End::Upstream);
        };
        self.owner = plan.owner;
        self.others = plan.others;
        match plan.owner {
            // We own the key: a member we leased it to is fetching it for everyone.
            None => match view.lease_holder {
                Some(holder) => self.wait(holder, Ask::HAVE, Then::Upstream, view),
                None => self.ask_owner(None, view),
            },
            Some(owner) => self.ask_owner(Some(owner), view),
        }
    }

    /// Asks `next` (the owner loop's next step); `None`: on to the others.
    fn ask_owner(&mut self, next: Option<PeerId>, view: &View<'_>) -> Step {
        let Some(owner) = next else {
            return self.ask_others(view);
        };
        if owner == self.start.me {
            // We own the key in our view now (the owner before us did not answer, or
            // redirected to us): fetch it ourselves, at once, unless we leased it to a
            // member that is fetching it for everyone.
            return match view.lease_holder {
                Some(holder) => self.wait(holder, Ask::HAVE, Then::Upstream, view),
                None => self.done(End::Upstream),
            };
        }
        self.asked.push(owner);
        self.state = State::Owner { owner };
        Step::Ask {
            peer: owner,
            ask: self.start.ask,
            budget: view.book.budget(&owner, self.start.timers.budget),
            repoll: false,
        }
    }

    fn owner_replied(
        &mut self,
        owner: PeerId,
        reply: Option<LookupReply>,
        view: &View<'_>,
    ) -> Step {
        let lost_lease = reply.is_none() && self.start.ask.lease;
        if reply.is_none() {
            self.silent.push(owner);
        }
        let step = after_owner_reply(reply);
        if let OwnerStep::Redirect(_) = step {
            self.redirects += 1;
        }
        if lost_lease {
            // The owner may have granted a lease whose answer we lost: hand it back
            // rather than leave the fleet waiting on a fetch we do not know we own.
            self.state = State::Release { owner, step };
            return Step::Release { owner };
        }
        self.carry_out(owner, step, view)
    }

    fn carry_out(&mut self, owner: PeerId, step: OwnerStep, view: &View<'_>) -> Step {
        match step {
            OwnerStep::Accept(announce) => {
                self.state = State::OwnerAccept;
                Step::Accept {
                    from: owner,
                    announce,
                }
            }
            OwnerStep::Fetch => self.done(End::Leased(owner)),
            // Binding: we do not fetch in parallel while it holds the fetch.
            OwnerStep::Wait => self.wait(owner, self.start.ask, Then::Owner, view),
            step => self.after_owner(step, view),
        }
    }

    /// After the owner's answer (or our failure to use it): the next owner, if any.
    fn after_owner(&mut self, step: OwnerStep, view: &View<'_>) -> Step {
        if let OwnerStep::Redirect(p) = step {
            if self.silent.contains(&p) && !self.asked_again {
                // A member that did not answer us is the owner in another member's
                // view too: it is up, and our lookup or its answer was lost. Asked
                // again once (not one of the owner asks: the same ask, sent again).
                self.asked_again = true;
                self.asked.retain(|a| *a != p);
                return self.ask_owner(Some(p), view);
            }
        }
        let left = MAX_OWNER_ASKS.saturating_sub(self.asked.len());
        let owners = self.owners(view);
        let next = next_owner(
            &step,
            &self.start.key,
            self.start.me,
            &self.asked,
            &owners,
            left,
        );
        self.ask_owner(next, view)
    }

    /// The other members: the next-ranked ones (and, while we are starting, our
    /// eldest), each asked only whether it has the key, with what is left of the
    /// budget.
    fn ask_others(&mut self, view: &View<'_>) -> Step {
        let left = self.deadline.saturating_sub(view.now);
        let mut others = self.others.clone();
        if starting(view.now_ms, self.start.node_started_ms) {
            let eldest = view.book.eldest(view.now_ms, EXTRA_ASKS);
            others = others_while_starting(&others, &eldest, self.owner);
        }
        others.retain(|p| !self.asked.contains(p));
        if others.is_empty() || left.is_zero() {
            return self.done(End::Upstream);
        }
        self.state = State::Others;
        Step::AskAll {
            peers: others,
            budget: left,
        }
    }

    fn next_other(
        &mut self,
        mut replies: std::collections::VecDeque<(PeerId, Option<LookupReply>)>,
        mut fetching: Option<PeerId>,
        view: &View<'_>,
    ) -> Step {
        while let Some((peer, reply)) = replies.pop_front() {
            match reply {
                Some(LookupReply::Found(announce)) => {
                    self.state = State::OthersAccept { replies, fetching };
                    return Step::Accept {
                        from: peer,
                        announce,
                    };
                }
                // It is asking GitHub right now (a member whose view put the owner
                // elsewhere): wait for it rather than ask GitHub too.
                Some(LookupReply::Pending) => fetching = fetching.or(Some(peer)),
                _ => {}
            }
        }
        match fetching {
            // Re-polled as first asked: a client's miss never makes a peer fetch for it.
            Some(peer) => {
                let again = if self.start.ask.lease {
                    Ask::LEASE
                } else {
                    Ask::FETCH
                };
                self.wait(peer, again, Then::Upstream, view)
            }
            None => self.done(End::Upstream),
        }
    }

    /// Starts waiting for `peer`'s fetch: its announce (the driver wakes us) or a
    /// re-poll that finds it, within the pending wait.
    fn wait(&mut self, peer: PeerId, ask: Ask, then: Then, view: &View<'_>) -> Step {
        let t = self.start.timers;
        let w = Waiting {
            peer,
            ask,
            deadline: view.now + t.pending_wait,
            poll: t.repoll_first,
            then,
            at: WaitAt::Top { expired: false },
        };
        self.wait_top(w, view)
    }

    fn wait_top(&mut self, mut w: Waiting, view: &View<'_>) -> Step {
        let expired = view.now >= w.deadline;
        let until = if expired {
            view.now
        } else {
            (view.now + w.poll).min(w.deadline)
        };
        w.at = WaitAt::Top { expired };
        self.state = State::Waiting(w);
        Step::Wait {
            peer: w.peer,
            until,
        }
    }

    /// The wait gave up: per what it was for.
    fn wait_gave_up(&mut self, then: Then, view: &View<'_>) -> Step {
        match then {
            Then::Owner => self.after_owner(OwnerStep::Wait, view),
            Then::Upstream => self.done(End::Upstream),
        }
    }

    /// `None`: an input the wait did not ask for (ignored).
    fn waiting(&mut self, mut w: Waiting, input: Input, view: &View<'_>) -> Option<Step> {
        Some(match (w.at, input) {
            (WaitAt::Top { .. }, Input::Arrived) => self.done(End::Coalesced),
            (WaitAt::Top { expired: true }, Input::Tick) => self.wait_gave_up(w.then, view),
            (WaitAt::Top { expired: false }, Input::Tick) => {
                w.poll = next_repoll(w.poll, self.start.timers.repoll_max);
                w.at = WaitAt::Repoll;
                self.state = State::Waiting(w);
                let t = self.start.timers;
                // Asked as the first time: a resolution of ours is what it waits for.
                Step::Ask {
                    peer: w.peer,
                    ask: w.ask,
                    budget: t.lookup.max(t.repoll_lookup_min),
                    repoll: true,
                }
            }
            (WaitAt::Repoll, Input::Reply(reply)) => match after_repoll(reply) {
                RepollStep::Accept(announce) => {
                    w.at = WaitAt::Accepting;
                    self.state = State::Waiting(w);
                    Step::Accept {
                        from: w.peer,
                        announce,
                    }
                }
                RepollStep::KeepWaiting => self.wait_top(w, view),
                RepollStep::GiveUp => self.wait_gave_up(w.then, view),
                // The lease passed to us: its holder failed, left, or ran out of time.
                RepollStep::Fetch => self.done(End::Leased(w.peer)),
            },
            (WaitAt::Accepting, Input::Accepted(true)) => self.done(End::Coalesced),
            (WaitAt::Accepting, Input::Accepted(false)) => self.wait_gave_up(w.then, view),
            (_, _) => {
                self.state = State::Waiting(w);
                return None;
            }
        })
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
