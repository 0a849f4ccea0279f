//! One node's resolution of a missed key in simulated time. The decisions are the
//! daemon's own state machine ([`Resolution`], which `ghmesh node` drives in
//! `node/src/node/peers.rs`); this only carries its steps out on the event queue:
//! lookups become messages and timeouts, waits become ticks, gossip arriving becomes
//! [`Input::Arrived`]. The owner's side answers by the daemon's rule
//! ([`policy::answer_lookup`]).

use std::time::Duration;

use ghmesh_node::placement;
use ghmesh_node::policy::resolve::{Ask, End, Input, Resolution, Start, Step, View};
use ghmesh_node::policy::{self, LookupAnswer, LookupView};
use ghmesh_node::upstream::ledger::Spend;
use ghmesh_node::MeshMode;
use ghmesh_protocol::LookupReply;
use libp2p::PeerId;
use rand::seq::SliceRandom;
use rand::Rng;

use super::{us, Des, Ev, FlightRef, Us};

/// A lookup answer on the simulated wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rep {
    Found,
    NotFound,
    Pending,
    Redirect(PeerId),
    Busy,
    Lease,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Peer,
    Coalesced,
    Miss,
    Revalidated,
    /// Refused or held for the shared budget (`--budget`): nothing served.
    Held,
}

/// What a flight's current step waits for, besides its own timer and replies.
#[derive(Debug, Clone, PartialEq)]
enum Awaiting {
    /// Nothing from outside.
    Nothing,
    /// A member admitted ([`Step::AwaitMember`]).
    Member,
    /// The key arriving by gossip ([`Step::Wait`]).
    Arrival,
    /// The answer of one member ([`Step::Ask`]), asked with this budget.
    Reply { peer: PeerId, budget: Us },
    /// The answers of several ([`Step::AskAll`]): each slot filled as it comes.
    Replies {
        slots: Vec<(PeerId, Option<LookupReply>)>,
        left: usize,
        budget: Us,
    },
}

/// A resolution in flight on one node.
pub(super) struct Flight {
    gen: u64,
    /// Bumped at every step: events of an earlier step are dropped.
    attempt: u64,
    started: Us,
    /// The peer phase, while it runs (`None`: fetching upstream, or never asked).
    machine: Option<Box<Resolution>>,
    awaiting: Awaiting,
    /// Fetching upstream now.
    upstream: bool,
    /// The node's own read waits on it.
    reader: bool,
    /// ... having joined it after it started (for a peer): coalesced.
    joined: bool,
    /// The step in progress went out at.
    sent: Us,
    /// A copy was held when the upstream fetch began (a conditional request).
    held: bool,
}

impl Des {
    pub(super) fn candidates(&self, n: usize) -> Vec<PeerId> {
        self.peers[n].book.candidates(self.now / 1000)
    }

    fn idx(&self, id: &PeerId) -> Option<usize> {
        self.index.get(id).copied()
    }

    fn flight(&mut self, at: FlightRef) -> Option<&mut Flight> {
        self.peers[at.node]
            .flights
            .get_mut(&at.key)
            .filter(|f| f.gen == at.gen && f.attempt == at.attempt)
    }

    fn next_step(&mut self, n: usize, key: usize, awaiting: Awaiting) -> Option<FlightRef> {
        let now = self.now;
        let f = self.peers[n].flights.get_mut(&key)?;
        f.attempt += 1;
        f.sent = now;
        f.awaiting = awaiting;
        Some(FlightRef {
            node: n,
            key,
            gen: f.gen,
            attempt: f.attempt,
        })
    }

