//! Turning flags and environment variables into settings (contract §2 and §3). Pure:
//! the environment is passed in as a lookup function, so every rule is unit-tested.

use std::path::{Path, PathBuf};

use ghmesh_store::Limits;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use super::CliError;

/// Looks up an environment variable.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// First variable of `names` that is set and not empty: (name, value).
pub fn first_env(env: EnvLookup<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
}

/// A boolean variable: false for `false`, `0`, `no`, `off` (any case).
pub fn env_flag_off(env: EnvLookup<'_>, name: &str) -> bool {
    env(name).is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    })
}

/// Where the mesh secret came from (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `--secret-file`.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "--secret-file {}", p.display()),
            Self::Env(n) => write!(f, "${n}"),
        }
    }
}

/// The mesh secret: `--secret-file`, `GHMESH_SECRET`, `CACHE_P2P_SHARED_SECRET`,
/// `GH_TOKEN`, `GITHUB_TOKEN`; first found wins.
pub fn mesh_secret(
    secret_file: Option<&Path>,
    env: EnvLookup<'_>,
) -> Result<Option<(String, SecretSource)>, CliError> {
    if let Some(path) = secret_file {
        let raw = std::fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!(
                "cannot read --secret-file {}: {e}; give a readable file holding the fleet secret",
                path.display()
            ))
        })?;
        let secret = raw.trim_end_matches(['\n', '\r']).to_string();
        if secret.trim().is_empty() {
            return Err(CliError::usage(format!(
                "--secret-file {} is empty; put the fleet secret in it",
                path.display()
            )));
        }
        return Ok(Some((secret, SecretSource::File(path.to_path_buf()))));
    }
    Ok(first_env(
        env,
        &[
            "GHMESH_SECRET",
            "CACHE_P2P_SHARED_SECRET",
            "GH_TOKEN",
            "GITHUB_TOKEN",
        ],
    )
    .map(|(name, v)| (v, SecretSource::Env(name))))
}

/// The upstream token: `GH_TOKEN`, `GITHUB_TOKEN`.
pub fn upstream_token(env: EnvLookup<'_>) -> Option<String> {
    first_env(env, &["GH_TOKEN", "GITHUB_TOKEN"]).map(|(_, v)| v.trim().to_string())
}

/// The mesh scope: `--repo`, `GHMESH_REPO`, `GITHUB_REPOSITORY`; empty means the whole
/// secret is one scope.
pub fn scope(repo: Option<&str>, env: EnvLookup<'_>) -> Result<String, CliError> {
    let value = match repo {
        Some(r) => r.to_string(),
        None => first_env(env, &["GHMESH_REPO", "GITHUB_REPOSITORY"])
            .map(|(_, v)| v)
            .unwrap_or_default(),
    };
    let value = value.trim().to_string();
    if !value.is_empty() {
        let ok = value.split('/').count() == 2
            && value.split('/').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !ok {
            return Err(CliError::usage(format!(
                "bad repository scope '{value}': expected OWNER/NAME"
            )));
        }
    }
    Ok(value)
}

/// A per-job Actions token changes every job: runners of different jobs would not share.
pub fn looks_like_job_token(secret: &str) -> bool {
    secret.starts_with("ghs_")
}

/// `$XDG_CACHE_HOME/ghmesh`, else `~/.cache/ghmesh`.
pub fn default_data_dir(env: EnvLookup<'_>) -> PathBuf {
    if let Some(x) = env("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("ghmesh");
    }
    let home = env("HOME")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("ghmesh")
}

/// `--data-dir`, `GHMESH_DATA_DIR`, `CACHE_DIR`, else the default.
pub fn data_dir(flag: Option<&Path>, env: EnvLookup<'_>) -> PathBuf {
    match flag {
        Some(p) => p.to_path_buf(),
        None => first_env(env, &["GHMESH_DATA_DIR", "CACHE_DIR"])
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| default_data_dir(env)),
    }
}

