//! The store gate: the store-writes bulkhead, group commit and the store's circuit
//! breaker as one state machine in front of the blocking store.
//!
//! ```text
//! handle_write(now, w, weight) ─► Run: joins the group commit   ┌─ Flush(batch): persist it,
//!                                 Wait: holds a bulkhead ticket  │   answer, handle_flushed()
//!                                 Full: answer Overloaded        ├─ Refuse(batch): breaker open,
//! handle_barrier(w) ─────────────────────────────────────────────┤   answer CircuitOpen
//! handle_flushed(now, durable) ─► slots go to waiters ─► poll(now)
//!                                                                └─ Expired(w): waited too long
//! ```
//!
//! At most `max_concurrent` writes are in the group commit (the batch being flushed and
//! the next one), at most `max_queue` wait for a slot, and the rest are refused at once.
//! Each flush is one call through the breaker: a failed flush counts against it, and an
//! open breaker answers a whole batch `CircuitOpen` without touching the disk. Barriers
//! (a `flush` request) ride in the group commit without a slot.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Instant;

use crate::group_commit::GroupCommit;
use crate::policy::breaker::{
    Admission, Breaker, BreakerConfig, BreakerConfigError, BreakerState, Permit, Transition,
};
use crate::policy::bulkhead::{Bulkhead, BulkheadConfig, BulkheadConfigError, Entry};

/// Why a store gate could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StoreGateError {
    /// The bulkhead's config is invalid.
    #[error(transparent)]
    Bulkhead(#[from] BulkheadConfigError),
    /// The breaker's config is invalid.
    #[error(transparent)]
    Breaker(#[from] BreakerConfigError),
}

/// What happened to a write handed to the gate.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted<W> {
    /// It joined the group commit (or waits for a slot, in order).
    Accepted,
    /// Every slot and queue place is taken: answer it `Overloaded`.
    Full(W),
}

/// What the driver does next.
#[derive(Debug, PartialEq)]
pub enum GateStep<W> {
    /// Persist these writes as one flush, answer each, then call `handle_flushed`.
    Flush(Vec<W>),
    /// The breaker is open: answer these `CircuitOpen` (the gate already moved on).
    Refuse(Vec<W>),
    /// This write waited for a slot longer than the bulkhead allows: answer it
    /// `Overloaded`.
    Expired(W),
}

/// A waiter in the group commit: a write holding a bulkhead slot, or a barrier.
struct Slot<W> {
    waiter: W,
    holds_slot: bool,
}

/// The gate over waiters of type `W`.
pub struct StoreGate<W> {
    writes: Bulkhead<u64>,
    /// Writes waiting for a slot, by ticket (the bulkhead keeps their order).
    waiting: HashMap<u64, (W, usize)>,
    next_ticket: u64,
    commit: GroupCommit<Slot<W>>,
    breaker: Breaker,
    /// The flush in flight: its breaker permit, when it started, and its slots.
    in_flight: Option<(Permit, Instant, usize)>,
}

impl<W> StoreGate<W> {
    /// An empty gate at `now`: flushes of at most `max_batch` items.
    pub fn new(
        bulkhead: BulkheadConfig,
        breaker: BreakerConfig,
        max_batch: NonZeroUsize,
        now: Instant,
    ) -> Result<Self, StoreGateError> {
        Ok(StoreGate {
            writes: Bulkhead::new(bulkhead)?,
            waiting: HashMap::new(),
            next_ticket: 0,
            commit: GroupCommit::new(max_batch),
            breaker: Breaker::new(breaker, now)?,
            in_flight: None,
        })
    }

    /// A write of `weight` items asks for a slot at `now`.
    pub fn handle_write(&mut self, now: Instant, waiter: W, weight: usize) -> Admitted<W> {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        match self.writes.try_enter(now, ticket) {
            Entry::Run => {
                self.commit.handle_write(
                    Slot {
                        waiter,
                        holds_slot: true,
                    },
                    weight,
                );
                Admitted::Accepted
            }
            Entry::Queued { .. } => {
                self.waiting.insert(ticket, (waiter, weight));
                Admitted::Accepted
            }
            Entry::Full => Admitted::Full(waiter),
        }
    }

    /// A barrier: answered once everything queued before it is durable.
    pub fn handle_barrier(&mut self, waiter: W) {
        self.commit.handle_write(
            Slot {
                waiter,
                holds_slot: false,
            },
            0,
        );
    }