    /// The node's next read, in its shuffled order, round after round.
    pub(super) fn next_read(&mut self, n: usize) {
        if !self.peers[n].up || self.peers[n].reading.is_some() {
            return;
        }
        if self.peers[n].next >= self.peers[n].order.len() {
            self.peers[n].round += 1;
            if self.peers[n].round >= self.cfg.rounds {
                return self.node_done();
            }
            let mut order = std::mem::take(&mut self.peers[n].order);
            order.shuffle(&mut self.rng);
            self.peers[n].order = order;
            self.peers[n].next = 0;
            let interval = self.cfg.workload.interval_ms * 1000;
            if interval > 0 {
                self.at(self.now + interval, Ev::Read(n));
                return;
            }
        }
        let p = &mut self.peers[n];
        let key = p.order[p.next];
        p.next += 1;
        let late = p.late;
        let fresh = self.fresh(n, key);
        let tally = if late {
            &mut self.late
        } else {
            &mut self.tally
        };
        tally.requests += 1;
        if fresh {
            tally.local += 1;
            self.at(self.now, Ev::Read(n));
            return;
        }
        self.peers[n].reading = Some((key, self.now));
        if let Some(f) = self.peers[n].flights.get_mut(&key) {
            // Someone asked us to fetch it already: our reader joins that flight.
            f.reader = true;
            f.joined = true;
            return;
        }
        self.start_flight(n, key, true, true);
    }

    pub(super) fn start_flight(&mut self, n: usize, key: usize, reader: bool, ask_peers: bool) {
        self.gen += 1;
        let f = Flight {
            gen: self.gen,
            attempt: 0,
            started: self.now,
            machine: None,
            awaiting: Awaiting::Nothing,
            upstream: false,
            reader,
            joined: false,
            sent: self.now,
            held: false,
        };
        self.peers[n].flights.insert(key, f);
        if !ask_peers {
            return self.go_upstream(n, key);
        }
        let p = &self.peers[n];
        let start = Start {
            key: self.keys[key],
            me: p.id,
            ask: self.ask,
            node_started: Duration::from_micros(p.started),
            node_started_ms: p.started / 1000,
            // Every node but the first is started with the first as its bootstrap.
            has_bootstrap: n != 0,
            bodyless_from: None,
            timers: self.timers,
        };
        let view = View {
            now: Duration::from_micros(self.now),
            now_ms: self.now / 1000,
            book: &p.book,
            lease_holder: None,
        };
        let (machine, step) = Resolution::start(start, &view);
        if let Some(f) = self.peers[n].flights.get_mut(&key) {
            f.machine = Some(Box::new(machine));
        }
        self.carry_out(n, key, step);
    }

    /// Feeds `input` to the flight's machine; its next step is carried out.
    fn feed(&mut self, n: usize, key: usize, input: Input) {
        let now = self.now;
        let p = &mut self.peers[n];
        let Some(machine) = p.flights.get_mut(&key).and_then(|f| f.machine.as_mut()) else {
            return;
        };
        let view = View {
            now: Duration::from_micros(now),
            now_ms: now / 1000,
            book: &p.book,
            lease_holder: None,
        };
        let step = machine.handle(input, &view);
        self.carry_out(n, key, step);
    }

    /// Carries out one step: at once where the simulated world answers at once, else
    /// by scheduling what answers it.
    fn carry_out(&mut self, n: usize, key: usize, step: Step) {
        #[cfg(test)]
        self.trace.push((self.now, step.clone()));
        match step {
            Step::Done(End::Peer) => self.complete(n, key, Outcome::Peer),
            Step::Done(End::Coalesced) => self.complete(n, key, Outcome::Coalesced),
            // No client tokens here, so no lease is ever granted; a lease would fetch
            // upstream like this.
            Step::Done(End::Upstream | End::Leased(_)) => self.go_upstream(n, key),
            Step::AwaitMember { until } => self.tick_at(n, key, until, Awaiting::Member),
            // Never asked: no announce goes out without its body here.
            Step::FetchBody { .. } => self.feed(n, key, Input::Body(false)),
            Step::Sleep { until } => self.tick_at(n, key, until, Awaiting::Nothing),
            Step::Ask {
                peer, ask, budget, ..
            } => self.ask_one(n, key, peer, ask, us(budget)),
            Step::AskAll { peers, budget } => self.ask_all(n, key, peers, us(budget)),
            Step::Accept { from, .. } => self.accept(n, key, from),
            Step::Wait { until, .. } => self.wait_for_arrival(n, key, until),
            // No leases here (see above): nothing to hand back.
            Step::Release { .. } => self.feed(n, key, Input::Released),
        }
    }

