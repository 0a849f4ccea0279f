//! DNS bootstrap: `--bootstrap /dns4/<name>/tcp/<port>` without a `/p2p/<id>` part
//! dials every address the name resolves to and learns each peer id from the
//! handshake, so a Kubernetes headless Service (one A record per pod) is enough to
//! join a fleet whose peer ids change with every pod.
//!
//! libp2p's own DNS transport dials only the first address that answers, so names are
//! resolved here (the system resolver: `/etc/hosts`, then DNS) and re-resolved
//! periodically, as pods come and go.

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::sync::mpsc;

pub(crate) use crate::limits::MAX_SEED_ADDRS;

/// Which addresses a seed admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    Any,
}

/// A name to resolve and dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsSeed {
    name: String,
    port: u16,
    family: Family,
}

impl DnsSeed {
    /// `/dns4|/dns6|/dns/<name>/tcp/<port>` with nothing after: a seed. Anything else
    /// (an IP address, a `/p2p/<id>` part) is dialled as it is.
    pub(crate) fn parse(addr: &Multiaddr) -> Option<Self> {
        let mut parts = addr.iter();
        let (name, family) = match parts.next()? {
            Protocol::Dns4(n) => (n, Family::V4),
            Protocol::Dns6(n) => (n, Family::V6),
            Protocol::Dns(n) => (n, Family::Any),
            _ => return None,
        };
        let Protocol::Tcp(port) = parts.next()? else {
            return None;
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            name: name.to_string(),
            port,
            family,
        })
    }

    fn admits(&self, addr: &SocketAddr) -> bool {
        match self.family {
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
            Family::Any => true,
        }
    }

    /// The seed's current addresses, as dialable multiaddrs.
    async fn resolve(&self) -> Vec<Multiaddr> {
        match tokio::net::lookup_host((self.name.as_str(), self.port)).await {
            Ok(found) => found
                .filter(|a| self.admits(a))
                .map(|a| to_multiaddr(&a))
                .collect(),
            Err(e) => {
                tracing::debug!(name = %self.name, "bootstrap name did not resolve: {e}");
                Vec::new()
            }
        }
    }
}

/// `/ip4|/ip6/<ip>/tcp/<port>`.
fn to_multiaddr(addr: &SocketAddr) -> Multiaddr {
    let ip = match addr {
        SocketAddr::V4(a) => Protocol::Ip4(*a.ip()),
        SocketAddr::V6(a) => Protocol::Ip6(*a.ip()),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(addr.port()))
}

/// Resolves every seed now and then every `every`, sending the addresses found to the
/// event loop; ends when the event loop is gone.
pub(crate) async fn run(seeds: Vec<DnsSeed>, every: Duration, tx: mpsc::Sender<Vec<Multiaddr>>) {
    loop {
        let mut found = Vec::new();
        for seed in &seeds {
            found.extend(seed.resolve().await);
        }
        found.sort();
        found.dedup();
        found.truncate(MAX_SEED_ADDRS);
        if tx.send(found).await.is_err() {
            break;
        }
        tokio::select! {
            _ = tx.closed() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_names_without_peer_ids_are_seeds() {
        let seed = DnsSeed::parse(&ma("/dns4/ghmesh-peers.ci.svc/tcp/9100")).unwrap();
        assert_eq!(seed.name, "ghmesh-peers.ci.svc");
        assert_eq!(seed.port, 9100);
        assert_eq!(seed.family, Family::V4);
        assert_eq!(
            DnsSeed::parse(&ma("/dns6/h/tcp/1")).unwrap().family,
            Family::V6
        );
        assert_eq!(
            DnsSeed::parse(&ma("/dns/h/tcp/1")).unwrap().family,
            Family::Any
        );
        let with_id = "/dns4/h/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        assert_eq!(DnsSeed::parse(&ma(with_id)), None);
        assert_eq!(DnsSeed::parse(&ma("/ip4/10.0.0.1/tcp/9100")), None);
        assert_eq!(DnsSeed::parse(&ma("/dns4/h/udp/1")), None);
    }

    #[test]
    fn families_filter_addresses() {
        let v4: SocketAddr = "10.1.2.3:9100".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:9100".parse().unwrap();
        let seed = |f| DnsSeed {
            name: "h".into(),
            port: 9100,
            family: f,
        };
        assert!(seed(Family::V4).admits(&v4) && !seed(Family::V4).admits(&v6));
        assert!(seed(Family::V6).admits(&v6) && !seed(Family::V6).admits(&v4));
        assert!(seed(Family::Any).admits(&v4) && seed(Family::Any).admits(&v6));
        assert_eq!(to_multiaddr(&v4), ma("/ip4/10.1.2.3/tcp/9100"));
        assert_eq!(to_multiaddr(&v6), ma("/ip6/fd00::1/tcp/9100"));
    }

    #[tokio::test]
    async fn localhost_resolves_and_the_resolver_ends_with_the_loop() {
        let seed = DnsSeed::parse(&ma("/dns4/localhost/tcp/9100")).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(run(vec![seed], Duration::from_secs(3600), tx));
        let first = rx.recv().await.unwrap();
        assert_eq!(first, vec![ma("/ip4/127.0.0.1/tcp/9100")]);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
