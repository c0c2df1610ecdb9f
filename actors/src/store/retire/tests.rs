use std::path::Path;

use chorus_protocol::{Item, ItemId, Kind, NodeId, Status};
use proptest::prelude::*;

use super::*;
use crate::store::test_model::{Model, check, rejected};
use crate::store::{Durability, LogConfig, MIN_RETIRE_INTERVAL, Store, StoreConfig, log};

/// Small segments, and a pass interval long enough that only the test drives retirement.
fn config(path: &Path, segment_bytes: u64) -> StoreConfig {
    StoreConfig {
        path: path.to_path_buf(),
        node: NodeId("node-a".into()),
        partitions: 8,
        durability: Durability::Flush,
        log: LogConfig {
            segment_bytes,
            retire_dead_fraction: 0.5,
            retire_interval: Duration::from_secs(3600),
            ..LogConfig::default()
        },
    }
}

fn item(user: &str, n: usize) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.text = format!("item {n} {}", "x".repeat(150));
    item
}

/// Writes `count` items spread over three users; returns them in the model.
fn write(store: &Store, model: &mut Model, count: usize) {
    let items: Vec<Item> = (0..count)
        .map(|n| item(&format!("user-{}", n % 3), model.len() + n))
        .collect();
    for chunk in items.chunks(7) {
        for outcome in store.apply(chunk.to_vec()) {
            outcome.unwrap();
        }
    }
    for it in items {
        model.insert(it.id, (it.user_id, Status::Accepted));
    }
}

/// Rewrites the verdict of every `nth` item of the model.
fn rewrite(store: &Store, model: &mut Model, nth: usize, round: usize) {
    let ids: Vec<ItemId> = model.keys().copied().step_by(nth.max(1)).collect();
    for chunk in ids.chunks(5) {
        let updates = chunk
            .iter()
            .map(|&id| (id, rejected(round), Some(0.25)))
            .collect();
        assert_eq!(store.update_verdicts(updates).unwrap(), chunk.len());
    }
    for id in ids {
        model.get_mut(&id).unwrap().1 = rejected(round);
    }
}

/// Runs the pass until nothing qualifies, letting the index catch up when it waits.
fn retire_all(store: &Store) -> Vec<RetireStep> {
    store.flush().unwrap();
    let mut steps = Vec::new();
    for _ in 0..10_000 {
        let step = store.retire_step().unwrap();
        match step {
            RetireStep::Idle => return steps,
            RetireStep::Waiting { .. } => store.flush().unwrap(),
            _ => {}
        }
        steps.push(step);
    }
    panic!("the retirement pass never settled: {steps:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn segment_files(path: &Path) -> Vec<u64> {
    let mut found: Vec<u64> = std::fs::read_dir(path.join("log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name();
            name.to_str()?.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    found.sort_unstable();
    found
}

const SEGMENT: u64 = 4 << 10;

#[test]
fn rewritten_verdicts_are_reclaimed_and_every_item_keeps_its_newest_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut model = Model::new();
    {
        let store = Store::open(config(&path, SEGMENT)).unwrap();
        write(&store, &mut model, 150);
        store.flush().unwrap();
        assert_eq!(store.log_usage().dead_bytes, 0);
        rewrite(&store, &mut model, 1, 1);
        rewrite(&store, &mut model, 2, 2);
        store.flush().unwrap();
        let before = store.log_usage();
        assert!(before.dead_bytes > before.bytes / 3, "{before:?}");
        let steps = retire_all(&store);
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, RetireStep::Removed { .. })),
            "{steps:?}"
        );
        let after = store.log_usage();
        assert!(after.bytes < before.bytes, "{before:?} → {after:?}");
        assert!(after.retired_segments > 0, "{after:?}");
        assert_eq!(after.segments, segment_files(&path).len());
        // The bound: what stays before the checkpoint is at least half live; the
        // segment holding the checkpoint and the head segment are outside it.
        assert!(
            after.bytes <= 2 * after.live_bytes + 2 * (SEGMENT + 512),
            "{after:?}"
        );
        check(&store, &model);
    }
    let store = Store::open(config(&path, SEGMENT)).unwrap();
    check(&store, &model);
    assert_eq!(store.item_count(), model.len());
    // Nothing left to do after the reopen: the counts came back with it.
    let again = retire_all(&store);
    assert!(
        !again
            .iter()
            .any(|s| matches!(s, RetireStep::Planned { .. })),
        "{again:?}"
    );
}

