//! Entries announced without their body, with who has them: least recently announced
//! first out, within a count and a byte bound (see `bounded`).

use ghmesh_protocol::{CacheKey, EntryMeta};
use libp2p::PeerId;

use super::bounded::Bounded;
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

/// The map; see the module docs.
pub(super) struct Bodyless {
    map: Bounded<(EntryMeta, PeerId)>,
}

impl Default for Bodyless {
    fn default() -> Self {
        Self::with_limits(BODYLESS_MAX_ENTRIES, BODYLESS_MAX_BYTES)
    }
}

impl Bodyless {
    fn with_limits(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            map: Bounded::new(max_entries, max_bytes),
        }
    }

    /// Remembers (or refreshes) an announce, evicting the least recent ones over the
    /// bounds.
    pub(super) fn insert(&mut self, key: CacheKey, meta: EntryMeta, from: PeerId) {
        let cost = cost(&meta);
        self.map.insert(key, (meta, from), cost);
    }

    /// Forgets an announce (its entry was stored).
    pub(super) fn remove(&mut self, key: &CacheKey) {
        self.map.remove(key);
    }

    /// The announce for `key` and who sent it.
    pub(super) fn get(&self, key: &CacheKey) -> Option<(EntryMeta, PeerId)> {
        self.map.get(key).cloned()
    }

    pub(super) fn contains_key(&self, key: &CacheKey) -> bool {
        self.map.contains_key(key)
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.map.bytes()
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
        assert_eq!(b.map.len(), 2);
        b.remove(&meta(9).key());
        assert_eq!(b.bytes(), one);
    }
}
