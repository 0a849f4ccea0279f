//! Owner leases: the owner of a key coordinates its fetch instead of necessarily doing
//! it. A member whose reader brought its own token (a local client's) asks for the
//! lease and, when granted, fetches with that token and announces the answer; every
//! other asker is told `Pending` and waits for that announce. A lease ends when its
//! holder releases it (its fetch gave nothing to share), leaves the fleet, or when it
//! expires; the next asker then gets it. Plain data and functions of `now`.

use std::collections::HashMap;

use ghmesh_protocol::CacheKey;
use libp2p::PeerId;

use crate::limits::MAX_LEASES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    holder: PeerId,
    until_ms: u64,
}

/// The leases this node has granted as owner, and the keys whose fetch it made for
/// others just failed.
#[derive(Debug, Default)]
pub struct Leases {
    map: HashMap<CacheKey, Lease>,
    /// Key → until when a fetch for others is not started again: its error is not
    /// shared, so without this a waiter's re-poll would start the same failing fetch
    /// again and again until the waiter gave up.
    failed: HashMap<CacheKey, u64>,
}

impl Leases {
    /// Who holds the lease on `key` at `now_ms`, if anyone.
    pub fn holder(&self, key: &CacheKey, now_ms: u64) -> Option<PeerId> {
        self.map
            .get(key)
            .filter(|l| now_ms < l.until_ms)
            .map(|l| l.holder)
    }

    /// Grants `key`'s lease to `to` until `until_ms`, unless someone else holds it.
    /// True when `to` holds it now. At most [`MAX_LEASES`] are kept: expired ones go
    /// first, then the one closest to expiry.
    pub fn grant(&mut self, key: CacheKey, to: PeerId, now_ms: u64, until_ms: u64) -> bool {
        if self.holder(&key, now_ms).is_some_and(|h| h != to) {
            return false;
        }
        if self.map.len() >= MAX_LEASES && !self.map.contains_key(&key) {
            self.map.retain(|_, l| now_ms < l.until_ms);
            if self.map.len() >= MAX_LEASES {
                if let Some(k) = self
                    .map
                    .iter()
                    .min_by_key(|(_, l)| l.until_ms)
                    .map(|(k, _)| *k)
                {
                    self.map.remove(&k);
                }
            }
        }
        self.map.insert(
            key,
            Lease {
                holder: to,
                until_ms,
            },
        );
        true
    }

    /// `from` gives `key`'s lease back; a release by anyone else changes nothing.
    pub fn release(&mut self, key: &CacheKey, from: &PeerId) {
        if self.map.get(key).is_some_and(|l| l.holder == *from) {
            self.map.remove(key);
        }
    }

    /// `peer` left the fleet: its leases pass to the next askers at once.
    pub fn forget_holder(&mut self, peer: &PeerId) {
        self.map.retain(|_, l| l.holder != *peer);
    }

    /// Our fetch of `key` for others ended without an entry to share.
    pub fn fetch_failed(&mut self, key: CacheKey, now_ms: u64, until_ms: u64) {
        if self.failed.len() >= MAX_LEASES && !self.failed.contains_key(&key) {
            self.failed.retain(|_, u| now_ms < *u);
            if self.failed.len() >= MAX_LEASES {
                return; // a full table only costs a repeated fetch, never a wrong answer
            }
        }
        self.failed.insert(key, until_ms);
    }

    /// Did our fetch of `key` for others fail a moment ago?
    pub fn failed_recently(&self, key: &CacheKey, now_ms: u64) -> bool {
        self.failed.get(key).is_some_and(|u| now_ms < *u)
    }

