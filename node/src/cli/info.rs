//! `ghmesh stats`, `ghmesh peers`, `ghmesh id`, `ghmesh monitor` and `ghmesh
//! dashboard`: what the running node says about itself.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::api_cmd::http_client;
use super::settings::{self, EnvLookup};
use super::{CliError, IdArgs, StatsArgs};

async fn get(path: &str, env: EnvLookup<'_>) -> Result<reqwest::Response, CliError> {
    let api = settings::api_addr(None, env);
    http_client()?
        .get(format!("http://{api}{path}"))
        .send()
        .await
        .map_err(|_| {
            CliError::failed(format!(
                "no ghmesh node answers at {api}; start one with `ghmesh node` or set GHMESH_API"
            ))
        })
}

async fn get_json(path: &str, env: EnvLookup<'_>) -> Result<serde_json::Value, CliError> {
    let api = settings::api_addr(None, env);
    let resp = get(path, env).await?;
    resp.json()
        .await
        .map_err(|e| CliError::failed(format!("bad answer from the node at {api}: {e}")))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Human-readable stats.
pub fn render_stats(v: &serde_json::Value) -> String {
    let g = |k: &str| {
        v.get(k)
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let rl = v.get("rate_limit").cloned().unwrap_or_default();
    let rlg = |k: &str| {
        rl.get(k)
            .filter(|x| !x.is_null())
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let hit_rate = v.get("hit_rate").and_then(|h| h.as_f64()).unwrap_or(0.0);
    format!(
        "peer id          {}\n\
         peers            {} connected, {} in mesh\n\
         entries          {} ({} bytes)\n\
         served           {} hit, {} peer, {} coalesced, {} revalidated, {} stale, {} miss, {} bypass\n\
         upstream calls   {} ({} answered 304)\n\
         api calls saved  {} (hit rate {:.1}%)\n\
         rate limit       {} of {} left, resets at {}\n",
        v.get("peer_id").and_then(|p| p.as_str()).unwrap_or("-"),
        g("connected_peers"),
        g("mesh_peers"),
        g("entries"),
        g("bytes"),
        g("hits"),
        g("peer_hits"),
        g("coalesced"),
        g("revalidated"),
        g("stale_served"),
        g("misses"),
        g("bypass"),
        g("upstream_calls"),
        g("upstream_304"),
        g("api_calls_saved"),
        hit_rate * 100.0,
        rlg("remaining"),
        rlg("limit"),
        rlg("reset"),
    ) + &render_budgets(v)
}

/// One line per rate-limit budget of the ledger: whose figures (this node's last
/// answer, or a member's lower one), what is left, and any hold.
fn render_budgets(v: &serde_json::Value) -> String {
    let Some(budgets) = v.get("rate_limits").and_then(|b| b.as_array()) else {
        return String::new();
    };
    let mut out = String::new();
    for b in budgets {
        let s = |k: &str| b.get(k).and_then(|x| x.as_str()).unwrap_or("-");
        let n = |k: &str| {
            b.get(k)
                .and_then(|x| x.as_u64())
                .map_or("-".into(), |x| x.to_string())
        };
        let held = b
            .get("held_until")
            .and_then(|x| x.as_u64())
            .map_or(String::new(), |t| format!(", held until {t}"));
        let id = s("budget");
        out.push_str(&format!(
            "budget {}  {:<8} {} of {} left ({}), resets at {}{held}\n",
            &id[..id.len().min(12)],
            s("resource"),
            n("remaining"),
            n("limit"),
            s("source"),
            n("reset"),
        ));
    }
    out
}

/// `ghmesh stats`.
pub async fn stats(args: StatsArgs, env: EnvLookup<'_>) -> Result<(), CliError> {
    let v = get_json("/_ghmesh/stats", env).await?;
    if args.json {
        print_json(&v);
    } else {
        print!("{}", render_stats(&v));
    }
    Ok(())
}

/// `ghmesh peers`.
pub async fn peers(args: StatsArgs, env: EnvLookup<'_>) -> Result<(), CliError> {
    let v = get_json("/_ghmesh/peers", env).await?;
    if args.json {
        print_json(&v);
        return Ok(());
    }
    let peers = v.as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("no peers connected");
    }
    for p in peers {
        let id = p.get("peer_id").and_then(|x| x.as_str()).unwrap_or("-");
        let mesh = if p.get("in_mesh").and_then(|x| x.as_bool()).unwrap_or(false) {
            "mesh"
        } else {
            "-"
        };
        let addrs: Vec<String> = p
            .get("addrs")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        println!("{id}  {mesh:4}  {}", addrs.join(" "));
    }
    Ok(())
}

/// `ghmesh id`: from the running node, else from the identity in the data dir.
pub async fn id(args: IdArgs, env: EnvLookup<'_>) -> Result<(), CliError> {
    if args.data_dir.is_none() {
        if let Ok(v) = get_json("/_ghmesh/stats", env).await {
            println!(
                "{}",
                v.get("peer_id").and_then(|p| p.as_str()).unwrap_or("-")
            );
            for a in v
                .get("listen")
                .and_then(|l| l.as_array())
                .cloned()
                .unwrap_or_default()
            {
                if let Some(a) = a.as_str() {
                    println!("{a}");
                }
            }
            return Ok(());
        }
    }
    let dir = settings::data_dir(args.data_dir.as_deref(), env);
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::usage(format!("data dir {}: {e}", dir.display())))?;
    let key = crate::node::load_or_create_identity(&dir.join("identity.key"))
        .map_err(|e| CliError::usage(e.to_string()))?;
    let peer = key.public().to_peer_id();
    println!("{peer}");
    for a in settings::listen(&[], env)? {
        println!("{}", a.with(libp2p::multiaddr::Protocol::P2p(peer)));
    }
    eprintln!("(no node running: addresses are the configured listen addresses; 0.0.0.0 means every interface)");
    Ok(())
}

/// `ghmesh monitor`.
pub async fn monitor(interval: Duration, once: bool, env: EnvLookup<'_>) -> Result<(), CliError> {
    let tty = std::io::stdout().is_terminal();
    loop {
        let v = get_json("/_ghmesh/stats", env).await?;
        let text = render_stats(&v);
        if tty && !once {
            print!("\x1b[2J\x1b[H");
        }
        print!("{text}");
        if once {
            return Ok(());
        }
        println!(
            "\n(refreshing every {:.1}s, Ctrl-C to quit)",
            interval.as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        tokio::time::sleep(interval).await;
    }
}

/// Programs that open a URL in the desktop's browser, tried in this order.
const OPENERS: &[&str] = &["xdg-open", "open", "sensible-browser", "wslview"];

/// `ghmesh dashboard`: prints the status page's URL once the node answers there, and
/// with `open` hands it to the first browser opener on `PATH`.
pub async fn dashboard(open: bool, env: EnvLookup<'_>) -> Result<(), CliError> {
    let api = settings::api_addr(None, env);
    let resp = get("/_ghmesh/", env).await?;
    if !resp.status().is_success() {
        return Err(CliError::failed(format!(
            "the node at {api} answered {} for its status page; is it a ghmesh node of this version?",
            resp.status()
        )));
    }
    let url = format!("http://{api}/_ghmesh/");
    println!("{url}");
    if open {
        let path = env("PATH").unwrap_or_default();
        let opener = OPENERS.iter().find_map(|name| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
        match opener {
            Some(program) => {
                // Openers hand the URL to a browser and return; one that lingers is
                // left to run, not waited on.
                let run = tokio::process::Command::new(&program)
                    .arg(&url)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                match tokio::time::timeout(Duration::from_secs(10), run).await {
                    Ok(Err(e)) => {
                        return Err(CliError::failed(format!(
                            "cannot run {}: {e}",
                            program.display()
                        )))
                    }
                    Ok(Ok(status)) if !status.success() => eprintln!(
                        "{} could not open the page ({status}): open the URL above yourself",
                        program.display()
                    ),
                    _ => {}
                }
            }
            None => eprintln!(
                "no browser opener ({}) on PATH: open the URL above yourself",
                OPENERS.join(", ")
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_show_every_budget_with_whose_figures_and_any_hold() {
        let v = serde_json::json!({
            "rate_limit": { "remaining": 10, "limit": 5000, "reset": 1700000000 },
            "rate_limits": [
                { "budget": "a7af0a02fba3632ff579a7b943090296", "resource": "core", "limit": 5000,
                  "remaining": 10, "used": 4990, "reset": 1700000000, "held_until": null, "source": "fleet" },
                { "budget": "f150af595306e6c2779984a86386df79", "resource": "graphql", "limit": 5000,
                  "remaining": 0, "used": 5000, "reset": 1700000000, "held_until": 1700000000, "source": "local" }
            ]
        });
        let text = render_stats(&v);
        assert!(
            text.contains(
                "budget a7af0a02fba3  core     10 of 5000 left (fleet), resets at 1700000000\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "graphql  0 of 5000 left (local), resets at 1700000000, held until 1700000000"
            ),
            "{text}"
        );
    }
}
