//! ghmesh's embedded cache store, the only crate that touches redb.
//!
//! Layout (all typed tables; values versioned):
//! - `meta`:   key -> CBOR [`StoredMeta`] (entry metadata, small)
//! - `body`:   key -> body bytes (kept apart so a freshness update never rewrites a body)
//! - `index`:  key -> (recency sequence, size in bytes, fresh_until_ms)
//! - `lru`:    (recency sequence, key) -> ()      least recently used first
//! - `expiry`: (fresh_until_ms, key) -> ()        longest expired first
//! - `info`:   name -> u64 (schema version, totals, next sequence)
//!
//! Eviction keeps the store within its entry and byte limits: expired entries go
//! first (longest expired first), then fresh ones, least recently used first. Expired
//! entries are otherwise kept, so that the node can serve them `stale` when GitHub fails.
//!
//! Reads record recency in memory; the next write transaction applies it, so a cache
//! hit never costs an fsync.

use std::collections::HashMap;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ghmesh_protocol::{CacheKey, Entry, EntryMeta};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

mod faults;
mod txn;

#[cfg(feature = "fault-injection")]
pub use faults::DiskFaults;
use txn::{decode_meta, encode_meta, Writer};

/// Schema of the tables below; a file with another version is refused, not rewritten.
pub const SCHEMA_VERSION: u64 = 1;
/// Version of the CBOR value in the `meta` table.
const META_VERSION: u16 = 1;

const META: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("meta");
const BODY: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("body");
const INDEX: TableDefinition<'_, &[u8], (u64, u64, u64)> = TableDefinition::new("index");
const LRU: TableDefinition<'_, (u64, &[u8]), ()> = TableDefinition::new("lru");
const EXPIRY: TableDefinition<'_, (u64, &[u8]), ()> = TableDefinition::new("expiry");
const INFO: TableDefinition<'_, &str, u64> = TableDefinition::new("info");

const INFO_SCHEMA: &str = "schema_version";
const INFO_ENTRIES: &str = "entries";
const INFO_BYTES: &str = "bytes";
const INFO_SEQ: &str = "next_seq";

/// redb's page cache. Its default grows towards 1 GiB with what was read and written,
/// which a daemon next to a CI runner cannot spend; the OS page cache still holds the
/// file, so a hit that misses this cache costs a syscall, not a disk read.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Most keys whose recency is remembered between writes; beyond it, older touches are
/// dropped (recency is a hint for eviction, not data).
const MAX_PENDING_TOUCHES: usize = 65_536;

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (another node) holds the database.
    #[error("the cache database {path} is in use by another process; is another ghmesh node running on this data dir?")]
    Locked {
        /// Database file.
        path: PathBuf,
    },
    /// The file is not a redb database or failed its integrity check.
    #[error("the cache database {path} is corrupt ({detail}); move it aside to start with an empty cache (nothing was deleted)")]
    Corrupt {
        /// Database file.
        path: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// The file was written by a ghmesh with another schema.
    #[error("the cache database {path} has schema version {found}, this ghmesh supports {SCHEMA_VERSION}; move it aside or use a matching ghmesh")]
    Schema {
        /// Database file.
        path: PathBuf,
        /// Schema version in the file.
        found: u64,
    },
    /// The file or its directory could not be created or opened.
    #[error("cannot open the cache database {path}: {source}")]
    Io {
        /// Database file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A stored value could not be decoded (only that entry is affected).
    #[error("stored entry {key} is unreadable: {detail}")]
    Decode {
        /// Hex cache key.
        key: String,
        /// Why.
        detail: String,
    },
    /// Any other redb failure during a transaction.
    #[error("cache storage error: {0}")]
    Storage(#[from] redb::Error),
    /// A reopen failed: the store is closed until one succeeds.
    #[error("the cache database {path} is closed after a failed reopen")]
    Closed {
        /// Database file.
        path: PathBuf,
    },
}

impl StoreError {
    /// Did the disk fail (as opposed to a bad value or a lock)? redb refuses every
    /// later write after an I/O error, until the database is reopened.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. }
                | StoreError::Closed { .. }
                | StoreError::Storage(redb::Error::Io(_) | redb::Error::PreviousIo)
        )
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        Self::Storage(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        Self::Storage(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        Self::Storage(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        Self::Storage(e.into())
    }
}

/// Size limits; eviction keeps the store within both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries.
    pub max_entries: u64,
    /// Most bytes (metadata + body of every entry).
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 1 << 30,
        }
    }
}

