//! A NAT lab in Linux network namespaces, built and torn down by the test itself.
//!
//! An "internet" namespace routes between public hubs (198.51.100.0/24) and NAT routers
//! (WAN sides on 203.0.113.0/24); behind each router, runners on 10.x LANs. The routers
//! translate with nftables: `masquerade` keeps a runner's source port (each runner in
//! the lab has its own port, so nothing clashes) and maps it the same for every
//! destination (endpoint-independent mapping), while `masquerade random` picks a new
//! port per connection, as cloud NAT gateways do. Both let in only replies to what went
//! out. A [`Nat::Routed`] router translates nothing: its LAN is routed. With
//! [`Plan::private_core`] the routers' WAN sides are on 10.250.0.0/24 instead, so that
//! routed LANs and NATs form one private network. No namespace has a route out of the
//! lab, no interface is in the host's namespace, and every namespace (with the
//! processes in it) is deleted on drop, also when the test fails.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context};

use crate::daemon::{http_request_over, start_daemon_with, url_host, Daemon};
use crate::fake_github::FakeGithub;

/// Why the lab cannot run here (`None`: it can): it needs root, `ip` and `nft`.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces)".into());
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("needs `{tool}` (Debian: iproute2, nftables)"));
        }
    }
    None
}

/// The transport runners join the hubs by (and so the one their NATs map first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// QUIC.
    Quic,
}

/// How a lab router translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Keeps the source port, the same mapping for every destination: hole punching
    /// works.
    EndpointIndependent,
    /// A new random port per connection: hole punching cannot work.
    RandomPort,
    /// No translation and no filter: a router on one routed network, its LAN reachable
    /// from the rest of the lab at the runners' own addresses.
    Routed,
}

/// The namespaces of one lab; deleted (with every process in them) on drop.
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
}

