use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chorus_protocol::{Item, ItemId, Kind, NodeId, Role, Status};

use super::*;
use crate::store::test_model::{Model, check, rejected};
use crate::store::{Durability, LogConfig, MIN_INDEX_CACHE_BYTES, RetireStep, Store, StoreConfig};

/// Small segments, so a few hundred items span many; `retire_every`: how often the
/// retirement thread runs (an hour: only the test drives it).
fn config(path: &Path, retire_every: Duration) -> StoreConfig {
    StoreConfig {
        path: path.to_path_buf(),
        node: NodeId("node-a".into()),
        partitions: 8,
        durability: Durability::Flush,
        log: LogConfig {
            segment_bytes: 4096,
            retire_dead_fraction: 0.2,
            retire_interval: retire_every,
            index_cache_bytes: MIN_INDEX_CACHE_BYTES,
        },
    }
}

const QUIET: Duration = Duration::from_secs(3600);

fn item(user: &str, n: usize) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.text = format!("item {n} {}", "x".repeat(100));
    item
}

fn write(store: &Store, model: &mut Model, count: usize) {
    let items: Vec<Item> = (0..count)
        .map(|n| item(&format!("user-{}", n % 5), model.len() + n))
        .collect();
    for chunk in items.chunks(9) {
        for outcome in store.apply(chunk.to_vec()) {
            outcome.unwrap();
        }
    }
    for it in items {
        model.insert(it.id, (it.user_id, Status::Accepted));
    }
}

fn snapshot(store: &Store, dir: &Path) -> SnapshotReport {
    let mut calls = Vec::new();
    let report = store.snapshot(dir, &mut |p| calls.push(*p)).unwrap();
    assert_eq!(calls.len(), report.progress.segments_total);
    assert_eq!(calls.last(), Some(&report.progress));
    assert_eq!(
        report.progress.segments_done,
        report.progress.segments_total
    );
    assert_eq!(report.progress.bytes_done, report.progress.bytes_total);
    report
}

fn restored(snapshot: &Path, into: &Path) -> (RestoreReport, Store) {
    let report = restore(snapshot, into, MIN_INDEX_CACHE_BYTES).unwrap();
    let store = Store::open(config(into, QUIET)).unwrap();
    (report, store)
}

#[test]
fn a_restored_snapshot_holds_every_item_listing_api_key_and_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("live"), QUIET)).unwrap();
    let mut model = Model::new();
    write(&store, &mut model, 300);
    let rewritten: Vec<ItemId> = model.keys().copied().step_by(7).collect();
    for id in &rewritten {
        assert!(store.update_verdict(*id, rejected(1), Some(0.5)).unwrap());
        model.get_mut(id).unwrap().1 = rejected(1);
    }
    let key = store.create_api_key(Role::Read, "reader".into()).unwrap();
    let revoked = store.create_api_key(Role::Admin, "gone".into()).unwrap();
    store
        .revoke_api_key(&crate::store::key_hash(&revoked))
        .unwrap();
    store
        .audit_append("test", "snapshot.test", "detail")
        .unwrap();
    let events = store
        .record_events(vec![
            chorus_protocol::EventKind::PrivacySpent {
                key_id: "k1".into(),
                epsilon: 0.5,
            },
            chorus_protocol::EventKind::CurrentVersion {
                function: chorus_protocol::FunctionRef {
                    name: "resize".into(),
                    version: "2".into(),
                },
                by: "k1".into(),
            },
        ])
        .unwrap();
    // Some of it indexed, some still in the tail: both are in the log.
    store.flush().unwrap();
    write(&store, &mut model, 40);

    let report = snapshot(&store, &dir.path().join("snap"));
    assert!(report.progress.segments_total > 3, "{report:?}");
    assert!(report.linked_segments >= report.progress.segments_total - 1);
    assert_eq!(report.records, 340 + rewritten.len() as u64);
    assert_eq!(report.api_keys, 2);

    // Written after the snapshot began: not in it.
    let mut later = Model::new();
    write(&store, &mut later, 20);
    drop(store);

    let (restore_report, back) = restored(&dir.path().join("snap"), &dir.path().join("back"));
    assert_eq!(restore_report.items, model.len());
    assert_eq!(restore_report.records, report.records);
    assert_eq!(restore_report.end, report.end);
    check(&back, &model);
    assert_eq!(back.item_count(), model.len());
    for id in later.keys() {
        assert_eq!(back.get(*id).unwrap(), None);
    }
    assert_eq!(back.authenticate(&key).unwrap(), Some(Role::Read));
    // The revocation is restored with the key: it never authenticates again.
    assert_eq!(back.authenticate(&revoked).unwrap(), None);
    let listed = back.list_api_keys().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|k| k.revoked_at.is_some()).count(), 1);
    let audit = back.audit().verify().unwrap();
    assert!(audit.is_intact());
    assert_eq!(audit.entries, 1);
    // The events, and what they set: a key's privacy spend, a function's status.
    let (held, _) = back
        .follow_events(&Default::default(), chorus_protocol::EventTypes::all(), 100)
        .unwrap();
    assert_eq!(held, events);
    assert!((back.privacy_spent("k1").unwrap() - 0.5).abs() < 1e-9);
    let status = back.function_status(&["resize".into()]).unwrap();
    assert_eq!(status[0].current.as_deref(), Some("2"));

    // The restored store takes writes and keeps them across a reopen.
    write(&back, &mut model, 30);
    drop(back);
    let reopened = Store::open(config(&dir.path().join("back"), QUIET)).unwrap();
    check(&reopened, &model);
}

