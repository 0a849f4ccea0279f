//! Which member "owns" a key: rendezvous (highest-random-weight) hashing. Every node
//! that knows the same members picks the same owner, and a member joining or leaving
//! moves only the keys it wins or owned.

use ghmesh_protocol::{CacheKey, Reach};
use libp2p::PeerId;
use sha2::{Digest, Sha256};

fn score(key: &CacheKey, peer: &PeerId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(peer.to_bytes());
    h.finalize().into()
}

/// Candidates ordered from owner to least preferred.
pub fn ranked(key: &CacheKey, candidates: impl IntoIterator<Item = PeerId>) -> Vec<PeerId> {
    let mut scored: Vec<([u8; 32], PeerId)> = candidates
        .into_iter()
        .map(|p| (score(key, &p), p))
        .collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, p)| p).collect()
}

/// The owner of `key` among `candidates`.
pub fn owner(key: &CacheKey, candidates: impl IntoIterator<Item = PeerId>) -> Option<PeerId> {
    ranked(key, candidates).into_iter().next()
}

/// How well the fleet can reach a member, as the member announced in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// What AutoNAT found.
    pub reach: Reach,
    /// Whether it holds a direct connection to every member it knows (`None`: not
    /// found out yet).
    pub direct_to_all: Option<bool>,
}

/// What the members' standings say about the whole fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetStanding {
    /// Some member (we too) is publicly reachable.
    pub any_public: bool,
    /// Some member (we too) is directly connected to every member it knows.
    pub any_direct_to_all: bool,
}

impl FleetStanding {
    /// The fleet's standing from its members' (ours included).
    pub fn of(members: impl IntoIterator<Item = Standing>) -> Self {
        members.into_iter().fold(Self::default(), |f, s| Self {
            any_public: f.any_public || s.reach == Reach::Public,
            any_direct_to_all: f.any_direct_to_all || s.direct_to_all == Some(true),
        })
    }
}

/// Whether a member of `standing` may own keys in a fleet of `fleet`. When any member
/// (we too) is publicly reachable, only the publicly reachable ones may: a member behind
/// NAT may be out of reach of the others, and a miss would wait out its budget for an
/// owner nobody can ask. Else, when any member is directly connected to every member it
/// knows (one on a routed network that members behind NAT dial out to, or one found
/// public by nobody yet), those that found they are not may not: the others reach them
/// only within a relay's limits. A member that has not found out yet (it just joined)
/// may, so that a fleet where everyone is direct never moves its owners while its
/// members find out. Otherwise (a LAN, reachability not known yet) every member may.
/// Every node decides from the standings members announce in their hellos, so they pick
/// the same owners.
pub fn may_own(standing: Standing, fleet: FleetStanding) -> bool {
    if fleet.any_public {
        standing.reach == Reach::Public
    } else if fleet.any_direct_to_all {
        standing.direct_to_all != Some(false)
    } else {
        true
    }
}

/// Whether standings `a` and `b` choose the same owners ([`may_own`]) whatever the
/// others are, given whether any member says it is not directly connected to all
/// (`anyone_not_direct`): while none does, saying so and not yet saying anything are
/// alike.
pub fn owns_alike(a: Standing, b: Standing, anyone_not_direct: bool) -> bool {
    a == b
        || (!anyone_not_direct
            && a.reach == b.reach
            && a.direct_to_all != Some(false)
            && b.direct_to_all != Some(false))
}

/// How long a member newly admitted over a relay does not count against our being
/// directly connected to every member: hole punching upgrades most relayed connections
/// within a few seconds, and owners should not move away and back for each newcomer.
pub const DIRECT_GRACE_MS: u64 = 10_000;

