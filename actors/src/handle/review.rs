//! The node handle's side of the review queue and of users' rights: a page of the
//! flagged items of the partitions this node leads, a reviewer's decision, a part of a
//! user's deletion and of retention's expiry. Each of the last three is a rewrite this
//! node makes as the partition's leader ([`NodeHandle::write_as_leader`]), answered once a write quorum
//! holds them.

use std::sync::Arc;

use chorus_protocol::{
    ErrorCode, EventKind, ItemId, NodeId, PageToken, PartitionId, StoredItem, partition_of,
};

use super::{AUDIT_ACTOR_API, NodeHandle, blocking};
use crate::store::review::Decision;
use crate::store::{ReplicaRecord, Shipping, Store, StoreError};

/// Items one part of a deletion replaces at once: a group commit's worth.
const DELETE_PART: usize = 4096;

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
        let (mut stored, replicas) = self
            .write_as_leader(partition, move |store, shipping| {
                let decided = store.decide_review(id, decision, shipping)?;
                Ok((decided.stored, vec![decided.record]))
            })
            .await?;
        stored.receipt.replicas = replicas;
        Ok(stored)
    }

    /// One part of a user's deletion: the items of `user_id` after `after` (ids in
    /// ascending order; audited when `after` is `None`, the first part), at most
    /// [`DELETE_PART`] of them, replaced by tombstones by this node as the partition's
    /// leader and answered once a write quorum holds them. Returns how many were
    /// deleted and, while more ids follow, the last id of the part to go on after.
    /// Small parts keep each group (and each shipment) a write's size, and each call
    /// well inside a forward's timeout.
    pub async fn delete_user_part(
        &self,
        user_id: String,
        after: Option<ItemId>,
        by: &str,
    ) -> Result<(u64, Option<ItemId>), ErrorCode> {
        let partition = partition_of(&user_id, self.inner.store.partitions());
        self.serving(partition).await?;
        if after.is_none() {
            self.audit_append(
                AUDIT_ACTOR_API,
                "user.delete",
                format!("user={user_id:?} by={by}"),
            )
            .await?;
        }
        let store = Arc::clone(&self.inner.store);
        let listed = user_id.clone();
        let ids = blocking(move || store.user_item_ids(&listed)).await?;
        let start = after.map_or(0, |after| ids.partition_point(|id| *id <= after));
        let part: Vec<ItemId> = ids[start..].iter().take(DELETE_PART).copied().collect();
        let next = (start + part.len() < ids.len())
            .then(|| part.last().copied())
            .flatten();
        if part.is_empty() {
            return Ok((0, None));
        }
        let (count, _) = self
            .write_as_leader(partition, move |store, shipping| {
                let records = store.delete_items(&user_id, &part, shipping)?;
                Ok((records.len() as u64, records))
            })
            .await?;
        Ok((count, next))
    }

    /// One part of retention's expiry in `partition`, which this node leads: the items
    /// stored before `cutoff_ms` found after sequence `after` (at most
    /// [`DELETE_PART`]), replaced by tombstones and answered once a write quorum holds
    /// them. Returns how many expired and the sequence to go on after; none expired
    /// means nothing older is left past `after`.
    pub async fn expire_part(
        &self,
        partition: PartitionId,
        after: u64,
        cutoff_ms: u64,
    ) -> Result<(u64, u64), ErrorCode> {
        self.serving(partition).await?;
        let store = Arc::clone(&self.inner.store);
        let (ids, reached) =
            blocking(move || store.expired(partition, after, cutoff_ms, DELETE_PART)).await?;
        if ids.is_empty() {
            return Ok((0, reached));
        }
        let (count, _) = self
            .write_as_leader(partition, move |store, shipping| {
                let records = store.expire_items(&ids, cutoff_ms, shipping)?;
                Ok((records.len() as u64, records))
            })
            .await?;
        Ok((count, reached))
    }

    /// How many items of `user_id` this node stores (tombstones not counted).
    pub async fn count_user(&self, user_id: String) -> Result<u64, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.count_user(&user_id)).await
    }

    /// Runs `write`, a rewrite of records of `partition` this node makes as its leader,
    /// on the blocking pool, shipping its records as any leader's write; then waits
    /// until a write quorum holds them. Returns what `write` returned and the replicas
    /// that hold its records (this node alone without replication).
    async fn write_as_leader<T: Send + 'static>(
        &self,
        partition: PartitionId,
        write: impl FnOnce(&Store, &mut Shipping<'_>) -> Result<(T, Vec<ReplicaRecord>), StoreError>
        + Send
        + 'static,
    ) -> Result<(T, Vec<NodeId>), ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        let Some(slot) = &self.inner.replication else {
            let (value, _) = blocking(move || write(&store, &mut |_, _| {})).await?;
            return Ok((value, vec![self.inner.node.clone()]));
        };
        let replication = Arc::clone(slot.get()?);
        replication.admit(partition)?;
        let shipper = Arc::clone(&replication);
        let written = blocking(move || {
            write(&store, &mut |records, requests| {
                shipper.shipping(records, requests)
            })
        })
        .await;
        let (value, records) = match written {
            Ok(written) => written,
            Err(error) => {
                // A refusal wrote nothing; a failed append may have shipped sequences
                // the store now reuses, which only a new leader settles.
                if !matches!(error, ErrorCode::Invalid { .. }) {
                    replication.failed(vec![partition]);
                }
                return Err(error);
            }
        };
        let Some(last) = records.iter().map(|r| r.sequence).max() else {
            return Ok((value, vec![self.inner.node.clone()]));
        };
        replication.appended(&records);
        match replication.commit(vec![(partition, last)]).await.pop() {
            Some(Ok(replicas)) => Ok((value, replicas)),
            Some(Err(refusal)) => Err(refusal),
            None => Err(ErrorCode::Unavailable {
                reason: "replication lost the write".into(),
            }),
        }
    }
}
