//! The tier stage: the four tier queues ([`TierScheduler`]), the degradation policy and
//! the window of jobs allowed past them, as one state machine.
//!
//! ```text
//! handle_enqueue(now, now, tier, job) ─┐                    ┌─ Dispatch(jobs): the window grew
//! handle_done(now, slots) ────────┼─► poll(now) ───────┤
//! handle_tick(now, cpu) ──────────┘  (until None)      └─ Expired(tier, job): answer Timeout
//! ```
//!
//! At most `max_in_flight` jobs are past the queues; the driver gives each dispatched
//! batch a credit whose release is [`TierStage::handle_done`]. Under overload the queue
//! that grows is this one, where realtime work is served first and an entry still
//! queued when its tier's latency budget runs out is answered `Timeout` instead of
//! processed.
//!
//! Queues are bounded by time, not only by count: the stage measures its service rate
//! while it is busy ([`ServiceRate`]), and a job whose expected wait — the jobs ahead of
//! it in its tier over that tier's weighted share of the rate, plus the time the jobs
//! in flight take — exceeds its tier's budget is refused at once with
//! `Overloaded{tier, retry_after_ms}` (CoDel's idea of bounding sojourn time, decided
//! at the door instead of by dropping later). A full tier is refused too; what the door
//! would say for each tier is readable without a job ([`TierStage::door`]). Every
//! `TICK` how far realtime and priority are queueing into their budgets moves the
//! degradation level, which the driver publishes for admission to shed by; the
//! process's CPU use it hands in is reported with a change, not a signal.

use std::time::{Duration, Instant};

use chorus_protocol::{ErrorCode, Tier};

use crate::policy::degradation::{
    DegradationConfig, DegradationConfigError, DegradationPolicy, Level, LevelChange, Load,
};
use crate::policy::tier_queue::{
    Popped, Rejected, TierQueueConfig, TierQueueConfigError, TierScheduler,
};

/// Most submissions handed on in one dispatch.
pub const MAX_DISPATCH: usize = 64;

/// Why a tier stage could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TierStageError {
    /// The tier queues' config is invalid.
    #[error(transparent)]
    Queues(#[from] TierQueueConfigError),
    /// The degradation config is invalid.
    #[error(transparent)]
    Degradation(#[from] DegradationConfigError),
}

/// What the driver does next.
#[derive(Debug, PartialEq)]
pub enum Step<J> {
    /// Hand these jobs on, most urgent first, with one credit for their slots.
    Dispatch(Vec<J>),
    /// Answer this job `Timeout`: its deadline passed while it waited.
    Expired(Tier, J),
}

/// What a tick decided.
#[derive(Debug)]
pub struct Tick<J> {
    /// Jobs whose deadline passed while every slot was busy: answer them `Timeout`.
    pub expired: Vec<(Tier, J)>,
    /// The level moved (publish it), with the load that moved it.
    pub change: Option<(LevelChange, Load)>,
}

/// An operator's command to the degradation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DegradeCommand {
    /// Pin the level.
    Set(Level),
    /// Let the load decide again.
    Auto,
}

/// What `chorus ctl queues` shows.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueStatus {
    /// Entries waiting per tier, most urgent first, with each tier's capacity.
    pub tiers: Vec<(Tier, usize, usize)>,
    /// Jobs past the queues (validating or storing).
    pub in_flight: usize,
    /// The most jobs allowed past the queues.
    pub max_in_flight: usize,
    /// The degradation level, and whether an operator pinned it.
    pub level: Level,
    /// Whether the level is set by hand.
    pub manual: bool,
}

/// The tier stage over jobs of type `J`.
pub struct TierStage<J> {
    scheduler: TierScheduler<J>,
    degradation: DegradationPolicy,
    in_flight: usize,
    max_in_flight: usize,
    /// An expired entry popped behind a dispatch; the next step.
    pending_expired: Option<(Tier, J)>,
    /// Jobs finished per second while the stage is busy.
    rate: ServiceRate,
    /// Per tier, jobs dispatched per second while the tier has work waiting: its
    /// real share of the rate, whatever the other tiers' arrivals.
    drain: [ServiceRate; 4],
    /// Per tier, the last time it had work waiting (competition for the rate).
    last_busy: [Option<Instant>; 4],
    /// The time of the last event.
    now: Option<Instant>,
}

