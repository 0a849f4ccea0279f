//! A map by cache key bounded by count and by bytes, that forgets the oldest
//! insertions first: what the node remembers about keys on its peers' say (bodyless
//! announces, sealed replies, announces nobody heard) grows no further than its bounds,
//! and a flood evicts the oldest instead of wiping everything at once.

use std::collections::{BTreeMap, HashMap};

use ghmesh_protocol::CacheKey;

struct Slot<V> {
    value: V,
    seq: u64,
    cost: usize,
}

/// The map; see the module docs.
pub(super) struct Bounded<V> {
    slots: HashMap<CacheKey, Slot<V>>,
    order: BTreeMap<u64, CacheKey>,
    next: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<V> Bounded<V> {
    pub(super) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Keeps `value` for `key` as the newest (replacing what `key` had), evicting the
    /// oldest over the bounds. A value costing more than all the bytes is not kept.
    pub(super) fn insert(&mut self, key: CacheKey, value: V, cost: usize) {
        self.remove(&key);
        if cost > self.max_bytes {
            return;
        }
        while self.slots.len() >= self.max_entries || self.bytes + cost > self.max_bytes {
            if self.pop_oldest().is_none() {
                break;
            }
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key);
        self.bytes += cost;
        self.slots.insert(key, Slot { value, seq, cost });
    }

    /// Forgets `key`.
    pub(super) fn remove(&mut self, key: &CacheKey) -> Option<V> {
        let s = self.slots.remove(key)?;
        self.order.remove(&s.seq);
        self.bytes -= s.cost;
        Some(s.value)
    }

    pub(super) fn get(&self, key: &CacheKey) -> Option<&V> {
        self.slots.get(key).map(|s| &s.value)
    }

    pub(super) fn contains_key(&self, key: &CacheKey) -> bool {
        self.slots.contains_key(key)
    }

    /// The oldest value kept.
    pub(super) fn oldest(&self) -> Option<&V> {
        let (_, key) = self.order.first_key_value()?;
        self.get(key)
    }

    /// Forgets the oldest value kept.
    pub(super) fn pop_oldest(&mut self) -> Option<(CacheKey, V)> {
        let (_, key) = self.order.pop_first()?;
        let s = self.slots.remove(&key)?;
        self.bytes -= s.cost;
        Some((key, s.value))
    }

    /// Every key kept, oldest first; none are left.
    pub(super) fn take_keys(&mut self) -> Vec<CacheKey> {
        self.slots.clear();
        self.bytes = 0;
        std::mem::take(&mut self.order).into_values().collect()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}
