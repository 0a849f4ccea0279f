//! Reach across NAT, as plain decisions: what AutoNAT's verdict means for the fleet,
//! which peers may judge our reachability, which fleet relays to hold reservations on,
//! and which of a peer's addresses to pass on. The event loop carries them out.

use ghmesh_protocol::Reach;
use libp2p::autonat;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::time::Instant;

/// Reservations a node behind NAT holds: two, so that a relay that stops leaves it
/// reachable through the other while it reserves again.
pub const RESERVATIONS: usize = 2;

/// How a connection runs: through a relay or straight to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    /// Straight to the peer (possibly after hole punching).
    Direct,
    /// Through a relay's circuit.
    Relayed,
}

/// The transport under a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP with noise and yamux.
    Tcp,
    /// QUIC v1.
    Quic,
}

/// AutoNAT's verdict as the fleet hears it.
pub fn reach_of(status: &autonat::NatStatus) -> Reach {
    match status {
        autonat::NatStatus::Public(_) => Reach::Public,
        autonat::NatStatus::Private => Reach::Private,
        autonat::NatStatus::Unknown => Reach::Unknown,
    }
}

/// Our reachability from AutoNAT's status and who dialled us back since it was last
/// not public: members, or other servers (public DHT nodes). A public verdict resting on
/// servers that are not members needs two of them: one stranger that lies about dialling
/// us back would otherwise make a node behind NAT claim to be public, drop its relays
/// and be chosen as an owner nobody can reach.
pub fn verdict(autonat: Reach, confirmed_by_members: usize, confirmed_by_others: usize) -> Reach {
    if autonat == Reach::Public && confirmed_by_members == 0 && confirmed_by_others < 2 {
        return Reach::Unknown;
    }
    autonat
}

/// Through a relay (`/p2p-circuit`).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The relay a relayed address goes through (`…/p2p/<relay>/p2p-circuit…`).
pub fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => last = Some(id),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

/// QUIC or TCP (a relayed address names the relay's transport).
pub fn transport_of(addr: &Multiaddr) -> Transport {
    if addr.iter().any(|p| matches!(p, Protocol::QuicV1)) {
        Transport::Quic
    } else {
        Transport::Tcp
    }
}

/// The IP address in `addr`, if any.
pub fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// On this host only.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// On a private or local network: loopback, RFC 1918, shared (CGNAT) space, link-local,
/// unique-local IPv6. A member at such an address is on our side of the internet's
/// NATs: its dial-back proves something only within one private network (see
/// [`may_judge_us`]).
pub fn is_private(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => {
            let o = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        Protocol::Ip6(ip) => {
            let s = ip.segments();
            ip.is_loopback()
                || ip.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
        _ => false,
    })
}

/// How a member sees us: at an address of our own, or translated by a NAT between us
/// (identify's observed address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenAs {
    /// Its identify has not come yet.
    Unknown,
    /// At one of our own addresses: no NAT between us.
    Untranslated,
    /// At an address that is not ours: a NAT between us.
    Translated,
}

/// What the fleet around us says about who may judge our reachability at a private
/// address (see [`may_judge_us`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct JudgeView {
    /// The fleet lives on one private network ([`private_network`]).
    pub private_network: bool,
    /// Some member sees us through a NAT, now or within [`TRANSLATED_MEMORY`].
    pub anyone_translates: bool,
    /// Some member is connected to us directly from a private address outside our own
    /// subnet ([`same_subnet`]): across a router.
    pub anyone_routed: bool,
}

/// How long a member that saw us through a NAT keeps our LAN neighbours from judging us
/// after it left: a member beyond our NAT that restarts would otherwise leave only
/// neighbours to judge, and they would call us public.
pub const TRANSLATED_MEMORY: Duration = Duration::from_secs(600);

