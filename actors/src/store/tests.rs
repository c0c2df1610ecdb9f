use std::path::Path;

use chorus_protocol::{FunctionRef, Kind};

use super::*;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("store"),
        node: NodeId("node-a".into()),
        partitions: 64,
        durability: Durability::Full,
        log: LogConfig::default(),
    }
}

fn item(user: &str, text: &str) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.text = text.into();
    item
}

#[test]
fn apply_returns_one_accepted_receipt_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let items = vec![item("alice", "a"), item("bob", "b")];
    let outcomes = store.apply(items.clone());
    assert_eq!(outcomes.len(), 2);
    for (outcome, item) in outcomes.iter().zip(&items) {
        let receipt = outcome.as_ref().unwrap();
        assert_eq!(receipt.id, item.id);
        assert_eq!(receipt.status, Status::Accepted);
        assert_eq!(receipt.owner, NodeId("node-a".into()));
        assert_eq!(receipt.replicas, vec![NodeId("node-a".into())]);
        let stored = store.get(item.id).unwrap().unwrap();
        assert_eq!(&stored.item, item);
        assert_eq!(&stored.receipt, receipt);
    }
}

#[test]
fn resubmitting_an_id_returns_the_first_receipt_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let first = item("alice", "first");
    let r1 = store.apply(vec![first.clone()]).remove(0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let mut retry = first.clone();
    retry.text = "changed".into();
    let r2 = store.apply(vec![retry]).remove(0).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(store.get(first.id).unwrap().unwrap().item.text, "first");
    assert_eq!(store.item_count(), 1);
    assert_eq!(store.list_by_user("alice", None, 10).unwrap().0.len(), 1);
}

#[test]
fn a_duplicate_within_one_batch_gets_the_first_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let first = item("alice", "first");
    let mut dup = first.clone();
    dup.user_id = "mallory".into();
    let outcomes = store.apply(vec![first.clone(), item("bob", "x"), dup]);
    assert_eq!(outcomes[0], outcomes[2]);
    assert_eq!(store.item_count(), 2);
    assert!(
        store
            .list_by_user("mallory", None, 10)
            .unwrap()
            .0
            .is_empty()
    );
}

#[test]
fn an_id_naming_another_partition_than_its_users_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let home = partition_of("alice", 64);
    let mut right = item("alice", "a");
    right.id = ItemId::for_partition(home);
    let mut wrong = item("alice", "b");
    wrong.id = ItemId::for_partition((home + 1) % 64);
    let outcomes = store.apply(vec![right.clone(), wrong]);
    assert!(outcomes[0].is_ok());
    match &outcomes[1] {
        Err(ErrorCode::Invalid { field, .. }) => assert_eq!(field, "id"),
        other => panic!("expected Invalid id, got {other:?}"),
    }
    assert_eq!(store.item_count(), 1);
}

#[test]
fn keys_are_prefixed_by_the_users_partition() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let it = item("carol", "x");
    store.apply(vec![it.clone()]);
    store.flush().unwrap();
    let listing = store.shared.index.listing();
    let partition = partition_of("carol", 64).to_be_bytes();
    let (key, _) = listing.iter().next().unwrap().unwrap();
    assert_eq!(&key[..2], &partition);
    assert_eq!(&key[key.len() - 16..], &it.id.to_bytes());
    assert_eq!(key[2], 5);
    assert_eq!(&key[3..8], b"carol");
    // The whole partition is one prefix scan.
    assert_eq!(listing.scan_prefix(partition).count(), 1);
}

