//! Group commit: every write queued while a transaction runs goes into the next one,
//! puts and freshness extensions alike, so a burst costs one fsync, not one per entry.
//!
//! A caller that waits on a write learns whether it is durable: a failed transaction
//! answers every write in it with an error (and counts `store_errors`), so nothing is
//! acknowledged that is not on disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghmesh_protocol::{merge, CacheKey, Entry, EntryMeta, Merge, Refresh};
use ghmesh_store::{Freshness, Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{GetError, Health, Signals};
use crate::clock::SharedClock;
use crate::limits::MAX_WRITE_BATCH;
use crate::policy;
use crate::stats::Counters;

/// One write.
#[derive(Debug)]
pub(crate) enum WriteJob {
    /// Our own upstream fetch: always the newest.
    Put(Entry),
    /// From a peer: apply the newer-wins rule.
    Merge(Entry),
    /// After a 304 here or on a peer.
    Refresh(Refresh),
    /// A write upstream changed these entries: stale from `at_ms` on (if still fresh).
    Expire(Vec<CacheKey>, u64),
    /// Make everything queued so far durable, then answer.
    Flush,
}

type Ack = oneshot::Sender<Result<(), WriteError>>;

/// Why a write was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The store failed the transaction.
    #[error("cache store: {reason}")]
    Store {
        /// What failed, as the store said it.
        reason: String,
        /// It was the disk (the store is reopened), not the data.
        io: bool,
    },
    /// The writer has stopped: the node is shutting down.
    #[error("node is shutting down")]
    Closed,
}

impl From<WriteError> for GetError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store { reason, io } => GetError::Store { reason, io },
            WriteError::Closed => GetError::Closed,
        }
    }
}

/// Whether a write may wait for others to share its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// A reader (or a client's response) waits for it: committed at once.
    Now,
    /// Replication nobody reads yet: may wait up to [`WRITE_LINGER`] for company.
    Background,
}

pub(crate) enum WriterMsg {
    /// Boxed: entries are large, and the queue holds thousands of messages.
    Job(Box<WriteJob>, Option<Ack>, Urgency),
    /// Commit what was queued before this, then end.
    Stop,
}

/// The handle readers write through.
pub(crate) struct Writer {
    tx: mpsc::Sender<WriterMsg>,
    /// The writer's task, taken once by `stop`. A `std::sync::Mutex`: taken out and
    /// released before the await on it.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// A handle and the queue [`run`] consumes.
    pub(crate) fn channel(capacity: usize) -> (Self, mpsc::Receiver<WriterMsg>) {
        let (tx, rx) = mpsc::channel(capacity);
        let writer = Self {
            tx,
            task: Mutex::new(None),
        };
        (writer, rx)
    }

    pub(crate) fn set_task(&self, task: JoinHandle<()>) {
        if let Ok(mut t) = self.task.lock() {
            *t = Some(task);
        }
    }

    /// Queues a write and waits until it is durable (or failed).
    pub(crate) async fn write(&self, job: WriteJob, urgency: Urgency) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(WriterMsg::Job(Box::new(job), Some(tx), urgency))
            .await
            .map_err(|_| WriteError::Closed)?;
        rx.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Queues a background write without waiting; false when the queue is full or
    /// closed.
    pub(crate) fn write_behind(&self, job: WriteJob) -> bool {
        self.tx
            .try_send(WriterMsg::Job(Box::new(job), None, Urgency::Background))
            .is_ok()
    }

    /// Tells the writer to commit what is queued and end; waits at most `bound`.
    /// True when it ended in time.
    pub(crate) async fn stop(&self, bound: Duration) -> bool {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        let Some(task) = task else {
            return true;
        };
        let stopped = async {
            let _ = self.tx.send(WriterMsg::Stop).await;
            let _ = task.await;
        };
        tokio::time::timeout(bound, stopped).await.is_ok()
    }
}

/// What the writer needs besides its queue.
pub(crate) struct WriterParts {
    pub store: Arc<Store>,
    pub signals: Arc<Signals>,
    pub counters: Counters,
    pub clock: SharedClock,
    pub health: Arc<Health>,
    /// How long to keep trying to reopen the store after an I/O error.
    pub reopen_window: Duration,
}

/// Between reopen attempts.
const REOPEN_INTERVAL: Duration = Duration::from_millis(250);