impl<J> TierStage<J> {
    /// Empty queues at level `Normal` (or the config's start), nothing in flight.
    pub fn new(
        tiers: TierQueueConfig,
        degradation: DegradationConfig,
        max_in_flight: usize,
    ) -> Result<Self, TierStageError> {
        Ok(TierStage {
            scheduler: TierScheduler::new(tiers)?,
            degradation: DegradationPolicy::new(degradation)?,
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
            pending_expired: None,
            rate: ServiceRate::new(),
            drain: Default::default(),
            last_busy: [None; 4],
            now: None,
        })
    }

    /// Queues `job` in `tier`, or gives it back with its `Overloaded` answer: when the
    /// tier is full, or when the job would wait past the tier's latency budget at the
    /// measured service rate.
    ///
    /// `arrived` is when the job reached the node (at most `now`): the time it spent
    /// before this stage counts against its budget too.
    pub fn handle_enqueue(
        &mut self,
        now: Instant,
        arrived: Instant,
        tier: Tier,
        job: J,
    ) -> Result<(), (J, ErrorCode)> {
        self.advance(now);
        let arrived = arrived.min(now);
        let spent = now.duration_since(arrived);
        let budget = self.scheduler.config().tier(tier).latency_budget;
        if let Some(error) = self.late_by(tier, spent) {
            return Err((job, error));
        }
        // The budget runs from arrival, and leaves the time the work after the queue
        // takes: an entry dispatched at its deadline still finishes within the budget.
        let deadline = arrived + budget_less(budget, self.in_service());
        let pushed = self.scheduler.push_until(now, tier, job, deadline).map_err(
            |Rejected {
                 tier,
                 retry_after,
                 item,
             }| {
                let error = ErrorCode::Overloaded {
                    tier,
                    retry_after_ms: retry_after_ms(retry_after),
                };
                (item, error)
            },
        );
        self.settle();
        pushed
    }

    /// The refusal a job of `tier` that has already spent `spent` would get for waiting
    /// past its tier's budget; `None` while it would be served in time.
    fn late_by(&self, tier: Tier, spent: Duration) -> Option<ErrorCode> {
        let budget = self.scheduler.config().tier(tier).latency_budget;
        let wait = self.expected_wait(tier)?;
        (spent + wait > budget).then(|| ErrorCode::Overloaded {
            tier,
            retry_after_ms: retry_after_ms(spent + wait - budget),
        })
    }

    /// What a job of `tier` arriving now would be told at the door: `Overloaded` when
    /// its tier is full or it would wait past the budget, `None` when it would queue.
    /// The driver publishes it so that a refusal can be decided before a request is
    /// decoded; [`TierStage::handle_enqueue`] decides again for what gets through.
    pub fn door(&self, tier: Tier) -> Option<ErrorCode> {
        let capacity = self.scheduler.config().tier(tier).capacity.get();
        if self.scheduler.len(tier) >= capacity {
            let wait = self.expected_wait(tier).unwrap_or(FULL_RETRY_AFTER);
            return Some(ErrorCode::Overloaded {
                tier,
                retry_after_ms: retry_after_ms(wait.max(FULL_RETRY_AFTER)),
            });
        }
        self.late_by(tier, Duration::ZERO)
    }

    /// How long a new job of `tier` would take from now until it is done: the jobs
    /// ahead of it in its tier at the tier's weighted share of the service rate, plus
    /// the time the jobs in flight take (Little's law); `None` until the rate is known.
    pub fn expected_wait(&self, tier: Tier) -> Option<Duration> {
        let rate = self.rate.per_second()?;
        let seconds = self.queue_wait(tier)? + self.in_flight as f64 / rate;
        Some(Duration::from_secs_f64(
            seconds.min(MAX_EXPECTED_WAIT.as_secs_f64()),
        ))
    }