    /// The flight waits for `awaiting`, or for a tick at `until`.
    fn tick_at(&mut self, n: usize, key: usize, until: Duration, awaiting: Awaiting) {
        if let Some(at) = self.next_step(n, key, awaiting) {
            self.at(us(until), Ev::Tick(at));
        }
    }

    fn ask_one(&mut self, n: usize, key: usize, peer: PeerId, ask: Ask, budget: Us) {
        let awaiting = Awaiting::Reply { peer, budget };
        if let (Some(at), Some(to)) = (self.next_step(n, key, awaiting), self.idx(&peer)) {
            self.lookup(n, to, key, ask, budget, at);
        }
    }

    fn ask_all(&mut self, n: usize, key: usize, peers: Vec<PeerId>, budget: Us) {
        let slots: Vec<_> = peers.iter().map(|p| (*p, None)).collect();
        let awaiting = Awaiting::Replies {
            left: slots.len(),
            slots,
            budget,
        };
        let Some(at) = self.next_step(n, key, awaiting) else {
            return;
        };
        // One timeout for them all: it names no single peer.
        self.at(
            self.now + budget,
            Ev::Timeout {
                peer: usize::MAX,
                at,
            },
        );
        for p in peers {
            if let Some(to) = self.idx(&p) {
                self.send(Ev::Lookup {
                    from: n,
                    to,
                    key,
                    ask: Ask::HAVE,
                    at,
                });
            }
        }
    }

    /// Stores the copy `from` offered, as fresh as `from`'s own.
    fn accept(&mut self, n: usize, key: usize, from: PeerId) {
        let fetched = self
            .idx(&from)
            .and_then(|i| self.peers[i].store.get(&key).copied())
            .unwrap_or(self.now);
        self.store(n, key, fetched);
        self.feed(n, key, Input::Accepted(true));
    }

    fn wait_for_arrival(&mut self, n: usize, key: usize, until: Duration) {
        if self.fresh(n, key) {
            return self.feed(n, key, Input::Arrived);
        }
        self.tick_at(n, key, until, Awaiting::Arrival);
    }

    fn lookup(&mut self, n: usize, to: usize, key: usize, ask: Ask, budget: Us, at: FlightRef) {
        self.at(self.now + budget, Ev::Timeout { peer: to, at });
        self.send(Ev::Lookup {
            from: n,
            to,
            key,
            ask,
            at,
        });
    }

    /// A lookup reaches `to`: it answers by the node's own rule.
    pub(super) fn answer(&mut self, from: usize, to: usize, key: usize, ask: Ask, at: FlightRef) {
        if !self.peers[to].up {
            return;
        }
        #[cfg(test)]
        if let Some(world) = self.world.as_mut() {
            let to_id = self.peers[to].id;
            if let Some((delay, rep)) = world.answer(to_id) {
                let sent = self.peers[from]
                    .flights
                    .get(&key)
                    .map_or(self.now, |f| f.sent);
                let reply = Ev::Reply {
                    to: from,
                    from: to,
                    key,
                    rep,
                    at,
                };
                self.at(sent + us(delay), reply);
            }
            return;
        }
        let me = self.peers[to].id;
        let owner = placement::owner(&self.keys[key], self.candidates(to).into_iter().chain([me]))
            .filter(|o| *o != me);
        let flight = self.peers[to].flights.get(&key);
        let view = LookupView {
            shareable: true,
            fresh_local: self.fresh(to, key),
            in_flight: flight.is_some(),
            fetching: flight.is_some_and(|f| f.upstream),
            fetch_asked: ask.fetch,
            lease_asked: ask.lease,
            leased_to_other: false,
            failed_recently: false,
            mode: MeshMode::Mesh,
            room: true,
            owner,
        };
        let rep = match policy::answer_lookup(view) {
            LookupAnswer::Found => Rep::Found,
            LookupAnswer::Pending => Rep::Pending,
            LookupAnswer::StartFetch => {
                // A starting owner asks older members first, as the daemon's does.
                let starting = policy::starting(self.now / 1000, self.peers[to].started / 1000);
                self.start_flight(to, key, false, starting);
                Rep::Pending
            }
            LookupAnswer::Redirect(p) => Rep::Redirect(p),
            LookupAnswer::Busy => Rep::Busy,
            LookupAnswer::GrantLease => Rep::Lease,
            LookupAnswer::NotFound => Rep::NotFound,
        };
        self.send(Ev::Reply {
            to: from,
            from: to,
            key,
            rep,
            at,
        });
    }