    /// The flush in flight finished at `now`; `durable`: it reached the disk.
    ///
    /// # Panics
    /// If no flush was in flight: the driver lost track of its flushes.
    pub fn handle_flushed(&mut self, now: Instant, durable: bool) {
        let (permit, started, slots) = self
            .in_flight
            .take()
            .expect("flush completed with no flush in flight");
        self.commit.handle_flushed();
        self.release(slots, now);
        if durable {
            self.breaker
                .on_success(now, permit, now.saturating_duration_since(started));
        } else {
            self.breaker.on_failure(now, permit);
        }
    }

    /// The next thing to do at `now`; call until `None` (and after every input).
    pub fn poll(&mut self, now: Instant) -> Option<GateStep<W>> {
        if let Some(ticket) = self.writes.poll_expired(now)
            && let Some((waiter, _)) = self.waiting.remove(&ticket)
        {
            return Some(GateStep::Expired(waiter));
        }
        let batch = self.commit.poll_batch()?;
        let slots = batch.iter().filter(|s| s.holds_slot).count();
        let waiters = batch.into_iter().map(|s| s.waiter).collect();
        match self.breaker.try_acquire(now) {
            Admission::Allowed(permit) => {
                self.in_flight = Some((permit, now, slots));
                Some(GateStep::Flush(waiters))
            }
            Admission::Rejected { .. } => {
                // The store is considered down: the batch is answered at once instead
                // of queueing, and its slots go to the next writers.
                self.commit.handle_flushed();
                self.release(slots, now);
                Some(GateStep::Refuse(waiters))
            }
        }
    }