static LABS: AtomicUsize = AtomicUsize::new(0);

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    /// An empty lab with names no other lab (or test process) uses.
    pub fn new() -> Lab {
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        Lab {
            tag: format!("ghm{}x{n}", std::process::id()),
            namespaces: Vec::new(),
        }
    }

    /// Adds a namespace with loopback up and forwarding on (routers need it; it
    /// routes nothing on a host).
    pub fn namespace(&mut self, short: &str) -> anyhow::Result<String> {
        let ns = format!("{}-{short}", self.tag);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        Ok(ns)
    }

    /// A veth pair between `a` and `b` with these interface names and addresses
    /// (CIDR).
    pub fn wire(
        &self,
        (a, a_if, a_cidr): (&str, &str, &str),
        (b, b_if, b_cidr): (&str, &str, &str),
    ) -> anyhow::Result<()> {
        ip(&[
            "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ])?;
        for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
            ip(&["-n", ns, "addr", "add", cidr, "dev", ifname])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Wires `ns` below `gateway` (a veth pair on a /`prefix` network) and routes
    /// everything `ns` sends through the gateway's address: the only route it has.
    pub fn uplink(
        &self,
        (gw_ns, gw_if, gw_ip): (&str, &str, &str),
        (ns, ns_if, ns_ip): (&str, &str, &str),
        prefix: u8,
    ) -> anyhow::Result<()> {
        self.wire(
            (gw_ns, gw_if, &format!("{gw_ip}/{prefix}")),
            (ns, ns_if, &format!("{ns_ip}/{prefix}")),
        )?;
        ip(&["-n", ns, "route", "add", "default", "via", gw_ip])
    }

    /// Makes `ns` a NAT router translating what leaves by `wan` (a plain router for
    /// [`Nat::Routed`]).
    pub fn nat(&self, ns: &str, wan: &str, kind: Nat) -> anyhow::Result<()> {
        let how = match kind {
            Nat::EndpointIndependent => "masquerade",
            Nat::RandomPort => "masquerade random",
            Nat::Routed => return Ok(()),
        };
        let rules = format!(
            "table ip lab {{
  chain lab_nat {{ type nat hook postrouting priority srcnat; policy accept;
    oifname \"{wan}\" {how}
  }}
  chain lab_filter {{ type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname != \"{wan}\" accept
  }}
  chain lab_input {{ type filter hook input priority filter; policy accept;
    iifname \"{wan}\" ct state new drop
  }}
}}
"
        );
        nft_in(ns, &rules).context("the NAT rules")?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Daemons die with their handles; anything else still in there goes now.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

/// Runs `f` on a thread that entered `ns`: sockets it makes stay in `ns`.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = PathBuf::from("/run/netns").join(ns);
    let joined = std::thread::spawn(move || -> std::io::Result<T> {
        let file = std::fs::File::open(&path)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?;
    Ok(joined?)
}

/// A daemon in a lab namespace.
pub struct LabNode {
    /// Its namespace.
    pub ns: String,
    /// The process.
    pub daemon: Daemon,
    /// The address it listens on.
    pub ip: Ipv4Addr,
    /// Its port (TCP and UDP).
    pub port: u16,
}

impl LabNode {
    /// GET `path` from its API, from inside its namespace.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let url = format!("{}{path}", self.daemon.base());
        let host = url_host(&url)?.to_string();
        let stream = in_ns(&self.ns, move || {
            let s = std::net::TcpStream::connect(host)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })?;
        let stream = tokio::net::TcpStream::from_std(stream)?;
        let (status, _, body) = http_request_over(stream, "GET", &url, &[], &[]).await?;
        Ok((status, body))
    }

    /// `GET /_ghmesh/<what>` as JSON.
    pub async fn json(&self, what: &str) -> anyhow::Result<serde_json::Value> {
        let (_, body) = self.get(&format!("/_ghmesh/{what}")).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Its address on `transport`, with its peer id.
    pub fn addr(&self, transport: Transport) -> String {
        let proto = match transport {
            Transport::Tcp => format!("tcp/{}", self.port),
            Transport::Quic => format!("udp/{}/quic-v1", self.port),
        };
        format!("/ip4/{}/{proto}/p2p/{}", self.ip, self.daemon.ready.peer_id)
    }
}

/// The hub topology: public hubs (each `--relay on`) and NAT routers with runners
/// behind them, every runner joined by `--bootstrap` to the hubs only; a fake GitHub in
/// the internet namespace.
pub struct HubFleet {
    /// The fake GitHub every node reads from.
    pub gh: FakeGithub,
    /// Public nodes.
    pub hubs: Vec<LabNode>,
    /// Runners, per NAT.
    pub runners: Vec<Vec<LabNode>>,
    /// Stand-ins for public DHT nodes on the lab's internet.
    pub standins: Vec<StandIn>,
    /// When building the lab began.
    pub begun: std::time::Instant,
    // Dropped last: the daemons above die first, then their namespaces go.
    lab: Lab,
}

impl HubFleet {
    /// Every node.
    pub fn nodes(&self) -> impl Iterator<Item = &LabNode> {
        self.hubs.iter().chain(self.runners.iter().flatten())
    }

    /// The lab's namespaces (to check the cleanup).
    pub fn namespaces(&self) -> Vec<String> {
        self.lab.namespaces.clone()
    }

    /// Builds the lab and starts `hubs` hubs, then `per_nat` runners behind each NAT of
    /// `nats` that join the hubs over `join`, with `dir` for their data.
    pub async fn start(
        hubs: usize,
        nats: &[Nat],
        per_nat: usize,
        join: Transport,
        dir: &std::path::Path,
    ) -> anyhow::Result<HubFleet> {
        let plan = Plan {
            hubs,
            nats: nats.to_vec(),
            per_nat,
            join,
            ..Plan::default()
        };
        Self::start_plan(&plan, dir).await
    }

    /// Builds the lab as `plan` says, with `dir` for the daemons' data.
    pub async fn start_plan(plan: &Plan, dir: &std::path::Path) -> anyhow::Result<HubFleet> {
        let Plan {
            hubs,
            ref nats,
            per_nat,
            join,
            ..
        } = *plan;
        let begun = std::time::Instant::now();
        let mut lab = Lab::new();
        let inet = lab.namespace("inet")?;
        if hubs == 0 {
            // The fake GitHub's address, with no hub link to carry it.
            ip(&["-n", &inet, "addr", "add", "198.51.100.1/32", "dev", "lo"])?;
        }
        let mut standins = Vec::new();
        for k in 0..plan.standins {
            let ns = lab.namespace(&format!("pub{k}"))?;
            let (gw, me) = (128 + 4 * k as u8 + 1, 128 + 4 * k as u8 + 2);
            lab.uplink(
                (&inet, &format!("p{k}"), &format!("198.51.100.{gw}")),
                (&ns, "eth0", &format!("198.51.100.{me}")),
                30,
            )?;
            let peers: Vec<String> = standins.iter().map(|s: &StandIn| s.addr.clone()).collect();
            // The first with an RSA identity, as the oldest public bootstrap nodes have.
            let rsa = k == 0;
            let ip = Ipv4Addr::new(198, 51, 100, me);
            standins.push(StandIn::start(&ns, ip, &peers, rsa)?);
        }
        let mut hub_ns = Vec::new();
        for k in 0..hubs {
            let ns = lab.namespace(&format!("hub{k}"))?;
            let (gw, me) = (4 * k as u8 + 1, 4 * k as u8 + 2);
            lab.uplink(
                (&inet, &format!("h{k}"), &format!("198.51.100.{gw}")),
                (&ns, "eth0", &format!("198.51.100.{me}")),
                30,
            )?;
            hub_ns.push((ns, Ipv4Addr::new(198, 51, 100, me)));
        }
        let mut runner_ns = Vec::new();
        // Routers' WAN sides: on the lab's internet, or on one private routed network.
        let core = if plan.private_core {
            "10.250.0"
        } else {
            "203.0.113"
        };
        for (j, kind) in nats.iter().enumerate() {
            let router = lab.namespace(&format!("nat{j}"))?;
            let (gw, wan) = (4 * j as u8 + 1, 4 * j as u8 + 2);
            lab.uplink(
                (&inet, &format!("n{j}"), &format!("{core}.{gw}")),
                (&router, "wan", &format!("{core}.{wan}")),
                30,
            )?;
            lab.nat(&router, "wan", *kind)?;
            if *kind == Nat::Routed {
                // The rest of the lab reaches this LAN at the runners' own addresses.
                ip(&[
                    "-n",
                    &inet,
                    "route",
                    "add",
                    &format!("10.{}.0.0/16", j + 1),
                    "via",
                    &format!("{core}.{wan}"),
                ])?;
            }
            let mut lan = Vec::new();
            for i in 0..per_nat {
                let ns = lab.namespace(&format!("r{j}-{i}"))?;
                let net = format!("10.{}.{}", j + 1, i + 1);
                lab.uplink(
                    (&router, &format!("l{i}"), &format!("{net}.1")),
                    (&ns, "eth0", &format!("{net}.2")),
                    24,
                )?;
                lan.push((ns, Ipv4Addr::new(10, j as u8 + 1, i as u8 + 1, 2)));
            }
            runner_ns.push(lan);
        }
        // The fake GitHub listens in the internet namespace, on its first hub link.
        let listener = in_ns(&inet, || std::net::TcpListener::bind("198.51.100.1:0"))?;
        let gh = FakeGithub::start_on(listener)?;
        let mut env = crate::daemon::env("nat-lab-fleet");
        // Daemon logs (next to their data directories) at the level asked for.
        if let Ok(filter) = std::env::var("GHMESH_LAB_LOG") {
            env.insert("RUST_LOG".into(), filter);
        }
        let start = |ns: String, ip: Ipv4Addr, port: u16, name: String, extra: Vec<String>| {
            let gh_url = gh.url();
            let mut env = env.clone();
            if let Some((_, secret)) = plan.secrets.iter().find(|(who, _)| name.starts_with(who)) {
                env.insert("GHMESH_SECRET".into(), secret.clone());
            }
            // Each node its own token: the fake GitHub's log then tells who called.
            env.insert("GH_TOKEN".into(), format!("ghp_lab_{name}"));
            let dir = dir.join(name);
            async move {
                let mut args: Vec<String> = [
                    "--listen".into(),
                    format!("/ip4/0.0.0.0/tcp/{port}"),
                    "--listen".into(),
                    format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
                    "--api".into(),
                    "127.0.0.1:0".into(),
                    "--no-mdns".into(),
                    "--upstream".into(),
                    gh_url,
                ]
                .to_vec();
                args.extend(extra);
                let wrapper = ["ip", "netns", "exec", &ns].map(String::from);
                let daemon = start_daemon_with(&wrapper, dir, &args, &env).await?;
                anyhow::Ok(LabNode {
                    ns,
                    daemon,
                    ip,
                    port,
                })
            }
        };
        let mut public = Vec::new();
        if plan.public_bootstrap {
            for s in &standins {
                public.extend(["--public-bootstrap".to_string(), s.addr.clone()]);
            }
        }
        if plan.public_dht {
            public.push("--public-dht".into());
        }
        let mut hub_nodes = Vec::new();
        for (k, (ns, ip)) in hub_ns.into_iter().enumerate() {
            let mut extra = public.clone();
            if plan.hub_relay_on {
                extra.extend(["--relay".into(), "on".into()]);
            }
            hub_nodes.push(start(ns, ip, 9100, format!("hub{k}"), extra).await?);
        }
        let mut boot: Vec<String> = hub_nodes
            .iter()
            .filter(|_| plan.bootstrap_hubs)
            .flat_map(|h| ["--bootstrap".to_string(), h.addr(join)])
            .collect();
        boot.extend(public);
        let mut runners: Vec<Vec<LabNode>> = Vec::new();
        for (j, lan) in runner_ns.into_iter().enumerate() {
            let mut nodes = Vec::new();
            for (i, (ns, ip)) in lan.into_iter().enumerate() {
                // Each runner its own port: masquerade keeps ports that do not clash.
                let port = 4000 + 10 * j as u16 + i as u16;
                let mut extra = boot.clone();
                let first = runners.first().map_or(nodes.first(), |r| r.first());
                if let Some(first) = first.filter(|_| plan.bootstrap_first_runner) {
                    extra.extend(["--bootstrap".to_string(), first.addr(join)]);
                }
                nodes.push(start(ns, ip, port, format!("r{j}-{i}"), extra).await?);
            }
            runners.push(nodes);
        }
        Ok(HubFleet {
            gh,
            hubs: hub_nodes,
            runners,
            standins,
            begun,
            lab,
        })
    }
}

/// Peer id of each node, by namespace (to name nodes in reports).
pub fn names(fleet: &HubFleet) -> HashMap<String, String> {
    fleet
        .nodes()
        .map(|n| (n.daemon.ready.peer_id.clone(), n.ns.clone()))
        .collect()
}

/// What to build in a lab ([`HubFleet::start_plan`]).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Public ghmesh hubs, joined by every runner with `--bootstrap`.
    pub hubs: usize,
    /// Hubs run with `--relay on` (else the default, `auto`).
    pub hub_relay_on: bool,
    /// Runners get `--bootstrap` with every hub.
    pub bootstrap_hubs: bool,
    /// The NAT routers, each with `per_nat` runners behind it.
    pub nats: Vec<Nat>,
    /// Runners per NAT.
    pub per_nat: usize,
    /// The transport runners join the hubs by.
    pub join: Transport,
    /// Stand-ins for public DHT nodes on the lab's internet (`standin-dht`).
    pub standins: usize,
    /// Every node gets `--public-bootstrap` with every stand-in.
    pub public_bootstrap: bool,
    /// Every node gets `--public-dht`.
    pub public_dht: bool,
    /// The routers' WAN sides are on a private routed network (10.250.0.0/24) instead
    /// of the lab's internet: with [`Nat::Routed`] LANs, one private network.
    pub private_core: bool,
    /// Every runner but the first gets `--bootstrap` with the first runner (behind
    /// the first router).
    pub bootstrap_first_runner: bool,
    /// Secrets by node-name prefix (`r0-` for the runners behind the first NAT, `hub`);
    /// the others share one.
    pub secrets: Vec<(String, String)>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            hubs: 1,
            hub_relay_on: true,
            bootstrap_hubs: true,
            nats: vec![Nat::EndpointIndependent; 2],
            per_nat: 3,
            join: Transport::Tcp,
            standins: 0,
            public_bootstrap: false,
            public_dht: false,
            private_core: false,
            bootstrap_first_runner: false,
            secrets: Vec::new(),
        }
    }
}

