//! A history test in the spirit of Jepsen, on three `chorus agent` processes with the
//! cluster defaults (three replicas, write quorum 2): writers submit items with ids
//! they keep, retrying the same id through any node, while a nemesis SIGKILLs a node
//! and restarts it, again and again. At the end every acknowledged id is read back by
//! `get` and listed once in its user's listing, an id never acknowledged is listed at
//! most once, and every replica of every partition holds the same records
//! (`chorus ctl replicas --digest` agrees on all three nodes). The writers and checks
//! are [`support::history`]; `replication_history_netns` adds network faults.
//!
//! `CHORUS_HISTORY_EVENTS` sets the nemesis events (a kill and a restart are one each;
//! 6 by default); `CHORUS_HISTORY_SEED` replays a run's choice of victims. The long
//! mode, run by cargo's own harness because nextest would stop it after four minutes:
//! `CHORUS_HISTORY_EVENTS=100 cargo test -p chorus-node --test replication_history --
//! --nocapture`.

mod support;

use std::time::Duration;

use rand::Rng;
use support::cluster::{cluster, formed};
use support::history::{Writers, events, nemesis_rng};

/// Nemesis events when `CHORUS_HISTORY_EVENTS` is unset: three kills and restarts.
const SHORT_EVENTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_item_survives_kills_and_restarts_and_replicas_agree() {
    let events = events(SHORT_EVENTS);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let writers = Writers::start(&nodes, dir.path()).await;

    // The nemesis: one node down at a time (two of three keep the write quorum).
    let mut rng = nemesis_rng();
    let mut done = 0;
    while done < events {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
        let victim = rng.random_range(0..nodes.len());
        nodes[victim].kill();
        done += 1;
        eprintln!("nemesis: killed {}", nodes[victim].name);
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
        nodes[victim].start();
        done += 1;
        formed(&nodes).await;
        eprintln!("nemesis: {} is back", nodes[victim].name);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = writers.finish(&nodes).await;
    eprintln!("{tally:?} after {events} nemesis events");
}
