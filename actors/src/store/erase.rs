//! Users' rights on the store: every item of a user replaced by a tombstone (a
//! deletion), and what the indexer needs to take a deleted item out of the function
//! stats.
//!
//! A tombstone is a rewrite like any verdict's: a new record of the item (same id,
//! same listing key, status [`Status::Deleted`]) that keeps the id and the user and
//! nothing the user wrote. It takes the next sequence of its partition, so a leader
//! ships it, a follower appends it, and a replica that was down gets it when it catches
//! up by sequence, like any record; the records it supersedes become dead, and the
//! retirement pass reclaims their bytes by compaction. Because the tombstone stays, no
//! replica's copy of an older record and no retry of the id brings the item back. A
//! listing never shows it; a read by id answers it as absent.
//!
//! Retention expires items the same way: [`Store::expired`] finds, in a partition's
//! sequence order, the live items stored before a cutoff, and [`Store::expire_items`]
//! replaces them by tombstones.
//!
//! The item's function stats are taken away when the tombstone is indexed: the indexer
//! reads the record it supersedes (still live until then, so never retired) for the
//! facts it counted.

use chorus_protocol::{Item, ItemId, PartitionId, Status, StoredItem, partition_of};
use tracing::info;

use super::index::IndexEntry;
use super::keys::user_prefix;
use super::log::record::RecordKind;
use super::log::{LogError, PartitionLog};
use super::{ReplicaRecord, Shipping, Store, StoreError, check_user, decode_item, functions};

/// Listing keys read per scan while gathering a user's items.
const SCAN_CHUNK: usize = 1024;

/// What is kept of `stored` once it is deleted: its id, user and kind, where it was
/// stored, and nothing the user wrote.
pub fn tombstone(stored: &StoredItem) -> StoredItem {
    let mut item = Item::new(stored.item.user_id.clone(), stored.item.kind);
    item.id = stored.item.id;
    item.tier = stored.item.tier;
    item.client_ts = 0;
    let mut receipt = stored.receipt.clone();
    receipt.status = Status::Deleted;
    receipt.alignment_score = None;
    StoredItem { item, receipt }
}