/// The writer loop: ends on `Stop` or when every handle is gone.
pub(crate) async fn run(parts: WriterParts, mut rx: mpsc::Receiver<WriterMsg>) {
    let WriterParts {
        store,
        signals,
        counters,
        clock,
        health,
        reopen_window,
    } = parts;
    let mut stop = false;
    while !stop {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Gathered::default();
        stop = batch.add(first);
        while !stop && batch.len() < MAX_WRITE_BATCH {
            match rx.try_recv() {
                Ok(msg) => stop = batch.add(msg),
                Err(_) => break,
            }
        }
        // Replication arrives one entry at a time, and a transaction per entry is most
        // of what storing it costs: background writes wait a moment for company. A
        // reader waiting for one of the keys ends the wait, as does any urgent write.
        let lingering = tokio::time::Instant::now() + WRITE_LINGER;
        while !stop && batch.may_linger(&signals) {
            match tokio::time::timeout_at(lingering, rx.recv()).await {
                Ok(Some(msg)) => stop = batch.add(msg),
                Ok(None) => stop = true,
                Err(_) => break,
            }
        }
        let Gathered { jobs, acks, .. } = batch;
        if jobs.is_empty() {
            continue;
        }
        let batch_store = store.clone();
        let now = clock.now_ms();
        let batch_signals = signals.clone();
        let result = tokio::task::spawn_blocking(move || {
            apply_batch(&batch_store, jobs, now, &|path| {
                batch_signals.written_at(path)
            })
            .map_err(Failed::Store)
        })
        .await
        .unwrap_or_else(|e| Err(Failed::Other(format!("store writer panicked: {e}"))));
        let answer = match &result {
            Ok(changed) => {
                counters.store_commits.inc();
                health.healthy();
                signals.changed(changed);
                Ok(())
            }
            Err(e) => {
                counters.store_errors.inc();
                let reason = e.to_string();
                tracing::error!("cache write failed: {reason}");
                health.degrade(format!("store writes fail: {reason}"));
                let io = matches!(e, Failed::Store(e) if e.is_io());
                Err(WriteError::Store { reason, io })
            }
        };
        // Answered before recovering: the writes failed either way, and their readers
        // should not wait for the reopen.
        for ack in acks.into_iter().flatten() {
            let _ = ack.send(answer.clone());
        }
        if let Err(Failed::Store(e)) = &result {
            if e.is_io() {
                recover(&store, &health, &counters, reopen_window).await;
            }
        }
    }
    tracing::debug!("store writer stopped");
}

/// How long background writes wait for others to share their transaction; what an
/// entry replicated in the background may take longer to become readable.
pub(crate) const WRITE_LINGER: Duration = Duration::from_millis(20);

/// The writes of the next transaction, as they are taken off the queue.
#[derive(Default)]
struct Gathered {
    jobs: Vec<WriteJob>,
    acks: Vec<Option<Ack>>,
    urgent: bool,
}

impl Gathered {
    /// Takes one message; true when it says to stop.
    fn add(&mut self, msg: WriterMsg) -> bool {
        match msg {
            WriterMsg::Job(job, ack, urgency) => {
                self.urgent |= urgency == Urgency::Now || !job.may_linger();
                self.jobs.push(*job);
                self.acks.push(ack);
                false
            }
            WriterMsg::Stop => true,
        }
    }

    fn len(&self) -> usize {
        self.acks.len()
    }

    /// Whether to wait for more writes before committing.
    fn may_linger(&self, signals: &Signals) -> bool {
        let awaited = signals.awaits_any(self.jobs.iter().filter_map(WriteJob::key));
        lingers(self.urgent, self.len(), awaited)
    }
}

/// The decision: background writes only, room in the batch, and nobody reading any of
/// their keys.
fn lingers(urgent: bool, queued: usize, awaited: bool) -> bool {
    !urgent && queued > 0 && queued < MAX_WRITE_BATCH && !awaited
}

impl WriteJob {
    /// Writes that change what readers must not see any longer are never delayed.
    fn may_linger(&self) -> bool {
        matches!(self, WriteJob::Merge(_) | WriteJob::Refresh(_))
    }

    /// The entry a job writes, when it writes one.
    fn key(&self) -> Option<CacheKey> {
        match self {
            WriteJob::Put(e) | WriteJob::Merge(e) => Some(e.meta.key()),
            WriteJob::Refresh(r) => Some(r.key),
            WriteJob::Expire(..) | WriteJob::Flush => None,
        }
    }
}

/// Why a batch failed.
#[derive(Debug)]
enum Failed {
    Store(StoreError),
    Other(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Store(e) => e.fmt(f),
            Failed::Other(e) => f.write_str(e),
        }
    }
}

/// redb refuses every write after an I/O error until the database is reopened: reopen
/// it, retrying for `window`; if it never reopens, the node cannot keep its promise
/// that answered entries are durable, so it is declared failed (the daemon exits).
async fn recover(store: &Arc<Store>, health: &Health, counters: &Counters, window: Duration) {
    let deadline = tokio::time::Instant::now() + window;
    let mut last;
    loop {
        let s = store.clone();
        let attempt =
            tokio::task::spawn_blocking(move || s.reopen(crate::limits::STORE_REOPEN_ATTEMPT))
                .await
                .unwrap_or_else(|e| {
                    Err(StoreError::Closed {
                        path: std::path::PathBuf::from(e.to_string()),
                    })
                });
        match attempt {
            Ok(()) => {
                counters.store_reopens.inc();
                tracing::warn!("cache store reopened after a write failure");
                return;
            }
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() + REOPEN_INTERVAL > deadline {
            break;
        }
        tokio::time::sleep(REOPEN_INTERVAL).await;
    }
    tracing::error!("cache store could not be reopened: {last}");
    health.fail(format!(
        "the cache store {} failed and could not be reopened ({last}); check the disk and restart",
        store.path().display()
    ));
}

/// What one transaction will write. Later jobs of a batch see earlier ones.
struct Batch<'s> {
    store: &'s Store,
    puts: Vec<Entry>,
    index: HashMap<CacheKey, usize>,
    fresh: HashMap<CacheKey, Freshness>,
}

