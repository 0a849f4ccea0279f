//! A misbehaving peer for tests, built from the real crates (libp2p, the protocol's
//! sealing) rather than from the node: it speaks ghmesh's request-response protocols
//! and gossip topic, but its codec has no size limit and it answers (or not) however
//! the test says. With the mesh key it passes the hello and becomes a member; without
//! it, it can only subscribe and listen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use ghmesh_node::network::behaviour::GOSSIP_PROTOCOL_PREFIX;
use ghmesh_node::network::codec::{BODY_PROTOCOL, RR_PROTOCOL};
use ghmesh_protocol::{seal, Addressing, Entry, LookupReply, MeshKeys, Message, SealLimits};
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// How the rogue answers requests.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Hellos properly (it holds the key), lookups with `NotFound`.
    Member,
    /// Hellos properly; every lookup with `Found` for this entry (whatever was asked).
    FoundOther(Box<Entry>),
    /// Never answers anything (a peer without the key that stays silent).
    Silent,
}

/// Length-prefixed frames with no limit: the rogue may send what a node never would.
#[derive(Debug, Clone, Copy, Default)]
struct AnyCodec;

async fn read_any<T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_any<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> std::io::Result<()> {
    io.write_all(&(data.len() as u32).to_be_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl request_response::Codec for AnyCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_any(io).await
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_any(io).await
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        write_any(io, &req).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()> {
        write_any(io, &res).await
    }
}

#[derive(NetworkBehaviour)]
struct RogueBehaviour {
    rr: request_response::Behaviour<AnyCodec>,
    body: request_response::Behaviour<AnyCodec>,
    gossipsub: gossipsub::Behaviour,
    ping: ping::Behaviour,
}

/// Which of the node's request protocols to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// Hellos, lookups, member lists.
    Small,
    /// Body fetches.
    Body,
}

type Reply = oneshot::Sender<Result<Vec<u8>, String>>;

/// Requests a rogue received: who sent them, and the sealed bytes.
pub type Captured = Arc<Mutex<Vec<(PeerId, Vec<u8>)>>>;

enum Cmd {
    Dial(Multiaddr),
    Request(PeerId, Proto, Vec<u8>, Reply),
    Publish(Vec<u8>, oneshot::Sender<Result<(), String>>),
}

/// A running rogue peer.
pub struct Rogue {
    peer_id: PeerId,
    keys: MeshKeys,
    cmds: mpsc::Sender<Cmd>,
    /// Requests received (sealed bytes, with who sent them), for replaying.
    pub captured: Captured,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Rogue {
    /// Starts a rogue that seals with `keys` and subscribes to `topic`, listening on
    /// loopback.
    pub async fn start(keys: MeshKeys, topic: &str, answer: Answer) -> anyhow::Result<Rogue> {
        let key = identity::Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let mut swarm: Swarm<RogueBehaviour> = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| {
                let cfg = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Anonymous)
                    .protocol_id_prefix(GOSSIP_PROTOCOL_PREFIX)
                    .message_id_fn(|m: &gossipsub::Message| {
                        gossipsub::MessageId::from(Sha256::digest(&m.data)[..20].to_vec())
                    })
                    .max_transmit_size(1 << 20)
                    .heartbeat_interval(Duration::from_millis(200))
                    .flood_publish(true)
                    .build()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let gossipsub =
                    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, cfg)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                let rr_cfg = request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30));
                Ok(RogueBehaviour {
                    rr: request_response::Behaviour::with_codec(
                        AnyCodec,
                        [(RR_PROTOCOL, ProtocolSupport::Full)],
                        rr_cfg.clone(),
                    ),
                    body: request_response::Behaviour::with_codec(
                        AnyCodec,
                        [(BODY_PROTOCOL, ProtocolSupport::Full)],
                        rr_cfg,
                    ),
                    gossipsub,
                    ping: ping::Behaviour::default(),
                })
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        let topic = IdentTopic::new(topic);
        swarm.behaviour_mut().gossipsub.subscribe(&topic)?;
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let (tx, rx) = mpsc::channel(256);
        let captured = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(
            swarm,
            topic,
            rx,
            keys.clone(),
            answer,
            captured.clone(),
        ));
        Ok(Rogue {
            peer_id,
            keys,
            cmds: tx,
            captured,
            task,
        })
    }

    /// The rogue's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Dials a node.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.cmds.send(Cmd::Dial(addr)).await;
    }

    /// Seals `msg` with the rogue's keys, now.
    pub fn seal(&self, msg: &Message) -> Vec<u8> {
        seal(&self.keys, msg, now_secs())
    }

    /// Addressing from the rogue to `to` with `nonce`.
    pub fn addressing(&self, to: PeerId, nonce: u64) -> Addressing {
        Addressing {
            from: self.peer_id.to_bytes().into(),
            to: to.to_bytes().into(),
            nonce,
        }
    }

    /// Sends raw bytes as a request and waits for the raw answer.
    pub async fn request(
        &self,
        to: PeerId,
        proto: Proto,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request(to, proto, data, tx))
            .await
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|e| e.to_string())?
    }

    /// Sends a request and opens the answer.
    pub async fn ask(&self, to: PeerId, msg: &Message) -> Result<Message, String> {
        let proto = match msg {
            Message::FetchBody(_) => Proto::Body,
            _ => Proto::Small,
        };
        let raw = self.request(to, proto, self.seal(msg)).await?;
        let limits = SealLimits {
            max_len: 64 << 20,
            max_age_secs: 300,
        };
        ghmesh_protocol::open(&self.keys, &raw, limits, now_secs()).map_err(|e| e.to_string())
    }

    /// Publishes raw bytes on the topic.
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Publish(data, tx))
            .await
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|e| e.to_string())?
    }
}

