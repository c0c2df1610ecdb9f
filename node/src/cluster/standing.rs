//! A member's standing: whether it is still warming up and whether it is cordoned.
//!
//! - **Warming.** A member that starts with an empty store in a cluster that already
//!   holds data is placed in replica sets at once, but as a *learner*: its partitions'
//!   leaders stream it their records while the replicas it will replace keep voting and
//!   leading. Once it holds what its leaders held, it declares itself warm, and only
//!   then does the placement count it: the replica sets (and leadership) flip to it
//!   with its copies already in place, so a join never leaves a partition a replica
//!   short while a newcomer catches up, and its users are not unavailable meanwhile.
//! - **Cordoned** (`chorus ctl cordon`). The member keeps the partitions it held when
//!   cordoned and takes no new ones: when members join, leave or are lost, their
//!   partitions are placed on the others.
//! - **Departed.** A drained member says so just before it leaves: the others place
//!   the ring without it at once instead of keeping its place for the down grace (a
//!   leave looks like any down verdict to SWIM). A member that starts again says
//!   otherwise.
//!
//! Each member writes only its own standing, with a version that only grows (wall-clock
//! milliseconds, or one more than the last), and members swap what they know over the
//! links, keeping per member the highest version: a convergent map. A member whose
//! standing is not known yet counts as warming, so a newcomer is never made a voter
//! before its first word arrives.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bincode::Encode;
use chorus_protocol::{NodeId, PartitionId};
use serde::{Deserialize, Serialize};

/// Most members a standings map holds (what one link message may carry).
pub const MAX_STANDINGS: usize = 1 << 16;
/// Most 64-bit words of a cordoned member's partition set (65,536 partitions).
pub const MAX_PARTITION_WORDS: usize = 1 << 10;

/// A set of partitions, as a bitmap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode)]
pub struct PartitionSet {
    words: Vec<u64>,
}

impl PartitionSet {
    /// The set of `partitions`.
    pub fn of(partitions: impl IntoIterator<Item = PartitionId>) -> Self {
        let mut set = PartitionSet::default();
        for p in partitions {
            let word = usize::from(p) / 64;
            if set.words.len() <= word {
                set.words.resize(word + 1, 0);
            }
            set.words[word] |= 1 << (p % 64);
        }
        set
    }

    /// The set from its words (decoded within [`MAX_PARTITION_WORDS`]).
    pub fn from_words(words: Vec<u64>) -> Self {
        PartitionSet { words }
    }

    /// The bitmap's words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Whether `p` is in the set.
    pub fn contains(&self, p: PartitionId) -> bool {
        self.words
            .get(usize::from(p) / 64)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    /// How many partitions are in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One member's standing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Encode)]
pub struct Standing {
    /// Grows with every change the member makes.
    pub version: u64,
    /// Still streaming its partitions: a learner, never a voter or leader.
    pub warming: bool,
    /// Drained and gone for good: placed nowhere, even within the down grace.
    #[serde(default)]
    pub departed: bool,
    /// Cordoned: the partitions it keeps (it takes no others).
    pub cordoned: Option<PartitionSet>,
}

impl Standing {
    /// A first standing, warming or not, at the current version.
    pub fn new(warming: bool) -> Self {
        Standing {
            version: now_millis(),
            warming,
            departed: false,
            cordoned: None,
        }
    }

    /// This standing changed by `change`, at a version above this one's.
    pub fn changed(&self, change: impl FnOnce(&mut Standing)) -> Standing {
        let mut next = self.clone();
        change(&mut next);
        next.version = now_millis().max(self.version + 1);
        next
    }
}

/// Wall-clock milliseconds: a restarted member's first change outranks its earlier ones.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

/// Every member's standing as this node knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<Entry>", from = "Vec<Entry>")]
pub struct Standings {
    members: BTreeMap<NodeId, Standing>,
}

/// One member's standing as the standings file lists it.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    node: String,
    #[serde(flatten)]
    standing: Standing,
}

impl From<Standings> for Vec<Entry> {
    fn from(standings: Standings) -> Self {
        standings
            .members
            .into_iter()
            .map(|(node, standing)| Entry {
                node: node.0,
                standing,
            })
            .collect()
    }
}

impl From<Vec<Entry>> for Standings {
    fn from(entries: Vec<Entry>) -> Self {
        Standings::from_entries(entries.into_iter().map(|e| (NodeId(e.node), e.standing)))
    }
}

impl Standings {
    /// The standings in `entries` (a later entry of the same member wins if newer).
    pub fn from_entries(entries: impl IntoIterator<Item = (NodeId, Standing)>) -> Self {
        let mut standings = Standings::default();
        for (node, standing) in entries {
            standings.set(node, standing);
        }
        standings
    }

