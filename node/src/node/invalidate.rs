//! Writes invalidate (RFC 9111 §4.4): after a successful write through this node's API,
//! cached reads of what it changed are made stale here and, through a sealed
//! `Invalidate` gossip, on every member. A stale entry with an ETag is revalidated on
//! its next read (a free 304 when nothing changed); without one it is fetched again.

use ghmesh_protocol::{CacheKey, Invalidate, Message};

use super::writer::WriteJob;
use super::{GetError, Node};
use crate::policy;

impl Node {
    /// Marks stale every cached read of `paths` fetched before `at_ms`, here and (when
    /// `tell_peers`) across the mesh. Returns how many entries changed here.
    pub async fn invalidate(
        &self,
        paths: Vec<String>,
        at_ms: u64,
        tell_peers: bool,
    ) -> Result<usize, GetError> {
        if paths.is_empty() {
            return Ok(0);
        }
        self.inner.signals.record_write(&paths, at_ms);
        let keys = self.keys_to_invalidate(paths.clone(), at_ms).await;
        let changed = keys.len();
        if !keys.is_empty() {
            self.write(WriteJob::Expire(keys, at_ms)).await?;
            self.inner
                .telemetry
                .counters
                .invalidated
                .inc_by(changed as u64);
        }
        if tell_peers {
            self.publish(Message::Invalidate(Invalidate { paths, at_ms }));
        }
        Ok(changed)
    }

    /// The fresh entries of `paths`: a scan of every entry's metadata, off the async
    /// threads (writes are rare next to reads; an index by path would make it cheaper).
    async fn keys_to_invalidate(&self, paths: Vec<String>, at_ms: u64) -> Vec<CacheKey> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            let scanned = store.for_each_meta(|key, meta| {
                if policy::invalidates(&meta, &paths, at_ms) {
                    keys.push(key);
                }
                true
            });
            if let Err(e) = scanned {
                tracing::warn!("invalidation scan failed: {e}");
            }
            keys
        })
        .await
        .unwrap_or_default()
    }
}
