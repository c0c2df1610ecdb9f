//! Replica sets from a ring and the members' standings: per partition, the *voters*
//! (the replicas that promise epochs, count toward the write quorum and lead) and the
//! *learners* (replicas being streamed the partition before they vote). Pure: every
//! node computes the same sets from the same members and standings.
//!
//! - A cordoned member keeps only the partitions it held when cordoned; elsewhere it is
//!   passed over, unless no other member is left to fill the set.
//! - Warming members (see [`super::standing`]) are left out of the voters' placement:
//!   the voters are placed on the members that are warm, as if the newcomers were not
//!   there yet, and the learners are the members the full placement adds to each set.
//!   When a newcomer turns warm, the voters become the full placement's sets, whose new
//!   members have been learning all along. While fewer members are warm than a set
//!   holds (a cluster forming, with nothing to stream), everyone votes.

use std::collections::BTreeSet;

use chorus_protocol::{NodeId, PartitionId};

use super::ring::Ring;
use super::standing::Standings;

/// Per partition, replicas as indices in the ring's members.
pub type Sets = Vec<Box<[u16]>>;

/// The voters and learners of every partition of a ring.
#[derive(Debug)]
pub struct ReplicaSets {
    /// Per partition: the voters, the ring's owner (or the first warm member) first.
    pub voters: Sets,
    /// Per partition: the learners (usually none).
    pub learners: Sets,
}

/// The replica sets of `ring` with `factor` replicas each, under `standings` (none:
/// every member warm and uncordoned).
pub fn replica_sets(ring: &Ring, factor: usize, standings: Option<&Standings>) -> ReplicaSets {
    let members = ring.members();
    let index = |node: &NodeId| {
        members
            .binary_search(node)
            .expect("a replica is a member of the ring") as u16
    };
    let factor = factor.max(1);
    let cordoned = standings.map_or(0, |s| {
        members.iter().filter(|m| s.cordon(m).is_some()).count()
    });
    let pick = |r: &Ring, p: PartitionId| -> Box<[u16]> {
        let candidates = r.preference_list(p, factor + cordoned);
        let keeps = |node: &NodeId| {
            standings
                .and_then(|s| s.cordon(node))
                .is_none_or(|held| held.contains(p))
        };
        let mut set: Vec<u16> = candidates
            .iter()
            .filter(|n| keeps(n))
            .take(factor)
            .map(index)
            .collect();
        // Cordoned members fill a set only when nobody else is left to.
        for node in candidates.iter().filter(|n| !keeps(n)) {
            if set.len() >= factor.min(candidates.len()) {
                break;
            }
            set.push(index(node));
        }
        set.into_boxed_slice()
    };
    let all: Sets = (0..ring.partitions()).map(|p| pick(ring, p)).collect();
    let Some(warm) = voting_members(members, factor, standings) else {
        return ReplicaSets {
            learners: vec![Box::default(); all.len()],
            voters: all,
        };
    };
    let voting_ring = Ring::place_with(&ring.strategy(), warm, ring.partitions())
        .expect("a non-empty member set places");
    let voters: Sets = (0..ring.partitions())
        .map(|p| pick(&voting_ring, p))
        .collect();
    let learners = all
        .iter()
        .zip(&voters)
        .map(|(full, voting)| {
            full.iter()
                .copied()
                .filter(|i| !voting.contains(i))
                .collect()
        })
        .collect();
    ReplicaSets { voters, learners }
}

/// The members the voters are placed on, when warming members are left out: `None`
/// when everyone votes (one replica, nobody warming, or fewer warm members than a set
/// holds).
fn voting_members(
    members: &[NodeId],
    factor: usize,
    standings: Option<&Standings>,
) -> Option<Vec<NodeId>> {
    let standings = standings.filter(|_| factor > 1)?;
    let warm: Vec<NodeId> = members
        .iter()
        .filter(|m| !standings.is_warming(m))
        .cloned()
        .collect();
    (warm.len() < members.len() && warm.len() >= factor).then_some(warm)
}