#[test]
fn a_wholly_dead_segment_is_deleted_without_copying() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(config(&path, SEGMENT)).unwrap();
    let mut model = Model::new();
    write(&store, &mut model, 60);
    rewrite(&store, &mut model, 1, 1);
    store.flush().unwrap();
    let first = segment_files(&path)[0];
    let steps = retire_all(&store);
    assert!(steps.contains(&RetireStep::Removed {
        segment: first,
        compacted: false
    }));
    assert!(!segment_files(&path).contains(&first));
    assert_eq!(store.log_usage().copied_bytes, 0);
    check(&store, &model);
}

#[test]
fn a_segment_half_live_is_compacted_and_its_live_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(config(&path, SEGMENT)).unwrap();
    let mut model = Model::new();
    write(&store, &mut model, 60);
    rewrite(&store, &mut model, 3, 1);
    rewrite(&store, &mut model, 2, 2);
    store.flush().unwrap();
    let steps = retire_all(&store);
    assert!(
        steps.iter().any(|s| matches!(
            s,
            RetireStep::Removed {
                compacted: true,
                ..
            }
        )),
        "{steps:?}"
    );
    let usage = store.log_usage();
    assert!(usage.compacted_segments > 0 && usage.copied_bytes > 0);
    check(&store, &model);
    drop(store);
    let store = Store::open(config(&path, SEGMENT)).unwrap();
    check(&store, &model);
}

/// Items, then rewrites that leave the first segments mostly (not wholly) dead.
fn half_dead_store(path: &Path) -> (Store, Model) {
    let store = Store::open(config(path, SEGMENT)).unwrap();
    let mut model = Model::new();
    write(&store, &mut model, 60);
    rewrite(&store, &mut model, 3, 1);
    rewrite(&store, &mut model, 2, 2);
    store.flush().unwrap();
    (store, model)
}

#[test]
fn a_crash_at_any_step_of_a_compaction_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (store, model) = half_dead_store(&path);
    // Copies stay unindexed (only in the log) until the pass must wait for them.
    store.pause_indexer(true);
    let mut snapshots = 0;
    let mut removed = 0;
    for _ in 0..1000 {
        let step = store.retire_step().unwrap();
        // As a crash right after this step would leave the disk.
        let crashed = dir.path().join(format!("crash-{snapshots}"));
        copy_dir(&path, &crashed);
        snapshots += 1;
        {
            let reopened = Store::open(config(&crashed, SEGMENT)).unwrap();
            check(&reopened, &model);
            retire_all(&reopened);
            check(&reopened, &model);
            drop(reopened);
            let again = Store::open(config(&crashed, SEGMENT)).unwrap();
            check(&again, &model);
        }
        std::fs::remove_dir_all(&crashed).unwrap();
        match step {
            RetireStep::Idle => break,
            RetireStep::Waiting { .. } => {
                store.pause_indexer(false);
                store.flush().unwrap();
                store.pause_indexer(true);
            }
            RetireStep::Removed { .. } => removed += 1,
            _ => {}
        }
    }
    assert!(removed > 0, "no segment was retired");
    assert!(snapshots > 3);
    store.pause_indexer(false);
    check(&store, &model);
}

