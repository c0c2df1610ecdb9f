//! Statistics per partition and function version, kept by the index as it applies
//! records, so that a function's summary is read, never computed by a scan.
//!
//! What they count is exact: the sum of the [`ItemFacts`] of every item live in the
//! index (an `ids` entry). An item's facts never change (a rewrite changes its status
//! only), so a record adds its item's facts when its id is not yet live, a replica's
//! truncation takes away the facts of the live items it removes, and nothing else
//! moves them. The stats are stored in the `ids` tree itself, under keys no id can
//! have ([`STATS_START`]), and written in the same batch as the `ids` entries they
//! count: sled applies a batch atomically, so after a crash the stats still count
//! exactly what `ids` holds, and replaying the log's tail (which asks `ids` whether
//! an id is live) counts each item once.
//!
//! A store made before the stats existed gets them counted once when it opens, from
//! every live record ([`complete`]); the `meta` mark says it is done.

use std::cell::Cell;
use std::collections::BTreeMap;

use chorus_protocol::{FunctionRef, ItemFacts, PartitionId, VersionStats};
use tracing::info;

use super::StoreError;
use super::index::Index;
use super::log::record::RecordKind;
use super::log::{LogError, PartitionLog};

/// The first stats key in the `ids` tree. Every id key is 16 bytes, so it sorts
/// before this one (a prefix of it, at most); every stats key starts with it and is
/// longer.
pub(crate) const STATS_START: [u8; 17] = [0xFF; 17];

/// Most bytes a stored [`VersionStats`] may decode from: every duration bucket full.
const STATS_LIMIT_BYTES: usize = 64 * 1024;

/// A function version in one partition.
pub(crate) type StatsKey = (PartitionId, FunctionRef);

/// The `ids` key of a partition's stats of `function`: [`STATS_START`], the partition
/// (u16 BE), the name's length (u16 BE), the name, then the version.
pub(crate) fn stats_key(partition: PartitionId, function: &FunctionRef) -> Vec<u8> {
    let name = function.name.as_bytes();
    let mut key = Vec::with_capacity(STATS_START.len() + 4 + name.len() + function.version.len());
    key.extend_from_slice(&STATS_START);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&(name.len() as u16).to_be_bytes());
    key.extend_from_slice(name);
    key.extend_from_slice(function.version.as_bytes());
    key
}

/// The partition and function version a stats key names.
pub(crate) fn parse_stats_key(key: &[u8]) -> Result<StatsKey, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        tree: "ids",
        reason: format!("function stats key: {reason}"),
    };
    let rest = key
        .strip_prefix(&STATS_START[..])
        .ok_or_else(|| corrupt("no stats prefix"))?;
    let (head, text) = rest
        .split_at_checked(4)
        .ok_or_else(|| corrupt("too short"))?;
    let partition = u16::from_be_bytes([head[0], head[1]]);
    let name_len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let (name, version) = text
        .split_at_checked(name_len)
        .ok_or_else(|| corrupt("name cut short"))?;
    let (Ok(name), Ok(version)) = (std::str::from_utf8(name), std::str::from_utf8(version)) else {
        return Err(corrupt("not UTF-8"));
    };
    Ok((
        partition,
        FunctionRef {
            name: name.to_owned(),
            version: version.to_owned(),
        },
    ))
}

/// A stats value as stored.
pub(crate) fn encode_stats(stats: &VersionStats) -> Vec<u8> {
    bincode::encode_to_vec(stats, bincode::config::standard())
        .expect("encoding into a Vec cannot fail")
}

/// A stored stats value, refused when it is not one a store could have written.
pub(crate) fn decode_stats(raw: &[u8]) -> Result<VersionStats, StoreError> {
    let config = bincode::config::standard().with_limit::<STATS_LIMIT_BYTES>();
    match bincode::decode_from_slice::<VersionStats, _>(raw, config) {
        Ok((stats, read)) if read == raw.len() => Ok(stats),
        Ok(_) => Err(StoreError::Corrupt {
            tree: "ids",
            reason: "function stats with trailing bytes".into(),
        }),
        Err(e) => Err(StoreError::Corrupt {
            tree: "ids",
            reason: format!("function stats: {e}"),
        }),
    }
}

/// Every partition's stats of every function version, as the index holds them.
#[derive(Debug, Default)]
pub(crate) struct Aggregates {
    stats: BTreeMap<StatsKey, VersionStats>,
}

impl Aggregates {
    /// The stats held for `key`.
    fn get(&self, key: &StatsKey) -> Option<&VersionStats> {
        self.stats.get(key)
    }

