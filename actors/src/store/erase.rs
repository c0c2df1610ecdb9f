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
//! The item's function stats are taken away when the tombstone is indexed: the indexer
//! reads the record it supersedes (still live until then, so never retired) for the
//! facts it counted.

use chorus_protocol::{Item, ItemId, Status, StoredItem, partition_of};
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
            entry.uncount = functions::facts_of(&before.item);
        }
    }
    Ok(())
}

impl Store {
    /// Replaces every item of `user_id` not deleted yet by its tombstone, in one group
    /// commit, handing the records to `shipping` as a leader's write does; returns
    /// them (one per item deleted).
    pub fn delete_user(
        &self,
        user_id: &str,
        shipping: &mut Shipping<'_>,
    ) -> Result<Vec<ReplicaRecord>, StoreError> {
        check_user(user_id)?;
        let mut sequences = self.shared.lock_for_append()?;
        let mut tombstones = Vec::new();
        for id in self.user_ids(user_id)? {
            if let Some((stored, locator)) = self.current(id)?
                && stored.receipt.status != Status::Deleted
            {
                tombstones.push((tombstone(&stored), Some(locator)));
            }
        }
        let records = self.append_records(&mut sequences, tombstones, &[], shipping)?;
        info!(items = records.len(), "deleted a user's items");
        Ok(records)
    }

    /// How many items of `user_id` are stored (tombstones not counted).
    pub fn count_user(&self, user_id: &str) -> Result<u64, StoreError> {
        check_user(user_id)?;
        let mut count = 0;
        for id in self.user_ids(user_id)? {
            if let Some((stored, _)) = self.current(id)?
                && stored.receipt.status != Status::Deleted
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Every id listed under `user_id`, indexed or still in the tail.
    fn user_ids(&self, user_id: &str) -> Result<Vec<ItemId>, StoreError> {
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