/// Whether a member connected to us at `remote`, seeing us as `seen`, on our own subnet
/// or not (`on_our_subnet`), may judge our reachability (serve us AutoNAT). One that
/// reaches us directly from a public address may. One at a private address may only
/// when the fleet lives on one private network (`view`), and then: when some member
/// sees us through a NAT, only such members (their dial-backs test that NAT, while a
/// neighbour on our LAN would dial us back across the LAN and call us public although
/// the members beyond the NAT cannot reach us); else, when some member reaches us across
/// a router, only members beyond our subnet (a neighbour's dial-back would pass a
/// firewall between the subnets that theirs meet); else (one LAN) any member. Never
/// over loopback or a relay. This also keeps the check working on networks AutoNAT
/// does not call global (the documentation ranges of the NAT lab), which is why its
/// own `only_global_ips` is off.
pub fn may_judge_us(
    remote: &Multiaddr,
    seen: SeenAs,
    on_our_subnet: bool,
    view: JudgeView,
) -> bool {
    let ip = remote
        .iter()
        .any(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_)));
    if !ip || is_relayed(remote) || is_loopback(remote) {
        return false;
    }
    if !is_private(remote) {
        return true;
    }
    view.private_network
        && match seen {
            SeenAs::Translated => true,
            SeenAs::Untranslated => {
                !(view.anyone_translates || (on_our_subnet && view.anyone_routed))
            }
            SeenAs::Unknown => false,
        }
}

