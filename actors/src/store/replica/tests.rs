use std::path::Path;
use std::time::Duration;

use chorus_protocol::{Item, ItemId, Kind, NodeId, Status};
use proptest::prelude::*;

use super::*;
use crate::store::{Durability, LogConfig, RetireStep, StoreConfig, Write};

const PARTITIONS: u16 = 4;

fn config(path: &Path, segment_bytes: u64) -> StoreConfig {
    StoreConfig {
        path: path.to_path_buf(),
        node: NodeId("node-a".into()),
        partitions: PARTITIONS,
        durability: Durability::Flush,
        log: LogConfig {
            segment_bytes,
            retire_dead_fraction: 0.5,
            // Only the tests drive retirement.
            retire_interval: Duration::from_secs(3600),
            ..LogConfig::default()
        },
    }
}

fn open(path: &Path) -> Store {
    Store::open(config(path, crate::store::log::DEFAULT_SEGMENT_BYTES)).unwrap()
}

/// `n` user ids of `partition`.
fn users_of(partition: PartitionId, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|u| partition_of(u, PARTITIONS) == partition)
        .take(n)
        .collect()
}

fn item(user: &str, text: &str) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.text = text.into();
    item
}

/// An item about a function named by the text's first word, rated by its length: so
/// that the scenarios here also move the function stats.
fn item_about(user: &str, text: &str) -> Item {
    let mut item = item(user, text);
    item.function = Some(chorus_protocol::FunctionRef {
        name: text.split(' ').next().unwrap_or("f").into(),
        version: "1".into(),
    });
    item.rating = Some((text.len() % 5) as u8 + 1);
    item.metrics = Some(chorus_protocol::ExecutionMetrics {
        success_rate: 1.0,
        avg_duration_ms: text.len() as f64,
        error_rate: 0.0,
    });
    item
}

/// The function stats of every partition, once everything stored is indexed.
fn function_stats(
    store: &Store,
) -> std::collections::BTreeMap<chorus_protocol::FunctionRef, chorus_protocol::VersionStats> {
    store.flush().unwrap();
    store.function_stats(|_| true)
}

/// `count` items of users in `partition` about function `tag`, stored one batch.
fn write(store: &Store, partition: PartitionId, count: usize, tag: &str) -> Vec<ItemId> {
    write_with(store, partition, count, tag, item_about)
}

/// [`write`] with items that name no function: a compaction test's segment arithmetic
/// counts their bytes.
fn write_bare(store: &Store, partition: PartitionId, count: usize, tag: &str) -> Vec<ItemId> {
    write_with(store, partition, count, tag, item)
}

fn write_with(
    store: &Store,
    partition: PartitionId,
    count: usize,
    tag: &str,
    make: fn(&str, &str) -> Item,
) -> Vec<ItemId> {
    let users = users_of(partition, 3);
    let items: Vec<Item> = (0..count)
        .map(|n| make(&users[n % users.len()], &format!("{tag} {n}")))
        .collect();
    let ids = items.iter().map(|i| i.id).collect();
    for outcome in store.apply(items) {
        outcome.unwrap();
    }
    ids
}

/// Everything of `partition` after `after`, read in pages of `max_bytes`.
fn read_all(
    store: &Store,
    partition: PartitionId,
    after: u64,
    max_bytes: usize,
) -> Vec<ReplicaRecord> {
    let mut out: Vec<ReplicaRecord> = Vec::new();
    let mut from = after;
    loop {
        let (page, last) = store.read_partition(partition, from, max_bytes).unwrap();
        let Some(end) = page.last().map(|r| r.sequence) else {
            assert!(from >= last || out.iter().all(|r| r.sequence <= last));
            return out;
        };
        assert!(page.windows(2).all(|w| w[0].sequence < w[1].sequence));
        assert!(page[0].sequence > from);
        out.extend(page);
        from = end;
    }
}

/// Ships every partition of `leader` after the follower's last, in `epoch`.
fn ship_all(leader: &Store, follower: &Store, epoch: u64) -> Vec<ShipOutcome> {
    let batches = (0..PARTITIONS)
        .map(|p| {
            let prev = follower.last_sequence(p);
            ShipBatch {
                partition: p,
                epoch,
                history: leader.partition_epochs(p).history,
                prev,
                records: read_all(leader, p, prev, 1 << 20),
            }
        })
        .collect();
    follower.accept_shipment(batches).unwrap()
}

/// Every user's listing of the users of every partition.
fn listings(store: &Store) -> Vec<Vec<StoredItem>> {
    (0..PARTITIONS)
        .flat_map(|p| users_of(p, 3))
        .map(|u| store.list_by_user(&u, None, 1000).unwrap().0)
        .collect()
}

// --- Epoch arithmetic ---

#[test]
fn epoch_at_is_the_epoch_of_the_latest_start_at_or_below() {
    let epochs = PartitionEpochs {
        promised: 3,
        history: vec![(1, 1), (2, 4), (3, 9)],
    };
    let cases = [(0, 0), (1, 1), (3, 1), (4, 2), (8, 2), (9, 3), (1000, 3)];
    for (sequence, epoch) in cases {
        assert_eq!(epochs.epoch_at(sequence), epoch, "at {sequence}");
    }
    assert_eq!(PartitionEpochs::default().epoch_at(7), 0);
}