#[test]
fn pages_walk_a_users_items_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut ids = Vec::new();
    for batch in 0..5 {
        let items: Vec<Item> = (0..5)
            .map(|i| item("dave", &format!("{batch}-{i}")))
            .collect();
        ids.extend(items.iter().map(|i| i.id));
        store.apply(items);
        store.apply(vec![item("dave2", "noise"), item("dav", "noise")]);
    }
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (page, next) = store.list_by_user("dave", after, 7).unwrap();
        assert!(page.len() <= 7);
        seen.extend(page.iter().map(|s| s.item.id));
        pages += 1;
        match next {
            Some(token) => after = Some(token),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    // Oldest first: stored_at order, ids within a millisecond in ULID order.
    let mut expected = ids.clone();
    let stamp = |id: &ItemId| store.get(*id).unwrap().unwrap().receipt.stored_at;
    expected.sort_by_key(|id| (stamp(id), *id));
    assert_eq!(seen, expected);
    // An exact multiple of the limit ends with `None`, not an empty page.
    let (page, next) = store.list_by_user("dave", None, 25).unwrap();
    assert_eq!((page.len(), next), (25, None));
}

#[test]
fn a_foreign_page_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.apply(vec![item("erin", "1"), item("erin", "2")]);
    let (_, next) = store.list_by_user("erin", None, 1).unwrap();
    let err = store.list_by_user("frank", next, 1).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { field: "after", .. }));
}

#[test]
fn reopening_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let it = item("gina", "persist me");
    let key = {
        let store = Store::open(config(dir.path())).unwrap();
        store.apply(vec![it.clone()]);
        store.create_api_key(Role::Read, "reader".into()).unwrap()
    };
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.get(it.id).unwrap().unwrap().item, it);
    assert_eq!(store.list_by_user("gina", None, 10).unwrap().0.len(), 1);
    assert_eq!(store.authenticate(&key).unwrap(), Some(Role::Read));
}

#[test]
fn reopening_with_another_partition_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(config(dir.path())).unwrap());
    let mut other = config(dir.path());
    other.partitions = 128;
    match Store::open(other) {
        Err(StoreError::PartitionMismatch { stored, configured }) => {
            assert_eq!((stored, configured), (64, 128));
        }
        other => panic!("expected PartitionMismatch, got {other:?}"),
    }
}

#[test]
fn api_keys_are_stored_only_as_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.api_key_count(), 0);
    let key = store.create_api_key(Role::Submit, "app".into()).unwrap();
    assert!(key.starts_with(API_KEY_PREFIX));
    assert!(key.len() >= API_KEY_PREFIX.len() + 43);
    assert_eq!(store.authenticate(&key).unwrap(), Some(Role::Submit));
    assert_eq!(store.authenticate("chorus_wrong").unwrap(), None);
    assert_eq!(store.api_key_count(), 1);
    for entry in store.api_keys.keys.iter() {
        let (k, v) = entry.unwrap();
        let secret = &key.as_bytes()[API_KEY_PREFIX.len()..];
        assert!(!contains(&k, secret) && !contains(&v, secret));
        assert_eq!(k.as_ref(), &Sha256::digest(key.as_bytes())[..]);
    }
}

#[test]
fn ensure_admin_key_creates_one_only_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let key = store.ensure_admin_key().unwrap().unwrap();
    assert_eq!(store.authenticate(&key).unwrap(), Some(Role::Admin));
    assert_eq!(store.ensure_admin_key().unwrap(), None);
    assert_eq!(store.api_key_count(), 1);
}

#[test]
fn an_overlong_user_is_refused_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let outcomes = store.apply(vec![item(&"u".repeat(300), "x"), item("ok", "y")]);
    assert!(matches!(&outcomes[0], Err(ErrorCode::Invalid { field, .. }) if field == "user_id"));
    assert!(outcomes[1].is_ok());
}

#[test]
fn flush_durability_also_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.durability = Durability::Flush;
    let store = Store::open(cfg).unwrap();
    assert!(store.apply(vec![item("h", "x")])[0].is_ok());
}