    /// `node`'s standing, if known.
    pub fn get(&self, node: &NodeId) -> Option<&Standing> {
        self.members.get(node)
    }

    /// Whether `node` counts as warming: it says so, or it has not said anything yet.
    pub fn is_warming(&self, node: &NodeId) -> bool {
        self.members.get(node).is_none_or(|s| s.warming)
    }

    /// Whether `node` said it left for good (drained).
    pub fn departed(&self, node: &NodeId) -> bool {
        self.members.get(node).is_some_and(|s| s.departed)
    }

    /// The partitions `node` keeps if it is cordoned.
    pub fn cordon(&self, node: &NodeId) -> Option<&PartitionSet> {
        self.members.get(node).and_then(|s| s.cordoned.as_ref())
    }

    /// Takes `standing` for `node` if it is newer than the one held; returns whether it
    /// was.
    pub fn set(&mut self, node: NodeId, standing: Standing) -> bool {
        match self.members.get(&node) {
            Some(held) if held.version >= standing.version => false,
            _ => {
                self.members.insert(node, standing);
                true
            }
        }
    }

    /// Takes every entry of `other` newer than the one held; returns how many.
    pub fn merge(&mut self, other: Standings) -> usize {
        other
            .members
            .into_iter()
            .filter(|(node, standing)| self.set(node.clone(), standing.clone()))
            .count()
    }

    /// The entries this map holds newer than `other`'s (what `other` lacks).
    pub fn newer_than(&self, other: &Standings) -> Standings {
        Standings {
            members: self
                .members
                .iter()
                .filter(|(node, standing)| {
                    other
                        .members
                        .get(*node)
                        .is_none_or(|theirs| theirs.version < standing.version)
                })
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
        }
    }

    /// The entries, by member.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Standing)> {
        self.members.iter()
    }

    /// Members held.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The entries as a list (the link encoding).
    pub fn into_entries(self) -> Vec<(NodeId, Standing)> {
        self.members.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId(name.into())
    }

    fn at(version: u64, warming: bool) -> Standing {
        Standing {
            version,
            warming,
            departed: false,
            cordoned: None,
        }
    }

    #[test]
    fn the_newest_version_of_each_member_wins_in_any_order() {
        let a = Standings::from_entries([(node("x"), at(2, false)), (node("y"), at(1, true))]);
        let b = Standings::from_entries([(node("x"), at(1, true)), (node("y"), at(3, false))]);
        let mut ab = a.clone();
        ab.merge(b.clone());
        let mut ba = b.clone();
        ba.merge(a.clone());
        assert_eq!(ab, ba);
        assert!(!ab.is_warming(&node("x")));
        assert!(!ab.is_warming(&node("y")));
        assert_eq!(
            a.newer_than(&b).into_entries(),
            vec![(node("x"), at(2, false))]
        );
    }

    #[test]
    fn an_unknown_member_counts_as_warming() {
        assert!(Standings::default().is_warming(&node("new")));
    }

    #[test]
    fn a_change_always_outranks_the_standing_it_changes() {
        let far_future = at(u64::MAX / 2, true);
        let next = far_future.changed(|s| s.warming = false);
        assert!(next.version > far_future.version);
        assert!(!next.warming);
    }

    #[test]
    fn a_partition_set_holds_exactly_its_partitions() {
        let set = PartitionSet::of([0, 63, 64, 4095]);
        assert_eq!(set.len(), 4);
        for p in [0, 63, 64, 4095] {
            assert!(set.contains(p));
        }
        assert!(!set.contains(1) && !set.contains(65) && !set.contains(60_000));
        assert_eq!(PartitionSet::from_words(set.words().to_vec()), set);
    }
}