/// `--upstream`, `GHMESH_UPSTREAM`, `GITHUB_API_URL`, else `https://api.github.com`.
pub fn upstream_url(flag: Option<&str>, env: EnvLookup<'_>) -> Result<String, CliError> {
    let (source, v) = match flag {
        Some(v) => ("--upstream", v.to_string()),
        None => first_env(env, &["GHMESH_UPSTREAM", "GITHUB_API_URL"])
            .unwrap_or(("default", "https://api.github.com".into())),
    };
    let parsed = url::Url::parse(v.trim()).map_err(|e| {
        CliError::usage(format!(
            "bad upstream URL '{v}' ({source}): {e}; expected e.g. https://api.github.com"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CliError::usage(format!(
            "bad upstream URL '{v}' ({source}): use http or https"
        )));
    }
    Ok(v.trim().trim_end_matches('/').to_string())
}

/// The local API address: `--api`, `GHMESH_API`, else `127.0.0.1:7711`.
pub fn api_addr(flag: Option<&str>, env: EnvLookup<'_>) -> String {
    flag.map(str::to_string)
        .or_else(|| first_env(env, &["GHMESH_API"]).map(|(_, v)| v))
        .unwrap_or_else(|| "127.0.0.1:7711".into())
        .trim()
        .to_string()
}

/// Extra API host names: `--api-host`…, `GHMESH_API_HOST` (comma-separated).
pub fn api_hosts(flags: &[String], env: EnvLookup<'_>) -> Result<Vec<String>, CliError> {
    let Some((values, what)) = flags_or_env(flags, "--api-host", env, &["GHMESH_API_HOST"]) else {
        return Ok(Vec::new());
    };
    comma_list(&values, |v| {
        let ok = v.len() <= 253
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if ok {
            Ok(v.to_ascii_lowercase())
        } else {
            Err(CliError::usage(format!(
                "bad {what} '{v}': give a host name without scheme or port, e.g. ghmesh-api.ci.svc"
            )))
        }
    })
}

/// A repeatable flag's values, else the first of `names` set (one comma-separated
/// value), with the name to put in error messages.
fn flags_or_env<'a>(
    flags: &[String],
    flag: &'a str,
    env: EnvLookup<'_>,
    names: &[&'static str],
) -> Option<(Vec<String>, &'a str)> {
    if !flags.is_empty() {
        return Some((flags.to_vec(), flag));
    }
    first_env(env, names).map(|(name, v)| (vec![v], name))
}

/// Every comma-separated, non-empty item of `values`, parsed.
fn comma_list<T>(
    values: &[String],
    parse: impl Fn(&str) -> Result<T, CliError>,
) -> Result<Vec<T>, CliError> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(parse)
        .collect()
}

fn parse_addrs(values: &[String], what: &str) -> Result<Vec<Multiaddr>, CliError> {
    comma_list(values, |v| {
        v.parse::<Multiaddr>().map_err(|e| {
            CliError::usage(format!(
                "bad {what} address '{v}': {e}; expected a multiaddr like /ip4/10.0.0.5/tcp/9100/p2p/12D3Koo…"
            ))
        })
    })
}

/// Listen addresses: `--listen`…, `GHMESH_LISTEN`, `CACHE_LISTEN_PORT` (TCP and QUIC on
/// that port), else TCP and QUIC on 9100 (QUIC punches through more NATs, and a port
/// shared by both keeps one mapping to open).
pub fn listen(flags: &[String], env: EnvLookup<'_>) -> Result<Vec<Multiaddr>, CliError> {
    if !flags.is_empty() {
        return parse_addrs(flags, "--listen");
    }
    if let Some((_, v)) = first_env(env, &["GHMESH_LISTEN"]) {
        return parse_addrs(&[v], "GHMESH_LISTEN");
    }
    if let Some((_, v)) = first_env(env, &["CACHE_LISTEN_PORT"]) {
        let port: u16 = v.trim().parse().map_err(|_| {
            CliError::usage(format!(
                "bad CACHE_LISTEN_PORT '{v}': expected a TCP port number"
            ))
        })?;
        return parse_addrs(&both(port), "CACHE_LISTEN_PORT");
    }
    parse_addrs(&both(9100), "default")
}

fn both(port: u16) -> [String; 2] {
    [
        format!("/ip4/0.0.0.0/tcp/{port}"),
        format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
    ]
}

/// Bootstrap addresses: `--bootstrap`…, `GHMESH_BOOTSTRAP`, `CACHE_BOOTSTRAP_PEERS`.
pub fn bootstrap(flags: &[String], env: EnvLookup<'_>) -> Result<Vec<Multiaddr>, CliError> {
    let names = ["GHMESH_BOOTSTRAP", "CACHE_BOOTSTRAP_PEERS"];
    match flags_or_env(flags, "--bootstrap", env, &names) {
        Some((values, what)) => parse_addrs(&values, what),
        None => Ok(Vec::new()),
    }
}

/// External addresses: `--external-addr`…, `GHMESH_EXTERNAL`.
pub fn external(flags: &[String], env: EnvLookup<'_>) -> Result<Vec<Multiaddr>, CliError> {
    match flags_or_env(
        flags,
        "--external-addr",
        env,
        &["GHMESH_EXTERNAL_ADDR", "GHMESH_EXTERNAL"],
    ) {
        Some((values, what)) => parse_addrs(&values, what),
        None => Ok(Vec::new()),
    }
}

fn number<T: std::str::FromStr>(
    flag: Option<T>,
    env: EnvLookup<'_>,
    names: &[&'static str],
    what: &str,
) -> Result<Option<T>, CliError> {
    if flag.is_some() {
        return Ok(flag);
    }
    match first_env(env, names) {
        Some((name, v)) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| CliError::usage(format!("bad {name} '{v}': expected {what}"))),
        None => Ok(None),
    }
}

/// `--ttl`, `GHMESH_TTL`, `CACHE_DEFAULT_TTL`.
pub fn ttl(flag: Option<u64>, env: EnvLookup<'_>) -> Result<Option<u64>, CliError> {
    let ttl = number(
        flag,
        env,
        &["GHMESH_TTL", "CACHE_DEFAULT_TTL"],
        "a number of seconds",
    )?;
    if ttl.is_some_and(|t| t > 86_400) {
        return Err(CliError::usage("--ttl is at most 86400 seconds (one day)"));
    }
    Ok(ttl)
}

/// `--graphql-ttl`, `GHMESH_GRAPHQL_TTL`, else `None` (60 s): how long a GraphQL
/// answer stays fresh.
pub fn graphql_ttl(flag: Option<u64>, env: EnvLookup<'_>) -> Result<Option<u64>, CliError> {
    let ttl = number(flag, env, &["GHMESH_GRAPHQL_TTL"], "a number of seconds")?;
    if ttl.is_some_and(|t| t > 86_400) {
        return Err(CliError::usage(
            "--graphql-ttl is at most 86400 seconds (one day)",
        ));
    }
    Ok(ttl)
}

/// `--rate-limit-reserve`, `GHMESH_RATE_LIMIT_RESERVE`, else 0: requests of a budget
/// kept for people sharing its token.
pub fn rate_limit_reserve(flag: Option<u64>, env: EnvLookup<'_>) -> Result<u64, CliError> {
    let reserve = number(
        flag,
        env,
        &["GHMESH_RATE_LIMIT_RESERVE"],
        "a number of requests",
    )?;
    Ok(reserve.unwrap_or(0))
}

/// `--upstream-timeout`, `GHMESH_UPSTREAM_TIMEOUT`, else 15 s.
pub fn upstream_timeout(
    flag: Option<u64>,
    env: EnvLookup<'_>,
) -> Result<std::time::Duration, CliError> {
    let limits = Bounds {
        names: &["GHMESH_UPSTREAM_TIMEOUT"],
        what: "a number of seconds",
        flag: "--upstream-timeout",
        unit: " seconds",
    };
    let secs = bounded(flag, env, &limits, 15, 1..=600)?;
    Ok(std::time::Duration::from_secs(secs))
}

/// How a bounded number setting is named in its messages.
struct Bounds<'a> {
    names: &'a [&'static str],
    what: &'a str,
    flag: &'a str,
    unit: &'a str,
}