#[test]
fn zero_partitions_is_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.partitions = 0;
    assert!(matches!(
        Store::open(cfg),
        Err(StoreError::InvalidConfig(_))
    ));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_acknowledged_item_is_readable_before_and_after_the_index_absorbs_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.pause_indexer(true);
    let early = item("ivy", "first");
    let receipt = store.apply(vec![early.clone()]).remove(0).unwrap();
    // Only in the log and the tail: get, list and dedup all see it.
    assert_eq!(store.get(early.id).unwrap().unwrap().receipt, receipt);
    assert_eq!(store.list_by_user("ivy", None, 10).unwrap().0.len(), 1);
    assert_eq!(store.apply(vec![early.clone()]).remove(0).unwrap(), receipt);
    store.pause_indexer(false);
    store.flush().unwrap();
    let late = item("ivy", "second");
    store.apply(vec![late.clone()]);
    // One indexed, one perhaps not: a listing merges both, oldest first, no repeats.
    let (page, next) = store.list_by_user("ivy", None, 10).unwrap();
    let ids: Vec<ItemId> = page.iter().map(|s| s.item.id).collect();
    assert_eq!(ids, vec![early.id, late.id]);
    assert_eq!(next, None);
    assert_eq!(store.item_count(), 2);
}

#[test]
fn a_crash_before_indexing_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let items: Vec<Item> = (0..50).map(|i| item(&format!("u{}", i % 7), "x")).collect();
    let receipts: Vec<Receipt> = {
        let store = Store::open(config(dir.path())).unwrap();
        store.apply(items[..10].to_vec());
        store.flush().unwrap();
        store.pause_indexer(true);
        // Dropped paused: the index never hears of the last 40.
        store
            .apply(items.clone())
            .into_iter()
            .map(Result::unwrap)
            .collect()
    };
    let store = Store::open(config(dir.path())).unwrap();
    for (it, receipt) in items.iter().zip(&receipts) {
        assert_eq!(&store.get(it.id).unwrap().unwrap().receipt, receipt);
    }
    // A resubmission after the restart gets the first receipt and stores nothing.
    assert_eq!(
        &store.apply(vec![items[42].clone()]).remove(0).unwrap(),
        &receipts[42]
    );
    let listed: usize = (0..7)
        .map(|u| {
            store
                .list_by_user(&format!("u{u}"), None, 100)
                .unwrap()
                .0
                .len()
        })
        .sum();
    assert_eq!(listed, 50);
    assert_eq!(store.item_count(), 50);
}

#[test]
fn sequences_continue_per_partition_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.apply((0..5).map(|_| item("same-user", "x")).collect());
        store.pause_indexer(true);
        store.apply((0..3).map(|_| item("same-user", "x")).collect());
    }
    let store = Store::open(config(dir.path())).unwrap();
    let partition = partition_of("same-user", 64);
    assert_eq!(
        store.shared.sequences.lock().unwrap()[usize::from(partition)],
        8
    );
}

#[test]
fn a_failed_sync_stops_writes_until_restart_and_nothing_after_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let kept = item("jo", "kept");
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.apply(vec![kept.clone()]).remove(0).unwrap();
        store.inject_sync_failure();
        let failed = store.apply(vec![item("jo", "lost")]);
        assert!(matches!(failed[0], Err(ErrorCode::Unavailable { .. })));
        assert!(store.failure().is_some());
        store.inject_write_failures(false);
        // Still refused: the failure is fatal until restart.
        assert!(matches!(
            store.try_apply(vec![item("jo", "later").into()]),
            Err(StoreError::Failed { .. })
        ));
        // Reads keep working.
        assert!(store.get(kept.id).unwrap().is_some());
    }
    let store = Store::open(config(dir.path())).unwrap();
    assert!(store.failure().is_none());
    assert!(store.get(kept.id).unwrap().is_some());
    assert!(store.apply(vec![item("jo", "after restart")])[0].is_ok());
}

