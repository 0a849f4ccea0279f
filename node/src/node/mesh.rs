//! Everything that exists only with a secret: the network, the keys that seal what
//! crosses it, and what we know and think of each peer.
//!
//! The node's accessors to the peer book and leases are at the end.
//!
//! Every lock here is a `std::sync::Mutex`: each is held for a few map operations
//! and never across an await, so an async lock would only add cost.

use std::sync::Mutex;

use bytes::Bytes;
use ghmesh_protocol::{open, seal, CacheKey, MeshKeys, Message, OpenError, SealLimits};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, Notify};

use super::announce::Unannounced;
use super::reply_cache::ReplyCache;
use super::Node;
use crate::config::NodeConfig;
use crate::network::{self, NetConfig, NetEvent, NetworkHandle};
use crate::policy::book::PeerBook;
use crate::policy::lease::Leases;
use libp2p::PeerId;

/// The network, the keys, and the state kept about peers.
pub(super) struct Mesh {
    pub(super) net: NetworkHandle,
    keys: MeshKeys,
    /// Admission, standing, budgets and nonces of every connected peer.
    book: Mutex<PeerBook>,
    /// Leases granted on keys we own: which member fetches each for the fleet.
    leases: Mutex<Leases>,
    /// Body replies sealed recently, reused for the other members that pull the body.
    replies: Mutex<ReplyCache>,
    /// Woken when a member is admitted (a node's first reads wait for its first one).
    pub(super) admitted: Notify,
    /// Woken when a refusal started a hold: the ledger says so at once.
    pub(super) ledger_urgent: std::sync::Arc<Notify>,
    /// Keys stored while nobody was subscribed to hear their announce.
    unannounced: Mutex<Unannounced>,
}

impl Mesh {
    /// Starts the network with the mesh's keys; the events are the inbound loop's to
    /// read.
    pub(super) async fn start(
        cfg: &NodeConfig,
        keys: &MeshKeys,
        keypair: libp2p::identity::Keypair,
        registry: &mut Registry,
    ) -> Result<(Mesh, mpsc::Receiver<NetEvent>), network::NetError> {
        let deadlines = cfg.deadlines;
        let net_cfg = NetConfig {
            listen: cfg.listen.clone(),
            bootstrap: cfg.bootstrap.clone(),
            external: cfg.external.clone(),
            topic: keys.topic().to_string(),
            rendezvous: keys.rendezvous_key().to_vec(),
            discovery_interval: cfg.discovery_interval,
            public_dht: cfg
                .public_dht
                .clone()
                .map(|bootstrap| network::PublicDhtConfig {
                    bootstrap,
                    base: *keys.public_rendezvous_base(),
                }),
            behaviour: network::behaviour::BehaviourConfig {
                heartbeat: cfg.heartbeat,
                mdns: cfg.mdns,
                mdns_query_interval: cfg.mdns_query_interval,
                provider_ttl: deadlines.provider_ttl,
                ping_interval: deadlines.ping_interval,
                ping_timeout: deadlines.ping_timeout,
                relay: cfg.relay,
                autonat_retry: deadlines.autonat_retry,
                public_dht: cfg.public_dht.is_some(),
            },
        };
        let (net, events) = network::start(keypair, net_cfg, registry).await?;
        let mesh = Mesh {
            net,
            keys: keys.clone(),
            book: Mutex::new(PeerBook::default()),
            leases: Mutex::default(),
            replies: Mutex::default(),
            admitted: Notify::new(),
            ledger_urgent: std::sync::Arc::new(Notify::new()),
            unannounced: Mutex::default(),
        };
        Ok((mesh, events))
    }

    /// Seals `msg` at `now_secs`.
    pub(super) fn seal(&self, msg: &Message, now_secs: u64) -> Vec<u8> {
        seal(&self.keys, msg, now_secs)
    }

    /// Opens `data` within `limits` at `now_secs`.
    pub(super) fn open(
        &self,
        data: &[u8],
        limits: SealLimits,
        now_secs: u64,
    ) -> Result<Message, OpenError> {
        open(&self.keys, data, limits, now_secs)
    }

    /// Runs `f` on the peer book (`None` if a thread panicked holding it).
    pub(super) fn book<R>(&self, f: impl FnOnce(&mut PeerBook) -> R) -> Option<R> {
        Some(f(&mut *self.book.lock().ok()?))
    }

    /// Runs `f` on the leases we granted as owner.
    pub(super) fn leases<R>(&self, f: impl FnOnce(&mut Leases) -> R) -> Option<R> {
        Some(f(&mut *self.leases.lock().ok()?))
    }

    /// A body reply sealed recently for `key` and `cid`.
    pub(super) fn cached_reply(&self, key: &CacheKey, cid: &[u8], now_secs: u64) -> Option<Bytes> {
        self.replies.lock().ok()?.get(key, cid, now_secs)
    }

    /// Keeps a sealed body reply for the other members that pull it.
    pub(super) fn keep_reply(&self, key: CacheKey, cid: &[u8], sealed: Bytes, now_secs: u64) {
        if let Ok(mut c) = self.replies.lock() {
            c.insert(key, cid, sealed, now_secs);
        }
    }

    /// Keeps `key` for the next peer that subscribes.
    pub(super) fn keep_unannounced(&self, key: CacheKey) {
        if let Ok(mut u) = self.unannounced.lock() {
            u.keep(key);
        }
    }

    /// Every key kept unannounced, oldest first; none are left.
    pub(super) fn take_unannounced(&self) -> Vec<CacheKey> {
        self.unannounced
            .lock()
            .map(|mut u| u.take())
            .unwrap_or_default()
    }
}

/// The peer book and leases as the rest of the node reads them: nothing without a
/// mesh.
impl Node {
    /// Runs `f` on the peer book (`None` without a mesh).
    pub(super) fn book<R>(&self, f: impl FnOnce(&mut PeerBook) -> R) -> Option<R> {
        self.inner.mesh.as_ref()?.book(f)
    }

    /// Runs `f` on the leases we granted as owner (`None` without a mesh).
    pub(super) fn leases<R>(
        &self,
        f: impl FnOnce(&mut crate::policy::lease::Leases) -> R,
    ) -> Option<R> {
        self.inner.mesh.as_ref()?.leases(f)
    }

    /// Counts a message that failed its checks and lowers its sender's standing.
    pub(super) fn violated(&self, peer: PeerId) {
        self.inner.telemetry.counters.rejected_messages.inc();
        let now = self.now_ms();
        self.book(|b| b.violated(&peer, now));
    }

    /// Who may own keys now, us among them when we may (see
    /// [`crate::policy::book::PeerBook::owners`]).
    pub(super) fn owners(&self) -> Vec<PeerId> {
        let now = self.now_ms();
        let me = self.inner.me.id;
        self.book(|b| b.owners(me, now)).unwrap_or_else(|| vec![me])
    }

    /// Peers that proved they hold the mesh key and are connected.
    pub fn members(&self) -> Vec<PeerId> {
        self.book(|b| b.members()).unwrap_or_default()
    }
}