/// A number from its flag or env vars, `default` when unset, refused outside `range`.
fn bounded<T>(
    flag: Option<T>,
    env: EnvLookup<'_>,
    b: &Bounds<'_>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, CliError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n = number(flag, env, b.names, b.what)?.unwrap_or(default);
    if !range.contains(&n) {
        return Err(CliError::usage(format!(
            "{} must be between {} and {}{}",
            b.flag,
            range.start(),
            range.end(),
            b.unit
        )));
    }
    Ok(n)
}

/// `--upstream-concurrency` (`GHMESH_UPSTREAM_CONCURRENCY`): 1 to 100 (GitHub's own
/// cap on concurrent requests per user).
pub fn upstream_concurrency(flag: Option<usize>, env: EnvLookup<'_>) -> Result<usize, CliError> {
    let limits = Bounds {
        names: &["GHMESH_UPSTREAM_CONCURRENCY"],
        what: "a whole number",
        flag: "--upstream-concurrency",
        unit: "",
    };
    bounded(flag, env, &limits, 8, 1..=100)
}

/// `--client-tokens` (`GHMESH_CLIENT_TOKENS`): share (default) or bypass.
pub fn client_tokens(
    flag: Option<crate::api::ClientTokens>,
    env: EnvLookup<'_>,
) -> Result<crate::api::ClientTokens, CliError> {
    use crate::api::ClientTokens;
    if let Some(mode) = flag {
        return Ok(mode);
    }
    match first_env(env, &["GHMESH_CLIENT_TOKENS"]) {
        None => Ok(ClientTokens::Share),
        Some((_, v)) if v.eq_ignore_ascii_case("share") => Ok(ClientTokens::Share),
        Some((_, v)) if v.eq_ignore_ascii_case("bypass") => Ok(ClientTokens::Bypass),
        Some((name, v)) => Err(CliError::usage(format!(
            "bad {name} '{v}': use share or bypass"
        ))),
    }
}

