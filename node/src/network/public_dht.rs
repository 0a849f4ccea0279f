//! The public libp2p DHT as a rendezvous (`--public-dht`, contract §8): a second
//! Kademlia, a client only, speaking `/ipfs/kad/1.0.0`. The node provides one key
//! derived from the mesh's secret and the current hour and looks up this hour's and the
//! previous hour's; the providers it finds are dialled and greeted like any candidate.
//! Public nodes get nothing else: the fleet's gossip and requests speak ghmesh's own
//! protocols, which they do not, and a peer is greeted only once identify says it
//! speaks them.
//!
//! [`plan`] decides (a plain function of the state and `now`); the event loop carries
//! it out.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ghmesh_protocol::keys::{hourly_rendezvous, RENDEZVOUS_HOUR_SECS};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{kad, Multiaddr, PeerId};

use super::event_loop::EventLoop;
use super::reach;
use super::relays::Conn;
use crate::limits::MAX_PROVIDER_DIALS;

/// How to enter the public DHT, and the base of the hourly keys.
#[derive(Clone)]
pub struct PublicDhtConfig {
    /// Public bootstrap nodes, each ending in `/p2p/<id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// [`ghmesh_protocol::MeshKeys::public_rendezvous_base`].
    pub base: [u8; 32],
}

impl std::fmt::Debug for PublicDhtConfig {
    // The base is key material: it links every hour's key to the mesh.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicDhtConfig")
            .field("bootstrap", &self.bootstrap)
            .field("base", &"<redacted>")
            .finish()
    }
}

/// The first lookups while the node has no member: a runner that just started should
/// find its fleet within seconds. The gap doubles each round it stays alone, up to
/// [`LOOKUP_WITH_MEMBERS`]: a fleet that starts later finds it through its record.
pub const LOOKUP_ALONE: Duration = Duration::from_secs(3);
/// Lookups once it has members: newcomers find us through their own lookups and our
/// record; ours only catch fleets split in two.
pub const LOOKUP_WITH_MEMBERS: Duration = Duration::from_secs(60);
/// Least time between two entries through the bootstrap nodes (while no DHT node has
/// answered).
pub const REENTER_EVERY: Duration = Duration::from_secs(10);
/// How long a connection to a public node (one that does not speak ghmesh) is kept
/// once no public query is running, unless a relay in use: far shorter than the idle
/// timeout (5 min), which would let a few minutes' lookups pile up dozens of
/// connections, each taking a slot members need.
pub const PUBLIC_LINGER: Duration = Duration::from_secs(30);
/// Least time between two publications of our record when only our addresses changed
/// (a reservation accepted, then another; AutoNAT confirming an address): each is a
/// walk of the DHT.
pub const REPROVIDE_GAP: Duration = Duration::from_secs(5);
/// Providers dialled per answer to a lookup; [`MAX_PROVIDER_DIALS`] per round. Any DHT
/// node may answer with made-up providers: one answer cannot spend a round's dials.
pub const DIALS_PER_ANSWER: usize = 4;
/// Public DHT nodes remembered as having answered (a bound on [`PublicDht::answered`]).
pub const MAX_ANSWERED: usize = 1024;

/// What the rendezvous has done, for [`plan`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// The hour and the addresses our record was last published with.
    pub provided: Option<(u64, Vec<Multiaddr>)>,
    /// When it was published (or the publication started).
    pub provided_at: Option<Duration>,
    /// When we last entered through the bootstrap nodes.
    pub entered_at: Option<Duration>,
    /// When we last looked up providers.
    pub looked_up_at: Option<Duration>,
    /// Lookup rounds in a row without a member (the gap doubles with each).
    pub alone_rounds: u32,
}

/// One step for the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Add the bootstrap nodes to the routing table and bootstrap.
    Enter,
    /// Stop providing `old` (if any) and provide the key of `hour`.
    Provide {
        /// The hour whose key is provided now.
        hour: u64,
        /// The hour whose record to stop renewing.
        old: Option<u64>,
    },
    /// Look up the providers of these hours' keys.
    LookUp(Vec<u64>),
}