/// A stand-in public DHT node (the `standin-dht` binary) in its own namespace
/// (198.51.100.128/25), with a counter of the packets that reach it from ghmesh nodes.
pub struct StandIn {
    /// Its namespace.
    pub ns: String,
    /// Its address, `/ip4/…/tcp/4001/p2p/<id>`.
    pub addr: String,
    child: std::process::Child,
    /// Where it writes the gossip topics peers subscribed to.
    heard: PathBuf,
    /// Where it writes the circuits its relay ended on an error.
    cut: PathBuf,
}

impl StandIn {
    fn start(ns: &str, ip: Ipv4Addr, peers: &[String], rsa: bool) -> anyhow::Result<StandIn> {
        use std::io::BufRead;
        // Everything but the other stand-ins: hubs (198.51.100.0/25) and NATs.
        let rules = "table ip watch {
  counter from_fleet {}
  chain input { type filter hook input priority filter; policy accept;
    ip saddr != 198.51.100.128/25 counter name from_fleet
  }
}
";
        nft_in(ns, rules)?;
        let exe = crate::daemon::target_bin("standin-dht");
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            ns.into(),
            exe.display().to_string(),
            "--listen".into(),
            format!("/ip4/{ip}/tcp/4001"),
        ];
        for p in peers {
            args.extend(["--peer".to_string(), p.clone()]);
        }
        if rsa {
            let key = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/standin-rsa.pk8");
            args.extend(["--rsa-key".to_string(), key.to_string()]);
        }
        let heard = std::env::temp_dir().join(format!("{ns}.heard"));
        let _ = std::fs::remove_file(&heard);
        args.extend(["--heard".to_string(), heard.display().to_string()]);
        let cut = std::env::temp_dir().join(format!("{ns}.cut"));
        let _ = std::fs::remove_file(&cut);
        args.extend(["--cut".to_string(), cut.display().to_string()]);
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("standin-dht")?;
        let stdout = child.stdout.take().context("standin stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let Some(id) = line.trim().strip_prefix("standin ") else {
            let _ = child.kill();
            bail!("standin-dht did not start: {line:?}");
        };
        Ok(StandIn {
            ns: ns.to_string(),
            addr: format!("/ip4/{ip}/tcp/4001/p2p/{id}"),
            child,
            heard,
            cut,
        })
    }

    /// The gossip topics peers subscribed to on it (`/meshsub/…`, as public nodes speak
    /// it), one `<peer> <topic>` per line.
    pub fn heard_topics(&self) -> Vec<String> {
        std::fs::read_to_string(&self.heard)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Circuits its relay ended because they carried more than a public relay allows
    /// (128 KiB): the fleet's traffic crossed it.
    pub fn circuits_over_their_bytes(&self) -> usize {
        std::fs::read_to_string(&self.cut)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Max circuit bytes"))
            .count()
    }

    /// Packets that reached it from a ghmesh node (a hub, or a runner behind a NAT).
    pub fn packets_from_fleet(&self) -> anyhow::Result<u64> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "nft",
                "list",
                "counter",
                "ip",
                "watch",
                "from_fleet",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no packet counter in {text:?}"))
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.heard);
        let _ = std::fs::remove_file(&self.cut);
    }
}

/// Loads nftables `rules` in `ns`.
fn nft_in(ns: &str, rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("nft")?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(rules.as_bytes())?;
    if !child.wait()?.success() {
        bail!("nft refused the rules");
    }
    Ok(())
}
