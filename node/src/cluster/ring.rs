//! Placement of partitions on live members.
//!
//! A [`Ring`] is a pure function of (sorted, deduplicated member set, partition count,
//! strategy): every node that sees the same members computes the same owner of every
//! partition, with no coordination, and names that placement by its [`RingEpoch`]. The
//! node recomputes it on every membership change; clients get [`Ring::owner_table`] as
//! a compact snapshot. No IO and no clock here.
//!
//! The strategies compared in `simulations/` live in [`strategy`]; [`Ring::STRATEGY`] is
//! the one the node runs, and its doc says why.

pub mod strategy;

use std::collections::BTreeMap;

use chorus_protocol::{NodeId, PartitionId, partition_of};
use thiserror::Error;

pub use strategy::{MAX_RING_POINTS, MAX_SLACK_PERCENT, MAX_VNODES, Strategy};

/// A member's position in [`Ring::members`]; what [`Ring::owner_table`] holds.
type MemberIndex = u16;

/// Most members a ring can hold: owner table entries are `u16` member indexes.
pub const MAX_MEMBERS: usize = MemberIndex::MAX as usize;

/// Version of the epoch's input layout; bump it if placement or hashing ever changes, so
/// that nodes running different placements can never agree on an epoch.
const EPOCH_VERSION: &[u8] = b"chorus-ring-v1";

/// The name of one placement: xxh3 of the sorted member set, the partition count and
/// the strategy. Equal epochs mean equal placements, on any node and any platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RingEpoch(pub u64);

impl std::fmt::Display for RingEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A placement that cannot be computed; nothing was placed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RingError {
    /// The member set is empty: no one could own a partition.
    #[error("no members to place partitions on")]
    NoMembers,
    /// The partition count is zero.
    #[error("the partition count must be positive")]
    ZeroPartitions,
    /// More members than [`MAX_MEMBERS`].
    #[error("{members} members; a ring holds at most {MAX_MEMBERS}")]
    TooManyMembers {
        /// Distinct members given.
        members: usize,
    },
    /// A vnode ring with no points per member or more than [`MAX_VNODES`].
    #[error("{vnodes} vnodes per member; it must be between 1 and {MAX_VNODES}")]
    VnodesOutOfRange {
        /// The requested vnodes per member.
        vnodes: u32,
    },
    /// A vnode ring with more than [`MAX_RING_POINTS`] points in all.
    #[error("{points} ring points (members × vnodes); at most {MAX_RING_POINTS}")]
    TooManyPoints {
        /// Members × vnodes.
        points: usize,
    },
    /// A bounded-load slack above [`MAX_SLACK_PERCENT`].
    #[error("slack of {slack_percent} %; at most {MAX_SLACK_PERCENT} %")]
    SlackTooLarge {
        /// The requested slack.
        slack_percent: u32,
    },
}

/// Where each partition lives for one member set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    strategy: Strategy,
    members: Vec<NodeId>,
    /// Per member (same order as `members`): the hash its scores and points derive from.
    seeds: Vec<u64>,
    /// Per partition: the owner's index in `members`.
    owners: Vec<MemberIndex>,
    /// The sorted points of a vnode ring (empty for the other strategies).
    points: Vec<(u64, MemberIndex)>,
    epoch: RingEpoch,
}

