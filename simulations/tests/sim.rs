//! The simulator in the default suite, small (N=5, K=20): counts, not times.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use ghmesh_simulations::{run, SimConfig, Strategy, Workload};

fn burst(strategy: Strategy) -> SimConfig {
    let mut cfg = SimConfig::from_workload(Workload::load("burst").unwrap());
    cfg.nodes = 5;
    cfg.keys = 20;
    cfg.strategy = strategy;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_burst_mesh_spends_about_one_call_per_key_and_less_than_broadcast() {
    let mesh = run(burst(Strategy::Mesh)).await.unwrap();
    let broadcast = run(burst(Strategy::Broadcast)).await.unwrap();
    print!("{}{}", mesh.summary(), broadcast.summary());
    assert_eq!(mesh.requests, 100);
    assert_eq!(mesh.errors, 0);
    assert!(
        mesh.upstream_calls as f64 <= 1.2 * 20.0,
        "mesh spent {} upstream calls for 20 keys",
        mesh.upstream_calls
    );
    assert!(
        mesh.upstream_calls >= 20,
        "every key was fetched at least once"
    );
    assert!(
        broadcast.upstream_calls > mesh.upstream_calls,
        "broadcast {} vs mesh {}",
        broadcast.upstream_calls,
        mesh.upstream_calls
    );
    assert_eq!(
        broadcast.served_peer + broadcast.served_coalesced,
        0,
        "push-only never asks peers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_are_served_by_peers() {
    let mut cfg = SimConfig::from_workload(Workload::load("churn").unwrap());
    cfg.nodes = 4;
    cfg.keys = 20;
    let r = run(cfg).await.unwrap();
    print!("{}", r.summary());
    let late = r.late_joiners.clone().unwrap();
    assert_eq!(late.nodes, 3);
    assert!(late.requests > 0);
    assert!(
        late.served_by_peers > late.misses,
        "late joiners: {} from peers, {} upstream",
        late.served_by_peers,
        late.misses
    );
}

#[test]
fn charts_are_written_as_svg_and_png() {
    use ghmesh_simulations::{plot::plot, Report};
    let fonts = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    if !fonts.iter().any(|f| std::path::Path::new(f).exists()) {
        println!("skipping chart test: no TrueType font installed (e.g. fonts-dejavu-core)");
        return;
    }
    let reports: Vec<Report> = [("local", 5, 5.0), ("mesh", 5, 1.0), ("mesh", 20, 1.02)]
        .into_iter()
        .map(|(s, n, upk)| Report {
            strategy: s.into(),
            nodes: n,
            upstream_per_key: upk,
            propagation_samples: vec![3.0, 5.0, 8.0],
            ..Default::default()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for name in ["c.svg", "c.png"] {
        let path = dir.path().join(name);
        plot(&path, &reports).unwrap();
        assert!(
            std::fs::metadata(&path).unwrap().len() > 2000,
            "{name} has content"
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("c.svg")).unwrap();
    assert!(svg.contains("upstream calls per key"));
    assert!(plot(&dir.path().join("c.gif"), &reports).is_err());
}
