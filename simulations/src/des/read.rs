//! One node's resolution of a missed key, step by step, as `node/src/node/peers.rs`
//! does it, with each decision taken by the node's own policy functions.

use ghmesh_node::placement;
use ghmesh_node::policy::{self, LookupAnswer, LookupView, OwnerStep, RepollStep};
use ghmesh_node::MeshMode;
use ghmesh_protocol::LookupReply;
use libp2p::PeerId;
use rand::seq::SliceRandom;
use rand::Rng;

use super::{
    us, Des, Ev, FlightRef, Us, MAX_OWNER_ASKS, PENDING_WAIT, REPOLL_FIRST, REPOLL_MAX, SETTLE_TICK,
};

/// What a lookup asks: fetch on a miss (sent to the owner) or only "do you have it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ask {
    fetch: bool,
}

const FETCH: Ask = Ask { fetch: true };
const HAVE: Ask = Ask { fetch: false };

/// A lookup answer on the simulated wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rep {
    Found,
    NotFound,
    Pending,
    Redirect(PeerId),
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Settle,
    Owner(PeerId),
    Waiting {
        peer: PeerId,
        until: Us,
        poll: Us,
        from_others: bool,
    },
    Others {
        left: usize,
        pending: Option<PeerId>,
    },
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Peer,
    Coalesced,
    Miss,
    Revalidated,
}

/// A resolution in flight on one node.
pub(super) struct Flight {
    gen: u64,
    attempt: u64,
    started: Us,
    deadline: Us,
    phase: Phase,
    settled: bool,
    asked: Vec<PeerId>,
    /// The node's own read waits on it.
    reader: bool,
    /// ... having joined it after it started (for a peer): coalesced.
    joined: bool,
    /// The step in progress went out at.
    sent: Us,
    /// The budget it was given.
    budget: Us,
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

    fn cur(&self, n: usize, key: usize) -> Option<FlightRef> {
        let f = self.peers[n].flights.get(&key)?;
        Some(FlightRef {
            node: n,
            key,
            gen: f.gen,
            attempt: f.attempt,
        })
    }

