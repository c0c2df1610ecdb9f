//! When a leader's record is durable on a write quorum: per partition, the leader's
//! own last sequence and each follower's acknowledged one, and the writers waiting for
//! a sequence to be covered. Pure: no IO, no clock; the waiter type is the caller's.

use std::collections::{BTreeMap, BTreeSet};

use chorus_protocol::NodeId;

/// One partition's replication progress as its leader sees it.
#[derive(Debug)]
pub struct PartitionQuorum<W> {
    leader: NodeId,
    write_quorum: usize,
    /// The leader's last durable sequence.
    last: u64,
    /// Each follower's last sequence known durable and matching the leader's log.
    acked: BTreeMap<NodeId, u64>,
    /// Followers whose copies are tracked but not counted (learners).
    learners: BTreeSet<NodeId>,
    /// Writers waiting for a sequence, by sequence.
    waiting: BTreeMap<u64, Vec<W>>,
}

impl<W> PartitionQuorum<W> {
    /// A partition led by `leader` at `last`, committed once `write_quorum` replicas
    /// (the leader included) hold a record.
    pub fn new(leader: NodeId, write_quorum: usize, last: u64) -> Self {
        PartitionQuorum {
            leader,
            write_quorum: write_quorum.max(1),
            last,
            acked: BTreeMap::new(),
            learners: BTreeSet::new(),
            waiting: BTreeMap::new(),
        }
    }

    /// The leader appended up to `last`; returns the waiters now covered.
    pub fn appended(&mut self, last: u64) -> Vec<(W, Vec<NodeId>)> {
        self.last = self.last.max(last);
        self.release()
    }

    /// `follower` holds the leader's records up to `last`; returns the waiters now
    /// covered. A lower value than before replaces it (the follower truncated).
    pub fn acked(&mut self, follower: &NodeId, last: u64) -> Vec<(W, Vec<NodeId>)> {
        self.acked.insert(follower.clone(), last);
        self.release()
    }

    /// The followers whose acknowledgements are tracked but count toward no quorum
    /// from now on (learners); the others count again. Returns nothing: a learner
    /// turning voter is counted at the next acknowledgement or append.
    pub fn set_learners(&mut self, learners: impl IntoIterator<Item = NodeId>) {
        self.learners = learners.into_iter().collect();
    }

    /// `follower` is no longer a replica of the partition.
    pub fn forget(&mut self, follower: &NodeId) {
        self.acked.remove(follower);
    }

    /// What this leader knows `follower` holds, if anything.
    pub fn follower_last(&self, follower: &NodeId) -> Option<u64> {
        self.acked.get(follower).copied()
    }

    /// The leader's last sequence.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The highest sequence held by a write quorum (0 when no quorum holds anything).
    pub fn committed(&self) -> u64 {
        let mut holds: Vec<u64> = std::iter::once(self.last)
            .chain(self.voters().map(|(_, &last)| last))
            .collect();
        if holds.len() < self.write_quorum {
            return 0;
        }
        holds.sort_unstable_by(|a, b| b.cmp(a));
        holds[self.write_quorum - 1]
    }

    /// The replicas that hold `sequence`, the leader first.
    pub fn holders(&self, sequence: u64) -> Vec<NodeId> {
        let mut holders = Vec::with_capacity(1 + self.acked.len());
        if self.last >= sequence {
            holders.push(self.leader.clone());
        }
        holders.extend(
            self.voters()
                .filter(|&(_, &last)| last >= sequence)
                .map(|(node, _)| node.clone()),
        );
        holders
    }

    /// Waits for `sequence`: answered at once (`Err` gives the waiter back with its
    /// holders) when a quorum already holds it, else queued.
    pub fn wait(&mut self, sequence: u64, waiter: W) -> Result<(), (W, Vec<NodeId>)> {
        if self.committed() >= sequence {
            return Err((waiter, self.holders(sequence)));
        }
        self.waiting.entry(sequence).or_default().push(waiter);
        Ok(())
    }