    pub(super) fn as_reply(&self, key: usize, rep: Rep) -> LookupReply {
        match rep {
            Rep::Found => LookupReply::Found(Box::new(self.announces[key].clone())),
            Rep::NotFound => LookupReply::NotFound,
            Rep::Pending => LookupReply::Pending,
            Rep::Redirect(p) => LookupReply::Redirect(p.to_bytes().into()),
            Rep::Busy => LookupReply::Busy,
            Rep::Lease => LookupReply::Lease,
        }
    }

    pub(super) fn on_reply(&mut self, n: usize, from: usize, key: usize, rep: Rep, at: FlightRef) {
        let now = self.now;
        let reply = self.as_reply(key, rep);
        let from_id = self.peers[from].id;
        let Some(f) = self.flight(at) else {
            return;
        };
        let latency = Duration::from_micros(now - f.sent);
        let input = match &mut f.awaiting {
            Awaiting::Reply { peer, .. } if *peer == from_id => Some(Input::Reply(Some(reply))),
            Awaiting::Replies { slots, left, .. } => {
                if let Some(slot) = slots.iter_mut().find(|(p, r)| *p == from_id && r.is_none()) {
                    slot.1 = Some(reply);
                    *left -= 1;
                }
                (*left == 0).then(|| Input::Replies(std::mem::take(slots)))
            }
            _ => return,
        };
        self.peers[n].book.answered(&from_id, latency);
        if let Some(input) = input {
            self.feed(n, key, input);
        }
    }

    pub(super) fn on_timeout(&mut self, peer: usize, at: FlightRef) {
        let (n, key) = (at.node, at.key);
        let now_ms = self.now / 1000;
        let rule = self.timers.budget;
        let Some(f) = self.flight(at) else {
            return;
        };
        let input = match &mut f.awaiting {
            Awaiting::Reply { peer: id, budget } => {
                let (id, budget) = (*id, Duration::from_micros(*budget));
                if peer != usize::MAX {
                    self.peers[n]
                        .book
                        .lookup_unanswered(&id, budget, rule, now_ms);
                }
                Input::Reply(None)
            }
            Awaiting::Replies { slots, budget, .. } => {
                let (slots, budget) = (std::mem::take(slots), Duration::from_micros(*budget));
                // As each of the daemon's lookups does for a member that did not answer.
                for (id, _) in slots.iter().filter(|(_, r)| r.is_none()) {
                    self.peers[n]
                        .book
                        .lookup_unanswered(id, budget, rule, now_ms);
                }
                Input::Replies(slots)
            }
            _ => return,
        };
        self.feed(n, key, input);
    }

    pub(super) fn on_tick(&mut self, at: FlightRef) {
        if self.flight(at).is_some() {
            self.feed(at.node, at.key, Input::Tick);
        }
    }

