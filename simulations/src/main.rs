//! `ghmesh-sim`: see `ghmesh-sim --help` and contract §7.

use std::path::PathBuf;

use clap::Parser;
use ghmesh_simulations::{
    plot::plot, run, run_simulated, NetParams, Report, SimConfig, Strategy, Workload,
};

/// Runs many real ghmesh nodes in one process against an in-process fake GitHub that
/// counts calls, replays a workload, and reports what the fleet spent.
#[derive(Parser, Debug)]
#[command(name = "ghmesh-sim", version)]
struct Args {
    /// Nodes in the mesh [default: 20, or the workload's]
    #[arg(long)]
    nodes: Option<usize>,
    /// Distinct GitHub requests in the workload [default: 100, or the workload's]
    #[arg(long)]
    keys: Option<usize>,
    /// How many times every node reads every key, in a shuffled order [default: 3, or the workload's]
    #[arg(long)]
    rounds: Option<usize>,
    /// Nodes start reading spread over this window; 0 = all at once [default: 0, or the workload's]
    #[arg(long)]
    stagger_ms: Option<u64>,
    /// Freshness of entries in seconds [default: 60, or the workload's]
    #[arg(long)]
    ttl: Option<u64>,
    /// local: no P2P; broadcast: announce on fetch only (the push-only design); mesh: everything ghmesh does
    #[arg(long, value_enum, default_value = "mesh")]
    strategy: Strategy,
    /// RNG seed; the same seed gives the same workload
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A member's lookup budget before its latency is measured (the daemon's default);
    /// then it adapts to twice the member's recent slowest answer, 50 ms to 1 s
    #[arg(long, default_value_t = 1000)]
    lookup_timeout_ms: u64,
    /// wall: real nodes on loopback, timed by the wall clock (figures depend on this
    /// machine's cores); simulated: the node's decision layer on a seeded discrete-event
    /// network in simulated time (figures do not; mesh strategy only)
    #[arg(long, value_enum, default_value = "wall")]
    time: TimeMode,
    /// Simulated time: one-way latency between nodes, ms
    #[arg(long, default_value_t = 2.0)]
    latency_ms: f64,
    /// Simulated time: each delay is the mean times a uniform factor in 1 ± jitter
    #[arg(long, default_value_t = 0.5)]
    jitter: f64,
    /// Simulated time: probability that a message is lost
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Simulated time: GitHub's answer time, ms
    #[arg(long, default_value_t = 100.0)]
    upstream_ms: f64,
    /// Simulated time: fraction of the other nodes each node can ever reach (partial views)
    #[arg(long, default_value_t = 1.0)]
    view: f64,
    /// Simulated time: nodes start this far apart, ms
    #[arg(long, default_value_t = 20.0)]
    join_gap_ms: f64,
    /// Simulated time: the fleet shares one token with this many requests left in its
    /// window; GitHub refuses the rest (the rate-limit ledger's experiment)
    #[arg(long)]
    budget: Option<u64>,
    /// Simulated time, with --budget: nodes keep their holds to themselves (the fleet
    /// before the ledger: one refusal per node)
    #[arg(long)]
    no_ledger: bool,
    /// Simulated time, with --budget: every node starts knowing the window's figures (a
    /// budget that ran down while the fleet was up)
    #[arg(long, requires = "budget")]
    budget_known: bool,
    /// Named workload (burst, autoscaler, churn) or a TOML file
    #[arg(long)]
    workload: Option<String>,
    /// Run every strategy for each of these node counts (e.g. 5,20,50) instead of one run
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<usize>,
    /// Write the report as JSON (an array with --sweep)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a chart (.svg or .png)
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Draw --plot from a JSON report written earlier (one report or an array) instead of running
    #[arg(long, requires = "plot")]
    replot: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TimeMode {
    Wall,
    Simulated,
}

fn net_params(args: &Args) -> anyhow::Result<NetParams> {
    let ms = |v: f64, what: &str| {
        anyhow::ensure!(
            v.is_finite() && v >= 0.0,
            "--{what} must be a non-negative number"
        );
        Ok(std::time::Duration::from_secs_f64(v / 1000.0))
    };
    Ok(NetParams {
        latency: ms(args.latency_ms, "latency-ms")?,
        jitter: args.jitter,
        loss: args.loss,
        upstream: ms(args.upstream_ms, "upstream-ms")?,
        view: args.view,
        join_gap: ms(args.join_gap_ms, "join-gap-ms")?,
        budget: args.budget,
        ledger: !args.no_ledger,
        budget_known: args.budget_known,
    })
}

async fn run_one(args: &Args, cfg: SimConfig) -> anyhow::Result<Report> {
    match args.time {
        TimeMode::Wall => run(cfg).await,
        TimeMode::Simulated => {
            anyhow::ensure!(
                cfg.strategy == Strategy::Mesh,
                "--time simulated models the mesh strategy only"
            );
            run_simulated(cfg, net_params(args)?)
        }
    }
}

fn config(args: &Args, workload: &Workload, nodes: Option<usize>, strategy: Strategy) -> SimConfig {
    let mut cfg = SimConfig::from_workload(workload.clone());
    if let Some(n) = nodes.or(args.nodes) {
        cfg.nodes = n;
    }
    if let Some(k) = args.keys {
        cfg.keys = k;
    }
    if let Some(r) = args.rounds {
        cfg.rounds = r;
    }
    if let Some(s) = args.stagger_ms {
        cfg.stagger_ms = s;
    }
    if let Some(t) = args.ttl {
        cfg.ttl = t;
    }
    cfg.strategy = strategy;
    cfg.seed = args.seed;
    cfg.lookup_timeout = std::time::Duration::from_millis(args.lookup_timeout_ms);
    cfg
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let workload = match &args.workload {
        Some(w) => Workload::load(w)?,
        None => Workload::default(),
    };
    let mut reports: Vec<Report> = Vec::new();
    if let Some(json) = &args.replot {
        let text = std::fs::read_to_string(json)?;
        reports = match serde_json::from_str::<Vec<Report>>(&text) {
            Ok(many) => many,
            Err(_) => vec![serde_json::from_str::<Report>(&text)?],
        };
    } else if args.sweep.is_empty() {
        let r = run_one(&args, config(&args, &workload, None, args.strategy)).await?;
        print!("{}", r.summary());
        reports.push(r);
    } else {
        for &n in &args.sweep {
            let strategies: &[Strategy] = match args.time {
                TimeMode::Wall => &[Strategy::Local, Strategy::Broadcast, Strategy::Mesh],
                TimeMode::Simulated => &[Strategy::Mesh],
            };
            for &strategy in strategies {
                let r = run_one(&args, config(&args, &workload, Some(n), strategy)).await?;
                println!("{}", r.summary());
                reports.push(r);
            }
        }
    }
    if let Some(path) = &args.json {
        let text = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(&reports)?
        };
        std::fs::write(path, text)?;
    }
    if let Some(path) = &args.plot {
        plot(path, &reports)?;
    }
    Ok(())
}
