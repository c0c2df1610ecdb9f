//! The ring as clients see it: which node owns each partition, and where to reach it,
//! so that a client can send each request straight to its owner.

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};

use crate::bounded::{decode_vec, too_many};

use crate::error::ErrorCode;
use crate::partition::{PartitionId, partition_of};
use crate::receipt::NodeId;

/// Most members a snapshot may list.
pub const MAX_RING_MEMBERS: usize = 65_536;

/// A member of the ring and the address its clients and peers reach it at.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RingMember {
    /// The node's name.
    pub node: NodeId,
    /// Its QUIC address, `ip:port`.
    pub addr: String,
}

/// The placement of every partition at one epoch.
///
/// Decoded by hand: the member and owner counts are bounded while decoding.
#[derive(Clone, Debug, PartialEq, Eq, Encode)]
pub struct RingSnapshot {
    /// Changes whenever the member set does.
    pub epoch: u64,
    /// The cluster's partition count (fixed at creation).
    pub partitions: u16,
    /// The live members, sorted by name.
    pub members: Vec<RingMember>,
    /// For each partition, the index of its owner in `members`.
    pub owners: Vec<u16>,
}

/// Most owners a snapshot may list: one per partition, and partitions are a `u16`.
const MAX_OWNERS: usize = u16::MAX as usize;

impl<Context> Decode<Context> for RingSnapshot {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(RingSnapshot {
            epoch: u64::decode(decoder)?,
            partitions: u16::decode(decoder)?,
            members: decode_vec(
                decoder,
                MAX_RING_MEMBERS,
                |n| {
                    too_many(
                        "members",
                        format!("{n} members, at most {MAX_RING_MEMBERS}"),
                    )
                },
                RingMember::decode,
            )?,
            owners: decode_vec(
                decoder,
                MAX_OWNERS,
                |n| too_many("owners", format!("{n} owners, at most {MAX_OWNERS}")),
                u16::decode,
            )?,
        })
    }
}
bincode::impl_borrow_decode!(RingSnapshot);

impl RingSnapshot {
    /// Checks that every partition has an owner among the members.
    pub fn validate(&self) -> Result<(), ErrorCode> {
        if self.partitions == 0 {
            return Err(ErrorCode::invalid("partitions", "must be at least 1"));
        }
        if self.members.is_empty() || self.members.len() > MAX_RING_MEMBERS {
            return Err(ErrorCode::invalid(
                "members",
                format!(
                    "{} members, must be 1..={MAX_RING_MEMBERS}",
                    self.members.len()
                ),
            ));
        }
        if self.owners.len() != usize::from(self.partitions) {
            return Err(ErrorCode::invalid(
                "owners",
                format!(
                    "{} owners for {} partitions",
                    self.owners.len(),
                    self.partitions
                ),
            ));
        }
        if let Some(bad) = self
            .owners
            .iter()
            .find(|&&o| usize::from(o) >= self.members.len())
        {
            return Err(ErrorCode::invalid(
                "owners",
                format!("owner index {bad} beyond {} members", self.members.len()),
            ));
        }
        Ok(())
    }

    /// The partition of `user_id` and the member that owns it (on a validated snapshot).
    pub fn owner_of_user(&self, user_id: &str) -> (PartitionId, &RingMember) {
        let partition = partition_of(user_id, self.partitions);
        let owner = self.owners[usize::from(partition)];
        (partition, &self.members[usize::from(owner)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> RingSnapshot {
        RingSnapshot {
            epoch: 7,
            partitions: 4,
            members: vec![
                RingMember {
                    node: NodeId("a".into()),
                    addr: "127.0.0.1:7400".into(),
                },
                RingMember {
                    node: NodeId("b".into()),
                    addr: "127.0.0.2:7400".into(),
                },
            ],
            owners: vec![0, 1, 1, 0],
        }
    }

    #[test]
    fn a_valid_snapshot_names_the_owner_of_each_user() {
        let s = snapshot();
        s.validate().unwrap();
        let (p, owner) = s.owner_of_user("alice");
        assert_eq!(p, partition_of("alice", 4));
        assert_eq!(
            owner.node,
            s.members[usize::from(s.owners[usize::from(p)])].node
        );
    }

    #[test]
    fn inconsistent_snapshots_are_refused() {
        let mut short = snapshot();
        short.owners.pop();
        assert!(short.validate().is_err());
        let mut beyond = snapshot();
        beyond.owners[0] = 2;
        assert!(beyond.validate().is_err());
        let mut empty = snapshot();
        empty.members.clear();
        assert!(empty.validate().is_err());
    }
}