#[test]
fn a_store_of_the_earlier_sled_only_format_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::create_dir_all(&cfg.path).unwrap();
    // sled's own marker file at the top of the store directory: the old layout.
    std::fs::write(cfg.path.join("conf"), b"segment_size: 524288").unwrap();
    match Store::open(cfg.clone()) {
        Err(StoreError::InvalidConfig(reason)) => {
            assert!(reason.contains(&cfg.path.display().to_string()), "{reason}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn record(role: Role, name: &str, created_at: u64) -> ApiKeyRecord {
    ApiKeyRecord {
        role,
        name: name.into(),
        created_at,
    }
}

/// A set of `n` distinct made-up keys.
fn made_up_keys(n: usize) -> KeySet {
    KeySet {
        keys: (0..n)
            .map(|i| {
                let mut hash = [0u8; 32];
                hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (hash, record(Role::Read, "k", i as u64))
            })
            .collect(),
        revocations: Vec::new(),
    }
}

#[test]
fn a_revoked_key_never_authenticates_again_even_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = Store::open(config(dir.path())).unwrap();
        let key = store.create_api_key(Role::Submit, "app".into()).unwrap();
        let hash = key_hash(&key);
        let before = store.key_revocations();
        let entry = store.revoke_api_key(&hash).unwrap();
        assert!(entry.revoked_at.is_some());
        assert_eq!(store.key_revocations(), before + 1);
        assert!(store.is_key_revoked(&hash));
        // Revoking again answers the first revocation and changes nothing.
        assert_eq!(store.revoke_api_key(&hash).unwrap(), entry);
        assert_eq!(store.key_revocations(), before + 1);
        key
    };
    let store = Store::open(config(dir.path())).unwrap();
    let hash = key_hash(&key);
    assert_eq!(store.authenticate(&key).unwrap(), None);
    assert_eq!(store.api_key_status(&hash).unwrap(), KeyStatus::Revoked);
    assert!(store.is_key_revoked(&hash));
    let listed = store.list_api_keys().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
    assert_eq!(listed[0].info().id, key_id(&hash));
    assert!(matches!(
        store.revoke_api_key(&[9; 32]),
        Err(StoreError::UnknownKey { .. })
    ));
}

#[test]
fn merging_is_a_union_that_converges_whatever_the_order() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [a, b] = dirs
        .each_ref()
        .map(|dir| Store::open(config(dir.path())).unwrap());
    let on_a = a.create_api_key(Role::Admin, "a".into()).unwrap();
    let on_b = b.create_api_key(Role::Read, "b".into()).unwrap();
    b.revoke_api_key(&key_hash(&on_b)).unwrap();
    assert_ne!(a.api_key_digest().unwrap(), b.api_key_digest().unwrap());

    // A full exchange: A sends its set, B merges it and answers what A lacks.
    let from_a = a.api_key_set().unwrap();
    assert_eq!(b.merge_api_keys(&from_a).unwrap(), 1);
    let answer = b.api_keys_missing_from(&from_a).unwrap();
    assert_eq!((answer.keys.len(), answer.revocations.len()), (1, 1));
    assert_eq!(a.merge_api_keys(&answer).unwrap(), 2);

    assert_eq!(a.api_key_digest().unwrap(), b.api_key_digest().unwrap());
    assert_eq!(a.list_api_keys().unwrap(), b.list_api_keys().unwrap());
    assert_eq!(b.authenticate(&on_a).unwrap(), Some(Role::Admin));
    assert_eq!(a.authenticate(&on_b).unwrap(), None);
    assert!(a.is_key_revoked(&key_hash(&on_b)));
    // Idempotent: the same sets again change nothing.
    assert_eq!(a.merge_api_keys(&b.api_key_set().unwrap()).unwrap(), 0);
    assert_eq!(b.merge_api_keys(&from_a).unwrap(), 0);
    assert!(
        b.api_keys_missing_from(&a.api_key_set().unwrap())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn of_two_revocation_times_the_earlier_wins_and_may_come_before_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let hash = [7u8; 32];
    let late = KeySet {
        keys: Vec::new(),
        revocations: vec![(hash, 500)],
    };
    assert_eq!(store.merge_api_keys(&late).unwrap(), 1);
    // The key arrives after its revocation: it is never valid here.
    let key = KeySet {
        keys: vec![(hash, record(Role::Admin, "x", 1))],
        revocations: vec![(hash, 900)],
    };
    assert_eq!(store.merge_api_keys(&key).unwrap(), 1);
    assert_eq!(store.api_key_status(&hash).unwrap(), KeyStatus::Revoked);
    let digest = store.api_key_digest().unwrap();
    let earlier = KeySet {
        keys: Vec::new(),
        revocations: vec![(hash, 300), (hash, 400)],
    };
    assert_eq!(store.merge_api_keys(&earlier).unwrap(), 1);
    assert_eq!(store.list_api_keys().unwrap()[0].revoked_at, Some(300));
    assert_ne!(
        store.api_key_digest().unwrap(),
        digest,
        "a stale digest was served"
    );
    // A peer holding the later time is told the earlier one.
    let missing = store.api_keys_missing_from(&late).unwrap();
    assert_eq!(missing.revocations, vec![(hash, 300)]);
}