#[test]
fn a_store_dropped_mid_compaction_reopens_whole_and_finishes_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (store, model) = half_dead_store(&path);
    store.pause_indexer(true);
    let copied = (0..100).any(|_| {
        matches!(
            store.retire_step().unwrap(),
            RetireStep::Copied { records, .. } if records > 0
        )
    });
    assert!(copied, "nothing was copied forward");
    // Dropped paused: the copies are in the log only, as after a crash.
    drop(store);
    let store = Store::open(config(&path, SEGMENT)).unwrap();
    check(&store, &model);
    let steps = retire_all(&store);
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, RetireStep::Removed { .. }))
    );
    check(&store, &model);
}

#[test]
fn a_record_rewritten_between_the_plan_and_its_copy_keeps_the_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (store, mut model) = half_dead_store(&path);
    let RetireStep::Planned { segment, live } = store.retire_step().unwrap() else {
        panic!("nothing planned");
    };
    assert!(live > 0);
    // Every item rewritten after the plan listed the segment's live records.
    rewrite(&store, &mut model, 1, 9);
    let mut copied = 0;
    for _ in 0..100 {
        match store.retire_step().unwrap() {
            RetireStep::Copied { records, .. } => copied += records,
            RetireStep::Waiting { .. } => store.flush().unwrap(),
            RetireStep::Removed { segment: gone, .. } => {
                assert_eq!(gone, segment);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(copied, 0, "a record that died after the plan was copied");
    check(&store, &model);
    drop(store);
    let store = Store::open(config(&path, SEGMENT)).unwrap();
    check(&store, &model);
}

#[test]
fn a_reader_that_located_a_record_before_its_segment_went_still_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (store, model) = half_dead_store(&path);
    let first = segment_files(&path)[0];
    // A live record of the first segment, located as `get` would before reading.
    let (id, stale) = model
        .keys()
        .find_map(|&id| {
            let locator = store.shared.index.locate(id).unwrap()?;
            (locator.segment == first).then_some((id, locator))
        })
        .expect("a live record in the first segment");
    let steps = retire_all(&store);
    assert!(steps.iter().any(|s| matches!(
        s,
        RetireStep::Removed { segment, .. } if *segment == first
    )));
    assert!(matches!(
        store
            .shared
            .log
            .read(stale, &|h| h.kind == RecordKind::Item),
        Err(LogError::Retired { .. })
    ));
    let (stored, now) = store.read_located(id, stale).unwrap().unwrap();
    assert_ne!(now, stale);
    assert_eq!(stored.item.id, id);
    assert_eq!(stored.receipt.status, model[&id].1);
}

#[test]
fn readers_running_through_retirement_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (store, mut model) = half_dead_store(&path);
    let store = std::sync::Arc::new(store);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let store = std::sync::Arc::clone(&store);
            let stop = std::sync::Arc::clone(&stop);
            let ids: Vec<ItemId> = model.keys().copied().collect();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Acquire) {
                    for id in &ids {
                        assert!(store.get(*id).unwrap().is_some(), "{id:?} missing");
                        reads += 1;
                    }
                    let (page, _) = store.list_by_user(&format!("user-{r}"), None, 100).unwrap();
                    assert!(!page.is_empty());
                }
                reads
            })
        })
        .collect();
    for round in 3..8 {
        rewrite(&store, &mut model, round % 3 + 1, round);
        retire_all(&store);
    }
    stop.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert!(store.log_usage().retired_segments > 0);
    check(&store, &model);
}

