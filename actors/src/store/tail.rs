//! The log's not-yet-indexed tail, in memory: what was acknowledged but is not in the
//! sled index yet. Reads look here first, so every acknowledged item is readable at
//! once (read-your-writes); the indexer drains it in log order and forgets an entry
//! only once the index holds it durably.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use chorus_protocol::{ItemId, PartitionId, StoredItem};

use super::index::IndexEntry;
use super::log::{Locator, LogPosition};

/// One acknowledged record not yet indexed.
#[derive(Clone, Debug)]
pub(crate) struct TailItem {
    /// The decoded item, shared with readers.
    pub item: Arc<StoredItem>,
    /// Its `listing` key.
    pub listing_key: Vec<u8>,
    /// Where the record lies: the id's live record while it is here.
    pub locator: Locator,
    /// Which append put it here (a newer record of the same id replaces it).
    pub generation: u64,
}

/// The unindexed tail.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    by_id: HashMap<ItemId, TailItem>,
    by_key: BTreeMap<Vec<u8>, ItemId>,
    /// Every pending record by (partition, sequence), with its id and generation, so a
    /// partition can be read in sequence order before the index holds it.
    by_sequence: BTreeMap<(PartitionId, u64), (ItemId, u64)>,
    /// What the indexer has yet to apply, in log order, with the log position just
    /// after each record.
    pending: VecDeque<(IndexEntry, LogPosition, u64)>,
    next_generation: u64,
}

impl Tail {
    /// Records an acknowledged record (called in log order).
    pub(crate) fn insert(&mut self, entry: IndexEntry, item: Arc<StoredItem>, end: LogPosition) {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.by_key.insert(entry.listing_key.clone(), entry.id);
        self.by_sequence
            .insert((entry.partition, entry.sequence), (entry.id, generation));
        self.by_id.insert(
            entry.id,
            TailItem {
                item,
                listing_key: entry.listing_key.clone(),
                locator: entry.locator,
                generation,
            },
        );
        self.pending.push_back((entry, end, generation));
    }

    /// The newest unindexed record of `id` and where it lies.
    pub(crate) fn get_located(&self, id: ItemId) -> Option<(Arc<StoredItem>, Locator)> {
        self.by_id
            .get(&id)
            .map(|t| (Arc::clone(&t.item), t.locator))
    }

    /// Where the newest unindexed record of `id` lies.
    pub(crate) fn locate(&self, id: ItemId) -> Option<Locator> {
        self.by_id.get(&id).map(|t| t.locator)
    }

    /// Up to `limit` unindexed items under `prefix` strictly after `after`, in key order.
    pub(crate) fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Arc<StoredItem>)> {
        let start = match after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        self.by_key
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, id)| Some((key.clone(), Arc::clone(&self.by_id.get(id)?.item))))
            .take(limit)
            .collect()
    }

    /// The live unindexed records of `partition` with a sequence in `after+1..=last`,
    /// ascending, with their locators, until their lengths reach `max_bytes` (always the
    /// first if any). A record replaced by a newer one of its id is not live.
    pub(crate) fn partition_range(
        &self,
        partition: PartitionId,
        after: u64,
        last: u64,
        max_bytes: usize,
    ) -> Vec<(u64, Locator)> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if after >= last {
            return out;
        }
        for (&(_, sequence), (id, generation)) in self
            .by_sequence
            .range((partition, after + 1)..=(partition, last))
        {
            if bytes >= max_bytes {
                break;
            }
            let Some(live) = self.by_id.get(id).filter(|t| t.generation == *generation) else {
                continue;
            };
            bytes += live.locator.len as usize;
            out.push((sequence, live.locator));
        }
        out
    }

    /// Records waiting for the index.
    pub(crate) fn unindexed(&self) -> usize {
        self.pending.len()
    }

    /// Up to `max` pending entries, oldest first, and the log position after the last.
    pub(crate) fn next_batch(&self, max: usize) -> Option<(Vec<IndexEntry>, LogPosition)> {
        let (_, end, _) = self
            .pending
            .get(max.min(self.pending.len()).checked_sub(1)?)?;
        let entries = self
            .pending
            .iter()
            .take(max)
            .map(|(entry, _, _)| entry.clone())
            .collect();
        Some((entries, *end))
    }

    /// The first `count` pending entries are indexed durably: forget them, keeping any
    /// id whose newer record is still pending.
    pub(crate) fn indexed(&mut self, count: usize) {
        for (entry, _, generation) in self.pending.drain(..count.min(self.pending.len())) {
            let key = (entry.partition, entry.sequence);
            if self
                .by_sequence
                .get(&key)
                .is_some_and(|&(_, g)| g == generation)
            {
                self.by_sequence.remove(&key);
            }
            if self
                .by_id
                .get(&entry.id)
                .is_some_and(|t| t.generation == generation)
            {
                let removed = self.by_id.remove(&entry.id);
                if let Some(removed) = removed {
                    self.by_key.remove(&removed.listing_key);
                }
            }
        }
    }
}