#[test]
fn divergence_in_the_leader_epoch_scenarios() {
    let mine = |history: Vec<(u64, u64)>| PartitionEpochs {
        promised: 0,
        history,
    };
    // (my history, my last, leader's history, expected)
    type History = Vec<(u64, u64)>;
    let cases: Vec<(History, u64, History, Option<u64>)> = vec![
        // The old leader wrote 5 unacknowledged; the new epoch started at 5.
        (vec![(1, 1)], 5, vec![(1, 1), (2, 5)], Some(4)),
        // It wrote 4 and 5; the new epoch started at 4.
        (vec![(1, 1)], 5, vec![(1, 1), (2, 4)], Some(3)),
        // Fully behind: everything I have, the leader has.
        (vec![(1, 1)], 2, vec![(1, 1), (2, 4)], None),
        (vec![], 0, vec![(1, 1), (2, 4)], None),
        // Same log.
        (vec![(1, 1), (2, 4)], 6, vec![(1, 1), (2, 4)], None),
        // Up to date, the leader's new epoch has written nothing yet.
        (vec![(1, 1), (2, 4)], 6, vec![(1, 1), (2, 4), (3, 7)], None),
        // Records from before any epoch, kept by the first leader...
        (vec![], 10, vec![(1, 11)], None),
        // ...or not: the first leader had fewer.
        (vec![], 10, vec![(1, 5)], Some(4)),
        // I led epoch 3, which the leader never saw; it has epoch 2 from 6 on.
        (
            vec![(1, 1), (3, 8)],
            9,
            vec![(1, 1), (2, 6), (4, 10)],
            Some(5),
        ),
        // The leader's history is capped: its first entry starts later than mine.
        (
            vec![(1, 1), (2, 10), (3, 20)],
            25,
            vec![(3, 20), (4, 30)],
            None,
        ),
    ];
    for (history, last, leader, expected) in cases {
        assert_eq!(
            mine(history.clone()).divergence(last, &leader),
            expected,
            "mine {history:?} to {last}, leader {leader:?}"
        );
    }
}

#[test]
fn adopt_keeps_my_older_entries_then_the_leaders_up_to_last() {
    let mut epochs = PartitionEpochs {
        promised: 4,
        history: vec![(1, 1), (3, 8)],
    };
    epochs.adopt(&[(2, 6), (4, 10)], 7);
    assert_eq!(epochs.history, vec![(1, 1), (2, 6)]);
    epochs.adopt(&[(2, 6), (4, 10)], 10);
    assert_eq!(epochs.history, vec![(1, 1), (2, 6), (4, 10)]);
    assert_eq!(epochs.promised, 4, "adopting never touches the promise");

    let long: Vec<(u64, u64)> = (1..=40).map(|e| (e + 1, e * 10)).collect();
    let mut capped = PartitionEpochs {
        promised: 0,
        history: vec![(1, 1)],
    };
    capped.adopt(&long[8..], 1000);
    assert_eq!(capped.history.len(), MAX_EPOCH_HISTORY);
    assert_eq!(capped.history.last(), long.last());
}

#[test]
fn begin_pushes_replaces_an_empty_epoch_and_caps() {
    let mut epochs = PartitionEpochs::default();
    epochs.begin(1, 1);
    epochs.begin(2, 5);
    assert_eq!(epochs.history, vec![(1, 1), (2, 5)]);
    // Epoch 2 wrote nothing before epoch 3 began.
    epochs.begin(3, 5);
    assert_eq!(epochs.history, vec![(1, 1), (3, 5)]);
    // Beginning the current epoch again is idempotent.
    epochs.begin(3, 9);
    assert_eq!(epochs.history, vec![(1, 1), (3, 5)]);
    for e in 4..100 {
        epochs.begin(e, e * 10);
    }
    assert_eq!(epochs.history.len(), MAX_EPOCH_HISTORY);
    assert_eq!(epochs.history.last(), Some(&(99, 990)));
}

/// A log as the epoch of each record (index 0 is sequence 1) and its history.
fn history_of(log: &[u64]) -> Vec<(u64, u64)> {
    let mut history: Vec<(u64, u64)> = Vec::new();
    for (i, &epoch) in log.iter().enumerate() {
        if epoch > 0 && history.last().is_none_or(|&(e, _)| e != epoch) {
            history.push((epoch, i as u64 + 1));
        }
    }
    history
}

proptest! {
    /// A follower that copied a prefix of the leader's log and then, maybe, wrote
    /// records of an epoch the leader never had: divergence names exactly the last
    /// record both logs share.
    #[test]
    fn divergence_is_the_last_shared_record(
        runs in prop::collection::vec(1u64..6, 1..6),
        keep in 0usize..30,
        rogue_len in 0usize..5,
        rogue_pick in any::<prop::sample::Index>(),
    ) {
        // Leader epochs 2, 4, 6, ... with the run lengths; a last epoch, empty so far.
        let mut leader = Vec::new();
        for (i, &len) in runs.iter().enumerate() {
            leader.extend(std::iter::repeat_n(2 * (i as u64 + 1), len as usize));
        }
        let keep = keep.min(leader.len());
        let mut follower = leader[..keep].to_vec();
        let top = 2 * (runs.len() as u64 + 1);
        let mut leader_history = history_of(&leader);
        leader_history.push((top, leader.len() as u64 + 1));
        let floor = follower.last().copied().unwrap_or(0);
        // An odd epoch above my last and below the leader's: promised, then fenced.
        let rogues: Vec<u64> = (floor + 1..top).filter(|e| e % 2 == 1).collect();
        if rogue_len > 0 && !rogues.is_empty() {
            let rogue = rogues[rogue_pick.index(rogues.len())];
            follower.extend(std::iter::repeat_n(rogue, rogue_len));
        }
        let expected = (0..follower.len())
            .find(|&i| leader.get(i) != Some(&follower[i]))
            .map(|i| i as u64);
        let mine = PartitionEpochs { promised: 0, history: history_of(&follower) };
        prop_assert_eq!(mine.divergence(follower.len() as u64, &leader_history), expected);
    }
}

