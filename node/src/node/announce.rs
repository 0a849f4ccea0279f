//! Announcing what we store: published in an owned task, and kept when nobody heard.
//!
//! The fleet's first node reads before anyone has joined, and
//! gossipsub drops a publish that no peer is subscribed to. Whoever later owns such a
//! key in the full view would not know to ask us, and would fetch it again. So the keys
//! are kept (bounded) and announced from the store once there is a member to hear them:
//! when one is admitted, and when a peer subscribes while we have one (whichever comes
//! second). A peer that subscribes without being a member takes nothing away: with no
//! member known the keys stay kept.

use ghmesh_protocol::ledger::Ledger;
use ghmesh_protocol::{Announce, CacheKey, Message};

use super::bounded::Bounded;
use super::Node;
use crate::limits::{LEDGER_EVERY, LEDGER_URGENT_GAP, MAX_UNANNOUNCED};

/// Keys stored while no peer was subscribed, oldest first, each once.
pub(super) struct Unannounced {
    keys: Bounded<()>,
}

impl Default for Unannounced {
    fn default() -> Self {
        Self {
            keys: Bounded::new(MAX_UNANNOUNCED, usize::MAX),
        }
    }
}

impl Unannounced {
    /// Keeps `key` (where it was, if kept already); beyond [`MAX_UNANNOUNCED`] the
    /// oldest is forgotten.
    pub(super) fn keep(&mut self, key: CacheKey) {
        if !self.keys.contains_key(&key) {
            self.keys.insert(key, (), 0);
        }
    }

    /// Every key kept, oldest first; none are left.
    pub(super) fn take(&mut self) -> Vec<CacheKey> {
        self.keys.take_keys()
    }
}

impl Node {
    /// Seals and publishes a message in an owned task (sealing is off the reader's
    /// path); without a mesh, nothing.
    pub(super) fn publish(&self, msg: Message) {
        if self.inner.mesh.is_none() {
            return;
        }
        let node = self.clone();
        self.spawn(async move { node.publish_now(&msg).await });
    }

    /// Seals and publishes `msg`. An announce no peer was subscribed to hear is kept
    /// for the first one that subscribes (see [`Node::reannounce`]): the members that come
    /// later need not own the key, and would not know to ask us for it.
    pub(super) async fn publish_now(&self, msg: &Message) {
        if self.publish_news(msg).await.is_some() {
            self.inner.telemetry.counters.announces_sent.inc();
        } else if let Message::Announce(ann) = msg {
            self.keep_unannounced(ann.meta.key());
        }
    }

    /// Seals and publishes `msg`: its sealed size when a peer was subscribed to hear
    /// it.
    async fn publish_news(&self, msg: &Message) -> Option<usize> {
        let (Some(net), Some(data)) = (self.network(), self.seal(msg)) else {
            return None;
        };
        let len = data.len();
        match net.publish(data).await {
            Ok(heard) => heard.then_some(len),
            Err(e) => {
                tracing::debug!("publish failed: {e}");
                None
            }
        }
    }

    /// Keeps `key` for the next peer that subscribes.
    pub(super) fn keep_unannounced(&self, key: CacheKey) {
        if let Some(mesh) = &self.inner.mesh {
            mesh.keep_unannounced(key);
        }
    }

    /// Announces what nobody heard, as it is stored now (an entry since expired or
    /// evicted is not announced; one still unheard is kept again by `publish_now`).
    /// Nothing while we know no member.
    pub(super) fn reannounce(&self) {
        if self.members().is_empty() {
            return;
        }
        let keys = self
            .inner
            .mesh
            .as_ref()
            .map(|m| m.take_unannounced())
            .unwrap_or_default();
        if keys.is_empty() {
            return;
        }
        tracing::debug!(
            keys = keys.len(),
            "announcing what was stored before any peer"
        );
        let node = self.clone();
        self.spawn(async move {
            for key in keys {
                if let Some(e) = node.local_fresh(&key) {
                    node.publish_now(&Message::Announce(Announce::of(&e))).await;
                }
            }
        });
    }
}

/// Gossips what this node learned of the rate-limit budgets it spends: every
/// [`LEDGER_EVERY`], however busy it is, what changed in that time in one message; and
/// at once when a refusal started a hold or a budget is down to the reserve or near
/// its end (then at most every [`LEDGER_URGENT_GAP`]), so that members stop spending
/// the budget before they are refused too (contract §10).
pub(super) async fn ledger(node: std::sync::Weak<super::Inner>) {
    // Only a weak reference between runs: dropping every handle ends the loop too.
    let Some((stopping, Some(urgent), upstream)) = node.upgrade().map(|i| {
        let urgent = i.mesh.as_ref().map(|m| m.ledger_urgent.clone());
        (i.tasks.stopping.clone(), urgent, i.upstream.clone())
    }) else {
        return;
    };
    let mut tick = tokio::time::interval(LEDGER_EVERY);
    loop {
        let was_urgent = tokio::select! {
            _ = stopping.cancelled() => break,
            _ = tick.tick() => false,
            _ = urgent.notified() => true,
            _ = upstream.ledger_wake() => true,
        };
        let Some(inner) = node.upgrade() else { break };
        Node { inner }.publish_ledger().await;
        if was_urgent {
            tokio::time::sleep(LEDGER_URGENT_GAP).await;
        }
    }
}

impl Node {
    /// Publishes what changed in the ledger, if anything did.
    async fn publish_ledger(&self) {
        let entries = self.inner.upstream.ledger_news();
        if entries.is_empty() {
            return;
        }
        let msg = Message::Ledger(Ledger {
            entries,
            spender: Some(ghmesh_protocol::ledger::ByteBuf::from(
                self.peer_id().to_bytes(),
            )),
        });
        if let Some(bytes) = self.publish_news(&msg).await {
            let counters = &self.inner.telemetry.counters;
            counters.ledger_sent.inc();
            counters.ledger_bytes_sent.inc_by(bytes as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> CacheKey {
        CacheKey([i; 32])
    }

    #[test]
    fn keeps_each_key_once_and_forgets_the_oldest_beyond_the_bound() {
        let mut u = Unannounced::default();
        u.keep(key(1));
        u.keep(key(2));
        u.keep(key(1));
        assert_eq!(u.take(), vec![key(1), key(2)]);
        assert!(u.take().is_empty(), "taking leaves nothing");

        for i in 0..=MAX_UNANNOUNCED {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            u.keep(CacheKey(b));
        }
        let kept = u.take();
        assert_eq!(kept.len(), MAX_UNANNOUNCED);
        let mut first = [0u8; 32];
        first[..8].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(kept[0], CacheKey(first), "key 0 was forgotten");
    }
}
