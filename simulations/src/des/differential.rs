//! The differential test: one scripted world (who answers what and when, who stays
//! silent, when the entry arrives by gossip) played through the simulator's driver (its
//! event queue, in simulated time) and through the daemon's driver
//! (`ghmesh_node::node::drive`, on tokio's paused clock). Both must carry out the same
//! steps at the same moments: the simulator's figures are then the daemon's.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ghmesh_node::node::drive::{drive, Carrier};
use ghmesh_node::placement;
use ghmesh_node::policy::book::{BudgetRule, PeerBook};
use ghmesh_node::policy::resolve::{Ask, End, Input, Start, Step, View};
use ghmesh_protocol::{Announce, LookupReply};
use libp2p::PeerId;

use super::read::Rep;
use super::{us, Des, Ev, NetParams, Us};
use crate::sim::SimConfig;
use crate::workload::Workload;

/// Who answers what, after how long from the lookup's sending (`None`: silence), ask
/// after ask; and when the key arrives by gossip.
#[derive(Debug, Clone, Default)]
pub(crate) struct World {
    answers: HashMap<PeerId, VecDeque<Option<(Duration, Rep)>>>,
    arrival: Option<Duration>,
}

impl World {
    /// The next answer of `peer` to a lookup.
    pub(crate) fn answer(&mut self, peer: PeerId) -> Option<(Duration, Rep)> {
        self.answers.get_mut(&peer)?.pop_front().flatten()
    }
}

const MS: Duration = Duration::from_millis(1);

/// A four-node simulator, nothing scheduled, node 0's book admitting the three others
/// at time 0; everyone up since 0.
fn world_of(seed: u64) -> Des {
    let mut cfg = SimConfig::from_workload(Workload::load("burst").unwrap());
    cfg.nodes = 4;
    cfg.keys = 1;
    cfg.seed = seed;
    cfg.lookup_timeout = Duration::from_secs(1);
    let net = NetParams {
        latency: Duration::ZERO,
        jitter: 0.0,
        ..NetParams::default()
    };
    let mut des = Des::new(cfg, net).unwrap();
    des.queue.clear();
    des.events.clear();
    for n in 0..4 {
        des.peers[n].up = true;
        des.peers[n].started = 0;
    }
    let ids: Vec<PeerId> = des.peers.iter().map(|p| p.id).collect();
    for id in &ids[1..] {
        des.peers[0].book.connected(*id, 0);
        des.peers[0].book.greeted(*id, true, 0);
    }
    des
}

/// The first seed whose node 0 ranks at `rank` for the key (0: owner).
fn seed_ranking_node_0(rank: usize) -> (u64, Des) {
    (1..200)
        .map(|seed| (seed, world_of(seed)))
        .find(|(_, des)| {
            let ids = des.peers.iter().map(|p| p.id);
            placement::ranked(&des.keys[0], ids)[rank] == des.peers[0].id
        })
        .unwrap()
}

/// Plays `world` through the simulator: node 0 misses the key.
fn simulated(mut des: Des, world: World, ask: Ask) -> Vec<(Us, Step)> {
    if let Some(at) = world.arrival {
        let fetched = us(at);
        des.at(
            us(at),
            Ev::Gossip {
                to: 0,
                key: 0,
                fetched,
            },
        );
    }
    des.world = Some(world);
    des.ask = ask;
    des.start_flight(0, 0, true, true);
    des.run();
    des.trace
}

/// The daemon's driver in the same world: every answer and silence on tokio's paused
/// clock, the peer book kept as the daemon's lookups keep it.
struct Scripted {
    origin: tokio::time::Instant,
    book: PeerBook,
    rule: BudgetRule,
    world: World,
    found: Announce,
    trace: Vec<(Us, Step)>,
}

impl Scripted {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn reply(&self, rep: Rep) -> LookupReply {
        match rep {
            Rep::Found => LookupReply::Found(Box::new(self.found.clone())),
            Rep::NotFound => LookupReply::NotFound,
            Rep::Pending => LookupReply::Pending,
            Rep::Redirect(p) => LookupReply::Redirect(p.to_bytes().into()),
            Rep::Busy => LookupReply::Busy,
            Rep::Lease => LookupReply::Lease,
        }
    }

    /// `peer`'s answer to a lookup given `budget`, and when it comes (from now).
    fn outcome(&mut self, peer: PeerId, budget: Duration) -> (Duration, Option<LookupReply>) {
        match self.world.answer(peer) {
            Some((after, rep)) if after < budget => (after, Some(self.reply(rep))),
            _ => (budget, None),
        }
    }

    fn note(&mut self, peer: PeerId, after: Duration, reply: &Option<LookupReply>) {
        let now_ms = self.now().as_millis() as u64;
        match reply {
            Some(_) => self.book.answered(&peer, after),
            None => self.book.lookup_unanswered(&peer, after, self.rule, now_ms),
        }
    }
}