/// A digest of what in `standings` shapes the placement of `members`: who is left out
/// of the voters as warming, and what each cordoned member keeps.
pub fn standing_key(members: &[NodeId], factor: usize, standings: Option<&Standings>) -> u64 {
    let Some(standings) = standings else {
        return 0;
    };
    let voting = voting_members(members, factor, Some(standings));
    let mut bytes = Vec::new();
    for node in members {
        let warming = voting.as_ref().is_some_and(|v| !v.contains(node));
        let cordon = standings.cordon(node);
        if !warming && cordon.is_none() {
            continue;
        }
        bytes.extend_from_slice(node.0.as_bytes());
        bytes.push(0);
        bytes.push(u8::from(warming));
        for word in cordon.map(|c| c.words()).unwrap_or_default() {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.push(0xff);
    }
    if bytes.is_empty() {
        0
    } else {
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

/// The members `sets` name for partition `p`.
pub fn named<'a>(ring: &'a Ring, sets: &'a Sets, p: PartitionId) -> BTreeSet<&'a NodeId> {
    sets[usize::from(p)]
        .iter()
        .map(|&i| &ring.members()[usize::from(i)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::standing::{PartitionSet, Standing};

    fn nodes(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId((*n).into())).collect()
    }

    fn warm(version: u64) -> Standing {
        Standing {
            version,
            warming: false,
            departed: false,
            cordoned: None,
        }
    }

    fn standings(entries: &[(&str, Standing)]) -> Standings {
        Standings::from_entries(
            entries
                .iter()
                .map(|(n, s)| (NodeId((*n).into()), s.clone())),
        )
    }

    #[test]
    fn a_warming_member_learns_what_it_will_hold_and_votes_nowhere() {
        let ring = Ring::place(nodes(&["a", "b", "c", "d"]), 128).unwrap();
        let s = standings(&[("a", warm(1)), ("b", warm(1)), ("c", warm(1))]);
        let sets = replica_sets(&ring, 3, Some(&s));
        let full = replica_sets(&ring, 3, None);
        let d = NodeId("d".into());
        let three = Ring::place(nodes(&["a", "b", "c"]), 128).unwrap();
        for p in 0..128 {
            let voters = named(&ring, &sets.voters, p);
            assert!(!voters.contains(&d), "partition {p}");
            let expected: BTreeSet<NodeId> = three.preference_list(p, 3).into_iter().collect();
            assert_eq!(voters, expected.iter().collect(), "partition {p}");
            // Voters and learners together cover the full placement's set.
            let mut union = voters.clone();
            union.extend(named(&ring, &sets.learners, p));
            assert!(named(&ring, &full.voters, p).is_subset(&union));
        }
        assert!((0..128).any(|p| named(&ring, &sets.learners, p).contains(&d)));
        // Once warm, the voters are the full placement and nobody learns.
        let s = standings(&[
            ("a", warm(1)),
            ("b", warm(1)),
            ("c", warm(1)),
            ("d", warm(1)),
        ]);
        let sets = replica_sets(&ring, 3, Some(&s));
        assert_eq!(sets.voters, full.voters);
        assert!(sets.learners.iter().all(|l| l.is_empty()));
    }

    #[test]
    fn a_forming_cluster_with_too_few_warm_members_lets_everyone_vote() {
        let ring = Ring::place(nodes(&["a", "b", "c"]), 64).unwrap();
        let sets = replica_sets(&ring, 3, Some(&Standings::default()));
        assert_eq!(sets.voters, replica_sets(&ring, 3, None).voters);
    }

    #[test]
    fn a_cordoned_member_keeps_what_it_held_and_takes_nothing_new() {
        let before = Ring::place(nodes(&["a", "b", "c", "d", "e"]), 256).unwrap();
        let held: Vec<PartitionId> = (0..256)
            .filter(|&p| before.preference_list(p, 3).contains(&NodeId("c".into())))
            .collect();
        let mut cordoned = warm(2);
        cordoned.cordoned = Some(PartitionSet::of(held.iter().copied()));
        let entries = [
            ("a", warm(1)),
            ("b", warm(1)),
            ("c", cordoned),
            ("d", warm(1)),
            ("e", warm(1)),
        ];
        let s = standings(&entries);
        // Cordoning moves nothing.
        assert_eq!(
            replica_sets(&before, 3, Some(&s)).voters,
            replica_sets(&before, 3, None).voters
        );
        // e leaves: c takes none of e's partitions.
        let after = Ring::place(nodes(&["a", "b", "c", "d"]), 256).unwrap();
        let sets = replica_sets(&after, 3, Some(&s));
        let c = NodeId("c".into());
        for p in 0..256 {
            let voters = named(&after, &sets.voters, p);
            assert_eq!(voters.len(), 3);
            if voters.contains(&c) {
                assert!(held.contains(&p), "c took partition {p}");
            }
        }
    }

    #[test]
    fn cordoned_members_still_fill_a_set_nobody_else_can() {
        let ring = Ring::place(nodes(&["a", "b", "c"]), 32).unwrap();
        let mut cordoned = warm(2);
        cordoned.cordoned = Some(PartitionSet::default());
        let s = standings(&[("a", warm(1)), ("b", warm(1)), ("c", cordoned)]);
        let sets = replica_sets(&ring, 3, Some(&s));
        assert!(sets.voters.iter().all(|v| v.len() == 3));
    }

    #[test]
    fn the_key_changes_with_what_shapes_the_placement_only() {
        let members = nodes(&["a", "b"]);
        let s1 = standings(&[("a", warm(1)), ("b", warm(1))]);
        let s2 = standings(&[("a", warm(5)), ("b", warm(9))]);
        assert_eq!(standing_key(&members, 3, Some(&s1)), 0);
        assert_eq!(standing_key(&members, 3, Some(&s2)), 0);
        // b is unknown, so warming, but with fewer warm members than a set holds
        // everyone votes: nothing changes.
        let s3 = standings(&[("a", warm(1))]);
        assert_eq!(standing_key(&members, 2, Some(&s3)), 0);
        let three = nodes(&["a", "b", "c"]);
        let s4 = standings(&[("a", warm(1)), ("b", warm(1))]);
        assert_ne!(standing_key(&three, 2, Some(&s4)), 0);
        assert_eq!(standing_key(&three, 1, Some(&s4)), 0);
    }
}
