//! What the demo waits for in what members see: pure predicates over one member's
//! view (its `ctl members` rows and `ctl ring` report), and [`Convergence`], which
//! records when each observer first saw the awaited state.

use crate::control::protocol::{MemberRow, RingReport};

/// Whether a view lists exactly `count` members, all of them alive.
pub fn all_alive(rows: &[MemberRow], count: usize) -> bool {
    rows.len() == count && rows.iter().all(|r| r.state == "alive")
}

/// The incarnation a view gives `target`, if it lists it.
pub fn incarnation_of(rows: &[MemberRow], target: &str) -> Option<u64> {
    rows.iter().find(|r| r.id == target).map(|r| r.incarnation)
}

/// When (ms since the Unix epoch) this view saw `target` go down, if it has it down.
pub fn seen_down(rows: &[MemberRow], target: &str) -> Option<u64> {
    rows.iter()
        .find(|r| r.id == target && r.state == "down")
        .map(|r| r.since_ms)
}

/// When this view saw `target` alive again under an incarnation above `before`, if it
/// does: a restarted node rejoins under a new identity, never its old one.
pub fn seen_rejoined(rows: &[MemberRow], target: &str, before: u64) -> Option<u64> {
    rows.iter()
        .find(|r| r.id == target && r.state == "alive" && r.incarnation > before)
        .map(|r| r.since_ms)
}

/// When this ring was adopted and how many partitions moved, if it is not the ring of
/// epoch `before` and places partitions on `nodes` members.
pub fn ring_changed(ring: &RingReport, before: u64, nodes: usize) -> Option<(u64, u32)> {
    (ring.epoch != before && ring.nodes.len() == nodes)
        .then_some((ring.since_ms, ring.moved_last_change))
}

/// Milliseconds from `from_ms` to `at_ms` (both since the Unix epoch, same host clock),
/// at least 1: an event is never reported as instantaneous.
pub fn elapsed_ms(from_ms: u64, at_ms: u64) -> u64 {
    at_ms.saturating_sub(from_ms).max(1)
}

/// When each of several observers first saw an awaited state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Convergence<T> {
    seen: Vec<Option<T>>,
}

impl<T: Clone> Convergence<T> {
    /// Nobody has seen it yet, out of `observers`.
    pub fn new(observers: usize) -> Self {
        Convergence {
            seen: vec![None; observers],
        }
    }

    /// Records what observer `i` reports, keeping its first sighting.
    pub fn observe(&mut self, i: usize, sighting: Option<T>) {
        if self.seen[i].is_none() {
            self.seen[i] = sighting;
        }
    }

    /// Whether every observer has seen it.
    pub fn done(&self) -> bool {
        self.seen.iter().all(Option::is_some)
    }

    /// Whether each of `observers` has seen it (the others are not asked).
    pub fn done_among(&self, observers: &[usize]) -> bool {
        observers.iter().all(|&i| self.seen[i].is_some())
    }

    /// Each observer's first sighting.
    pub fn sightings(&self) -> impl Iterator<Item = (usize, &T)> {
        self.seen
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, state: &str, incarnation: u64, since_ms: u64) -> MemberRow {
        MemberRow {
            id: id.into(),
            address: String::new(),
            gossip_address: String::new(),
            state: state.into(),
            incarnation,
            since_ms,
            is_self: false,
            standing: "warm".into(),
        }
    }

    #[test]
    fn all_alive_needs_every_member_listed_and_alive() {
        let up = [row("a", "alive", 0, 1), row("b", "alive", 0, 1)];
        assert!(all_alive(&up, 2));
        assert!(!all_alive(&up, 3));
        assert!(!all_alive(
            &[row("a", "alive", 0, 1), row("b", "suspect", 0, 1)],
            2
        ));
    }

    #[test]
    fn a_suspect_is_not_down_and_a_down_member_says_since_when() {
        assert_eq!(seen_down(&[row("b", "suspect", 0, 5)], "b"), None);
        assert_eq!(seen_down(&[row("b", "down", 0, 5)], "b"), Some(5));
        assert_eq!(seen_down(&[row("c", "down", 0, 5)], "b"), None);
    }

    #[test]
    fn rejoining_needs_a_new_incarnation() {
        assert_eq!(seen_rejoined(&[row("b", "alive", 3, 9)], "b", 3), None);
        assert_eq!(seen_rejoined(&[row("b", "alive", 4, 9)], "b", 3), Some(9));
        assert_eq!(seen_rejoined(&[row("b", "down", 4, 9)], "b", 3), None);
        assert_eq!(incarnation_of(&[row("b", "alive", 4, 9)], "b"), Some(4));
    }

    #[test]
    fn a_ring_has_changed_when_its_epoch_differs_and_it_spans_the_members() {
        let ring = RingReport {
            epoch: 2,
            partitions: 8,
            moved_last_change: 3,
            since_ms: 70,
            balance: 1.0,
            nodes: Vec::new(),
            leaderless: 0,
            user: None,
        };
        assert_eq!(ring_changed(&ring, 2, 0), None);
        assert_eq!(ring_changed(&ring, 1, 0), Some((70, 3)));
        assert_eq!(ring_changed(&ring, 1, 2), None);
    }

    #[test]
    fn convergence_keeps_first_sightings_until_everyone_has_one() {
        let mut c = Convergence::new(2);
        c.observe(0, Some(10));
        c.observe(0, Some(20));
        c.observe(1, None);
        assert!(!c.done());
        assert!(c.done_among(&[0]));
        c.observe(1, Some(30));
        assert!(c.done());
        assert_eq!(c.sightings().collect::<Vec<_>>(), vec![(0, &10), (1, &30)]);
        assert_eq!(elapsed_ms(100, 90), 1);
        assert_eq!(elapsed_ms(100, 350), 250);
    }
}