impl Ring {
    /// The placement the node runs: bounded load at 5 % (rendezvous scores, capacities of
    /// `ceil(P/N × 1.05)` at most, the unique stable matching).
    ///
    /// Measured by `chorus-simulations ring` (simulations/README.md has the tables and
    /// plots), N = 3..1000 members, P = 1024 and 4096 partitions, moves per single join
    /// or leave as a multiple of the ideal 1/N:
    /// - vnode rings are never balanced at a price we can pay: max/mean 1.4–2.1 with
    ///   16 vnodes at N = 10–100, still 1.17–1.39 with 1000 vnodes (and a million points to
    ///   sort at N = 1000);
    /// - plain rendezvous moves the ideal 1.0–1.1, but its balance is balls-in-bins:
    ///   1.12 at N = 30 and 1.44 at N = 100 (P = 4096), 2.7 at N = 1000;
    /// - Maglev is perfectly balanced and moves 4–7× the ideal from N = 100 on;
    /// - greedy bounded load (one cap, partitions in id order) moves 1.1–2.5× on most
    ///   changes, but when N crosses a point where the cap drops by one every member at
    ///   the cap sheds at once: 17× the ideal at N ≈ 300, 43× at P = 1024;
    /// - this bounded load has no such cliff (capacities change a few at a time): with
    ///   P/N ≥ 35 it keeps max/mean ≤ 1.05 plus one partition of rounding (≤ 1.075 at
    ///   N = 90–110, P = 4096) and moves 1.0–1.9× on average, worst 2.3×; with ~14
    ///   partitions a member (N = 300, P = 4096) 2.7× on average, worst 3.6×.
    ///   Placement at N = 1000, P = 4096 takes 16–24 ms.
    ///
    /// The most loaded member sets the cluster's capacity, so balance wins over a
    /// one-off extra transfer per change; the 5 % goal needs P ≥ 40 × N anyway, which is
    /// also where the moves stay near the 2/N budget.
    pub const STRATEGY: Strategy = Strategy::BoundedLoad { slack_percent: 5 };

    /// Places `partitions` partitions on `members` with [`Ring::STRATEGY`]; duplicates are
    /// ignored and the order of `members` does not matter.
    pub fn place(
        members: impl IntoIterator<Item = NodeId>,
        partitions: u16,
    ) -> Result<Ring, RingError> {
        Ring::place_with(&Ring::STRATEGY, members, partitions)
    }

    /// Places `partitions` partitions on `members` with `strategy`; duplicates are ignored
    /// and the order of `members` does not matter.
    pub fn place_with(
        strategy: &Strategy,
        members: impl IntoIterator<Item = NodeId>,
        partitions: u16,
    ) -> Result<Ring, RingError> {
        let mut members: Vec<NodeId> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        if members.is_empty() {
            return Err(RingError::NoMembers);
        }
        if partitions == 0 {
            return Err(RingError::ZeroPartitions);
        }
        if members.len() > MAX_MEMBERS {
            return Err(RingError::TooManyMembers {
                members: members.len(),
            });
        }
        let seeds: Vec<u64> = members
            .iter()
            .map(|m| xxhash_rust::xxh3::xxh3_64(m.0.as_bytes()))
            .collect();
        let mut points = Vec::new();
        let owners = match *strategy {
            Strategy::VnodeRing { vnodes } => {
                if vnodes == 0 || vnodes > MAX_VNODES {
                    return Err(RingError::VnodesOutOfRange { vnodes });
                }
                let total = members.len() * vnodes as usize;
                if total > MAX_RING_POINTS {
                    return Err(RingError::TooManyPoints { points: total });
                }
                points = strategy::vnode_points(&seeds, vnodes);
                strategy::place_vnodes(&points, partitions)
            }
            Strategy::Rendezvous => strategy::place_rendezvous(&seeds, partitions),
            Strategy::Maglev => strategy::place_maglev(&seeds, partitions),
            Strategy::BoundedLoad { slack_percent }
            | Strategy::GreedyBoundedLoad { slack_percent }
                if slack_percent > MAX_SLACK_PERCENT =>
            {
                return Err(RingError::SlackTooLarge { slack_percent });
            }
            Strategy::BoundedLoad { slack_percent } => {
                strategy::place_stable_bounded(&seeds, partitions, slack_percent)
            }
            Strategy::GreedyBoundedLoad { slack_percent } => {
                strategy::place_greedy_bounded(&seeds, partitions, slack_percent)
            }
        };
        let epoch = epoch_of(strategy, &members, partitions);
        Ok(Ring {
            strategy: *strategy,
            members,
            seeds,
            owners,
            points,
            epoch,
        })
    }

    /// The strategy this placement was computed with.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The name of this placement.
    pub fn epoch(&self) -> RingEpoch {
        self.epoch
    }

    /// The partition count.
    pub fn partitions(&self) -> u16 {
        self.owners.len() as u16
    }

