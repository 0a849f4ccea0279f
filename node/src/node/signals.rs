//! What the writer shares with readers: who waits for which key, what was announced
//! without a body, which paths were written to, and the stored-keys broadcast.
//!
//! Every lock here is a `std::sync::Mutex`: each is held for one map operation and
//! never across an await (the writer's thread takes them between transactions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ghmesh_protocol::{CacheKey, EntryMeta};
use libp2p::PeerId;
use tokio::sync::{broadcast, Notify};

use super::bodyless::Bodyless;
use crate::limits::{MAX_WRITTEN_PATHS, STORED_EVENTS};

/// State the writer shares with readers.
pub(super) struct Signals {
    /// Readers waiting for a key's entry to arrive (from gossip or the writer).
    arrivals: Mutex<HashMap<CacheKey, Arc<Notify>>>,
    /// Entries announced without body: who has them.
    bodyless: Mutex<Bodyless>,
    /// Keys whose entry was stored or refreshed, after the commit.
    pub(super) stored: broadcast::Sender<CacheKey>,
    /// Paths written to through a node's API, with when: copies fetched before are
    /// the old answer, whoever offers them.
    written: Mutex<HashMap<String, u64>>,
}

impl Signals {
    pub(super) fn new() -> Self {
        Self {
            arrivals: Mutex::new(HashMap::new()),
            bodyless: Mutex::new(Bodyless::default()),
            stored: broadcast::channel(STORED_EVENTS).0,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// When `path` was last written to (as far as this node knows).
    pub(super) fn written_at(&self, path: &str) -> Option<u64> {
        self.written.lock().ok()?.get(path).copied()
    }

    /// Records writes to `paths` at `at_ms`, within [`MAX_WRITTEN_PATHS`] (the oldest
    /// records go first: a day later every copy of them has expired anyway).
    pub(super) fn record_write(&self, paths: &[String], at_ms: u64) {
        let Ok(mut w) = self.written.lock() else {
            return;
        };
        for p in paths {
            if w.len() >= MAX_WRITTEN_PATHS && !w.contains_key(p) {
                if let Some(oldest) = w.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()) {
                    w.remove(&oldest);
                }
            }
            let at = w.entry(p.clone()).or_insert(at_ms);
            *at = (*at).max(at_ms);
        }
    }

    /// The notification a reader waiting for `key` waits on (shared by every waiter).
    pub(super) fn arrival(&self, key: &CacheKey) -> Arc<Notify> {
        match self.arrivals.lock() {
            Ok(mut m) => m
                .entry(*key)
                .or_insert_with(|| Arc::new(Notify::new()))
                .clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// A waiter for `key` is done; the entry goes when nobody else waits.
    pub(super) fn done_waiting(&self, key: &CacheKey, notify: &Arc<Notify>) {
        if let Ok(mut m) = self.arrivals.lock() {
            // Only the map and this waiter hold it: nobody else waits.
            if Arc::strong_count(notify) <= 2 {
                m.remove(key);
            }
        }
    }

    /// Whether a reader waits for one of these keys to arrive.
    pub(super) fn awaits_any(&self, mut keys: impl Iterator<Item = CacheKey>) -> bool {
        self.arrivals
            .lock()
            .is_ok_and(|a| keys.any(|k| a.contains_key(&k)))
    }

    /// After a commit: wake readers waiting for these keys, forget their body-less
    /// announces, tell subscribers.
    pub(super) fn changed(&self, keys: &[CacheKey]) {
        if let Ok(arrivals) = self.arrivals.lock() {
            for key in keys {
                if let Some(n) = arrivals.get(key) {
                    n.notify_waiters();
                }
            }
        }
        if let Ok(mut bodyless) = self.bodyless.lock() {
            for key in keys {
                bodyless.remove(key);
            }
        }
        for key in keys {
            let _ = self.stored.send(*key);
        }
    }

    /// Remembers that `from` announced `meta` without its body.
    pub(super) fn bodyless_announced(&self, key: CacheKey, meta: EntryMeta, from: PeerId) {
        if let Ok(mut b) = self.bodyless.lock() {
            b.insert(key, meta, from);
        }
    }

    /// Who announced `key` without its body, and what.
    pub(super) fn bodyless(&self, key: &CacheKey) -> Option<(EntryMeta, PeerId)> {
        self.bodyless.lock().ok().and_then(|b| b.get(key))
    }

    /// `key` was announced without its body and has not been stored since.
    pub(super) fn is_bodyless(&self, key: &CacheKey) -> bool {
        self.bodyless.lock().is_ok_and(|b| b.contains_key(key))
    }
}
