//! Sealed body replies kept for reuse. A body announced to the fleet is pulled by every
//! member at about the same moment; sealing it once (CBOR, AES, HMAC and base64 over
//! the whole body) instead of once per member is most of what answering costs. Bounded
//! by count, by bytes and by age: a reply must still be inside every receiver's age
//! window, and an entry replaced or evicted here stops being served after the age bound.

use bytes::Bytes;
use ghmesh_protocol::CacheKey;

use super::bounded::Bounded;
use crate::limits::{REPLY_CACHE_MAX_AGE_SECS, REPLY_CACHE_MAX_BYTES, REPLY_CACHE_MAX_ENTRIES};

/// One sealed reply: the body it carries (its CID) and when it was sealed.
struct Sealed {
    cid: Vec<u8>,
    bytes: Bytes,
    sealed_at_secs: u64,
}

/// The cache, one reply per key (a new body replaces the old); see the module docs.
pub(super) struct ReplyCache {
    map: Bounded<Sealed>,
}

impl Default for ReplyCache {
    fn default() -> Self {
        Self::with_limits(REPLY_CACHE_MAX_ENTRIES, REPLY_CACHE_MAX_BYTES)
    }
}

impl ReplyCache {
    fn with_limits(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            map: Bounded::new(max_entries, max_bytes),
        }
    }

    /// The reply sealed for this body, when it was sealed recently enough.
    pub(super) fn get(&mut self, key: &CacheKey, cid: &[u8], now_secs: u64) -> Option<Bytes> {
        self.expire(now_secs);
        let s = self.map.get(key)?;
        (s.cid == cid).then(|| s.bytes.clone())
    }

    /// Keeps a freshly sealed reply, evicting the oldest over the bounds.
    pub(super) fn insert(&mut self, key: CacheKey, cid: &[u8], bytes: Bytes, now_secs: u64) {
        if self.map.get(&key).is_some_and(|s| s.cid == cid) {
            return;
        }
        let cost = bytes.len();
        let sealed = Sealed {
            cid: cid.to_vec(),
            bytes,
            sealed_at_secs: now_secs,
        };
        self.map.insert(key, sealed, cost);
    }

    /// Inserted in order of sealing: the too old are all at the front.
    fn expire(&mut self, now_secs: u64) {
        while self
            .map
            .oldest()
            .is_some_and(|s| now_secs.saturating_sub(s.sealed_at_secs) > REPLY_CACHE_MAX_AGE_SECS)
        {
            self.map.pop_oldest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[test]
    fn a_reply_is_reused_until_it_is_too_old_and_only_for_its_body() {
        let mut c = ReplyCache::default();
        let sealed = Bytes::from(vec![7; 10]);
        c.insert(key(1), b"cid-a", sealed.clone(), 100);
        let again = c.get(&key(1), b"cid-a", 100).unwrap();
        assert_eq!(
            again.as_ptr(),
            sealed.as_ptr(),
            "the same bytes, not a copy"
        );
        assert!(
            c.get(&key(1), b"cid-b", 100).is_none(),
            "another body of the key"
        );
        assert!(
            c.get(&key(2), b"cid-a", 100).is_none(),
            "the same body under another key"
        );
        let last = 100 + REPLY_CACHE_MAX_AGE_SECS;
        assert!(c.get(&key(1), b"cid-a", last).is_some());
        assert!(c.get(&key(1), b"cid-a", last + 1).is_none());
        assert_eq!((c.map.len(), c.map.bytes()), (0, 0));
    }

    #[test]
    fn count_and_bytes_are_bounded_and_the_oldest_go_first() {
        let mut c = ReplyCache::with_limits(3, 100);
        for n in 0..4 {
            c.insert(key(n), b"c", Bytes::from(vec![0; 10]), 0);
        }
        assert!(
            c.get(&key(0), b"c", 0).is_none(),
            "over the count, the oldest went"
        );
        assert!(c.get(&key(3), b"c", 0).is_some());
        c.insert(key(9), b"c", Bytes::from(vec![0; 85]), 0);
        assert!(c.map.bytes() <= 100, "{}", c.map.bytes());
        assert!(c.get(&key(9), b"c", 0).is_some());
        assert!(c.get(&key(1), b"c", 0).is_none());
        c.insert(key(8), b"c", Bytes::from(vec![0; 101]), 0);
        assert!(
            c.get(&key(8), b"c", 0).is_none(),
            "larger than the whole cache"
        );
    }
}