#[test]
fn a_key_record_is_never_rewritten_by_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let key = store.create_api_key(Role::Read, "reader".into()).unwrap();
    let hash = key_hash(&key);
    let forged = KeySet {
        keys: vec![(hash, record(Role::Admin, "reader", 1))],
        revocations: Vec::new(),
    };
    assert_eq!(store.merge_api_keys(&forged).unwrap(), 0);
    assert_eq!(store.authenticate(&key).unwrap(), Some(Role::Read));
}

#[test]
fn keys_past_the_bound_are_refused_and_nothing_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let oversized = made_up_keys(chorus_protocol::MAX_API_KEYS + 1);
    assert!(matches!(
        store.merge_api_keys(&oversized),
        Err(StoreError::TooManyKeys { .. })
    ));
    assert_eq!(store.api_key_count(), 0);
    let full = made_up_keys(chorus_protocol::MAX_API_KEYS);
    assert_eq!(
        store.merge_api_keys(&full).unwrap(),
        chorus_protocol::MAX_API_KEYS
    );
    // One more, by a merge or a creation, is refused.
    let mut one_more = made_up_keys(1);
    one_more.keys[0].0 = [0xee; 32];
    assert!(matches!(
        store.merge_api_keys(&one_more),
        Err(StoreError::TooManyKeys { .. })
    ));
    assert!(matches!(
        store.create_api_key(Role::Read, "x".into()),
        Err(StoreError::TooManyKeys { .. })
    ));
    assert_eq!(store.api_key_count(), chorus_protocol::MAX_API_KEYS);
}

#[test]
fn a_key_id_prefix_names_one_key_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut set = made_up_keys(2);
    set.keys[0].0[..2].copy_from_slice(&[0xab, 0xcd]);
    set.keys[1].0[..2].copy_from_slice(&[0xab, 0xef]);
    store.merge_api_keys(&set).unwrap();
    assert_eq!(store.resolve_api_key("abcd").unwrap(), set.keys[0].0);
    assert_eq!(store.resolve_api_key("abe").unwrap(), set.keys[1].0);
    assert!(matches!(
        store.resolve_api_key("ab"),
        Err(StoreError::AmbiguousKey { matches: 2, .. })
    ));
    assert!(matches!(
        store.resolve_api_key("ff"),
        Err(StoreError::UnknownKey { .. })
    ));
    let refusal = store.resolve_api_key("ab").unwrap_err().to_error_code();
    assert!(
        matches!(refusal, ErrorCode::Invalid { ref field, .. } if field == "id"),
        "{refusal:?}"
    );
}

/// An item of `user` about `name` version `version`, rated `rating`, reporting an
/// error rate of `errors` and a mean duration of `ms`.
fn about(user: &str, name: &str, version: &str, rating: u8, errors: f64, ms: f64) -> Item {
    let mut item = item(user, "about a function");
    item.function = Some(FunctionRef {
        name: name.into(),
        version: version.into(),
    });
    item.rating = Some(rating);
    item.metrics = Some(chorus_protocol::ExecutionMetrics {
        success_rate: 1.0 - errors,
        avg_duration_ms: ms,
        error_rate: errors,
    });
    item
}