    /// Seconds a new job of `tier` would wait behind the jobs queued in its tier, at the
    /// tier's weighted share of the service rate; `None` until the rate is known.
    fn queue_wait(&self, tier: Tier) -> Option<f64> {
        let rate = self.rate.per_second()?;
        // The tier's weighted share among the tiers that had work within the last
        // time constant: the share it can count on while they keep arriving.
        let config = self.scheduler.config();
        let weight = |t: Tier| f64::from(config.tier(t).weight.get());
        let competing: f64 = Tier::ALL
            .into_iter()
            .filter(|&t| t == tier || self.recently_busy(t))
            .map(weight)
            .sum();
        let share = rate * weight(tier) / competing;
        // What it got lately, when measured; the smaller of the two, so that a tier
        // served well a moment ago is not promised that when others return.
        let drain = self.drain[tier as usize]
            .per_second()
            .map_or(share, |measured| measured.min(share));
        let ahead = self.scheduler.len(tier) as f64 + 1.0;
        Some(ahead / drain)
    }

    /// Whether `tier` had work waiting within the last [`ServiceRate::TAU`].
    fn recently_busy(&self, tier: Tier) -> bool {
        match (self.last_busy[tier as usize], self.now) {
            (Some(busy), Some(now)) => now.saturating_duration_since(busy) < ServiceRate::TAU,
            _ => false,
        }
    }

