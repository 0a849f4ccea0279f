//! Bodies announced without data (over the inline limit) are pulled from their
//! announcer in the background, a few at a time, so that a later read is a local hit.

use std::sync::{Arc, Weak};

use ghmesh_protocol::EntryMeta;
use libp2p::PeerId;
use tokio::sync::{mpsc, Semaphore};

use super::writer::WriteJob;
use super::{Inner, Node};
use crate::limits::PREFETCH_CONCURRENCY;

/// Pulls queued bodies until shutdown, or until the node is gone.
pub(super) async fn run(node: Weak<Inner>, mut rx: mpsc::Receiver<(EntryMeta, PeerId)>) {
    let Some(stopping) = node.upgrade().map(|i| i.tasks.stopping.clone()) else {
        return;
    };
    let permits = Arc::new(Semaphore::new(PREFETCH_CONCURRENCY));
    loop {
        let next = tokio::select! {
            _ = stopping.cancelled() => break,
            next = rx.recv() => next,
        };
        let Some((meta, from)) = next else { break };
        let permit = tokio::select! {
            _ = stopping.cancelled() => break,
            p = permits.clone().acquire_owned() => p,
        };
        let (Ok(permit), Some(inner)) = (permit, node.upgrade()) else {
            break;
        };
        let node = Node { inner };
        let puller = node.clone();
        node.spawn(async move {
            let _permit = permit;
            if puller.still_bodyless(&meta) {
                let budget = puller.deadlines().body_fetch;
                if let Some(entry) = puller.fetch_body(from, &meta, budget).await {
                    let _ = puller.write_background(WriteJob::Merge(entry)).await;
                }
            }
        });
    }
}

impl Node {
    /// Still worth pulling: not stored meanwhile, and still fresh.
    fn still_bodyless(&self, meta: &EntryMeta) -> bool {
        self.inner.signals.is_bodyless(&meta.key()) && meta.is_fresh(self.now_ms())
    }
}
