//! ghmesh simulations: many real nodes (the daemon's node code) in one process, against
//! the fake GitHub over loopback, replaying seeded workloads, and reporting what the
//! fleet spent upstream and how fast entries spread.

pub mod des;
pub mod plot;
pub mod report;
pub mod sim;
pub mod workload;

pub use des::{run_simulated, NetParams};
pub use report::Report;
pub use sim::{run, SimConfig, Strategy};
pub use workload::Workload;