    /// How long the jobs past the queues take to finish (Little's law: in flight over
    /// the rate); zero until the rate is known.
    fn in_service(&self) -> Duration {
        self.rate.per_second().map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(
                (self.in_flight as f64 / rate).min(MAX_EXPECTED_WAIT.as_secs_f64()),
            )
        })
    }

    /// The degradation policy's load: how far the tiers the last level keeps are into
    /// their budgets queueing (a job of theirs arriving now waits behind what is queued
    /// in its tier), with `cpu` to report beside it.
    ///
    /// The time the jobs in flight take is left out here, though the door counts it: it
    /// rests on the service rate measured while the stage was last busy, which a moment
    /// of slow disk makes small, and a level moved by it holds for a dwell per step. A
    /// critical tier that really waits has a queue.
    fn load(&self, cpu: f64) -> Load {
        let config = self.scheduler.config();
        let critical_wait = [Tier::Realtime, Tier::Priority]
            .into_iter()
            .filter_map(|tier| {
                let wait = self.queue_wait(tier)?;
                Some(wait / config.tier(tier).latency_budget.as_secs_f64())
            })
            .fold(0.0, f64::max);
        Load { critical_wait, cpu }
    }

    /// The measured service rate, jobs per second while busy; `None` until known.
    pub fn service_rate(&self) -> Option<f64> {
        self.rate.per_second()
    }

    /// `slots` jobs finished at `now` (a credit was released).
    pub fn handle_done(&mut self, now: Instant, slots: usize) {
        self.advance(now);
        self.rate.completed(slots as u64);
        self.in_flight = self.in_flight.saturating_sub(slots);
        self.settle();
    }

    /// Moves the rate meter to `now` with the state held since the last event.
    fn advance(&mut self, now: Instant) {
        self.now = Some(now);
        self.rate.advance(now);
        for drain in &mut self.drain {
            drain.advance(now);
        }
    }

    /// Tells the rate meter whether the stage is busy from now on: work waits, or
    /// every slot is taken, so completions measure capacity rather than demand.
    fn settle(&mut self) {
        let busy = !self.scheduler.is_empty() || self.in_flight >= self.max_in_flight;
        self.rate.set_busy(busy);
        for tier in Tier::ALL {
            let waiting = self.scheduler.len(tier) > 0;
            self.drain[tier as usize].set_busy(waiting);
            if waiting {
                self.last_busy[tier as usize] = self.now;
            }
        }
    }

    /// The next thing to do at `now`; call until `None`. A `Dispatch` takes its jobs'
    /// slots at once.
    pub fn poll(&mut self, now: Instant) -> Option<Step<J>> {
        self.advance(now);
        let step = self.next_step(now);
        self.settle();
        step
    }

    fn next_step(&mut self, now: Instant) -> Option<Step<J>> {
        if let Some((tier, job)) = self.pending_expired.take() {
            return Some(Step::Expired(tier, job));
        }
        let mut batch = Vec::new();
        while self.in_flight + batch.len() < self.max_in_flight && batch.len() < MAX_DISPATCH {
            match self.scheduler.pop(now) {
                None => break,
                Some(Popped::Expired { item, tier }) => {
                    if batch.is_empty() {
                        return Some(Step::Expired(tier, item));
                    }
                    // Hand out what is ready first; the expired entry is the next step.
                    self.in_flight += batch.len();
                    let dispatch = Step::Dispatch(batch);
                    self.pending_expired = Some((tier, item));
                    return Some(dispatch);
                }
                Some(Popped::Ready { item, tier, .. }) => {
                    self.drain[tier as usize].completed(1);
                    batch.push(item);
                }
            }
        }
        if batch.is_empty() {
            return None;
        }
        self.in_flight += batch.len();
        Some(Step::Dispatch(batch))
    }

    /// Answers what expired while every slot was busy and moves the level with the load
    /// (`cpu`: the process's CPU use 0.0..=1.0, or NaN when unknown, for the report).
    pub fn handle_tick(&mut self, now: Instant, cpu: f64) -> Tick<J> {
        self.advance(now);
        let expired = self.scheduler.drain_expired(now);
        self.settle();
        let load = self.load(cpu);
        let change = self.degradation.observe(now, load).map(|c| (c, load));
        Tick { expired, change }
    }

    /// Applies an operator's command; the change to publish, if the level moved.
    pub fn degrade(&mut self, command: DegradeCommand) -> Option<(LevelChange, Load)> {
        match command {
            DegradeCommand::Set(level) => self
                .degradation
                .set(level)
                .map(|c| (c, self.load(f64::NAN))),
            DegradeCommand::Auto => {
                self.degradation.auto();
                None
            }
        }
    }

    /// Takes new tier queue and degradation settings (see
    /// [`TierScheduler::reconfigure`], [`DegradationPolicy::reconfigure`]); when either
    /// is invalid nothing changes.
    pub fn reconfigure(
        &mut self,
        tiers: TierQueueConfig,
        degradation: DegradationConfig,
    ) -> Result<(), TierStageError> {
        tiers.validate()?;
        degradation.validate()?;
        self.scheduler.reconfigure(tiers)?;
        self.degradation.reconfigure(degradation)?;
        Ok(())
    }

    /// The degradation level now.
    pub fn level(&self) -> Level {
        self.degradation.level()
    }

    /// Entries queued in `tier`.
    pub fn queued(&self, tier: Tier) -> usize {
        self.scheduler.len(tier)
    }

    /// Jobs past the queues.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Everything still queued, for a driver that stops (answer each `Unavailable`).
    pub fn drain(&mut self, now: Instant) -> Vec<J> {
        let mut jobs: Vec<J> = self
            .pending_expired
            .take()
            .into_iter()
            .map(|(_, j)| j)
            .collect();
        while let Some(popped) = self.scheduler.pop(now) {
            jobs.push(match popped {
                Popped::Ready { item, .. } | Popped::Expired { item, .. } => item,
            });
        }
        jobs
    }

    /// What `chorus ctl queues` shows.
    pub fn status(&self) -> QueueStatus {
        QueueStatus {
            tiers: Tier::ALL
                .iter()
                .map(|t| {
                    (
                        *t,
                        self.scheduler.len(*t),
                        self.scheduler.config().tier(*t).capacity.get(),
                    )
                })
                .collect(),
            in_flight: self.in_flight,
            max_in_flight: self.max_in_flight,
            level: self.degradation.level(),
            manual: self.degradation.is_manual(),
        }
    }
}

/// The shortest retry hint for a full tier.
const FULL_RETRY_AFTER: Duration = Duration::from_millis(10);

/// The longest wait an estimate reports (a stalled stage has a rate near zero).
const MAX_EXPECTED_WAIT: Duration = Duration::from_secs(3600);

/// `budget` less `used`, but never less than half the budget: a long estimate must
/// not make the queue refuse what admission let in.
fn budget_less(budget: Duration, used: Duration) -> Duration {
    budget.saturating_sub(used).max(budget / 2)
}