// --- The store ---

#[test]
fn a_follower_fed_the_leaders_partitions_holds_the_same_items() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"));
    let follower = open(&dir.path().join("follower"));
    let mut ids = Vec::new();
    for p in 0..PARTITIONS {
        ids.extend(write(&leader, p, 7, "first"));
    }
    // The follower holds the first version of a record rewritten later.
    for outcome in ship_all(&leader, &follower, 0) {
        assert!(
            matches!(outcome, ShipOutcome::Appended { .. }),
            "{outcome:?}"
        );
    }
    let rewritten = ids[2];
    assert!(
        leader
            .update_verdict(
                rewritten,
                Status::Rejected {
                    reasons: vec!["late".into()]
                },
                Some(0.1)
            )
            .unwrap()
    );
    leader.flush().unwrap();
    for p in 0..PARTITIONS {
        ids.extend(write(&leader, p, 3, "second"));
    }
    for outcome in ship_all(&leader, &follower, 0) {
        assert!(
            matches!(outcome, ShipOutcome::Appended { .. }),
            "{outcome:?}"
        );
    }
    for p in 0..PARTITIONS {
        assert_eq!(follower.last_sequence(p), leader.last_sequence(p));
        assert_eq!(
            read_all(&follower, p, 0, 1 << 20),
            read_all(&leader, p, 0, 1 << 20)
        );
    }
    for id in &ids {
        assert_eq!(follower.get(*id).unwrap(), leader.get(*id).unwrap());
    }
    assert!(matches!(
        follower.get(rewritten).unwrap().unwrap().receipt.status,
        Status::Rejected { .. }
    ));
    assert_eq!(listings(&follower), listings(&leader));
    // Shipping again appends nothing.
    let again = ship_all(&leader, &follower, 0);
    for (p, outcome) in again.into_iter().enumerate() {
        assert_eq!(
            outcome,
            ShipOutcome::Appended {
                last: leader.last_sequence(p as u16)
            }
        );
    }
    assert_eq!(follower.item_count(), leader.item_count());
    assert!(
        follower.log_usage().dead_bytes > 0,
        "the shipped rewrite made the first version dead"
    );
}

#[test]
fn waits_name_the_sequence_replication_must_reach() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let users = users_of(0, 2);
    let old = item(&users[0], "old");
    store.apply(vec![old.clone()]);
    write(&store, 0, 2, "later");
    let fresh = item(&users[1], "fresh");
    let mut dup = fresh.clone();
    dup.user_id = users_of(1, 1)[0].clone();
    let writes: Vec<Write> = vec![
        old.clone().into(),
        fresh.clone().into(),
        item(&"x".repeat(200), "refused").into(),
        dup.into(),
    ];
    let applied = store.try_apply_replicated(writes, &mut |_, _| {}).unwrap();
    assert_eq!(applied.records.len(), 1);
    let record = &applied.records[0];
    assert_eq!((record.partition, record.sequence), (0, 4));
    assert_eq!(decode_item(&record.body).unwrap().item, fresh);
    assert_eq!(
        applied.waits,
        vec![Some((0, 3)), Some((0, 4)), None, Some((0, 4))]
    );
    assert!(applied.outcomes[2].is_err());
    assert_eq!(applied.outcomes[1], applied.outcomes[3]);
}

#[test]
fn a_shipment_past_the_followers_last_is_behind_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"));
    let follower = open(&dir.path().join("follower"));
    write(&leader, 1, 6, "x");
    let records = read_all(&leader, 1, 3, 1 << 20);
    let outcome = follower
        .accept_shipment(vec![ShipBatch {
            partition: 1,
            epoch: 0,
            history: vec![],
            prev: 3,
            records,
        }])
        .unwrap();
    assert_eq!(outcome, vec![ShipOutcome::Behind { last: 0 }]);
    assert_eq!(follower.last_sequence(1), 0);
    assert!(read_all(&follower, 1, 0, 1 << 20).is_empty());
}

#[test]
fn a_promise_fences_older_leaders_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"));
    write(&leader, 2, 3, "x");
    let path = dir.path().join("follower");
    {
        let follower = open(&path);
        let answers = follower.promise(&[(2, 5), (3, 1)]).unwrap();
        assert!(answers.iter().all(|a| a.accepted));
        assert_eq!(answers[0].epochs.promised, 5);
        assert_eq!(answers[0].last, 0);
    }
    let follower = open(&path);
    assert_eq!(follower.partition_epochs(2).promised, 5);
    let batch = |epoch| ShipBatch {
        partition: 2,
        epoch,
        history: vec![],
        prev: 0,
        records: read_all(&leader, 2, 0, 1 << 20),
    };
    assert_eq!(
        follower.accept_shipment(vec![batch(3)]).unwrap(),
        vec![ShipOutcome::Fenced { promised: 5 }]
    );
    assert_eq!(follower.last_sequence(2), 0);
    let again = follower.promise(&[(2, 5), (2, 4)]).unwrap();
    assert!(again.iter().all(|a| !a.accepted));
    assert!(!follower.begin_epoch(2, 4).unwrap());
    // A shipment of a higher epoch raises the promise itself.
    assert_eq!(
        follower.accept_shipment(vec![batch(7)]).unwrap(),
        vec![ShipOutcome::Appended { last: 3 }]
    );
    assert_eq!(follower.partition_epochs(2).promised, 7);
    assert!(!follower.promise(&[(2, 7)]).unwrap()[0].accepted);
    assert_eq!(follower.partition_epochs(3).promised, 1);
}

