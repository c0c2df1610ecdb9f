use chorus_protocol::{EventKind, Item, Kind};

use super::*;
use crate::store::Write;
use crate::store::test_model::small_store;

fn flagged(user: &str) -> Write {
    let mut write = Write::from(Item::new(user, Kind::Text));
    write.status = Status::Flagged {
        reasons: vec!["pii".into()],
    };
    write
}

fn queued(store: &Store, limit: usize) -> Vec<ItemId> {
    store.flush().unwrap();
    let mut ids = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = store
            .review_page(|_| true, after.as_deref(), limit)
            .unwrap();
        ids.extend(page.iter().map(|s| s.item.id));
        match next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

#[test]
fn flagged_items_wait_in_the_queue_until_a_reviewer_decides() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_store(dir.path())).unwrap();
    let writes: Vec<Write> = (0..7)
        .map(|i| flagged(&format!("user-{i}")))
        .chain([Write::from(Item::new("clean", Kind::Text))])
        .collect();
    let ids: Vec<ItemId> = writes.iter().take(7).map(|w| w.item.id).collect();
    store.try_apply(writes).unwrap();
    let mut all = queued(&store, 3);
    all.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(all, want, "every flagged item once, paged by three");

    let approved = store
        .decide_review(ids[0], Decision::Approve, &mut |_, _| {})
        .unwrap();
    assert_eq!(approved.stored.receipt.status, Status::Accepted);
    let rejected = store
        .decide_review(ids[1], Decision::Reject, &mut |_, _| {})
        .unwrap();
    assert_eq!(
        rejected.stored.receipt.status,
        Status::Rejected {
            reasons: vec!["pii".into()]
        }
    );
    let left = queued(&store, 100);
    assert_eq!(left.len(), 5);
    assert!(!left.contains(&ids[0]) && !left.contains(&ids[1]));
    // A decided item is not waiting any more; an unknown one never was.
    let again = store.decide_review(ids[0], Decision::Reject, &mut |_, _| {});
    assert!(matches!(again, Err(StoreError::Invalid { .. })));
    let unknown = store.decide_review(ItemId::generate(), Decision::Approve, &mut |_, _| {});
    assert!(matches!(unknown, Err(StoreError::Invalid { .. })));
    // Only the partitions asked about.
    store.flush().unwrap();
    let (some, _) = store.review_page(|p| p == 0, None, 100).unwrap();
    assert!(some.iter().all(|s| partition_of(&s.item.user_id, 8) == 0));
}

#[test]
fn a_decision_hands_its_record_to_shipping() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_store(dir.path())).unwrap();
    let write = flagged("u");
    let id = write.item.id;
    store.try_apply(vec![write]).unwrap();
    let mut shipped = Vec::new();
    let decided = store
        .decide_review(id, Decision::Approve, &mut |records, _| {
            shipped.extend(records.iter().cloned())
        })
        .unwrap();
    assert_eq!(shipped, [decided.record]);
}

#[test]
fn the_queue_survives_a_restart_and_an_older_store_fills_it_when_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let writes: Vec<Write> = (0..4).map(|i| flagged(&format!("u{i}"))).collect();
    let mut want: Vec<ItemId> = writes.iter().map(|w| w.item.id).collect();
    want.sort();
    {
        let store = Store::open(small_store(dir.path())).unwrap();
        store.try_apply(writes).unwrap();
        store.flush().unwrap();
    }
    {
        let store = Store::open(small_store(dir.path())).unwrap();
        let mut ids = queued(&store, 10);
        ids.sort();
        assert_eq!(ids, want);
    }
    // As a store made before the queue existed: no tree, no mark.
    {
        let db = sled::open(dir.path().join("store/index")).unwrap();
        db.drop_tree("review").unwrap();
        db.open_tree("meta").unwrap().remove("review").unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(small_store(dir.path())).unwrap();
    let mut ids = queued(&store, 10);
    ids.sort();
    assert_eq!(ids, want);
}

#[test]
fn an_item_flagged_after_its_ack_joins_the_queue_and_each_flag_is_noted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_store(dir.path())).unwrap();
    // Flagged before the ack (research, hybrid), and accepted at the ack then flagged
    // by production mode's after-ack review (a rewrite of its verdict).
    let before = flagged("a");
    let after = Write::from(Item::new("b", Kind::Text));
    let (before_id, after_id) = (before.item.id, after.item.id);
    store.try_apply(vec![before, after]).unwrap();
    let flag = Status::Flagged {
        reasons: vec!["harmful".into()],
    };
    assert!(store.update_verdict(after_id, flag, Some(0.5)).unwrap());
    let mut queued = queued(&store, 10);
    queued.sort();
    let mut want = vec![before_id, after_id];
    want.sort();
    assert_eq!(queued, want);
    let noted: Vec<ItemId> = store
        .take_flagged(100)
        .into_iter()
        .map(|kind| match kind {
            EventKind::ItemFlagged { item, .. } => item,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(noted, [before_id, after_id]);
    assert!(store.take_flagged(100).is_empty(), "each flag noted once");
    // A decision notes nothing.
    store
        .decide_review(after_id, Decision::Approve, &mut |_, _| {})
        .unwrap();
    assert!(store.take_flagged(100).is_empty());
}