    /// Leases currently held.
    pub fn active(&self, now_ms: u64) -> usize {
        self.map.values().filter(|l| now_ms < l.until_ms).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghmesh_protocol::CanonicalRequest;

    fn key(p: &str) -> CacheKey {
        CanonicalRequest::get(p).unwrap().key()
    }

    #[test]
    fn one_holder_at_a_time_until_release_departure_or_expiry() {
        let mut leases = Leases::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let k = key("/repos/o/r");
        assert!(leases.grant(k, a, 0, 1_000));
        assert!(!leases.grant(k, b, 10, 1_010), "a holds it");
        assert!(leases.grant(k, a, 20, 1_020), "the holder may renew");
        assert_eq!(leases.holder(&k, 500), Some(a));

        leases.release(&k, &b);
        assert_eq!(leases.holder(&k, 500), Some(a), "only the holder releases");
        leases.release(&k, &a);
        assert_eq!(leases.holder(&k, 500), None);

        assert!(leases.grant(k, b, 600, 1_600));
        leases.forget_holder(&b);
        assert_eq!(leases.holder(&k, 700), None, "gone with its holder");

        assert!(leases.grant(k, a, 800, 1_800));
        assert_eq!(leases.holder(&k, 1_800), None, "expired");
        assert!(leases.grant(k, b, 1_800, 2_800), "passes to the next asker");
        assert_eq!(leases.active(1_900), 1);
    }

    #[test]
    fn owners_grant_leases_and_hold_everyone_else_to_them() {
        use crate::policy::{
            after_owner_reply, after_repoll, answer_lookup, LookupAnswer, LookupView, OwnerStep,
            RepollStep,
        };
        use crate::MeshMode;
        use ghmesh_protocol::LookupReply;
        let asks_lease = LookupView {
            shareable: true,
            fresh_local: false,
            in_flight: false,
            fetching: false,
            fetch_asked: false,
            lease_asked: true,
            leased_to_other: false,
            failed_recently: true,
            mode: MeshMode::Mesh,
            room: false,
            owner: None,
        };
        assert_eq!(
            answer_lookup(asks_lease),
            LookupAnswer::GrantLease,
            "the asker's token pays: no room of ours needed"
        );
        let taken = LookupView {
            leased_to_other: true,
            ..asks_lease
        };
        assert_eq!(answer_lookup(taken), LookupAnswer::Pending, "binding");
        let node_asker = LookupView {
            fetch_asked: true,
            lease_asked: false,
            room: true,
            ..taken
        };
        assert_eq!(
            answer_lookup(node_asker),
            LookupAnswer::Pending,
            "an owner does not fetch in parallel with its lease holder"
        );
        let ours_in_flight = LookupView {
            in_flight: true,
            ..asks_lease
        };
        assert_eq!(answer_lookup(ours_in_flight), LookupAnswer::Pending);
        let other = PeerId::random();
        let not_ours = LookupView {
            owner: Some(other),
            ..asks_lease
        };
        assert_eq!(answer_lookup(not_ours), LookupAnswer::Redirect(other));
        let fresh = LookupView {
            fresh_local: true,
            leased_to_other: true,
            ..asks_lease
        };
        assert_eq!(answer_lookup(fresh), LookupAnswer::Found);
        let broadcast = LookupView {
            mode: MeshMode::Broadcast,
            ..asks_lease
        };
        assert_eq!(answer_lookup(broadcast), LookupAnswer::NotFound);
        let mere_asker = LookupView {
            lease_asked: false,
            leased_to_other: true,
            ..asks_lease
        };
        assert_eq!(answer_lookup(mere_asker), LookupAnswer::NotFound);

        assert_eq!(
            after_owner_reply(Some(LookupReply::Lease)),
            OwnerStep::Fetch
        );
        assert_eq!(after_repoll(Some(LookupReply::Lease)), RepollStep::Fetch);
    }

    #[test]
    fn failed_fetches_are_remembered_for_a_while() {
        let mut leases = Leases::default();
        let k = key("/repos/o/private");
        assert!(!leases.failed_recently(&k, 0));
        leases.fetch_failed(k, 0, 1_000);
        assert!(leases.failed_recently(&k, 999));
        assert!(!leases.failed_recently(&k, 1_000));
        for i in 0..MAX_LEASES + 5 {
            leases.fetch_failed(key(&format!("/f/{i}")), 2_000, 3_000);
        }
        assert!(leases.failed.len() <= MAX_LEASES);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut leases = Leases::default();
        let a = PeerId::random();
        for i in 0..MAX_LEASES + 10 {
            assert!(leases.grant(key(&format!("/r/{i}")), a, 0, 1_000 + i as u64));
        }
        assert!(leases.map.len() <= MAX_LEASES);
        assert_eq!(
            leases.holder(&key("/r/0"), 1),
            None,
            "closest to expiry went"
        );
        let last = key(&format!("/r/{}", MAX_LEASES + 9));
        assert_eq!(leases.holder(&last, 1), Some(a));
    }
}