#[test]
fn a_deposed_leaders_unreplicated_suffix_is_truncated_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let old = open(&dir.path().join("old"));
    let new = open(&dir.path().join("new"));
    let p = 3;
    // The old leader, epoch 1, writes 1..=5; only 1..=3 reach the new one.
    assert!(old.promise(&[(p, 1)]).unwrap()[0].accepted);
    assert!(old.begin_epoch(p, 1).unwrap());
    let first = write(&old, p, 3, "replicated");
    let lost = write(&old, p, 2, "lost");
    assert_eq!(old.last_sequence(p), 5);
    let shipped = old.read_partition(p, 0, 1 << 20).unwrap().0;
    assert_eq!(
        new.accept_shipment(vec![ShipBatch {
            partition: p,
            epoch: 1,
            history: old.partition_epochs(p).history,
            prev: 0,
            records: shipped[..3].to_vec(),
        }])
        .unwrap(),
        vec![ShipOutcome::Appended { last: 3 }]
    );
    // The new leader takes epoch 2 and writes 4..=6.
    assert!(new.promise(&[(p, 2)]).unwrap()[0].accepted);
    assert!(new.begin_epoch(p, 2).unwrap());
    assert_eq!(new.partition_epochs(p).history, vec![(1, 1), (2, 4)]);
    let replaced = write(&new, p, 3, "new leader");
    let outcome = old
        .accept_shipment(vec![ShipBatch {
            partition: p,
            epoch: 2,
            history: new.partition_epochs(p).history,
            prev: 3,
            records: read_all(&new, p, 3, 1 << 20),
        }])
        .unwrap();
    assert_eq!(outcome, vec![ShipOutcome::Appended { last: 6 }]);
    for id in &lost {
        assert_eq!(old.get(*id).unwrap(), None, "a truncated item is gone");
    }
    for id in first.iter().chain(&replaced) {
        assert_eq!(old.get(*id).unwrap(), new.get(*id).unwrap());
    }
    assert_eq!(listings(&old), listings(&new));
    assert_eq!(
        function_stats(&old),
        function_stats(&new),
        "the truncated items no longer count"
    );
    assert_eq!(read_all(&old, p, 0, 1 << 20), read_all(&new, p, 0, 1 << 20));
    assert_eq!(
        old.partition_epochs(p),
        PartitionEpochs {
            promised: 2,
            history: vec![(1, 1), (2, 4)]
        }
    );
    assert_eq!(old.item_count(), 6);
}

#[test]
fn a_later_batch_of_one_call_can_cut_what_an_earlier_one_appended() {
    let dir = tempfile::tempdir().unwrap();
    let old = open(&dir.path().join("old"));
    let new = open(&dir.path().join("new"));
    let follower = open(&dir.path().join("follower"));
    let p = 2;
    assert!(old.promise(&[(p, 1)]).unwrap()[0].accepted);
    assert!(old.begin_epoch(p, 1).unwrap());
    write(&old, p, 3, "old");
    let from_old = read_all(&old, p, 0, 1 << 20);
    new.accept_shipment(vec![ShipBatch {
        partition: p,
        epoch: 1,
        history: vec![(1, 1)],
        prev: 0,
        records: from_old[..2].to_vec(),
    }])
    .unwrap();
    assert!(new.promise(&[(p, 2)]).unwrap()[0].accepted);
    assert!(new.begin_epoch(p, 2).unwrap());
    write(&new, p, 2, "new");
    let outcomes = follower
        .accept_shipment(vec![
            ShipBatch {
                partition: p,
                epoch: 1,
                history: vec![(1, 1)],
                prev: 0,
                records: from_old,
            },
            ShipBatch {
                partition: p,
                epoch: 2,
                history: new.partition_epochs(p).history,
                prev: 2,
                records: read_all(&new, p, 2, 1 << 20),
            },
        ])
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            ShipOutcome::Appended { last: 3 },
            ShipOutcome::Appended { last: 4 }
        ]
    );
    assert_eq!(
        read_all(&follower, p, 0, 1 << 20),
        read_all(&new, p, 0, 1 << 20)
    );
    assert_eq!(listings(&follower), listings(&new));
    assert_eq!(follower.partition_epochs(p), new.partition_epochs(p));
}