    /// Takes `changed` in: stats that count nothing any more are dropped.
    pub(crate) fn install(&mut self, changed: BTreeMap<StatsKey, VersionStats>) {
        for (key, stats) in changed {
            if stats.is_empty() {
                self.stats.remove(&key);
            } else {
                self.stats.insert(key, stats);
            }
        }
    }

    /// Replaces everything (a store opening, a recount).
    pub(crate) fn replace(&mut self, all: BTreeMap<StatsKey, VersionStats>) {
        self.stats = all;
    }

    /// Each function version's stats summed over the partitions `wanted` picks.
    pub(crate) fn summary(
        &self,
        wanted: &dyn Fn(PartitionId) -> bool,
    ) -> BTreeMap<FunctionRef, VersionStats> {
        let mut out: BTreeMap<FunctionRef, VersionStats> = BTreeMap::new();
        for ((partition, function), stats) in &self.stats {
            if wanted(*partition) {
                out.entry(function.clone()).or_default().merge(stats);
            }
        }
        out
    }
}

/// Stats one batch changes: each read once from what is held, then changed here.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    changed: BTreeMap<StatsKey, VersionStats>,
}

impl Changes {
    /// The stats of `key`, as changed so far.
    fn entry(&mut self, held: &Aggregates, key: StatsKey) -> &mut VersionStats {
        self.changed
            .entry(key)
            .or_insert_with_key(|key| held.get(key).cloned().unwrap_or_default())
    }

    /// An item of `function` in `partition` became live.
    pub(crate) fn add(
        &mut self,
        held: &Aggregates,
        partition: PartitionId,
        (function, facts): &(FunctionRef, ItemFacts),
    ) {
        self.entry(held, (partition, function.clone())).add(facts);
    }

    /// An item of `function` in `partition` is no longer live.
    pub(crate) fn remove(
        &mut self,
        held: &Aggregates,
        partition: PartitionId,
        (function, facts): &(FunctionRef, ItemFacts),
    ) {
        self.entry(held, (partition, function.clone()))
            .remove(facts);
    }

    /// Writes the changed stats into a batch of the `ids` tree.
    pub(crate) fn write(&self, batch: &mut sled::Batch) {
        for ((partition, function), stats) in &self.changed {
            let key = stats_key(*partition, function);
            if stats.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, encode_stats(stats));
            }
        }
    }

    /// The changed stats, to install once written.
    pub(crate) fn into_changed(self) -> BTreeMap<StatsKey, VersionStats> {
        self.changed
    }
}

/// What a record tells of the function its item names, if any.
pub(crate) fn facts_of(item: &chorus_protocol::Item) -> Option<(FunctionRef, ItemFacts)> {
    ItemFacts::of(item).map(|(function, facts)| (function.clone(), facts))
}

/// Counts the stats of a store made before they existed, from every live record; once
/// (the `meta` mark), and from scratch if an earlier count was cut short.
pub(crate) fn complete(index: &Index, log: &PartitionLog) -> Result<(), StoreError> {
    if index.function_stats_complete()? {
        return Ok(());
    }
    let empty = Aggregates::default();
    let mut counted = Changes::default();
    let mut items = 0usize;
    for entry in index.live_records() {
        let (_, locator) = entry?;
        let partition = Cell::new(0);
        let body = match log.read(locator, &|h| {
            partition.set(h.partition);
            h.kind == RecordKind::Item
        }) {
            Ok(body) => body,
            // Nothing live is in a retired segment; a stale entry counts nothing.
            Err(LogError::Retired { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let stored = super::decode_item(&body)?;
        if let Some(facts) = facts_of(&stored.item) {
            counted.add(&empty, partition.get(), &facts);
            items += 1;
        }
    }
    index.recount_function_stats(counted)?;
    info!(items, "counted the function stats of the stored items");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_key_names_its_partition_and_function_and_no_id() {
        let function = FunctionRef {
            name: "resize".into(),
            version: "1.0".into(),
        };
        let key = stats_key(700, &function);
        assert!(key.len() > 16, "longer than any id key");
        assert!(key.as_slice() > [0xFFu8; 16].as_slice());
        assert_eq!(parse_stats_key(&key).unwrap(), (700, function));
        assert!(parse_stats_key(&key[..STATS_START.len() + 3]).is_err());
        assert!(parse_stats_key(&[0u8; 20]).is_err());
    }

    #[test]
    fn stored_stats_that_no_items_add_up_to_are_corrupt() {
        let mut stats = VersionStats::default();
        stats.add(&ItemFacts {
            rating: Some(3),
            metrics: None,
        });
        assert_eq!(decode_stats(&encode_stats(&stats)).unwrap(), stats);
        let mut trailing = encode_stats(&stats);
        trailing.push(0);
        assert!(decode_stats(&trailing).is_err());
        stats.items = 0;
        assert!(decode_stats(&encode_stats(&stats)).is_err());
    }
}
