//! Backups end to end: `chorus ctl snapshot` on a running agent while clients keep
//! writing, `chorus restore` into a fresh data dir, and an agent started on it that
//! reads back, by id and by listing, every item acknowledged before the snapshot began.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chorus_client::{Item, ItemId, Kind, Receipt};
use serde_json::Value;
use support::{AgentProcess, chorus_bin, free_udp_port};
use tokio::sync::Mutex;

/// Users the load spreads over.
const USERS: usize = 12;
/// Concurrent writers.
const WRITERS: usize = 4;
/// Acknowledged items to wait for before the snapshot.
const BEFORE_SNAPSHOT: usize = 600;

type Acked = Arc<Mutex<HashMap<ItemId, (Receipt, String)>>>;

/// Small segments, so the snapshot links many sealed ones and copies the last; no
/// per-user limit in the way.
const ENV: &[(&str, &str)] = &[
    ("CHORUS_LIMITS_PER_USER_PER_MINUTE", "1000000"),
    ("CHORUS_LIMITS_PER_USER_BURST", "1000000"),
    ("CHORUS_STORE_LOG_SEGMENT_BYTES", "65536"),
];

fn chorus(args: &[&str]) -> Output {
    Command::new(chorus_bin())
        .args(args)
        .env_remove("CHORUS_CONTROL_SOCKET")
        .output()
        .unwrap()
}

fn json_of(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text:?}; stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

async fn write_until_stopped(
    client: chorus_client::Client,
    acked: Acked,
    stop: Arc<AtomicBool>,
    writer: usize,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let batch: Vec<Item> = (0..6)
            .map(|i| {
                let mut item = Item::new(format!("user-{}", (writer + n + i) % USERS), Kind::Text);
                item.text = format!("writer {writer} batch {n}/{i}");
                item
            })
            .collect();
        let users: Vec<String> = batch.iter().map(|i| i.user_id.clone()).collect();
        // Only what was acknowledged counts; a refusal under load is not a failure here.
        let Ok(outcomes) = client.submit_batch(batch).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut acked = acked.lock().await;
        for (outcome, user) in outcomes.into_iter().zip(users) {
            if let Ok(receipt) = outcome {
                acked.insert(receipt.id, (receipt, user));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_under_load_restores_every_item_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let agent = AgentProcess::start_with_env(&live, free_udp_port(), ENV).await;
    let client = agent.client().await.unwrap();
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(write_until_stopped(
                client.clone(),
                acked.clone(),
                stop.clone(),
                w,
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().await.len() < BEFORE_SNAPSHOT {
        assert!(Instant::now() < deadline, "the writers are stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Everything acknowledged before the snapshot began; the writers go on meanwhile.
    let before = acked.lock().await.clone();
    let snap = dir.path().join("snap");
    let ctl = {
        let (live, snap) = (live.clone(), snap.clone());
        tokio::task::spawn_blocking(move || {
            chorus(&[
                "ctl",
                "--data-dir",
                live.to_str().unwrap(),
                "snapshot",
                snap.to_str().unwrap(),
                "--json",
            ])
        })
    };
    let snapshot = tokio::time::timeout(Duration::from_secs(30), ctl)
        .await
        .expect("the snapshot did not finish in time")
        .unwrap();
    // The writers were still at it: more is acknowledged after the snapshot began.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().await.len() <= before.len() {
        assert!(Instant::now() < deadline, "the writers stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(snapshot.status.success(), "{snapshot:?}");
    let snapshot = json_of(&snapshot);
    let result = &snapshot["result"];
    assert_eq!(result["kind"], "snapshot");
    assert_eq!(result["segments_done"], result["segments_total"]);
    assert_eq!(result["bytes_done"], result["bytes_total"]);
    assert!(result["segments_total"].as_u64() > Some(1), "{result}");
    assert!(
        result["records"].as_u64() >= Some(before.len() as u64),
        "{result}"
    );
    drop(client);
    drop(agent);

    let check = chorus(&["restore", "--from", snap.to_str().unwrap(), "--check"]);
    assert!(check.status.success(), "{check:?}");

    let restored = dir.path().join("restored");
    let restore = chorus(&[
        "restore",
        "--from",
        snap.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--json",
    ]);
    assert!(restore.status.success(), "{restore:?}");
    let report = json_of(&restore);
    assert!(
        report["items"].as_u64() >= Some(before.len() as u64),
        "{report}"
    );
    // The API keys are restored; the operator keeps the admin key's file.
    std::fs::copy(live.join("admin.key"), restored.join("admin.key")).unwrap();

    let again = chorus(&[
        "restore",
        "--from",
        snap.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success(),
        "a non-empty data dir must be refused"
    );

    let agent = AgentProcess::start_with_env(&restored, free_udp_port(), ENV).await;
    let client = agent.client().await.unwrap();
    check_everything(&client, &before).await;
}

/// Every item reads back by id with its receipt, and each user's listing holds them.
async fn check_everything(
    client: &chorus_client::Client,
    before: &HashMap<ItemId, (Receipt, String)>,
) {
    let mut lost = Vec::new();
    for (id, (receipt, _)) in before {
        match client.get(*id).await.unwrap() {
            Some(stored) => assert_eq!(&stored.receipt, receipt, "{id} reads back changed"),
            None => lost.push(*id),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} items lost by id",
        lost.len(),
        before.len()
    );
    let mut by_user: HashMap<&str, HashSet<ItemId>> = HashMap::new();
    for (id, (_, user)) in before {
        by_user.entry(user.as_str()).or_default().insert(*id);
    }
    for (user, ids) in by_user {
        let listed: HashSet<ItemId> = client
            .list_all_by_user(user, 1000)
            .await
            .unwrap()
            .iter()
            .map(|s| s.item.id)
            .collect();
        let missing = ids.difference(&listed).count();
        assert_eq!(missing, 0, "{user}'s listing lacks {missing} items");
    }
}