#[test]
fn a_truncated_rewrite_brings_back_the_version_it_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let old = open(&dir.path().join("old"));
    let new = open(&dir.path().join("new"));
    let path = dir.path().join("follower");
    let follower = open(&path);
    let p = 1;
    assert!(old.promise(&[(p, 1)]).unwrap()[0].accepted);
    assert!(old.begin_epoch(p, 1).unwrap());
    let ids = write(&old, p, 3, "first");
    let ship_after = |from: &Store, to: &Store, epoch: u64, prev: u64| {
        to.accept_shipment(vec![ShipBatch {
            partition: p,
            epoch,
            history: from.partition_epochs(p).history,
            prev,
            records: read_all(from, p, prev, 1 << 20),
        }])
        .unwrap()
    };
    let ship =
        |from: &Store, to: &Store, epoch: u64| ship_after(from, to, epoch, to.last_sequence(p));
    ship(&old, &new, 1);
    ship(&old, &follower, 1);
    // The old leader rewrites an item twice and writes another; only the follower gets
    // them before the old leader is deposed.
    let rejected = |n: &str| Status::Rejected {
        reasons: vec![n.into()],
    };
    assert!(old.update_verdict(ids[1], rejected("one"), None).unwrap());
    old.flush().unwrap();
    assert!(old.update_verdict(ids[1], rejected("two"), None).unwrap());
    let lost = write(&old, p, 1, "lost")[0];
    assert_eq!(
        ship(&old, &follower, 1),
        vec![ShipOutcome::Appended { last: 6 }]
    );
    follower.flush().unwrap();
    assert!(new.promise(&[(p, 2)]).unwrap()[0].accepted);
    assert!(new.begin_epoch(p, 2).unwrap());
    write(&new, p, 1, "new leader");
    for replica in [&old, &follower] {
        // Shipped as if the replica held all it had: it cuts, then asks from the cut.
        assert_eq!(
            ship_after(&new, replica, 2, 6),
            vec![ShipOutcome::Behind { last: 3 }]
        );
        assert_eq!(replica.partition_epochs(p).promised, 2);
        assert_eq!(
            ship(&new, replica, 2),
            vec![ShipOutcome::Appended { last: 4 }]
        );
        assert_eq!(replica.get(lost).unwrap(), None);
        assert_eq!(replica.get(ids[1]).unwrap(), new.get(ids[1]).unwrap());
        assert_eq!(
            new.get(ids[1]).unwrap().unwrap().receipt.status,
            Status::Accepted
        );
        assert_eq!(listings(replica), listings(&new));
        assert_eq!(function_stats(replica), function_stats(&new));
        assert_eq!(
            read_all(replica, p, 0, 1 << 20),
            read_all(&new, p, 0, 1 << 20)
        );
    }
    drop(follower);
    let follower = open(&path);
    assert_eq!(follower.get(ids[1]).unwrap(), new.get(ids[1]).unwrap());
    assert_eq!(listings(&follower), listings(&new));
    assert_eq!(function_stats(&follower), function_stats(&new));
    assert_eq!(
        read_all(&follower, p, 0, 1 << 20),
        read_all(&new, p, 0, 1 << 20)
    );
    assert_eq!(follower.item_count(), new.item_count());
}

#[test]
fn a_rewrite_replayed_after_a_crash_still_leads_back_to_its_first_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let id = {
        let store = open(&path);
        let id = write(&store, 0, 1, "first")[0];
        store.flush().unwrap();
        store.pause_indexer(true);
        let status = Status::Rejected { reasons: vec![] };
        assert!(store.update_verdict(id, status, None).unwrap());
        id
    };
    let store = open(&path);
    assert_eq!(store.last_sequence(0), 2);
    assert_eq!(store.truncate_after(0, 1).unwrap(), 1);
    let stored = store.get(id).unwrap().unwrap();
    assert_eq!(stored.receipt.status, Status::Accepted);
    let sequences: Vec<u64> = read_all(&store, 0, 0, 1 << 20)
        .iter()
        .map(|r| r.sequence)
        .collect();
    assert_eq!(sequences, vec![1]);
}

#[test]
fn a_compacted_rewrite_still_leads_back_to_its_first_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 4 << 10)).unwrap();
    let id = write_bare(&store, 0, 1, "first")[0];
    // Live records keep the first version's segment; the rewrite starts the next.
    while store.shared.log.head_segment() == 1 {
        write_bare(&store, 2, 1, &"k".repeat(300));
    }
    let mut noise = Vec::new();
    let status = Status::Rejected { reasons: vec![] };
    assert!(store.update_verdict(id, status, None).unwrap());
    for _ in 0..4 {
        noise.extend(write_bare(&store, 1, 8, &"n".repeat(300)));
    }
    for noise in noise {
        store
            .update_verdict(noise, Status::Rejected { reasons: vec![] }, None)
            .unwrap();
    }
    store.flush().unwrap();
    let before = store.shared.index.locate_sequence(0, 2).unwrap().unwrap();
    for _ in 0..400 {
        match store.retire_step().unwrap() {
            RetireStep::Waiting { .. } => store.flush().unwrap(),
            RetireStep::Idle => break,
            _ => {}
        }
    }
    store.flush().unwrap();
    let after = store.shared.index.locate_sequence(0, 2).unwrap().unwrap();
    assert_ne!(before, after, "the rewrite was copied forward");
    let first = store.shared.index.locate_sequence(0, 1).unwrap().unwrap();
    assert!(
        store
            .shared
            .log
            .segments()
            .iter()
            .any(|&(s, _)| s == first.segment)
    );
    assert_eq!(store.truncate_after(0, 1).unwrap(), 1);
    assert_eq!(
        store.get(id).unwrap().unwrap().receipt.status,
        Status::Accepted
    );
}