impl<'s> Batch<'s> {
    fn new(store: &'s Store) -> Self {
        Self {
            store,
            puts: Vec::new(),
            index: HashMap::new(),
            fresh: HashMap::new(),
        }
    }

    fn upsert(&mut self, key: CacheKey, e: Entry) {
        self.fresh.remove(&key);
        match self.index.get(&key) {
            Some(&i) => self.puts[i] = e,
            None => {
                self.index.insert(key, self.puts.len());
                self.puts.push(e);
            }
        }
    }

    /// What is held for `key` once this batch is applied so far.
    fn held(&self, key: &CacheKey) -> Option<EntryMeta> {
        if let Some(&i) = self.index.get(key) {
            return Some(self.puts[i].meta.clone());
        }
        let mut meta = self.store.get_meta(key).ok().flatten()?;
        if let Some(f) = self.fresh.get(key) {
            meta.fetched_at_ms = meta.fetched_at_ms.max(f.fetched_at_ms);
            meta.fresh_until_ms = f.fresh_until_ms;
        }
        Some(meta)
    }

    /// Ends freshness at `at_ms` when it runs past it (an invalidation).
    fn expire(&mut self, key: CacheKey, at_ms: u64) -> bool {
        let Some(held) = self.held(&key) else {
            return false;
        };
        if held.fresh_until_ms <= at_ms {
            return false;
        }
        if let Some(&i) = self.index.get(&key) {
            self.puts[i].meta.fresh_until_ms = at_ms;
        } else {
            self.fresh.insert(
                key,
                Freshness {
                    key,
                    fetched_at_ms: held.fetched_at_ms,
                    fresh_until_ms: at_ms,
                },
            );
        }
        true
    }

    /// Moves freshness forward: in the pending entry, else as a freshness update.
    fn extend(&mut self, key: CacheKey, fetched_at_ms: u64, fresh_until_ms: u64) {
        if let Some(&i) = self.index.get(&key) {
            let meta = &mut self.puts[i].meta;
            meta.fresh_until_ms = fresh_until_ms;
            meta.fetched_at_ms = meta.fetched_at_ms.max(fetched_at_ms);
            return;
        }
        let f = self.fresh.entry(key).or_insert(Freshness {
            key,
            fetched_at_ms,
            fresh_until_ms,
        });
        f.fetched_at_ms = f.fetched_at_ms.max(fetched_at_ms);
        f.fresh_until_ms = fresh_until_ms;
    }
}

/// Applies a batch in one transaction; returns the keys that changed.
/// `written_at(path)`: when the path was last written to; copies from before are not
/// taken from peers.
fn apply_batch(
    store: &Store,
    jobs: Vec<WriteJob>,
    now_ms: u64,
    written_at: &dyn Fn(&str) -> Option<u64>,
) -> Result<Vec<CacheKey>, StoreError> {
    let mut batch = Batch::new(store);
    let mut changed = Vec::new();
    for job in jobs {
        match job {
            WriteJob::Put(e) => {
                let key = e.meta.key();
                batch.upsert(key, e);
                changed.push(key);
            }
            WriteJob::Merge(e) => {
                let key = e.meta.key();
                if policy::predates_write(e.meta.fetched_at_ms, written_at(&e.meta.request.path)) {
                    continue;
                }
                match merge(batch.held(&key).as_ref(), &e.meta) {
                    Merge::Store => {
                        batch.upsert(key, e);
                        changed.push(key);
                    }
                    Merge::Extend {
                        fresh_until_ms,
                        fetched_at_ms,
                    } => {
                        batch.extend(key, fetched_at_ms, fresh_until_ms);
                        changed.push(key);
                    }
                    Merge::Keep => {}
                }
            }
            WriteJob::Refresh(r) => {
                let held = batch.held(&r.key);
                let written = held.as_ref().and_then(|h| written_at(&h.request.path));
                if policy::refresh_applies(held.as_ref(), &r)
                    && !policy::predates_write(r.fetched_at_ms, written)
                {
                    batch.extend(r.key, r.fetched_at_ms, r.fresh_until_ms);
                    changed.push(r.key);
                }
            }
            WriteJob::Expire(keys, at_ms) => {
                for key in keys {
                    if batch.expire(key, at_ms) {
                        changed.push(key);
                    }
                }
            }
            // Every batch commits, which applies pending recency too.
            WriteJob::Flush => {}
        }
    }
    let fresh: Vec<Freshness> = batch.fresh.into_values().collect();
    store.write_batch(&batch.puts, &fresh, now_ms)?;
    Ok(changed)
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
