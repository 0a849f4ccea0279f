//! ghmesh node: the libp2p mesh, the cache logic, the GitHub upstream client, the local
//! HTTP API and the CLI.
//!
//! A client's request enters at [`api`] (the local HTTP proxy) or [`cli`] (`ghmesh
//! api`), becomes a [`ghmesh_protocol::CanonicalRequest`], and is read through
//! [`Node::get`]; the rooms of the read path are described in [`node`]. Every decision
//! on that path is a plain function in [`policy`]; time comes from a [`clock::Clock`];
//! every timeout from [`config::Deadlines`].
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod history;
pub mod limits;
pub mod network;
pub mod node;
pub mod placement;
pub mod policy;
pub mod stats;
pub mod upstream;

pub use config::{Deadlines, MeshMode, NodeConfig};
pub use node::{Body, CacheStatus, GetError, Node, NodeError, Served};
