//! Replication across three `chorus agent` processes with the cluster defaults
//! (replication factor 3, write quorum 2): receipts name the replicas that hold an
//! item; when a partition's leader is SIGKILLed its users are served again by another
//! replica after detection and catch-up, and every acknowledged item stays in their
//! listing, once each, and a get by an id that names the partition asks its leader
//! alone; the killed node restarts, catches up and leads again with
//! nothing lost; and when another replica dies, the listing is still complete. A
//! follower whose copy of a partition was altered on disk (same sequences and epochs,
//! other bytes: shipments alone never notice) is found by anti-entropy and repaired.
//! A follower back from an absence is streamed what it missed under the handoff
//! bandwidth cap, while writes keep committing. A drained node streams its partitions
//! to the members that replace it before it leaves; an aborted drain leaves it in place.
//! A member that joins with an empty store learns its partitions first and leads none
//! of them until it holds them, while writes go on; a cordoned member takes none of a
//! drained member's partitions.

mod support;

use std::collections::BTreeSet;

use rand::Rng;
use std::time::{Duration, Instant};

use chorus_actors::store::{ReplicaRecord, ShipBatch, ShipOutcome, decode_item};
use chorus_client::{Client, ClientConfig, ClientError};
use chorus_protocol::{ErrorCode, Item, ItemId, Kind, Receipt, encode_payload};
use support::cluster::{
    Node, client_of, cluster, cluster_of, cluster_with, digest_of, formed, plain_client, until,
    user_owned_by,
};
use support::open_stopped_store;

