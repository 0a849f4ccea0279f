//! ghmesh node: the libp2p mesh, the cache logic, the GitHub upstream client, the local
//! HTTP API and the CLI.

pub mod api;
pub mod cli;
pub mod config;
pub mod network;
pub mod node;
pub mod placement;
pub mod stats;
pub mod upstream;

pub use config::{MeshMode, NodeConfig};
pub use node::{now_ms, Body, CacheStatus, GetError, Node, NodeError, Served};