/// What to do now (`now`: time since the Unix epoch), given how many peers of the public
/// routing table have answered us, our external addresses and whether we have members.
pub fn plan(
    state: &Rendezvous,
    now: Duration,
    routing_peers: usize,
    external: &[Multiaddr],
    has_members: bool,
) -> Vec<Step> {
    let since = |t: Option<Duration>| t.map(|t| now.saturating_sub(t));
    if routing_peers == 0 {
        if since(state.entered_at).is_none_or(|d| d >= REENTER_EVERY) {
            return vec![Step::Enter];
        }
        return Vec::new();
    }
    let hour = now.as_secs() / RENDEZVOUS_HOUR_SECS;
    let mut steps = Vec::new();
    let publish = match &state.provided {
        None => true,
        Some((h, _)) if *h != hour => true,
        Some((_, addrs)) => {
            addrs.as_slice() != external
                && since(state.provided_at).is_none_or(|d| d >= REPROVIDE_GAP)
        }
    };
    if publish {
        steps.push(Step::Provide {
            hour,
            old: state
                .provided
                .as_ref()
                .map(|(h, _)| *h)
                .filter(|h| *h != hour),
        });
    }
    let every = if has_members {
        LOOKUP_WITH_MEMBERS
    } else {
        LOOKUP_ALONE
            .saturating_mul(1 << state.alone_rounds.min(8))
            .min(LOOKUP_WITH_MEMBERS)
    };
    if since(state.looked_up_at).is_none_or(|d| d >= every) {
        steps.push(Step::LookUp(vec![hour, hour.saturating_sub(1)]));
    }
    steps
}

/// The wall clock as time since the epoch (hours are wall-clock hours: every member
/// must compute the same key).
pub fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Connections to public nodes (not in `fleet`) older than [`PUBLIC_LINGER`], but
/// those to relays in use: ours (`reserved`) or a circuit's to a member.
pub(super) fn public_to_close(
    conns: &HashMap<ConnectionId, Conn>,
    fleet: &HashSet<PeerId>,
    reserved: &HashSet<PeerId>,
    now: tokio::time::Instant,
) -> Vec<ConnectionId> {
    let in_use: HashSet<PeerId> = conns
        .values()
        .filter_map(|c| reach::relay_of(&c.remote))
        .chain(reserved.iter().copied())
        .collect();
    conns
        .iter()
        .filter(|(_, c)| {
            !fleet.contains(&c.peer)
                && !in_use.contains(&c.peer)
                && now.duration_since(c.since) >= PUBLIC_LINGER
        })
        .map(|(id, _)| *id)
        .collect()
}

/// The public DHT's state in the event loop.
pub(super) struct PublicDht {
    pub(super) cfg: PublicDhtConfig,
    pub(super) state: Rendezvous,
    /// Providers still to be dialled this lookup round: any DHT node may answer a
    /// lookup with made-up providers, so a round dials at most
    /// [`MAX_PROVIDER_DIALS`] of them.
    pub(super) dials_left: usize,
    /// Providers dialled this round (an answer naming them again costs nothing).
    pub(super) dialled: HashSet<PeerId>,
    /// Public DHT nodes that answered us (identify listed the DHT protocol): the
    /// routing table holds the bootstrap nodes from the start, answered or not.
    pub(super) answered: HashSet<PeerId>,
    /// Peers in the public routing table that answered, at the last round.
    pub(super) routing_peers: usize,
}

impl PublicDht {
    /// Nothing done yet.
    pub(super) fn new(cfg: PublicDhtConfig) -> Self {
        PublicDht {
            cfg,
            state: Rendezvous::default(),
            dials_left: 0,
            dialled: HashSet::new(),
            answered: HashSet::new(),
            routing_peers: 0,
        }
    }
}

impl PublicDht {
    fn key(&self, hour: u64) -> kad::RecordKey {
        kad::RecordKey::new(&hourly_rendezvous(&self.cfg.base, hour))
    }
}

impl EventLoop {
    /// One round of the rendezvous on the public DHT, when it is on.
    pub(super) fn public_round(&mut self) {
        let Some(public) = self.public.as_mut() else {
            return;
        };
        let Some(kad) = self.swarm.behaviour_mut().public_kad.as_mut() else {
            return;
        };
        let in_table: HashSet<PeerId> = kad
            .kbuckets()
            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
            .collect();
        public.answered.retain(|p| in_table.contains(p));
        let routing_peers = public.answered.len();
        public.routing_peers = routing_peers;
        let querying = kad.iter_queries().next().is_some();
        let mut external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        external.sort();
        let has_members = self.members.read().is_ok_and(|m| !m.is_empty());
        let now = wall_now();
        let steps = plan(&public.state, now, routing_peers, &external, has_members);
        for step in steps {
            self.public_step(step, now, &external, !has_members);
        }
        if !querying {
            self.close_public_connections();
        }
    }

