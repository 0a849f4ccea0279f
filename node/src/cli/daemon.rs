//! `ghmesh node`: resolve settings, start the node and the API, print the ready line,
//! serve until SIGINT/SIGTERM, then finish requests in flight and flush the store.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ghmesh_protocol::MeshKeys;

use super::notify;
use super::settings::{self, EnvLookup};
use super::{CliError, LogFormat, NodeArgs};
use crate::node::NodeError;
use crate::upstream::github::{BudgetRules, GithubClient, GithubConfig};
use crate::{api, Node, NodeConfig};

/// Shorter secrets get a warning: the topic derived from the secret is visible to any
/// peer that connects, so a short one can be guessed offline (one PBKDF2 run, ~70 ms,
/// per guess).
pub const MIN_SECRET_LEN: usize = 16;

/// Everything `ghmesh node` needs, resolved from flags and environment.
#[derive(Debug)]
pub struct DaemonSettings {
    /// Node configuration (keys included when P2P is on).
    pub node: NodeConfig,
    /// API bind address.
    pub api: String,
    /// Host names the API answers to besides loopback and its bound address.
    pub api_hosts: Vec<String>,
    /// What reads with a client's own token do.
    pub client_tokens: api::ClientTokens,
    /// Upstream base URL.
    pub upstream: String,
    /// Where the secret came from, when there is one and P2P is on.
    pub secret_source: Option<settings::SecretSource>,
    /// The secret looks like a per-job Actions token.
    pub job_token_secret: bool,
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    pub weak_secret: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Upstream config (holds the token; its Debug redacts it).
    pub github: GithubConfig,
    /// How rate-limit budgets are named and spent (contract §10).
    pub budgets: BudgetRules,
    /// P2P is on (`--no-p2p`, `CACHE_ENABLE_P2P=false` turn it off).
    pub p2p: bool,
    /// Leave URLs in JSON bodies as GitHub sent them (`--no-rewrite-bodies`,
    /// `GHMESH_REWRITE_BODIES=false`).
    pub no_rewrite_bodies: bool,
}

/// The one line on stdout that says the node is ready (contract §3), fields in the
/// contract's order.
#[derive(serde::Serialize)]
struct ReadyLine {
    event: &'static str,
    peer_id: String,
    api: String,
    listen: Vec<String>,
}

