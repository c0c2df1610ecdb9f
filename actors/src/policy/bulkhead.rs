//! A bulkhead per resource (store writes, external calls, heavy compute) as a pure state
//! machine: at most `max_concurrent` tickets run at once, at most `max_queue` wait in
//! FIFO order, the rest are refused so the caller can answer `Overloaded` at once
//! instead of piling up work.
//!
//! Tickets are the caller's ids (a request id, say). Each one entered ends exactly one
//! way: it runs (at once, or later when [`Bulkhead::leave`] hands it out), it is
//! cancelled by its waiter, it expires in the queue (reported by
//! [`Bulkhead::poll_expired`]), or it is refused ([`Entry::Full`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A config field that does not make sense; no bulkhead was built from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BulkheadConfigError {
    /// A count or duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
}

/// Limits of one bulkhead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Tickets running at once; at least 1.
    pub max_concurrent: u32,
    /// Tickets waiting at once; 0 refuses whatever cannot run at once.
    pub max_queue: u32,
    /// Longest a ticket may wait before it expires; `None` waits as long as it takes
    /// (the caller's own deadline, e.g. the tier timeout, then cancels it).
    pub max_queue_wait: Option<Duration>,
}

impl BulkheadConfig {
    /// Store writes: 128 concurrent, 64 waiting.
    ///
    /// A store write here is a submission in the group commit, and the writes running at
    /// once share one flush: the running limit is also the largest group. the first design's 50
    /// (a figure for a store that flushes each write on its own) capped every flush at 50
    /// items and cost the node 13 % of its single-submit throughput (BENCHMARKS.md). The
    /// sum is also the window of jobs past the tier queues, and every job in it is ahead
    /// of a realtime arrival: at 456 (256 + 200) an overloaded node kept realtime's p50
    /// near 45 ms and its p99 over its 100 ms budget; at 192 its p99 is within budget at
    /// 3× the saturation rate, for 6–11 % less closed-loop peak (BENCHMARKS.md,
    /// "Overload on a real node").
    pub const fn store_writes() -> Self {
        BulkheadConfig {
            max_concurrent: 128,
            max_queue: 64,
            max_queue_wait: None,
        }
    }

    /// Calls to external services: 10 concurrent, 100 waiting.
    pub const fn external_calls() -> Self {
        BulkheadConfig {
            max_concurrent: 10,
            max_queue: 100,
            max_queue_wait: None,
        }
    }

    /// Heavy compute (validation, scoring): 5 concurrent, 100 waiting.
    pub const fn heavy_compute() -> Self {
        BulkheadConfig {
            max_concurrent: 5,
            max_queue: 100,
            max_queue_wait: None,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), BulkheadConfigError> {
        if self.max_concurrent == 0 {
            return Err(BulkheadConfigError::Zero {
                field: "max_concurrent",
            });
        }
        if self.max_queue_wait.is_some_and(|w| w.is_zero()) {
            return Err(BulkheadConfigError::Zero {
                field: "max_queue_wait",
            });
        }
        Ok(())
    }
}

impl Default for BulkheadConfig {
    /// The store-writes preset.
    fn default() -> Self {
        BulkheadConfig::store_writes()
    }
}

/// The answer to [`Bulkhead::try_enter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Run now; call [`Bulkhead::leave`] when done.
    Run,
    /// Wait: [`Bulkhead::leave`] will hand this ticket out when its turn comes.
    Queued {
        /// Tickets ahead of this one; 0 is next.
        position: usize,
    },
    /// Every run slot and queue slot is taken: answer `Overloaded`.
    Full,
}

/// One resource's bulkhead, over caller-chosen ticket ids `T` (unique while in use).
#[derive(Clone, Debug)]
pub struct Bulkhead<T> {
    config: BulkheadConfig,
    running: u32,
    /// Waiting tickets with the time they entered, oldest first.
    queue: VecDeque<(T, Instant)>,
    /// Tickets expired in the queue, not yet taken by `poll_expired`. They keep their
    /// queue slot until taken, so a driver that does not drain cannot grow memory.
    expired: VecDeque<T>,
}

