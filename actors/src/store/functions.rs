//! Statistics per partition and function version, kept by the index as it applies
//! records, so that a function's summary is read, never computed by a scan.
//!
//! What they count is exact: the sum of the [`ItemFacts`] of every item live in the
//! index. An item's facts never change (a rewrite changes its status only), so an item
//! counts once, by its first record: one that rewrites no other (`replaces` is `None`)
//! with a sequence past what its partition has counted so far. A copy keeps its
//! sequence, so it is never new; a rewrite names the sequence it replaces. A replica's
//! truncation takes away the items whose first record it cuts.
//!
//! Each partition's stats are one value of the `function_stats` tree, with the last
//! sequence they count (its watermark), so a value is consistent on its own. They are
//! written every [`PERSIST_INTERVAL`] (and when the store stops), after the index
//! entries they count (sled recovers a prefix of its log, so durable stats imply
//! durable entries), and at once on a truncation, before the index forgets anything.
//! When a store opens, each partition counts the records the index holds past its
//! watermark ([`catch_up`]), reading them from the log; the tail the log replays is
//! counted as the indexer applies it. Writing a partition's stats once per interval,
//! not once per batch, keeps the cost off the indexer's path.
//!
//! A store made before the stats existed counts every live record once when it opens
//! ([`complete`]); the `meta` mark says it is done.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use bincode::{Decode, Encode};
use chorus_protocol::{
    Facet, FunctionRef, Item, ItemFacts, PartitionId, Status, StoredItem, Tally, VersionStats,
};
use tracing::info;

use super::StoreError;
use super::index::Index;
use super::log::record::RecordKind;
use super::log::{Locator, LogError, PartitionLog};

/// How often the indexer writes the partitions whose stats changed.
pub(crate) const PERSIST_INTERVAL: Duration = Duration::from_secs(5);

/// Most bytes one partition's stored stats may decode from.
const STATS_LIMIT_BYTES: usize = 64 << 20;

/// What one item tells the stats: of the function version it names, if any, and of
/// its facet (kind, tier, day stored), with its rating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The function version and what the item tells of it.
    pub(crate) function: Option<(FunctionRef, ItemFacts)>,
    /// Where the item falls among the facets.
    pub(crate) facet: Facet,
    /// Its rating, 1..=5.
    pub(crate) rating: Option<u8>,
}

/// What a record tells the stats; `None` for a tombstone (its item is gone).
pub(crate) fn facts_of(stored: &StoredItem) -> Option<Facts> {
    if stored.receipt.status == Status::Deleted {
        return None;
    }
    let item: &Item = &stored.item;
    Some(Facts {
        function: ItemFacts::of(item).map(|(function, facts)| (function.clone(), facts)),
        facet: Facet::of(item, stored.receipt.stored_at),
        rating: item.rating.filter(|r| (1..=5).contains(r)),
    })
}

/// One partition's stats: each function version's, each facet's, and the last
/// sequence counted.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub(crate) struct PartitionStats {
    /// Records up to this sequence are counted.
    pub(crate) counted: u64,
    /// Each function version's stats (none empty).
    pub(crate) versions: BTreeMap<FunctionRef, VersionStats>,
    /// Each facet's items and ratings (none empty).
    pub(crate) facets: BTreeMap<Facet, Tally>,
}

