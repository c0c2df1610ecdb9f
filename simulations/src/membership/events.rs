//! The event queue: what happens next in simulated time.
//!
//! Events are ordered by `(time, sequence)`; the sequence number is the order of
//! scheduling, so two events due at the same instant run in the order they were
//! scheduled and a run never depends on the heap's tie-breaking.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Simulated time in microseconds since the start of the run.
pub type Micros = u64;

/// Microseconds in a millisecond.
pub const MS: Micros = 1_000;
/// Microseconds in a second.
pub const SEC: Micros = 1_000_000;

/// One scheduled event and its place in the order.
struct Scheduled<E> {
    at: Micros,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    // Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A min-queue of events keyed by simulated time, first scheduled first out on ties.
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    next_seq: u64,
    now: Micros,
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
            now: 0,
        }
    }

    /// Schedules `event` at absolute time `at` (never earlier than now).
    pub fn schedule_at(&mut self, at: Micros, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Scheduled {
            at: at.max(self.now),
            seq,
            event,
        });
    }

    /// Schedules `event` `delay` microseconds from now.
    pub fn schedule_in(&mut self, delay: Micros, event: E) {
        self.schedule_at(self.now.saturating_add(delay), event);
    }

    /// Removes the earliest event due at or before `until` and advances the clock to it.
    pub fn pop_until(&mut self, until: Micros) -> Option<(Micros, E)> {
        if self.heap.peek()?.at > until {
            return None;
        }
        let Scheduled { at, event, .. } = self.heap.pop()?;
        self.now = at;
        Some((at, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_ties_in_scheduling_order() {
        let mut queue = EventQueue::new();
        queue.schedule_at(5, "c");
        queue.schedule_at(1, "a");
        queue.schedule_at(5, "d");
        queue.schedule_at(2, "b");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop_until(10)).collect();
        assert_eq!(order, [(1, "a"), (2, "b"), (5, "c"), (5, "d")]);
    }

    #[test]
    fn events_after_the_horizon_stay_queued() {
        let mut queue = EventQueue::new();
        queue.schedule_at(20, ());
        assert!(queue.pop_until(10).is_none());
        assert_eq!(queue.pop_until(20), Some((20, ())));
    }

    #[test]
    fn nothing_is_scheduled_in_the_past() {
        let mut queue = EventQueue::new();
        queue.schedule_at(10, 1);
        queue.pop_until(10);
        queue.schedule_at(3, 2);
        assert_eq!(queue.pop_until(100), Some((10, 2)));
    }
}
