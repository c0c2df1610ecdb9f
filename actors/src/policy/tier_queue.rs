//! The tier scheduler: four bounded queues, one per [`Tier`], served by weighted fair
//! scheduling, with a deadline on every entry so that work whose caller has already given
//! up is answered `Timeout` instead of processed.
//!
//! Scheduling is stride scheduling: each tier has a `pass` that advances by
//! `STRIDE_ONE / weight` every time the tier is served, and [`TierScheduler::pop`] serves
//! the non-empty tier with the smallest pass. A tier that becomes non-empty starts at the
//! current virtual time, so idleness earns no burst of credit. This bounds how long any
//! non-empty tier waits (see [`TierScheduler::max_wait_pops`]): realtime waits at most
//! 3 pops with the default weights, and batch still gets 1 pop in 1111 while every other
//! tier is busy.
//!
//! Expiry: an entry is expired once `now >= deadline` (`deadline` = enqueue time + the
//! tier's `latency_budget`: nothing waits in a queue past what its tier promises). [`TierScheduler::pop`] never hands out an expired entry as
//! [`Popped::Ready`]: it returns it as [`Popped::Expired`] first, without spending the
//! tier's share. Because workers only pop when they are free, the driver also arms a
//! timer at [`TierScheduler::next_deadline`] and calls [`TierScheduler::drain_expired`]
//! so that waiting callers get their `Timeout` on time even when every worker is busy.
//!
//! Admission by degradation level is not decided here: the driver asks the degradation
//! policy before it pushes.

use std::collections::VecDeque;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use chorus_protocol::Tier;
use thiserror::Error;

/// Entries per tier queue unless configured (our choice): big
/// enough to absorb a burst, small enough that a full queue still drains within the
/// realtime timeout at the store's measured throughput (~35k items/s).
pub const DEFAULT_TIER_CAPACITY: usize = 1024;
/// Largest allowed per-tier capacity: bounds memory whatever the config says.
pub const MAX_TIER_CAPACITY: usize = 1 << 20;
/// Longest allowed tier timeout; also keeps `now + timeout` far from `Instant` overflow.
pub const MAX_TIER_TIMEOUT: Duration = Duration::from_secs(3600);
/// Smallest retry hint handed out, so a client never busy-loops on a zero hint.
pub const MIN_RETRY_AFTER: Duration = Duration::from_millis(1);

/// The pass increment of a tier of weight 1; `STRIDE_ONE / weight` is at least 1 for any
/// `u32` weight, and a `u128` pass cannot overflow in the life of a process.
const STRIDE_ONE: u128 = 1 << 32;

/// The service parameters of one tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierParams {
    /// End-to-end latency the tier promises (p99 target): an entry still queued when
    /// it has run out is answered `Timeout`, never processed late.
    pub latency_budget: Duration,
    /// The request's overall deadline as clients apply it (retries included); at least
    /// `latency_budget`, at most [`MAX_TIER_TIMEOUT`]. The queue itself holds an entry
    /// no longer than `latency_budget`.
    pub timeout: Duration,
    /// How many times a client should retry a failed request of this tier; config data
    /// for the client side, not used by the scheduler.
    pub retries: u32,
    /// Relative share of pops while every tier is busy (stride scheduling).
    pub weight: NonZeroU32,
    /// Most entries queued in this tier, 1..=[`MAX_TIER_CAPACITY`]; one more is
    /// [`Rejected`].
    pub capacity: NonZeroUsize,
}

impl TierParams {
    /// The defaults for `tier` (latency, timeout, retries, weight), with
    /// [`DEFAULT_TIER_CAPACITY`].
    pub fn default_for(tier: Tier) -> Self {
        let (budget_ms, timeout_ms, retries, weight) = match tier {
            Tier::Realtime => (100, 200, 0, 1000),
            Tier::Priority => (1_000, 2_000, 1, 100),
            Tier::Standard => (10_000, 20_000, 3, 10),
            Tier::Batch => (60_000, 300_000, 5, 1),
        };
        TierParams {
            latency_budget: Duration::from_millis(budget_ms),
            timeout: Duration::from_millis(timeout_ms),
            retries,
            weight: NonZeroU32::new(weight).expect("default weights are non-zero"),
            capacity: NonZeroUsize::new(DEFAULT_TIER_CAPACITY)
                .expect("default capacity is non-zero"),
        }
    }
}

