//! Shedding copies of partitions this node no longer replicates. A join, a leave, a
//! drain (finished or aborted) or a member lost for good moves partitions' replica sets,
//! and a member the move leaves out would otherwise keep its copy for ever. A copy is
//! shed once this node has been outside the partition's replica set (voters and
//! learners) and the copy has not changed for `shed_after` (the down grace: the same
//! patience the replica sets show a member that went away), and the partition's leader
//! holds at least as far as the copy does (asked over the link). Shedding drops the
//! whole copy (the store truncates the partition to nothing, its bytes become dead and
//! the retirement pass reclaims them); the epochs promised stay, so fencing holds.
//!
//! A copy that is still changing is never shed: a drain streams to members outside the
//! replica sets until it flips them, and those copies grow until then.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chorus_protocol::{NodeId, PartitionId};
use tracing::{debug, info};

use super::{Part, Replicator};
use crate::cluster::routing::{Forward, ForwardReply};

/// Partitions' copies shed since start.
pub const REPLICATION_SHED: &str = "chorus_replication_partitions_shed_total";

/// Shortest and longest time between two looks at the copies held.
const MIN_CHECK: Duration = Duration::from_millis(250);
const MAX_CHECK: Duration = Duration::from_secs(10);

/// When each copy held outside its replica set was last seen to change: pure.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// Per partition: its last sequence when first seen unchanged, and since when.
    unchanged: HashMap<PartitionId, (u64, Instant)>,
}

impl Watch {
    /// Looks at every partition's last sequence held here (`lasts`, by partition) and
    /// whether this node is outside its replica set; returns the partitions due to be
    /// shed: outside, holding records, unchanged for `after`.
    pub(super) fn observe(
        &mut self,
        now: Instant,
        lasts: &[u64],
        outside: impl Fn(PartitionId) -> bool,
        after: Duration,
    ) -> Vec<PartitionId> {
        let mut due = Vec::new();
        for (p, &last) in lasts.iter().enumerate() {
            let partition = p as PartitionId;
            if last == 0 || !outside(partition) {
                self.unchanged.remove(&partition);
                continue;
            }
            match self.unchanged.get(&partition) {
                Some(&(seen, since)) if seen == last => {
                    if now.saturating_duration_since(since) >= after {
                        due.push(partition);
                    }
                }
                _ => {
                    self.unchanged.insert(partition, (last, now));
                }
            }
        }
        due
    }
}

/// Sheds copies as they fall due until replication stops.
pub(super) async fn run(replicator: Replicator) {
    let after = replicator.inner.settings.shed_after;
    let every = (after / 4).clamp(MIN_CHECK, MAX_CHECK);
    let mut watch = Watch::default();
    metrics::counter!(REPLICATION_SHED).increment(0);
    loop {
        tokio::select! {
            _ = replicator.inner.stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let node = &replicator.inner.node;
        let lasts: Vec<u64> = (0..node.partitions())
            .map(|p| node.partition_state(p).1)
            .collect();
        let view = replicator.inner.cluster.ring();
        let me = &replicator.inner.me;
        let in_use = replicator.in_use();
        let due = watch.observe(
            Instant::now(),
            &lasts,
            |p| !in_use.contains(&p) && !view.replicas(p).chain(view.learners(p)).any(|n| n == me),
            after,
        );
        if due.is_empty() {
            continue;
        }
        let mut by_leader: BTreeMap<NodeId, Vec<PartitionId>> = BTreeMap::new();
        for p in due {
            by_leader.entry(view.leader(p).clone()).or_default().push(p);
        }
        for (leader, partitions) in by_leader {
            if &leader == me {
                continue;
            }
            let reply = replicator
                .inner
                .peers
                .forward(
                    &leader,
                    Forward::Tips {
                        partitions: partitions.clone(),
                    },
                )
                .await;
            let tips = match reply {
                Ok(ForwardReply::Tips(tips)) if tips.len() == partitions.len() => tips,
                other => {
                    debug!(%leader, reply = ?other, "no tips to weigh copies to shed against");
                    continue;
                }
            };
            for (p, tip) in partitions.into_iter().zip(tips) {
                let held = lasts[usize::from(p)];
                if tip < held {
                    debug!(partition = p, held, %leader, tip, "the leader holds less: copy kept");
                    continue;
                }
                match node.shed_partition(p, held).await {
                    Ok(Some(removed)) => {
                        info!(partition = p, held, removed, %leader, "copy shed");
                        metrics::counter!(REPLICATION_SHED).increment(1);
                    }
                    Ok(None) => debug!(partition = p, "the copy moved: kept"),
                    Err(error) => debug!(partition = p, %error, "shedding a copy failed"),
                }
            }
        }
    }
}

impl Replicator {
    /// The partitions this node leads or is taking the lead of.
    fn in_use(&self) -> std::collections::BTreeSet<PartitionId> {
        self.parts()
            .iter()
            .enumerate()
            .filter(|(_, part)| !matches!(part, Part::Idle { .. }))
            .map(|(p, _)| p as PartitionId)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(10);

    #[test]
    fn a_copy_outside_its_set_is_due_once_unchanged_for_the_grace() {
        let start = Instant::now();
        let mut watch = Watch::default();
        let outside = |p: PartitionId| p != 1;
        // Partition 0: outside, holding; 1: a replica here; 2: outside, empty.
        let lasts = [5, 7, 0];
        assert!(watch.observe(start, &lasts, outside, AFTER).is_empty());
        let later = start + AFTER - Duration::from_millis(1);
        assert!(watch.observe(later, &lasts, outside, AFTER).is_empty());
        assert_eq!(watch.observe(start + AFTER, &lasts, outside, AFTER), [0]);
    }

    #[test]
    fn a_copy_that_changes_or_rejoins_its_set_starts_over() {
        let start = Instant::now();
        let mut watch = Watch::default();
        let outside = |_| true;
        watch.observe(start, &[5], outside, AFTER);
        // Streamed to (a drain before its flip): the clock starts again.
        let grown = start + AFTER;
        assert!(watch.observe(grown, &[9], outside, AFTER).is_empty());
        assert!(
            watch
                .observe(grown + AFTER / 2, &[9], outside, AFTER)
                .is_empty()
        );
        // Back in its set for a moment: the clock starts again too.
        let back = grown + AFTER / 2;
        assert!(watch.observe(back, &[9], |_| false, AFTER).is_empty());
        assert!(watch.observe(back, &[9], outside, AFTER).is_empty());
        assert!(
            watch
                .observe(back + AFTER / 2, &[9], outside, AFTER)
                .is_empty()
        );
        assert_eq!(watch.observe(back + AFTER, &[9], outside, AFTER), [0]);
    }
}