    /// Whether a flush is in flight.
    pub fn flushing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Moves timed breaker changes (open → half-open) that are due at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.breaker.tick(now);
    }

    /// When the driver should next call [`StoreGate::tick`] and [`StoreGate::poll`]:
    /// a breaker deadline or a waiter's expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.breaker.next_deadline(), self.writes.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Opens the breaker until [`StoreGate::reset`].
    pub fn force_open(&mut self) {
        self.breaker.force_open();
    }

    /// Gives the breaker `config` from `now` on, keeping its state; an invalid `config`
    /// changes nothing.
    pub fn reconfigure_breaker(
        &mut self,
        config: BreakerConfig,
        now: Instant,
    ) -> Result<(), BreakerConfigError> {
        self.breaker.reconfigure(config, now)
    }

    /// Closes the breaker and forgets its history.
    pub fn reset(&mut self) {
        self.breaker.reset();
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The breaker's next state change to report, if any.
    pub fn poll_transition(&mut self) -> Option<Transition> {
        self.breaker.poll_transition()
    }

    /// Writes holding a slot, and writes waiting for one.
    pub fn occupancy(&self) -> (u32, usize) {
        (self.writes.running(), self.writes.queued())
    }

    /// Items queued for the next flush.
    pub fn queued_items(&self) -> usize {
        self.commit.queued_items()
    }

    /// Every waiter not in a flush, for a driver that stops (answer each
    /// `Unavailable`); the gate is empty afterwards except for the flush in flight.
    pub fn drain(&mut self) -> Vec<W> {
        let mut out: Vec<W> = self.commit.drain().map(|s| s.waiter).collect();
        let mut waiting: Vec<(u64, (W, usize))> = self.waiting.drain().collect();
        waiting.sort_by_key(|(ticket, _)| *ticket);
        out.extend(waiting.into_iter().map(|(_, (w, _))| w));
        out
    }

    /// `count` slots are free at `now`: they go to waiting writes, in order.
    fn release(&mut self, count: usize, now: Instant) {
        for _ in 0..count {
            if let Some(next) = self.writes.leave(now)
                && let Some((waiter, weight)) = self.waiting.remove(&next)
            {
                self.commit.handle_write(
                    Slot {
                        waiter,
                        holds_slot: true,
                    },
                    weight,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn gate(max_concurrent: u32, max_queue: u32) -> StoreGate<u32> {
        StoreGate::new(
            BulkheadConfig {
                max_concurrent,
                max_queue,
                max_queue_wait: None,
            },
            BreakerConfig::store(),
            NonZeroUsize::new(4096).unwrap(),
            Instant::now(),
        )
        .unwrap()
    }

    #[test]
    fn writers_share_a_flush_and_a_full_gate_refuses_at_once() {
        let mut g = gate(2, 1);
        let now = Instant::now();
        assert_eq!(g.handle_write(now, 1, 1), Admitted::Accepted);
        assert_eq!(g.poll(now), Some(GateStep::Flush(vec![1])));
        assert_eq!(g.handle_write(now, 2, 1), Admitted::Accepted);
        assert_eq!(g.handle_write(now, 3, 1), Admitted::Accepted, "queued");
        assert_eq!(g.handle_write(now, 4, 1), Admitted::Full(4));
        assert_eq!(g.poll(now), None, "one flush at a time");
        g.handle_flushed(now, true);
        // 1's slot went to 3, which shares the next flush with 2.
        assert_eq!(g.poll(now), Some(GateStep::Flush(vec![2, 3])));
        assert_eq!(g.occupancy(), (2, 0));
    }

    #[test]
    fn failed_flushes_open_the_breaker_and_then_batches_are_refused_without_the_disk() {
        let mut g = gate(8, 8);
        let now = Instant::now();
        let streak = BreakerConfig::store().failure_streak;
        for n in 0..streak {
            g.handle_write(now, n, 1);
            assert!(matches!(g.poll(now), Some(GateStep::Flush(_))));
            g.handle_flushed(now, false);
        }
        assert_eq!(g.breaker_state(), BreakerState::Open);
        g.handle_write(now, 99, 1);
        g.handle_barrier(100);
        assert_eq!(g.poll(now), Some(GateStep::Refuse(vec![99, 100])));
        assert!(!g.flushing());
        assert_eq!(g.occupancy(), (0, 0), "the refused write's slot is free");
        assert!(
            g.next_deadline().is_some(),
            "a half-open probe is scheduled"
        );
    }

    #[test]
    fn a_waiter_that_waits_too_long_is_handed_back() {
        let mut g: StoreGate<u32> = StoreGate::new(
            BulkheadConfig {
                max_concurrent: 1,
                max_queue: 4,
                max_queue_wait: Some(Duration::from_millis(10)),
            },
            BreakerConfig::store(),
            NonZeroUsize::new(16).unwrap(),
            Instant::now(),
        )
        .unwrap();
        let now = Instant::now();
        g.handle_write(now, 1, 1);
        assert!(matches!(g.poll(now), Some(GateStep::Flush(_))));
        g.handle_write(now, 2, 1);
        let later = now + Duration::from_millis(20);
        assert_eq!(g.poll(later), Some(GateStep::Expired(2)));
        g.handle_flushed(later, true);
        assert_eq!(g.poll(later), None);
        assert_eq!(g.occupancy(), (0, 0));
    }

    #[derive(Clone, Debug)]
    enum Event {
        Write(u8),
        Barrier,
        Flushed(bool),
        Advance(u16),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            5 => (1u8..5).prop_map(Event::Write),
            1 => Just(Event::Barrier),
            3 => any::<bool>().prop_map(Event::Flushed),
            1 => (0u16..40_000).prop_map(Event::Advance),
        ]
    }

    proptest! {
        /// Under any events: slots in use never exceed the bulkhead, one flush at a
        /// time, and every waiter comes out exactly once (flushed, refused, expired,
        /// full or drained).
        #[test]
        fn the_gate_keeps_its_promises(
            events in proptest::collection::vec(event(), 1..300),
            max_concurrent in 1u32..6,
            max_queue in 0u32..6,
        ) {
            let mut g = gate(max_concurrent, max_queue);
            let mut now = Instant::now();
            let mut next = 0u32;
            let mut seen = BTreeSet::new();
            for e in events {
                match e {
                    Event::Write(weight) => {
                        if let Admitted::Full(n) = g.handle_write(now, next, usize::from(weight)) {
                            prop_assert!(seen.insert(n));
                        }
                        next += 1;
                    }
                    Event::Barrier => {
                        g.handle_barrier(next);
                        next += 1;
                    }
                    Event::Flushed(durable) => {
                        if g.flushing() {
                            g.handle_flushed(now, durable);
                        }
                    }
                    Event::Advance(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        g.tick(now);
                    }
                }
                while let Some(step) = g.poll(now) {
                    let flush = matches!(step, GateStep::Flush(_));
                    match step {
                        GateStep::Flush(w) | GateStep::Refuse(w) => {
                            for n in w {
                                prop_assert!(seen.insert(n));
                            }
                        }
                        GateStep::Expired(n) => prop_assert!(seen.insert(n)),
                    }
                    if flush {
                        break;
                    }
                }
                let (running, _) = g.occupancy();
                prop_assert!(running <= max_concurrent);
            }
            if g.flushing() {
                g.handle_flushed(now, true);
            }
            for n in g.drain() {
                prop_assert!(seen.insert(n));
            }
            prop_assert_eq!(seen.len(), next as usize);
        }
    }
}