/// The parameters of all four tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierQueueConfig {
    /// The realtime tier (default: 100 ms budget, 200 ms timeout, 0 retries, weight 1000).
    pub realtime: TierParams,
    /// The priority tier (default: 1 s budget, 2 s timeout, 1 retry, weight 100).
    pub priority: TierParams,
    /// The standard tier (default: 10 s budget, 20 s timeout, 3 retries, weight 10).
    pub standard: TierParams,
    /// The batch tier (default: 60 s budget, 300 s timeout, 5 retries, weight 1).
    pub batch: TierParams,
}

impl Default for TierQueueConfig {
    /// The tier defaults: latency budget, timeout, retries and weight per tier.
    fn default() -> Self {
        TierQueueConfig {
            realtime: TierParams::default_for(Tier::Realtime),
            priority: TierParams::default_for(Tier::Priority),
            standard: TierParams::default_for(Tier::Standard),
            batch: TierParams::default_for(Tier::Batch),
        }
    }
}

impl TierQueueConfig {
    /// The parameters of `tier`.
    pub fn tier(&self, tier: Tier) -> &TierParams {
        match tier {
            Tier::Realtime => &self.realtime,
            Tier::Priority => &self.priority,
            Tier::Standard => &self.standard,
            Tier::Batch => &self.batch,
        }
    }

    /// Checks the limits the types cannot express; run once at start.
    pub fn validate(&self) -> Result<(), TierQueueConfigError> {
        for tier in Tier::ALL {
            let p = self.tier(tier);
            if p.latency_budget.is_zero() {
                return Err(TierQueueConfigError::ZeroLatencyBudget { tier });
            }
            if p.timeout < p.latency_budget || p.timeout > MAX_TIER_TIMEOUT {
                return Err(TierQueueConfigError::TimeoutOutOfRange {
                    tier,
                    timeout: p.timeout,
                    latency_budget: p.latency_budget,
                });
            }
            if p.capacity.get() > MAX_TIER_CAPACITY {
                return Err(TierQueueConfigError::CapacityTooLarge {
                    tier,
                    capacity: p.capacity.get(),
                });
            }
        }
        Ok(())
    }
}

/// A tier queue config that must not be used; nothing was built from it.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum TierQueueConfigError {
    /// A tier promises no time at all.
    #[error("tier_queue.{}.latency_budget must be positive", .tier.as_str())]
    ZeroLatencyBudget {
        /// The offending tier.
        tier: Tier,
    },
    /// A tier's timeout is shorter than its latency budget or longer than
    /// [`MAX_TIER_TIMEOUT`].
    #[error(
        "tier_queue.{}.timeout is {timeout:?}; it must be between latency_budget \
         ({latency_budget:?}) and {MAX_TIER_TIMEOUT:?}",
        .tier.as_str()
    )]
    TimeoutOutOfRange {
        /// The offending tier.
        tier: Tier,
        /// Its configured timeout.
        timeout: Duration,
        /// Its configured latency budget.
        latency_budget: Duration,
    },
    /// A tier's capacity exceeds [`MAX_TIER_CAPACITY`].
    #[error("tier_queue.{}.capacity is {capacity}; at most {MAX_TIER_CAPACITY}", .tier.as_str())]
    CapacityTooLarge {
        /// The offending tier.
        tier: Tier,
        /// Its configured capacity.
        capacity: usize,
    },
}

/// A push refused because the tier's queue is full; nothing was queued and the item is
/// handed back so the caller can answer `Overloaded`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("the {} queue is full; retry after {retry_after:?}", .tier.as_str())]
pub struct Rejected<T> {
    /// The full tier.
    pub tier: Tier,
    /// When a slot is sure to have freed: the oldest entry of the tier has been served or
    /// has expired by then. At least [`MIN_RETRY_AFTER`].
    pub retry_after: Duration,
    /// The refused item, returned to the caller.
    pub item: T,
}

