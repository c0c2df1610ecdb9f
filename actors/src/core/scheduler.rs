//! The tier stage: the four tier queues ([`TierScheduler`]), the degradation policy and
//! the window of jobs allowed past them, as one state machine.
//!
//! ```text
//! handle_enqueue(now, tier, job) ─┐                    ┌─ Dispatch(jobs): the window grew
//! handle_done(slots) ─────────────┼─► poll(now) ───────┤
//! handle_tick(now, cpu) ──────────┘  (until None)      └─ Expired(tier, job): answer Timeout
//! ```
//!
//! At most `max_in_flight` jobs are past the queues; the driver gives each dispatched
//! batch a credit whose release is [`TierStage::handle_done`]. Under overload the queue
//! that grows is this one, where realtime work is served first, an entry past its
//! deadline is answered `Timeout` instead of processed, and a full tier is refused
//! `Overloaded{tier, retry_after_ms}` at once. Every `TICK` the driver hands in the
//! process's CPU use; the queues' fill and it move the degradation level, which the
//! driver publishes for admission to shed by.

use std::time::Instant;

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
        })
    }

    /// Queues `job` in `tier`; a full tier gives it back with its `Overloaded` answer.
    pub fn handle_enqueue(
        &mut self,
        now: Instant,
        tier: Tier,
        job: J,
    ) -> Result<(), (J, ErrorCode)> {
        self.scheduler.push(now, tier, job).map_err(
            |Rejected {
                 tier,
                 retry_after,
                 item,
             }| {
                let error = ErrorCode::Overloaded {
                    tier,
                    retry_after_ms: retry_after.as_millis().max(1) as u64,
                };
                (item, error)
            },
        )
    }

    /// `slots` jobs no longer need the pipeline (a credit was released).
    pub fn handle_done(&mut self, slots: usize) {
        self.in_flight = self.in_flight.saturating_sub(slots);
    }

    /// The next thing to do at `now`; call until `None`. A `Dispatch` takes its jobs'
    /// slots at once.
    pub fn poll(&mut self, now: Instant) -> Option<Step<J>> {
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
                Some(Popped::Ready { item, .. }) => batch.push(item),
            }
        }
        if batch.is_empty() {
            return None;
        }
        self.in_flight += batch.len();
        Some(Step::Dispatch(batch))
    }

    /// Answers what expired while every slot was busy and moves the level with the load
    /// (`cpu`: the process's CPU use 0.0..=1.0, or NaN when unknown).
    pub fn handle_tick(&mut self, now: Instant, cpu: f64) -> Tick<J> {
        let expired = self.scheduler.drain_expired(now);
        let load = self.scheduler.load(cpu);
        let change = self.degradation.observe(now, load).map(|c| (c, load));
        Tick { expired, change }
    }

    /// Applies an operator's command; the change to publish, if the level moved.
    pub fn degrade(&mut self, command: DegradeCommand) -> Option<(LevelChange, Load)> {
        match command {
            DegradeCommand::Set(level) => self
                .degradation
                .set(level)
                .map(|c| (c, self.scheduler.load(f64::NAN))),
            DegradeCommand::Auto => {
                self.degradation.auto();
                None
            }
        }
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
            s.handle_enqueue(now, Tier::Standard, (n, now)).unwrap();
        }
        let Some(Step::Dispatch(first)) = s.poll(now) else {
            panic!("two fit");
        };
        assert_eq!(first.len(), 2);
        assert_eq!(s.poll(now), None, "the window is full");
        s.handle_done(1);
        assert!(matches!(s.poll(now), Some(Step::Dispatch(j)) if j.len() == 1));
        assert_eq!(s.in_flight(), 2);
    }

    #[test]
    fn realtime_goes_first_and_an_expired_entry_is_never_dispatched() {
        let mut s = stage(1);
        let now = Instant::now();
        s.handle_enqueue(now, Tier::Batch, (0, now)).unwrap();
        s.handle_enqueue(now, Tier::Realtime, (1, now)).unwrap();
        assert!(matches!(s.poll(now), Some(Step::Dispatch(j)) if j[0].0 == 1));
        let late = now + Duration::from_secs(3600);
        s.handle_done(1);
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
            s.handle_enqueue(now, Tier::Priority, (n, now)).unwrap();
        }
        let (_, error) = s.handle_enqueue(now, Tier::Priority, (0, now)).unwrap_err();
        assert!(
            matches!(error, ErrorCode::Overloaded { tier: Tier::Priority, retry_after_ms } if retry_after_ms >= 1)
        );
        assert_eq!(s.drain(now).len(), capacity);
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
        /// exceeded, nothing dispatched is past its tier's deadline, and every job comes
        /// out exactly once (refused, dispatched, expired or drained).
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
                        if let Err(((n, _), _)) = s.handle_enqueue(now, tier, (next, now + config.tier(tier).timeout)) {
                            prop_assert!(seen.insert(n));
                        }
                        next += 1;
                    }
                    Event::Done => {
                        if done < dispatched {
                            s.handle_done(1);
                            done += 1;
                        }
                    }
                    Event::Advance(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        for (_, (n, _)) in s.handle_tick(now, f64::NAN).expired {
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
                        Step::Expired(_, (n, deadline)) => {
                            prop_assert!(now >= deadline);
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