    /// Writers waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(Vec::len).sum()
    }

    /// Drops waiters `keep` refuses (writers that gave up).
    pub fn retain_waiters(&mut self, keep: impl Fn(&W) -> bool) {
        self.waiting.retain(|_, waiters| {
            waiters.retain(&keep);
            !waiters.is_empty()
        });
    }

    /// Every waiter, for a leader that stops leading (they get a refusal).
    pub fn take_waiters(&mut self) -> Vec<W> {
        std::mem::take(&mut self.waiting)
            .into_values()
            .flatten()
            .collect()
    }

    /// The acknowledgements that count: the followers that are not learners.
    fn voters(&self) -> impl Iterator<Item = (&NodeId, &u64)> {
        self.acked
            .iter()
            .filter(|(node, _)| !self.learners.contains(*node))
    }

    fn release(&mut self) -> Vec<(W, Vec<NodeId>)> {
        let committed = self.committed();
        let mut released = Vec::new();
        while let Some((&sequence, _)) = self.waiting.first_key_value() {
            if sequence > committed {
                break;
            }
            let holders = self.holders(sequence);
            for waiter in self.waiting.remove(&sequence).unwrap_or_default() {
                released.push((waiter, holders.clone()));
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId(name.into())
    }

    #[test]
    fn a_record_commits_once_a_quorum_holds_it_and_names_its_holders() {
        let mut q = PartitionQuorum::new(node("a"), 2, 0);
        assert_eq!(q.appended(3), vec![]);
        q.wait(2, "w2").unwrap();
        q.wait(3, "w3").unwrap();
        assert_eq!(q.committed(), 0);
        let released = q.acked(&node("b"), 2);
        assert_eq!(released, vec![("w2", vec![node("a"), node("b")])]);
        assert_eq!(q.committed(), 2);
        assert_eq!(q.waiting(), 1);
        let released = q.acked(&node("c"), 3);
        assert_eq!(released, vec![("w3", vec![node("a"), node("c")])]);
    }

    #[test]
    fn a_sequence_already_committed_is_answered_at_once() {
        let mut q = PartitionQuorum::new(node("a"), 2, 5);
        q.acked(&node("b"), 5);
        assert_eq!(q.wait(4, 1), Err((1, vec![node("a"), node("b")])));
    }

    #[test]
    fn a_quorum_of_one_commits_what_the_leader_appended() {
        let mut q = PartitionQuorum::new(node("a"), 1, 0);
        q.wait(1, ()).unwrap();
        assert_eq!(q.appended(1), vec![((), vec![node("a")])]);
    }

    #[test]
    fn a_follower_that_truncated_stops_counting_for_what_it_lost() {
        let mut q = PartitionQuorum::<()>::new(node("a"), 3, 10);
        q.acked(&node("b"), 10);
        q.acked(&node("c"), 10);
        assert_eq!(q.committed(), 10);
        q.acked(&node("c"), 4);
        assert_eq!(q.committed(), 4);
        q.forget(&node("c"));
        assert_eq!(q.committed(), 0);
    }

    #[test]
    fn a_learner_is_tracked_but_never_counted() {
        let mut q = PartitionQuorum::new(node("a"), 2, 4);
        q.set_learners([node("d")]);
        q.wait(4, "w").unwrap();
        assert_eq!(q.acked(&node("d"), 4), vec![]);
        assert_eq!(q.follower_last(&node("d")), Some(4));
        assert_eq!(q.committed(), 0);
        q.set_learners([]);
        assert_eq!(q.committed(), 4);
        assert_eq!(
            q.acked(&node("b"), 4),
            vec![("w", vec![node("a"), node("b"), node("d")])]
        );
    }

    #[test]
    fn a_leader_that_steps_down_hands_back_every_waiter() {
        let mut q = PartitionQuorum::new(node("a"), 2, 3);
        q.wait(1, 1).unwrap();
        q.wait(3, 3).unwrap();
        q.retain_waiters(|w| *w != 1);
        assert_eq!(q.take_waiters(), vec![3]);
        assert_eq!(q.waiting(), 0);
    }
}