/// What [`TierScheduler::pop`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Popped<T> {
    /// Process this item; it must be finished by `deadline`.
    Ready {
        /// The tier it was queued in.
        tier: Tier,
        /// The item.
        item: T,
        /// When its timeout runs out; always after the `now` it was popped at.
        deadline: Instant,
    },
    /// Its deadline passed while it waited: answer `Timeout`, do not process it.
    Expired {
        /// The tier it was queued in.
        tier: Tier,
        /// The item.
        item: T,
    },
}

/// One queued item and the instant it must be answered by.
#[derive(Debug)]
struct Entry<T> {
    deadline: Instant,
    item: T,
}

impl<T> Entry<T> {
    fn is_expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

/// One tier's queue and its stride-scheduling state.
#[derive(Debug)]
struct Lane<T> {
    queue: VecDeque<Entry<T>>,
    capacity: usize,
    budget: Duration,
    stride: u128,
    /// Virtual time at which this tier is next due; the smallest pass is served next.
    pass: u128,
}

/// Four bounded, deadline-aware queues served by weighted fair (stride) scheduling.
#[derive(Debug)]
pub struct TierScheduler<T> {
    config: TierQueueConfig,
    /// Indexed by `Tier as usize`, most urgent first.
    lanes: [Lane<T>; 4],
    /// The pass of the last tier served; a tier that becomes non-empty starts here so it
    /// cannot bank credit while idle.
    virtual_time: u128,
}

impl<T> TierScheduler<T> {
    /// Empty queues for a validated `config`.
    pub fn new(config: TierQueueConfig) -> Result<Self, TierQueueConfigError> {
        config.validate()?;
        let lanes = std::array::from_fn(|i| {
            let p = config.tier(Tier::ALL[i]);
            Lane {
                queue: VecDeque::new(),
                capacity: p.capacity.get(),
                budget: p.latency_budget,
                stride: STRIDE_ONE / u128::from(p.weight.get()),
                pass: 0,
            }
        });
        Ok(TierScheduler {
            config,
            lanes,
            virtual_time: 0,
        })
    }

    /// The config it runs with.
    pub fn config(&self) -> &TierQueueConfig {
        &self.config
    }

    /// Takes `config` from now on: new weights change the shares of the pops to come,
    /// new budgets the deadlines of the entries to come; queued entries keep theirs. A
    /// tier holding more than its new capacity refuses pushes until it has drained
    /// below it. An invalid `config` changes nothing.
    pub fn reconfigure(&mut self, config: TierQueueConfig) -> Result<(), TierQueueConfigError> {
        config.validate()?;
        for (lane, tier) in self.lanes.iter_mut().zip(Tier::ALL) {
            let p = config.tier(tier);
            lane.capacity = p.capacity.get();
            lane.budget = p.latency_budget;
            lane.stride = STRIDE_ONE / u128::from(p.weight.get());
        }
        self.config = config;
        Ok(())
    }

    /// Queue `item` in `tier` at `now`, with deadline `now + latency_budget`; a full tier
    /// rejects it (the other tiers' room is not borrowed: each tier is a bulkhead).
    pub fn push(&mut self, now: Instant, tier: Tier, item: T) -> Result<(), Rejected<T>> {
        let deadline = now + self.lanes[tier as usize].budget;
        self.push_until(now, tier, item, deadline)
    }

