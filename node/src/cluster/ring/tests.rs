//! Placement properties: order independence, ownership, movement on a change, balance,
//! preference lists and epochs.

use std::collections::BTreeSet;

use proptest::prelude::{
    ProptestConfig, prop_assert, prop_assert_eq, prop_assert_ne, prop_assume, proptest,
};
use proptest::strategy::Strategy as _;

use super::*;

fn node(i: usize) -> NodeId {
    NodeId(format!("node-{i:04}"))
}

fn nodes(n: usize) -> Vec<NodeId> {
    (0..n).map(node).collect()
}

/// Every strategy the simulations compare, at sizes a debug build places quickly.
const STRATEGIES: [Strategy; 7] = [
    Strategy::VnodeRing { vnodes: 16 },
    Strategy::VnodeRing { vnodes: 256 },
    Strategy::Rendezvous,
    Strategy::Maglev,
    Strategy::GreedyBoundedLoad { slack_percent: 5 },
    Strategy::BoundedLoad { slack_percent: 5 },
    Strategy::BoundedLoad { slack_percent: 25 },
];

fn place(strategy: &Strategy, members: &[NodeId], partitions: u16) -> Ring {
    Ring::place_with(strategy, members.iter().cloned(), partitions).unwrap()
}

#[test]
fn bad_inputs_name_what_is_wrong() {
    let cases: Vec<(Strategy, Vec<NodeId>, u16, RingError)> = vec![
        (Ring::STRATEGY, vec![], 16, RingError::NoMembers),
        (Ring::STRATEGY, nodes(2), 0, RingError::ZeroPartitions),
        (
            Strategy::VnodeRing { vnodes: 0 },
            nodes(2),
            16,
            RingError::VnodesOutOfRange { vnodes: 0 },
        ),
        (
            Strategy::VnodeRing {
                vnodes: MAX_VNODES + 1,
            },
            nodes(2),
            16,
            RingError::VnodesOutOfRange {
                vnodes: MAX_VNODES + 1,
            },
        ),
        (
            Strategy::VnodeRing { vnodes: MAX_VNODES },
            nodes(1025),
            16,
            RingError::TooManyPoints {
                points: 1025 * MAX_VNODES as usize,
            },
        ),
        (
            Strategy::BoundedLoad {
                slack_percent: MAX_SLACK_PERCENT + 1,
            },
            nodes(2),
            16,
            RingError::SlackTooLarge {
                slack_percent: MAX_SLACK_PERCENT + 1,
            },
        ),
    ];
    for (strategy, members, partitions, want) in cases {
        assert_eq!(
            Ring::place_with(&strategy, members, partitions),
            Err(want.clone()),
            "{strategy}"
        );
    }
}

#[test]
fn one_member_owns_everything() {
    for strategy in STRATEGIES {
        let ring = place(&strategy, &nodes(1), 64);
        assert!((0..64).all(|p| ring.owner(p) == &node(0)), "{strategy}");
        assert_eq!(ring.balance(), 1.0);
        assert_eq!(ring.preference_list(3, 3), vec![node(0)]);
    }
}

#[test]
fn duplicates_are_ignored() {
    let mut members = nodes(4);
    members.extend(nodes(4));
    let ring = Ring::place(members, 128).unwrap();
    assert_eq!(ring.members(), nodes(4).as_slice());
    assert_eq!(ring, Ring::place(nodes(4), 128).unwrap());
}

#[test]
fn owner_of_user_uses_the_protocol_partition() {
    let ring = Ring::place(nodes(5), 1024).unwrap();
    let (p, owner) = ring.owner_of_user("alice");
    assert_eq!(p, 688);
    assert_eq!(owner, ring.owner(688));
}

#[test]
fn owner_table_indexes_members() {
    let ring = Ring::place(nodes(7), 256).unwrap();
    let table = ring.owner_table();
    assert_eq!(table.len(), 256);
    for (p, &i) in table.iter().enumerate() {
        assert_eq!(&ring.members()[i as usize], ring.owner(p as u16));
    }
    let per_node = ring.partitions_per_node();
    assert_eq!(per_node.len(), 7);
    assert_eq!(per_node.values().sum::<u32>(), 256);
}

/// Moves on one join and one leave, for every member set of 3..=12 `node-i` names:
/// (worst moved/(P/N'), mean moved/(P/N')) where N' is the larger of the two sizes.
fn movement(strategy: &Strategy, partitions: u16) -> (f64, f64) {
    let mut worst = 0.0f64;
    let mut total = 0.0;
    let mut count = 0;
    for n in 3..=12 {
        let before = place(strategy, &nodes(n), partitions);
        let joined = place(strategy, &nodes(n + 1), partitions);
        let left = place(strategy, &nodes(n)[1..], partitions);
        for (moved, size) in [
            (joined.moved_from(&before), n + 1),
            (left.moved_from(&before), n),
        ] {
            let ratio = f64::from(moved) / (f64::from(partitions) / size as f64);
            worst = worst.max(ratio);
            total += ratio;
            count += 1;
        }
    }
    (worst, total / f64::from(count))
}