fn version(name: &str, version: &str) -> FunctionRef {
    FunctionRef {
        name: name.into(),
        version: version.into(),
    }
}

#[test]
fn function_stats_count_each_item_once_across_resubmits_rewrites_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<Item> = (0..10)
        .map(|i| about(&format!("u{i}"), "resize", "1.0", 2, 0.1, 5.0))
        .collect();
    let new: Vec<Item> = (0..5)
        .map(|i| about(&format!("u{i}"), "resize", "2.0", 5, 0.0, 1.0))
        .collect();
    {
        let store = Store::open(config(dir.path())).unwrap();
        let mut batch = old.clone();
        // The same id twice in one batch, plus items that name no function.
        batch.push(old[0].clone());
        batch.push(item("u1", "no function"));
        store.apply(batch);
        store.apply(new.clone());
        // A resubmit and a rewrite of the verdict: the same items, no new ones.
        store.apply(vec![old[3].clone(), new[1].clone()]);
        assert!(
            store
                .update_verdict(old[4].id, Status::Rejected { reasons: vec![] }, None)
                .unwrap()
        );
        store.flush().unwrap();
        let stats = store.function_stats(|_| true);
        assert_eq!(stats.len(), 2);
        let first = &stats[&version("resize", "1.0")];
        assert_eq!(first.items, 10);
        assert_eq!(first.mean_rating(), Some(2.0));
        assert!((first.error_rate().unwrap() - 0.1).abs() < 1e-9);
        assert!((first.duration_ms(0.5).unwrap() - 5.0).abs() < 0.2);
        assert_eq!(stats[&version("resize", "2.0")].items, 5);
        // Only the partitions asked for count.
        let wanted = partition_of("u0", 64);
        let some = store.function_stats(|p| p == wanted);
        assert_eq!(some[&version("resize", "1.0")].items, 1);
        assert!(store.function_stats(|_| false).is_empty());
        // Written while the indexer is paused, then dropped: replayed when reopened.
        store.pause_indexer(true);
        store.apply(vec![about("late", "resize", "2.0", 1, 0.0, 1.0)]);
    }
    let store = Store::open(config(dir.path())).unwrap();
    store.apply(vec![old[5].clone()]);
    store.flush().unwrap();
    let stats = store.function_stats(|_| true);
    assert_eq!(stats[&version("resize", "1.0")].items, 10);
    assert_eq!(stats[&version("resize", "2.0")].items, 6);
    assert_eq!(stats[&version("resize", "2.0")].ratings, [1, 0, 0, 0, 5]);
}

#[test]
fn replaying_what_the_index_already_holds_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (earlier, stats) = {
        let store = Store::open(config(dir.path())).unwrap();
        store.apply(vec![about("a", "crop", "1", 4, 0.0, 2.0)]);
        store.flush().unwrap();
        let earlier = store.shared.index.checkpoint();
        store.apply(
            (0..20)
                .map(|i| about(&format!("u{i}"), "crop", "1", 3, 0.0, 2.0))
                .collect(),
        );
        store.flush().unwrap();
        (earlier, store.function_stats(|_| true))
    };
    assert_eq!(stats[&version("crop", "1")].items, 21);
    {
        // As if a crash had cut the last batch's checkpoint short after its entries
        // (and the stats beside them) were applied: the log replays from before them.
        let db = open_index_db(&dir.path().join("store/index"), 4 << 20).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("checkpoint", &earlier.to_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(config(dir.path())).unwrap();
    store.flush().unwrap();
    assert_eq!(store.function_stats(|_| true), stats);
}

#[test]
fn stats_written_before_the_last_records_count_them_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let index_path = dir.path().join("store/index");
    let first: Vec<Item> = (0..10)
        .map(|i| about(&format!("u{i}"), "blur", "1", 5, 0.0, 3.0))
        .collect();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.apply(first.clone());
    }
    // The stats as written then, before the records below.
    let earlier: Vec<(sled::IVec, sled::IVec)> = {
        let db = open_index_db(&index_path, 4 << 20).unwrap();
        let tree = db.open_tree("function_stats/2").unwrap();
        tree.iter().map(Result::unwrap).collect()
    };
    let stats = {
        let store = Store::open(config(dir.path())).unwrap();
        store.apply(
            (0..20)
                .map(|i| about(&format!("v{i}"), "blur", "1", 1, 0.0, 3.0))
                .collect(),
        );
        // A rewrite of an item counted before: its item stays counted once.
        assert!(
            store
                .update_verdict(first[0].id, Status::Rejected { reasons: vec![] }, None)
                .unwrap()
        );
        store.flush().unwrap();
        store.function_stats(|_| true)
    };
    assert_eq!(stats[&version("blur", "1")].items, 30);
    {
        // As if the stats written after those records had been lost.
        let db = open_index_db(&index_path, 4 << 20).unwrap();
        let tree = db.open_tree("function_stats/2").unwrap();
        tree.clear().unwrap();
        for (key, value) in earlier {
            tree.insert(key, value).unwrap();
        }
        db.flush().unwrap();
    }
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.function_stats(|_| true), stats);
    assert_eq!(stats[&version("blur", "1")].ratings, [20, 0, 0, 0, 10]);
}