/// A retry hint in whole milliseconds, at least 1 (a zero hint invites a busy loop).
fn retry_after_ms(wait: Duration) -> u64 {
    (wait.as_micros().div_ceil(1000) as u64).max(1)
}

/// How fast the stage finishes jobs while it is busy: completions over busy time, both
/// decayed with a time constant of [`ServiceRate::TAU`], so the estimate follows a
/// slower store within a second or two and idle time (when completions measure
/// demand, not capacity) is left out.
#[derive(Clone, Debug)]
pub struct ServiceRate {
    completions: f64,
    busy_seconds: f64,
    busy: bool,
    last: Option<Instant>,
}

impl ServiceRate {
    /// The decay time constant.
    pub const TAU: Duration = Duration::from_secs(1);
    /// Busy time needed before the rate is trusted.
    pub const MIN_BUSY: Duration = Duration::from_millis(20);
    /// Completions needed before the rate is trusted.
    pub const MIN_COMPLETIONS: f64 = 8.0;

    /// No measurement yet.
    pub fn new() -> Self {
        ServiceRate {
            completions: 0.0,
            busy_seconds: 0.0,
            busy: false,
            last: None,
        }
    }

    /// Time moved on to `now`; the state since the last call was `busy` or idle.
    pub fn advance(&mut self, now: Instant) {
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let dt = now.saturating_duration_since(last).as_secs_f64();
        if dt == 0.0 {
            return;
        }
        let keep = (-dt / Self::TAU.as_secs_f64()).exp();
        self.completions *= keep;
        self.busy_seconds *= keep;
        if self.busy {
            // The busy part of the interval, decayed as a whole: exact enough at the
            // event rates here (many events per time constant).
            self.busy_seconds += dt * keep;
        }
    }

    /// `n` jobs finished (counted only while busy: idle completions measure demand).
    pub fn completed(&mut self, n: u64) {
        if self.busy {
            self.completions += n as f64;
        }
    }

    /// Whether the stage is busy from the last `advance` on.
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// Jobs per second while busy, once enough was seen.
    pub fn per_second(&self) -> Option<f64> {
        (self.busy_seconds >= Self::MIN_BUSY.as_secs_f64()
            && self.completions >= Self::MIN_COMPLETIONS)
            .then(|| self.completions / self.busy_seconds)
    }
}

