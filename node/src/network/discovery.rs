//! Finding the fleet from the event loop: rendezvous rounds on the DHT (steady, or
//! brought forward when the membership changes), DNS bootstrap seeds, and dials.

use std::time::Duration;

use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::dial_opts::PeerCondition;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use super::event_loop::EventLoop;
use crate::limits::MAX_PEERS;

/// Discovery runs this soon after the first connection and after each newly admitted
/// member, then backs off to the steady interval: nodes that joined through one
/// bootstrap find each other in about a second instead of one interval.
pub const DISCOVERY_SOON: Duration = Duration::from_millis(200);
/// Least time between two discovery rounds brought forward.
pub const DISCOVERY_MIN_GAP: Duration = Duration::from_secs(2);

impl EventLoop {
    /// Provide the rendezvous key and look up its providers. Re-provide every 30
    /// rounds: a record must outlive churn of the peers that store it.
    pub(super) fn discover(&mut self, ticks: u64) {
        if self.swarm.connected_peers().next().is_none() {
            return;
        }
        self.discovered_once = true;
        self.last_discovery = Some(tokio::time::Instant::now());
        let kad = &mut self.swarm.behaviour_mut().kad;
        if !self.providing || ticks.is_multiple_of(30) {
            if let Err(e) = kad.start_providing(self.rendezvous.clone()) {
                tracing::debug!("start_providing: {e}");
            }
        }
        kad.get_providers(self.rendezvous.clone());
        if ticks % 30 == 1 {
            let _ = kad.bootstrap();
        }
    }

    /// Runs discovery shortly (coalescing several requests into one round).
    /// At most one early round per [`DISCOVERY_MIN_GAP`]: a fleet admitting dozens
    /// of members at once must not turn each admission into a DHT query.
    pub(super) fn discover_soon(&mut self) {
        let now = tokio::time::Instant::now();
        let earliest = self.last_discovery.map_or(now, |l| l + DISCOVERY_MIN_GAP);
        let at = (now + DISCOVERY_SOON).max(earliest);
        self.discover_at = Some(self.discover_at.map_or(at, |t| t.min(at)));
    }

    /// Dials every resolved bootstrap address whose peer we are not connected to
    /// (nor ourselves); the handshake tells us who answers.
    pub(super) fn dial_seeds(&mut self, addrs: Vec<Multiaddr>) {
        self.seed_peers.retain(|a, _| addrs.contains(a));
        for addr in addrs {
            // Our own listen addresses carry `/p2p/<us>`; the name resolves to us too.
            let own = self.listen.iter().any(|l| {
                let mut plain = l.clone();
                plain.pop();
                plain == addr
            });
            let connected = self
                .seed_peers
                .get(&addr)
                .copied()
                .flatten()
                .is_some_and(|p| self.swarm.is_connected(&p));
            if own || connected {
                continue;
            }
            if self.swarm.connected_peers().count() >= MAX_PEERS {
                break;
            }
            self.seed_peers.entry(addr.clone()).or_insert(None);
            // A fresh source port, for the same reason as in `dial_peer`.
            let opts = DialOpts::unknown_peer_id()
                .address(addr.clone())
                .allocate_new_port()
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::trace!(%addr, "bootstrap dial: {e}");
            }
        }
    }

    pub(super) fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.swarm.connected_peers().count() >= MAX_PEERS
        {
            return;
        }
        // A dial to the peer under way may be trying only addresses that no longer work
        // (a relay it just left, its LAN address from another network, which takes the
        // whole 10 s dial deadline to fail): addresses it is not trying get a dial of
        // their own at once instead of waiting for it to fail.
        let under_way = self.dialing.get(&peer);
        let fresh: Vec<Multiaddr> = addrs
            .into_iter()
            .filter(|a| under_way.is_none_or(|tried| !tried.contains(a)))
            .collect();
        let condition = match under_way {
            Some(_) if fresh.is_empty() => return,
            Some(_) => PeerCondition::Disconnected,
            None => PeerCondition::DisconnectedAndNotDialing,
        };
        if under_way.is_none() && self.dialing.len() >= MAX_PEERS {
            return;
        }
        // A fresh source port: two nodes that discover each other at the same moment
        // would otherwise dial from their listening ports, turning the crossing dials
        // into one TCP simultaneous open that both handshakes reject.
        let opts = DialOpts::peer_id(peer)
            .condition(condition)
            .addresses(fresh.clone())
            .allocate_new_port()
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                let tried = self.dialing.entry(peer).or_default();
                for a in fresh {
                    if tried.len() < MAX_DIALLED_ADDRS {
                        tried.push(a);
                    }
                }
            }
            Err(e) => tracing::trace!(%peer, "dial: {e}"),
        }
    }
}

/// Addresses remembered per peer while dials to it are under way.
const MAX_DIALLED_ADDRS: usize = 16;

/// The next batch of resolved bootstrap addresses; never, without DNS seeds.
pub(super) async fn next_seeds(
    seeds: &mut Option<mpsc::Receiver<Vec<Multiaddr>>>,
) -> Option<Vec<Multiaddr>> {
    match seeds {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