/// The versioned value of the `meta` table.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMeta {
    v: u16,
    meta: EntryMeta,
}

/// What a write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Entries written.
    pub written: usize,
    /// Entries evicted to stay within the limits.
    pub evicted: usize,
    /// Freshness updates applied (keys held).
    pub refreshed: usize,
}

/// A freshness update for a held entry (after a 304 here or on a peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The entry.
    pub key: CacheKey,
    /// When upstream last confirmed it, unix ms (only ever moves forward).
    pub fetched_at_ms: u64,
    /// The new end of freshness, unix ms.
    pub fresh_until_ms: u64,
}

/// The cache store. Share it behind an `Arc`: reads run concurrently with a writer.
pub struct Store {
    /// `None` only between a failed reopen and the next successful one. Callers clone
    /// the `Arc` for the length of one transaction; a reopen waits for them.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    faults: Option<Arc<faults::DiskFaults>>,
    path: PathBuf,
    limits: Limits,
    /// Keys read since the last write, with the order they were read in.
    touches: Mutex<HashMap<CacheKey, u64>>,
    touch_clock: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Opens redb on `file` with the integrity check, mapping its errors to ours.
fn open_db(
    path: &Path,
    file: std::fs::File,
    #[cfg_attr(not(feature = "fault-injection"), allow(unused_variables))] faults: Option<
        Arc<faults::DiskFaults>,
    >,
) -> Result<Database, StoreError> {
    let path = path.to_path_buf();
    let open_err = |e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            StoreError::Locked { path: path.clone() }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::Io {
                path: path.clone(),
                source,
            }
        }
        other => StoreError::Corrupt {
            path: path.clone(),
            detail: other.to_string(),
        },
    };
    let backend = faults::Backend::new(
        redb::backends::FileBackend::new(file).map_err(open_err)?,
        faults,
    );
    // Checking integrity on open reads the whole file once, but turns a damaged file
    // into a clear error instead of a panic deep inside a later read.
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create_with_backend(backend)
        .map_err(open_err)
}