/// Submits `item` until it is acknowledged (the same id each time, so a retry never
/// stores it twice), refusals while leadership moves being retried.
async fn submit_acked(client: &Client, item: &Item, limit: Duration) -> Receipt {
    let started = Instant::now();
    loop {
        match client.submit(item.clone()).await {
            Ok(receipt) => return receipt,
            Err(ClientError::Server(
                ErrorCode::Unavailable { .. }
                | ErrorCode::NotOwner { .. }
                | ErrorCode::Timeout
                | ErrorCode::CircuitOpen { .. },
            ))
            | Err(ClientError::Timeout) => {}
            Err(other) => panic!("submit of {:?} failed: {other:?}", item.id),
        }
        assert!(
            started.elapsed() < limit,
            "{:?} not acknowledged within {limit:?}",
            item.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every id in `user`'s listing, each page after the last; `None` while the listing is
/// refused (a replica that does not lead the partition, or is catching up).
async fn listed(client: &Client, user: &str) -> Option<Vec<ItemId>> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        match client.list_by_user(user, after, 100).await {
            Ok(page) => {
                ids.extend(page.items.iter().map(|s| s.item.id));
                match page.next {
                    Some(next) => after = Some(next),
                    None => return Some(ids),
                }
            }
            Err(ClientError::Server(ErrorCode::Unavailable { .. })) | Err(ClientError::Timeout) => {
                return None;
            }
            Err(other) => panic!("listing {user} failed: {other:?}"),
        }
    }
}

/// Waits until `user`'s listing holds exactly `acked`, each once.
async fn complete(client: &Client, user: &str, acked: &[ItemId], what: &str) {
    let want: BTreeSet<ItemId> = acked.iter().copied().collect();
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(ids) = listed(client, user).await {
            let unique: BTreeSet<ItemId> = ids.iter().copied().collect();
            assert_eq!(unique.len(), ids.len(), "{what}: an item listed twice");
            assert!(
                unique.is_superset(&want),
                "{what}: {} acknowledged items missing from the listing",
                want.difference(&unique).count()
            );
            if unique == want {
                return;
            }
            last = Some(unique.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what}: the listing never held the {} acknowledged items ({last:?})",
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_items_survive_a_lost_leader_and_listings_stay_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let via_1 = plain_client(&nodes[0], dir.path()).await;
    let via_2 = plain_client(&nodes[1], dir.path()).await;
    let carol = user_owned_by(&nodes[0], "node-3", "carol");
    let mut acked = Vec::new();

    // Writes are acknowledged once two replicas hold them, and the receipt says which.
    for _ in 0..20 {
        let item = Item::new(carol.clone(), Kind::Text);
        let receipt = submit_acked(&via_1, &item, Duration::from_secs(30)).await;
        assert_eq!(receipt.owner.0, "node-3");
        assert!(
            receipt.replicas.len() >= 2 && receipt.replicas.iter().any(|r| r.0 == "node-3"),
            "replicas {:?}",
            receipt.replicas
        );
        acked.push(item.id);
    }
    complete(&via_1, &carol, &acked, "before the crash").await;

    // The leader dies: another replica takes over after detection and catch-up.
    nodes[2].kill();
    let killed = Instant::now();
    let item = Item::new(carol.clone(), Kind::Text);
    let receipt = submit_acked(&via_1, &item, Duration::from_secs(30)).await;
    eprintln!(
        "first acknowledged write for the dead leader's user {:?} after SIGKILL",
        killed.elapsed()
    );
    assert_ne!(receipt.owner.0, "node-3");
    acked.push(item.id);
    for _ in 0..20 {
        let item = Item::new(carol.clone(), Kind::Text);
        submit_acked(&via_1, &item, Duration::from_secs(10)).await;
        acked.push(item.id);
    }
    complete(&via_1, &carol, &acked, "with the leader down").await;
    // A get by an id that names carol's partition asks its new leader alone: a miss is
    // `None` though node-3 is down. An id that names no partition could be on node-3.
    let partition = nodes[0].ctl(&["ring", "--user", &carol])["result"]["user"]["partition"]
        .as_u64()
        .unwrap() as u16;
    let absent = ItemId::for_partition(partition);
    assert!(matches!(via_1.get(absent).await, Ok(None)));
    assert!(matches!(
        via_1.get(ItemId::generate()).await,
        Err(ClientError::Server(ErrorCode::Unavailable { .. }))
    ));

    // It comes back: it catches up from the others before it leads again.
    nodes[2].start();
    formed(&nodes).await;
    until(
        Duration::from_secs(30),
        "node-3 leading carol again",
        || nodes[0].ctl(&["ring", "--user", &carol])["result"]["user"]["owner"] == "node-3",
    )
    .await;
    complete(&via_1, &carol, &acked, "after the rejoin").await;
    for _ in 0..10 {
        let item = Item::new(carol.clone(), Kind::Text);
        let receipt = submit_acked(&via_1, &item, Duration::from_secs(30)).await;
        assert_eq!(receipt.owner.0, "node-3", "the rejoined node leads again");
        acked.push(item.id);
    }
    complete(
        &via_1,
        &carol,
        &acked,
        "after writes to the rejoined leader",
    )
    .await;

    // Another replica dies: the listing is still complete from the survivors.
    nodes[0].kill();
    complete(&via_2, &carol, &acked, "with node-1 down").await;
    via_1.close().await;
    via_2.close().await;
}

/// Rewrites the second half of `partition`'s records in the stopped node's store with
/// other text under the same sequences and epochs; returns the records as they were.
fn alter_second_half(node: &Node, partition: u16) -> Vec<ReplicaRecord> {
    let store = open_stopped_store(&node.data, &node.name, 128);
    let (records, last) = store.read_partition(partition, 0, 64 << 20).unwrap();
    let keep = records[records.len() / 2].sequence;
    let altered: Vec<ReplicaRecord> = records
        .iter()
        .filter(|r| r.sequence > keep)
        .map(|r| {
            let mut stored = decode_item(&r.body).unwrap();
            stored.item.text.push_str(" (altered on disk)");
            ReplicaRecord {
                body: encode_payload(&stored),
                ..r.clone()
            }
        })
        .collect();
    let epochs = store.partition_epochs(partition);
    store.truncate_after(partition, keep).unwrap();
    let outcome = store
        .accept_shipment(vec![ShipBatch {
            partition,
            epoch: epochs.promised,
            history: epochs.history,
            prev: keep,
            records: altered,
        }])
        .unwrap();
    assert_eq!(outcome, vec![ShipOutcome::Appended { last }]);
    let now = store.read_partition(partition, 0, 64 << 20).unwrap().0;
    assert_eq!(now.len(), records.len());
    assert_ne!(now, records, "the copy differs from the leader's");
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_copy_altered_on_disk_is_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let client = plain_client(&nodes[0], dir.path()).await;
    let dora = user_owned_by(&nodes[0], "node-1", "dora");
    let partition = nodes[0].ctl(&["ring", "--user", &dora])["result"]["user"]["partition"]
        .as_u64()
        .unwrap();
    let mut acked = Vec::new();
    for n in 0..40 {
        let mut item = Item::new(dora.clone(), Kind::Text);
        item.text = format!("note {n}");
        submit_acked(&client, &item, Duration::from_secs(30)).await;
        acked.push(item.id);
    }
    until(Duration::from_secs(30), "three equal copies", || {
        let first = digest_of(&nodes[0], partition);
        first.as_ref().is_some_and(|(records, _)| *records == 40)
            && nodes.iter().all(|n| digest_of(n, partition) == first)
    })
    .await;
    let leader_copy = digest_of(&nodes[0], partition);

    nodes[2].kill();
    alter_second_half(&nodes[2], partition as u16);
    nodes[2].start();
    formed(&nodes).await;

    // node-3 may be back before anyone saw it down: its new run voids the pair's
    // earlier verdict all the same.
    let took = until(Duration::from_secs(60), "node-3's copy repaired", || {
        digest_of(&nodes[2], partition) == leader_copy
    })
    .await;
    eprintln!("anti-entropy repaired node-3's copy {took:?} after it was back");
    let found = &nodes[0].ctl(&["replicas"])["result"]["anti_entropy"];
    assert!(found["repaired"].as_u64() >= Some(1), "{found}");
    assert!(found["records_repaired"].as_u64() >= Some(1), "{found}");
    assert_eq!(digest_of(&nodes[1], partition), leader_copy);
    complete(&client, &dora, &acked, "after the repair").await;
    client.close().await;
}

/// `ctl handoff` on `node`.
fn handoff(node: &Node) -> serde_json::Value {
    node.ctl(&["handoff"])["result"].clone()
}

/// `peer`'s row of `ctl peers` on `node`.
fn peer_row(node: &Node, peer: &str) -> Option<serde_json::Value> {
    node.ctl(&["peers"])["result"]["peers"]
        .as_array()?
        .iter()
        .find(|row| row["id"] == peer)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_follower_is_streamed_what_it_missed_under_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    // 256 KiB/s: a follower 1.5 MiB behind takes a few seconds, throttled.
    let mut nodes = cluster_with(dir.path(), "handoff_bytes_per_sec = 262144");
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let client = plain_client(&nodes[0], dir.path()).await;
    // Four users node-1 leads, each within its per-user rate limit's burst.
    let users: Vec<String> = ["erin", "fred", "gina", "hugo"]
        .iter()
        .map(|prefix| user_owned_by(&nodes[0], "node-1", prefix))
        .collect();
    let mut acked: Vec<Vec<ItemId>> = vec![Vec::new(); users.len()];
    let write = |user: &str, n: usize| {
        let mut item = Item::new(user.to_string(), Kind::Text);
        item.text = format!("{n:08} {}", "x".repeat(7_000));
        item
    };
    nodes[2].kill();
    until(
        Duration::from_secs(30),
        "node-1 sees node-3's link drop",
        || {
            peer_row(&nodes[0], "node-3")
                .is_some_and(|p| p["link"] != "up" && p["rtt_us"].is_null())
        },
    )
    .await;
    for n in 0..55 {
        for (user, acked) in users.iter().zip(&mut acked) {
            let item = write(user, n);
            submit_acked(&client, &item, Duration::from_secs(30)).await;
            acked.push(item.id);
        }
    }
    nodes[2].start();
    formed(&nodes).await;
    // Writes commit while node-3 catches up (node-1 and node-2 form the quorum).
    for (user, acked) in users.iter().zip(&mut acked) {
        let item = write(user, 55);
        submit_acked(&client, &item, Duration::from_secs(10)).await;
        acked.push(item.id);
    }
    until(Duration::from_secs(60), "node-3 caught up", || {
        let report = handoff(&nodes[0]);
        report["pairs_left"] == 0 && report["records_left"] == 0
    })
    .await;
    until(
        Duration::from_secs(30),
        "node-1's peers show both links up, in step",
        || {
            ["node-2", "node-3"].iter().all(|id| {
                peer_row(&nodes[0], id).is_some_and(|p| {
                    p["link"] == "up"
                        && p["member"] == true
                        && p["rtt_us"].as_u64().is_some()
                        && p["breaker"] == "closed"
                        && p["replication"]["behind"] == 0
                        && p["replication"]["partitions"].as_u64() > Some(0)
                })
            })
        },
    )
    .await;
    let report = handoff(&nodes[0]);
    assert!(
        report["bytes_done"].as_u64() >= Some(1 << 19),
        "the first MiB went as catch-up (the last batch completes the follower): {report}"
    );
    assert!(report["throttled"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["limit_bytes_per_sec"], 262_144);
    for (user, acked) in users.iter().zip(&acked) {
        let partition = nodes[0].ctl(&["ring", "--user", user])["result"]["user"]["partition"]
            .as_u64()
            .unwrap();
        let leader = digest_of(&nodes[0], partition);
        assert!(leader.as_ref().is_some_and(|(records, _)| *records >= 56));
        until(
            Duration::from_secs(30),
            "node-3 holds node-1's copy",
            || digest_of(&nodes[2], partition) == leader,
        )
        .await;
        complete(&client, user, acked, "after the catch-up").await;
    }
    client.close().await;
}

/// Each partition's last sequence on `node` (`ctl replicas`); `None` when it does not
/// answer.
fn lasts(node: &Node) -> Option<Vec<u64>> {
    node.ctl(&["replicas"])["result"]["partitions"]
        .as_array()?
        .iter()
        .map(|row| row["last"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_answers_its_writers_instead_of_holding_them() {
    let dir = tempfile::tempdir().unwrap();
    // A commit timeout far beyond the shutdown grace: a writer held until it ends would
    // see its connection close instead of an answer.
    let mut nodes = cluster_of(dir.path(), 3, "commit_timeout_ms = 60000");
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let dave = user_owned_by(&nodes[0], "node-3", "dave");
    // Straight to node-3, no retries: each answer is the one node-3 gave.
    let config = ClientConfig {
        routing: None,
        max_retries: 0,
        ..ClientConfig::default()
    };
    let client = client_of(&nodes[2], dir.path(), config).await.unwrap();
    submit_acked(
        &client,
        &Item::new(dave.clone(), Kind::Text),
        Duration::from_secs(30),
    )
    .await;
    // Both followers die: node-3 still leads dave's partition, and its writers wait for
    // a quorum that cannot form.
    nodes[0].kill();
    nodes[1].kill();
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (client, dave) = (client.clone(), dave.clone());
            tokio::spawn(async move { client.submit(Item::new(dave, Kind::Text)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "the writers wait for a quorum"
    );
    // Stopped, node-3 answers them at once instead of holding them until the commit
    // timeout (its connection would close under them at the end of the shutdown grace).
    nodes[2].terminate();
    for writer in writers {
        match writer.await.unwrap() {
            Err(ClientError::Server(ErrorCode::Unavailable { .. })) => {}
            other => panic!("a waiting writer was not answered: {other:?}"),
        }
    }
    until(Duration::from_secs(30), "node-3 stopped", || {
        nodes[2].exited().is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_streams_its_partitions_before_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    // Four members, three replicas: each partition gains one member when node-4 goes.
    // A copy left behind is shed after the down grace.
    let mut nodes = cluster_of(
        dir.path(),
        4,
        "handoff_bytes_per_sec = 131072\ndown_grace_ms = 8000",
    );
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    // Written while the joiners still warm, a partition can be left on a fourth member.
    until(
        Duration::from_secs(30),
        "every member warm everywhere",
        || {
            nodes.iter().all(|node| {
                nodes
                    .iter()
                    .all(|m| standing_of(node, &m.name).as_deref() == Some("warm"))
            })
        },
    )
    .await;
    let client = plain_client(&nodes[0], dir.path()).await;
    let users: Vec<String> = ["ivan", "jade", "kira", "liam", "mona", "nils"]
        .iter()
        .map(|prefix| user_owned_by(&nodes[0], "node-4", prefix))
        .collect();
    let mut acked: Vec<Vec<ItemId>> = vec![Vec::new(); users.len()];
    for n in 0..30 {
        for (user, acked) in users.iter().zip(&mut acked) {
            let mut item = Item::new(user.clone(), Kind::Text);
            item.text = format!("{n:08} {}", "y".repeat(7_000));
            submit_acked(&client, &item, Duration::from_secs(30)).await;
            acked.push(item.id);
        }
    }
    let holders = |partition: usize| {
        nodes
            .iter()
            .filter_map(lasts)
            .filter(|l| l[partition] > 0)
            .count()
    };
    let partitions: Vec<usize> = users
        .iter()
        .map(|u| {
            nodes[0].ctl(&["ring", "--user", u])["result"]["user"]["partition"]
                .as_u64()
                .unwrap() as usize
        })
        .collect();
    until(Duration::from_secs(30), "three replicas of each", || {
        partitions.iter().all(|&p| holders(p) == 3)
    })
    .await;

    // A drain moves data to members outside the replica sets; aborted, the node stays.
    let started = nodes[3].ctl(&["drain"]);
    assert!(started["result"]["streams"].as_u64() > Some(0), "{started}");
    until(Duration::from_secs(30), "records streamed", || {
        nodes[3].ctl(&["handoff"])["result"]["drain"]["records"].as_u64() >= Some(1)
    })
    .await;
    let aborting = nodes[3].ctl(&["handoff", "--abort"]);
    assert!(
        ["aborting", "aborted"]
            .contains(&aborting["result"]["drain"]["state"].as_str().unwrap_or("")),
        "{aborting}"
    );
    until(Duration::from_secs(10), "the drain aborted", || {
        nodes[3].ctl(&["handoff"])["result"]["drain"]["state"] == "aborted"
    })
    .await;
    assert!(
        partitions.iter().any(|&p| holders(p) == 4),
        "a fourth member holds a drained partition"
    );
    // The copies the aborted drain streamed lie outside the replica sets: shed once
    // unchanged for the grace, only those.
    until(
        Duration::from_secs(40),
        "the copies the aborted drain left are shed",
        || partitions.iter().all(|&p| holders(p) == 3),
    )
    .await;
    for (user, acked) in users.iter().zip(&acked) {
        complete(&client, user, acked, "after the copies are shed").await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        nodes[3].exited().is_none(),
        "an aborted drain leaves the node running"
    );

    // Drained to the end, it leaves and stops; every item is on the three left.
    nodes[3].ctl(&["drain"]);
    until(
        Duration::from_secs(60),
        "node-4 stopped after its drain",
        || nodes[3].exited().is_some(),
    )
    .await;
    assert!(nodes[3].exited().unwrap().success());
    for &p in &partitions {
        let last = lasts(&nodes[0]).unwrap()[p];
        assert!(nodes[..3].iter().all(|n| lasts(n).unwrap()[p] == last));
    }
    for (user, acked) in users.iter().zip(&acked) {
        complete(&client, user, acked, "after the drain").await;
    }
    client.close().await;
}

/// Each partition's role on `node` (`voter`, `learner` or `none`).
fn roles(node: &Node) -> Option<Vec<String>> {
    node.ctl(&["replicas"])["result"]["partitions"]
        .as_array()?
        .iter()
        .map(|row| row["role"].as_str().map(String::from))
        .collect()
}

/// Whether `node` says it is still warming up.
fn warming(node: &Node) -> Option<bool> {
    node.ctl(&["status"])["result"]["replication"]["warming"].as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_learns_its_partitions_before_it_votes_or_leads() {
    let dir = tempfile::tempdir().unwrap();
    // Capped streams (a partition that fits in one shipment still goes at once: the cap
    // holds back only shipments that leave a follower short).
    let mut nodes = cluster_of(dir.path(), 4, "handoff_bytes_per_sec = 131072");
    for node in &mut nodes[..3] {
        node.start();
    }
    formed(&nodes[..3]).await;
    let client = plain_client(&nodes[0], dir.path()).await;
    let users: Vec<String> = (0..16).map(|i| format!("joiner-{i}")).collect();
    let mut acked: Vec<Vec<ItemId>> = vec![Vec::new(); users.len()];
    let write = |n: usize, user: &str| {
        let mut item = Item::new(user.to_string(), Kind::Text);
        // Random text: the log compresses what repeats.
        let noise: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(6_000)
            .map(char::from)
            .collect();
        item.text = format!("{n:08} {noise}");
        item
    };
    for n in 0..10 {
        for (user, acked) in users.iter().zip(&mut acked) {
            let item = write(n, user);
            submit_acked(&client, &item, Duration::from_secs(30)).await;
            acked.push(item.id);
        }
    }
    let before = lasts(&nodes[0]).unwrap();

    // node-4 joins empty: while it warms it leads nothing, the others stream it its
    // partitions as a learner, and every write still commits.
    nodes[3].start();
    let started = Instant::now();
    let mut saw_learner = false;
    let mut n = 10;
    loop {
        match warming(&nodes[3]) {
            Some(false) => break,
            Some(true) => {
                let rows = nodes[3].ctl(&["replicas"]);
                let rows = rows["result"]["partitions"].as_array().unwrap();
                // It may turn warm between the two questions: its rows are judged only
                // if it still warms after them.
                if warming(&nodes[3]) != Some(true) {
                    continue;
                }
                assert!(
                    rows.iter().all(|r| r["leader"] == false),
                    "a warming member leads"
                );
                // Until it has heard the others' standings, node-4's own view counts
                // nobody warm and lets everyone vote; once it has, it only learns.
                assert!(
                    !saw_learner || rows.iter().all(|r| r["role"] != "voter"),
                    "a warming member votes"
                );
                saw_learner |= rows.iter().any(|r| r["role"] == "learner");
            }
            None => {}
        }
        for (user, acked) in users.iter().zip(&mut acked).take(4) {
            let item = write(n, user);
            submit_acked(&client, &item, Duration::from_secs(10)).await;
            acked.push(item.id);
        }
        n += 1;
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "node-4 never turned warm"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("node-4 warm {:?} after it started", started.elapsed());
    assert!(saw_learner, "node-4 was never seen learning a partition");

    // Warm, it votes in its partitions and already holds what was written before it
    // joined; then it leads some of them.
    let held = lasts(&nodes[3]).unwrap();
    let mine: Vec<usize> = until_some(Duration::from_secs(10), || {
        let roles = roles(&nodes[3])?;
        let mine: Vec<usize> = (0..roles.len()).filter(|&p| roles[p] == "voter").collect();
        (!mine.is_empty()).then_some(mine)
    })
    .await;
    for &p in &mine {
        assert!(
            held[p] >= before[p],
            "partition {p}: {} of {}",
            held[p],
            before[p]
        );
    }
    eprintln!(
        "node-4 votes in {} partitions holding {} records ({} written before it joined)",
        mine.len(),
        mine.iter().map(|&p| held[p]).sum::<u64>(),
        mine.iter().map(|&p| before[p]).sum::<u64>()
    );
    until(Duration::from_secs(20), "node-4 leads partitions", || {
        nodes[3].ctl(&["replicas"])["result"]["leading"].as_u64() > Some(0)
    })
    .await;
    for (user, acked) in users.iter().zip(&acked) {
        complete(&client, user, acked, "after the join").await;
    }

    // A member that holds data but no standings (as after an upgrade from a release
    // without them) was a member already: it starts warm.
    nodes[1].kill();
    std::fs::remove_file(nodes[1].data.join("cluster-standings.json")).unwrap();
    nodes[1].start();
    let standing = until_some(Duration::from_secs(20), || warming(&nodes[1])).await;
    assert!(!standing, "a member with data started warming");
}

/// Polls `probe` until it gives a value, for up to `limit`.
async fn until_some<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < limit, "nothing within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `member`'s standing as `node` knows it.
fn standing_of(node: &Node, member: &str) -> Option<String> {
    node.ctl(&["members"])["result"]["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == member)
        .and_then(|m| m["standing"].as_str().map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_member_keeps_its_partitions_and_takes_none_of_a_drained_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster_of(dir.path(), 5, "");
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let leaders_before = nodes[0].ring()["nodes"].clone();
    let voting = |node: &Node| -> BTreeSet<usize> {
        let roles = roles(node).unwrap();
        (0..roles.len()).filter(|&p| roles[p] == "voter").collect()
    };
    let kept = voting(&nodes[4]);

    // Cordoning moves nothing; every member learns it.
    let cordoned = nodes[4].ctl(&["cordon"]);
    assert_eq!(cordoned["result"]["cordoned"], true, "{cordoned}");
    assert_eq!(
        cordoned["result"]["partitions_kept"].as_u64(),
        Some(kept.len() as u64)
    );
    until(
        Duration::from_secs(15),
        "the cordon known everywhere",
        || {
            nodes
                .iter()
                .all(|n| standing_of(n, "node-5").as_deref() == Some("warm, cordoned"))
        },
    )
    .await;
    let ring = nodes[0].ring();
    assert_eq!(ring["nodes"], leaders_before, "cordoning moved leaders");
    assert_eq!(ring["moved_last_change"], 0);
    assert_eq!(voting(&nodes[4]), kept);

    // A cordon outlives a restart.
    nodes[4].kill();
    nodes[4].start();
    until(
        Duration::from_secs(30),
        "node-5 back, still cordoned",
        || {
            nodes[4].ctl(&["status"])["result"]["replication"]["cordoned"] == true
                && nodes[..4]
                    .iter()
                    .all(|n| n.sees("node-5").is_some_and(|(s, _)| s == "alive"))
        },
    )
    .await;

    // node-4 drains and leaves: its partitions go to the three others, none to node-5.
    let drain = nodes[3].ctl(&["drain"]);
    assert!(drain["result"]["streams"].as_u64() > Some(0), "{drain}");
    until(
        Duration::from_secs(60),
        "node-4 stopped after its drain",
        || nodes[3].exited().is_some(),
    )
    .await;
    until(Duration::from_secs(30), "the ring without node-4", || {
        nodes
            .iter()
            .filter(|n| n.name != "node-4")
            .all(|n| n.ring()["nodes"].as_array().is_some_and(|a| a.len() == 4))
    })
    .await;
    let after = voting(&nodes[4]);
    assert!(
        after.is_subset(&kept),
        "node-5 took {:?}",
        after.difference(&kept).collect::<Vec<_>>()
    );
    assert_eq!(after, kept, "node-5 kept its partitions");

    // Lifted, the cordon is gone everywhere.
    let lifted = nodes[4].ctl(&["uncordon"]);
    assert_eq!(lifted["result"]["cordoned"], false, "{lifted}");
    until(
        Duration::from_secs(15),
        "the cordon lifted everywhere",
        || {
            nodes[..3]
                .iter()
                .all(|n| standing_of(n, "node-5").as_deref() == Some("warm"))
        },
    )
    .await;
}
