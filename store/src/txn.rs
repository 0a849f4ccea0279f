//! One write transaction's open tables with the running totals, and the versioned
//! encoding of entry metadata.

use std::sync::atomic::{AtomicU64, Ordering};

use ghmesh_protocol::{CacheKey, EntryMeta};
use redb::{ReadableTable, WriteTransaction};

use crate::{
    Freshness, Limits, StoreError, StoredMeta, BODY, EXPIRY, INDEX, INFO, INFO_BYTES, INFO_ENTRIES,
    INFO_SEQ, LRU, META, META_VERSION,
};

/// The open tables of one write transaction, with the running totals.
pub(crate) struct Writer<'txn> {
    pub(crate) meta: redb::Table<'txn, &'static [u8], &'static [u8]>,
    pub(crate) body: redb::Table<'txn, &'static [u8], &'static [u8]>,
    pub(crate) index: redb::Table<'txn, &'static [u8], (u64, u64, u64)>,
    pub(crate) lru: redb::Table<'txn, (u64, &'static [u8]), ()>,
    pub(crate) expiry: redb::Table<'txn, (u64, &'static [u8]), ()>,
    pub(crate) info: redb::Table<'txn, &'static str, u64>,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
    pub(crate) seq: u64,
}

impl<'txn> Writer<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let info = txn.open_table(INFO)?;
        let get = |name| -> Result<u64, StoreError> {
            Ok(info.get(name)?.map(|v| v.value()).unwrap_or(0))
        };
        let (entries, bytes, seq) = (get(INFO_ENTRIES)?, get(INFO_BYTES)?, get(INFO_SEQ)?);
        Ok(Self {
            meta: txn.open_table(META)?,
            body: txn.open_table(BODY)?,
            index: txn.open_table(INDEX)?,
            lru: txn.open_table(LRU)?,
            expiry: txn.open_table(EXPIRY)?,
            info,
            entries,
            bytes,
            seq,
        })
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn remove(&mut self, key: &CacheKey) -> Result<bool, StoreError> {
        let k = key.as_bytes().as_slice();
        let Some((seq, size, fresh)) = self.index.remove(k)?.map(|v| v.value()) else {
            return Ok(false);
        };
        self.meta.remove(k)?;
        self.body.remove(k)?;
        self.lru.remove((seq, k))?;
        self.expiry.remove((fresh, k))?;
        self.entries = self.entries.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
        Ok(true)
    }

    /// Moves one held entry's freshness; false when the key is not held.
    pub(crate) fn set_freshness(&mut self, update: &Freshness) -> Result<bool, StoreError> {
        let key = &update.key;
        let k = key.as_bytes().as_slice();
        let Some(old) = self.meta.get(k)?.map(|v| v.value().to_vec()) else {
            return Ok(false);
        };
        let mut meta = decode_meta(key, &old)?;
        meta.fetched_at_ms = meta.fetched_at_ms.max(update.fetched_at_ms);
        meta.fresh_until_ms = update.fresh_until_ms;
        let encoded = encode_meta(&meta);
        self.meta.insert(k, encoded.as_slice())?;
        let indexed = self.index.get(k)?.map(|v| v.value());
        if let Some((seq, old_size, old_fresh)) = indexed {
            let size = (old_size + encoded.len() as u64).saturating_sub(old.len() as u64);
            self.bytes = (self.bytes + size).saturating_sub(old_size);
            self.expiry.remove((old_fresh, k))?;
            self.expiry.insert((update.fresh_until_ms, k), ())?;
            self.index.insert(k, (seq, size, update.fresh_until_ms))?;
        }
        Ok(true)
    }

    fn over(&self, limits: Limits) -> bool {
        self.entries > limits.max_entries || self.bytes > limits.max_bytes
    }

    /// Expired entries first (longest expired first), then least recently used.
    pub(crate) fn evict(&mut self, limits: Limits, now_ms: u64) -> Result<usize, StoreError> {
        let mut evicted = 0;
        while self.over(limits) {
            let victim = {
                let expired = self.expiry.first()?.and_then(|(k, _)| {
                    let (fresh, key) = k.value();
                    (fresh <= now_ms)
                        .then(|| CacheKey::from_slice(key))
                        .flatten()
                });
                match expired {
                    Some(k) => Some(k),
                    None => self
                        .lru
                        .first()?
                        .and_then(|(k, _)| CacheKey::from_slice(k.value().1)),
                }
            };
            let Some(victim) = victim else { break };
            if !self.remove(&victim)? {
                break;
            }
            evicted += 1;
        }
        Ok(evicted)
    }

    pub(crate) fn save(
        &mut self,
        entries: &AtomicU64,
        bytes: &AtomicU64,
    ) -> Result<(), StoreError> {
        self.info.insert(INFO_ENTRIES, self.entries)?;
        self.info.insert(INFO_BYTES, self.bytes)?;
        self.info.insert(INFO_SEQ, self.seq)?;
        entries.store(self.entries, Ordering::Relaxed);
        bytes.store(self.bytes, Ordering::Relaxed);
        Ok(())
    }
}

pub(crate) fn encode_meta(meta: &EntryMeta) -> Vec<u8> {
    let mut out = Vec::new();
    let stored = StoredMeta {
        v: META_VERSION,
        meta: meta.clone(),
    };
    // Encoding a plain struct into a Vec cannot fail.
    let _ = ciborium::into_writer(&stored, &mut out);
    out
}

pub(crate) fn decode_meta(key: &CacheKey, bytes: &[u8]) -> Result<EntryMeta, StoreError> {
    let err = |detail: String| StoreError::Decode {
        key: key.to_string(),
        detail,
    };
    let stored: StoredMeta = ciborium::from_reader(bytes).map_err(|e| err(e.to_string()))?;
    if stored.v != META_VERSION {
        return Err(err(format!("unknown value version {}", stored.v)));
    }
    Ok(stored.meta)
}
