//! A history test in the spirit of Jepsen, on three `chorus agent` processes with the
//! cluster defaults (three replicas, write quorum 2): writers submit items with ids
//! they keep, retrying the same id through any node, while a nemesis SIGKILLs a node
//! and restarts it, again and again. At the end every acknowledged id is read back by
//! `get` and listed once in its user's listing, an id never acknowledged is listed at
//! most once, and every replica of every partition holds the same records
//! (`chorus ctl replicas --digest` agrees on all three nodes).
//!
//! `CHORUS_HISTORY_EVENTS` sets the nemesis events (a kill and a restart are one each;
//! 6 by default). The long mode: `CHORUS_HISTORY_EVENTS=100 cargo nextest run -p
//! chorus-node --test replication_history --run-ignored all`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_client::Client;
use chorus_protocol::{Item, ItemId, Kind};
use rand::Rng;
use support::cluster::{Node, cluster, formed, plain_client};
use tokio_util::sync::CancellationToken;

/// Users the writers write for (a few, so that each partition sees many writes).
const USERS: usize = 6;
/// Longest a writer keeps retrying one id before it gives up on it.
const RETRY_FOR: Duration = Duration::from_secs(8);

/// What the writers learned: ids acknowledged per user, and ids given up on.
#[derive(Default)]
struct History {
    acked: BTreeMap<String, Vec<ItemId>>,
    unknown: BTreeMap<String, Vec<ItemId>>,
}

/// Submits one item, the same id through each client in turn until one acknowledges it.
async fn submit_retrying(clients: &[Client], item: &Item, first: usize) -> bool {
    let started = Instant::now();
    let mut at = first;
    while started.elapsed() < RETRY_FOR {
        let client = &clients[at % clients.len()];
        match tokio::time::timeout(Duration::from_secs(3), client.submit(item.clone())).await {
            Ok(Ok(_)) => return true,
            _ => {
                at += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    false
}

async fn writer(
    clients: Arc<Vec<Client>>,
    first: usize,
    history: Arc<Mutex<History>>,
    stop: CancellationToken,
) {
    let mut n = 0usize;
    while !stop.is_cancelled() {
        let user = format!("hist-{}", (first + n) % USERS);
        n += 1;
        let item = Item::new(user.clone(), Kind::Text);
        let acked = submit_retrying(&clients, &item, first).await;
        let mut history = history.lock().unwrap();
        let book = if acked {
            &mut history.acked
        } else {
            &mut history.unknown
        };
        book.entry(user).or_default().push(item.id);
    }
}

/// Every id in `user`'s listing, or `None` while a listing is refused.
async fn listing(client: &Client, user: &str) -> Option<Vec<ItemId>> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = client.list_by_user(user, after, 500).await.ok()?;
        ids.extend(page.items.iter().map(|s| s.item.id));
        match page.next {
            Some(next) => after = Some(next),
            None => return Some(ids),
        }
    }
}

/// Each partition's digest on `node`.
fn digests(node: &Node) -> Option<Vec<(u64, String)>> {
    let reply = node.ctl(&["replicas", "--digest"]);
    reply["result"]["partitions"]
        .as_array()?
        .iter()
        .map(|p| Some((p["partition"].as_u64()?, p["digest"].as_str()?.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_item_survives_kills_and_restarts_and_replicas_agree() {
    let events: usize = std::env::var("CHORUS_HISTORY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(plain_client(node, dir.path()).await);
    }
    let clients = Arc::new(clients);
    let history = Arc::new(Mutex::new(History::default()));
    let stop = CancellationToken::new();
    let writers: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(writer(
                Arc::clone(&clients),
                i,
                Arc::clone(&history),
                stop.clone(),
            ))
        })
        .collect();

    // The nemesis: one node down at a time (two of three keep the write quorum).
    let mut rng = rand::rng();
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
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    let history = std::mem::take(&mut *history.lock().unwrap());
    let total: usize = history.acked.values().map(Vec::len).sum();
    let unknown: usize = history.unknown.values().map(Vec::len).sum();
    eprintln!("{total} acknowledged, {unknown} given up on, {events} nemesis events");
    assert!(total > 0, "nothing was acknowledged");

    // Every acknowledged id is listed once, and read back by get.
    for (user, acked) in &history.acked {
        let want: BTreeSet<ItemId> = acked.iter().copied().collect();
        let maybe: BTreeSet<ItemId> = history
            .unknown
            .get(user)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        let mut listed = None;
        let started = Instant::now();
        while listed.is_none() && started.elapsed() < Duration::from_secs(30) {
            listed = listing(&clients[0], user).await;
            if listed.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let listed = listed.expect("the listing was refused for 30 s");
        let unique: BTreeSet<ItemId> = listed.iter().copied().collect();
        assert_eq!(unique.len(), listed.len(), "{user}: an id listed twice");
        let missing: Vec<_> = want.difference(&unique).collect();
        assert!(
            missing.is_empty(),
            "{user}: acknowledged but not listed: {missing:?}"
        );
        let strangers: Vec<_> = unique
            .difference(&want)
            .filter(|id| !maybe.contains(id))
            .collect();
        assert!(
            strangers.is_empty(),
            "{user}: listed but never written: {strangers:?}"
        );
        for id in &want {
            let found = clients[0].get(*id).await.unwrap();
            assert!(
                found.is_some(),
                "{user}: {id:?} acknowledged, get finds nothing"
            );
        }
    }

    // The replicas converge: the same records of every partition on every node.
    let started = Instant::now();
    loop {
        let all: Vec<_> = nodes.iter().map(digests).collect();
        let agree = all.iter().all(|d| d.is_some() && *d == all[0]);
        if agree {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replicas still differ after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for client in clients.iter() {
        client.close().await;
    }
}