    fn next_step(&mut self, n: usize, key: usize) -> Option<FlightRef> {
        let f = self.peers[n].flights.get_mut(&key)?;
        f.attempt += 1;
        f.sent = self.now;
        self.cur(n, key)
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
        let tally = if late {
            &mut self.late
        } else {
            &mut self.tally
        };
        tally.requests += 1;
        if self.fresh(n, key) {
            let tally = if late {
                &mut self.late
            } else {
                &mut self.tally
            };
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

    fn start_flight(&mut self, n: usize, key: usize, reader: bool, ask_peers: bool) {
        self.gen += 1;
        let f = Flight {
            gen: self.gen,
            attempt: 0,
            started: self.now,
            deadline: self.now + us(self.cfg.lookup_timeout),
            phase: Phase::Settle,
            settled: false,
            asked: Vec::new(),
            reader,
            joined: false,
            sent: self.now,
            budget: 0,
            held: false,
        };
        self.peers[n].flights.insert(key, f);
        if ask_peers {
            self.plan(n, key);
        } else {
            self.go_upstream(n, key);
        }
    }

    fn plan(&mut self, n: usize, key: usize) {
        let me = self.peers[n].id;
        let plan = policy::plan_peer_phase(&self.keys[key], me, &self.candidates(n));
        let settled = self.peers[n].flights.get(&key).is_some_and(|f| f.settled);
        if !settled && plan.as_ref().is_none_or(|p| p.owner.is_none()) {
            let b = &self.peers[n].book;
            let now_ms = self.now / 1000;
            let started_ms = self.peers[n].started / 1000;
            let settling =
                policy::view_settling(now_ms, started_ms, b.last_change_ms(), b.greeting());
            // As the daemon: settling takes at most half the peer budget.
            let half = us(self.cfg.lookup_timeout) / 2;
            let deadline = self.peers[n]
                .flights
                .get(&key)
                .map_or(0, |f| f.deadline - half);
            if settling && self.now < deadline {
                if let Some(f) = self.peers[n].flights.get_mut(&key) {
                    f.phase = Phase::Settle;
                }
                if let Some(at) = self.next_step(n, key) {
                    self.at(self.now + SETTLE_TICK, Ev::Tick(at));
                }
                return;
            }
        }
        match plan {
            None => self.go_upstream(n, key),
            Some(p) => match p.owner {
                Some(o) => self.ask_owner(n, key, o),
                None => self.ask_others(n, key),
            },
        }
    }

    fn ask_owner(&mut self, n: usize, key: usize, owner: PeerId) {
        let budget = us(self.peers[n].book.budget(&owner, self.rule));
        if let Some(f) = self.peers[n].flights.get_mut(&key) {
            f.asked.push(owner);
            f.phase = Phase::Owner(owner);
            f.budget = budget;
        }
        self.lookup(n, key, owner, FETCH, budget);
    }

    fn lookup(&mut self, n: usize, key: usize, to: PeerId, ask: Ask, budget: Us) {
        let (Some(at), Some(to_idx)) = (self.next_step(n, key), self.idx(&to)) else {
            return;
        };
        self.at(self.now + budget, Ev::Timeout { peer: to_idx, at });
        self.send(Ev::Lookup {
            from: n,
            to: to_idx,
            key,
            ask,
            at,
        });
    }

    fn ask_others(&mut self, n: usize, key: usize) {
        let me = self.peers[n].id;
        let plan = policy::plan_peer_phase(&self.keys[key], me, &self.candidates(n));
        let Some(f) = self.peers[n].flights.get(&key) else {
            return;
        };
        let left = f.deadline.saturating_sub(self.now);
        let (owner, mut others) = plan.map(|p| (p.owner, p.others)).unwrap_or_default();
        let now_ms = self.now / 1000;
        if policy::starting(now_ms, self.peers[n].started / 1000) {
            let eldest = self.peers[n].book.eldest(now_ms, policy::EXTRA_ASKS);
            others = policy::others_while_starting(&others, &eldest, owner);
        }
        others.retain(|p| !f.asked.contains(p));
        if others.is_empty() || left == 0 {
            return self.go_upstream(n, key);
        }
        let Some(at) = self.next_step(n, key) else {
            return;
        };
        if let Some(f) = self.peers[n].flights.get_mut(&key) {
            f.phase = Phase::Others {
                left: others.len(),
                pending: None,
            };
            f.budget = left;
        }
        self.at(
            self.now + left,
            Ev::Timeout {
                peer: usize::MAX,
                at,
            },
        );
        for p in others {
            if let Some(to) = self.idx(&p) {
                self.send(Ev::Lookup {
                    from: n,
                    to,
                    key,
                    ask: HAVE,
                    at,
                });
            }
        }
    }

    /// A lookup reaches `to`: it answers by the node's own rule.
    pub(super) fn answer(&mut self, from: usize, to: usize, key: usize, ask: Ask, at: FlightRef) {
        if !self.peers[to].up {
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
            fetching: flight.is_some_and(|f| f.phase == Phase::Upstream),
            fetch_asked: ask.fetch,
            lease_asked: false,
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
            LookupAnswer::GrantLease | LookupAnswer::NotFound => Rep::NotFound,
        };
        self.send(Ev::Reply {
            to: from,
            from: to,
            key,
            rep,
            at,
        });
    }

    fn as_reply(&self, key: usize, rep: Rep) -> LookupReply {
        match rep {
            Rep::Found => LookupReply::Found(Box::new(self.announces[key].clone())),
            Rep::NotFound => LookupReply::NotFound,
            Rep::Pending => LookupReply::Pending,
            Rep::Redirect(p) => LookupReply::Redirect(p.to_bytes().into()),
            Rep::Busy => LookupReply::Busy,
        }
    }

    pub(super) fn on_reply(&mut self, n: usize, from: usize, key: usize, rep: Rep, at: FlightRef) {
        let now = self.now;
        let Some(f) = self.flight(at) else {
            return;
        };
        let (phase, sent) = (f.phase, f.sent);
        let from_id = self.peers[from].id;
        self.peers[n]
            .book
            .answered(&from_id, std::time::Duration::from_micros(now - sent));
        match phase {
            Phase::Owner(_) => {
                let step = policy::after_owner_reply(Some(self.as_reply(key, rep)));
                match step {
                    OwnerStep::Accept(_) => self.accept(n, key, from, Outcome::Peer),
                    OwnerStep::Wait => self.wait(n, key, from_id, false),
                    OwnerStep::Fetch => self.go_upstream(n, key),
                    other => self.after_owner(n, key, other),
                }
            }
            Phase::Waiting {
                peer,
                until,
                poll,
                from_others,
            } => match policy::after_repoll(Some(self.as_reply(key, rep))) {
                RepollStep::Accept(_) => self.accept(n, key, from, Outcome::Coalesced),
                RepollStep::KeepWaiting => {
                    self.keep_waiting(n, key, peer, until, poll, from_others)
                }
                RepollStep::GiveUp | RepollStep::Fetch => self.stop_waiting(n, key, from_others),
            },
            Phase::Others { left, pending } => {
                if rep == Rep::Found {
                    return self.accept(n, key, from, Outcome::Peer);
                }
                let pending = pending.or((rep == Rep::Pending).then_some(from_id));
                if left <= 1 {
                    return self.others_done(n, key, pending);
                }
                if let Some(f) = self.peers[n].flights.get_mut(&key) {
                    f.phase = Phase::Others {
                        left: left - 1,
                        pending,
                    };
                }
            }
            Phase::Settle | Phase::Upstream => {}
        }
    }

    pub(super) fn on_timeout(&mut self, peer: usize, at: FlightRef) {
        let (n, key) = (at.node, at.key);
        let now_ms = self.now / 1000;
        let Some(f) = self.flight(at) else {
            return;
        };
        let (phase, budget) = (f.phase, f.budget);
        match phase {
            Phase::Owner(owner) => {
                if peer != usize::MAX {
                    let b = std::time::Duration::from_micros(budget);
                    self.peers[n].book.timed_out(&owner, b, now_ms);
                }
                self.after_owner(n, key, policy::after_owner_reply(None));
            }
            Phase::Waiting {
                peer,
                until,
                poll,
                from_others,
            } => self.keep_waiting(n, key, peer, until, poll, from_others),
            Phase::Others { pending, .. } => self.others_done(n, key, pending),
            Phase::Settle | Phase::Upstream => {}
        }
    }

    fn after_owner(&mut self, n: usize, key: usize, step: OwnerStep) {
        let me = self.peers[n].id;
        let candidates = self.candidates(n);
        let Some(f) = self.peers[n].flights.get(&key) else {
            return;
        };
        let left = MAX_OWNER_ASKS.saturating_sub(f.asked.len());
        let next = policy::next_owner(&step, &self.keys[key], me, &f.asked, &candidates, left);
        match next {
            Some(p) if p == me => self.go_upstream(n, key),
            Some(p) => self.ask_owner(n, key, p),
            None => self.ask_others(n, key),
        }
    }

    fn others_done(&mut self, n: usize, key: usize, pending: Option<PeerId>) {
        match pending {
            Some(p) => self.wait(n, key, p, true),
            None => self.go_upstream(n, key),
        }
    }

    fn wait(&mut self, n: usize, key: usize, peer: PeerId, from_others: bool) {
        let until = self.now + PENDING_WAIT;
        self.keep_waiting(n, key, peer, until, REPOLL_FIRST / 2, from_others);
    }

    fn keep_waiting(
        &mut self,
        n: usize,
        key: usize,
        peer: PeerId,
        until: Us,
        poll: Us,
        from_others: bool,
    ) {
        if self.now >= until {
            return self.stop_waiting(n, key, from_others);
        }
        let poll = policy::next_repoll(
            std::time::Duration::from_micros(poll),
            std::time::Duration::from_micros(REPOLL_MAX),
        );
        let poll = us(poll);
        if let Some(f) = self.peers[n].flights.get_mut(&key) {
            f.phase = Phase::Waiting {
                peer,
                until,
                poll,
                from_others,
            };
        }
        if let Some(at) = self.next_step(n, key) {
            self.at((self.now + poll).min(until), Ev::Tick(at));
        }
    }

    fn stop_waiting(&mut self, n: usize, key: usize, from_others: bool) {
        if from_others {
            self.go_upstream(n, key)
        } else {
            self.after_owner(n, key, OwnerStep::Wait)
        }
    }

    pub(super) fn on_tick(&mut self, at: FlightRef) {
        let (n, key) = (at.node, at.key);
        let now = self.now;
        let half = us(self.cfg.lookup_timeout) / 2;
        let Some(f) = self.flight(at) else {
            return;
        };
        match f.phase {
            Phase::Settle => {
                f.settled = now + half >= f.deadline;
                self.plan(n, key);
            }
            Phase::Waiting { peer, until, .. } => {
                if self.now >= until {
                    return self.on_timeout(usize::MAX, at);
                }
                let budget = us(self
                    .cfg
                    .lookup_timeout
                    .max(std::time::Duration::from_millis(500)));
                self.lookup(n, key, peer, FETCH, budget);
            }
            _ => {}
        }
    }

    /// An entry reached `n` by gossip: a flight waiting for it ends.
    pub(super) fn arrived(&mut self, n: usize, key: usize) {
        let waiting = self.peers[n]
            .flights
            .get(&key)
            .is_some_and(|f| matches!(f.phase, Phase::Waiting { .. }));
        if waiting {
            self.complete(n, key, Outcome::Coalesced);
        }
    }

    fn accept(&mut self, n: usize, key: usize, from: usize, outcome: Outcome) {
        let fetched = self.peers[from]
            .store
            .get(&key)
            .copied()
            .unwrap_or(self.now);
        self.store(n, key, fetched);
        self.complete(n, key, outcome);
    }

    fn go_upstream(&mut self, n: usize, key: usize) {
        let Some(f) = self.peers[n].flights.get_mut(&key) else {
            return;
        };
        f.phase = Phase::Upstream;
        let gen = f.gen;
        let held = self.peers[n].store.contains_key(&key);
        if let Some(f) = self.peers[n].flights.get_mut(&key) {
            f.held = held;
        }
        let jitter = 1.0 + self.net.jitter * (self.rng.gen::<f64>() * 2.0 - 1.0);
        let d = (us(self.net.upstream) as f64 * jitter) as Us;
        self.at(self.now + d, Ev::Upstream { node: n, key, gen });
    }

    pub(super) fn upstream_done(&mut self, n: usize, key: usize, gen: u64) {
        if self.peers[n].flights.get(&key).is_none_or(|f| f.gen != gen) {
            return;
        }
        // The content never changes here: a copy held when the fetch began is
        // revalidated for free.
        let held = self.peers[n].flights.get(&key).is_some_and(|f| f.held);
        let outcome = if held {
            self.upstream_304 += 1;
            Outcome::Revalidated
        } else {
            self.upstream_calls += 1;
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
        }
        if outcome == Outcome::Peer {
            self.lookups.push((self.now - f.started) as f64 / 1000.0);
        }
        self.at(self.now, Ev::Read(n));
    }
}