    /// Closes connections to public nodes that [`public_to_close`] names.
    fn close_public_connections(&mut self) {
        let now = tokio::time::Instant::now();
        let reserved: HashSet<PeerId> = self.reservations.keys().copied().collect();
        for id in public_to_close(&self.conns, &self.speaks_ghmesh, &reserved, now) {
            self.swarm.close_connection(id);
        }
    }

    /// A public DHT node answered us (identify lists the DHT protocol).
    pub(super) fn public_answered(&mut self, peer: PeerId) {
        if let Some(public) = self.public.as_mut() {
            if public.answered.len() < MAX_ANSWERED {
                public.answered.insert(peer);
            }
        }
    }

    fn public_step(&mut self, step: Step, now: Duration, external: &[Multiaddr], alone: bool) {
        let Some(public) = self.public.as_mut() else {
            return;
        };
        let Some(kad) = self.swarm.behaviour_mut().public_kad.as_mut() else {
            return;
        };
        match step {
            Step::Enter => {
                public.state.entered_at = Some(now);
                for addr in &public.cfg.bootstrap {
                    if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                        let mut plain = addr.clone();
                        plain.pop();
                        kad.add_address(&peer, plain);
                    }
                }
                if let Err(e) = kad.bootstrap() {
                    tracing::debug!("public DHT: cannot bootstrap: {e}");
                }
            }
            Step::Provide { hour, old } => {
                if let Some(old) = old {
                    kad.stop_providing(&public.key(old));
                }
                let key = public.key(hour);
                match kad.start_providing(key) {
                    Ok(_) => {
                        tracing::debug!(hour, "public DHT: providing this hour's key");
                        public.state.provided = Some((hour, external.to_vec()));
                        public.state.provided_at = Some(now);
                    }
                    Err(e) => tracing::debug!("public DHT: cannot provide: {e}"),
                }
            }
            Step::LookUp(hours) => {
                public.state.looked_up_at = Some(now);
                public.state.alone_rounds = if alone {
                    public.state.alone_rounds.saturating_add(1)
                } else {
                    0
                };
                public.dials_left = MAX_PROVIDER_DIALS;
                public.dialled.clear();
                for hour in hours {
                    let key = public.key(hour);
                    kad.get_providers(key);
                }
            }
        }
    }

    /// What the public DHT reports: providers of our keys are dialled (while the query
    /// still knows their addresses); a publication that failed is retried next round.
    pub(super) fn on_public_kad_event(&mut self, ev: kad::Event) {
        let kad::Event::OutboundQueryProgressed { result, .. } = ev else {
            return;
        };
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let me = *self.swarm.local_peer_id();
                let Some(public) = self.public.as_mut() else {
                    return;
                };
                let found: Vec<PeerId> = providers
                    .into_iter()
                    .filter(|p| *p != me && !self.swarm.is_connected(p))
                    .filter(|p| !public.dialled.contains(p))
                    .take(public.dials_left.min(DIALS_PER_ANSWER))
                    .collect();
                public.dials_left -= found.len();
                public.dialled.extend(found.iter().copied());
                for p in found {
                    tracing::debug!(peer = %p, "public DHT: found a provider of our key");
                    self.dial_peer(p, Vec::new());
                }
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                tracing::debug!("public DHT: providing failed: {e}");
                if let Some(public) = self.public.as_mut() {
                    public.state.provided = None;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = RENDEZVOUS_HOUR_SECS;

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn enters_through_the_bootstrap_nodes_until_it_has_peers_and_not_in_a_loop() {
        let mut s = Rendezvous::default();
        assert_eq!(plan(&s, at(5 * HOUR), 0, &[], false), vec![Step::Enter]);
        s.entered_at = Some(at(5 * HOUR));
        assert!(plan(&s, at(5 * HOUR + 1), 0, &[], false).is_empty());
        assert_eq!(
            plan(&s, at(5 * HOUR) + REENTER_EVERY, 0, &[], false),
            vec![Step::Enter]
        );
    }

    #[test]
    fn provides_this_hour_and_looks_up_this_and_the_previous_hour() {
        let s = Rendezvous::default();
        assert_eq!(
            plan(&s, at(5 * HOUR + 10), 3, &[], false),
            vec![
                Step::Provide { hour: 5, old: None },
                Step::LookUp(vec![5, 4])
            ]
        );
    }

    #[test]
    fn republishes_as_the_hour_turns_and_when_its_addresses_change() {
        let a: Multiaddr = "/ip4/10.1.1.2/tcp/4000".parse().unwrap();
        let circuit: Multiaddr = "/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .unwrap();
        let s = Rendezvous {
            provided: Some((5, vec![a.clone()])),
            provided_at: Some(at(5 * HOUR + 10)),
            entered_at: Some(at(5 * HOUR)),
            looked_up_at: Some(at(5 * HOUR + 10)),
            alone_rounds: 0,
        };
        let now = at(5 * HOUR + 11);
        assert!(plan(&s, now, 3, std::slice::from_ref(&a), false).is_empty());
        let both = [a.clone(), circuit];
        assert!(
            plan(&s, now, 3, &both, false).is_empty(),
            "not twice within the gap"
        );
        assert_eq!(
            plan(&s, at(5 * HOUR + 10) + REPROVIDE_GAP, 3, &both, true),
            vec![Step::Provide { hour: 5, old: None }]
        );
        assert_eq!(
            plan(&s, at(6 * HOUR), 3, std::slice::from_ref(&a), true),
            vec![
                Step::Provide {
                    hour: 6,
                    old: Some(5)
                },
                Step::LookUp(vec![6, 5])
            ],
            "a new hour: the old record is not renewed"
        );
    }

    #[test]
    fn public_connections_go_after_a_while_but_relays_in_use_and_members_stay() {
        let start = tokio::time::Instant::now();
        let (member, relay, ours, dht) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let conn = |peer: PeerId, remote: String| Conn {
            peer,
            remote: remote.parse().unwrap(),
            dialer: true,
            relayed: false,
            fleet: true,
            since: start,
            seen_untranslated: None,
        };
        let conns: HashMap<ConnectionId, Conn> = [
            conn(
                member,
                format!("/ip4/198.51.100.130/tcp/4001/p2p/{relay}/p2p-circuit"),
            ),
            conn(relay, "/ip4/198.51.100.130/tcp/4001".into()),
            conn(ours, "/ip4/198.51.100.134/tcp/4001".into()),
            conn(dht, "/ip4/198.51.100.138/tcp/4001".into()),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, c)| (ConnectionId::new_unchecked(i), c))
        .collect();
        let fleet = HashSet::from([member]);
        let reserved = HashSet::from([ours]);
        let close = |at| {
            let mut ids = public_to_close(&conns, &fleet, &reserved, at);
            ids.sort();
            ids
        };
        assert!(close(start + PUBLIC_LINGER - Duration::from_millis(1)).is_empty());
        assert_eq!(
            close(start + PUBLIC_LINGER),
            vec![ConnectionId::new_unchecked(3)],
            "only the DHT node: not the member, the relay its circuit runs through, ours"
        );
    }

    #[test]
    fn looks_up_often_while_alone_and_seldom_with_members() {
        let a: Multiaddr = "/ip4/10.1.1.2/tcp/4000".parse().unwrap();
        let s = Rendezvous {
            provided: Some((5, vec![a.clone()])),
            provided_at: Some(at(5 * HOUR)),
            entered_at: Some(at(5 * HOUR)),
            looked_up_at: Some(at(5 * HOUR)),
            alone_rounds: 0,
        };
        let later = at(5 * HOUR) + LOOKUP_ALONE;
        let ext = std::slice::from_ref(&a);
        assert_eq!(
            plan(&s, later, 3, ext, false),
            vec![Step::LookUp(vec![5, 4])]
        );
        assert!(plan(&s, later, 3, ext, true).is_empty());
        assert_eq!(
            plan(&s, at(5 * HOUR) + LOOKUP_WITH_MEMBERS, 3, ext, true),
            vec![Step::LookUp(vec![5, 4])]
        );
        // Alone for a while: the gap doubles, up to the gap with members.
        let s = Rendezvous {
            alone_rounds: 2,
            ..s
        };
        assert!(plan(&s, at(5 * HOUR) + LOOKUP_ALONE * 4 - at(1), 3, ext, false).is_empty());
        assert_eq!(
            plan(&s, at(5 * HOUR) + LOOKUP_ALONE * 4, 3, ext, false),
            vec![Step::LookUp(vec![5, 4])]
        );
        let s = Rendezvous {
            alone_rounds: 30,
            ..s
        };
        assert_eq!(
            plan(&s, at(5 * HOUR) + LOOKUP_WITH_MEMBERS, 3, ext, false),
            vec![Step::LookUp(vec![5, 4])]
        );
    }
}