    /// `n` admitted a member: a flight waiting for its first one goes on.
    pub(super) fn admitted(&mut self, n: usize) {
        let waiting: Vec<usize> = self.peers[n]
            .flights
            .iter()
            .filter(|(_, f)| f.awaiting == Awaiting::Member)
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            self.feed(n, key, Input::Admitted);
        }
    }

    /// An entry reached `n` by gossip: a flight waiting for it ends.
    pub(super) fn arrived(&mut self, n: usize, key: usize) {
        let waiting = self.peers[n]
            .flights
            .get(&key)
            .is_some_and(|f| f.awaiting == Awaiting::Arrival);
        if waiting {
            self.feed(n, key, Input::Arrived);
        }
    }

    fn go_upstream(&mut self, n: usize, key: usize) {
        if self.budget_held(n) {
            // The node's book holds the budget: nothing is sent.
            self.complete(n, key, Outcome::Held);
            return;
        }
        match self.budget_spend(n) {
            Spend::Go => {}
            Spend::Held { .. } => return self.complete(n, key, Outcome::Held),
            spend @ (Spend::Wait { .. } | Spend::AwaitFigures { .. }) => {
                // Waits, as the daemon's `take_share` does, for a call to end, news,
                // the budget to be quiet, or the wait for first figures to end; tells
                // members at once that it spends the budget, as the daemon does.
                if matches!(spend, Spend::Wait { .. }) && self.budget_wanted(n) {
                    self.publish_ledger(n);
                }
                self.peers[n].share_waiting.push(key);
                let due = match spend {
                    Spend::Wait { until } => until.map(|at| self.at_unix_secs(at)),
                    Spend::AwaitFigures { for_ms } => Some(self.now + for_ms * 1000),
                    _ => None,
                };
                if let Some(at) = due {
                    // One wake-up per node: every waiting call looks again then.
                    if self.peers[n].share_quiet.is_none_or(|due| at < due) {
                        self.peers[n].share_quiet = Some(at);
                        self.at(at, Ev::ShareQuiet(n));
                    }
                }
                return;
            }
        }
        let held = self.peers[n].store.contains_key(&key);
        let Some(f) = self.peers[n].flights.get_mut(&key) else {
            return;
        };
        f.machine = None;
        f.awaiting = Awaiting::Nothing;
        f.upstream = true;
        f.held = held;
        let gen = f.gen;
        let jitter = 1.0 + self.net.jitter * (self.rng.gen::<f64>() * 2.0 - 1.0);
        let d = (us(self.net.upstream) as f64 * jitter) as Us;
        self.at(self.now + d, Ev::Upstream { node: n, key, gen });
    }

    /// Calls `n` has on their way to GitHub.
    pub(super) fn in_flight(&self, n: usize) -> u64 {
        self.peers[n]
            .flights
            .values()
            .filter(|f| f.upstream)
            .count() as u64
    }

    /// Calls waiting for `n`'s share look again (a call ended, or figures arrived).
    pub(super) fn share_freed(&mut self, n: usize) {
        let waiting = std::mem::take(&mut self.peers[n].share_waiting);
        for key in waiting {
            if self.peers[n].flights.get(&key).is_some_and(|f| !f.upstream) {
                self.go_upstream(n, key);
            }
        }
    }

    pub(super) fn upstream_done(&mut self, n: usize, key: usize, gen: u64) {
        if self.peers[n].flights.get(&key).is_none_or(|f| f.gen != gen) {
            return;
        }
        self.upstream_answered(n, key);
        self.share_freed(n);
    }

    fn upstream_answered(&mut self, n: usize, key: usize) {
        // The content never changes here: a copy held when the fetch began is
        // revalidated for free.
        let held = self.peers[n].flights.get(&key).is_some_and(|f| f.held);
        if !self.spend(n, held) {
            self.complete(n, key, Outcome::Held);
            return;
        }
        let outcome = if held {
            self.upstream_304 += 1;
            Outcome::Revalidated
        } else {
            self.upstream_calls += 1;
            if self.cfg.workload.is_graphql(key) {
                self.graphql_calls += 1;
            }
            Outcome::Miss
        };
        let now = self.now;
        self.store(n, key, now);
        self.announce(n, key, now);
        self.complete(n, key, outcome);
    }

    fn complete(&mut self, n: usize, key: usize, outcome: Outcome) {
        let Some(f) = self.peers[n].flights.remove(&key) else {
            return;
        };
        if !f.reader {
            return;
        }
        self.peers[n].reading = None;
        let outcome = if f.joined {
            Outcome::Coalesced
        } else {
            outcome
        };
        let late = self.peers[n].late;
        let t = if late {
            &mut self.late
        } else {
            &mut self.tally
        };
        match outcome {
            Outcome::Peer => t.peer += 1,
            Outcome::Coalesced => t.coalesced += 1,
            Outcome::Miss => t.miss += 1,
            Outcome::Revalidated => t.revalidated += 1,
            Outcome::Held => self.held_reads += 1,
        }
        if outcome == Outcome::Peer {
            self.lookups.push((self.now - f.started) as f64 / 1000.0);
        }
        self.at(self.now, Ev::Read(n));
    }
}
