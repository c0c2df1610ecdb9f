//! The sled index over the partition log: small keys that find records, applied behind
//! the log in large batches, off the receipt path.
//!
//! Trees (partition = `partition_of(user_id, partitions)`, `u16` BE):
//! - `listing`: partition ‖ user_len (u8) ‖ user ‖ stored_at (u64 BE) ‖ id → [`Locator`].
//!   A user's items are one range, oldest first; a partition is one contiguous range.
//! - `ids`: id → [`Locator`]: `get` and dedup by id. Values stay 20 bytes so sled keeps
//!   them inline (no allocation per entry when it copies a leaf on each insert).
//! - `sequences`: partition (u16 BE) → the last sequence indexed (u64 BE).
//! - `meta`: `checkpoint` — the log position up to which everything is indexed durably;
//!   recovery replays the log from there (every entry is a plain put, so replaying what
//!   is already indexed changes nothing).

use std::fs::File;
use std::ops::Bound;
use std::path::Path;

use chorus_protocol::{ItemId, PartitionId};

use super::StoreError;
use super::log::{Locator, LogPosition};

/// `meta` key of the checkpoint.
const META_CHECKPOINT: &[u8] = b"checkpoint";

/// What the index learns about one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The item's id.
    pub id: ItemId,
    /// Its `listing` key.
    pub listing_key: Vec<u8>,
    /// Where its newest record lies.
    pub locator: Locator,
    /// Its partition.
    pub partition: PartitionId,
    /// The record's sequence in the partition.
    pub sequence: u64,
}

/// The sled trees of the index.
pub(crate) struct Index {
    db: sled::Db,
    listing: sled::Tree,
    ids: sled::Tree,
    sequences: sled::Tree,
    meta: sled::Tree,
    /// sled's log file, to fdatasync after a flush when the store syncs.
    db_file: Option<File>,
}

impl Index {
    /// Opens the index trees in `db`; `sync`: fdatasync sled's log after each batch.
    pub(crate) fn open(db: sled::Db, path: &Path, sync: bool) -> Result<Index, StoreError> {
        let db_file = if sync {
            let log_path = path.join("db");
            Some(File::open(&log_path).map_err(|source| StoreError::Sync {
                path: log_path,
                source,
            })?)
        } else {
            None
        };
        Ok(Index {
            listing: db.open_tree("listing")?,
            ids: db.open_tree("ids")?,
            sequences: db.open_tree("sequences")?,
            meta: db.open_tree("meta")?,
            db,
            db_file,
        })
    }

    /// Where recovery starts: everything before it is indexed durably.
    pub(crate) fn checkpoint(&self) -> Result<LogPosition, StoreError> {
        match self.meta.get(META_CHECKPOINT)? {
            None => Ok(LogPosition::default()),
            Some(raw) => LogPosition::from_bytes(&raw).ok_or_else(|| StoreError::Corrupt {
                tree: "meta",
                reason: format!("checkpoint is {} bytes, expected 16", raw.len()),
            }),
        }
    }

    /// The last sequence indexed per partition.
    pub(crate) fn sequences(&self, partitions: u16) -> Result<Vec<u64>, StoreError> {
        let mut last = vec![0; usize::from(partitions)];
        for entry in self.sequences.iter() {
            let (key, value) = entry?;
            let (Ok(partition), Ok(sequence)) = (
                <[u8; 2]>::try_from(key.as_ref()),
                <[u8; 8]>::try_from(value.as_ref()),
            ) else {
                return Err(StoreError::Corrupt {
                    tree: "sequences",
                    reason: "entry of the wrong size".into(),
                });
            };
            if let Some(slot) = last.get_mut(usize::from(u16::from_be_bytes(partition))) {
                *slot = u64::from_be_bytes(sequence);
            }
        }
        Ok(last)
    }

    /// Applies entries (in log order) and moves the checkpoint to `through`, with one
    /// flush (and fdatasync when syncing). The checkpoint is written after the entries,
    /// and sled recovers a prefix of its own log, so a durable checkpoint implies
    /// durable entries.
    pub(crate) fn apply(
        &self,
        entries: &[IndexEntry],
        through: LogPosition,
    ) -> Result<(), StoreError> {
        let mut listing = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut sequences = std::collections::HashMap::new();
        for entry in entries {
            let locator = entry.locator.to_bytes();
            listing.insert(entry.listing_key.as_slice(), &locator[..]);
            ids.insert(&entry.id.to_bytes()[..], &locator[..]);
            sequences.insert(entry.partition, entry.sequence);
        }
        let mut seq_batch = sled::Batch::default();
        for (partition, sequence) in sequences {
            seq_batch.insert(&partition.to_be_bytes()[..], &sequence.to_be_bytes()[..]);
        }
        self.ids.apply_batch(ids)?;
        self.listing.apply_batch(listing)?;
        self.sequences.apply_batch(seq_batch)?;
        self.meta.insert(META_CHECKPOINT, &through.to_bytes()[..])?;
        self.flush()
    }

    /// Where the newest record of `id` lies.
    pub(crate) fn locate(&self, id: ItemId) -> Result<Option<Locator>, StoreError> {
        let Some(raw) = self.ids.get(id.to_bytes())? else {
            return Ok(None);
        };
        let locator = Locator::from_bytes(&raw).ok_or_else(|| StoreError::Corrupt {
            tree: "ids",
            reason: "entry shorter than a locator".into(),
        })?;
        Ok(Some(locator))
    }

    /// Up to `limit` `listing` entries under `prefix` strictly after `after` (or from
    /// the start), in key order.
    pub(crate) fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Locator)>, StoreError> {
        let iter = match after {
            None => self.listing.scan_prefix(prefix),
            Some(after) => self
                .listing
                .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded)),
        };
        let mut out = Vec::with_capacity(limit.min(64));
        for entry in iter {
            let (key, raw) = entry?;
            if !key.starts_with(prefix) || out.len() == limit {
                break;
            }
            let locator = Locator::from_bytes(&raw).ok_or_else(|| StoreError::Corrupt {
                tree: "listing",
                reason: "entry shorter than a locator".into(),
            })?;
            out.push((key.to_vec(), locator));
        }
        Ok(out)
    }

    /// The `listing` tree, for tests of its key layout.
    #[cfg(test)]
    pub(crate) fn listing(&self) -> &sled::Tree {
        &self.listing
    }

    /// Items indexed (one `listing` entry each).
    pub(crate) fn len(&self) -> usize {
        self.listing.len()
    }

    /// Makes everything applied so far durable.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        if let Some(file) = &self.db_file {
            file.sync_data().map_err(|source| StoreError::Sync {
                path: "index/db".into(),
                source,
            })?;
        }
        Ok(())
    }
}