async fn run(
    mut swarm: Swarm<RogueBehaviour>,
    topic: IdentTopic,
    mut cmds: mpsc::Receiver<Cmd>,
    keys: MeshKeys,
    answer: Answer,
    captured: Captured,
) {
    let mut pending: std::collections::HashMap<(Proto, OutboundRequestId), Reply> =
        std::collections::HashMap::new();
    // Silent rogues keep the channels (never answering) until the asker gives up.
    let mut held = Vec::new();
    let limits = SealLimits {
        max_len: 64 << 20,
        max_age_secs: 300,
    };
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(Cmd::Dial(a)) => { let _ = swarm.dial(a); }
                Some(Cmd::Request(to, proto, data, reply)) => {
                    let id = match proto {
                        Proto::Small => swarm.behaviour_mut().rr.send_request(&to, data),
                        Proto::Body => swarm.behaviour_mut().body.send_request(&to, data),
                    };
                    pending.insert((proto, id), reply);
                }
                Some(Cmd::Publish(data, reply)) => {
                    let r = swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic.clone(), data)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
            },
            ev = swarm.select_next_some() => {
                let (proto, ev) = match ev {
                    SwarmEvent::Behaviour(RogueBehaviourEvent::Rr(ev)) => (Proto::Small, ev),
                    SwarmEvent::Behaviour(RogueBehaviourEvent::Body(ev)) => (Proto::Body, ev),
                    _ => continue,
                };
                match ev {
                    request_response::Event::Message { peer, message, .. } => match message {
                        request_response::Message::Request { request, channel, .. } => {
                            if let Ok(mut c) = captured.lock() {
                                c.push((peer, request.clone()));
                            }
                            let opened = ghmesh_protocol::open(&keys, &request, limits, now_secs());
                            let reply = match (&answer, opened) {
                                (Answer::Silent, _) | (_, Err(_)) => None,
                                (_, Ok(Message::Hello(h))) => Some(Message::HelloReply(ghmesh_protocol::Hello {
                                    addr: h.addr.reversed(),
                                    reach: ghmesh_protocol::Reach::Unknown,
                                    direct_to_all: None,
                                    ledger: Vec::new(),
                                    spends: None,
                                })),
                                (Answer::FoundOther(e), Ok(Message::Lookup(_))) => Some(
                                    Message::LookupReply(LookupReply::Found(Box::new(
                                        ghmesh_protocol::Announce::of(e),
                                    ))),
                                ),
                                (_, Ok(Message::Lookup(_))) => {
                                    Some(Message::LookupReply(LookupReply::NotFound))
                                }
                                (_, Ok(Message::Members(_))) => {
                                    Some(Message::MemberList(ghmesh_protocol::MemberList {
                                        members: Vec::new(),
                                    }))
                                }
                                _ => None,
                            };
                            match reply {
                                Some(m) => {
                                    let bytes = seal(&keys, &m, now_secs());
                                    let b = swarm.behaviour_mut();
                                    let _ = match proto {
                                        Proto::Small => b.rr.send_response(channel, bytes),
                                        Proto::Body => b.body.send_response(channel, bytes),
                                    };
                                }
                                None => held.push(channel),
                            }
                        }
                        request_response::Message::Response { request_id, response } => {
                            if let Some(r) = pending.remove(&(proto, request_id)) {
                                let _ = r.send(Ok(response));
                            }
                        }
                    },
                    request_response::Event::OutboundFailure { request_id, error, .. } => {
                        if let Some(r) = pending.remove(&(proto, request_id)) {
                            let _ = r.send(Err(error.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
