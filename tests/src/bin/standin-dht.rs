//! A stand-in for a public libp2p DHT node, for the NAT lab: Kademlia
//! (`/ipfs/kad/1.0.0`, server), identify, ping, AutoNAT (v1, dialling back the lab's
//! documentation ranges, which libp2p's default would refuse as not global) and a
//! circuit relay (v2) with libp2p's default public limits (2 minutes and 128 KiB per
//! circuit), and gossipsub as public nodes speak it (`/meshsub/…`), writing every topic a
//! peer subscribes to into the `--heard` file: ghmesh's must never appear there; and
//! every circuit its relay ended on an error (`<src> <dst> <error>`, e.g. "Max circuit
//! bytes reached.") into the `--cut` file. Built from libp2p alone,
//! no ghmesh code, so that ghmesh meets in the lab what it would meet on the internet.
//!
//! `standin-dht --listen <multiaddr> [--peer <multiaddr/p2p/id>]… [--rsa-key <pkcs8 der>]`
//! prints `standin <peer id>` once it listens, then runs until killed. With `--rsa-key`
//! its identity is that RSA key, as the oldest public bootstrap nodes' are (`Qm…` ids).

use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, gossipsub, identify, identity, kad, noise, ping, relay, tcp, yamux, Multiaddr,
};

#[derive(NetworkBehaviour)]
struct StandIn {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    relay: relay::Behaviour,
    autonat: autonat::Behaviour,
    gossipsub: gossipsub::Behaviour,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen: Option<Multiaddr> = None;
    let mut peers: Vec<Multiaddr> = Vec::new();
    let mut rsa_key: Option<std::path::PathBuf> = None;
    let mut heard: Option<std::path::PathBuf> = None;
    let mut cut: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--listen" => listen = Some(value.parse()?),
            "--peer" => peers.push(value.parse()?),
            "--rsa-key" => rsa_key = Some(value.into()),
            "--heard" => heard = Some(value.into()),
            "--cut" => cut = Some(value.into()),
            _ => bail!("unknown argument {arg}"),
        }
    }
    let listen = listen.context("--listen is required")?;
    let key = match rsa_key {
        Some(path) => {
            let mut der = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
            identity::Keypair::rsa_from_pkcs8(&mut der)?
        }
        None => identity::Keypair::generate_ed25519(),
    };
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                id,
                kad::store::MemoryStore::new(id),
                kad::Config::new(kad::PROTOCOL_NAME),
            );
            kad.set_mode(Some(kad::Mode::Server));
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::Config::default(),
            )?;
            Ok(StandIn {
                kad,
                identify: identify::Behaviour::new(identify::Config::new(
                    "/ipfs/id/1.0.0".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                relay: relay::Behaviour::new(id, relay::Config::default()),
                gossipsub,
                autonat: autonat::Behaviour::new(
                    id,
                    autonat::Config {
                        only_global_ips: false,
                        ..Default::default()
                    },
                ),
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on(listen.clone())?;
    // A public node knows its address; a relay offers its service only once it does.
    swarm.add_external_address(listen);
    for peer in &peers {
        if let Some(Protocol::P2p(id)) = peer.iter().last() {
            let mut plain = peer.clone();
            plain.pop();
            swarm.behaviour_mut().kad.add_address(&id, plain);
        }
    }
    if !peers.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
    let mut told = false;
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { .. } if !told => {
                told = true;
                println!("standin {}", swarm.local_peer_id());
            }
            // As public DHT servers do: a peer that serves the DHT joins the table.
            SwarmEvent::Behaviour(StandInEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&kad::PROTOCOL_NAME) => {
                for addr in info.listen_addrs {
                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(StandInEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                topic,
            })) => {
                if let Some(path) = &heard {
                    append(path, &format!("{peer_id} {topic}"))?;
                }
            }
            SwarmEvent::Behaviour(StandInEvent::Relay(relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error: Some(e),
            })) => {
                if let Some(path) = &cut {
                    append(path, &format!("{src_peer_id} {dst_peer_id} {e}"))?;
                }
            }
            _ => {}
        }
    }
}

fn append(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")
}