#[test]
fn records_copied_forward_by_compaction_restore_as_their_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("live"), QUIET)).unwrap();
    let mut model = Model::new();
    write(&store, &mut model, 200);
    let ids: Vec<ItemId> = model.keys().copied().step_by(2).collect();
    for chunk in ids.chunks(5) {
        let updates = chunk.iter().map(|&id| (id, rejected(2), None)).collect();
        store.update_verdicts(updates).unwrap();
    }
    for id in &ids {
        model.get_mut(id).unwrap().1 = rejected(2);
    }
    store.flush().unwrap();
    let mut compacted = 0;
    for _ in 0..10_000 {
        match store.retire_step().unwrap() {
            RetireStep::Idle => break,
            RetireStep::Waiting { .. } => store.flush().unwrap(),
            RetireStep::Removed {
                compacted: true, ..
            } => compacted += 1,
            _ => {}
        }
    }
    assert!(compacted > 0, "nothing was compacted");
    snapshot(&store, &dir.path().join("snap"));
    drop(store);
    let (_, back) = restored(&dir.path().join("snap"), &dir.path().join("back"));
    check(&back, &model);
    assert_eq!(back.item_count(), model.len());
}

#[test]
fn a_snapshot_taken_under_writes_and_retirement_holds_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    // The retirement thread runs every 10 ms, racing the snapshot for the segments.
    let store = Arc::new(
        Store::open(config(
            &dir.path().join("live"),
            crate::store::MIN_RETIRE_INTERVAL,
        ))
        .unwrap(),
    );
    let acknowledged = Arc::new(std::sync::Mutex::new(Model::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (store, acknowledged, stop) = (store.clone(), acknowledged.clone(), stop.clone());
        move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let mut fresh = Model::new();
                write(&store, &mut fresh, 20);
                // Rewrites make dead bytes, so segments are compacted meanwhile.
                let updates = fresh
                    .keys()
                    .step_by(2)
                    .map(|&id| (id, rejected(round), None))
                    .collect::<Vec<_>>();
                store.update_verdicts(updates.clone()).unwrap();
                for (id, status, _) in updates {
                    fresh.get_mut(&id).unwrap().1 = status;
                }
                acknowledged.lock().unwrap().extend(fresh);
            }
        }
    });
    // The snapshot starts once the retirement pass is at work on the segments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while acknowledged.lock().unwrap().len() < 1000 || store.log_usage().retired_segments == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer is stuck or the retirement pass never ran"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = acknowledged.lock().unwrap().clone();
    snapshot(&store, &dir.path().join("snap"));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(store);
    let (_, back) = restored(&dir.path().join("snap"), &dir.path().join("back"));
    for (id, (user, status)) in &before {
        let stored = back
            .get(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id:?} acknowledged before the snapshot, lost"));
        assert_eq!(&stored.item.user_id, user);
        // Rewritten at most once, and acknowledged with it, before the copy began.
        assert_eq!(&stored.receipt.status, status);
    }
}

