//! Membership by proof. A connected peer is only a member (owner candidate, asked on a
//! miss, allowed to ask us) once it answered our sealed hello: a nonce, bound to both
//! peer ids, that only a holder of the mesh key can seal back. Subscribing to the
//! gossip topic proves nothing (anyone connected sees the topic name).
//!
//! Members exchange lists on admission, both ways: the newcomer and we swap the
//! members we know, and we introduce the newcomer to every member we had. Each side
//! dials whom it lacks, so runners that joined through one bootstrap at the same moment
//! know each other within a few round trips instead of one discovery interval.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::Duration;

use ghmesh_protocol::ledger::{BudgetEntry, ByteBuf, Ledger};
use ghmesh_protocol::wire::{MAX_ADDR_LEN, MAX_MEMBER_ADDRS, MAX_MEMBER_LIST};
use ghmesh_protocol::{Addressing, Hello, MemberAddr, MemberList, MembersRequest, Message, Reach};
use libp2p::{Multiaddr, PeerId};

use super::{Inner, Node};
use crate::limits::MAX_SMALL_FRAME;
use crate::network::reach::Connection;
use crate::network::Channel;
use crate::placement::Standing;
use crate::upstream::ledger::BudgetId;

/// A node pulls member lists from the members it admits while it has at most this
/// many: enough to learn the fleet from more than one point of view, without every
/// admission costing a list in a large fleet.
const EXCHANGE_WHILE_MEMBERS: usize = 3;

/// Hellos sent again at once to a peer still connected after one failed.
const HELLO_RETRIES: usize = 2;

/// How often the book is checked against the connected peers (a connect or
/// disconnect event dropped under load must not leave it wrong for long).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How often a node swaps member lists with one member, in turn, during its first
/// minute: member lists are otherwise swapped only on admission and when an address
/// changes, so a member a node failed to dial once (its relay changing under the dial,
/// say: a list swapped a moment too early carries the old address) stayed a stranger
/// until the next discovery round, which with the public DHT alone comes once a
/// minute. Two small messages per node per period.
pub(super) const REPAIR_EVERY: Duration = Duration::from_secs(5);
/// Turns of [`REPAIR_EVERY`] that make a node's first minute.
const REPAIR_YOUNG_TURNS: u64 = 12;
/// After its first minute a node swaps lists every this many turns (30 s).
const REPAIR_LATER_EVERY: u64 = 6;

/// Whether turn `turn` (1, 2, … since start) swaps lists.
pub(super) fn repair_due(turn: u64) -> bool {
    turn <= REPAIR_YOUNG_TURNS || turn.is_multiple_of(REPAIR_LATER_EVERY)
}

impl Node {
    /// A connection to `peer` is up: greet it unless it is a member already.
    pub(super) fn on_connected(&self, peer: PeerId) {
        let now = self.now_ms();
        if self.book(|b| b.connected(peer, now)).unwrap_or(false) {
            let node = self.clone();
            self.spawn(async move { node.greet(peer).await });
        }
    }

    /// The last connection to `peer` closed.
    pub(super) fn on_disconnected(&self, peer: PeerId) {
        let now = self.now_ms();
        self.book(|b| b.disconnected(&peer, now));
        // A holder that left fetches nothing more: its leases pass to the next askers.
        self.leases(|l| l.forget_holder(&peer));
    }

    /// Sends our hello and admits `peer` when its reply proves the key.
    async fn greet(&self, peer: PeerId) {
        let mut proved = self.hello(peer).await;
        for _ in 0..HELLO_RETRIES {
            if proved || !self.book(|b| b.knows(&peer)).unwrap_or(false) {
                break;
            }
            // Still connected: the hello may have gone on a connection that closed under
            // it while another stayed up (a relayed one, closed once hole punching opened
            // a direct one). Waiting out the regreet delay would keep a member out for
            // seconds.
            proved = self.hello(peer).await;
        }
        let now = self.now_ms();
        let newly = self.book(|b| b.greeted(peer, proved, now)).unwrap_or(false);
        if !proved {
            self.inner.telemetry.counters.hellos_failed.inc();
            tracing::debug!(%peer, "peer did not prove it holds the mesh key");
            return;
        }
        if newly {
            if let Some(mesh) = &self.inner.mesh {
                mesh.admitted.notify_waiters();
            }
            // A member to tell what we stored while nobody listened (it may have
            // subscribed before we knew it was a member, or the hint was dropped).
            self.reannounce();
            self.inner.telemetry.counters.members_admitted.inc();
            tracing::debug!(%peer, "member admitted");
            if let Some(net) = self.network() {
                self.tell_members(net).await;
                net.discover_soon().await;
            }
            // Early in our life, pull the lists of the first members we meet (and ask
            // the very first to introduce us); later members come from those lists.
            let count = self.members().len();
            if count <= EXCHANGE_WHILE_MEMBERS {
                let known = self.member_list(peer).await.members;
                self.exchange_members(peer, known, count <= 1).await;
            }
        }
    }

