//! What the store actor asks of replication, which the node's cluster layer provides.
//!
//! A replicated node appends a batch to its own log as a partition's leader, hands the
//! records to [`Replication::shipping`] as soon as their sequences are assigned (the
//! followers write them while the leader syncs), reports them durable here with
//! [`Replication::appended`], and answers each writer only
//! once [`Replication::commit`] says its record is durable on a write quorum. The
//! actors know nothing of links or rings: they see this trait, installed late (the
//! links that carry replication start after the store) through a [`ReplicationSlot`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use chorus_protocol::{ErrorCode, NodeId, PartitionId};

use crate::store::ReplicaRecord;

/// A boxed future of the replicas that hold each awaited record.
pub type CommitFuture = Pin<Box<dyn Future<Output = Vec<Result<Vec<NodeId>, ErrorCode>>> + Send>>;

/// A boxed future that resolves when the partitions asked about have settled.
pub type SettledFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The leader's side of replication, as the write path uses it.
pub trait Replication: Send + Sync + 'static {
    /// Whether this node may append to `partition` now (it leads it, caught up); the
    /// refusal for the items of the partition otherwise.
    fn admit(&self, partition: PartitionId) -> Result<(), ErrorCode>;

    /// Resolves once none of `partitions` is in the middle of this node taking its lead,
    /// or after a bound: a request that arrives during a change of leader waits the
    /// moments it takes instead of being refused. Ready at once by default.
    fn settled(&self, partitions: Vec<PartitionId>) -> SettledFuture {
        let _ = partitions;
        Box::pin(std::future::ready(()))
    }

    /// Records this node is about to make durable as a leader (their sequences are
    /// assigned, in order): ship them to the followers now, while the leader syncs.
    /// `requests` names, beside each record, the client request that wrote it (empty
    /// when none is known), so that the followers can log them under those ids.
    fn shipping(&self, records: &[ReplicaRecord], requests: &[Option<u64>]);

    /// Records this node made durable as a leader: it counts toward their quorum.
    fn appended(&self, records: &[ReplicaRecord]);

    /// Appending to these partitions failed after their records were handed to
    /// [`Replication::shipping`]: the store reuses those sequences, so this node must
    /// stop leading them (a new epoch settles what the followers hold).
    fn failed(&self, partitions: Vec<PartitionId>);

    /// Resolves, for each `(partition, sequence)`, once the partition is durable up to
    /// `sequence` on a write quorum (with the replicas that hold it), or with why not.
    fn commit(&self, waits: Vec<(PartitionId, u64)>) -> CommitFuture;
}

/// Replication installed after the actor tree starts. Until it is, a replicated node
/// refuses writes (acknowledging them from one copy would break the quorum promise).
#[derive(Clone, Default)]
pub struct ReplicationSlot(Arc<OnceLock<Arc<dyn Replication>>>);

impl std::fmt::Debug for ReplicationSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationSlot")
            .field("installed", &self.0.get().is_some())
            .finish()
    }
}

impl ReplicationSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs replication; a second install is ignored (returns `false`).
    pub fn install(&self, replication: Arc<dyn Replication>) -> bool {
        self.0.set(replication).is_ok()
    }

    /// The installed replication, or the refusal a write gets until there is one.
    pub fn get(&self) -> Result<&Arc<dyn Replication>, ErrorCode> {
        self.0.get().ok_or_else(|| ErrorCode::Unavailable {
            reason: "replication is starting".into(),
        })
    }
}