/// Whether we hold a direct connection to every member, from `members` (each with when
/// we admitted it and whether a direct connection to it is open) at `now_ms`; `was`:
/// what we said before. With no member at all there is nothing to say (`None`). A
/// member admitted less than [`DIRECT_GRACE_MS`] ago without a direct connection yet
/// keeps what we said, rather than taking it away at once (or saying `false` before
/// its punch could succeed).
pub fn direct_to_all(was: Option<bool>, members: &[(u64, bool)], now_ms: u64) -> Option<bool> {
    if members.is_empty() {
        return None;
    }
    let pending = |&(admitted_ms, direct): &(u64, bool)| {
        !direct && now_ms.saturating_sub(admitted_ms) < DIRECT_GRACE_MS
    };
    if members.iter().all(|&(_, direct)| direct) {
        Some(true)
    } else if members.iter().all(|m| m.1 || pending(m)) {
        was
    } else {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghmesh_protocol::CanonicalRequest;

    fn key(i: usize) -> CacheKey {
        CanonicalRequest::get(&format!("/k/{i}")).unwrap().key()
    }

    #[test]
    fn owner_is_order_independent_and_stable() {
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let mut reversed = peers.clone();
        reversed.reverse();
        for i in 0..50 {
            assert_eq!(
                owner(&key(i), peers.clone()),
                owner(&key(i), reversed.clone())
            );
        }
        // Removing a non-owner never changes the owner.
        for i in 0..50 {
            let o = owner(&key(i), peers.clone()).unwrap();
            let without: Vec<PeerId> = peers
                .iter()
                .copied()
                .filter(|p| *p == o || *p != peers.iter().copied().find(|q| *q != o).unwrap())
                .collect();
            assert_eq!(owner(&key(i), without), Some(o));
        }
        assert_eq!(owner(&key(0), Vec::new()), None);
    }

    #[test]
    fn load_spreads_over_members() {
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let mut counts = std::collections::HashMap::new();
        for i in 0..400 {
            *counts
                .entry(owner(&key(i), peers.clone()).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|&c| c > 50), "{counts:?}");
    }

    fn standing(reach: Reach, direct_to_all: Option<bool>) -> Standing {
        Standing {
            reach,
            direct_to_all,
        }
    }

    #[test]
    fn public_members_own_first_then_those_not_found_out_of_direct_reach() {
        let public = standing(Reach::Public, Some(false));
        let direct = standing(Reach::Unknown, Some(true));
        let natted = standing(Reach::Private, Some(false));
        let newcomer = standing(Reach::Unknown, None);
        let fleet = FleetStanding::of([public, direct, natted, newcomer]);
        assert!(may_own(public, fleet));
        assert!(!may_own(direct, fleet), "a public member outranks");
        assert!(!may_own(natted, fleet));
        assert!(!may_own(newcomer, fleet));

        let fleet = FleetStanding::of([direct, natted, newcomer]);
        assert!(may_own(direct, fleet));
        assert!(
            !may_own(natted, fleet),
            "out of direct reach of some member"
        );
        assert!(may_own(newcomer, fleet), "not found out yet: not left out");

        let fleet = FleetStanding::of([natted, newcomer]);
        assert!(may_own(natted, fleet), "nobody stands out: everyone owns");
        assert!(may_own(newcomer, fleet));
    }

    #[test]
    fn directly_connected_to_all_holds_through_a_newcomers_grace_only() {
        let g = DIRECT_GRACE_MS;
        assert_eq!(direct_to_all(Some(true), &[], 0), None, "nobody to reach");
        assert_eq!(direct_to_all(None, &[(0, true), (5, true)], 10), Some(true));
        assert_eq!(
            direct_to_all(None, &[(0, true), (5, false)], 10),
            None,
            "not yet: a member only relayed, within its grace"
        );
        assert_eq!(
            direct_to_all(None, &[(0, true), (5, false)], 5 + g),
            Some(false),
            "relayed past its grace"
        );
        assert_eq!(
            direct_to_all(Some(true), &[(0, true), (100, false)], 100 + g - 1),
            Some(true),
            "a newcomer relayed for a moment keeps it"
        );
        assert_eq!(
            direct_to_all(Some(false), &[(0, true), (100, false)], 100 + g - 1),
            Some(false)
        );
        assert_eq!(
            direct_to_all(Some(true), &[(0, true), (100, false)], 100 + g),
            Some(false),
            "a member relayed past the grace takes it away"
        );
    }
}