/// Whether `a` and `b` are on one subnet as far as an address tells: the same /24
/// (IPv4) or /64 (IPv6). A guess (prefix lengths are not in an address) that only ever
/// decides which private-network members judge first.
pub fn same_subnet(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (a, b) {
        (V4(a), V4(b)) => a.octets()[..3] == b.octets()[..3],
        (V6(a), V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

/// How long every member must have been directly connected at a private address
/// before the fleet counts as living on one private network: members from beyond a
/// NAT (through a hub, a relay, or a punched connection at a public address) come
/// within seconds of the first neighbour, and until they do a neighbour's dial-back
/// proves nothing for them.
pub const PRIVATE_NETWORK_SETTLE: Duration = Duration::from_secs(20);

/// Whether the fleet lives on one private network with us, as our connections to
/// members (`remote`, relayed) show it: every one direct, at a private address but not
/// loopback, since `since` (when that first held; `None`: it does not) for at least
/// [`PRIVATE_NETWORK_SETTLE`] at `now`. Then members at private addresses may judge
/// our reachability (see [`may_judge_us`]). Never with the public DHT on
/// (`public_dht`): the node looks for members across the internet, who cannot reach a
/// private address. Returns whether the fleet does, and the new `since`.
pub fn private_network<'a>(
    member_conns: impl IntoIterator<Item = (&'a Multiaddr, bool)>,
    public_dht: bool,
    since: Option<Instant>,
    now: Instant,
) -> (bool, Option<Instant>) {
    let mut any = false;
    let mut all_private = !public_dht;
    for (remote, relayed) in member_conns {
        any = true;
        all_private &= !relayed && !is_loopback(remote) && is_private(remote);
    }
    if !(any && all_private) {
        return (false, None);
    }
    let since = since.unwrap_or(now);
    (
        now.duration_since(since) >= PRIVATE_NETWORK_SETTLE,
        Some(since),
    )
}

/// The relays to reserve on now, best first: none when we are publicly reachable
/// (members dial us directly); otherwise up to [`RESERVATIONS`] in all, picked from
/// `offered` (members directly connected that offer relaying) that we do not `hold`.
/// Each node ranks relays by a hash of its own id and the relay's, so that a fleet's
/// runners spread over its relays instead of all filling the first.
pub fn relays_to_add(
    me: &PeerId,
    reach: Reach,
    offered: &[PeerId],
    held: &[PeerId],
) -> Vec<PeerId> {
    if reach == Reach::Public {
        return Vec::new();
    }
    let want = RESERVATIONS.saturating_sub(held.len());
    let mut ranked: Vec<([u8; 32], PeerId)> = offered
        .iter()
        .filter(|p| !held.contains(p) && *p != me)
        .map(|p| {
            let mut h = Sha256::new();
            h.update(me.to_bytes());
            h.update(p.to_bytes());
            (h.finalize().into(), *p)
        })
        .collect();
    ranked.sort();
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(want).map(|(_, p)| p).collect()
}

/// A peer's addresses in the order to pass them on (member lists carry only a few):
/// direct and relayed addresses interleaved, so that a member behind NAT is listed with
/// its LAN address (for its neighbours) and its relayed one (for everyone else);
/// loopback only when the peer has nothing else (single-host fleets and tests).
pub fn order_for_sharing(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    let (relayed, direct): (Vec<&Multiaddr>, Vec<&Multiaddr>) =
        addrs.iter().partition(|a| is_relayed(a));
    let mut direct: Vec<&Multiaddr> = direct.into_iter().filter(|a| !is_loopback(a)).collect();
    if direct.is_empty() && relayed.is_empty() {
        direct = addrs.iter().collect();
    }
    let mut out = Vec::with_capacity(addrs.len());
    let (mut d, mut r) = (direct.into_iter(), relayed.into_iter());
    loop {
        match (d.next(), r.next()) {
            (None, None) => break,
            (a, b) => out.extend(a.into_iter().chain(b).cloned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_public_verdict_needs_a_member_or_two_strangers() {
        assert_eq!(verdict(Reach::Public, 1, 0), Reach::Public);
        assert_eq!(verdict(Reach::Public, 0, 2), Reach::Public);
        assert_eq!(verdict(Reach::Public, 0, 1), Reach::Unknown, "one stranger");
        assert_eq!(verdict(Reach::Private, 0, 0), Reach::Private);
        assert_eq!(verdict(Reach::Unknown, 3, 3), Reach::Unknown);
    }

    #[test]
    fn a_fleet_lives_on_one_private_network_once_every_member_stayed_direct_and_private() {
        let t0 = Instant::now();
        let lan = ma("/ip4/10.2.1.2/tcp/4010");
        let other = ma("/ip4/10.3.1.2/tcp/4020");
        let public = ma("/ip4/203.0.113.6/tcp/4000");
        let loopback = ma("/ip4/127.0.0.1/tcp/1");
        let both = [(&lan, false), (&other, false)];
        assert_eq!(private_network(both, false, None, t0), (false, Some(t0)));
        let later = t0 + PRIVATE_NETWORK_SETTLE;
        assert_eq!(
            private_network(both, false, Some(t0), later),
            (true, Some(t0))
        );
        for not in [
            vec![(&lan, false), (&public, false)],
            vec![(&lan, false), (&other, true)],
            vec![(&lan, false), (&loopback, false)],
            vec![],
        ] {
            assert_eq!(
                private_network(not.clone(), false, Some(t0), later),
                (false, None),
                "{not:?}"
            );
        }
        assert_eq!(
            private_network(both, true, Some(t0), later),
            (false, None),
            "never with the public DHT on"
        );
    }

    #[test]
    fn who_may_judge_our_reachability() {
        use SeenAs::*;
        let judge = |a: &str, private_network, seen, anyone_translates| {
            let view = JudgeView {
                private_network,
                anyone_translates,
                anyone_routed: false,
            };
            may_judge_us(&ma(a), seen, false, view)
        };
        assert!(judge("/ip4/198.51.100.7/tcp/9100", false, Unknown, true));
        assert!(judge(
            "/ip4/203.0.113.9/udp/9100/quic-v1",
            false,
            Untranslated,
            false
        ));
        for private in [
            "/ip4/10.1.0.2/tcp/9100",
            "/ip4/192.168.1.5/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/100.64.3.1/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
        ] {
            assert!(!judge(private, false, Translated, true), "{private}");
            let loopback = private.contains("127.0.0.1");
            // On one private network: a member across our NAT, or anyone when no
            // member sees us through a NAT; never a neighbour while one does.
            assert_eq!(
                judge(private, true, Translated, true),
                !loopback,
                "{private}"
            );
            assert_eq!(judge(private, true, Untranslated, false), !loopback);
            assert!(
                !judge(private, true, Untranslated, true),
                "{private}: a neighbour"
            );
            assert!(
                !judge(private, true, Unknown, false),
                "{private}: not heard yet"
            );
            // Members reach us across a router: a neighbour on our subnet may not judge
            // (a firewall between the subnets lets its dial-back through), they may.
            let routed = JudgeView {
                private_network: true,
                anyone_translates: false,
                anyone_routed: true,
            };
            assert!(!may_judge_us(&ma(private), Untranslated, true, routed));
            assert_eq!(
                may_judge_us(&ma(private), Untranslated, false, routed),
                !loopback
            );
        }
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(same_subnet(ip("10.1.1.2"), ip("10.1.1.200")));
        assert!(!same_subnet(ip("10.1.1.2"), ip("10.1.2.2")));
        assert!(same_subnet(ip("fd00::1"), ip("fd00::2:1")));
        assert!(!same_subnet(ip("10.1.1.2"), ip("fd00::1")));
        let relayed = ma(&format!(
            "/ip4/198.51.100.7/tcp/9100/p2p/{}/p2p-circuit",
            PeerId::random()
        ));
        let anyone = JudgeView {
            private_network: true,
            ..JudgeView::default()
        };
        assert!(!may_judge_us(&relayed, Translated, false, anyone));
        // A circuit we accepted names only the peer.
        assert!(!may_judge_us(
            &ma(&format!("/p2p/{}", PeerId::random())),
            Translated,
            false,
            anyone
        ));
        assert!(is_relayed(&relayed));
        assert_eq!(transport_of(&relayed), Transport::Tcp);
        let relay = PeerId::random();
        let through = ma(&format!(
            "/ip4/198.51.100.7/tcp/9100/p2p/{relay}/p2p-circuit/p2p/{}",
            PeerId::random()
        ));
        assert_eq!(relay_of(&through), Some(relay));
        assert_eq!(relay_of(&ma("/ip4/198.51.100.7/tcp/9100")), None);
        assert_eq!(
            transport_of(&ma("/ip4/1.2.3.4/udp/1/quic-v1")),
            Transport::Quic
        );
    }

    #[test]
    fn reservations_only_behind_nat_at_most_two_spread_over_relays() {
        let me = PeerId::random();
        let relays: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        assert!(relays_to_add(&me, Reach::Public, &relays, &[]).is_empty());
        let first = relays_to_add(&me, Reach::Private, &relays, &[]);
        assert_eq!(first.len(), RESERVATIONS);
        assert_eq!(relays_to_add(&me, Reach::Unknown, &relays, &[]), first);
        // Holding one: one more, never the one held, never ourselves.
        let more = relays_to_add(&me, Reach::Private, &relays, &first[..1]);
        assert_eq!(more, vec![first[1]]);
        assert!(relays_to_add(&me, Reach::Private, &relays, &first).is_empty());
        assert!(relays_to_add(&me, Reach::Private, &[me], &[]).is_empty());
        // A relay that stopped: the next-ranked one takes its place.
        let left: Vec<PeerId> = relays.iter().copied().filter(|r| *r != first[0]).collect();
        let replacement = relays_to_add(&me, Reach::Private, &left, &first[1..]);
        assert_eq!(replacement.len(), 1);
        assert!(!first.contains(&replacement[0]));
        // Another node ranks the same relays differently (load spreads).
        let spread = (0..32)
            .map(|_| relays_to_add(&PeerId::random(), Reach::Private, &relays, &[])[0])
            .collect::<std::collections::HashSet<_>>();
        assert!(spread.len() > 1);
    }

    #[test]
    fn shared_addresses_interleave_direct_and_relayed() {
        let r = PeerId::random();
        let lan = ma("/ip4/10.1.0.2/tcp/9100");
        let quic = ma("/ip4/10.1.0.2/udp/9100/quic-v1");
        let lo = ma("/ip4/127.0.0.1/tcp/9100");
        let c1 = ma(&format!("/ip4/198.51.100.7/tcp/9100/p2p/{r}/p2p-circuit"));
        let c2 = ma(&format!("/ip4/198.51.100.8/tcp/9100/p2p/{r}/p2p-circuit"));
        let out = order_for_sharing(&[
            lo.clone(),
            lan.clone(),
            quic.clone(),
            c1.clone(),
            c2.clone(),
        ]);
        assert_eq!(out, vec![lan, c1, quic, c2]);
        assert_eq!(order_for_sharing(std::slice::from_ref(&lo)), vec![lo]);
    }
}
