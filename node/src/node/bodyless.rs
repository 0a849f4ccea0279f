//! Entries announced without their body, with who has them: a least-recently-announced
//! map bounded by count and by bytes, so a flood of announces evicts the oldest ones
//! instead of growing memory or wiping everything at once.

use std::collections::{BTreeMap, HashMap};

use ghmesh_protocol::{CacheKey, EntryMeta};
use libp2p::PeerId;

use crate::limits::{BODYLESS_MAX_BYTES, BODYLESS_MAX_ENTRIES};

/// What a remembered announce costs: its metadata as it travelled, roughly.
fn cost(meta: &EntryMeta) -> usize {
    256 + meta.request.path.len()
        + meta
            .request
            .query
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + meta
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + meta.etag.as_ref().map_or(0, |e| e.len())
        + meta.origin.len()
}

struct Slot {
    meta: EntryMeta,
    from: PeerId,
    seq: u64,
    cost: usize,
}

/// The map; see the module docs.
pub(super) struct Bodyless {
    slots: HashMap<CacheKey, Slot>,
    order: BTreeMap<u64, CacheKey>,
    next: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for Bodyless {
    fn default() -> Self {
        Self::with_limits(BODYLESS_MAX_ENTRIES, BODYLESS_MAX_BYTES)
    }
}

impl Bodyless {
    fn with_limits(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Remembers (or refreshes) an announce, evicting the least recent ones over the
    /// bounds.
    pub(super) fn insert(&mut self, key: CacheKey, meta: EntryMeta, from: PeerId) {
        self.remove(&key);
        let cost = cost(&meta);
        if cost > self.max_bytes {
            return;
        }
        while self.slots.len() >= self.max_entries || self.bytes + cost > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(s) = self.slots.remove(&oldest) {
                self.bytes -= s.cost;
            }
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key);
        self.bytes += cost;
        self.slots.insert(
            key,
            Slot {
                meta,
                from,
                seq,
                cost,
            },
        );
    }

    /// Forgets an announce (its entry was stored).
    pub(super) fn remove(&mut self, key: &CacheKey) {
        if let Some(s) = self.slots.remove(key) {
            self.order.remove(&s.seq);
            self.bytes -= s.cost;
        }
    }

    /// The announce for `key` and who sent it.
    pub(super) fn get(&self, key: &CacheKey) -> Option<(EntryMeta, PeerId)> {
        self.slots.get(key).map(|s| (s.meta.clone(), s.from))
    }

    pub(super) fn contains_key(&self, key: &CacheKey) -> bool {
        self.slots.contains_key(key)
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghmesh_protocol::{CanonicalRequest, Entry};

    fn meta(i: usize) -> EntryMeta {
        Entry::new(
            CanonicalRequest::get(&format!("/repos/o/r/issues/{i}")).unwrap(),
            vec![],
            vec![0u8; 10],
            None,
            1,
            2,
            "p".into(),
        )
        .meta
    }

    #[test]
    fn bounded_by_count_and_bytes_oldest_first() {
        let p = PeerId::random();
        let mut b = Bodyless::with_limits(3, 100_000);
        for i in 0..5 {
            b.insert(meta(i).key(), meta(i), p);
        }
        assert!(!b.contains_key(&meta(0).key()) && !b.contains_key(&meta(1).key()));
        assert!((2..5).all(|i| b.contains_key(&meta(i).key())));
        // Re-announcing makes an entry the most recent.
        b.insert(meta(2).key(), meta(2), p);
        b.insert(meta(5).key(), meta(5), p);
        assert!(b.contains_key(&meta(2).key()) && !b.contains_key(&meta(3).key()));

        let one = cost(&meta(0));
        let mut b = Bodyless::with_limits(1000, one * 2);
        for i in 0..10 {
            b.insert(meta(i).key(), meta(i), p);
            assert!(b.bytes() <= one * 2);
        }
        assert_eq!(b.slots.len(), 2);
        b.remove(&meta(9).key());
        assert_eq!(b.bytes(), one);
    }
}