#[test]
fn rendezvous_moves_only_what_it_must() {
    // On a join only partitions the joiner wins move, on a leave only the leaver's.
    let s = Strategy::Rendezvous;
    let before = place(&s, &nodes(6), 512);
    let joined = place(&s, &nodes(7), 512);
    let left = place(&s, &nodes(6)[1..], 512);
    for p in 0..512 {
        if joined.owner(p) != before.owner(p) {
            assert_eq!(joined.owner(p), &node(6));
        }
        if left.owner(p) != before.owner(p) {
            assert_eq!(before.owner(p), &node(0));
        }
    }
    // The joiner's share is binomial(512, 1/7): mean 73, sd 8; the bound is 5 sd out.
    assert!(joined.moved_from(&before) <= 73 + 40);
}

#[test]
fn the_chosen_strategy_moves_under_two_over_n() {
    // A freed slot at a full member pulls back a partition that had overflowed to its
    // second choice, which frees another slot, and so on: a short chain per change. With
    // P/N ≥ 78 here the simulations measure 1.0-1.5 × the ideal (worst 2.2 at P/N ≈ 40);
    // 2.5 for the worst single change and 2.0 on average leave room for no more.
    let (worst, mean) = movement(&Ring::STRATEGY, 1024);
    assert!(worst <= 2.5, "worst change moved {worst:.2} × P/N");
    assert!(mean <= 2.0, "a change moved {mean:.2} × P/N on average");
}

#[test]
fn plain_rendezvous_moves_the_ideal_share() {
    let (worst, mean) = movement(&Strategy::Rendezvous, 1024);
    // Binomial noise at P/N ≈ 80-340: within 1.5× worst, 1.15× on average.
    assert!(worst <= 1.5, "worst {worst:.2}");
    assert!(mean <= 1.15, "mean {mean:.2}");
}

#[test]
fn the_chosen_strategy_caps_load() {
    // Bounded load guarantees max ≤ ceil(P/N × 1.05); at P/N ≥ 20 that is ≤ 1.05 + 1/20.
    for n in [2, 3, 5, 10, 16, 33, 50] {
        let ring = Ring::place(nodes(n), 1024).unwrap();
        let cap = strategy::bounded_capacity(1024, n, 5);
        assert!(
            ring.partitions_per_node().values().all(|&c| c <= cap),
            "N={n}"
        );
        let mean = 1024.0 / n as f64;
        assert!(ring.balance() <= f64::from(cap) / mean + 1e-9, "N={n}");
        if mean >= 20.0 {
            assert!(
                ring.balance() <= 1.05 + 1.0 / 20.0,
                "N={n}: {}",
                ring.balance()
            );
        }
    }
}

#[test]
fn bounded_load_is_the_stable_matching() {
    // No blocking pair: a member that scores a partition higher than its owner does is
    // full, of partitions that each score higher with it.
    for (n, slack) in [(7, 0), (13, 5), (40, 5), (9, 25)] {
        let ring = place(
            &Strategy::BoundedLoad {
                slack_percent: slack,
            },
            &nodes(n),
            512,
        );
        let caps = strategy::smooth_capacities(&ring.seeds, 512, slack);
        let counts = ring.counts();
        let score = |m: usize, p: u16| strategy::score(ring.seeds[m], strategy::partition_key(p));
        for p in 0..512u16 {
            let owner = ring.owner_table()[usize::from(p)] as usize;
            for m in (0..n).filter(|&m| score(m, p) > score(owner, p)) {
                assert_eq!(counts[m], caps[m], "N={n}: member {m} has room for {p}");
                let weakest = (0..512u16)
                    .filter(|&q| ring.owner_table()[usize::from(q)] as usize == m)
                    .map(|q| score(m, q))
                    .min()
                    .unwrap();
                assert!(weakest > score(m, p), "N={n}: {p} blocks with member {m}");
            }
        }
    }
}

#[test]
fn maglev_is_perfectly_balanced() {
    for n in [3, 7, 10, 33] {
        let ring = place(&Strategy::Maglev, &nodes(n), 1000);
        let counts = ring.counts();
        let (lo, hi) = (1000 / n as u32, 1000u32.div_ceil(n as u32));
        assert!(
            counts.iter().all(|&c| c == lo || c == hi),
            "N={n}: {counts:?}"
        );
    }
}