impl<T: PartialEq> Bulkhead<T> {
    /// An empty bulkhead.
    pub fn new(config: BulkheadConfig) -> Result<Self, BulkheadConfigError> {
        config.validate()?;
        Ok(Bulkhead {
            config,
            running: 0,
            queue: VecDeque::new(),
            expired: VecDeque::new(),
        })
    }

    /// `ticket` asks to run at `now`.
    pub fn try_enter(&mut self, now: Instant, ticket: T) -> Entry {
        self.expire(now);
        if self.running < self.config.max_concurrent {
            // A free slot means nobody waits: leave() hands slots to waiters first.
            debug_assert!(self.queue.is_empty());
            self.running += 1;
            return Entry::Run;
        }
        if self.queue.len() + self.expired.len() >= self.config.max_queue as usize {
            return Entry::Full;
        }
        self.queue.push_back((ticket, now));
        Entry::Queued {
            position: self.queue.len() - 1,
        }
    }

    /// A running ticket finished at `now`. Returns the waiting ticket that runs in its
    /// place (skipping expired ones), or `None` if nobody waits and the slot is free.
    ///
    /// # Panics
    /// If nothing is running: the driver lost count, a bug.
    pub fn leave(&mut self, now: Instant) -> Option<T> {
        assert!(self.running > 0, "leave with no ticket running");
        self.expire(now);
        match self.queue.pop_front() {
            Some((next, _)) => Some(next),
            None => {
                self.running -= 1;
                None
            }
        }
    }