#[test]
fn sums_kept_over_some_partitions_move_with_what_is_counted_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let some = |p: PartitionId| p.is_multiple_of(3);
    let write = |n: usize, tag: &str| {
        store.apply(
            (0..n)
                .map(|i| {
                    about(
                        &format!("{tag}{i}"),
                        "sharpen",
                        &(i % 4).to_string(),
                        3,
                        0.0,
                        2.0,
                    )
                })
                .collect(),
        );
        store.flush().unwrap();
    };
    write(40, "a");
    let before = store.function_stats(some);
    // Kept now; what is counted next moves them.
    write(60, "b");
    let moved = store.function_stats(some);
    // Summed afresh: asked over other partitions first, the kept sums are replaced.
    assert_ne!(store.function_stats(|_| true), moved);
    assert_eq!(store.function_stats(some), moved);
    assert!(
        moved.values().map(|s| s.items).sum::<u64>()
            > before.values().map(|s| s.items).sum::<u64>()
    );
    let page = store.function_stats_page(some, |f| f.version != "0", 2);
    assert_eq!(page.len(), 2);
    assert_eq!(
        page.keys().map(|f| f.version.as_str()).collect::<Vec<_>>(),
        ["1", "2"]
    );
}

#[test]
fn facets_count_every_item_by_kind_tier_and_day_and_lose_deleted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut items = Vec::new();
    for (user, kind, rating) in [
        ("a", Kind::Rating, Some(5)),
        ("a", Kind::Rating, Some(1)),
        ("b", Kind::Text, None),
    ] {
        let mut item = Item::new(user, kind);
        item.rating = rating;
        items.push(item);
    }
    store.apply(items);
    store.flush().unwrap();
    let today = (now_ms() / chorus_protocol::DAY_MS) as u32;
    let facets = store.facet_stats(|_| true, Some((today.saturating_sub(1), today)));
    let rating = facets
        .iter()
        .find(|(f, _)| f.kind == Kind::Rating)
        .map(|(_, t)| *t)
        .unwrap();
    assert_eq!(rating.items, 2);
    assert_eq!(rating.ratings, [1, 0, 0, 0, 1]);
    assert_eq!(facets.values().map(|t| t.items).sum::<u64>(), 3);
    assert!(store.facet_stats(|_| true, Some((0, 1))).is_empty());
    store.delete_user("a", &mut |_, _| {}).unwrap();
    store.flush().unwrap();
    let facets = store.facet_stats(|_| true, None);
    assert_eq!(facets.values().map(|t| t.items).sum::<u64>(), 1);
    // The counts survive a restart.
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        store
            .facet_stats(|_| true, None)
            .values()
            .map(|t| t.items)
            .sum::<u64>(),
        1
    );
}
