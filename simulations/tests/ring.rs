//! The placement as the simulated cluster sees it: nodes that learn the same members
//! in different orders compute the same ring, and the `ring` scenario reports it.

use std::path::PathBuf;
use std::process::Command;

use chorus_node::cluster::ring::{Ring, Strategy};
use chorus_protocol::NodeId;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;

fn members(n: usize) -> Vec<NodeId> {
    (1..=n).map(|i| NodeId(format!("node-{i:04}"))).collect()
}

#[test]
fn two_simulated_nodes_compute_the_same_placement() {
    // Each node hears about its peers in its own gossip order.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for n in [1, 2, 3, 7, 30, 100] {
        for strategy in [
            Ring::STRATEGY,
            Strategy::Rendezvous,
            Strategy::VnodeRing { vnodes: 64 },
        ] {
            let mut heard_by_a = members(n);
            let mut heard_by_b = members(n);
            heard_by_a.shuffle(&mut rng);
            heard_by_b.shuffle(&mut rng);
            // Gossip repeats itself: b hears some members twice.
            heard_by_b.extend(heard_by_a.iter().take(n / 2).cloned());
            let a = Ring::place_with(&strategy, heard_by_a, 1024).unwrap();
            let b = Ring::place_with(&strategy, heard_by_b, 1024).unwrap();
            assert_eq!(a.owner_table(), b.owner_table(), "{strategy} N={n}");
            assert_eq!(a.epoch(), b.epoch(), "{strategy} N={n}");
            assert_eq!(a.members(), b.members());
        }
    }
}

#[test]
fn ring_scenario_reports_every_strategy_and_the_chosen_one_is_balanced() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ring-scenario");
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_chorus-simulations"))
        .args([
            "ring",
            "--nodes",
            "5,20",
            "--partitions",
            "1024",
            "--vnodes",
            "16",
        ])
        .args(["--slack", "5", "--changes", "2", "--no-plots", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = std::fs::read_to_string(dir.join("ring.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    for want in [
        "ring-16vn",
        "rendezvous",
        "maglev",
        "greedy-bounded-5%",
        "bounded-5%",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // The node's strategy: balance within its 5 % cap (plus rounding) at P/N ≥ 51.
    let chosen = Ring::STRATEGY.to_string();
    for row in rows.iter().filter(|r| r[1] == chosen) {
        let balance: f64 = row[4].parse().unwrap();
        assert!(balance <= 1.05 + 1.0 / 51.0, "{row:?}");
    }
    let timings = std::fs::read_to_string(dir.join("ring-timings.csv")).unwrap();
    assert_eq!(timings.lines().count(), 1 + rows.len());
}
