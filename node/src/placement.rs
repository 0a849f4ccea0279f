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

/// Whether a member that is `reach` may own keys. When any member (we too) is publicly
/// reachable, only the publicly reachable ones may: a member behind NAT may be out of
/// reach of the others, and a miss would wait out its budget for an owner nobody can
/// ask. Otherwise (a LAN, one routed network, reachability not known yet) every member
/// may. Every node decides from the reachability members announce in their hellos, so
/// they pick the same owners.
pub fn may_own(reach: Reach, any_public: bool) -> bool {
    !any_public || reach == Reach::Public
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
}
