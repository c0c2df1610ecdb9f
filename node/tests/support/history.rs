//! The writers and the checks of the history tests, in the spirit of Jepsen: writers
//! submit items with ids they keep, retrying the same id through any node, while a
//! test's nemesis breaks the cluster; at the end every acknowledged id must be read back
//! by `get` and listed exactly once in its user's listing, an id never acknowledged is
//! listed at most once, and every replica of every partition holds the same records
//! (`chorus ctl replicas --digest` agrees on every node).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_client::Client;
use chorus_protocol::{Item, ItemId, Kind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use super::cluster::{Node, plain_client};

/// How many nemesis events to run (a fault and its repair are one each).
pub const EVENTS_ENV: &str = "CHORUS_HISTORY_EVENTS";
/// Seeds the nemesis' choices, to replay a failing run's faults (not its timing).
pub const SEED_ENV: &str = "CHORUS_HISTORY_SEED";

/// Users the writers write for (a few, so that each partition sees many writes).
const USERS: usize = 6;
/// Concurrent writers, each starting with a different node.
const WRITERS: usize = 3;
/// Longest a writer keeps retrying one id before it gives up on it.
const RETRY_FOR: Duration = Duration::from_secs(8);
/// Longest one submit may take before the writer tries the next node.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a listing may be refused, and replicas may differ, once the nemesis is done.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// The nemesis events asked for by [`EVENTS_ENV`], or `default` (the short mode).
pub fn events(default: usize) -> usize {
    std::env::var(EVENTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The nemesis' random choices, seeded by [`SEED_ENV`] or at random; the seed is printed
/// so that a failing run's faults can be replayed.
pub fn nemesis_rng() -> StdRng {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("nemesis seed {seed} (replay with {SEED_ENV}={seed})");
    StdRng::seed_from_u64(seed)
}

/// What the writers learned: ids acknowledged per user, and ids given up on.
#[derive(Default)]
struct History {
    acked: BTreeMap<String, Vec<ItemId>>,
    unknown: BTreeMap<String, Vec<ItemId>>,
}

/// The counts of a finished history.
#[derive(Debug)]
pub struct Tally {
    /// Ids acknowledged.
    pub acked: usize,
    /// Ids given up on: maybe stored, maybe not.
    pub unknown: usize,
}

/// Writers submitting through one client per node until stopped.
pub struct Writers {
    clients: Arc<Vec<Client>>,
    history: Arc<Mutex<History>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Connects a client to each of `nodes` (certificates under `dir`) and starts the
    /// writers.
    pub async fn start(nodes: &[Node], dir: &Path) -> Writers {
        let mut clients = Vec::new();
        for node in nodes {
            clients.push(plain_client(node, dir).await);
        }
        let clients = Arc::new(clients);
        let history = Arc::new(Mutex::new(History::default()));
        let stop = CancellationToken::new();
        let tasks = (0..WRITERS)
            .map(|i| {
                tokio::spawn(writer(
                    Arc::clone(&clients),
                    i,
                    Arc::clone(&history),
                    stop.clone(),
                ))
            })
            .collect();
        Writers {
            clients,
            history,
            stop,
            tasks,
        }
    }

    /// Stops the writers and checks the history against what `nodes` hold: every
    /// acknowledged id listed once and found by `get`, nothing listed that was never
    /// written, and the same records on every replica. Panics on the first violation.
    pub async fn finish(self, nodes: &[Node]) -> Tally {
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
        let history = std::mem::take(&mut *self.history.lock().unwrap());
        let tally = Tally {
            acked: history.acked.values().map(Vec::len).sum(),
            unknown: history.unknown.values().map(Vec::len).sum(),
        };
        eprintln!(
            "{} acknowledged, {} given up on",
            tally.acked, tally.unknown
        );
        assert!(tally.acked > 0, "nothing was acknowledged");
        check_listings(&history, &self.clients[0]).await;
        check_replicas(nodes).await;
        for client in self.clients.iter() {
            client.close().await;
        }
        tally
    }
}

/// Submits one item, the same id through each client in turn until one acknowledges it.
async fn submit_retrying(clients: &[Client], item: &Item, first: usize) -> bool {
    let started = Instant::now();
    let mut at = first;
    while started.elapsed() < RETRY_FOR {
        let client = &clients[at % clients.len()];
        match tokio::time::timeout(SUBMIT_TIMEOUT, client.submit(item.clone())).await {
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

/// Every acknowledged id is listed once and read back by get; nothing is listed that
/// was never written.
async fn check_listings(history: &History, client: &Client) {
    for (user, acked) in &history.acked {
        let want: BTreeSet<ItemId> = acked.iter().copied().collect();
        let maybe: BTreeSet<ItemId> = history
            .unknown
            .get(user)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        let mut listed = None;
        let started = Instant::now();
        while listed.is_none() && started.elapsed() < SETTLE_WITHIN {
            listed = listing(client, user).await;
            if listed.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let listed =
            listed.unwrap_or_else(|| panic!("the listing was refused for {SETTLE_WITHIN:?}"));
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
            let found = client.get(*id).await.unwrap();
            assert!(
                found.is_some(),
                "{user}: {id:?} acknowledged, get finds nothing"
            );
        }
    }
}

/// The replicas converge: the same records of every partition on every node.
async fn check_replicas(nodes: &[Node]) {
    let started = Instant::now();
    loop {
        let all: Vec<_> = nodes.iter().map(digests).collect();
        if all.iter().all(|d| d.is_some() && *d == all[0]) {
            return;
        }
        if started.elapsed() >= SETTLE_WITHIN {
            let differing: Vec<_> = all[0]
                .iter()
                .flatten()
                .filter(|p| all.iter().any(|d| !d.iter().flatten().any(|q| q == *p)))
                .map(|(partition, _)| partition)
                .collect();
            panic!("replicas still differ after {SETTLE_WITHIN:?}: partitions {differing:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