impl Carrier for Scripted {
    fn view<R>(&mut self, f: impl FnOnce(&View<'_>) -> R) -> R {
        let now = self.now();
        f(&View {
            now,
            now_ms: now.as_millis() as u64,
            book: &self.book,
            lease_holder: None,
        })
    }

    async fn await_member(&mut self, until: Duration) -> Input {
        self.sleep_until(until).await;
        Input::Tick
    }

    async fn fetch_body(&mut self, _from: PeerId, _budget: Duration) -> bool {
        false
    }

    async fn sleep_until(&mut self, until: Duration) {
        tokio::time::sleep_until(self.origin + until).await;
    }

    async fn ask(&mut self, peer: PeerId, _ask: Ask, budget: Duration) -> Option<LookupReply> {
        let (after, reply) = self.outcome(peer, budget);
        tokio::time::sleep(after).await;
        self.note(peer, after, &reply);
        reply
    }

    async fn ask_all(
        &mut self,
        peers: &[PeerId],
        budget: Duration,
    ) -> Vec<(PeerId, Option<LookupReply>)> {
        let outcomes: Vec<_> = peers
            .iter()
            .map(|p| (*p, self.outcome(*p, budget)))
            .collect();
        let last = outcomes.iter().map(|(_, (after, _))| *after).max();
        tokio::time::sleep(last.unwrap_or_default()).await;
        outcomes
            .into_iter()
            .map(|(p, (after, reply))| {
                self.note(p, after, &reply);
                (p, reply)
            })
            .collect()
    }

    async fn accept(&mut self, _from: PeerId, _announce: Announce) -> bool {
        true
    }

    async fn wait(&mut self, _peer: PeerId, until: Duration) -> bool {
        match self.world.arrival {
            Some(at) if at <= until => {
                self.sleep_until(at.max(self.now())).await;
                true
            }
            _ => {
                self.sleep_until(until).await;
                false
            }
        }
    }

    fn release(&mut self, _owner: PeerId) {}

    fn saw(&mut self, step: &Step) {
        self.trace.push((us(self.now()), step.clone()));
    }
}

/// Plays `world` through the daemon's driver, with node 0's book and start as the
/// simulator has them.
async fn daemon(des: &Des, world: World, ask: Ask) -> (End, Vec<(Us, Step)>) {
    let p = &des.peers[0];
    let mut book = PeerBook::default();
    for peer in &des.peers[1..] {
        book.connected(peer.id, 0);
        book.greeted(peer.id, true, 0);
    }
    let start = Start {
        key: des.keys[0],
        me: p.id,
        ask,
        node_started: Duration::ZERO,
        node_started_ms: 0,
        has_bootstrap: false,
        bodyless_from: None,
        timers: des.timers,
    };
    let mut carrier = Scripted {
        origin: tokio::time::Instant::now(),
        book,
        rule: des.timers.budget,
        world,
        found: des.announces[0].clone(),
        trace: Vec::new(),
    };
    let (end, _) = drive(&mut carrier, start).await;
    (end, carrier.trace)
}

fn kinds(trace: &[(Us, Step)]) -> Vec<String> {
    trace
        .iter()
        .map(|(t, s)| {
            let kind = format!("{s:?}");
            let kind = kind.split([' ', '(']).next().unwrap_or("").to_string();
            format!("{:.1} ms {kind}", *t as f64 / 1000.0)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_silent_owner_a_lease_handed_back_a_redirect_re_polls_and_an_arrival() {
    // Node 0 ranks last: it asks the owner, then the next in rank.
    let (_, des) = seed_ranking_node_0(3);
    let ids: Vec<PeerId> = des.peers.iter().map(|p| p.id).collect();
    let ranked = placement::ranked(&des.keys[0], ids.iter().copied());
    let (owner, next) = (ranked[0], ranked[1]);
    let t = des.timers;
    // The owner misses our first lookup; the next one names it; asked again it is
    // fetching, and still is at the first re-poll; its announce lands during the
    // second wait.
    let again = t.budget.initial + 3 * MS;
    let first_repoll = again + 2 * MS + t.repoll_first;
    let mut world = World::default();
    world.answers.insert(
        owner,
        [
            None,
            Some((2 * MS, Rep::Pending)),
            Some((2 * MS, Rep::Pending)),
        ]
        .into(),
    );
    world
        .answers
        .insert(next, [Some((3 * MS, Rep::Redirect(owner)))].into());
    world.arrival = Some(first_repoll + 2 * MS + t.repoll_first);

    let (end, by_daemon) = daemon(&des, world.clone(), Ask::LEASE).await;
    let by_simulator = simulated(des, world, Ask::LEASE);
    assert_eq!(end, End::Coalesced);
    assert_eq!(
        kinds(&by_daemon),
        [
            "0.0 ms Ask",
            "1000.0 ms Release",
            "1000.0 ms Ask",
            "1003.0 ms Ask",
            "1005.0 ms Wait",
            "1055.0 ms Ask",
            "1057.0 ms Wait",
            "1107.0 ms Done",
        ],
        "the scenario as scripted (timers: {t:?})"
    );
    assert_eq!(
        by_simulator, by_daemon,
        "the same steps at the same moments"
    );
}

#[tokio::test(start_paused = true)]
async fn owning_the_key_while_the_view_settles_then_asking_the_others() {
    // Node 0 owns the key: just started, its view settles first, then it asks the
    // others (its eldest too) whether they have it; one says no, one is silent.
    let (_, des) = seed_ranking_node_0(0);
    let others: Vec<PeerId> = des.peers[1..].iter().map(|p| p.id).collect();
    let mut world = World::default();
    world
        .answers
        .insert(others[0], [Some((4 * MS, Rep::NotFound))].into());
    world.answers.insert(others[1], [None].into());
    world.answers.insert(others[2], [None].into());

    let (end, by_daemon) = daemon(&des, world.clone(), Ask::FETCH).await;
    let by_simulator = simulated(des, world, Ask::FETCH);
    assert_eq!(end, End::Upstream);
    let seen = kinds(&by_daemon);
    assert_eq!(seen.first().map(String::as_str), Some("0.0 ms Sleep"));
    assert!(
        seen.iter().any(|s| s.ends_with("AskAll")),
        "the others were asked: {seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("1000.0 ms Done"));
    assert_eq!(
        by_simulator, by_daemon,
        "the same steps at the same moments"
    );
}