impl Default for ServiceRate {
    fn default() -> Self {
        ServiceRate::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn stage(max_in_flight: usize) -> TierStage<(u32, Instant)> {
        TierStage::new(
            TierQueueConfig::default(),
            DegradationConfig::default(),
            max_in_flight,
        )
        .unwrap()
    }

    #[test]
    fn the_window_bounds_what_is_dispatched_and_a_release_reopens_it() {
        let mut s = stage(2);
        let now = Instant::now();
        for n in 0..5 {
            s.handle_enqueue(now, now, Tier::Standard, (n, now))
                .unwrap();
        }
        let Some(Step::Dispatch(first)) = s.poll(now) else {
            panic!("two fit");
        };
        assert_eq!(first.len(), 2);
        assert_eq!(s.poll(now), None, "the window is full");
        s.handle_done(now, 1);
        assert!(matches!(s.poll(now), Some(Step::Dispatch(j)) if j.len() == 1));
        assert_eq!(s.in_flight(), 2);
    }

    #[test]
    fn realtime_goes_first_and_an_expired_entry_is_never_dispatched() {
        let mut s = stage(1);
        let now = Instant::now();
        s.handle_enqueue(now, now, Tier::Batch, (0, now)).unwrap();
        s.handle_enqueue(now, now, Tier::Realtime, (1, now))
            .unwrap();
        assert!(matches!(s.poll(now), Some(Step::Dispatch(j)) if j[0].0 == 1));
        let late = now + Duration::from_secs(3600);
        s.handle_done(now, 1);
        assert!(matches!(
            s.poll(late),
            Some(Step::Expired(Tier::Batch, (0, _)))
        ));
        assert_eq!(s.poll(late), None);
    }

    #[test]
    fn a_full_tier_is_refused_with_its_tier() {
        let mut s = stage(1);
        let now = Instant::now();
        let capacity = TierQueueConfig::default()
            .tier(Tier::Priority)
            .capacity
            .get();
        for n in 0..capacity as u32 {
            s.handle_enqueue(now, now, Tier::Priority, (n, now))
                .unwrap();
        }
        let (_, error) = s
            .handle_enqueue(now, now, Tier::Priority, (0, now))
            .unwrap_err();
        assert!(
            matches!(error, ErrorCode::Overloaded { tier: Tier::Priority, retry_after_ms } if retry_after_ms >= 1)
        );
        assert_eq!(s.drain(now).len(), capacity);
    }

    #[test]
    fn the_rate_counts_busy_time_only() {
        let mut r = ServiceRate::new();
        let t0 = Instant::now();
        r.advance(t0);
        // Idle for a second with a few completions: demand, not capacity.
        for ms in 1..=10 {
            r.advance(t0 + Duration::from_millis(ms * 100));
            r.completed(1);
        }
        assert_eq!(r.per_second(), None);
        // Busy: 100 jobs in 100 ms.
        r.set_busy(true);
        let busy_from = t0 + Duration::from_secs(1);
        for ms in 1..=100 {
            r.advance(busy_from + Duration::from_millis(ms));
            r.completed(1);
        }
        let rate = r.per_second().expect("enough seen");
        assert!((900.0..1100.0).contains(&rate), "{rate}");
    }

    /// Runs a stage with `window` slots, each job taking `service`, under evenly spaced
    /// arrivals at `load` times capacity with the tier mix 10/20/40/30 for `seconds`;
    /// returns (jobs done per second while the load lasts, per tier: admitted, refused,
    /// expired, slowest done in ms).
    fn overload(load: f64, seconds: u64) -> (f64, [(u64, u64, u64, u64); 4]) {
        // Slow enough that a full queue (1024 entries a tier) holds far more than a
        // tier's budget of work: count bounds alone would let admitted jobs expire.
        let window = 8usize;
        let service = Duration::from_millis(20);
        let capacity = window as f64 / service.as_secs_f64();
        let mut s: TierStage<(usize, Instant)> = TierStage::new(
            TierQueueConfig::default(),
            DegradationConfig::default(),
            window,
        )
        .unwrap();
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        let gap = Duration::from_secs_f64(1.0 / (capacity * load));
        let mix = [0usize, 1, 1, 2, 2, 2, 2, 3, 3, 3];
        let mut stats = [(0u64, 0u64, 0u64, 0u64); 4];
        let mut running: std::collections::BinaryHeap<
            std::cmp::Reverse<(Instant, usize, Instant)>,
        > = Default::default();
        let mut next_arrival = start;
        let mut n = 0usize;
        let mut done = 0u64;
        loop {
            let next_done = running.peek().map(|r| r.0.0);
            let now = match next_done {
                Some(t) if t <= next_arrival => t,
                _ if next_arrival < end => next_arrival,
                Some(t) => t,
                None => break,
            };
            if next_done == Some(now) {
                let std::cmp::Reverse((_, tier, arrived)) = running.pop().unwrap();
                let took = now.duration_since(arrived).as_millis() as u64;
                stats[tier].3 = stats[tier].3.max(took);
                s.handle_done(now, 1);
                if now <= end {
                    done += 1;
                }
            } else {
                let tier = mix[n % mix.len()];
                n += 1;
                match s.handle_enqueue(now, now, Tier::ALL[tier], (tier, now)) {
                    Ok(()) => stats[tier].0 += 1,
                    Err((_, e)) => {
                        assert!(
                            matches!(e, ErrorCode::Overloaded { retry_after_ms, .. } if retry_after_ms >= 1)
                        );
                        stats[tier].1 += 1;
                    }
                }
                next_arrival += gap;
            }
            for (_, (tier, _)) in s.handle_tick(now, f64::NAN).expired {
                stats[tier].2 += 1;
            }
            while let Some(step) = s.poll(now) {
                match step {
                    Step::Dispatch(jobs) => {
                        for (tier, arrived) in jobs {
                            running.push(std::cmp::Reverse((now + service, tier, arrived)));
                        }
                    }
                    Step::Expired(_, (tier, _)) => stats[tier].2 += 1,
                }
            }
        }
        (done as f64 / seconds as f64, stats)
    }

    #[test]
    fn at_three_and_five_times_capacity_goodput_holds_and_every_tier_keeps_its_budget() {
        for load in [3.0, 5.0] {
            let (goodput, stats) = overload(load, 120);
            assert!(goodput >= 0.9 * 400.0, "load {load}: goodput {goodput}");
            for (i, (admitted, refused, expired, slowest_ms)) in stats.into_iter().enumerate() {
                let budget = TierQueueConfig::default().tier(Tier::ALL[i]).latency_budget;
                assert!(
                    slowest_ms <= budget.as_millis() as u64,
                    "load {load} tier {i}: slowest {slowest_ms} ms"
                );
                // Refused at the door rather than expired in the queue.
                assert!(
                    expired * 100 <= admitted.max(1),
                    "load {load} tier {i}: {expired} of {admitted} expired ({refused} refused)"
                );
            }
            // The most urgent tier is served in full; the least urgent absorbs the refusals.
            assert_eq!(stats[0].1, 0, "load {load}: realtime refused");
            assert!(stats[3].1 > 0, "load {load}: batch never refused");
        }
    }

    #[derive(Clone, Debug)]
    enum Event {
        Arrive(u8),
        Done,
        Advance(u16),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (0u8..4).prop_map(Event::Arrive),
            2 => Just(Event::Done),
            1 => (0u16..3000).prop_map(Event::Advance),
        ]
    }

