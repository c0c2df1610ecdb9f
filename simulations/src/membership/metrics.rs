//! What the run measures: every member's view of who is up, checked against the truth
//! (which nodes are running) as the views change, plus the verdicts and traffic counters.
//!
//! Views are kept as one bit row per observer (`N²` bits: 12.5 MB at 10,000 nodes), so a
//! view change is a bit flip and the watches the scenario asks about (who knows of the
//! joiner, who still sees the crashed node, who still sees the cut-off nodes, how many
//! views differ from the truth) are counters updated in O(1) per change.

use super::events::Micros;
use super::network::NodeIx;

/// Every member's view of the cluster and the counters derived from it.
pub struct Views {
    words: usize,
    /// Row `i`, bit `j`: node `i` believes node `j` is up.
    bits: Vec<u64>,
    /// Ground truth: the node is running (started and not crashed).
    live: Vec<bool>,
    live_count: usize,
    /// Column counts: how many live observers other than `j` believe `j` is up.
    known_by: Vec<u32>,
    /// Per live observer: members whose state it gets wrong.
    row_mismatch: Vec<i64>,
    /// Observer-subject pairs (live observers only) where the view differs from the truth.
    mismatch: i64,
    /// Nodes cut off by the partition in force, if any.
    cut: Vec<bool>,
    /// Live observers on the other side of the partition who still see a cut node up,
    /// summed over the cut nodes.
    seen_across: i64,
}

impl Views {
    /// Views of `nodes` nodes, none running and none seeing anyone.
    pub fn new(nodes: usize) -> Self {
        let words = nodes.div_ceil(64);
        Self {
            words,
            bits: vec![0; words * nodes],
            live: vec![false; nodes],
            live_count: 0,
            known_by: vec![0; nodes],
            row_mismatch: vec![0; nodes],
            mismatch: 0,
            cut: vec![false; nodes],
            seen_across: 0,
        }
    }

    fn bit(&self, observer: NodeIx, subject: NodeIx) -> bool {
        let (i, j) = (observer as usize, subject as usize);
        self.bits[i * self.words + j / 64] & (1 << (j % 64)) != 0
    }

    /// Records that `observer` now believes `subject` is up (`true`) or down; returns
    /// whether this changed its view.
    pub fn set(&mut self, observer: NodeIx, subject: NodeIx, up: bool) -> bool {
        if observer == subject || self.bit(observer, subject) == up {
            return false;
        }
        let (i, j) = (observer as usize, subject as usize);
        self.bits[i * self.words + j / 64] ^= 1 << (j % 64);
        let delta: i64 = if up { 1 } else { -1 };
        if self.live[i] {
            self.known_by[j] = (i64::from(self.known_by[j]) + delta) as u32;
            let change = if up == self.live[j] { -1 } else { 1 };
            self.mismatch += change;
            self.row_mismatch[i] += change;
            if self.cut[j] && !self.cut[i] {
                self.seen_across += delta;
            }
        }
        true
    }

    /// Marks `node` as running (started or joined) and folds its row into the counters.
    pub fn start(&mut self, node: NodeIx) {
        let n = node as usize;
        if self.live[n] {
            return;
        }
        self.live[n] = true;
        self.live_count += 1;
        self.fold_row(node, 1);
        // Column `node` is now expected up: every live observer that does not see it
        // becomes a mismatch, every one that does stops being one.
        self.flip_column(node, 1);
    }

    /// Marks `node` as crashed: its own view stops counting and it should be seen down.
    pub fn crash(&mut self, node: NodeIx) {
        let n = node as usize;
        if !self.live[n] {
            return;
        }
        self.fold_row(node, -1);
        self.live[n] = false;
        self.live_count -= 1;
        self.flip_column(node, -1);
    }

    /// Re-scores column `node` after its truth changed: `sign = 1` when it started
    /// (observers not seeing it are now wrong), `-1` when it crashed (observers seeing it
    /// are now wrong).
    fn flip_column(&mut self, node: NodeIx, sign: i64) {
        let n = node as usize;
        for i in 0..self.live.len() {
            if i == n || !self.live[i] {
                continue;
            }
            let wrong_now = self.bit(i as NodeIx, node) != (sign > 0);
            let change = if wrong_now { 1 } else { -1 };
            self.row_mismatch[i] += change;
            self.mismatch += change;
        }
    }

    /// Adds (`sign = 1`) or removes (`-1`) live observer `node`'s row from the counters.
    fn fold_row(&mut self, node: NodeIx, sign: i64) {
        let n = node as usize;
        let mut wrong = 0;
        for j in 0..self.live.len() {
            if j == n {
                continue;
            }
            let up = self.bit(node, j as NodeIx);
            if up {
                self.known_by[j] = (i64::from(self.known_by[j]) + sign) as u32;
                if self.cut[j] && !self.cut[n] {
                    self.seen_across += sign;
                }
            }
            if up != self.live[j] {
                wrong += 1;
            }
        }
        self.mismatch += sign * wrong;
        self.row_mismatch[n] = if sign > 0 { wrong } else { 0 };
    }

    /// Starts watching a partition: `nodes` are cut off from the rest.
    pub fn partition(&mut self, nodes: &[NodeIx]) {
        for &node in nodes {
            self.cut[node as usize] = true;
        }
        self.seen_across = 0;
        for &node in nodes {
            for i in 0..self.live.len() {
                if self.live[i] && !self.cut[i] && self.bit(i as NodeIx, node) {
                    self.seen_across += 1;
                }
            }
        }
    }