    /// The members, sorted and deduplicated.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The owner of partition `p`.
    ///
    /// # Panics
    /// If `p` is not below [`Ring::partitions`].
    pub fn owner(&self, p: PartitionId) -> &NodeId {
        &self.members[self.owners[usize::from(p)] as usize]
    }

    /// The partition of a user and its owner.
    pub fn owner_of_user(&self, user_id: &str) -> (PartitionId, &NodeId) {
        let p = partition_of(user_id, self.partitions());
        (p, self.owner(p))
    }

    /// The `min(rf, N)` distinct members that hold partition `p`, owner first: then the
    /// next members clockwise (vnode ring) or by descending rendezvous score (the others;
    /// replicas are not counted against bounded-load capacities).
    ///
    /// # Panics
    /// If `p` is not below [`Ring::partitions`].
    pub fn preference_list(&self, p: PartitionId, rf: usize) -> Vec<NodeId> {
        let owner = self.owners[usize::from(p)];
        let want = rf.min(self.members.len());
        let mut chosen: Vec<MemberIndex> = Vec::with_capacity(want);
        if want == 0 {
            return Vec::new();
        }
        chosen.push(owner);
        let key = strategy::partition_key(p);
        if self.points.is_empty() {
            let mut others: Vec<(u64, MemberIndex)> = self
                .seeds
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != owner as usize)
                .map(|(i, &seed)| (strategy::score(seed, key), i as MemberIndex))
                .collect();
            // Highest score first; ties to the lower index, as in placement.
            others.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            chosen.extend(others.iter().map(|&(_, i)| i).take(want - 1));
        } else {
            let start = strategy::successor(&self.points, key);
            let n = self.points.len();
            for k in 1..n {
                if chosen.len() == want {
                    break;
                }
                let m = self.points[(start + k) % n].1;
                if !chosen.contains(&m) {
                    chosen.push(m);
                }
            }
        }
        chosen
            .into_iter()
            .map(|i| self.members[i as usize].clone())
            .collect()
    }

    /// Per partition, the owner's index in [`Ring::members`]: the compact snapshot clients
    /// route by.
    pub fn owner_table(&self) -> Vec<u16> {
        self.owners.clone()
    }

    /// How many partitions each member owns (members owning none are listed with 0).
    pub fn partitions_per_node(&self) -> BTreeMap<NodeId, u32> {
        let counts = self.counts();
        self.members.iter().cloned().zip(counts).collect()
    }

    /// The most partitions any member owns over the mean (1.0 is perfect balance).
    pub fn balance(&self) -> f64 {
        let max = self.counts().into_iter().max().unwrap_or(0);
        let mean = self.owners.len() as f64 / self.members.len() as f64;
        f64::from(max) / mean
    }

    /// How many partitions have a different owner than in `previous` (all of them when
    /// the partition counts differ: every user maps elsewhere then).
    pub fn moved_from(&self, previous: &Ring) -> u32 {
        if previous.partitions() != self.partitions() {
            return u32::from(self.partitions());
        }
        (0..self.partitions())
            .filter(|&p| self.owner(p) != previous.owner(p))
            .count() as u32
    }

    fn counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.members.len()];
        for &o in &self.owners {
            counts[o as usize] += 1;
        }
        counts
    }
}

/// xxh3 over a fixed little-endian layout: version, strategy, P, N, then each member's
/// length and bytes (length-prefixed so that no two member lists share an encoding).
fn epoch_of(strategy: &Strategy, members: &[NodeId], partitions: u16) -> RingEpoch {
    let (tag, parameter) = strategy.code();
    let mut bytes = Vec::with_capacity(32 + members.iter().map(|m| 4 + m.0.len()).sum::<usize>());
    bytes.extend_from_slice(EPOCH_VERSION);
    bytes.push(tag);
    bytes.extend_from_slice(&parameter.to_le_bytes());
    bytes.extend_from_slice(&partitions.to_le_bytes());
    bytes.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for m in members {
        bytes.extend_from_slice(&(m.0.len() as u32).to_le_bytes());
        bytes.extend_from_slice(m.0.as_bytes());
    }
    RingEpoch(xxhash_rust::xxh3::xxh3_64(&bytes))
}

#[cfg(test)]
mod tests;