/// Fills in, for each tombstone among `entries`, the facts of the item it deletes,
/// from the record it supersedes.
pub(crate) fn facts_of_deleted(
    log: &PartitionLog,
    entries: &mut [IndexEntry],
) -> Result<(), StoreError> {
    for entry in entries
        .iter_mut()
        .filter(|e| e.deleted && e.uncount.is_none())
    {
        let Some(previous) = entry.supersedes else {
            continue;
        };
        let body = match log.read(previous, &|h| h.kind == RecordKind::Item) {
            Ok(body) => body,
            // Gone already: nothing of it can still be counted.
            Err(LogError::Retired { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let before = decode_item(&body)?;
        if before.receipt.status != Status::Deleted {
            entry.uncount = functions::facts_of(&before);
        }
    }
    Ok(())
}

impl Store {
    /// Replaces every item of `user_id` not deleted yet by its tombstone, in one group
    /// commit, handing the records to `shipping` as a leader's write does; returns
    /// them (one per item deleted). For a user of many items, [`Store::user_item_ids`]
    /// and [`Store::delete_items`] a part at a time keep each group small.
    pub fn delete_user(
        &self,
        user_id: &str,
        shipping: &mut Shipping<'_>,
    ) -> Result<Vec<ReplicaRecord>, StoreError> {
        let ids = self.user_item_ids(user_id)?;
        self.delete_items(user_id, &ids, shipping)
    }

    /// Replaces the items `ids` of `user_id` by their tombstones, in one group commit
    /// (an id of another user, unknown, or deleted already is passed over); returns the
    /// records, one per item deleted.
    pub fn delete_items(
        &self,
        user_id: &str,
        ids: &[ItemId],
        shipping: &mut Shipping<'_>,
    ) -> Result<Vec<ReplicaRecord>, StoreError> {
        check_user(user_id)?;
        let mut sequences = self.shared.lock_for_append()?;
        let mut tombstones = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some((stored, locator)) = self.current(id)?
                && stored.item.user_id == user_id
                && stored.receipt.status != Status::Deleted
            {
                tombstones.push((tombstone(&stored), Some(locator)));
            }
        }
        let records = self.append_records(&mut sequences, tombstones, &[], shipping)?;
        info!(items = records.len(), "deleted items of a user");
        Ok(records)
    }

    /// Items of `partition` stored before `cutoff_ms`, in sequence order after
    /// sequence `after`: at most `max` of them, and the sequence to go on after. The
    /// search stops at the first live item stored at or after the cutoff (a partition's
    /// sequence follows the time its items were stored, so what lies past it is newer;
    /// a verdict rewritten later is found once the items before it expire), and then
    /// goes on from just before it. Reads each record from the log once.
    pub fn expired(
        &self,
        partition: PartitionId,
        after: u64,
        cutoff_ms: u64,
        max: usize,
    ) -> Result<(Vec<ItemId>, u64), StoreError> {
        self.check_partition(partition)?;
        let mut found = Vec::new();
        let mut reached = after;
        for entry in self.shared.index.sequences_after(partition, after) {
            let (sequence, locator) = entry?;
            let stored = match self.read_record(locator) {
                Ok(stored) => stored,
                // Copied forward since it was listed: its copy is found under this
                // sequence again by the next search.
                Err(StoreError::Log(LogError::Retired { .. })) => break,
                Err(e) => return Err(e),
            };
            // A superseded record: its item's newest record comes later.
            if self.shared.index.locate(stored.item.id)? == Some(locator) {
                if stored.receipt.stored_at >= cutoff_ms {
                    break;
                }
                if stored.receipt.status != Status::Deleted {
                    found.push(stored.item.id);
                }
            }
            reached = sequence;
            if found.len() == max {
                break;
            }
        }
        Ok((found, reached))
    }

    /// Replaces the items `ids` stored before `cutoff_ms` by their tombstones, in one
    /// group commit (an id unknown, newer, or deleted already is passed over); returns
    /// the records, one per item expired.
    pub fn expire_items(
        &self,
        ids: &[ItemId],
        cutoff_ms: u64,
        shipping: &mut Shipping<'_>,
    ) -> Result<Vec<ReplicaRecord>, StoreError> {
        let mut sequences = self.shared.lock_for_append()?;
        let mut tombstones = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some((stored, locator)) = self.current(id)?
                && stored.receipt.stored_at < cutoff_ms
                && stored.receipt.status != Status::Deleted
            {
                tombstones.push((tombstone(&stored), Some(locator)));
            }
        }
        let records = self.append_records(&mut sequences, tombstones, &[], shipping)?;
        if !records.is_empty() {
            info!(items = records.len(), "expired items past their retention");
        }
        Ok(records)
    }

    /// How many items of `user_id` are stored (tombstones not counted).
    pub fn count_user(&self, user_id: &str) -> Result<u64, StoreError> {
        check_user(user_id)?;
        let mut count = 0;
        for id in self.user_item_ids(user_id)? {
            if let Some((stored, _)) = self.current(id)?
                && stored.receipt.status != Status::Deleted
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Every id listed under `user_id` (tombstones included), indexed or still in the
    /// tail, ascending.
    pub fn user_item_ids(&self, user_id: &str) -> Result<Vec<ItemId>, StoreError> {
        check_user(user_id)?;
        let prefix = user_prefix(partition_of(user_id, self.partitions), user_id);
        let mut ids: Vec<ItemId> = self
            .shared
            .tail()
            .scan(&prefix, None, usize::MAX)
            .into_iter()
            .map(|(_, stored)| stored.item.id)
            .collect();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = self
                .shared
                .index
                .scan(&prefix, after.as_deref(), SCAN_CHUNK)?;
            let full = chunk.len() == SCAN_CHUNK;
            for (key, _) in &chunk {
                if let Some((_, id)) = super::keys::split_item_key(&key[prefix.len()..]) {
                    ids.push(id);
                }
            }
            match (full, chunk.into_iter().last()) {
                (true, Some((key, _))) => after = Some(key),
                _ => break,
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests;