impl PartitionStats {
    /// Counts a record past the watermark: an item by its first record (`facts`), and
    /// for a tombstone, takes away the item it deletes (`uncount`). Returns whether the
    /// stats changed and what was counted.
    pub(crate) fn apply<'f>(
        &mut self,
        sequence: u64,
        replaces: Option<u64>,
        facts: Option<&'f Facts>,
        uncount: Option<&Facts>,
    ) -> (bool, Option<&'f Facts>) {
        if sequence <= self.counted {
            return (false, None);
        }
        self.counted = sequence;
        if let Some(gone) = uncount {
            self.remove(gone);
        }
        match (replaces, facts) {
            (None, Some(counted)) => {
                self.add(counted);
                (true, Some(counted))
            }
            _ => (true, None),
        }
    }

    /// Counts one item.
    pub(crate) fn add(&mut self, facts: &Facts) {
        if let Some((function, item)) = &facts.function {
            self.versions.entry(function.clone()).or_default().add(item);
        }
        self.facets
            .entry(facts.facet)
            .or_default()
            .add(facts.rating);
    }

    /// An item is gone (a truncation cut its first record, or it was deleted).
    pub(crate) fn remove(&mut self, facts: &Facts) {
        if let Some((function, item)) = &facts.function
            && let Some(stats) = self.versions.get_mut(function)
        {
            stats.remove(item);
            if stats.is_empty() {
                self.versions.remove(function);
            }
        }
        if let Some(tally) = self.facets.get_mut(&facts.facet) {
            tally.remove(facts.rating);
            if tally.is_empty() {
                self.facets.remove(&facts.facet);
            }
        }
    }
}

/// A partition's stats as stored.
pub(crate) fn encode_stats(stats: &PartitionStats) -> Vec<u8> {
    bincode::encode_to_vec(stats, bincode::config::standard())
        .expect("encoding into a Vec cannot fail")
}

