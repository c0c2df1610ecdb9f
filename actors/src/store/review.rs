//! The review queue: the items whose newest record is flagged, in listing order, kept
//! by the index as it applies records (tree `review`, see [`super::index`]), and a
//! reviewer's decision, which rewrites the item's verdict like any rewrite.
//!
//! A reader checks each queued item's current record: an entry whose item is no longer
//! flagged (a truncation took the flagged record away, or the rewrite that unflagged it
//! is still in the tail) is skipped, and forgotten once the index agrees. A store made
//! before the queue existed fills it once from every live record when it opens
//! ([`complete`]); the `meta` mark says it is done.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chorus_protocol::{
    EventKind, ItemId, MAX_EVENT_REASONS, PartitionId, Status, StoredItem, partition_of,
};
use tracing::{info, warn};

use super::index::Index;
use super::keys::{item_key, split_item_key};
use super::log::record::RecordKind;
use super::log::{LogError, PartitionLog};
use super::{ReplicaRecord, Shipping, Store, StoreError};

/// Keys written per batch while filling the queue of an older store.
const COMPLETE_BATCH: usize = 4096;
/// Most `item_flagged` events waiting to be recorded; past it the oldest are dropped
/// (and counted): the queue itself still holds every flagged item.
const MAX_FLAGGED_WAITING: usize = 65_536;

/// The items this node flagged as a leader, waiting to be recorded as events.
#[derive(Debug, Default)]
pub(crate) struct FlaggedFeed {
    waiting: Mutex<VecDeque<EventKind>>,
    dropped: AtomicU64,
}

impl FlaggedFeed {
    /// Notes the items of `stored` that are flagged.
    pub(crate) fn note<'a>(&self, stored: impl IntoIterator<Item = &'a StoredItem>) {
        let mut waiting = None;
        for stored in stored {
            let Status::Flagged { reasons } = &stored.receipt.status else {
                continue;
            };
            let waiting = waiting
                .get_or_insert_with(|| self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            if waiting.len() == MAX_FLAGGED_WAITING {
                waiting.pop_front();
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(
                        "item_flagged events are recorded slower than items are flagged; dropping the oldest"
                    );
                }
            }
            waiting.push_back(EventKind::ItemFlagged {
                item: stored.item.id,
                user_id: stored.item.user_id.clone(),
                reasons: reasons.iter().take(MAX_EVENT_REASONS).cloned().collect(),
            });
        }
    }

    /// Takes up to `max` waiting events, oldest first.
    pub(crate) fn take(&self, max: usize) -> Vec<EventKind> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let n = waiting.len().min(max);
        waiting.drain(..n).collect()
    }
}

/// Fills the queue of a store made before it existed, from every live record; once.
pub(crate) fn complete(index: &Index, log: &PartitionLog) -> Result<(), StoreError> {
    if index.review_complete()? {
        return Ok(());
    }
    let partitions = index.partition_count();
    let mut keys = Vec::new();
    let mut queued = 0usize;
    for entry in index.live_records() {
        let (_, locator) = entry?;
        let body = match log.read(locator, &|h| h.kind == RecordKind::Item) {
            Ok(body) => body,
            Err(LogError::Retired { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let stored = super::decode_item(&body)?;
        if matches!(stored.receipt.status, Status::Flagged { .. }) {
            keys.push(listing_key(&stored, partitions));
            queued += 1;
            if keys.len() == COMPLETE_BATCH {
                index.complete_review(std::mem::take(&mut keys), false)?;
            }
        }
    }
    index.complete_review(keys, true)?;
    info!(queued, "filled the review queue from the stored items");
    Ok(())
}

/// Where `stored` sorts in the review queue (its listing key): what a page token holds,
/// so that pages gathered from several members merge in the queue's own order.
pub fn queue_key(stored: &StoredItem, partitions: u16) -> Vec<u8> {
    listing_key(stored, partitions)
}

fn listing_key(stored: &StoredItem, partitions: u16) -> Vec<u8> {
    item_key(
        partition_of(&stored.item.user_id, partitions),
        &stored.item.user_id,
        stored.receipt.stored_at,
        stored.item.id,
    )
}

/// How a reviewer decides on a flagged item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The item is accepted.
    Approve,
    /// The item is rejected, for the reasons it was flagged.
    Reject,
}

/// What a decision wrote: the item as now stored and the record that carries it.
#[derive(Clone, Debug)]
pub struct Decided {
    /// The item with its new verdict.
    pub stored: StoredItem,
    /// The rewrite, to ship to the partition's followers.
    pub record: ReplicaRecord,
}

impl Store {
    /// Takes up to `max` of the `item_flagged` events this node's writes made as a
    /// leader, for the node to record (a follower's copies make none).
    pub fn take_flagged(&self, max: usize) -> Vec<EventKind> {
        self.flagged.take(max)
    }

    /// One page of the review queue over the partitions `wanted` picks, after `after`
    /// (the listing key the previous page ended at), at most `limit` items; and the key
    /// to go on from when more may follow.
    pub fn review_page(
        &self,
        wanted: impl Fn(PartitionId) -> bool,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<StoredItem>, Option<Vec<u8>>), StoreError> {
        let first = after
            .and_then(|key| key.get(..2))
            .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
        let mut items = Vec::new();
        for partition in (first..self.partitions).filter(|&p| wanted(p)) {
            for key in self.shared.index.review_keys(partition, after) {
                let key = key?;
                let Some((_, id)) = split_item_key(&key) else {
                    return Err(StoreError::Corrupt {
                        tree: "review",
                        reason: format!("key of {} bytes", key.len()),
                    });
                };
                match self.get(id)? {
                    Some(stored) if matches!(stored.receipt.status, Status::Flagged { .. }) => {
                        items.push(stored);
                        if items.len() == limit {
                            return Ok((items, Some(key)));
                        }
                    }
                    Some(_) => {}
                    None => self.shared.index.forget_review(&key)?,
                }
            }
        }
        Ok((items, None))
    }

    /// Approves or rejects the flagged item `id`: a rewrite of its verdict (status
    /// `accepted`, or `rejected` for the reasons it was flagged; score kept), durable
    /// here before it returns. `shipping` sees the record as any leader's write does.
    /// `Invalid` when no such item is stored or it is not waiting for review.
    pub fn decide_review(
        &self,
        id: ItemId,
        decision: Decision,
        shipping: &mut Shipping<'_>,
    ) -> Result<Decided, StoreError> {
        let not_waiting = |reason: &str| StoreError::Invalid {
            field: "id",
            reason: format!("{id}: {reason}"),
        };
        let Some(stored) = self.get(id)? else {
            return Err(not_waiting("no such item"));
        };
        let Status::Flagged { reasons } = stored.receipt.status.clone() else {
            return Err(not_waiting(&format!(
                "is {}, not waiting for review",
                stored.receipt.status.as_str()
            )));
        };
        let status = match decision {
            Decision::Approve => Status::Accepted,
            Decision::Reject => Status::Rejected { reasons },
        };
        let score = stored.receipt.alignment_score;
        let mut records = self.rewrite_verdicts(vec![(id, status, score)], shipping)?;
        let record = records
            .pop()
            .ok_or_else(|| not_waiting("no longer stored"))?;
        let stored = self
            .get(id)?
            .ok_or_else(|| not_waiting("no longer stored"))?;
        Ok(Decided { stored, record })
    }
}

#[cfg(test)]
mod tests;