    /// Our network found our reachability (again): when it changed, every member hears
    /// it in a new hello, since owners are chosen by it.
    pub(super) fn on_reach(&self, reach: Reach) {
        let now = self.now_ms();
        if !self.book(|b| b.set_my_reach(reach, now)).unwrap_or(false) {
            return;
        }
        tracing::info!(reachability = ?reach, "reachability changed");
        self.tell_standing();
    }

    /// Sends a hello to every member that has not heard our standing as it is (owners
    /// moved: a member saying it is not directly connected to all makes ours matter).
    pub(super) fn tell_standing(&self) {
        for peer in self.book(|b| b.untold()).unwrap_or_default() {
            let node = self.clone();
            self.spawn(async move {
                node.hello(peer).await;
            });
        }
    }

    /// A relay reserved us a slot: every member hears our addresses now, and passes
    /// them on to the members that could not reach us.
    pub(super) fn on_relayed(&self, addrs: Vec<Multiaddr>) {
        let reach = self.book(|b| b.my_reach()).unwrap_or_default();
        let me = member_addr(self.inner.me.id, addrs, reach);
        for peer in self.members() {
            let node = self.clone();
            let me = me.clone();
            self.spawn(async move { node.exchange_members(peer, vec![me], false).await });
        }
    }

    /// Our members but `peer`, as many as one member list carries.
    fn members_but(&self, peer: PeerId) -> Vec<PeerId> {
        self.members()
            .into_iter()
            .filter(|p| *p != peer)
            .take(MAX_MEMBER_LIST)
            .collect()
    }

    /// Tells every member but `member` its addresses, `entry`.
    pub(super) async fn pass_on(&self, member: PeerId, entry: MemberAddr) {
        let others = self.members_but(member);
        let sends = others
            .into_iter()
            .map(|m| self.exchange_members(m, vec![entry.clone()], false));
        futures::future::join_all(sends).await;
    }

