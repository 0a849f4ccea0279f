//! Test support for ghmesh: an in-memory upstream, a fake GitHub HTTP server, and
//! helpers that start real nodes on loopback.

pub mod daemon;
pub mod fake_github;
pub mod fake_upstream;
pub mod harness;
pub mod lab;
pub mod rogue;
