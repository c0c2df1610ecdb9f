//! Measures a snapshot and a restore of a store of N items (BENCHMARKS.md, "Backups"):
//! writes them, snapshots onto the store's filesystem (segments hard-linked) and onto
//! another (`--copy-to`, segments copied), restores the copy, and prints each time.
//!
//! `cargo run --release -p chorus-actors --example snapshot_speed -- DIR ITEMS [--copy-to DIR2]`

use std::path::PathBuf;
use std::time::Instant;

use chorus_actors::store::{DEFAULT_INDEX_CACHE_BYTES, LogConfig, snapshot};
use chorus_actors::{Durability, Store, StoreConfig};
use chorus_protocol::{Item, Kind, NodeId};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: snapshot_speed DIR ITEMS [--copy-to DIR2]";
    let dir = PathBuf::from(args.get(1).expect(usage));
    let items: usize = args.get(2).and_then(|n| n.parse().ok()).expect(usage);
    let copy_to = match args.get(3).map(String::as_str) {
        Some("--copy-to") => Some(PathBuf::from(args.get(4).expect(usage))),
        _ => None,
    };
    let store = Store::open(StoreConfig {
        path: dir.join("store"),
        node: NodeId("bench".into()),
        partitions: 1024,
        durability: Durability::Flush,
        log: LogConfig::default(),
    })
    .expect("opening the store");
    let started = Instant::now();
    for batch in 0..items.div_ceil(256) {
        let writes: Vec<Item> = (0..256)
            .map(|i| {
                let mut item =
                    Item::new(format!("user-{}", (batch * 256 + i) % 10_000), Kind::Text);
                item.text = "feedback ".repeat(100);
                item
            })
            .collect();
        for outcome in store.apply(writes) {
            outcome.expect("write");
        }
    }
    store.flush().expect("flush");
    println!("wrote {items} items in {:?}", started.elapsed());
    let mut targets = vec![dir.join("snap-linked")];
    targets.extend(copy_to.map(|d| d.join("snap-copied")));
    let mut last = None;
    for target in targets {
        let report = store.snapshot(&target, &mut |_| {}).expect("snapshot");
        let mb = report.progress.bytes_total as f64 / 1e6;
        println!(
            "snapshot {}: {} segments ({} linked), {mb:.0} MB, {} records in {:?} ({:.0} MB/s)",
            target.display(),
            report.progress.segments_total,
            report.linked_segments,
            report.records,
            report.duration,
            mb / report.duration.as_secs_f64()
        );
        last = Some(target);
    }
    drop(store);
    let from = last.expect("one snapshot");
    let restored = dir.join("restored");
    let report = snapshot::restore(&from, &restored, DEFAULT_INDEX_CACHE_BYTES).expect("restore");
    println!(
        "restore from {}: {} items, {:.0} MB in {:?} ({:.0} MB/s)",
        from.display(),
        report.items,
        report.bytes as f64 / 1e6,
        report.duration,
        report.bytes as f64 / 1e6 / report.duration.as_secs_f64()
    );
}