/// `--relay` (`GHMESH_RELAY`): auto (default), on or off.
pub fn relay(
    flag: Option<crate::network::RelayMode>,
    env: EnvLookup<'_>,
) -> Result<crate::network::RelayMode, CliError> {
    use crate::network::RelayMode;
    if let Some(mode) = flag {
        return Ok(mode);
    }
    match first_env(env, &["GHMESH_RELAY"]) {
        None => Ok(RelayMode::Auto),
        Some((_, v)) if v.eq_ignore_ascii_case("auto") => Ok(RelayMode::Auto),
        Some((_, v)) if v.eq_ignore_ascii_case("on") => Ok(RelayMode::On),
        Some((_, v)) if v.eq_ignore_ascii_case("off") => Ok(RelayMode::Off),
        Some((name, v)) => Err(CliError::usage(format!(
            "bad {name} '{v}': use auto, on or off"
        ))),
    }
}

/// The public libp2p bootstrap nodes, as kubo lists them (the `Qm…` ones have RSA
/// keys: libp2p's `rsa` feature is on for them).
pub const PUBLIC_BOOTSTRAP: [&str; 6] = [
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/dnsaddr/va1.bootstrap.libp2p.io/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// `--public-dht` (`GHMESH_PUBLIC_DHT=true`) with `--public-bootstrap`…
/// (`GHMESH_PUBLIC_BOOTSTRAP`, else [`PUBLIC_BOOTSTRAP`]): where to enter the public
/// DHT, or `None` when it is off. Each address must name its peer (`/p2p/<id>`): the
/// public DHT is entered only through nodes we know by key.
pub fn public_dht(
    flag: bool,
    bootstrap: &[String],
    env: EnvLookup<'_>,
) -> Result<Option<Vec<Multiaddr>>, CliError> {
    let on = flag
        || match first_env(env, &["GHMESH_PUBLIC_DHT"]) {
            None => false,
            Some((_, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" | "" => false,
                _ => {
                    return Err(CliError::usage(format!(
                        "bad GHMESH_PUBLIC_DHT '{v}': use true or false"
                    )))
                }
            },
        };
    if !on {
        return Ok(None);
    }
    let addrs = match flags_or_env(
        bootstrap,
        "--public-bootstrap",
        env,
        &["GHMESH_PUBLIC_BOOTSTRAP"],
    ) {
        Some((values, what)) => parse_addrs(&values, what)?,
        None => parse_addrs(&PUBLIC_BOOTSTRAP.map(String::from), "default")?,
    };
    if addrs.is_empty() {
        return Err(CliError::usage(
            "--public-dht needs at least one --public-bootstrap address",
        ));
    }
    if let Some(bad) = addrs
        .iter()
        .find(|a| !matches!(a.iter().last(), Some(Protocol::P2p(_))))
    {
        return Err(CliError::usage(format!(
            "bad public bootstrap address '{bad}': it must end in /p2p/<peer id>"
        )));
    }
    Ok(Some(addrs))
}

/// Store limits: `--max-entries` (`GHMESH_MAX_ENTRIES`, `CACHE_MAX_SIZE`) and
/// `--max-bytes` (`GHMESH_MAX_BYTES`).
pub fn limits(
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    env: EnvLookup<'_>,
) -> Result<Limits, CliError> {
    let d = Limits::default();
    let entries = number(
        max_entries,
        env,
        &["GHMESH_MAX_ENTRIES", "CACHE_MAX_SIZE"],
        "a number of entries",
    )?
    .unwrap_or(d.max_entries);
    let bytes =
        number(max_bytes, env, &["GHMESH_MAX_BYTES"], "a number of bytes")?.unwrap_or(d.max_bytes);
    if entries == 0 || bytes < 1024 * 1024 {
        return Err(CliError::usage(
            "--max-entries must be at least 1 and --max-bytes at least 1048576",
        ));
    }
    Ok(Limits {
        max_entries: entries,
        max_bytes: bytes,
    })
}

/// An environment made of `pairs`, for tests of the resolution rules.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

#[cfg(test)]
mod tests;
