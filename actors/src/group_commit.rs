//! Group commit as a pure state machine: which writes share the next flush.
//!
//! Writes queue while a flush is in flight; when it completes, everything queued (up to
//! a cap) becomes the next batch. At most one batch is in flight, so concurrent writers
//! share one flush instead of each paying for their own. The driver (the store actor)
//! feeds events in and pulls batches out:
//!
//! ```text
//! handle_write(w) ─┐                         ┌─ persist the batch (blocking)
//!                  ├─► poll_batch() ─► batch ─┤
//! handle_flushed() ┘                         └─ reply to its writers, then handle_flushed()
//! ```
//!
//! No IO, no clock, no tokio: the policy is tested on its own.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

/// The default cap on items per batch.
pub const DEFAULT_MAX_BATCH_ITEMS: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

/// The group commit policy over writes of type `W`.
#[derive(Debug)]
pub struct GroupCommit<W> {
    /// Queued writes with their weight (items they carry), oldest first.
    queue: VecDeque<(W, usize)>,
    /// Total weight queued.
    queued_weight: usize,
    in_flight: bool,
    max_batch: NonZeroUsize,
}

impl<W> GroupCommit<W> {
    /// A policy whose batches carry at most `max_batch` items (a single write heavier
    /// than that still goes out, alone: a writer's items are never split).
    pub fn new(max_batch: NonZeroUsize) -> Self {
        GroupCommit {
            queue: VecDeque::new(),
            queued_weight: 0,
            in_flight: false,
            max_batch,
        }
    }

    /// A write of `weight` items arrived; it joins the queue.
    pub fn handle_write(&mut self, write: W, weight: usize) {
        self.queued_weight += weight;
        self.queue.push_back((write, weight));
    }

    /// The in-flight batch is durable (or failed, and its writers were answered).
    ///
    /// # Panics
    /// If no batch was in flight: the driver has lost track of its flushes.
    pub fn handle_flushed(&mut self) {
        assert!(self.in_flight, "flush completed with no batch in flight");
        self.in_flight = false;
    }

    /// The next batch to persist, if none is in flight and writes are queued. The batch
    /// is then in flight until [`GroupCommit::handle_flushed`].
    pub fn poll_batch(&mut self) -> Option<Vec<W>> {
        if self.in_flight || self.queue.is_empty() {
            return None;
        }
        let mut batch = Vec::new();
        let mut weight = 0usize;
        while let Some((_, w)) = self.queue.front() {
            if !batch.is_empty() && weight + w > self.max_batch.get() {
                break;
            }
            let (write, w) = self.queue.pop_front().expect("front exists");
            weight += w;
            batch.push(write);
        }
        self.queued_weight -= weight;
        self.in_flight = true;
        Some(batch)
    }

    /// Whether a batch is being persisted.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Number of writes waiting for a flush.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Items carried by the writes waiting for a flush.
    pub fn queued_items(&self) -> usize {
        self.queued_weight
    }

    /// Takes every queued write (for failing them when the driver stops).
    pub fn drain(&mut self) -> impl Iterator<Item = W> + '_ {
        self.queued_weight = 0;
        self.queue.drain(..).map(|(w, _)| w)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cap(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn an_idle_policy_flushes_the_first_write_at_once() {
        let mut gc = GroupCommit::new(cap(10));
        assert_eq!(gc.poll_batch(), None::<Vec<u32>>);
        gc.handle_write(1, 1);
        assert_eq!(gc.poll_batch(), Some(vec![1]));
        assert!(gc.in_flight());
    }

    #[test]
    fn writes_during_a_flush_share_the_next_one() {
        let mut gc = GroupCommit::new(cap(10));
        gc.handle_write(1, 1);
        assert_eq!(gc.poll_batch(), Some(vec![1]));
        gc.handle_write(2, 1);
        gc.handle_write(3, 2);
        assert_eq!(gc.poll_batch(), None, "one flush in flight at most");
        assert_eq!((gc.queued(), gc.queued_items()), (2, 3));
        gc.handle_flushed();
        assert_eq!(gc.poll_batch(), Some(vec![2, 3]));
        gc.handle_flushed();
        assert_eq!(gc.poll_batch(), None);
        assert!(!gc.in_flight());
    }

    #[test]
    fn batches_stop_at_the_cap_and_the_rest_waits() {
        let mut gc = GroupCommit::new(cap(4));
        for w in 0..5 {
            gc.handle_write(w, 2);
        }
        assert_eq!(gc.poll_batch(), Some(vec![0, 1]));
        gc.handle_flushed();
        assert_eq!(gc.poll_batch(), Some(vec![2, 3]));
        gc.handle_flushed();
        assert_eq!(gc.poll_batch(), Some(vec![4]));
    }

    #[test]
    fn a_write_heavier_than_the_cap_goes_alone() {
        let mut gc = GroupCommit::new(cap(4));
        gc.handle_write('a', 9);
        gc.handle_write('b', 1);
        assert_eq!(gc.poll_batch(), Some(vec!['a']));
        gc.handle_flushed();
        assert_eq!(gc.poll_batch(), Some(vec!['b']));
    }

    #[test]
    fn zero_weight_barriers_ride_with_the_writes_before_them() {
        let mut gc = GroupCommit::new(cap(2));
        gc.handle_write("w1", 1);
        gc.handle_write("w2", 1);
        gc.handle_write("barrier", 0);
        assert_eq!(gc.poll_batch(), Some(vec!["w1", "w2", "barrier"]));
    }

    #[test]
    #[should_panic(expected = "no batch in flight")]
    fn a_spurious_flushed_is_a_bug() {
        GroupCommit::<u8>::new(cap(1)).handle_flushed();
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write(usize),
        Flushed,
        Poll,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0usize..6).prop_map(Step::Write),
            1 => Just(Step::Flushed),
            2 => Just(Step::Poll),
        ]
    }

    proptest! {
        #[test]
        fn every_write_is_in_exactly_one_batch_in_order(
            max in 1usize..8,
            steps in proptest::collection::vec(step(), 0..200),
        ) {
            let mut gc = GroupCommit::new(cap(max));
            let mut next_id = 0u32;
            let mut weights = std::collections::HashMap::new();
            let mut flushed = Vec::new();
            for s in steps {
                match s {
                    Step::Write(w) => {
                        weights.insert(next_id, w);
                        gc.handle_write(next_id, w);
                        next_id += 1;
                    }
                    Step::Flushed => {
                        if gc.in_flight() {
                            gc.handle_flushed();
                        }
                    }
                    Step::Poll => {
                        let was_in_flight = gc.in_flight();
                        if let Some(batch) = gc.poll_batch() {
                            prop_assert!(!was_in_flight, "two batches in flight");
                            prop_assert!(!batch.is_empty());
                            let weight: usize = batch.iter().map(|id| weights[id]).sum();
                            prop_assert!(weight <= max || batch.len() == 1,
                                "batch of {} items over cap {}", weight, max);
                            flushed.extend(batch);
                        }
                    }
                }
            }
            // Drain what is left.
            loop {
                if gc.in_flight() {
                    gc.handle_flushed();
                }
                match gc.poll_batch() {
                    Some(batch) => flushed.extend(batch),
                    None => break,
                }
            }
            prop_assert_eq!(flushed, (0..next_id).collect::<Vec<_>>());
            prop_assert_eq!(gc.queued_items(), 0);
        }
    }
}
