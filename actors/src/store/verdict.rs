//! Rewriting a stored receipt's verdict: production mode's content review runs after
//! the ack ([`crate::validation::Validator::check_deferred`]) and records its answer
//! here. The new record keeps the item's listing key, so list order is unchanged.

use chorus_protocol::{ItemId, Status, StoredItem};
use tracing::debug;

use super::log::Locator;
use super::{ReplicaRecord, Shipping, Store, StoreError};

impl Store {
    /// Sets the stored receipt's `status` and `alignment_score` of item `id`, rewriting
    /// the record in place, and flushes. `Ok(false)` when no such item is stored.
    /// The receipt already sent to the submitter is not (and cannot be) changed; a
    /// later `get`, list or retry of the id shows the new verdict.
    pub fn update_verdict(
        &self,
        id: ItemId,
        status: Status,
        score: Option<f32>,
    ) -> Result<bool, StoreError> {
        let updated = self.update_verdicts(vec![(id, status, score)])?;
        Ok(updated == 1)
    }

    /// [`Store::update_verdict`] for many items with one log group; returns how many
    /// were found (and rewritten). Each rewrite is a new record of the item (same id,
    /// same `stored_at`), so the index points at the newest and replication ships it.
    pub fn update_verdicts(
        &self,
        updates: Vec<(ItemId, Status, Option<f32>)>,
    ) -> Result<usize, StoreError> {
        Ok(self.rewrite_verdicts(updates, &mut |_, _| {})?.len())
    }

    /// [`Store::update_verdicts`], handing the records to `shipping` as a leader's
    /// write does and returning them.
    pub fn rewrite_verdicts(
        &self,
        updates: Vec<(ItemId, Status, Option<f32>)>,
        shipping: &mut Shipping<'_>,
    ) -> Result<Vec<ReplicaRecord>, StoreError> {
        let mut sequences = self.shared.lock_for_append()?;
        // Each with the record it replaces, whose bytes become dead once indexed.
        let mut rewritten: Vec<(StoredItem, Option<Locator>)> = Vec::with_capacity(updates.len());
        for (id, status, score) in updates {
            // An earlier update of the same id in this call is the newest version.
            let current = match rewritten.iter().position(|(s, _)| s.item.id == id) {
                Some(at) => Some(rewritten.swap_remove(at)),
                None => self
                    .current(id)?
                    .map(|(stored, locator)| (stored, Some(locator))),
            };
            let Some((mut stored, replaces)) = current else {
                continue;
            };
            // A deleted item stays deleted: no later verdict brings its record back.
            if stored.receipt.status == Status::Deleted {
                continue;
            }
            stored.receipt.status = status;
            stored.receipt.alignment_score = score;
            rewritten.push((stored, replaces));
        }
        let flagged: Vec<StoredItem> = rewritten
            .iter()
            .filter(|(s, _)| matches!(s.receipt.status, Status::Flagged { .. }))
            .map(|(s, _)| s.clone())
            .collect();
        let records = self.append_records(&mut sequences, rewritten, &[], shipping)?;
        self.flagged.note(&flagged);
        debug!(updated = records.len(), "stored verdicts rewritten");
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{Item, Kind, NodeId};

    use super::*;
    use crate::store::{Durability, LogConfig, StoreConfig};

    #[test]
    fn a_verdict_is_rewritten_in_place_and_listing_order_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig {
            path: dir.path().join("store"),
            node: NodeId("n".into()),
            partitions: 4,
            durability: Durability::Flush,
            log: LogConfig::default(),
        })
        .unwrap();
        let items: Vec<Item> = (0..3).map(|_| Item::new("u", Kind::Text)).collect();
        let ids: Vec<ItemId> = items.iter().map(|i| i.id).collect();
        let receipts = store.apply(items);
        assert!(receipts.iter().all(|r| r.is_ok()));
        let listed = |store: &Store| -> Vec<ItemId> {
            let (page, _) = store.list_by_user("u", None, 10).unwrap();
            page.iter().map(|s| s.item.id).collect()
        };
        let before = listed(&store);
        assert_eq!(before.len(), 3);
        let rejected = Status::Rejected {
            reasons: vec!["threat of violence".into()],
        };
        assert!(
            store
                .update_verdict(ids[1], rejected.clone(), Some(0.1))
                .unwrap()
        );
        let stored = store.get(ids[1]).unwrap().unwrap();
        assert_eq!(stored.receipt.status, rejected);
        assert_eq!(stored.receipt.alignment_score, Some(0.1));
        assert_eq!(
            stored.receipt.stored_at,
            receipts[1].as_ref().unwrap().stored_at
        );
        assert_eq!(listed(&store), before);
        assert_eq!(store.item_count(), 3);
        let absent = Item::new("u", Kind::Text).id;
        assert!(
            !store
                .update_verdict(absent, Status::Accepted, None)
                .unwrap()
        );
    }
}
