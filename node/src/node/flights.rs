//! Keys being resolved on this node: single flight per key and token, and which of
//! them are asking GitHub right now.
//!
//! Both locks are `std::sync::Mutex`es: each is held for one map operation and never
//! across an await (every inbound lookup reads them).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ghmesh_protocol::CacheKey;
use tokio::sync::watch;

use super::{GetError, Served};
use crate::limits::MAX_INFLIGHT;

/// What a resolution ends with (`None` until it has).
pub(super) type Outcome = Option<Result<Served, GetError>>;
/// Where a resolution's outcome arrives.
pub(super) type Flight = watch::Receiver<Outcome>;

/// Whether a reader joined a resolution under way or must start one.
pub(super) enum Joined {
    /// One is under way: wait on it.
    Existing(Flight),
    /// None was: start it, and send its outcome on the sender.
    New(watch::Sender<Outcome>, Flight),
}

/// A resolution: the key, and whose token fetches it (None: the node's). Readers
/// with different tokens never join each other's flight: an error one token gets is
/// never served to another.
pub(super) type FlightKey = (CacheKey, Option<[u8; 8]>);

/// Keys being resolved on this node, each with the channel its result arrives on, per
/// token. Keyed by cache key first: every inbound lookup asks whether a key is in flight.
/// Beside it, the keys whose resolution is in its upstream phase (asking GitHub now,
/// waiting on nobody): only those are `Pending` to a member that did not ask us to
/// fetch, so that waiting on such an answer can never wait in a circle.
#[derive(Default)]
pub(super) struct Flights {
    by_key: Mutex<HashMap<CacheKey, PerToken>>,
    upstream: Mutex<HashSet<CacheKey>>,
}

/// The flights of one key, by token fingerprint (None: the node's own).
type PerToken = HashMap<Option<[u8; 8]>, Flight>;

impl Flights {
    /// Some resolution of `key` is in progress, whoever's token it uses.
    pub(super) fn contains(&self, key: &CacheKey) -> bool {
        self.by_key
            .lock()
            .map(|m| m.contains_key(key))
            .unwrap_or(false)
    }

    /// `key` is being fetched from upstream right now.
    pub(super) fn fetching(&self, key: &CacheKey) -> bool {
        self.upstream
            .lock()
            .map(|s| s.contains(key))
            .unwrap_or(false)
    }

    /// Room for resolutions of one more key.
    pub(super) fn has_room(&self) -> bool {
        self.by_key
            .lock()
            .map(|m| m.len() < MAX_INFLIGHT)
            .unwrap_or(false)
    }

    /// The flight of `key` for its token, or a new one to be started by the caller
    /// (which must send its outcome on the sender). A poisoned lock gives a flight that
    /// has already failed as closed.
    pub(super) fn join_or_open(&self, (key, who): FlightKey) -> Joined {
        let Ok(mut map) = self.by_key.lock() else {
            return Joined::Existing(watch::channel(Some(Err(GetError::Closed))).1);
        };
        let per_token = map.entry(key).or_default();
        if let Some(rx) = per_token.get(&who) {
            return Joined::Existing(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        per_token.insert(who, rx.clone());
        Joined::New(tx, rx)
    }

    fn remove(&self, (key, who): &FlightKey) {
        if let Ok(mut m) = self.by_key.lock() {
            if let Some(per_token) = m.get_mut(key) {
                per_token.remove(who);
                if per_token.is_empty() {
                    m.remove(key);
                }
            }
        }
    }
}

/// Marks a key as fetched upstream for as long as it lives.
pub(super) struct Upstreaming<'a> {
    flights: &'a Flights,
    key: CacheKey,
}

impl<'a> Upstreaming<'a> {
    pub(super) fn start(flights: &'a Flights, key: CacheKey) -> Self {
        if let Ok(mut s) = flights.upstream.lock() {
            s.insert(key);
        }
        Self { flights, key }
    }
}

impl Drop for Upstreaming<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.flights.upstream.lock() {
            s.remove(&self.key);
        }
    }
}

/// Removes a key from the in-flight table however its resolution ends (also when the
/// task is dropped at shutdown), so a later read never joins a flight that is gone.
pub(super) struct Landing<'a> {
    pub(super) flights: &'a Flights,
    pub(super) key: FlightKey,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.flights.remove(&self.key);
    }
}