/// Replaces a file's bytes with `edit`ed ones (a new inode: a snapshot's segment may be
/// a hard link to the live store's).
fn edit_file(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    edit(&mut bytes);
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn snapshot_of_a_few_items(dir: &Path) -> std::path::PathBuf {
    let store = Store::open(config(&dir.join("live"), QUIET)).unwrap();
    write(&store, &mut Model::new(), 100);
    let snap = dir.join("snap");
    snapshot(&store, &snap);
    snap
}

fn first_segment(snap: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(snap.join(LOG_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    segments.remove(0)
}

#[test]
fn a_damaged_segment_is_refused_and_nothing_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot_of_a_few_items(dir.path());
    edit_file(&first_segment(&snap), |b| {
        let at = b.len() / 2;
        b[at] ^= 0x40;
    });
    let target = dir.path().join("back");
    match restore(&snap, &target, MIN_INDEX_CACHE_BYTES) {
        Err(RestoreError::Segment { reason, .. }) => {
            assert!(reason.contains("checksum"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!target.exists());
    assert!(!dir.path().join("back.restoring").exists());
    assert!(matches!(verify(&snap), Err(RestoreError::Segment { .. })));
}

#[test]
fn a_missing_or_short_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot_of_a_few_items(dir.path());
    let first = first_segment(&snap);
    edit_file(&first, |b| b.truncate(b.len() - 1));
    match restore(&snap, &dir.path().join("a"), MIN_INDEX_CACHE_BYTES) {
        Err(RestoreError::Segment { reason, .. }) => assert!(reason.contains("bytes"), "{reason}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&first).unwrap();
    match restore(&snap, &dir.path().join("b"), MIN_INDEX_CACHE_BYTES) {
        Err(RestoreError::Segment { reason, .. }) => {
            assert!(reason.contains("missing"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_damaged_or_missing_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot_of_a_few_items(dir.path());
    let manifest = snap.join(MANIFEST_FILE);
    edit_file(&manifest, |b| b[10] ^= 0x01);
    assert!(matches!(
        restore(&snap, &dir.path().join("a"), MIN_INDEX_CACHE_BYTES),
        Err(RestoreError::Manifest(ManifestError::ChecksumMismatch))
    ));
    std::fs::remove_file(&manifest).unwrap();
    assert!(matches!(
        restore(&snap, &dir.path().join("b"), MIN_INDEX_CACHE_BYTES),
        Err(RestoreError::NoManifest { .. })
    ));
}

#[test]
fn a_non_empty_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot_of_a_few_items(dir.path());
    let target = dir.path().join("busy");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("something"), b"x").unwrap();
    assert!(matches!(
        restore(&snap, &target, MIN_INDEX_CACHE_BYTES),
        Err(RestoreError::TargetNotEmpty { .. })
    ));
    assert!(target.join("something").exists());
    // An empty directory is a fine target.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    restore(&snap, &empty, MIN_INDEX_CACHE_BYTES).unwrap();

    let store = Store::open(config(&dir.path().join("other"), QUIET)).unwrap();
    assert!(matches!(
        store.snapshot(&snap, &mut |_| {}),
        Err(SnapshotError::TargetNotEmpty { .. })
    ));
}