    /// Like [`TierScheduler::push`] with an earlier `deadline` (e.g. leaving time for
    /// the work after the queue). The deadline is kept between the tier's previous
    /// entry's and `now + latency_budget`, so deadlines stay in queue order and no
    /// entry waits past its budget.
    pub fn push_until(
        &mut self,
        now: Instant,
        tier: Tier,
        item: T,
        deadline: Instant,
    ) -> Result<(), Rejected<T>> {
        let virtual_time = self.virtual_time;
        let lane = &mut self.lanes[tier as usize];
        if lane.queue.len() >= lane.capacity {
            let retry_after = lane
                .queue
                .front()
                .map_or(MIN_RETRY_AFTER, |e| {
                    e.deadline.saturating_duration_since(now)
                })
                .max(MIN_RETRY_AFTER);
            return Err(Rejected {
                tier,
                retry_after,
                item,
            });
        }
        if lane.queue.is_empty() {
            lane.pass = lane.pass.max(virtual_time);
        }
        let latest = now + lane.budget;
        let earliest = lane.queue.back().map_or(now, |e| e.deadline);
        // Entries queued before a shorter budget was configured may hold later
        // deadlines than `latest`: a new entry takes theirs rather than precede them,
        // so deadlines stay in queue order.
        let deadline = if latest < earliest {
            earliest
        } else {
            deadline.clamp(earliest, latest)
        };
        lane.queue.push_back(Entry { deadline, item });
        Ok(())
    }

    /// The next thing to do at `now`, or `None` when every queue is empty.
    ///
    /// Expired entries come first (most urgent tier first) as [`Popped::Expired`] and
    /// cost their tier no share; call again until `Ready` or `None`. Otherwise the
    /// non-empty tier with the smallest pass is served (ties go to the more urgent
    /// tier), and an entry whose deadline has passed is never returned as `Ready`.
    pub fn pop(&mut self, now: Instant) -> Option<Popped<T>> {
        for tier in Tier::ALL {
            let queue = &mut self.lanes[tier as usize].queue;
            if queue.front().is_some_and(|e| e.is_expired(now)) {
                let entry = queue.pop_front()?;
                return Some(Popped::Expired {
                    tier,
                    item: entry.item,
                });
            }
        }
        let tier = Tier::ALL
            .into_iter()
            .filter(|&t| !self.lanes[t as usize].queue.is_empty())
            .min_by_key(|&t| (self.lanes[t as usize].pass, t as usize))?;
        let lane = &mut self.lanes[tier as usize];
        self.virtual_time = lane.pass;
        lane.pass += lane.stride;
        let entry = lane.queue.pop_front()?;
        Some(Popped::Ready {
            tier,
            item: entry.item,
            deadline: entry.deadline,
        })
    }

    /// Remove every entry expired at `now`, most urgent tier first, oldest first within
    /// a tier, so the driver can answer them `Timeout` while all workers are busy.
    ///
    /// Looks at each queue's expired prefix only: deadlines are in queue order because
    /// a tier's budget is fixed and `now` (an `Instant`) never goes backwards.
    pub fn drain_expired(&mut self, now: Instant) -> Vec<(Tier, T)> {
        let mut expired = Vec::new();
        for tier in Tier::ALL {
            let queue = &mut self.lanes[tier as usize].queue;
            while queue.front().is_some_and(|e| e.is_expired(now)) {
                if let Some(entry) = queue.pop_front() {
                    expired.push((tier, entry.item));
                }
            }
        }
        expired
    }

    /// The earliest deadline of any queued entry: when the driver's expiry timer should
    /// fire next, or `None` when every queue is empty.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter_map(|lane| lane.queue.front().map(|e| e.deadline))
            .min()
    }

    /// Entries queued in `tier`.
    pub fn len(&self, tier: Tier) -> usize {
        self.lanes[tier as usize].queue.len()
    }

    /// Entries queued in all tiers.
    pub fn total_len(&self) -> usize {
        self.lanes.iter().map(|lane| lane.queue.len()).sum()
    }

