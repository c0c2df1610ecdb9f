//! The script every run follows: the cluster forms, a node joins, a node crashes, the
//! cluster runs in a steady state (where false verdicts under loss are counted), then a
//! few nodes are cut off for longer than the suspicion timeout and the partition heals,
//! with time left for the views to converge.
//!
//! Node `0` is the seed, node `1` crashes, node `2` is the slow node (when there is one),
//! the last node is the joiner and the partition cuts off the nodes just before it.

use super::events::Micros;
use super::network::NodeIx;

/// A scripted change to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `node` announces itself to `seed`.
    Join {
        /// The new node.
        node: NodeIx,
        /// The member it knows.
        seed: NodeIx,
    },
    /// `node` stops: it sends and receives nothing more.
    Crash(NodeIx),
    /// The nodes are cut off from the rest of the cluster, both ways.
    Partition(Vec<NodeIx>),
    /// The partition ends.
    Heal,
}

/// The seed every joiner announces to.
pub const SEED: NodeIx = 0;
/// The node that crashes.
pub const CRASHED: NodeIx = 1;
/// The node made slow when the run asks for one.
pub const SLOW: NodeIx = 2;
/// Smallest cluster the script fits (seed, crash, slow node, two cut off, joiner).
pub const MIN_NODES: usize = 6;

/// The scripted timeline of one run.
#[derive(Clone, Debug)]
pub struct Script {
    /// Nodes in the run, the joiner included.
    pub nodes: usize,
    /// Members of the cluster as it forms (every node but the joiner).
    pub founders: usize,
    /// Steps in time order.
    pub steps: Vec<(Micros, Step)>,
    /// When the run ends.
    pub end: Micros,
}

impl Script {
    /// The timeline for `nodes` nodes with the given probe period, suspicion timeout and
    /// time a healed cluster is given to converge, lasting at least `minimum`.
    ///
    /// The partition comes last, so that the time before it measures the steady state
    /// (false verdicts under loss) undisturbed by the partition's aftermath.
    pub fn new(
        nodes: usize,
        period: Micros,
        suspicion: Micros,
        after_heal: Micros,
        minimum: Micros,
    ) -> Self {
        assert!(
            nodes >= MIN_NODES,
            "the script needs at least {MIN_NODES} nodes"
        );
        let joiner = (nodes - 1) as NodeIx;
        let cut_size = if nodes < 20 { 2 } else { 3 };
        let cut: Vec<NodeIx> = (joiner - cut_size..joiner).collect();
        let join_at = 10 * period;
        let crash_at = join_at + 20 * period;
        // Longer than the suspicion timeout, so the cut-off nodes are declared down.
        let partition_len = suspicion + 10 * period;
        let earliest_partition = crash_at + suspicion + 30 * period;
        let partition_at =
            earliest_partition.max(minimum.saturating_sub(partition_len + after_heal));
        let heal_at = partition_at + partition_len;
        Script {
            nodes,
            founders: nodes - 1,
            steps: vec![
                (
                    join_at,
                    Step::Join {
                        node: joiner,
                        seed: SEED,
                    },
                ),
                (crash_at, Step::Crash(CRASHED)),
                (partition_at, Step::Partition(cut)),
                (heal_at, Step::Heal),
            ],
            end: heal_at + after_heal,
        }
    }

    /// The node that joins.
    pub fn joiner(&self) -> NodeIx {
        (self.nodes - 1) as NodeIx
    }

    /// When the partition starts (the end of the steady state).
    pub fn partition_at(&self) -> Micros {
        self.steps
            .iter()
            .find(|(_, step)| matches!(step, Step::Partition(_)))
            .map_or(self.end, |(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::events::SEC;

    #[test]
    fn the_partition_outlasts_the_suspicion_timeout() {
        let script = Script::new(100, SEC, 8 * SEC, 60 * SEC, 300 * SEC);
        let at = |wanted: fn(&Step) -> bool| {
            script
                .steps
                .iter()
                .find(|(_, step)| wanted(step))
                .map(|(at, _)| *at)
                .unwrap()
        };
        let cut = at(|s| matches!(s, Step::Partition(_)));
        let heal = at(|s| matches!(s, Step::Heal));
        assert!(heal - cut > 8 * SEC);
        assert_eq!(script.end, heal + 60 * SEC);
        assert_eq!(script.end, 300 * SEC);
        assert!(script.steps.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn the_cut_off_nodes_are_neither_seed_crashed_slow_nor_joiner() {
        let script = Script::new(MIN_NODES, SEC, 4 * SEC, 60 * SEC, 0);
        let Some((_, Step::Partition(cut))) = script
            .steps
            .iter()
            .find(|(_, s)| matches!(s, Step::Partition(_)))
        else {
            panic!("no partition");
        };
        for node in cut {
            assert!(![SEED, CRASHED, SLOW, script.joiner()].contains(node));
        }
    }
}
