//! The `ghmesh` command line (contract §1, §3, §5).

pub(crate) mod api_cmd;
pub(crate) mod daemon;
mod gh_format;
mod graphql_cmd;
mod info;
pub mod jq;
mod jq_render;
mod notify;
pub(crate) mod settings;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A failure with its exit code: 1 the request failed, 2 usage or configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Process exit code.
    pub code: u8,
    /// One line: what was wrong and what to do.
    pub message: String,
}

impl CliError {
    /// Usage or configuration error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// The request failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// The trust model, in `ghmesh node --help` (README: "Trust model").
const TRUST_MODEL: &str =
    "Trust model: holding the fleet secret (and scope) means being allowed to read \
what any fleet token can read: an answer fetched with one member's or one local client's token is \
served to every member and every local client, so every upstream token of one fleet must have the \
same read access (give fleets with different access different secrets or scopes). Answers that \
differ per token (/user, /notifications, /rate_limit, /installation, /app, ...) and errors are \
never shared. The node's token is used only for cacheable reads.";

/// `ghmesh --version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GHMESH_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "ghmesh",
    version = VERSION,
    about = "A shared GitHub API cache for CI fleets: a local proxy and a `gh api`-like CLI, \
             backed by an embedded store and an encrypted peer-to-peer mesh."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: local HTTP API, cache store, and the mesh.
    #[command(after_help = TRUST_MODEL)]
    Node(NodeArgs),
    /// Make a GitHub API request through the local node (like `gh api`).
    Api(ApiArgs),
    /// Show the node's counters.
    Stats(StatsArgs),
    /// Show the node's peers.
    Peers(StatsArgs),
    /// Print this node's peer id and the addresses to give others as --bootstrap.
    Id(IdArgs),
    /// Watch the node's counters live.
    Monitor(MonitorArgs),
    /// Print the URL of the node's status page (members, requests by outcome, calls
    /// saved, rate-limit budgets, the last hour).
    Dashboard(DashboardArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `ghmesh node`. Each flag's environment variables are listed in its help;
/// the first one set wins, and the flag wins over all of them.
#[derive(Args, Debug, Default, Clone)]
pub struct NodeArgs {
    /// Directory of the cache store and the peer identity
    /// [env: GHMESH_DATA_DIR, CACHE_DIR] [default: $XDG_CACHE_HOME/ghmesh or ~/.cache/ghmesh]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Multiaddr to listen on for peers, repeatable; port 0 picks a free port
    /// [env: GHMESH_LISTEN (comma-separated), CACHE_LISTEN_PORT (TCP and QUIC port)]
    /// [default: /ip4/0.0.0.0/tcp/9100 and /ip4/0.0.0.0/udp/9100/quic-v1]
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Address of the local HTTP API; port 0 picks a free port [env: GHMESH_API] [default: 127.0.0.1:7711]
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Host name the API answers to besides loopback names and its bound address
    /// (requests naming any other Host get 421, other Origins 403), repeatable
    /// [env: GHMESH_API_HOST (comma-separated)]
    #[arg(long, value_name = "NAME")]
    pub api_host: Vec<String>,
    /// What a cacheable GET carrying the client's own token does: share (served from
    /// the fleet cache; a miss is fetched with the client's token and a 200 is shared)
    /// or bypass (passed through, never cached) [env: GHMESH_CLIENT_TOKENS] [default: share]
    #[arg(long, value_name = "MODE")]
    pub client_tokens: Option<ClientTokensArg>,
    /// Most requests in flight to GitHub at once; beyond 32 per slot waiting, requests
    /// get 503 and retry-after [env: GHMESH_UPSTREAM_CONCURRENCY] [default: 8]
    #[arg(long, value_name = "N")]
    pub upstream_concurrency: Option<usize>,
    /// Leave URLs in JSON bodies as GitHub sent them instead of pointing them back at
    /// this API [env: GHMESH_REWRITE_BODIES=false]
    #[arg(long)]
    pub no_rewrite_bodies: bool,
    /// Peer multiaddr to join through, repeatable: with a peer id
    /// (/ip4/<ip>/tcp/9100/p2p/<id>, as `ghmesh id` prints) it is dialled as is; a DNS
    /// name without /p2p (/dns4/<name>/tcp/9100, also /dns6, /dns) dials every address
    /// the name resolves to and re-resolves it periodically, so a Kubernetes headless
    /// Service is enough [env: GHMESH_BOOTSTRAP, CACHE_BOOTSTRAP_PEERS (comma-separated)]
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Disable mDNS discovery on the LAN [env: GHMESH_MDNS=false]
    #[arg(long)]
    pub no_mdns: bool,
    /// Run local-only, without the mesh [env: CACHE_ENABLE_P2P=false]
    #[arg(long)]
    pub no_p2p: bool,
    /// GitHub API base URL [env: GHMESH_UPSTREAM, GITHUB_API_URL] [default: https://api.github.com]
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Freshness of every entry in seconds, instead of per-endpoint defaults
    /// [env: GHMESH_TTL, CACHE_DEFAULT_TTL]
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Freshness of GraphQL answers in seconds [env: GHMESH_GRAPHQL_TTL] [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub graphql_ttl: Option<u64>,
    /// Stop spending a rate-limit budget on cache misses when the fleet's remaining
    /// falls to N, keeping N requests for people sharing the token
    /// [env: GHMESH_RATE_LIMIT_RESERVE] [default: 0]
    #[arg(long, value_name = "N")]
    pub rate_limit_reserve: Option<u64>,
    /// Most entries kept [env: GHMESH_MAX_ENTRIES, CACHE_MAX_SIZE] [default: 100000]
    #[arg(long, value_name = "N")]
    pub max_entries: Option<u64>,
    /// Most bytes kept [env: GHMESH_MAX_BYTES] [default: 1073741824]
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// File holding the mesh secret (else $GHMESH_SECRET, $CACHE_P2P_SHARED_SECRET,
    /// $GH_TOKEN, $GITHUB_TOKEN; none means local-only)
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// Mesh scope: only nodes with the same secret and repository share
    /// [env: GHMESH_REPO, GITHUB_REPOSITORY] [default: one scope for the whole secret]
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// Extra address to advertise to peers (e.g. a port forwarded to this node),
    /// repeatable [env: GHMESH_EXTERNAL_ADDR, GHMESH_EXTERNAL (comma-separated)]
    #[arg(long, value_name = "MULTIADDR")]
    pub external_addr: Vec<String>,
    /// Serve as a circuit relay for fleet members behind NAT: auto (while members find
    /// this node publicly reachable), on (always: a hub on a public VM) or off
    /// [env: GHMESH_RELAY] [default: auto]
    #[arg(long, value_enum, value_name = "MODE")]
    pub relay: Option<RelayArg>,
    /// Find the fleet through the public libp2p DHT (/ipfs/kad/1.0.0) as a rendezvous:
    /// one key derived from the secret and scope, changing every hour, is provided and
    /// looked up; nothing else goes to public nodes. Off by default
    /// [env: GHMESH_PUBLIC_DHT=true]
    #[arg(long)]
    pub public_dht: bool,
    /// Where to enter the public DHT (with --public-dht), repeatable; each address ends
    /// in /p2p/<peer id> [env: GHMESH_PUBLIC_BOOTSTRAP (comma-separated)]
    /// [default: the public libp2p bootstrap nodes]
    #[arg(long, value_name = "MULTIADDR")]
    pub public_bootstrap: Vec<String>,
    /// Whole-request timeout for GitHub, in seconds [env: GHMESH_UPSTREAM_TIMEOUT] [default: 15]
    #[arg(long, value_name = "SECONDS")]
    pub upstream_timeout: Option<u64>,
    /// Log format on stderr (filter with RUST_LOG) [env: GHMESH_LOG_FORMAT] [default: text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// `--relay`, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RelayArg {
    /// While members find this node publicly reachable.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl From<RelayArg> for crate::network::RelayMode {
    fn from(a: RelayArg) -> Self {
        match a {
            RelayArg::Auto => Self::Auto,
            RelayArg::On => Self::On,
            RelayArg::Off => Self::Off,
        }
    }
}

/// `--client-tokens`, as typed (the API's own type knows nothing of the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientTokensArg {
    /// Served from the fleet cache; a miss is fetched with the client's token and a
    /// 200 is shared; errors go back to that client only.
    Share,
    /// Passed through untouched, never cached (`x-ghmesh-cache: bypass`).
    Bypass,
}

impl From<ClientTokensArg> for crate::api::ClientTokens {
    fn from(arg: ClientTokensArg) -> Self {
        match arg {
            ClientTokensArg::Share => Self::Share,
            ClientTokensArg::Bypass => Self::Bypass,
        }
    }
}

/// Flags of `ghmesh api`.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// GitHub API path, e.g. repos/{owner}/{repo}/actions/runs ({owner} and {repo} come
    /// from GHMESH_REPO or GITHUB_REPOSITORY). The node is found at GHMESH_API
    /// (default 127.0.0.1:7711); with no node running, works alone on the local store.
    pub endpoint: String,
    /// HTTP method [default: GET, or POST when fields are given]
    #[arg(short = 'X', long, value_name = "METHOD")]
    pub method: Option<String>,
    /// Request header "Key: Value", repeatable
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE")]
    pub headers: Vec<String>,
    /// String parameter key=value, repeatable (query parameter on GET, JSON body otherwise)
    #[arg(short = 'f', long = "raw-field", value_name = "KEY=VALUE")]
    pub raw_fields: Vec<String>,
    /// Typed parameter key=value: true, false, null and integers become JSON values;
    /// @file reads a file; repeatable
    #[arg(short = 'F', long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// Filter the response with a jq expression (built in, no external jq)
    #[arg(short = 'q', long, value_name = "EXPR")]
    pub jq: Option<String>,
    /// Fetch every page (following Link: rel="next", per_page=100 unless given); JSON
    /// arrays are merged, except with -i, where each page prints after its headers
    #[arg(long)]
    pub paginate: bool,
    /// Print the HTTP status line and headers before the body
    #[arg(short = 'i', long)]
    pub include: bool,
    /// Serve a cached answer only if fetched within this long, and then even if expired,
    /// as gh's flag of that name (e.g. 3600s, 60m, 1h30m; 0s always asks again)
    #[arg(long, value_name = "DURATION")]
    pub cache: Option<String>,
}

/// Flags of `ghmesh stats` and `ghmesh peers`.
#[derive(Args, Debug, Clone)]
pub struct StatsArgs {
    /// Print JSON as the API returns it
    #[arg(long)]
    pub json: bool,
}

/// Flags of `ghmesh id`.
#[derive(Args, Debug, Clone)]
pub struct IdArgs {
    /// Data dir to read the identity from when no node answers
    /// [env: GHMESH_DATA_DIR, CACHE_DIR]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Flags of `ghmesh monitor`.
#[derive(Args, Debug, Clone)]
pub struct MonitorArgs {
    /// Seconds between refreshes
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub interval: f64,
    /// Print one snapshot and exit
    #[arg(long)]
    pub once: bool,
}

/// Flags of `ghmesh dashboard`.
#[derive(Args, Debug, Clone)]
pub struct DashboardArgs {
    /// Also open the page in a browser (with xdg-open, open or sensible-browser, where
    /// one is installed)
    #[arg(long)]
    pub open: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ghmesh: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let result = rt.block_on(async {
        match cli.command {
            Command::Node(args) => daemon::run(args, &env).await,
            Command::Api(args) => api_cmd::run(args, &env).await,
            Command::Stats(args) => info::stats(args, &env).await,
            Command::Peers(args) => info::peers(args, &env).await,
            Command::Id(args) => info::id(args, &env).await,
            Command::Dashboard(args) => info::dashboard(args.open, &env).await,
            Command::Monitor(args) => {
                if !(args.interval.is_finite() && args.interval >= 0.1) {
                    return Err(CliError::usage("--interval must be at least 0.1 seconds"));
                }
                info::monitor(Duration::from_secs_f64(args.interval), args.once, &env).await
            }
        }
    });
    // Background tasks (network, writer) must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ghmesh: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
