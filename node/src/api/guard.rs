//! Who may talk to the local API. A web page the runner's browser (or any local
//! process's embedded browser) opens can reach `127.0.0.1` through DNS rebinding or a
//! cross-origin request; the `Host` and `Origin` checks keep such requests out: only
//! loopback names and addresses, the address the API is bound to, and names given
//! with `--api-host` are answered.

use std::net::{IpAddr, SocketAddr};

/// The host names and addresses the API answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    bound: IpAddr,
    names: Vec<String>,
}

impl AllowedHosts {
    /// Loopback, `bound`'s address, and `names` (from `--api-host`).
    pub fn new(bound: SocketAddr, names: &[String]) -> Self {
        Self {
            bound: bound.ip(),
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Does a `Host` header (`name`, `name:port`, `[v6]:port`) name us?
    pub fn admits_host(&self, authority: &str) -> bool {
        let Some(host) = host_of(authority) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return ip.is_loopback() || ip == self.bound;
        }
        self.names.contains(&host)
    }

    /// Is an `Origin` (`scheme://host[:port]`) one of ours? `null` and anything
    /// unparsable are not.
    pub fn admits_origin(&self, origin: &str) -> bool {
        match origin.split_once("://") {
            Some((_, rest)) => self.admits_host(rest.split('/').next().unwrap_or(rest)),
            None => false,
        }
    }
}

/// The host part of an authority, without port or IPv6 brackets.
fn host_of(authority: &str) -> Option<&str> {
    let a = authority.trim();
    if a.is_empty() || a.contains(['/', '@', ' ']) {
        return None;
    }
    if let Some(rest) = a.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':')).then_some(v6);
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Some(h),
        Some(_) => None,
        None => Some(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(bound: &str, names: &[&str]) -> AllowedHosts {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        AllowedHosts::new(bound.parse().unwrap(), &names)
    }

    #[test]
    fn loopback_bound_and_named_hosts_only() {
        let h = hosts("127.0.0.1:7711", &["Cache.Internal"]);
        for ok in [
            "127.0.0.1:7711",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:7711",
            "LOCALHOST",
            "api.localhost",
            "[::1]:7711",
            "cache.internal:7711",
            "cache.internal",
        ] {
            assert!(h.admits_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7711",
            "localhost.evil.example",
            "10.0.0.5:7711",
            "",
            "user@127.0.0.1",
            "127.0.0.1:x",
            "[::1",
        ] {
            assert!(!h.admits_host(bad), "{bad}");
        }
        let bound = hosts("10.0.0.5:7711", &[]);
        assert!(bound.admits_host("10.0.0.5:7711"), "the bound address");
        assert!(!bound.admits_host("10.0.0.6:7711"));
    }

    #[test]
    fn origins() {
        let h = hosts("127.0.0.1:7711", &["cache.internal"]);
        assert!(h.admits_origin("http://localhost:3000"));
        assert!(h.admits_origin("http://cache.internal"));
        assert!(!h.admits_origin("https://evil.example"));
        assert!(!h.admits_origin("null"));
        assert!(!h.admits_origin("http://127.0.0.1.evil.example"));
    }
}
