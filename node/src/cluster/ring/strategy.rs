//! The candidate placements: how a sorted member set and a partition count become one
//! owner per partition. Every function here is pure integer arithmetic on fixed hashes,
//! so every node, on any platform, computes the same table from the same member set.

use super::MemberIndex;

/// How partitions are placed on members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// A consistent-hash ring: each member puts `vnodes` points on a 64-bit circle and a
    /// partition belongs to the first point clockwise of its own position.
    VnodeRing {
        /// Points per member, 1..=[`MAX_VNODES`]; more points, better balance, slower.
        vnodes: u32,
    },
    /// Rendezvous (highest random weight) hashing: a partition belongs to the member with
    /// the highest score `hash(member, partition)`.
    Rendezvous,
    /// Rendezvous order with a cap: partitions, in id order, go to their highest-scoring
    /// member that holds fewer than `ceil(P / N × (1 + slack_percent / 100))` partitions.
    BoundedLoad {
        /// The allowed excess over the mean, in percent, 0..=[`MAX_SLACK_PERCENT`].
        slack_percent: u32,
    },
}

/// Most points per member of a [`Strategy::VnodeRing`].
pub const MAX_VNODES: u32 = 4096;
/// Most points on a whole [`Strategy::VnodeRing`] (members × vnodes): bounds its memory
/// (16 bytes a point) and sort time whatever the member count.
pub const MAX_RING_POINTS: usize = 1 << 22;
/// Largest `slack_percent` of a [`Strategy::BoundedLoad`].
pub const MAX_SLACK_PERCENT: u32 = 1000;

/// Mixes the partition number before it meets a member's seed, so that neighbouring
/// partitions get unrelated scores (an arbitrary odd constant).
const PARTITION_SALT: u64 = 0x9E37_79B9_7F4A_7C15;
/// Separates the vnode point numbers of one member from its rendezvous scores.
const VNODE_SALT: u64 = 0xC2B2_AE3D_27D4_EB4F;

impl Strategy {
    /// A stable tag and parameter, hashed into the ring epoch.
    pub(super) fn code(&self) -> (u8, u32) {
        match *self {
            Strategy::VnodeRing { vnodes } => (1, vnodes),
            Strategy::Rendezvous => (2, 0),
            Strategy::BoundedLoad { slack_percent } => (3, slack_percent),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Strategy::VnodeRing { vnodes } => write!(f, "ring-{vnodes}vn"),
            Strategy::Rendezvous => f.write_str("rendezvous"),
            Strategy::BoundedLoad { slack_percent } => write!(f, "bounded-{slack_percent}%"),
        }
    }
}

/// The murmur3 64-bit finalizer: a bijective mix in which every input bit flips about
/// half of the output bits. Fixed arithmetic, so identical everywhere.
pub(super) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^= x >> 33;
    x
}

/// A partition's key: its position on a vnode ring and its half of a rendezvous score.
pub(super) fn partition_key(partition: u16) -> u64 {
    mix64(u64::from(partition) ^ PARTITION_SALT)
}

/// The rendezvous score of a member (by its seed) for a partition (by its key).
pub(super) fn score(member_seed: u64, partition_key: u64) -> u64 {
    mix64(member_seed ^ partition_key)
}

/// The position of a member's `i`-th vnode.
fn vnode_point(member_seed: u64, i: u32) -> u64 {
    mix64(member_seed ^ mix64(u64::from(i) ^ VNODE_SALT))
}

/// The highest-scoring member among `eligible` for a partition; ties (a 2^-64 event) go
/// to the lower member index, so the result never depends on iteration details.
fn best(seeds: &[u64], key: u64, eligible: impl Fn(usize) -> bool) -> Option<MemberIndex> {
    let mut best: Option<(u64, usize)> = None;
    for (i, &seed) in seeds.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let s = score(seed, key);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, i));
        }
    }
    best.map(|(_, i)| i as MemberIndex)
}

/// The vnode points of a ring, sorted by position (then member index).
pub(super) fn vnode_points(seeds: &[u64], vnodes: u32) -> Vec<(u64, MemberIndex)> {
    let mut points: Vec<(u64, MemberIndex)> = seeds
        .iter()
        .enumerate()
        .flat_map(|(m, &seed)| (0..vnodes).map(move |i| (vnode_point(seed, i), m as MemberIndex)))
        .collect();
    points.sort_unstable();
    points
}

/// The index of the first point at or clockwise after `position`.
pub(super) fn successor(points: &[(u64, MemberIndex)], position: u64) -> usize {
    let i = points.partition_point(|&(p, _)| p < position);
    if i == points.len() { 0 } else { i }
}

/// Owners on a vnode ring.
pub(super) fn place_vnodes(points: &[(u64, MemberIndex)], partitions: u16) -> Vec<MemberIndex> {
    (0..partitions)
        .map(|p| points[successor(points, partition_key(p))].1)
        .collect()
}

/// Owners by plain rendezvous hashing.
pub(super) fn place_rendezvous(seeds: &[u64], partitions: u16) -> Vec<MemberIndex> {
    (0..partitions)
        .map(|p| best(seeds, partition_key(p), |_| true).unwrap_or(0))
        .collect()
}

/// The most partitions a member may hold under [`Strategy::BoundedLoad`]:
/// `ceil(P × (100 + slack) / (100 × N))`, in integers so that no float rounding can
/// differ between platforms; never below `ceil(P / N)`, so every partition fits.
pub(super) fn bounded_capacity(partitions: u16, members: usize, slack_percent: u32) -> u32 {
    let numerator = u64::from(partitions) * (100 + u64::from(slack_percent));
    let denominator = 100 * members as u64;
    numerator.div_ceil(denominator) as u32
}

/// Owners by rendezvous order under a per-member cap, partitions in id order.
pub(super) fn place_bounded(seeds: &[u64], partitions: u16, slack_percent: u32) -> Vec<MemberIndex> {
    let cap = bounded_capacity(partitions, seeds.len(), slack_percent);
    let mut load = vec![0u32; seeds.len()];
    (0..partitions)
        .map(|p| {
            // The cap is at least ceil(P/N), so some member always has room.
            let owner = best(seeds, partition_key(p), |i| load[i] < cap).unwrap_or(0);
            load[owner as usize] += 1;
            owner
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_pinned() {
        // Pinned: the placement of every deployed cluster depends on these values.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0xB456_BCFC_34C2_CB2C);
        assert_eq!(partition_key(0), mix64(PARTITION_SALT));
    }

    #[test]
    fn capacity_rounds_up_and_covers_every_partition() {
        let cases = [
            (1024, 10, 0, 103),
            (1024, 10, 5, 108),
            (4096, 1000, 5, 5),
            (4096, 1000, 0, 5),
            (7, 7, 0, 1),
            (1, 3, 25, 1),
        ];
        for (p, n, slack, want) in cases {
            let cap = bounded_capacity(p, n, slack);
            assert_eq!(cap, want, "P={p} N={n} slack={slack}");
            assert!(u64::from(cap) * n as u64 >= u64::from(p));
        }
    }

    #[test]
    fn successor_wraps_around() {
        let points = [(10, 0), (20, 1), (30, 2)];
        let cases = [(0, 0), (10, 0), (11, 1), (30, 2), (31, 0), (u64::MAX, 0)];
        for (position, want) in cases {
            assert_eq!(successor(&points, position), want, "position {position}");
        }
    }
}
