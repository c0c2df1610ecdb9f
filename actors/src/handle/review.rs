//! The node handle's side of the review queue: a page of the flagged items of the
//! partitions this node leads, and a reviewer's decision, written as the leader's
//! rewrite of the item's verdict and answered once a write quorum holds it.

use std::sync::Arc;

use chorus_protocol::{
    ErrorCode, EventKind, ItemId, PageToken, PartitionId, StoredItem, partition_of,
};

use super::{AUDIT_ACTOR_API, NodeHandle, blocking};
use crate::store::review::Decision;

impl NodeHandle {
    /// Takes up to `max` of the `item_flagged` events this node's writes made as a
    /// leader, for the node to record.
    pub fn take_flagged(&self, max: usize) -> Vec<EventKind> {
        self.inner.store.take_flagged(max)
    }

    /// A page of the review queue over the partitions `wanted` picks (a node asks for
    /// those it leads), after `after`, at most `limit` items, and the next page's token.
    pub async fn review_page(
        &self,
        wanted: Vec<PartitionId>,
        after: Option<PageToken>,
        limit: usize,
    ) -> Result<(Vec<StoredItem>, Option<PageToken>), ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || {
            let (items, next) = store.review_page(
                |p| wanted.binary_search(&p).is_ok(),
                after.as_ref().map(|t| t.0.as_slice()),
                limit,
            )?;
            Ok((items, next.map(PageToken)))
        })
        .await
    }

    /// Approves or rejects the flagged item `id` of `user_id` for the key `by`: audited
    /// first, then the verdict rewritten by this node as the partition's leader and
    /// answered once a write quorum holds it. Returns the item as now stored.
    pub async fn decide_review(
        &self,
        user_id: &str,
        id: ItemId,
        approve: bool,
        by: &str,
    ) -> Result<StoredItem, ErrorCode> {
        let partition = partition_of(user_id, self.inner.store.partitions());
        self.serving(partition).await?;
        let decision = if approve {
            Decision::Approve
        } else {
            Decision::Reject
        };
        self.audit_append(
            AUDIT_ACTOR_API,
            if approve {
                "review.approve"
            } else {
                "review.reject"
            },
            format!("id={id} user={user_id:?} by={by}"),
        )
        .await?;
        let store = Arc::clone(&self.inner.store);
        let Some(slot) = &self.inner.replication else {
            let decided =
                blocking(move || store.decide_review(id, decision, &mut |_, _| {})).await?;
            return Ok(decided.stored);
        };
        let replication = Arc::clone(slot.get()?);
        replication.admit(partition)?;
        let shipper = Arc::clone(&replication);
        let decided = blocking(move || {
            store.decide_review(id, decision, &mut |records, requests| {
                shipper.shipping(records, requests)
            })
        })
        .await;
        let decided = match decided {
            Ok(decided) => decided,
            Err(error) => {
                // A refusal wrote nothing; a failed append may have shipped a sequence
                // the store now reuses, which only a new leader settles.
                if !matches!(error, ErrorCode::Invalid { .. }) {
                    replication.failed(vec![partition]);
                }
                return Err(error);
            }
        };
        let record = std::slice::from_ref(&decided.record);
        replication.appended(record);
        let committed = replication
            .commit(vec![(decided.record.partition, decided.record.sequence)])
            .await;
        match committed.into_iter().next() {
            Some(Ok(replicas)) => {
                let mut stored = decided.stored;
                stored.receipt.replicas = replicas;
                Ok(stored)
            }
            Some(Err(refusal)) => Err(refusal),
            None => Err(ErrorCode::Unavailable {
                reason: format!("replication lost the review of {id}"),
            }),
        }
    }
}
