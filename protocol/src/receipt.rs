//! What the node answers for a stored item.

use std::fmt;

use bincode::{Decode, Encode};

use crate::item::{Item, ItemId};

/// A node's name, unique within a cluster.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

/// The outcome of the content policy for an item.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Status {
    /// Stored and passed every check.
    Accepted,
    /// Stored, but marked for review for the given reasons.
    Flagged {
        /// Why it was flagged.
        reasons: Vec<String>,
    },
    /// Refused by the content policy for the given reasons; stored as a record of the
    /// refusal so that a retry with the same id gets the same answer.
    Rejected {
        /// Why it was rejected.
        reasons: Vec<String>,
    },
    /// Deleted at its user's request, or expired by retention: only this tombstone is
    /// kept (the id and the user, nothing the user wrote), so that no replica or retry
    /// brings the item back.
    Deleted,
}

impl Status {
    /// The lowercase name used in JSON and tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Flagged { .. } => "flagged",
            Status::Rejected { .. } => "rejected",
            Status::Deleted => "deleted",
        }
    }
}

/// Whether the optional enrichment call ran for an item.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Enrichment {
    /// No enrichment service is configured.
    NotConfigured,
    /// The enrichment service accepted the item.
    Done,
    /// The call was not made or did not succeed; the item is stored regardless.
    Skipped {
        /// Why (shed, circuit open, bulkhead full, failed: ...).
        reason: String,
    },
}

impl Enrichment {
    /// The lowercase name used in JSON and tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            Enrichment::NotConfigured => "not_configured",
            Enrichment::Done => "done",
            Enrichment::Skipped { .. } => "skipped",
        }
    }
}

/// Proof that an item is durably stored: sent only after the flush that covers it.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct Receipt {
    /// The item's id.
    pub id: ItemId,
    /// The content policy's verdict.
    pub status: Status,
    /// The weighted alignment score in 0.0..=1.0, when the item was scored.
    pub alignment_score: Option<f32>,
    /// The node that owns the item's partition.
    pub owner: NodeId,
    /// The nodes holding a durable copy (the owner included).
    pub replicas: Vec<NodeId>,
    /// When the owner stored it, milliseconds since the Unix epoch.
    pub stored_at: u64,
    /// Whether the optional enrichment call ran.
    pub enrichment: Enrichment,
}

/// An item as stored, with the receipt it was acknowledged with.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct StoredItem {
    /// The item (after redaction, once redaction exists).
    pub item: Item,
    /// Its receipt.
    pub receipt: Receipt,
}