#[test]
fn a_truncation_survives_reopening_and_spares_other_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (kept, gone, other) = {
        let store = open(&path);
        let kept = write(&store, 0, 2, "kept");
        let other = write(&store, 1, 4, "other");
        store.flush().unwrap();
        // Some indexed, some still in the tail when the truncation comes.
        let mut gone = write(&store, 0, 2, "indexed");
        store.flush().unwrap();
        gone.extend(write(&store, 0, 2, "unindexed"));
        assert!(store.promise(&[(0, 1)]).unwrap()[0].accepted);
        assert!(store.begin_epoch(0, 1).unwrap());
        assert_eq!(store.partition_epochs(0).history, vec![(1, 7)]);
        assert_eq!(store.truncate_after(0, 2).unwrap(), 4);
        assert_eq!(store.partition_epochs(0).history, vec![]);
        (kept, gone, other)
    };
    let store = open(&path);
    assert_eq!(store.last_sequence(0), 2);
    assert_eq!(store.last_sequence(1), 4);
    for id in &gone {
        assert_eq!(store.get(*id).unwrap(), None);
    }
    for id in kept.iter().chain(&other) {
        assert!(store.get(*id).unwrap().is_some());
    }
    let sequences: Vec<u64> = read_all(&store, 0, 0, 1 << 20)
        .iter()
        .map(|r| r.sequence)
        .collect();
    assert_eq!(sequences, vec![1, 2]);
    assert_eq!(read_all(&store, 1, 0, 1 << 20).len(), 4);
    let listed: usize = users_of(0, 3)
        .iter()
        .map(|u| store.list_by_user(u, None, 100).unwrap().0.len())
        .sum();
    assert_eq!(listed, 2);
    assert_eq!(store.item_count(), 6);
    // The next write takes the sequence after the cut.
    write(&store, 0, 1, "after");
    assert_eq!(store.last_sequence(0), 3);
    assert!(
        store.log_usage().dead_bytes > 0,
        "the truncated records are dead"
    );
}

#[test]
fn a_shed_copy_is_gone_for_good_unless_it_moved_and_its_promise_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let other = {
        let store = open(&path);
        let other = write(&store, 1, 3, "other");
        write(&store, 2, 4, "shed");
        assert!(store.promise(&[(2, 9)]).unwrap()[0].accepted);
        // The copy moved since it was looked at: kept.
        assert_eq!(store.shed_partition(2, 3).unwrap(), None);
        assert_eq!(store.last_sequence(2), 4);
        assert_eq!(store.shed_partition(2, 4).unwrap(), Some(4));
        other
    };
    let store = open(&path);
    assert_eq!(store.last_sequence(2), 0);
    assert!(read_all(&store, 2, 0, 1 << 20).is_empty());
    assert_eq!(
        store.partition_epochs(2).promised,
        9,
        "older leaders stay fenced"
    );
    for id in &other {
        assert!(store.get(*id).unwrap().is_some());
    }
    assert_eq!(store.item_count(), 3);
    assert!(
        store.function_stats(|p| p == 2).is_empty(),
        "a shed copy counts nothing"
    );
    let counted: u64 = store
        .function_stats(|p| p == 1)
        .values()
        .map(|s| s.items)
        .sum();
    assert_eq!(counted, 3);
    assert!(
        store.log_usage().dead_bytes > 0,
        "the shed records are dead"
    );
    assert!(store.shed_partition(PARTITIONS, 0).is_err());
}

#[test]
fn a_partition_reads_in_order_across_the_index_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let indexed = write(&store, 2, 5, "indexed");
    store.flush().unwrap();
    store.pause_indexer(true);
    write(&store, 2, 4, "unindexed");
    // A rewrite in the tail supersedes an indexed record: sequence 3 is no longer live.
    assert!(
        store
            .update_verdict(indexed[2], Status::Rejected { reasons: vec![] }, None)
            .unwrap()
    );
    let whole = read_all(&store, 2, 0, 1 << 20);
    let sequences: Vec<u64> = whole.iter().map(|r| r.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 4, 5, 6, 7, 8, 9, 10]);
    let newest = decode_item(&whole.last().unwrap().body).unwrap();
    assert_eq!(newest.item.id, indexed[2]);
    // Pages of one record at a time make the same walk.
    assert_eq!(read_all(&store, 2, 0, 1), whole);
    assert_eq!(store.read_partition(2, 0, 1).unwrap().0.len(), 1);
    let (rest, last) = store.read_partition(2, 6, 1 << 20).unwrap();
    assert_eq!(last, 10);
    assert_eq!(rest[0].sequence, 7);
    store.pause_indexer(false);
    store.flush().unwrap();
    assert_eq!(read_all(&store, 2, 0, 1 << 20), whole);
    // Every body is the item exactly as stored.
    for record in &whole {
        let stored = decode_item(&record.body).unwrap();
        assert_eq!(store.get(stored.item.id).unwrap(), Some(stored));
    }
}

