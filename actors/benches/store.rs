//! The store alone, no network: what one item costs to append to the partition log
//! (durably, one group per batch) and to index in sled behind it.
//!
//! - `store_cpu_per_item/{1,64,1024}`: process CPU time (all threads: the writer and
//!   the indexer) per batch of N ~300-byte items under full durability, measured from
//!   the first append to the moment the index has absorbed the last one. Criterion
//!   reports it as "time"; divide by N (the throughput line does) for CPU per item.
//! - `store_apply_{Full,Flush}/{1,64,1024}`: wall time per durable batch.
//! - `sled_insert_vs_batch`: raw sled, single inserts against one `apply_batch`.

use std::hint::black_box;

use chorus_actors::store::LogConfig;
use chorus_actors::{Durability, Store, StoreConfig};
use chorus_protocol::{Item, Kind, NodeId};
use cpu_time::ProcessTime;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// The allocator the `chorus` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCHES: [usize; 3] = [1, 64, 1024];

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let mut item = Item::new(format!("user-{}", i % 97), Kind::Text);
            item.text = "x".repeat(240);
            item.tags = vec!["bench".into()];
            item
        })
        .collect()
}

fn open(dir: &tempfile::TempDir, durability: Durability) -> Store {
    Store::open(StoreConfig {
        path: dir.path().join("store"),
        node: NodeId("bench".into()),
        partitions: 1024,
        durability,
        log: LogConfig::default(),
    })
    .unwrap()
}

fn cpu_per_item(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_cpu_per_item");
    group.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Durability::Full);
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iterations| {
                let batches: Vec<Vec<Item>> = (0..iterations).map(|_| items(n)).collect();
                let start = ProcessTime::now();
                for batch in batches {
                    black_box(store.apply(batch));
                }
                store.flush().unwrap();
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// The acknowledgement path alone: the indexer is paused, so this is the CPU a batch
/// costs before its receipts can be sent (dedup lookups, encoding, the log write and
/// its sync).
fn ack_path_cpu_per_item(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_ack_path_cpu_per_item");
    group.sample_size(20);
    for n in BATCHES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, Durability::Full);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iterations| {
                let batches: Vec<Vec<Item>> = (0..iterations).map(|_| items(n)).collect();
                store.pause_indexer(true);
                let start = ProcessTime::now();
                for batch in batches {
                    black_box(store.apply(batch));
                }
                let spent = start.elapsed();
                // Outside the measurement: let the index catch up, so the tail never
                // reaches its bound (a writer would wait for room forever).
                store.pause_indexer(false);
                store.flush().unwrap();
                spent
            })
        });
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    for durability in [Durability::Full, Durability::Flush] {
        let mut group = c.benchmark_group(format!("store_apply_{durability:?}"));
        group.sample_size(20);
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, durability);
        for n in BATCHES {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
                b.iter_batched(
                    || items(n),
                    |batch| black_box(store.apply(batch)),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

fn raw_sled(c: &mut Criterion) {
    let mut group = c.benchmark_group("sled_insert_vs_batch");
    group.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("raw")).unwrap();
    let tree = db.open_tree("t").unwrap();
    let value = vec![7u8; 300];
    let mut key = 0u128;
    for n in [64usize, 256] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("inserts", n), &n, |b, &n| {
            b.iter(|| {
                for _ in 0..n {
                    key += 1;
                    tree.insert(key.to_be_bytes(), &value[..]).unwrap();
                }
                db.flush().unwrap();
            })
        });
        group.bench_with_input(BenchmarkId::new("apply_batch", n), &n, |b, &n| {
            b.iter(|| {
                let mut batch = sled::Batch::default();
                for _ in 0..n {
                    key += 1;
                    batch.insert(&key.to_be_bytes()[..], &value[..]);
                }
                tree.apply_batch(batch).unwrap();
                db.flush().unwrap();
            })
        });
    }
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(
        benches,
        cpu_per_item,
        ack_path_cpu_per_item,
        apply,
        raw_sled
    );
}

criterion_main!(group::benches);