/// Resolves flags and environment (no I/O except reading `--secret-file`).
pub fn resolve(args: &NodeArgs, env: EnvLookup<'_>) -> Result<DaemonSettings, CliError> {
    let data_dir = settings::data_dir(args.data_dir.as_deref(), env);
    let mut node = NodeConfig::new(data_dir);
    node.listen = settings::listen(&args.listen, env)?;
    node.bootstrap = settings::bootstrap(&args.bootstrap, env)?;
    node.external = settings::external(&args.external_addr, env)?;
    node.relay = settings::relay(args.relay.map(Into::into), env)?;
    node.public_dht = settings::public_dht(args.public_dht, &args.public_bootstrap, env)?;
    node.mdns = !(args.no_mdns || settings::env_flag_off(env, "GHMESH_MDNS"));
    node.ttl = settings::ttl(args.ttl, env)?;
    node.graphql_ttl = settings::graphql_ttl(args.graphql_ttl, env)?;
    node.limits = settings::limits(args.max_entries, args.max_bytes, env)?;
    node.upstream_concurrency = settings::upstream_concurrency(args.upstream_concurrency, env)?;
    let p2p = !(args.no_p2p || settings::env_flag_off(env, "CACHE_ENABLE_P2P"));
    let scope = settings::scope(args.repo.as_deref(), env)?;
    let secret = if p2p {
        settings::mesh_secret(args.secret_file.as_deref(), env)?
    } else {
        None
    };
    let job_token_secret = secret
        .as_ref()
        .is_some_and(|(s, _)| settings::looks_like_job_token(s));
    let weak_secret = secret
        .as_ref()
        .is_some_and(|(s, _)| s.len() < MIN_SECRET_LEN);
    let secret_source = secret.as_ref().map(|(_, src)| src.clone());
    node.keys = secret.map(|(s, _)| MeshKeys::derive(s.as_bytes(), &scope));
    let budgets = BudgetRules {
        // Without a mesh, names only this node uses.
        key: node
            .keys
            .as_ref()
            .map_or_else(rand::random, MeshKeys::budget_key),
        repository: (!scope.is_empty()).then(|| scope.clone()),
        reserve: settings::rate_limit_reserve(args.rate_limit_reserve, env)?,
    };
    let upstream = settings::upstream_url(args.upstream.as_deref(), env)?;
    let upstream_timeout = settings::upstream_timeout(args.upstream_timeout, env)?;
    // The node's own deadline sits just above the HTTP client's, so that the client's
    // clearer timeout error is the one reported.
    node.deadlines.upstream = upstream_timeout + Duration::from_secs(1);
    let log_format = match args.log_format {
        Some(f) => f,
        None => match settings::first_env(env, &["GHMESH_LOG_FORMAT"]) {
            Some((_, v)) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some((_, v)) if v.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some((_, v)) => {
                return Err(CliError::usage(format!(
                    "bad GHMESH_LOG_FORMAT '{v}': use text or json"
                )))
            }
            None => LogFormat::Text,
        },
    };
    let github = GithubConfig {
        base_url: upstream.clone(),
        token: settings::upstream_token(env),
        connect_timeout: Duration::from_secs(5).min(upstream_timeout),
        request_timeout: upstream_timeout,
    };
    Ok(DaemonSettings {
        budgets,
        api: settings::api_addr(args.api.as_deref(), env),
        api_hosts: settings::api_hosts(&args.api_host, env)?,
        client_tokens: settings::client_tokens(args.client_tokens.map(Into::into), env)?,
        upstream,
        secret_source,
        job_token_secret,
        weak_secret,
        log_format,
        github,
        node,
        p2p,
        no_rewrite_bodies: args.no_rewrite_bodies
            || settings::env_flag_off(env, "GHMESH_REWRITE_BODIES"),
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p_mdns=warn,libp2p_gossipsub=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Exit code for a start-up failure: all of them are configuration problems the
/// operator must fix (data dir in use or unwritable, bad listen address…).
fn start_error(e: NodeError) -> CliError {
    let hint = match &e {
        NodeError::Network(_) => "; check --listen (is the port already in use?)",
        NodeError::DataDir { .. } | NodeError::Identity { .. } => "; pick a writable --data-dir",
        NodeError::DataDirOwner { .. } => "; use a --data-dir of your own",
        _ => "",
    };
    CliError::usage(format!("{e}{hint}"))
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(args: NodeArgs, env: EnvLookup<'_>) -> Result<(), CliError> {
    let s = resolve(&args, env)?;
    init_logging(s.log_format);
    let github = GithubClient::new(s.github.clone())
        .map_err(|e| CliError::usage(format!("upstream client: {e}")))?
        .with_clock(s.node.clock.clone())
        .with_budgets(s.budgets.clone());
    let node = Node::start(s.node.clone(), Arc::new(github))
        .await
        .map_err(start_error)?;
    let signal = shutdown_signal()?;
    // Said once the node is up, so that a start-up failure is the only line printed.
    say_how_it_meshes(&s);
    let listener = api::bind(&s.api).await.map_err(|e| {
        CliError::usage(format!(
            "cannot bind the API to {}: {e}; pick another --api address",
            s.api
        ))
    })?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| CliError::usage(e.to_string()))?;
    print_ready(&node, api_addr);
    // Under systemd (Type=notify) the unit is "started" only now; elsewhere a no-op.
    sd_notify(notify::READY);
    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let served = api::serve(
        node.clone(),
        listener,
        api::ApiConfig {
            upstream_base: s.upstream.clone(),
            hosts: s.api_hosts.clone(),
            limits: api::ServerLimits::default(),
            client_tokens: s.client_tokens,
            no_rewrite_bodies: s.no_rewrite_bodies,
        },
        stop_on_signal_or_failure(signal, node.clone(), failure.clone()),
    )
    .await;
    tracing::info!("shutting down: flushing the store");
    node.shutdown().await;
    if let Some(reason) = failure.lock().ok().and_then(|f| f.clone()) {
        return Err(CliError::failed(reason));
    }
    served.map_err(|e| CliError::failed(format!("API server failed: {e}")))
}

/// Logs whether the node meshes and the warnings about its secret.
fn say_how_it_meshes(s: &DaemonSettings) {
    match (&s.node.keys, &s.secret_source) {
        (Some(_), Some(src)) => tracing::info!("mesh enabled; secret from {src}"),
        _ if !s.p2p => tracing::info!("P2P disabled: running local-only"),
        _ => tracing::warn!(
            "no mesh secret (--secret-file, GHMESH_SECRET, CACHE_P2P_SHARED_SECRET, GH_TOKEN, GITHUB_TOKEN): running local-only, no P2P"
        ),
    }
    if s.weak_secret {
        tracing::warn!(
            "the mesh secret is shorter than {MIN_SECRET_LEN} bytes: any peer that connects sees the topic derived from it and can guess the secret offline; use a long random one (e.g. openssl rand -hex 32)"
        );
    }
    if s.job_token_secret {
        tracing::warn!(
            "the mesh secret looks like a per-job Actions token (ghs_…): it changes every job, so runners of different jobs will not share; set GHMESH_SECRET to a stable fleet secret (see README)"
        );
    }
}

/// The ready line on stdout (contract §3), flushed, and the same in the log.
fn print_ready(node: &Node, api_addr: std::net::SocketAddr) {
    let ready = ReadyLine {
        event: "ready",
        peer_id: node.peer_id().to_string(),
        api: api_addr.to_string(),
        listen: node.listen_addrs().iter().map(|a| a.to_string()).collect(),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(&ready).unwrap_or_default());
    let _ = out.flush();
    tracing::info!(api = %api_addr, peer_id = %node.peer_id(), "ready");
}

/// Completes on SIGINT/SIGTERM, or when the node's store failed and could not be
/// reopened: that ends the node like a signal does, but with the reason left in
/// `failure` for a non-zero exit (a `std::sync::Mutex`: set once, read after the
/// server ends, never held across an await).
async fn stop_on_signal_or_failure(
    signal: impl std::future::Future<Output = ()>,
    node: Node,
    failure: Arc<std::sync::Mutex<Option<String>>>,
) {
    tokio::select! {
        _ = signal => {}
        reason = node.failed() => {
            tracing::error!("{reason}");
            if let Ok(mut f) = failure.lock() {
                *f = Some(reason);
            }
        }
    }
    sd_notify(notify::STOPPING);
}

/// Tells systemd about our state when it supervises us; a failure is logged, never
/// fatal (the node works the same without a supervisor).
fn sd_notify(state: &str) {
    if let Err(e) = notify::notify(state) {
        tracing::warn!("cannot notify systemd ({state}): {e}");
    }
}

/// Installs the SIGTERM/SIGINT handlers now (before the ready line, so that a supervisor
/// stopping the node right after it is ready gets a clean shutdown, not the default
/// action) and returns the future that completes on the first signal.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| {
        signal(kind).map_err(|e| CliError::failed(format!("cannot install signal handlers: {e}")))
    };
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

#[cfg(test)]
mod tests {
    use super::settings::test_env as env;
    use super::*;

    #[test]
    fn no_secret_means_local_only_and_p2p_off_ignores_the_secret() {
        let s = resolve(&NodeArgs::default(), &env(&[("HOME", "/h")])).unwrap();
        assert!(s.node.keys.is_none());
        let args = NodeArgs {
            no_p2p: true,
            ..Default::default()
        };
        let s = resolve(&args, &env(&[("GHMESH_SECRET", "x")])).unwrap();
        assert!(s.node.keys.is_none());
        let s = resolve(
            &NodeArgs::default(),
            &env(&[("CACHE_ENABLE_P2P", "false"), ("GHMESH_SECRET", "x")]),
        )
        .unwrap();
        assert!(s.node.keys.is_none());
        assert!(
            !s.p2p,
            "resolved once, here: the start-up message reads this"
        );
        assert!(!s.no_rewrite_bodies);
        let s = resolve(
            &NodeArgs::default(),
            &env(&[("GHMESH_REWRITE_BODIES", "false")]),
        )
        .unwrap();
        assert!(s.no_rewrite_bodies && s.p2p);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = resolve(
            &NodeArgs::default(),
            &env(&[
                ("GHMESH_SECRET", "hunter2-fleet"),
                ("GH_TOKEN", "ghp_tokenvalue"),
            ]),
        )
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2-fleet"));
        assert!(!dbg.contains("ghp_tokenvalue"));
        assert!(s.node.keys.is_some());
        assert_eq!(s.github.token.as_deref(), Some("ghp_tokenvalue"));
    }

    #[test]
    fn job_tokens_are_flagged_and_mdns_env_switch() {
        let s = resolve(
            &NodeArgs::default(),
            &env(&[("GITHUB_TOKEN", "ghs_perjob"), ("GHMESH_MDNS", "false")]),
        )
        .unwrap();
        assert!(s.job_token_secret);
        assert!(!s.node.mdns);
    }
}