#[test]
fn a_partition_reads_the_same_after_its_segments_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 16 << 10)).unwrap();
    let mut ids = Vec::new();
    let mut noise = Vec::new();
    for round in 0..12 {
        ids.extend(write(&store, 1, 8, &format!("round {round}")));
        noise.extend(write(
            &store,
            0,
            8,
            &format!("noise {round} {}", "z".repeat(200)),
        ));
    }
    // The noise dies, so its segments qualify, with partition 1's records to copy; and
    // some of partition 1 is superseded.
    for id in noise.iter().chain(ids.iter().step_by(3)) {
        store
            .update_verdict(*id, Status::Rejected { reasons: vec![] }, None)
            .unwrap();
    }
    store.flush().unwrap();
    let before = read_all(&store, 1, 0, 1 << 20);
    let stats = function_stats(&store);
    assert_eq!(stats.values().map(|s| s.items).sum::<u64>(), 192);
    // Copies of old sequences wait in the tail while later ones are indexed: pages cut
    // inside the tail must not skip past what the tail still holds.
    store.pause_indexer(true);
    let mut copied = 0;
    loop {
        match store.retire_step().unwrap() {
            RetireStep::Copied { records, .. } => copied += records,
            RetireStep::Idle | RetireStep::Waiting { .. } => break,
            _ => {}
        }
    }
    assert!(copied > 10, "{copied} copies");
    for max_bytes in (1..4000).step_by(37) {
        assert_eq!(
            read_all(&store, 1, 0, max_bytes),
            before,
            "pages of {max_bytes}"
        );
        let (page, _) = store.read_partition(1, 0, max_bytes).unwrap();
        let bodies: usize = page.iter().map(|r| r.body.len()).sum();
        assert!(page.len() == 1 || bodies <= max_bytes);
    }
    store.pause_indexer(false);
    let mut compacted = 0;
    for _ in 0..400 {
        match store.retire_step().unwrap() {
            RetireStep::Removed {
                compacted: true, ..
            } => compacted += 1,
            RetireStep::Waiting { .. } => store.flush().unwrap(),
            RetireStep::Idle => break,
            _ => {}
        }
    }
    assert!(
        compacted > 0,
        "a segment holding live records was compacted"
    );
    assert_eq!(read_all(&store, 1, 0, 1 << 20), before);
    store.flush().unwrap();
    assert_eq!(read_all(&store, 1, 0, 1 << 20), before);
    assert_eq!(read_all(&store, 1, 0, 300), before);
    assert_eq!(
        function_stats(&store),
        stats,
        "rewrites and copies count no item twice"
    );
}

#[test]
fn a_store_made_before_the_by_sequence_tree_rebuilds_it_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let before = {
        let store = open(&path);
        write(&store, 3, 6, "old");
        let rewritten = write(&store, 3, 1, "rewritten")[0];
        store
            .update_verdict(rewritten, Status::Rejected { reasons: vec![] }, None)
            .unwrap();
        store.flush().unwrap();
        (read_all(&store, 3, 0, 1 << 20), function_stats(&store))
    };
    let (before, stats) = before;
    assert_eq!(before.len(), 7);
    assert_eq!(stats.values().map(|s| s.items).sum::<u64>(), 7);
    {
        // What an older version left: no `by_sequence` tree, no function stats, no
        // marks.
        let db = crate::store::open_index_db(&path.join("index"), 4 << 20).unwrap();
        assert!(db.drop_tree("by_sequence").unwrap());
        assert!(db.drop_tree("function_stats/2").unwrap());
        let meta = db.open_tree("meta").unwrap();
        meta.remove("by_sequence").unwrap();
        meta.remove("function_stats/2").unwrap();
        db.flush().unwrap();
    }
    let store = open(&path);
    assert_eq!(read_all(&store, 3, 0, 1 << 20), before);
    assert_eq!(function_stats(&store), stats, "counted again when opened");
    drop(store);
    let store = open(&path);
    assert_eq!(read_all(&store, 3, 0, 1 << 20), before);
    assert_eq!(function_stats(&store), stats);
}

#[test]
fn a_malformed_shipment_is_refused_whole_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"));
    let follower = open(&dir.path().join("follower"));
    write(&leader, 0, 3, "x");
    write(&leader, 1, 3, "x");
    let good = ShipBatch {
        partition: 1,
        epoch: 4,
        history: vec![],
        prev: 0,
        records: read_all(&leader, 1, 0, 1 << 20),
    };
    let records = read_all(&leader, 0, 0, 1 << 20);
    let mut garbage = records.clone();
    garbage[1].body = vec![0xff; 12];
    let mut reversed = records.clone();
    reversed.swap(0, 1);
    let mut foreign = records.clone();
    foreign[0].partition = 1;
    let mut far = records.clone();
    far[2].sequence = u64::MAX;
    let cases = [
        (garbage, vec![]),
        (reversed, vec![]),
        (foreign, vec![]),
        (far, vec![]),
        (records.clone(), vec![(2, 1), (1, 2)]),
        (good.records.clone(), vec![]),
    ];
    for (records, history) in cases {
        let bad = ShipBatch {
            partition: 0,
            epoch: 4,
            history,
            prev: 0,
            records,
        };
        let refused = follower.accept_shipment(vec![good.clone(), bad]);
        assert!(
            matches!(refused, Err(StoreError::Invalid { .. })),
            "{refused:?}"
        );
    }
    assert!(matches!(
        follower.read_partition(PARTITIONS, 0, 10),
        Err(StoreError::Invalid { .. })
    ));
    for p in 0..PARTITIONS {
        assert_eq!(follower.last_sequence(p), 0);
        assert_eq!(follower.partition_epochs(p), PartitionEpochs::default());
    }
}