/// A partition's stored stats, refused when no store could have written them.
pub(crate) fn decode_stats(raw: &[u8]) -> Result<PartitionStats, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree: "function_stats",
        reason,
    };
    let config = bincode::config::standard().with_limit::<STATS_LIMIT_BYTES>();
    match bincode::decode_from_slice::<PartitionStats, _>(raw, config) {
        Ok((stats, read)) if read == raw.len() => {
            if stats.versions.values().any(VersionStats::is_empty)
                || stats.facets.values().any(Tally::is_empty)
            {
                return Err(corrupt("a version or facet that counts nothing".into()));
            }
            Ok(stats)
        }
        Ok(_) => Err(corrupt("trailing bytes".into())),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

/// Reads the record at `locator`: its partition and what it tells of its function.
fn read_facts(
    log: &PartitionLog,
    locator: Locator,
) -> Result<Option<(PartitionId, Option<Facts>)>, StoreError> {
    let partition = Cell::new(0);
    let body = match log.read(locator, &|h| {
        partition.set(h.partition);
        h.kind == RecordKind::Item
    }) {
        Ok(body) => body,
        // Nothing live is in a retired segment; a stale entry counts nothing.
        Err(LogError::Retired { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stored = super::decode_item(&body)?;
    Ok(Some((partition.get(), facts_of(&stored))))
}

/// For a tombstone at `locator` that rewrote sequence `replaced`: the facts of the
/// version it deleted (none for any other rewrite, or when that version is gone).
fn deleted_facts(
    index: &Index,
    log: &PartitionLog,
    partition: PartitionId,
    locator: Locator,
    replaced: u64,
) -> Result<Option<Facts>, StoreError> {
    let Some(stored) = read_stored(log, locator)? else {
        return Ok(None);
    };
    if stored.receipt.status != Status::Deleted {
        return Ok(None);
    }
    let Some(previous) = index.locate_sequence(partition, replaced)? else {
        return Ok(None);
    };
    Ok(read_stored(log, previous)?
        .filter(|before| before.receipt.status != Status::Deleted)
        .and_then(|before| facts_of(&before)))
}

/// The item at `locator`, or `None` if its segment was retired.
fn read_stored(log: &PartitionLog, locator: Locator) -> Result<Option<StoredItem>, StoreError> {
    match log.read(locator, &|h| h.kind == RecordKind::Item) {
        Ok(body) => super::decode_item(&body).map(Some),
        Err(LogError::Retired { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Counts the stats of a store made before they existed, from every live record, up
/// to the index's last sequence of each partition; once (the `meta` mark), and from
/// scratch if an earlier count was cut short.
pub(crate) fn complete(index: &Index, log: &PartitionLog) -> Result<(), StoreError> {
    if index.function_stats_complete()? {
        return Ok(());
    }
    let mut counted: Vec<PartitionStats> = index
        .sequences()
        .into_iter()
        .map(|last| PartitionStats {
            counted: last,
            ..PartitionStats::default()
        })
        .collect();
    let mut items = 0usize;
    for entry in index.live_records() {
        let (_, locator) = entry?;
        if let Some((partition, Some(facts))) = read_facts(log, locator)?
            && let Some(stats) = counted.get_mut(usize::from(partition))
        {
            stats.add(&facts);
            items += 1;
        }
    }
    index.recount_function_stats(counted)?;
    info!(items, "counted the function stats of the stored items");
    Ok(())
}

/// Counts, for each partition, the records the index holds past the partition's
/// watermark (applied after its stats were last written), reading them from the log.
pub(crate) fn catch_up(index: &Index, log: &PartitionLog) -> Result<(), StoreError> {
    let mut read = 0usize;
    for partition in 0..index.partition_count() {
        let from = index.function_stats_counted(partition);
        let mut changed = false;
        let mut stats = index.partition_function_stats(partition);
        for entry in index.entries_after(partition, from) {
            let (sequence, locator, replaces) = entry?;
            read += 1;
            let (facts, uncount) = match replaces {
                // A rewrite's item counted at its first record; a tombstone takes the
                // facts of the version it replaced away.
                Some(replaced) => (
                    None,
                    deleted_facts(index, log, partition, locator, replaced)?,
                ),
                None => (read_facts(log, locator)?.and_then(|(_, facts)| facts), None),
            };
            changed |= stats
                .apply(sequence, replaces, facts.as_ref(), uncount.as_ref())
                .0;
        }
        if changed {
            index.install_partition_function_stats(partition, stats);
        }
    }
    if read > 0 {
        info!(
            records = read,
            "counted function stats past their last write"
        );
    }
    index.persist_function_stats()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function() -> FunctionRef {
        FunctionRef {
            name: "f".into(),
            version: "1".into(),
        }
    }

    fn facts(rating: u8) -> Facts {
        Facts {
            function: Some((
                function(),
                ItemFacts {
                    rating: Some(rating),
                    metrics: None,
                },
            )),
            facet: Facet {
                kind: chorus_protocol::Kind::Rating,
                tier: chorus_protocol::Tier::Standard,
                day: 20_000,
            },
            rating: Some(rating),
        }
    }

    #[test]
    fn an_item_counts_once_by_its_first_record() {
        let mut stats = PartitionStats::default();
        let first = facts(4);
        assert_eq!(
            stats.apply(1, None, Some(&first), None),
            (true, Some(&first))
        );
        // A rewrite of it, a copy of it (its old sequence), a record of no function.
        assert_eq!(stats.apply(2, Some(1), Some(&first), None), (true, None));
        assert_eq!(stats.apply(1, None, Some(&first), None), (false, None));
        assert_eq!(stats.apply(3, None, None, None), (true, None));
        assert_eq!(stats.counted, 3);
        let counted = &stats.versions[&function()];
        assert_eq!(counted.items, 1);
        assert_eq!(stats.facets[&facts(4).facet].ratings, [0, 0, 0, 1, 0]);
        stats.remove(&facts(4));
        assert!(stats.versions.is_empty(), "an emptied version is dropped");
        assert!(stats.facets.is_empty(), "an emptied facet is dropped");
    }

    #[test]
    fn stored_stats_round_trip_and_nonsense_is_corrupt() {
        let mut stats = PartitionStats::default();
        let _ = stats.apply(7, None, Some(&facts(2)), None);
        assert_eq!(decode_stats(&encode_stats(&stats)).unwrap(), stats);
        let mut trailing = encode_stats(&stats);
        trailing.push(0);
        assert!(decode_stats(&trailing).is_err());
        let mut empty = stats.clone();
        empty.versions.insert(function(), VersionStats::default());
        assert!(decode_stats(&encode_stats(&empty)).is_err());
        let mut empty = stats.clone();
        empty.facets.insert(facts(1).facet, Tally::default());
        assert!(decode_stats(&encode_stats(&empty)).is_err());
    }
}