impl Store {
    /// Opens or creates the database at `path` (file 0600, its directory 0700 when
    /// created here). Fails with [`StoreError::Locked`] when another process holds it
    /// and [`StoreError::Corrupt`] when it is not a sound database; never wipes data.
    pub fn open(path: impl AsRef<Path>, limits: Limits) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), limits, None)
    }

    /// [`Store::open`], with a switch that makes every later disk write fail, for tests
    /// of what the node does when its disk fails.
    #[cfg(feature = "fault-injection")]
    pub fn open_with_faults(
        path: impl AsRef<Path>,
        limits: Limits,
    ) -> Result<(Self, std::sync::Arc<faults::DiskFaults>), StoreError> {
        let switch = std::sync::Arc::new(faults::DiskFaults::default());
        let store = Self::open_inner(path.as_ref(), limits, Some(switch.clone()))?;
        Ok((store, switch))
    }

    fn open_inner(
        path: &Path,
        limits: Limits,
        #[cfg_attr(not(feature = "fault-injection"), allow(unused_variables))] faults: Option<
            std::sync::Arc<faults::DiskFaults>,
        >,
    ) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        let db = open_db(&path, file, faults.clone())?;
        let store = Self {
            db: std::sync::RwLock::new(Some(Arc::new(db))),
            faults,
            path,
            limits,
            touches: Mutex::new(HashMap::new()),
            touch_clock: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// The database, for one operation.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .ok()
            .and_then(|d| d.clone())
            .ok_or_else(|| StoreError::Closed {
                path: self.path.clone(),
            })
    }

    /// Closes and reopens the database: after an I/O error redb refuses every later
    /// write until then. Waits (up to `wait`) for operations under way to finish, since
    /// redb's file lock is held until the last of them lets go of the old database. On
    /// failure the store stays closed (every operation fails) until a reopen succeeds.
    pub fn reopen(&self, wait: std::time::Duration) -> Result<(), StoreError> {
        let mut slot = self.db.write().map_err(|_| StoreError::Closed {
            path: self.path.clone(),
        })?;
        if let Some(mut old) = slot.take() {
            let deadline = std::time::Instant::now() + wait;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if std::time::Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Err(StoreError::Locked {
                            path: self.path.clone(),
                        });
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        let db = open_db(&self.path, file, self.faults.clone())?;
        *slot = Some(Arc::new(db));
        drop(slot);
        self.init_schema()
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        {
            let mut info = txn.open_table(INFO)?;
            let found = info.get(INFO_SCHEMA)?.map(|v| v.value());
            match found {
                None => {
                    info.insert(INFO_SCHEMA, SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::Schema {
                        path: self.path.clone(),
                        found,
                    })
                }
            }
            let entries = info.get(INFO_ENTRIES)?.map(|v| v.value()).unwrap_or(0);
            let bytes = info.get(INFO_BYTES)?.map(|v| v.value()).unwrap_or(0);
            self.entries.store(entries, Ordering::Relaxed);
            self.bytes.store(bytes, Ordering::Relaxed);
            // Create every table so that readers never see "table does not exist".
            txn.open_table(META)?;
            txn.open_table(BODY)?;
            txn.open_table(INDEX)?;
            txn.open_table(LRU)?;
            txn.open_table(EXPIRY)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (metadata + bodies).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The entry for `key`, fresh or not; records the read for LRU.
    pub fn get(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let meta_t = txn.open_table(META)?;
        let Some(meta) = meta_t.get(key.as_bytes().as_slice())? else {
            return Ok(None);
        };
        let meta = decode_meta(key, meta.value())?;
        let body_t = txn.open_table(BODY)?;
        let Some(body) = body_t.get(key.as_bytes().as_slice())? else {
            return Err(StoreError::Decode {
                key: key.to_string(),
                detail: "metadata without body".into(),
            });
        };
        // The one copy a read makes: out of redb's page.
        let body = bytes::Bytes::copy_from_slice(body.value());
        self.touch(key);
        Ok(Some(Entry { meta, body }))
    }

    /// Only the metadata for `key` (cheap: no body read). Does not count as a use.
    pub fn get_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let meta_t = txn.open_table(META)?;
        match meta_t.get(key.as_bytes().as_slice())? {
            Some(v) => Ok(Some(decode_meta(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Records a use of `key` for LRU; applied with the next write.
    pub fn touch(&self, key: &CacheKey) {
        let tick = self.touch_clock.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = self.touches.lock() {
            if t.len() < MAX_PENDING_TOUCHES || t.contains_key(key) {
                t.insert(*key, tick);
            }
        }
    }

    /// Stores one entry durably (one transaction, one fsync).
    pub fn put(&self, entry: &Entry, now_ms: u64) -> Result<WriteStats, StoreError> {
        self.put_many(std::slice::from_ref(entry), now_ms)
    }

    /// Stores a batch durably in one transaction and one fsync, replacing entries with
    /// the same key, then evicts down to the limits.
    pub fn put_many(&self, entries: &[Entry], now_ms: u64) -> Result<WriteStats, StoreError> {
        self.write_batch(entries, &[], now_ms)
    }

    /// Moves an entry's freshness forward without rewriting its body (after a 304).
    /// Returns false when the key is not held.
    pub fn set_freshness(
        &self,
        key: &CacheKey,
        fetched_at_ms: u64,
        fresh_until_ms: u64,
    ) -> Result<bool, StoreError> {
        let update = Freshness {
            key: *key,
            fetched_at_ms,
            fresh_until_ms,
        };
        Ok(self.write_batch(&[], &[update], 0)?.refreshed == 1)
    }

    /// One transaction, one fsync: stores `entries` (replacing entries with the same
    /// key), then moves freshness forward for `freshness` (held keys only, bodies not
    /// rewritten), then evicts down to the limits. The node's group commit sends every
    /// write of a batch through here, so a burst of 304s costs one fsync, not one each.
    pub fn write_batch(
        &self,
        entries: &[Entry],
        freshness: &[Freshness],
        now_ms: u64,
    ) -> Result<WriteStats, StoreError> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        let mut stats = WriteStats::default();
        {
            let mut w = Writer::open(&txn)?;
            self.apply_touches(&mut w)?;
            for entry in entries {
                let key = entry.meta.key();
                let meta = encode_meta(&entry.meta);
                w.remove(&key)?;
                let size = (meta.len() + entry.body.len() + 32) as u64;
                let seq = w.next_seq();
                let k = key.as_bytes().as_slice();
                w.meta.insert(k, meta.as_slice())?;
                w.body.insert(k, entry.body.as_ref())?;
                w.index.insert(k, (seq, size, entry.meta.fresh_until_ms))?;
                w.lru.insert((seq, k), ())?;
                w.expiry.insert((entry.meta.fresh_until_ms, k), ())?;
                w.entries += 1;
                w.bytes += size;
                stats.written += 1;
            }
            for update in freshness {
                if w.set_freshness(update)? {
                    stats.refreshed += 1;
                }
            }
            if !entries.is_empty() {
                stats.evicted = w.evict(self.limits, now_ms)?;
            }
            w.save(&self.entries, &self.bytes)?;
        }
        txn.commit()?;
        Ok(stats)
    }

    /// Removes one entry; returns whether it was there.
    pub fn remove(&self, key: &CacheKey) -> Result<bool, StoreError> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        let removed;
        {
            let mut w = Writer::open(&txn)?;
            removed = w.remove(key)?;
            w.save(&self.entries, &self.bytes)?;
        }
        txn.commit()?;
        Ok(removed)
    }

    /// Writes pending recency updates (cheap, not fsynced on its own).
    pub fn flush(&self) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        {
            let mut w = Writer::open(&txn)?;
            self.apply_touches(&mut w)?;
            w.save(&self.entries, &self.bytes)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Calls `f` with every entry's metadata, in key order, until it returns false.
    pub fn for_each_meta(
        &self,
        mut f: impl FnMut(CacheKey, EntryMeta) -> bool,
    ) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let meta_t = txn.open_table(META)?;
        for item in meta_t.iter()? {
            let (k, v) = item?;
            let Some(key) = CacheKey::from_slice(k.value()) else {
                continue;
            };
            if !f(key, decode_meta(&key, v.value())?) {
                break;
            }
        }
        Ok(())
    }

    /// Keys from least to most recently used (as of the last write).
    pub fn keys_by_recency(&self) -> Result<Vec<CacheKey>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let lru = txn.open_table(LRU)?;
        let mut out = Vec::with_capacity(lru.len()? as usize);
        for item in lru.iter()? {
            let (k, _) = item?;
            if let Some(key) = CacheKey::from_slice(k.value().1) {
                out.push(key);
            }
        }
        Ok(out)
    }

    fn apply_touches(&self, w: &mut Writer<'_>) -> Result<(), StoreError> {
        let mut touched: Vec<(CacheKey, u64)> = match self.touches.lock() {
            Ok(mut t) => t.drain().collect(),
            Err(_) => return Ok(()),
        };
        touched.sort_by_key(|(_, tick)| *tick);
        for (key, _) in touched {
            let k = key.as_bytes().as_slice();
            let Some((old_seq, size, fresh)) = w.index.get(k)?.map(|v| v.value()) else {
                continue;
            };
            let seq = w.next_seq();
            w.lru.remove((old_seq, k))?;
            w.lru.insert((seq, k), ())?;
            w.index.insert(k, (seq, size, fresh))?;
        }
        Ok(())
    }
}