    proptest! {
        /// Under any sequence of arrivals, releases and clock moves: the window is never
        /// exceeded, nothing is dispatched past its tier's budget (no admitted job waits
        /// longer than its tier promises), and every job comes out exactly once
        /// (refused, dispatched, expired or drained).
        #[test]
        fn the_stage_keeps_its_promises(
            events in proptest::collection::vec(event(), 1..300),
            window in 1usize..8,
        ) {
            let config = TierQueueConfig::default();
            let mut s = stage(window);
            let start = Instant::now();
            let mut now = start;
            let mut next = 0u32;
            let mut seen = BTreeSet::new();
            let mut dispatched = 0usize;
            let mut done = 0usize;
            for e in events {
                match e {
                    Event::Arrive(t) => {
                        let tier = Tier::ALL[usize::from(t)];
                        // What the door publishes is what a job arriving now is told.
                        let door = s.door(tier);
                        let outcome = s.handle_enqueue(now, now, tier, (next, now + config.tier(tier).latency_budget));
                        prop_assert_eq!(door.is_some(), outcome.is_err());
                        if let Err(((n, _), _)) = outcome {
                            prop_assert!(seen.insert(n));
                        }
                        next += 1;
                    }
                    Event::Done => {
                        if done < dispatched {
                            s.handle_done(now, 1);
                            done += 1;
                        }
                    }
                    Event::Advance(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        for (tier, (n, deadline)) in s.handle_tick(now, f64::NAN).expired {
                            let half = config.tier(tier).latency_budget / 2;
                            prop_assert!(now >= deadline - half, "expired early");
                            prop_assert!(seen.insert(n));
                        }
                    }
                }
                while let Some(step) = s.poll(now) {
                    match step {
                        Step::Dispatch(jobs) => {
                            for (n, deadline) in jobs {
                                prop_assert!(now < deadline, "dispatched past its deadline");
                                prop_assert!(seen.insert(n));
                                dispatched += 1;
                            }
                        }
                        Step::Expired(tier, (n, deadline)) => {
                            // Never before half the budget (the floor of the time left
                            // for the work after the queue).
                            let half = config.tier(tier).latency_budget / 2;
                            prop_assert!(now >= deadline - half, "expired early");
                            prop_assert!(seen.insert(n));
                        }
                    }
                }
                prop_assert!(s.in_flight() <= window);
                prop_assert_eq!(s.in_flight(), dispatched - done);
            }
            for (n, _) in s.drain(now) {
                prop_assert!(seen.insert(n));
            }
            prop_assert_eq!(seen.len(), next as usize);
        }
    }
}
