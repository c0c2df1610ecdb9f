use chorus_protocol::{ExecutionMetrics, FunctionRef, Kind, NodeId};

use super::*;
use crate::store::test_model::small_store;

fn about(user: &str, rating: u8) -> Item {
    let mut item = Item::new(user, Kind::Rating);
    item.rating = Some(rating);
    item.text = format!("{user} says this is personal");
    item.function = Some(FunctionRef {
        name: "resize".into(),
        version: "1".into(),
    });
    item.metrics = Some(ExecutionMetrics {
        success_rate: 1.0,
        avg_duration_ms: 5.0,
        error_rate: 0.0,
    });
    item
}

fn resize_items(store: &Store) -> u64 {
    store.flush().unwrap();
    store
        .function_stats(|_| true)
        .values()
        .map(|s| s.items)
        .sum()
}

#[test]
fn deleting_a_user_leaves_tombstones_that_nothing_lists_or_counts_and_a_retry_cannot_undo() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_store(dir.path())).unwrap();
    let gone: Vec<Item> = (0..50).map(|_| about("gone", 2)).collect();
    let kept: Vec<Item> = (0..5).map(|_| about("kept", 5)).collect();
    store.apply(gone.clone());
    store.apply(kept.clone());
    assert_eq!(resize_items(&store), 55);
    assert_eq!(store.count_user("gone").unwrap(), 50);

    let mut shipped = 0;
    let records = store
        .delete_user("gone", &mut |records, _| shipped += records.len())
        .unwrap();
    assert_eq!(records.len(), 50);
    assert_eq!(shipped, 50);
    assert_eq!(store.list_by_user("gone", None, 100).unwrap().0, []);
    assert_eq!(store.count_user("gone").unwrap(), 0);
    assert_eq!(store.list_by_user("kept", None, 100).unwrap().0.len(), 5);
    let stub = store.get(gone[0].id).unwrap().unwrap();
    assert_eq!(stub.receipt.status, Status::Deleted);
    assert_eq!(stub.item.text, "");
    assert_eq!(stub.item.rating, None);
    assert_eq!(stub.item.function, None);
    assert_eq!(resize_items(&store), 5, "the deleted items left the stats");
    // A retry of a deleted id is answered from its tombstone; nothing comes back.
    let retried = store.apply(vec![gone[0].clone()]).remove(0).unwrap();
    assert_eq!(retried.status, Status::Deleted);
    assert_eq!(store.list_by_user("gone", None, 100).unwrap().0, []);
    // Deleting again deletes nothing more; the stats do not move twice.
    assert!(
        store
            .delete_user("gone", &mut |_, _| {})
            .unwrap()
            .is_empty()
    );
    assert_eq!(resize_items(&store), 5);
    // New feedback from the same user afterwards is kept.
    store.apply(vec![about("gone", 4)]);
    assert_eq!(store.list_by_user("gone", None, 100).unwrap().0.len(), 1);
}

#[test]
fn a_deletion_survives_a_restart_and_its_bytes_become_dead() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<ItemId>;
    {
        let store = Store::open(small_store(dir.path())).unwrap();
        let items: Vec<Item> = (0..200).map(|_| about("gone", 1)).collect();
        ids = items.iter().map(|i| i.id).collect();
        store.apply(items);
        store.flush().unwrap();
        let before = store.log_usage().dead_bytes;
        store.delete_user("gone", &mut |_, _| {}).unwrap();
        store.flush().unwrap();
        assert!(
            store.log_usage().dead_bytes > before,
            "the deleted records count as dead, for compaction to reclaim"
        );
    }
    let store = Store::open(small_store(dir.path())).unwrap();
    assert_eq!(store.list_by_user("gone", None, 1000).unwrap().0, []);
    assert_eq!(
        store.get(ids[7]).unwrap().unwrap().receipt.status,
        Status::Deleted
    );
    assert_eq!(resize_items(&store), 0);
}

#[test]
fn a_tombstone_writes_nothing_the_user_wrote() {
    let mut item = about("u", 3);
    item.tags = vec!["private".into()];
    item.client_ts = 1_765_000_000_000;
    let stored = StoredItem {
        receipt: chorus_protocol::Receipt {
            id: item.id,
            status: Status::Accepted,
            alignment_score: Some(0.9),
            owner: NodeId("a".into()),
            replicas: vec![],
            stored_at: 77,
            enrichment: chorus_protocol::Enrichment::NotConfigured,
        },
        item,
    };
    let stub = tombstone(&stored);
    assert_eq!(stub.item.id, stored.item.id);
    assert_eq!(stub.item.user_id, "u");
    assert_eq!(stub.receipt.stored_at, 77);
    assert!(stub.item.text.is_empty() && stub.item.tags.is_empty());
    assert_eq!((stub.item.rating, stub.item.client_ts), (None, 0));
    assert!(stub.item.function.is_none() && stub.item.metrics.is_none());
    assert_eq!(stub.receipt.alignment_score, None);
}

#[test]
fn retention_expires_what_was_stored_before_the_cutoff_and_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_store(dir.path())).unwrap();
    let old: Vec<Item> = (0..20).map(|i| about(&format!("u{i}"), 3)).collect();
    store.apply(old.clone());
    std::thread::sleep(std::time::Duration::from_millis(5));
    let cutoff = crate::store::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let new: Vec<Item> = (0..20).map(|i| about(&format!("u{i}"), 4)).collect();
    store.apply(new.clone());
    store.flush().unwrap();
    let mut expired = 0;
    for partition in 0..8 {
        let mut after = 0;
        loop {
            let (ids, reached) = store.expired(partition, after, cutoff, 3).unwrap();
            if ids.is_empty() {
                break;
            }
            expired += store
                .expire_items(&ids, cutoff, &mut |_, _| {})
                .unwrap()
                .len();
            after = reached;
        }
    }
    assert_eq!(expired, 20);
    store.flush().unwrap();
    for item in &old {
        assert_eq!(
            store.get(item.id).unwrap().unwrap().receipt.status,
            Status::Deleted
        );
    }
    for item in &new {
        assert_eq!(
            store.get(item.id).unwrap().unwrap().receipt.status,
            Status::Accepted
        );
    }
    assert_eq!(resize_items(&store), 20);
    // Nothing newer is ever expired, however it is asked.
    assert!(
        store
            .expire_items(&[new[0].id], cutoff, &mut |_, _| {})
            .unwrap()
            .is_empty()
    );
}