#[test]
fn dead_bytes_are_counted_once_across_a_crash_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut model = Model::new();
    let expected = {
        let store = Store::open(config(&path, SEGMENT)).unwrap();
        write(&store, &mut model, 40);
        store.flush().unwrap();
        let ids: Vec<ItemId> = model.keys().copied().step_by(2).collect();
        let old: u64 = ids
            .iter()
            .map(|&id| u64::from(store.shared.locate(id).unwrap().unwrap().len))
            .sum();
        // Half indexed, half only in the log when the store goes down.
        let (indexed, unindexed) = ids.split_at(ids.len() / 2);
        store
            .update_verdicts(indexed.iter().map(|&id| (id, rejected(1), None)).collect())
            .unwrap();
        store.flush().unwrap();
        store.pause_indexer(true);
        store
            .update_verdicts(
                unindexed
                    .iter()
                    .map(|&id| (id, rejected(1), None))
                    .collect(),
            )
            .unwrap();
        for id in ids {
            model.get_mut(&id).unwrap().1 = rejected(1);
        }
        old
    };
    for _ in 0..2 {
        let store = Store::open(config(&path, SEGMENT)).unwrap();
        store.flush().unwrap();
        assert_eq!(store.log_usage().dead_bytes, expected);
        check(&store, &model);
    }
}

#[test]
fn the_background_pass_reclaims_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut cfg = config(&path, SEGMENT);
    cfg.log.retire_interval = MIN_RETIRE_INTERVAL;
    let store = Store::open(cfg).unwrap();
    let mut model = Model::new();
    write(&store, &mut model, 80);
    rewrite(&store, &mut model, 1, 1);
    store.flush().unwrap();
    // A generous bound on how long the thread may take, not a timing claim.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.log_usage().retired_segments == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing was retired");
        std::thread::sleep(Duration::from_millis(20));
    }
    check(&store, &model);
}

#[test]
fn out_of_range_log_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut cases: Vec<StoreConfig> = Vec::new();
    for fraction in [0.0, -0.5, 1.5, f64::NAN] {
        let mut cfg = config(&path, SEGMENT);
        cfg.log.retire_dead_fraction = fraction;
        cases.push(cfg);
    }
    for segment_bytes in [0, 100, log::MAX_SEGMENT_BYTES + 1] {
        cases.push(config(&path, segment_bytes));
    }
    let mut cfg = config(&path, SEGMENT);
    cfg.log.retire_interval = Duration::ZERO;
    cases.push(cfg);
    for cfg in cases {
        assert!(
            matches!(Store::open(cfg.clone()), Err(StoreError::InvalidConfig(_))),
            "{:?} accepted",
            cfg.log
        );
    }
    assert!(!path.exists(), "a refused config created the store");
    assert!(LogConfig::default().validate().is_ok());
}

#[derive(Clone, Debug)]
enum Op {
    Write(usize),
    Rewrite { nth: usize },
    Retire,
    RetireSteps(usize),
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..12).prop_map(Op::Write),
        3 => (1usize..4).prop_map(|nth| Op::Rewrite { nth }),
        2 => Just(Op::Retire),
        2 => (1usize..6).prop_map(Op::RetireSteps),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random writes, rewrites, (partial) retirement passes, reopens and crashes: the
    /// store always holds exactly the model, and the log never holds more than the
    /// bound once a pass has settled.
    #[test]
    fn retirement_keeps_the_store_equal_to_a_model(ops in proptest::collection::vec(op(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let mut path = dir.path().join("store-0");
        let segment = 2 << 10;
        let mut store = Store::open(config(&path, segment)).unwrap();
        let mut model = Model::new();
        for (round, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write(count) => write(&store, &mut model, count),
                Op::Rewrite { nth } => rewrite(&store, &mut model, nth, round),
                Op::Retire => {
                    retire_all(&store);
                    let usage = store.log_usage();
                    prop_assert!(
                        usage.bytes <= 2 * usage.live_bytes + 2 * (segment + 512),
                        "{:?}", usage
                    );
                }
                Op::RetireSteps(steps) => {
                    for _ in 0..steps {
                        store.retire_step().unwrap();
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(config(&path, segment)).unwrap();
                }
                Op::Crash => {
                    let crashed = dir.path().join(format!("store-{}", round + 1));
                    copy_dir(&path, &crashed);
                    drop(store);
                    path = crashed;
                    store = Store::open(config(&path, segment)).unwrap();
                }
            }
            check(&store, &model);
        }
    }
}
