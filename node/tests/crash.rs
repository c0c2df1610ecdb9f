//! The store of record under repeated SIGKILL: an agent process is killed while
//! concurrent clients submit (singles, batches and resubmissions of ids already
//! acknowledged), restarted on the same data directory, killed again, and so on. After
//! every restart each acknowledged id of the round reads back with its receipt; at the
//! end every acknowledged item is found by id and by its user's listing, and no
//! listing holds an id twice.
//!
//! Rounds: `CHORUS_CRASH_ROUNDS` (default 8 for the regular suite; the long mode in
//! BENCHMARKS.md runs 100). The kill times come from a fixed seed.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chorus_client::{Client, ClientConfig, Credentials, Item, ItemId, Kind, Receipt};
use rand::{Rng, SeedableRng};
use support::{AgentProcess, free_udp_port};
use tokio::sync::Mutex;

/// Users the load spreads over: few enough to list each one completely at the end.
const USERS: usize = 48;
/// Concurrent submitting clients per round.
const WRITERS: usize = 16;

/// What the clients learnt: each acknowledged id with its receipt and user.
type Acked = Arc<Mutex<HashMap<ItemId, (Receipt, String)>>>;

/// A client that gives up at once when the node dies (no retries, short timeouts), so
/// a round ends with its kill instead of with the SDK's patience.
async fn impatient_client(agent: &AgentProcess) -> Client {
    let key = std::fs::read_to_string(agent.data_dir.join("admin.key")).unwrap();
    let credentials =
        Credentials::from_ca_file(agent.data_dir.join("tls/ca.pem"), key.trim()).unwrap();
    let config = ClientConfig {
        max_retries: 0,
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    };
    Client::connect(&[agent.addr], credentials, config)
        .await
        .unwrap()
}

fn rounds() -> usize {
    std::env::var("CHORUS_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(8)
}

/// One writer: submits until the node dies, remembering what was acknowledged, and
/// now and then resubmits an id acknowledged earlier (it must get the first receipt).
async fn write_until_killed(client: Client, acked: Acked, writer: usize, round: usize) {
    let mut n = 0usize;
    loop {
        n += 1;
        let user = format!("user-{}", (writer * 7 + n) % USERS);
        if n.is_multiple_of(9) {
            let old = acked
                .lock()
                .await
                .iter()
                .nth(n % 64)
                .map(|(id, v)| (*id, v.clone()));
            if let Some((id, (receipt, user))) = old {
                let mut again = Item::new(user, Kind::Text);
                again.id = id;
                match client.submit(again).await {
                    Ok(second) => assert_eq!(second, receipt, "a resubmitted id got a new receipt"),
                    Err(_) => return,
                }
                continue;
            }
        }
        if n.is_multiple_of(5) {
            let batch: Vec<Item> = (0..8)
                .map(|i| {
                    let mut item = Item::new(format!("user-{}", (n + i) % USERS), Kind::Bug);
                    item.text = format!("round {round} writer {writer} batch {n}/{i}");
                    item
                })
                .collect();
            let users: Vec<String> = batch.iter().map(|i| i.user_id.clone()).collect();
            match client.submit_batch(batch).await {
                Ok(outcomes) => {
                    let mut acked = acked.lock().await;
                    for (outcome, user) in outcomes.into_iter().zip(users) {
                        if let Ok(receipt) = outcome {
                            acked.insert(receipt.id, (receipt, user));
                        }
                    }
                }
                Err(_) => return,
            }
            continue;
        }
        let mut item = Item::new(user.clone(), Kind::Text);
        item.text = format!("round {round} writer {writer} item {n}");
        match client.submit(item).await {
            Ok(receipt) => {
                acked.lock().await.insert(receipt.id, (receipt, user));
            }
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_under_load_loses_and_duplicates_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_c4a5);
    let acked: Acked = Arc::default();
    let limits = [
        ("CHORUS_LIMITS_PER_USER_PER_MINUTE", "1000000"),
        ("CHORUS_LIMITS_PER_USER_BURST", "1000000"),
    ];
    for round in 0..rounds() {
        let agent = AgentProcess::start_with_env(dir.path(), port, &limits).await;
        let client = impatient_client(&agent).await;
        // Everything acknowledged before this start reads back with its receipt.
        let before: Vec<(ItemId, Receipt)> = acked
            .lock()
            .await
            .iter()
            .map(|(id, (r, _))| (*id, r.clone()))
            .collect();
        for (id, receipt) in before.iter().rev().take(200) {
            let stored = client.get(*id).await.unwrap();
            assert_eq!(
                stored.map(|s| s.receipt).as_ref(),
                Some(receipt),
                "round {round}: {id} lost"
            );
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(write_until_killed(client.clone(), acked.clone(), w, round)))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..600))).await;
        agent.signal("KILL");
        for writer in writers {
            writer.await.unwrap();
        }
        drop(client);
        drop(agent);
    }

    let agent = AgentProcess::start_with_env(dir.path(), port, &limits).await;
    let client = agent.client().await.unwrap();
    let acked = acked.lock().await;
    assert!(
        acked.len() > rounds() * 10,
        "too little was acknowledged: {}",
        acked.len()
    );
    let mut lost = Vec::new();
    for (id, (receipt, _)) in acked.iter() {
        match client.get(*id).await.unwrap() {
            Some(stored) => assert_eq!(
                &stored.receipt, receipt,
                "{id} reads back with another receipt"
            ),
            None => lost.push(*id),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged items lost by id",
        lost.len(),
        acked.len()
    );
    let mut by_user: HashMap<&str, HashSet<ItemId>> = HashMap::new();
    for (id, (_, user)) in acked.iter() {
        by_user.entry(user.as_str()).or_default().insert(*id);
    }
    for (user, ids) in by_user {
        let listed = client.list_all_by_user(user, 1000).await.unwrap();
        let mut seen = HashSet::new();
        for stored in &listed {
            assert!(
                seen.insert(stored.item.id),
                "{user}'s listing holds {} twice",
                stored.item.id
            );
        }
        let missing: Vec<_> = ids.difference(&seen).collect();
        assert!(
            missing.is_empty(),
            "{user}'s listing lacks {} acknowledged items",
            missing.len()
        );
    }
    eprintln!(
        "{} rounds: {} acknowledged items, all read back by id and by listing",
        rounds(),
        acked.len()
    );
    client.close().await;
}
