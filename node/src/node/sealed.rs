//! Talking to peers: sealing and opening (with whom a failure counts against), asking
//! a peer and opening its answer, request addressing.

use ghmesh_protocol::{Addressing, Message, OpenError, PeerRules, SealLimits};
use libp2p::PeerId;

use super::Node;
use crate::limits::{GOSSIP_MAX_AGE_SECS, MAX_SMALL_FRAME, REQUEST_MAX_AGE_SECS};
use crate::network;

/// A peer request that got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoAnswer {
    /// Nothing came back in time (or there is no mesh).
    Silent,
    /// Not sent: we reach the peer only through public relays, which carry membership
    /// only. No fault of the peer's.
    NotCarried,
}

/// What `msg` carries: hellos and member lists are how runners meet (any relay carries
/// them); everything else is the fleet's own.
pub(super) fn traffic_of(msg: &Message) -> network::Traffic {
    match msg {
        Message::Hello(_)
        | Message::HelloReply(_)
        | Message::Members(_)
        | Message::MemberList(_) => network::Traffic::Membership,
        _ => network::Traffic::Fleet,
    }
}

impl Node {
    /// Seals a message for the mesh (`None` without one).
    pub(super) fn seal(&self, msg: &Message) -> Option<Vec<u8>> {
        let mesh = self.inner.mesh.as_ref()?;
        Some(mesh.seal(msg, self.clock().now_secs()))
    }

    pub(super) fn open_sealed(
        &self,
        data: &[u8],
        max_len: usize,
        max_age_secs: u64,
    ) -> Option<Result<Message, OpenError>> {
        let mesh = self.inner.mesh.as_ref()?;
        let limits = SealLimits {
            max_len,
            max_age_secs,
        };
        Some(mesh.open(data, limits, self.clock().now_secs()))
    }

    /// Opens gossip. What fails is counted and rejected, and nobody is blamed: the peer
    /// that forwarded it may only have relayed it.
    pub(super) fn open_gossip(&self, data: &[u8]) -> Option<Message> {
        match self.open_sealed(data, crate::limits::MAX_GOSSIP_FRAME, GOSSIP_MAX_AGE_SECS)? {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!("rejected gossip: {e}");
                self.inner.telemetry.counters.rejected_messages.inc();
                None
            }
        }
    }

    /// Opens what `peer` itself sent us (a request or a reply); a failure counts against
    /// it, except for clock skew alone.
    pub(super) fn open_direct(
        &self,
        peer: PeerId,
        data: &[u8],
        max_len: usize,
        max_age: u64,
    ) -> Option<Message> {
        match self.open_sealed(data, max_len, max_age)? {
            Ok(m) => Some(m),
            Err(e @ (OpenError::Expired | OpenError::FromFuture)) => {
                tracing::debug!(%peer, "peer message outside the clock window: {e}");
                self.inner.telemetry.counters.rejected_messages.inc();
                None
            }
            Err(e) => {
                tracing::debug!(%peer, "rejected peer message: {e}");
                self.violated(peer);
                None
            }
        }
    }

    /// Opens a reply from `peer`.
    pub(super) fn open_reply(&self, peer: PeerId, data: &[u8], max_len: usize) -> Option<Message> {
        self.open_direct(peer, data, max_len, GOSSIP_MAX_AGE_SECS)
    }

    /// Seals `msg` for `peer`, sends it on `channel` and opens the answer (at most
    /// `max_len`). `Err`: see [`NoAnswer`]; `Ok(None)`: an answer that failed to open, already counted against `peer`.
    pub(super) async fn ask(
        &self,
        peer: PeerId,
        channel: network::Channel,
        msg: &Message,
        timeout: std::time::Duration,
        max_len: usize,
    ) -> Result<Option<Message>, NoAnswer> {
        let (Some(net), Some(data)) = (self.network(), self.seal(msg)) else {
            return Err(NoAnswer::Silent);
        };
        let resp = net
            .request(peer, channel, traffic_of(msg), data, timeout)
            .await
            .map_err(|e| match e {
                network::NetError::PublicRelay => NoAnswer::NotCarried,
                _ => NoAnswer::Silent,
            })?;
        Ok(self.open_reply(peer, &resp, max_len))
    }

    /// Opens a request from `peer`: sealed within the request window, addressed from
    /// `peer` to us. The nonce is checked by the caller (it needs the book).
    pub(super) fn open_request(&self, peer: PeerId, data: &[u8]) -> Option<Message> {
        let msg = self.open_direct(peer, data, MAX_SMALL_FRAME, REQUEST_MAX_AGE_SECS)?;
        let addressed = msg
            .addressing()
            .is_some_and(|a| a.is_between(&peer.to_bytes(), &self.inner.me.id.to_bytes()));
        if !addressed {
            // A request captured elsewhere and replayed to us, or not a request at all.
            tracing::debug!(%peer, "request not addressed from its sender to us");
            self.violated(peer);
            return None;
        }
        Some(msg)
    }

    /// Addressing for a request to `to`, with a fresh nonce.
    pub(super) fn address(&self, to: PeerId) -> Addressing {
        Addressing {
            from: self.inner.me.id.to_bytes().into(),
            to: to.to_bytes().into(),
            nonce: rand::random(),
        }
    }

    /// What this node applies to entries peers send.
    pub(super) fn peer_rules(&self) -> PeerRules<'_> {
        PeerRules {
            ttl: self.inner.cfg.ttl_settings(),
            upstream_base: self.inner.upstream.base(),
        }
    }
}