    /// Tells every other member about `newcomer` (it asked us to), once per connection.
    pub(super) async fn introduce(&self, newcomer: PeerId) {
        if !self.book(|b| b.mark_introduced(&newcomer)).unwrap_or(false) {
            return;
        }
        // Its listen addresses come with identify, which may land just after the hello.
        let mut entry = None;
        for _ in 0..10 {
            entry = self.member_addrs(vec![newcomer]).await.into_iter().next();
            if entry.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(entry) = entry {
            self.pass_on(newcomer, entry).await;
        }
    }

    /// Proves the key to `peer` and has it prove the key back; each tells the other its
    /// standing. Sent again to every member when ours changes.
    pub(super) async fn hello(&self, peer: PeerId) -> bool {
        let addr = self.address(peer);
        let nonce = addr.nonce;
        let timeout = self.deadlines().hello;
        let mine = self.book(|b| b.mine()).unwrap_or_default();
        let up = &self.inner.upstream;
        let msg = Message::Hello(hello_of(addr, mine, up.ledger_snapshot(), up.own_budget()));
        match self
            .ask(peer, Channel::Small, &msg, timeout, MAX_SMALL_FRAME)
            .await
        {
            Ok(Some(Message::HelloReply(h))) => {
                let a = &h.addr;
                let proved = a.nonce == nonce
                    && a.is_between(&peer.to_bytes(), &self.inner.me.id.to_bytes());
                if proved {
                    self.heard_hello_budgets(peer, &h);
                    let now = self.now_ms();
                    let moved = self.book(|b| {
                        b.told(&peer, mine);
                        b.set_standing(&peer, standing_of(&h), now)
                    });
                    if moved == Some(true) {
                        self.tell_standing();
                    }
                }
                proved
            }
            Ok(Some(_)) => {
                self.violated(peer);
                false
            }
            Ok(None) | Err(_) => false,
        }
    }

    /// Sends `known` to `peer` and dials the members it answers with that we lack.
    async fn exchange_members(&self, peer: PeerId, known: Vec<MemberAddr>, new: bool) {
        let request = Message::Members(MembersRequest {
            addr: self.address(peer),
            known,
            new,
        });
        let timeout = self.deadlines().hello;
        match self
            .ask(peer, Channel::Small, &request, timeout, MAX_SMALL_FRAME)
            .await
        {
            Ok(Some(Message::MemberList(l))) if l.members.len() <= MAX_MEMBER_LIST => {
                self.dial_unknown(l.members).await
            }
            Ok(Some(_)) => self.violated(peer),
            Ok(None) | Err(_) => {}
        }
    }

    /// Dials the listed members we are not members with (bounded, checked).
    pub(super) async fn dial_unknown(&self, list: Vec<MemberAddr>) {
        let Some(net) = self.network() else {
            return;
        };
        let known: HashSet<PeerId> = self.members().into_iter().collect();
        let mut list: Vec<(PeerId, MemberAddr)> = list
            .into_iter()
            .take(MAX_MEMBER_LIST)
            .filter_map(|m| Some((PeerId::from_bytes(&m.peer).ok()?, m)))
            .filter(|(p, _)| *p != self.inner.me.id)
            .collect();
        let now = self.now_ms();
        self.book(|b| list.iter().for_each(|(p, _)| b.listed(*p, now)));
        // Public members first: with any in the fleet, they are the owners we will ask.
        list.sort_by_key(|(_, m)| m.reach != Reach::Public);
        for (p, m) in list {
            if known.contains(&p) {
                continue;
            }
            let addrs: Vec<Multiaddr> = m
                .addrs
                .iter()
                .take(MAX_MEMBER_ADDRS)
                .filter(|a| a.len() <= MAX_ADDR_LEN)
                .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
                .collect();
            if !addrs.is_empty() {
                net.dial_peer(p, addrs).await;
            }
        }
    }

    /// `peers` with the addresses they listen on (those whose identify arrived).
    async fn member_addrs(&self, peers: Vec<PeerId>) -> Vec<MemberAddr> {
        let addrs = match self.network() {
            Some(net) => net.listen_addrs_of(peers).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let standing: std::collections::HashMap<PeerId, Standing> = self
            .book(|b| b.members_standing())
            .unwrap_or_default()
            .into_iter()
            .collect();
        addrs
            .into_iter()
            .map(|(p, a)| {
                let reach = standing.get(&p).map(|s| s.reach).unwrap_or_default();
                member_addr(p, a, reach)
            })
            .collect()
    }

    /// The members changed: the network's relay serves only them, and the upstream
    /// client counts those that said they spend its token's budget as its spenders
    /// before they have spent it.
    pub(super) async fn tell_members(&self, net: &crate::network::NetworkHandle) {
        let members = self.members();
        self.inner.upstream.set_members(&members);
        net.set_members(members).await;
    }

    /// What `peer`'s hello (or reply) said of the budgets: the budget its own token
    /// spends, and what it knows of their current windows (known before our first
    /// request on them). A list that fails the ledger's checks is left out; the hello
    /// still counts.
    pub(super) fn heard_hello_budgets(&self, peer: PeerId, h: &Hello) {
        let spends = h
            .spends
            .as_ref()
            .and_then(|b| BudgetId::try_from(b.as_slice()).ok());
        self.inner.upstream.member_spends(peer, spends);
        if h.ledger.is_empty() {
            return;
        }
        let ledger = Ledger {
            entries: h.ledger.clone(),
            spender: None,
        };
        match ledger.check(self.clock().now_secs()) {
            Ok(()) => {
                self.inner.upstream.ledger_heard(&ledger.entries, None);
            }
            Err(e) => tracing::debug!("a hello's ledger is not believed: {e}"),
        }
    }

    /// Our members (but the asker) with the addresses they listen on.
    pub(super) async fn member_list(&self, asker: PeerId) -> MemberList {
        let members = self.members_but(asker);
        MemberList {
            members: self.member_addrs(members).await,
        }
    }
}

/// Our hello (or hello reply) with `addr`, telling our standing `mine`, what we know
/// of the budgets' current windows (`ledger`) and the budget our token spends.
pub(super) fn hello_of(
    addr: Addressing,
    mine: Standing,
    ledger: Vec<BudgetEntry>,
    spends: Option<BudgetId>,
) -> Hello {
    Hello {
        addr,
        reach: mine.reach,
        direct_to_all: mine.direct_to_all,
        ledger,
        spends: spends.map(|b| ByteBuf::from(b.to_vec())),
    }
}

/// A member's standing as its hello (or hello reply) says it.
pub(super) fn standing_of(h: &Hello) -> Standing {
    Standing {
        reach: h.reach,
        direct_to_all: h.direct_to_all,
    }
}

/// `peer` as a member list carries it: with the first few of `addrs` that fit, and the
/// reachability it told us.
fn member_addr(peer: PeerId, addrs: Vec<Multiaddr>, reach: Reach) -> MemberAddr {
    MemberAddr {
        reach,
        peer: peer.to_bytes().into(),
        addrs: addrs
            .into_iter()
            .map(|a| a.to_vec())
            .filter(|a| a.len() <= MAX_ADDR_LEN)
            .take(MAX_MEMBER_ADDRS)
            .map(Into::into)
            .collect(),
    }
}

/// Which member to swap lists with at `now_ms`: each in turn, one per
/// [`REPAIR_EVERY`], the same order on every node (members sorted).
pub(super) fn repair_partner(mut members: Vec<PeerId>, now_ms: u64) -> Option<PeerId> {
    if members.is_empty() {
        return None;
    }
    members.sort();
    let turn = now_ms / REPAIR_EVERY.as_millis() as u64;
    members.get((turn % members.len() as u64) as usize).copied()
}

/// Swaps member lists with one member when [`repair_due`], and dials the members it
/// names that we are not connected to.
pub(super) async fn repair(node: Weak<Inner>) {
    let mut turn = 0u64;
    super::periodically(
        node,
        |_| REPAIR_EVERY,
        move |node| {
            turn += 1;
            let due = repair_due(turn);
            async move {
                if due {
                    if let Some(peer) = repair_partner(node.members(), node.now_ms()) {
                        let ours = node.member_list(peer).await.members;
                        node.exchange_members(peer, ours, false).await;
                    }
                }
                true
            }
        },
    )
    .await;
}

/// Keeps the book in line with the connected peers: forgets who is gone, greets who is
/// there and was never greeted (an event lost while the node was behind).
pub(super) async fn sweep(node: Weak<Inner>) {
    super::periodically(
        node,
        |_| SWEEP_EVERY,
        |node| async move {
            let Some(net) = node.network() else {
                return false;
            };
            if let Ok(peers) = net.peers().await {
                let connected: Vec<PeerId> = peers
                    .iter()
                    .filter_map(|p| p.peer_id.parse().ok())
                    .collect();
                node.book(|b| b.forget_all_but(&connected));
                for p in connected {
                    node.on_connected(p);
                }
                let direct: HashSet<PeerId> = peers
                    .iter()
                    .filter(|p| p.connection == Connection::Direct)
                    .filter_map(|p| p.peer_id.parse().ok())
                    .collect();
                let public_relay: HashSet<PeerId> = peers
                    .iter()
                    .filter(|p| p.public_relay)
                    .filter_map(|p| p.peer_id.parse().ok())
                    .collect();
                node.book(|b| b.set_public_relay(&public_relay));
                let now = node.now_ms();
                if node.book(|b| b.set_my_direct(&direct, now)) == Some(true) {
                    tracing::info!(
                        direct_to_all = node.book(|b| b.mine().direct_to_all),
                        "direct connections to every member changed"
                    );
                }
                node.tell_members(net).await;
                // A reachability event dropped under load, or a hello that told it
                // lost: caught up here.
                if let Ok(stats) = net.stats().await {
                    node.on_reach(stats.reach.reachability);
                }
                node.tell_standing();
            }
            true
        },
    )
    .await;
}

#[cfg(test)]
mod repair_tests {
    use super::*;

    #[test]
    fn members_take_turns_at_swapping_lists() {
        assert_eq!(repair_partner(Vec::new(), 0), None);
        let mut m: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        m.sort();
        let every = REPAIR_EVERY.as_millis() as u64;
        let picked: Vec<PeerId> = (0..3)
            .filter_map(|k| repair_partner(m.clone(), k * every + 1))
            .collect();
        assert_eq!(picked, m, "each member in turn");
        let reversed: Vec<PeerId> = m.iter().rev().copied().collect();
        assert_eq!(
            repair_partner(reversed, every),
            Some(m[1]),
            "whatever the order given"
        );
    }

    #[test]
    fn lists_are_swapped_often_in_the_first_minute_and_seldom_after() {
        let due: Vec<u64> = (1..=30).filter(|t| repair_due(*t)).collect();
        assert_eq!(due, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 24, 30]);
    }
}
