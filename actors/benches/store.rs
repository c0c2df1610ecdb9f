//! Store write throughput: one durable `apply` per batch of 1, 64 and 256 items of
//! ~300 bytes, under both durabilities; plus a raw sled comparison of single inserts
//! against one `apply_batch` per batch (which `Store::apply` uses).

use std::hint::black_box;

use chorus_actors::{Durability, Store, StoreConfig};
use chorus_protocol::{Item, Kind, NodeId};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const BATCHES: [usize; 3] = [1, 64, 256];

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

fn apply(c: &mut Criterion) {
    for durability in [Durability::Full, Durability::Flush] {
        let mut group = c.benchmark_group(format!("store_apply_{durability:?}"));
        group.sample_size(20);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig {
            path: dir.path().join("store"),
            node: NodeId("bench".into()),
            partitions: 1024,
            durability,
        })
        .unwrap();
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
    criterion_group!(benches, apply, raw_sled);
}

criterion_main!(group::benches);
