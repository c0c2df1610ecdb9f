//! The candidate placements: how a sorted member set and a partition count become one
//! owner per partition. Every function here is pure integer arithmetic on fixed hashes,
//! so every node, on any platform, computes the same table from the same member set.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

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
    /// Rendezvous scores with capacities: the unique stable matching of partitions to
    /// members when both sides rank pairs by score, each member holding at most its
    /// capacity. The capacities add up to `T = ceil(P × (1 + slack_percent / 100))`,
    /// spread as evenly as integers allow (`floor(T/N)` or one more, the extra ones to the
    /// members with the lowest seeds), so no member holds more than `ceil(T/N)` and a
    /// join or leave shifts only a few capacities by one.
    BoundedLoad {
        /// The allowed excess over the mean, in percent, 0..=[`MAX_SLACK_PERCENT`].
        slack_percent: u32,
    },
    /// Maglev hashing: each member walks its own permutation of the partitions (an offset
    /// and a step coprime with P, from its seed) and the members, in turn, each claim
    /// their next unclaimed partition, so every member gets `floor(P/N)` or `ceil(P/N)`.
    Maglev,
    /// The textbook bounded load, for comparison: partitions, in id order, go to their
    /// highest-scoring member holding fewer than `ceil(P / N × (1 + slack_percent / 100))`.
    /// Every decision depends on all earlier ones, and the one cap drops for every member
    /// at once as N grows, so a change can cascade.
    GreedyBoundedLoad {
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
            Strategy::GreedyBoundedLoad { slack_percent } => (4, slack_percent),
            Strategy::Maglev => (5, 0),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Strategy::VnodeRing { vnodes } => write!(f, "ring-{vnodes}vn"),
            Strategy::Rendezvous => f.write_str("rendezvous"),
            Strategy::Maglev => f.write_str("maglev"),
            Strategy::BoundedLoad { slack_percent } => write!(f, "bounded-{slack_percent}%"),
            Strategy::GreedyBoundedLoad { slack_percent } => {
                write!(f, "greedy-bounded-{slack_percent}%")
            }
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

/// Owners by rendezvous order under one cap for every member, partitions in id order.
pub(super) fn place_greedy_bounded(
    seeds: &[u64],
    partitions: u16,
    slack_percent: u32,
) -> Vec<MemberIndex> {
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

/// Owners by Maglev's table fill: in rounds over the members (in member order), each
/// member claims the next partition of its own permutation that no one has claimed yet.
pub(super) fn place_maglev(seeds: &[u64], partitions: u16) -> Vec<MemberIndex> {
    const UNCLAIMED: MemberIndex = MemberIndex::MAX;
    let size = u64::from(partitions);
    // (next partition, step) per member; the step is coprime with P, so a member's walk
    // visits every partition once before repeating.
    let mut walks: Vec<(u64, u64)> = seeds
        .iter()
        .map(|&seed| {
            let offset = mix64(seed ^ MAGLEV_OFFSET_SALT) % size;
            let mut step = if size > 1 {
                1 + mix64(seed ^ MAGLEV_STEP_SALT) % (size - 1)
            } else {
                1
            };
            while gcd(step, size) != 1 {
                step = step % (size - 1) + 1;
            }
            (offset, step)
        })
        .collect();
    let mut owners = vec![UNCLAIMED; usize::from(partitions)];
    let mut claimed = 0usize;
    'fill: loop {
        for (m, walk) in walks.iter_mut().enumerate() {
            // Unclaimed partitions remain while `claimed < P`, so the walk finds one.
            while owners[walk.0 as usize] != UNCLAIMED {
                walk.0 = (walk.0 + walk.1) % size;
            }
            owners[walk.0 as usize] = m as MemberIndex;
            walk.0 = (walk.0 + walk.1) % size;
            claimed += 1;
            if claimed == usize::from(partitions) {
                break 'fill;
            }
        }
    }
    owners
}

/// Separate a member's Maglev offset and step from its other hashes.
const MAGLEV_OFFSET_SALT: u64 = 0x1656_67B1_9E37_79F9;
const MAGLEV_STEP_SALT: u64 = 0x85EB_CA77_C2B2_AE63;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Candidates kept per partition before a full ranking is needed: with a few percent of
/// slack almost every partition lands within its first few choices.
const TOP_CANDIDATES: usize = 8;

/// Each member's capacity under [`Strategy::BoundedLoad`]: `T = ceil(P × (100 + slack) /
/// 100)` slots, `floor(T/N)` each and one more for the `T mod N` members with the lowest
/// seeds (ties by index). At least `P` slots in all, so every partition fits.
pub(super) fn smooth_capacities(seeds: &[u64], partitions: u16, slack_percent: u32) -> Vec<u32> {
    let n = seeds.len() as u64;
    let total = (u64::from(partitions) * (100 + u64::from(slack_percent))).div_ceil(100);
    let (base, extra) = ((total / n) as u32, (total % n) as usize);
    let mut by_seed: Vec<(u64, usize)> = seeds.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    by_seed.sort_unstable();
    let mut caps = vec![base; seeds.len()];
    for &(_, i) in &by_seed[..extra] {
        caps[i] += 1;
    }
    caps
}

/// A partition's `keep` best members, best score first (ties to the lower member index).
fn ranked(seeds: &[u64], key: u64, keep: usize) -> Vec<(u64, MemberIndex)> {
    // Higher score first, then lower index: `Reverse` on the score keeps a plain sort.
    let rank = |s: u64, i: usize| (Reverse(s), i as MemberIndex);
    if keep >= seeds.len() {
        let mut all: Vec<_> = seeds
            .iter()
            .enumerate()
            .map(|(i, &s)| rank(score(s, key), i))
            .collect();
        all.sort_unstable();
        return all.into_iter().map(|(Reverse(s), i)| (s, i)).collect();
    }
    let mut best: Vec<(Reverse<u64>, MemberIndex)> = Vec::with_capacity(keep + 1);
    for (i, &seed) in seeds.iter().enumerate() {
        let candidate = rank(score(seed, key), i);
        if best.len() == keep && best.last().is_some_and(|worst| candidate >= *worst) {
            continue;
        }
        let at = best.partition_point(|b| *b < candidate);
        best.insert(at, candidate);
        best.truncate(keep);
    }
    best.into_iter().map(|(Reverse(s), i)| (s, i)).collect()
}

/// What a member holds during deferred acceptance: a min-heap in its own order of
/// preference (higher score, then lower partition), so the top is what it lets go of first.
type Held = BinaryHeap<Reverse<(u64, Reverse<u16>)>>;

/// Owners by deferred acceptance: free partitions propose to members in score order; a
/// member over capacity lets go of its lowest-scoring partition, which proposes on. Pairs
/// are ranked the same way from both sides (score, then member, then partition), so the
/// stable matching is unique: the result does not depend on the order of proposals.
pub(super) fn place_stable_bounded(
    seeds: &[u64],
    partitions: u16,
    slack_percent: u32,
) -> Vec<MemberIndex> {
    let caps = smooth_capacities(seeds, partitions, slack_percent);
    let keys: Vec<u64> = (0..partitions).map(partition_key).collect();
    let mut candidates: Vec<Vec<(u64, MemberIndex)>> = keys
        .iter()
        .map(|&key| ranked(seeds, key, TOP_CANDIDATES))
        .collect();
    let mut next = vec![0usize; usize::from(partitions)];
    let mut held: Vec<Held> = vec![BinaryHeap::new(); seeds.len()];
    let mut free: Vec<u16> = (0..partitions).rev().collect();
    while let Some(p) = free.pop() {
        let pi = usize::from(p);
        if next[pi] == candidates[pi].len() {
            // Rare: every short-listed member is full of better partitions. Rank them all;
            // with capacity for every partition some member always has room.
            candidates[pi] = ranked(seeds, keys[pi], seeds.len());
        }
        let (s, m) = candidates[pi][next[pi]];
        next[pi] += 1;
        let heap = &mut held[m as usize];
        heap.push(Reverse((s, Reverse(p))));
        if heap.len() > caps[m as usize] as usize
            && let Some(Reverse((_, Reverse(dropped)))) = heap.pop()
        {
            free.push(dropped);
        }
    }
    let mut owners = vec![0; usize::from(partitions)];
    for (m, heap) in held.iter().enumerate() {
        for Reverse((_, Reverse(p))) in heap.iter() {
            owners[usize::from(*p)] = m as MemberIndex;
        }
    }
    owners
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