#[test]
fn a_shipment_is_one_log_write_that_fails_whole() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"));
    let follower = open(&dir.path().join("follower"));
    for p in 0..PARTITIONS {
        write(&leader, p, 2, "x");
    }
    follower.inject_write_failures(true);
    let batches = |epoch| -> Vec<ShipBatch> {
        (0..PARTITIONS)
            .map(|p| ShipBatch {
                partition: p,
                epoch,
                history: vec![],
                prev: 0,
                records: read_all(&leader, p, 0, 1 << 20),
            })
            .collect()
    };
    assert!(follower.accept_shipment(batches(3)).is_err());
    for p in 0..PARTITIONS {
        assert_eq!(follower.last_sequence(p), 0);
        assert!(read_all(&follower, p, 0, 1 << 20).is_empty());
        assert_eq!(follower.partition_epochs(p), PartitionEpochs::default());
    }
    follower.inject_write_failures(false);
    let outcomes = follower.accept_shipment(batches(3)).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| *o == ShipOutcome::Appended { last: 2 })
    );
    assert_eq!(follower.partition_epochs(0).promised, 3);
}

#[test]
fn shipments_queued_behind_the_append_lock_are_written_as_one_group_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"));
    let follower = open(&dir.path().join("follower"));
    write(&leader, 1, 6, "x");
    write(&leader, 2, 2, "y");
    assert!(follower.promise(&[(2, 5)]).unwrap()[0].accepted);
    let records = read_all(&leader, 1, 0, 1 << 20);
    let ship = |partition, epoch, prev, records: &[ReplicaRecord]| ShipBatch {
        partition,
        epoch,
        history: vec![],
        prev,
        records: records.to_vec(),
    };
    let shipments = [
        vec![ship(1, 1, 0, &records[..3])],
        // Follows the first: only appended if the group keeps arrival order.
        vec![ship(1, 1, 3, &records[3..])],
        // One fenced batch and one appended, in one shipment.
        vec![
            ship(2, 4, 0, &read_all(&leader, 2, 0, 1 << 20)),
            ship(3, 1, 0, &[]),
        ],
    ];
    let answers = std::thread::scope(|scope| {
        let held = follower.shared.lock_for_append().unwrap();
        let mut callers = Vec::new();
        for (n, batches) in shipments.iter().enumerate() {
            let batches = batches.clone();
            let follower = &follower;
            callers.push(scope.spawn(move || follower.accept_shipment(batches)));
            while follower.shipments.len() < n + 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(held);
        callers
            .into_iter()
            .map(|c| c.join().unwrap().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        answers,
        vec![
            vec![ShipOutcome::Appended { last: 3 }],
            vec![ShipOutcome::Appended { last: 6 }],
            vec![
                ShipOutcome::Fenced { promised: 5 },
                ShipOutcome::Appended { last: 0 },
            ],
        ]
    );
    assert_eq!(follower.shipments.len(), 0);
    assert_eq!(read_all(&follower, 1, 0, 1 << 20), records);
    assert_eq!(follower.last_sequence(2), 0);
    assert_eq!(follower.partition_epochs(3).promised, 1);
}

/// `records` with each item's text changed: the same sequences and ids, other bytes.
fn altered(records: &[ReplicaRecord]) -> Vec<ReplicaRecord> {
    records
        .iter()
        .map(|record| {
            let mut stored = decode_item(&record.body).unwrap();
            stored.item.text.push_str(" (altered)");
            ReplicaRecord {
                body: encode_payload(&stored),
                ..record.clone()
            }
        })
        .collect()
}

#[test]
fn a_repair_cuts_a_diverged_range_only_at_the_planned_point_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"));
    let follower = open(&dir.path().join("follower"));
    let p = 1;
    assert!(leader.promise(&[(p, 3)]).unwrap()[0].accepted);
    assert!(leader.begin_epoch(p, 3).unwrap());
    write(&leader, p, 6, "kept");
    let records = read_all(&leader, p, 0, 1 << 20);
    // The follower holds 1..=3 as the leader does and 4..=6 with other bytes: the same
    // sequences and epochs, so shipments alone never notice.
    let mut diverged = records[..3].to_vec();
    diverged.extend(altered(&records[3..]));
    let ship = |records: Vec<ReplicaRecord>, prev| ShipBatch {
        partition: p,
        epoch: 3,
        history: leader.partition_epochs(p).history,
        prev,
        records,
    };
    assert_eq!(
        follower.accept_shipment(vec![ship(diverged, 0)]).unwrap(),
        vec![ShipOutcome::Appended { last: 6 }]
    );
    assert_eq!(
        ship_all(&leader, &follower, 3)[usize::from(p)],
        ShipOutcome::Appended { last: 6 }
    );
    assert_ne!(read_all(&follower, p, 0, 1 << 20), records);

    assert_eq!(
        follower.repair_after(p, 2, 6, 3).unwrap(),
        RepairOutcome::Fenced { promised: 3 },
        "an older leader cannot repair"
    );
    assert_eq!(
        follower.repair_after(p, 3, 7, 3).unwrap(),
        RepairOutcome::Moved { last: 6 },
        "a repair planned at another last sequence changes nothing"
    );
    assert_eq!(follower.last_sequence(p), 6);
    assert_eq!(
        follower.repair_after(p, 3, 6, 3).unwrap(),
        RepairOutcome::Truncated { removed: 3 }
    );
    assert_eq!(follower.last_sequence(p), 3);
    assert_eq!(
        follower
            .accept_shipment(vec![ship(records[3..].to_vec(), 3)])
            .unwrap(),
        vec![ShipOutcome::Appended { last: 6 }]
    );
    assert_eq!(read_all(&follower, p, 0, 1 << 20), records);
    assert_eq!(listings(&follower), listings(&leader));
}