    /// A waiter gave up: removes `ticket` from the queue. Returns whether it was waiting
    /// (false if it already runs, expired or was never queued; nothing changes then).
    pub fn cancel(&mut self, ticket: &T) -> bool {
        match self.queue.iter().position(|(t, _)| t == ticket) {
            Some(i) => {
                self.queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// The next ticket that waited `max_queue_wait` or longer as of `now`; answer it
    /// `Overloaded`/`Timeout`. Drain after every input and at [`next_expiry`](Self::next_expiry).
    pub fn poll_expired(&mut self, now: Instant) -> Option<T> {
        self.expire(now);
        self.expired.pop_front()
    }

    /// When the oldest waiting ticket expires, if a maximum wait is set.
    pub fn next_expiry(&self) -> Option<Instant> {
        let wait = self.config.max_queue_wait?;
        self.queue.front().map(|&(_, entered)| entered + wait)
    }

    /// Tickets running.
    pub fn running(&self) -> u32 {
        self.running
    }

    /// Tickets waiting (not counting expired ones not yet polled).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The limits this bulkhead enforces.
    pub fn config(&self) -> &BulkheadConfig {
        &self.config
    }

    fn expire(&mut self, now: Instant) {
        let Some(wait) = self.config.max_queue_wait else {
            return;
        };
        // Oldest first, so expired tickets are always at the front.
        while let Some(&(_, entered)) = self.queue.front() {
            if now.saturating_duration_since(entered) < wait {
                break;
            }
            let (ticket, _) = self.queue.pop_front().expect("front exists");
            self.expired.push_back(ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn small(max_concurrent: u32, max_queue: u32, wait: Option<u64>) -> Bulkhead<u32> {
        Bulkhead::new(BulkheadConfig {
            max_concurrent,
            max_queue,
            max_queue_wait: wait.map(ms),
        })
        .unwrap()
    }

    #[test]
    fn presets_match_the_defaults() {
        let table = [
            (BulkheadConfig::store_writes(), 128, 64),
            (BulkheadConfig::external_calls(), 10, 100),
            (BulkheadConfig::heavy_compute(), 5, 100),
            (BulkheadConfig::default(), 128, 64),
        ];
        for (c, concurrent, queue) in table {
            assert_eq!((c.max_concurrent, c.max_queue), (concurrent, queue));
            assert_eq!(c.validate(), Ok(()));
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let table = [
            (
                BulkheadConfig {
                    max_concurrent: 0,
                    ..BulkheadConfig::default()
                },
                "max_concurrent must be greater than zero",
            ),
            (
                BulkheadConfig {
                    max_queue_wait: Some(Duration::ZERO),
                    ..BulkheadConfig::default()
                },
                "max_queue_wait must be greater than zero",
            ),
        ];
        for (config, message) in table {
            let err = Bulkhead::<u32>::new(config).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn runs_then_queues_then_refuses() {
        let t0 = Instant::now();
        let mut b = small(2, 2, None);
        let entries: Vec<_> = (0..5).map(|t| b.try_enter(t0, t)).collect();
        assert_eq!(
            entries,
            vec![
                Entry::Run,
                Entry::Run,
                Entry::Queued { position: 0 },
                Entry::Queued { position: 1 },
                Entry::Full,
            ]
        );
        assert_eq!((b.running(), b.queued()), (2, 2));
    }

    #[test]
    fn leaving_hands_the_slot_to_the_oldest_waiter() {
        let t0 = Instant::now();
        let mut b = small(1, 3, None);
        for t in 0..4 {
            b.try_enter(t0, t);
        }
        let handed: Vec<_> = (0..4).map(|_| b.leave(t0)).collect();
        assert_eq!(handed, vec![Some(1), Some(2), Some(3), None]);
        assert_eq!((b.running(), b.queued()), (0, 0));
    }

    #[test]
    fn a_cancelled_waiter_never_runs_and_frees_its_place() {
        let t0 = Instant::now();
        let mut b = small(1, 2, None);
        for t in 0..3 {
            b.try_enter(t0, t);
        }
        assert!(b.cancel(&1));
        assert!(!b.cancel(&1), "cancelled once");
        assert!(!b.cancel(&0), "0 runs: it leaves instead");
        assert_eq!(b.try_enter(t0, 3), Entry::Queued { position: 1 });
        assert_eq!(b.leave(t0), Some(2));
        assert_eq!(b.leave(t0), Some(3));
    }

    #[test]
    fn waiters_expire_in_order_and_never_run() {
        let t0 = Instant::now();
        let mut b = small(1, 3, Some(100));
        b.try_enter(t0, 0);
        b.try_enter(t0, 1);
        b.try_enter(t0 + ms(50), 2);
        assert_eq!(b.next_expiry(), Some(t0 + ms(100)));
        assert_eq!(b.poll_expired(t0 + ms(99)), None);
        assert_eq!(b.leave(t0 + ms(120)), Some(2), "1 expired at +100 ms");
        assert_eq!(b.poll_expired(t0 + ms(120)), Some(1));
        assert_eq!(b.poll_expired(t0 + ms(120)), None);
        assert_eq!(b.next_expiry(), None);
    }

    #[test]
    fn an_undrained_expired_ticket_keeps_its_queue_slot() {
        let t0 = Instant::now();
        let mut b = small(1, 1, Some(10));
        b.try_enter(t0, 0);
        b.try_enter(t0, 1);
        assert_eq!(b.try_enter(t0 + ms(20), 2), Entry::Full);
        assert_eq!(b.queued(), 0);
        assert_eq!(b.poll_expired(t0 + ms(20)), Some(1));
        assert_eq!(b.try_enter(t0 + ms(20), 2), Entry::Queued { position: 0 });
    }

    #[test]
    #[should_panic(expected = "leave with no ticket running")]
    fn a_spurious_leave_is_a_bug() {
        small(1, 1, None).leave(Instant::now());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Enter,
        Leave,
        Cancel(u32),
        Wait(u64),
        PollExpired,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            5 => Just(Step::Enter),
            3 => Just(Step::Leave),
            1 => any::<u32>().prop_map(Step::Cancel),
            2 => (0u64..60).prop_map(Step::Wait),
            1 => Just(Step::PollExpired),
        ]
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fate {
        Ran,
        Cancelled,
        Expired,
        Refused,
    }

    /// Tracks what became of each ticket, checking each step against the bulkhead.
    struct Model {
        wait: Option<Duration>,
        entered_at: HashMap<u32, Instant>,
        fates: HashMap<u32, Vec<Fate>>,
        last_dequeued: Option<u32>,
    }

    impl Model {
        fn fate(&mut self, ticket: u32, fate: Fate) {
            self.fates.entry(ticket).or_default().push(fate);
        }

        fn leave(&mut self, b: &mut Bulkhead<u32>, now: Instant) -> Result<(), TestCaseError> {
            if let Some(t) = b.leave(now) {
                prop_assert!(
                    self.last_dequeued.is_none_or(|l| l < t),
                    "{} ran after {:?}: not FIFO",
                    t,
                    self.last_dequeued
                );
                self.last_dequeued = Some(t);
                if let Some(w) = self.wait {
                    prop_assert!(now - self.entered_at[&t] < w, "ticket {} ran expired", t);
                }
                self.fate(t, Fate::Ran);
            }
            Ok(())
        }

        fn poll_expired(
            &mut self,
            b: &mut Bulkhead<u32>,
            now: Instant,
        ) -> Result<(), TestCaseError> {
            while let Some(t) = b.poll_expired(now) {
                let w = self.wait.expect("no expiry without a max wait");
                prop_assert!(now - self.entered_at[&t] >= w, "ticket {} expired early", t);
                self.fate(t, Fate::Expired);
            }
            Ok(())
        }
    }

    proptest! {
        #[test]
        fn every_ticket_meets_exactly_one_fate_in_fifo_order(
            max_concurrent in 1u32..5,
            max_queue in 0u32..6,
            wait in proptest::option::of(1u64..200),
            steps in proptest::collection::vec(step(), 0..300),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut b = small(max_concurrent, max_queue, wait);
            let mut m = Model {
                wait: wait.map(ms),
                entered_at: HashMap::new(),
                fates: HashMap::new(),
                last_dequeued: None,
            };
            let mut next = 0u32;
            for s in steps {
                match s {
                    Step::Enter => {
                        let t = next;
                        next += 1;
                        m.entered_at.insert(t, now);
                        match b.try_enter(now, t) {
                            Entry::Run => m.fate(t, Fate::Ran),
                            Entry::Queued { position } => {
                                prop_assert_eq!(position + 1, b.queued(), "joins at the back");
                            }
                            Entry::Full => {
                                prop_assert_eq!(b.running(), max_concurrent, "refused a free slot");
                                m.fate(t, Fate::Refused);
                            }
                        }
                    }
                    Step::Leave if b.running() > 0 => m.leave(&mut b, now)?,
                    Step::Cancel(i) if next > 0 => {
                        let t = i % next;
                        if b.cancel(&t) {
                            m.fate(t, Fate::Cancelled);
                        }
                    }
                    Step::Wait(d) => now += ms(d),
                    Step::PollExpired => m.poll_expired(&mut b, now)?,
                    _ => {}
                }
                prop_assert!(b.running() <= max_concurrent);
                prop_assert!(b.queued() <= max_queue as usize);
                prop_assert!(m.fates.values().all(|f| f.len() == 1), "{:?}", m.fates);
            }
            // Drain: let everything run to completion, then take what expired meanwhile.
            while b.running() > 0 {
                m.leave(&mut b, now)?;
            }
            m.poll_expired(&mut b, now)?;
            prop_assert_eq!(b.queued(), 0);
            for t in 0..next {
                prop_assert_eq!(m.fates.get(&t).map(Vec::len), Some(1), "ticket {}: {:?}", t, m.fates.get(&t));
            }
        }
    }
}