    /// Stops watching the partition.
    pub fn heal(&mut self) {
        self.cut.fill(false);
        self.seen_across = 0;
    }

    /// Running nodes.
    pub fn live_count(&self) -> usize {
        self.live_count
    }

    /// Live observers other than `node` that see it up.
    pub fn known_by(&self, node: NodeIx) -> usize {
        self.known_by[node as usize] as usize
    }

    /// Whether live `node` sees exactly the running nodes up.
    pub fn view_complete(&self, node: NodeIx) -> bool {
        self.live[node as usize] && self.row_mismatch[node as usize] == 0
    }

    /// Whether every live observer on the majority side sees every cut node down.
    pub fn partition_detected(&self) -> bool {
        self.seen_across == 0
    }

    /// Whether every live member's view equals the set of running nodes.
    pub fn converged(&self) -> bool {
        self.mismatch == 0
    }

    /// Observer-subject pairs whose view differs from the truth.
    pub fn mismatches(&self) -> i64 {
        self.mismatch
    }
}

/// When the scripted events happened and when their effects were complete.
#[derive(Clone, Debug, Default)]
pub struct Milestones {
    /// The joiner announced itself.
    pub join_at: Option<Micros>,
    /// Every live member saw the joiner up.
    pub join_known_at: Option<Micros>,
    /// The joiner saw every live member up.
    pub joiner_complete_at: Option<Micros>,
    /// Roster packets the joiner had applied and pulls it had sent by then.
    pub joiner_roster: Option<JoinerRoster>,
    /// The node crashed.
    pub crash_at: Option<Micros>,
    /// A live member first suspected the crashed node.
    pub crash_suspected_at: Option<Micros>,
    /// Every live member saw the crashed node down.
    pub crash_down_at: Option<Micros>,
    /// The partition started.
    pub partition_at: Option<Micros>,
    /// Every live majority member saw every cut-off node down.
    pub partition_detected_at: Option<Micros>,
    /// The partition healed.
    pub heal_at: Option<Micros>,
    /// After the heal, every live member's view equalled the set of running nodes.
    pub converged_at: Option<Micros>,
}

/// How the joiner's roster arrived, counted when it first saw every live member.
#[derive(Clone, Copy, Debug, Default)]
pub struct JoinerRoster {
    /// Roster packets it applied (the seed's unasked first window and every answer).
    pub packets: u64,
    /// Requests it sent for the parts still missing.
    pub pulls: u64,
}

/// Verdicts counted over the run. "Steady" is the time before the partition.
#[derive(Clone, Copy, Debug, Default)]
pub struct Verdicts {
    /// Steady: "down" verdicts about a running node.
    pub false_down: u64,
    /// Steady: rejoins a running node was forced into.
    pub forced_rejoins: u64,
    /// Steady: suspicions raised (a member's probe failed, direct and indirect).
    pub suspicions: u64,
    /// "Down" verdicts about the crashed node (expected).
    pub crash_down: u64,
    /// "Down" verdicts across the partition while it is in force (expected).
    pub partition_down: u64,
    /// From the partition on: every other "down" verdict about a running node (same
    /// side, or after the heal).
    pub aftermath_down: u64,
    /// From the partition on: "down" verdicts about a running node on the observer's
    /// own side of the cut (part of `aftermath_down`; the collateral damage).
    pub same_side_down: u64,
    /// From the partition on: rejoins.
    pub aftermath_rejoins: u64,
    /// From the partition on: rejoins of nodes the partition did not cut off (part of
    /// `aftermath_rejoins`).
    pub rejoins_outside_cut: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_cluster(n: u32) -> Views {
        let mut views = Views::new(n as usize);
        for i in 0..n {
            for j in 0..n {
                views.set(i, j, true);
            }
        }
        for i in 0..n {
            views.start(i);
        }
        views
    }

    #[test]
    fn a_full_roster_is_converged() {
        let views = full_cluster(70);
        assert!(views.converged());
        assert_eq!(views.known_by(5), 69);
        assert!(views.view_complete(5));
    }

    #[test]
    fn a_crash_is_a_mismatch_until_everyone_sees_it_down() {
        let mut views = full_cluster(5);
        views.crash(2);
        assert_eq!(views.mismatches(), 4);
        for i in [0, 1, 3, 4] {
            views.set(i, 2, false);
        }
        assert!(views.converged());
        assert_eq!(views.known_by(2), 0);
    }

    #[test]
    fn a_join_is_a_mismatch_until_everyone_sees_it_up() {
        let mut views = full_cluster(4);
        let mut bigger = Views::new(5);
        for i in 0..4 {
            for j in 0..4 {
                bigger.set(i, j, true);
            }
            bigger.start(i);
        }
        assert!(bigger.converged());
        bigger.start(4);
        // The joiner sees no one (4) and no one sees it (4).
        assert_eq!(bigger.mismatches(), 8);
        assert!(!bigger.view_complete(4));
        for i in 0..4 {
            bigger.set(i, 4, true);
            bigger.set(4, i, true);
        }
        assert!(bigger.converged());
        assert!(bigger.view_complete(4));
        views.crash(0);
        assert!(!views.converged());
    }

    #[test]
    fn partition_is_detected_when_the_majority_sees_the_cut_nodes_down() {
        let mut views = full_cluster(6);
        views.partition(&[4, 5]);
        assert!(!views.partition_detected());
        for i in 0..4 {
            views.set(i, 4, false);
            views.set(i, 5, false);
        }
        // The cut-off nodes still seeing each other does not matter.
        assert!(views.partition_detected());
    }
}