    /// Whether every queue is empty.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(|lane| lane.queue.is_empty())
    }

    /// How full `tier` is, 0.0..=1.0.
    pub fn tier_fill_fraction(&self, tier: Tier) -> f64 {
        let lane = &self.lanes[tier as usize];
        lane.queue.len() as f64 / lane.capacity as f64
    }

    /// The most `Ready` pops of other tiers that can happen while `tier` is non-empty
    /// before `tier` itself is served: `Σ over other tiers i of (stride(tier) /
    /// stride(i) + 1)`, about `Σ weight(i) / weight(tier) + 1`. With the default weights
    /// that is 3 for realtime and 1113 for batch. (Expired entries are handed out ahead of
    /// it too, but each of those ends a wait, it never starts one.)
    pub fn max_wait_pops(&self, tier: Tier) -> u64 {
        let own = self.lanes[tier as usize].stride;
        Tier::ALL
            .into_iter()
            .filter(|&t| t != tier)
            .map(|t| own / self.lanes[t as usize].stride + 1)
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn scheduler() -> TierScheduler<u32> {
        TierScheduler::new(TierQueueConfig::default()).unwrap()
    }

    fn with_capacity(capacity: usize) -> TierScheduler<u32> {
        let mut config = TierQueueConfig::default();
        for tier in Tier::ALL {
            let p = match tier {
                Tier::Realtime => &mut config.realtime,
                Tier::Priority => &mut config.priority,
                Tier::Standard => &mut config.standard,
                Tier::Batch => &mut config.batch,
            };
            p.capacity = NonZeroUsize::new(capacity).unwrap();
        }
        TierScheduler::new(config).unwrap()
    }

    fn ready(p: Option<Popped<u32>>) -> (Tier, u32) {
        match p {
            Some(Popped::Ready { tier, item, .. }) => (tier, item),
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_design_table() {
        let c = TierQueueConfig::default();
        let rows: Vec<_> = Tier::ALL
            .into_iter()
            .map(|t| {
                let p = c.tier(t);
                (p.latency_budget, p.timeout, p.retries, p.weight.get())
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (ms(100), ms(200), 0, 1000),
                (ms(1_000), ms(2_000), 1, 100),
                (ms(10_000), ms(20_000), 3, 10),
                (ms(60_000), ms(300_000), 5, 1),
            ]
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_bad_field() {
        type Breakage = fn(&mut TierQueueConfig);
        let cases: Vec<(Breakage, &str)> = vec![
            (
                |c| c.priority.latency_budget = Duration::ZERO,
                "tier_queue.priority.latency_budget",
            ),
            (
                |c| c.standard.timeout = ms(5_000),
                "tier_queue.standard.timeout",
            ),
            (
                |c| c.batch.timeout = MAX_TIER_TIMEOUT + ms(1),
                "tier_queue.batch.timeout",
            ),
            (
                |c| c.realtime.capacity = NonZeroUsize::new(MAX_TIER_CAPACITY + 1).unwrap(),
                "tier_queue.realtime.capacity",
            ),
        ];
        for (break_it, field) in cases {
            let mut c = TierQueueConfig::default();
            break_it(&mut c);
            let err = c.validate().unwrap_err();
            assert!(
                err.to_string().starts_with(field),
                "{err} should name {field}"
            );
            assert!(TierScheduler::<u32>::new(c).is_err());
        }
    }

    #[test]
    fn full_tier_rejects_with_the_item_and_a_retry_hint() {
        let mut s = with_capacity(2);
        let t0 = Instant::now();
        s.push(t0, Tier::Priority, 1).unwrap();
        s.push(t0 + ms(500), Tier::Priority, 2).unwrap();
        let err = s.push(t0 + ms(800), Tier::Priority, 3).unwrap_err();
        // The oldest priority entry expires at t0 + 1 s (its budget): 200 ms from now.
        assert_eq!(
            err,
            Rejected {
                tier: Tier::Priority,
                retry_after: ms(200),
                item: 3
            }
        );
        // Other tiers keep their own room.
        s.push(t0 + ms(800), Tier::Batch, 4).unwrap();
        assert_eq!(s.len(Tier::Priority), 2);
        // A full queue of already-expired entries still hints at least the minimum.
        let err = s.push(t0 + ms(10_000), Tier::Priority, 5).unwrap_err();
        assert_eq!(err.retry_after, MIN_RETRY_AFTER);
    }

    #[test]
    fn fifo_within_a_tier_and_urgent_first_on_a_fresh_start() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.push(t0, Tier::Batch, 30).unwrap();
        s.push(t0, Tier::Standard, 20).unwrap();
        s.push(t0, Tier::Realtime, 1).unwrap();
        s.push(t0, Tier::Realtime, 2).unwrap();
        let order: Vec<_> = (0..4).map(|_| ready(s.pop(t0))).collect();
        // All passes start equal: realtime wins the tie, then its pass is ahead by one
        // realtime stride, which is still less than standard's and batch's.
        assert_eq!(
            order,
            vec![
                (Tier::Realtime, 1),
                (Tier::Standard, 20),
                (Tier::Batch, 30),
                (Tier::Realtime, 2),
            ]
        );
        assert_eq!(s.pop(t0), None);
    }

    #[test]
    fn expired_entries_come_back_as_expired_never_ready() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.push(t0, Tier::Realtime, 1).unwrap();
        s.push(t0 + ms(50), Tier::Realtime, 2).unwrap();
        s.push(t0, Tier::Standard, 3).unwrap();
        // Table: (time, expected pop).
        let cases = [
            // Exactly at the deadline counts as expired: the budget is used up.
            (
                ms(100),
                Some(Popped::Expired {
                    tier: Tier::Realtime,
                    item: 1,
                }),
            ),
            (
                ms(100),
                Some(Popped::Ready {
                    tier: Tier::Realtime,
                    item: 2,
                    deadline: t0 + ms(150),
                }),
            ),
            (
                ms(10_001),
                Some(Popped::Expired {
                    tier: Tier::Standard,
                    item: 3,
                }),
            ),
            (ms(10_001), None),
        ];
        for (i, (at, expected)) in cases.into_iter().enumerate() {
            assert_eq!(s.pop(t0 + at), expected, "case {i}");
        }
    }

    #[test]
    fn drain_expired_and_next_deadline_drive_the_timer() {
        let mut s = scheduler();
        let t0 = Instant::now();
        assert_eq!(s.next_deadline(), None);
        s.push(t0, Tier::Batch, 4).unwrap();
        s.push(t0, Tier::Priority, 2).unwrap();
        s.push(t0 + ms(50), Tier::Realtime, 1).unwrap();
        s.push(t0 + ms(120), Tier::Realtime, 5).unwrap();
        assert_eq!(s.next_deadline(), Some(t0 + ms(150)));
        assert_eq!(s.drain_expired(t0 + ms(149)), vec![]);
        assert_eq!(s.drain_expired(t0 + ms(150)), vec![(Tier::Realtime, 1)]);
        assert_eq!(s.next_deadline(), Some(t0 + ms(220)));
        assert_eq!(
            s.drain_expired(t0 + ms(1_000)),
            vec![(Tier::Realtime, 5), (Tier::Priority, 2)]
        );
        assert_eq!(s.total_len(), 1);
        assert_eq!(s.next_deadline(), Some(t0 + ms(60_000)));
    }

    #[test]
    fn fill_fractions_count_entries_over_capacity() {
        let mut s = with_capacity(4);
        let t0 = Instant::now();
        assert_eq!(s.tier_fill_fraction(Tier::Batch), 0.0);
        for i in 0..4 {
            s.push(t0, Tier::Batch, i).unwrap();
        }
        s.push(t0, Tier::Realtime, 9).unwrap();
        assert_eq!(s.len(Tier::Batch), 4);
        assert_eq!(s.tier_fill_fraction(Tier::Batch), 1.0);
        assert_eq!(s.tier_fill_fraction(Tier::Realtime), 0.25);
        assert!(!s.is_empty());
    }

    #[test]
    fn busy_tiers_share_pops_by_weight_and_batch_is_not_starved() {
        // Keep every tier backlogged and count who gets served.
        let mut s = scheduler();
        let t0 = Instant::now();
        for tier in Tier::ALL {
            for i in 0..100 {
                s.push(t0, tier, i).unwrap();
            }
        }
        let mut served = [0u32; 4];
        for _ in 0..11_110 {
            let (tier, item) = ready(s.pop(t0));
            served[tier as usize] += 1;
            s.push(t0, tier, item).unwrap();
        }
        // Weights 1000:100:10:1 over 11110 pops: 10000, 1000, 100, 10 (±1 for rounding
        // of the strides and where the cycle is cut).
        let expected = [10_000, 1_000, 100, 10];
        for (tier, (&got, want)) in Tier::ALL.iter().zip(served.iter().zip(expected)) {
            assert!(
                got.abs_diff(want) <= 1,
                "{tier:?} served {got} times, expected about {want}"
            );
        }
    }

    #[test]
    fn an_idle_tier_banks_no_credit() {
        // Realtime alone is served 5000 times: five batch strides' worth of virtual time.
        // If batch kept its old pass while idle, it would now get 5 pops in a row; it
        // starts at the current virtual time instead and gets one, then waits its share.
        let mut s = scheduler();
        let t0 = Instant::now();
        for i in 0..5_000 {
            s.push(t0, Tier::Realtime, i).unwrap();
            assert_eq!(ready(s.pop(t0)), (Tier::Realtime, i));
        }
        for i in 0..50 {
            s.push(t0, Tier::Realtime, i).unwrap();
        }
        for i in 0..5 {
            s.push(t0, Tier::Batch, 100 + i).unwrap();
        }
        let first: Vec<_> = (0..10).map(|_| ready(s.pop(t0)).0).collect();
        assert_eq!(first.iter().filter(|&&t| t == Tier::Batch).count(), 1);
    }

    #[test]
    fn wait_bounds_with_default_weights() {
        let s = scheduler();
        assert_eq!(s.max_wait_pops(Tier::Realtime), 3);
        assert_eq!(s.max_wait_pops(Tier::Priority), 10 + 1 + 1 + 1);
        assert_eq!(s.max_wait_pops(Tier::Batch), 1001 + 101 + 11);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(usize),
        Pop,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..4).prop_map(Op::Push),
            4 => Just(Op::Pop),
            1 => (0u64..400).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Under any interleaving of pushes, pops and clock advances: nothing Ready is
        /// past its deadline, every item comes out exactly once in FIFO order per tier,
        /// capacity is respected, and no non-empty tier waits more than
        /// `max_wait_pops` Ready pops of other tiers (realtime: 3).
        #[test]
        fn scheduling_invariants(ops in proptest::collection::vec(op(), 1..600)) {
            let mut s = with_capacity(8);
            let t0 = Instant::now();
            let mut now = t0;
            let mut next_id = 0u32;
            // Model: per tier, the ids queued in order.
            let mut model: [VecDeque<u32>; 4] = Default::default();
            // Ready pops of other tiers since each tier last got served or was empty.
            let mut waited = [0u64; 4];
            let bounds: Vec<u64> = Tier::ALL.iter().map(|&t| s.max_wait_pops(t)).collect();
            prop_assert_eq!(bounds[0], 3);
            for op in ops {
                match op {
                    Op::Advance(d) => now += ms(d),
                    Op::Push(i) => {
                        let tier = Tier::ALL[i];
                        let id = next_id;
                        next_id += 1;
                        match s.push(now, tier, id) {
                            Ok(()) => {
                                prop_assert!(model[i].len() < 8);
                                if model[i].is_empty() {
                                    waited[i] = 0;
                                }
                                model[i].push_back(id);
                            }
                            Err(r) => {
                                prop_assert_eq!(model[i].len(), 8);
                                prop_assert_eq!(r.item, id);
                                prop_assert!(r.retry_after >= MIN_RETRY_AFTER);
                            }
                        }
                    }
                    Op::Pop => match s.pop(now) {
                        None => prop_assert!(model.iter().all(VecDeque::is_empty)),
                        Some(Popped::Expired { tier, item }) => {
                            let i = tier as usize;
                            prop_assert_eq!(model[i].pop_front(), Some(item));
                        }
                        Some(Popped::Ready { tier, item, deadline }) => {
                            prop_assert!(deadline > now, "expired entry handed out");
                            let i = tier as usize;
                            prop_assert_eq!(model[i].pop_front(), Some(item));
                            waited[i] = 0;
                            for j in (0..4).filter(|&j| j != i && !model[j].is_empty()) {
                                waited[j] += 1;
                                prop_assert!(
                                    waited[j] <= bounds[j],
                                    "{:?} waited {} pops, bound {}", Tier::ALL[j], waited[j], bounds[j]
                                );
                            }
                        }
                    },
                }
                for tier in Tier::ALL {
                    prop_assert_eq!(s.len(tier), model[tier as usize].len());
                }
            }
        }

        /// With every tier always backlogged, realtime is served at least once in every
        /// 4 consecutive pops, and each other tier within its bound.
        #[test]
        fn no_tier_starves_under_saturation(
            initial in proptest::collection::vec(0usize..4, 0..64),
            pops in 1usize..3_000,
        ) {
            let mut s = with_capacity(64);
            let t0 = Instant::now();
            for (n, &i) in initial.iter().enumerate() {
                s.push(t0, Tier::ALL[i], n as u32).unwrap();
            }
            for tier in Tier::ALL {
                s.push(t0, tier, 0).unwrap();
            }
            let mut since_served = [0u64; 4];
            for _ in 0..pops {
                let (tier, item) = ready(s.pop(t0));
                s.push(t0, tier, item).unwrap();
                for t in Tier::ALL {
                    let i = t as usize;
                    since_served[i] = if t == tier { 0 } else { since_served[i] + 1 };
                    prop_assert!(since_served[i] <= s.max_wait_pops(t));
                }
            }
        }
    }

    #[test]
    fn a_reconfigured_scheduler_serves_new_weights_and_keeps_queued_deadlines() {
        let mut s = with_capacity(4);
        let t0 = Instant::now();
        s.push(t0, Tier::Batch, 1).unwrap();
        let old_deadline = t0 + TierQueueConfig::default().batch.latency_budget;
        let mut config = TierQueueConfig::default();
        config.batch.capacity = NonZeroUsize::new(1).unwrap();
        config.batch.latency_budget = ms(500);
        config.batch.weight = NonZeroU32::new(1000).unwrap();
        config.realtime.weight = NonZeroU32::new(1).unwrap();
        s.reconfigure(config).unwrap();
        assert_eq!(s.config(), &config);
        // Over the new capacity: refused until the tier drains below it.
        assert!(s.push(t0, Tier::Batch, 2).is_err());
        // The queued entry keeps the deadline it was given.
        match s.pop(t0) {
            Some(Popped::Ready {
                item: 1, deadline, ..
            }) => {
                assert!(deadline <= old_deadline && deadline > t0 + ms(500));
            }
            other => panic!("{other:?}"),
        }
        // New entries get the new budget, and batch now outweighs realtime.
        for i in 0..3 {
            s.push(t0, Tier::Realtime, 10 + i).unwrap();
        }
        s.push(t0, Tier::Batch, 3).unwrap();
        let served: Vec<_> = (0..2).filter_map(|_| s.pop(t0)).collect();
        let batch = served.iter().find_map(|p| match p {
            Popped::Ready {
                tier: Tier::Batch,
                deadline,
                ..
            } => Some(*deadline),
            _ => None,
        });
        assert_eq!(batch, Some(t0 + ms(500)), "{served:?}");
    }

    #[test]
    fn after_a_shorter_budget_deadlines_stay_in_queue_order() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.push(t0, Tier::Standard, 1).unwrap();
        let mut config = TierQueueConfig::default();
        config.standard.latency_budget = ms(10);
        config.standard.timeout = ms(10);
        s.reconfigure(config).unwrap();
        s.push(t0, Tier::Standard, 2).unwrap();
        // The second entry does not expire ahead of the first.
        assert!(s.drain_expired(t0 + ms(20)).is_empty());
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            s.drain_expired(later),
            vec![(Tier::Standard, 1), (Tier::Standard, 2)]
        );
    }

    #[test]
    fn an_invalid_reconfiguration_changes_nothing() {
        let mut s = scheduler();
        let mut config = TierQueueConfig::default();
        config.batch.latency_budget = Duration::ZERO;
        assert!(s.reconfigure(config).is_err());
        assert_eq!(s.config(), &TierQueueConfig::default());
    }
}