#[test]
fn a_vnode_ring_with_few_points_is_unbalanced() {
    // The reason it was not chosen: 16 vnodes leave some member far above the mean.
    let ring = place(&Strategy::VnodeRing { vnodes: 16 }, &nodes(20), 1024);
    assert!(ring.balance() > 1.3, "{}", ring.balance());
}

#[test]
fn epoch_is_pinned() {
    // Pinned: nodes of one cluster compare epochs, so the encoding must never drift.
    let ring = Ring::place(nodes(3), 1024).unwrap();
    assert_eq!(ring.epoch(), RingEpoch(EPOCH_PIN));
}

const EPOCH_PIN: u64 = 12_175_085_332_400_669_211;

fn member_names() -> impl proptest::strategy::Strategy<Value = Vec<NodeId>> {
    proptest::collection::vec("[a-z]{1,6}-[0-9]{1,3}", 1..24)
        .prop_map(|names| names.into_iter().map(NodeId).collect())
}

fn any_strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    proptest::sample::select(STRATEGIES.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Two nodes that learn the same members in different orders place identically.
    #[test]
    fn order_does_not_matter(
        members in member_names(),
        strategy in any_strategy(),
        partitions in 1u16..512,
        rotate in 0usize..24,
    ) {
        let a = place(&strategy, &members, partitions);
        let mut shuffled = members.clone();
        shuffled.reverse();
        let len = shuffled.len();
        shuffled.rotate_left(rotate % len);
        let b = place(&strategy, &shuffled, partitions);
        prop_assert_eq!(a.owner_table(), b.owner_table());
        prop_assert_eq!(a.epoch(), b.epoch());
        prop_assert_eq!(a, b);
    }

    /// Every partition has an owner that is a member, and the counts add up.
    #[test]
    fn every_partition_is_owned_by_a_member(
        members in member_names(),
        strategy in any_strategy(),
        partitions in 1u16..512,
    ) {
        let ring = place(&strategy, &members, partitions);
        let set: BTreeSet<&NodeId> = members.iter().collect();
        for p in 0..partitions {
            prop_assert!(set.contains(ring.owner(p)));
        }
        prop_assert_eq!(ring.partitions_per_node().values().sum::<u32>(), u32::from(partitions));
        prop_assert_eq!(ring.members().len(), set.len());
    }

    /// A preference list holds min(rf, N) distinct members, owner first.
    #[test]
    fn preference_lists_are_distinct_owner_first(
        members in member_names(),
        strategy in any_strategy(),
        p in 0u16..64,
        rf in 0usize..6,
    ) {
        let ring = place(&strategy, &members, 64);
        let list = ring.preference_list(p, rf);
        prop_assert_eq!(list.len(), rf.min(ring.members().len()));
        if rf > 0 {
            prop_assert_eq!(&list[0], ring.owner(p));
        }
        let distinct: BTreeSet<&NodeId> = list.iter().collect();
        prop_assert_eq!(distinct.len(), list.len());
        // A longer list extends a shorter one.
        let longer = ring.preference_list(p, rf + 1);
        prop_assert_eq!(&longer[..list.len()], list.as_slice());
    }

    /// The epoch follows the member set, the partition count and the strategy.
    #[test]
    fn epoch_changes_with_the_member_set(
        members in member_names(),
        strategy in any_strategy(),
        extra in "[A-Z]{1,4}",
    ) {
        let ring = place(&strategy, &members, 256);
        let mut more = members.clone();
        more.push(NodeId(extra));
        prop_assert_ne!(ring.epoch(), place(&strategy, &more, 256).epoch());
        prop_assert_ne!(ring.epoch(), place(&strategy, &members, 257).epoch());
        let other = if strategy == Strategy::Rendezvous { Ring::STRATEGY } else { Strategy::Rendezvous };
        prop_assert_ne!(ring.epoch(), place(&other, &members, 256).epoch());
    }

    /// With any member names (P/N ≥ 42 here), one join or leave moves at most 3 × P/N
    /// under the chosen strategy: measured worst 2.2 at P/N ≈ 40, so 3 is noise room,
    /// while a cascade (the greedy variant's 17×) would fail it.
    #[test]
    fn chosen_strategy_moves_little_for_any_names(members in member_names(), joiner in "[A-Z]{1,4}") {
        prop_assume!(members.len() >= 3);
        let before = Ring::place(members.clone(), 1024).unwrap();
        let mut more = members.clone();
        more.push(NodeId(joiner));
        let after = Ring::place(more, 1024).unwrap();
        let n = after.members().len() as f64;
        let moved = f64::from(after.moved_from(&before));
        prop_assert!(moved <= 3.0 * 1024.0 / n, "moved {} of 1024 at N={}", moved, n);
        // And the reverse change (the joiner leaves) is the same pair of placements.
        prop_assert_eq!(before.moved_from(&after), after.moved_from(&before));
    }
}
