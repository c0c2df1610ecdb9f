//! A circuit breaker per dependency (store, enrichment, each peer) as a pure state
//! machine.
//!
//! ```text
//!          5 consecutive failures, or a bad rate
//! Closed ───────────────────────────────────────► Open ◄─────────┐
//!   ▲                                               │ open timeout │ a trial fails
//!   │ 3 trial successes                             ▼              │ or is slow
//!   └───────────────────────────────────────── HalfOpen ──────────┘
//! ```
//!
//! Callers ask [`Breaker::try_acquire`] before a call and report the outcome with the
//! [`Permit`] they got, so that the outcome of a call admitted before a state change
//! (say, a slow call from the closed state finishing during half-open) is recognised as
//! stale and ignored instead of being taken for a trial. State changes are queued for
//! [`Breaker::poll_transition`] so the driving actor can log and count each one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Consecutive failures that open a closed breaker.
pub const FAILURE_STREAK: u32 = 5;
/// The window over which the failure rate is measured.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Slots the rate window rolls by (1 s each with the defaults).
pub const RATE_WINDOW_SLOTS: u32 = 10;
/// Fewest calls in the window before the failure rate is judged.
pub const RATE_MIN_CALLS: u32 = 20;
/// Share of bad calls (failed or slow), in percent, that opens the breaker.
pub const FAILURE_RATE_PERCENT: u8 = 50;
/// Trial calls in flight at once while half-open.
pub const HALF_OPEN_TRIALS: u32 = 3;
/// Trial successes that close a half-open breaker.
pub const HALF_OPEN_SUCCESSES: u32 = 3;
/// The retry hint given while every half-open trial slot is taken: trials are judged
/// as they finish, which the breaker cannot predict.
pub const HALF_OPEN_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Transitions kept for [`Breaker::poll_transition`]; older ones are dropped when a
/// driver does not drain them.
const MAX_PENDING_TRANSITIONS: usize = 16;

/// A config field that does not make sense; no breaker was built from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakerConfigError {
    /// A count or duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
    /// `failure_rate_percent` is not in 1..=100.
    #[error("failure_rate_percent must be in 1..=100, not {0}")]
    Percent(u8),
    /// The rate window is too short to split into its slots.
    #[error("rate_window ({window:?}) must be at least rate_window_slots ({slots}) nanoseconds")]
    WindowShorterThanSlots {
        /// The configured window.
        window: Duration,
        /// The configured number of slots.
        slots: u32,
    },
}

/// When a breaker opens and how it recovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 5).
    pub failure_streak: u32,
    /// Rolling window for the failure rate (default 10 s).
    pub rate_window: Duration,
    /// Slots the window is split into; it rolls one slot at a time (default 10).
    pub rate_window_slots: u32,
    /// Calls that must be in the window before the rate can open the breaker (default 20).
    pub rate_min_calls: u32,
    /// Percentage of bad calls in the window that opens the breaker (default 50).
    pub failure_rate_percent: u8,
    /// A call slower than this counts as bad for the rate even when it succeeds, and a
    /// slow trial reopens a half-open breaker.
    pub slow_call: Duration,
    /// How long the breaker stays open before admitting trials.
    pub open_timeout: Duration,
    /// Trial calls admitted at once while half-open (default 3).
    pub half_open_trials: u32,
    /// Trial successes that close the breaker (default 3).
    pub half_open_successes: u32,
}

impl BreakerConfig {
    /// The local store: open 30 s; a call over 1 s is slow (a group commit takes ms).
    pub fn store() -> Self {
        BreakerConfig {
            failure_streak: FAILURE_STREAK,
            rate_window: RATE_WINDOW,
            rate_window_slots: RATE_WINDOW_SLOTS,
            rate_min_calls: RATE_MIN_CALLS,
            failure_rate_percent: FAILURE_RATE_PERCENT,
            slow_call: Duration::from_secs(1),
            open_timeout: Duration::from_secs(30),
            half_open_trials: HALF_OPEN_TRIALS,
            half_open_successes: HALF_OPEN_SUCCESSES,
        }
    }

    /// The enrichment service: open 60 s; a call over 5 s is slow.
    pub fn enrichment() -> Self {
        BreakerConfig {
            slow_call: Duration::from_secs(5),
            open_timeout: Duration::from_secs(60),
            ..BreakerConfig::store()
        }
    }

    /// An external dependency: open 120 s; a call over 10 s is slow.
    pub fn external() -> Self {
        BreakerConfig {
            slow_call: Duration::from_secs(10),
            open_timeout: Duration::from_secs(120),
            ..BreakerConfig::store()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        let zero = |field| Err(BreakerConfigError::Zero { field });
        if self.failure_streak == 0 {
            return zero("failure_streak");
        }
        if self.rate_window_slots == 0 {
            return zero("rate_window_slots");
        }
        if self.rate_window.as_nanos() < u128::from(self.rate_window_slots) {
            return Err(BreakerConfigError::WindowShorterThanSlots {
                window: self.rate_window,
                slots: self.rate_window_slots,
            });
        }
        if self.rate_min_calls == 0 {
            return zero("rate_min_calls");
        }
        if !(1..=100).contains(&self.failure_rate_percent) {
            return Err(BreakerConfigError::Percent(self.failure_rate_percent));
        }
        if self.slow_call.is_zero() {
            return zero("slow_call");
        }
        if self.open_timeout.is_zero() {
            return zero("open_timeout");
        }
        if self.half_open_trials == 0 {
            return zero("half_open_trials");
        }
        if self.half_open_successes == 0 {
            return zero("half_open_successes");
        }
        Ok(())
    }
}

impl Default for BreakerConfig {
    /// The store preset.
    fn default() -> Self {
        BreakerConfig::store()
    }
}

/// The breaker's state as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are rejected until the open timeout elapses.
    Open,
    /// A few trial calls go through to probe the dependency.
    HalfOpen,
    /// Opened by an operator; rejects until [`Breaker::reset`].
    ForcedOpen,
}

impl BreakerState {
    /// Whether callers are turned away at once (no trial can be made).
    pub fn rejects(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }
}

/// Why the state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitionReason {
    /// This many failures in a row.
    ConsecutiveFailures(u32),
    /// `bad` of the last `calls` calls in the window failed or were slow.
    FailureRate {
        /// Calls in the window.
        calls: u32,
        /// Of which failed or slow.
        bad: u32,
    },
    /// The open timeout elapsed: time to probe.
    OpenTimeoutElapsed,
    /// A half-open trial failed.
    TrialFailed,
    /// A half-open trial succeeded but slower than `slow_call`.
    TrialSlow,
    /// Enough half-open trials succeeded.
    TrialsSucceeded,
    /// [`Breaker::force_open`].
    Forced,
    /// [`Breaker::reset`].
    Reset,
}

/// What an operator can do to a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerCommand {
    /// Open it until reset: every call is refused at once.
    ForceOpen,
    /// Close it and forget its history.
    Reset,
}

/// One change of state, for the driver to log and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
}

/// Leave to make one call; hand it back with the outcome. Neither `Clone` nor `Copy`, so
/// each admitted call reports at most once.
#[must_use = "report the outcome with on_success, on_failure or on_cancel"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    /// The breaker's generation (one per state entered) when the call was admitted.
    generation: u64,
}

/// The answer to [`Breaker::try_acquire`].
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Make the call and report its outcome with this permit.
    Allowed(Permit),
    /// Do not call; the dependency is considered down.
    Rejected {
        /// When asking again may succeed: exact while open, a hint while half-open or
        /// forced open. Never zero.
        retry_after: Duration,
    },
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Closed { streak: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
    ForcedOpen,
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
            Phase::ForcedOpen => BreakerState::ForcedOpen,
        }
    }
}

/// Calls and bad calls over a rolling window of fixed slots; a call is never counted
/// once it is older than the window.
#[derive(Clone, Debug)]
struct OutcomeWindow {
    slot_nanos: u128,
    epoch: Instant,
    head: u128,
    /// (calls, bad) per slot.
    slots: Box<[(u32, u32)]>,
}

impl OutcomeWindow {
    fn new(window: Duration, slots: u32, now: Instant) -> Self {
        OutcomeWindow {
            slot_nanos: window.as_nanos() / u128::from(slots),
            epoch: now,
            head: 0,
            slots: vec![(0, 0); slots as usize].into_boxed_slice(),
        }
    }

    fn record(&mut self, now: Instant, bad: bool) -> (u32, u32) {
        let index = now.saturating_duration_since(self.epoch).as_nanos() / self.slot_nanos;
        let len = self.slots.len() as u128;
        if index > self.head {
            for i in 1..=(index - self.head).min(len) {
                self.slots[((self.head + i) % len) as usize] = (0, 0);
            }
            self.head = index;
        }
        let slot = &mut self.slots[(self.head % len) as usize];
        slot.0 = slot.0.saturating_add(1);
        slot.1 = slot.1.saturating_add(u32::from(bad));
        self.slots.iter().fold((0u32, 0u32), |(c, b), &(sc, sb)| {
            (c.saturating_add(sc), b.saturating_add(sb))
        })
    }

    fn clear(&mut self) {
        self.slots.fill((0, 0));
    }
}

/// One dependency's circuit breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    phase: Phase,
    /// Bumped on every state entered, so permits from an earlier state are stale.
    generation: u64,
    window: OutcomeWindow,
    transitions: VecDeque<Transition>,
}

impl Breaker {
    /// A closed breaker with an empty window starting at `now`.
    pub fn new(config: BreakerConfig, now: Instant) -> Result<Self, BreakerConfigError> {
        config.validate()?;
        Ok(Breaker {
            config,
            phase: Phase::Closed { streak: 0 },
            generation: 0,
            window: OutcomeWindow::new(config.rate_window, config.rate_window_slots, now),
            transitions: VecDeque::new(),
        })
    }

    /// Takes `config` from now on, keeping the state: an open breaker stays open until
    /// the time it was given, and a new window length or slot count starts an empty
    /// window. An invalid `config` changes nothing.
    pub fn reconfigure(
        &mut self,
        config: BreakerConfig,
        now: Instant,
    ) -> Result<(), BreakerConfigError> {
        config.validate()?;
        if (config.rate_window, config.rate_window_slots)
            != (self.config.rate_window, self.config.rate_window_slots)
        {
            self.window = OutcomeWindow::new(config.rate_window, config.rate_window_slots, now);
        }
        self.config = config;
        Ok(())
    }

    /// May a call go out at `now`? An open breaker whose timeout has elapsed turns
    /// half-open here and admits this call as a trial.
    pub fn try_acquire(&mut self, now: Instant) -> Admission {
        self.tick(now);
        match &mut self.phase {
            Phase::Closed { .. } => Admission::Allowed(Permit {
                generation: self.generation,
            }),
            Phase::Open { until } => Admission::Rejected {
                // `tick` left it open, so `until` is still ahead: never zero.
                retry_after: *until - now,
            },
            Phase::HalfOpen { in_flight, .. } if *in_flight < self.config.half_open_trials => {
                *in_flight += 1;
                Admission::Allowed(Permit {
                    generation: self.generation,
                })
            }
            Phase::HalfOpen { .. } => Admission::Rejected {
                retry_after: HALF_OPEN_BUSY_RETRY_AFTER,
            },
            Phase::ForcedOpen => Admission::Rejected {
                retry_after: self.config.open_timeout,
            },
        }
    }

    /// Applies the passage of time: an open breaker past its timeout turns half-open.
    /// A driver that publishes the state calls this at [`next_deadline`](Self::next_deadline).
    pub fn tick(&mut self, now: Instant) {
        match self.phase {
            Phase::Open { until } if now >= until => self.enter(
                Phase::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                },
                TransitionReason::OpenTimeoutElapsed,
            ),
            _ => {}
        }
    }

    /// When [`tick`](Self::tick) will next change the state, if time alone can.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// The call admitted with `permit` succeeded after `duration`; a call slower than
    /// `slow_call` counts as bad for the failure rate and fails a half-open trial.
    pub fn on_success(&mut self, now: Instant, permit: Permit, duration: Duration) {
        if permit.generation != self.generation {
            return;
        }
        let slow = duration > self.config.slow_call;
        match &mut self.phase {
            Phase::Closed { streak } => {
                *streak = 0;
                self.record_closed(now, slow);
            }
            Phase::HalfOpen { .. } if slow => self.open(now, TransitionReason::TrialSlow),
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                *in_flight -= 1;
                *successes += 1;
                if *successes >= self.config.half_open_successes {
                    self.enter(
                        Phase::Closed { streak: 0 },
                        TransitionReason::TrialsSucceeded,
                    );
                }
            }
            // No permit of the current generation is handed out in these states.
            Phase::Open { .. } | Phase::ForcedOpen => {}
        }
    }

    /// The call admitted with `permit` failed (error or timeout).
    pub fn on_failure(&mut self, now: Instant, permit: Permit) {
        if permit.generation != self.generation {
            return;
        }
        match &mut self.phase {
            Phase::Closed { streak } => {
                *streak += 1;
                let streak = *streak;
                if streak >= self.config.failure_streak {
                    self.open(now, TransitionReason::ConsecutiveFailures(streak));
                } else {
                    self.record_closed(now, true);
                }
            }
            Phase::HalfOpen { .. } => self.open(now, TransitionReason::TrialFailed),
            Phase::Open { .. } | Phase::ForcedOpen => {}
        }
    }

    /// The call admitted with `permit` was abandoned before an outcome (the caller gave
    /// up): frees its half-open trial slot, judges nothing.
    pub fn on_cancel(&mut self, permit: Permit) {
        if permit.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { in_flight, .. } = &mut self.phase {
            *in_flight -= 1;
        }
    }

    /// The current state (as of the last call; see [`tick`](Self::tick)).
    pub fn state(&self) -> BreakerState {
        self.phase.state()
    }

    /// Opens the breaker until [`reset`](Self::reset), whatever the dependency does
    /// (operator command).
    pub fn force_open(&mut self) {
        if !matches!(self.phase, Phase::ForcedOpen) {
            self.enter(Phase::ForcedOpen, TransitionReason::Forced);
        }
    }

    /// Closes the breaker and forgets every count (operator command). Outcomes of calls
    /// admitted before the reset are ignored.
    pub fn reset(&mut self) {
        self.enter(Phase::Closed { streak: 0 }, TransitionReason::Reset);
    }

    /// The oldest state change not yet taken; drain after every input.
    pub fn poll_transition(&mut self) -> Option<Transition> {
        self.transitions.pop_front()
    }

    fn record_closed(&mut self, now: Instant, bad: bool) {
        let (calls, bad) = self.window.record(now, bad);
        if calls >= self.config.rate_min_calls
            && u64::from(bad) * 100
                >= u64::from(calls) * u64::from(self.config.failure_rate_percent)
        {
            self.open(now, TransitionReason::FailureRate { calls, bad });
        }
    }

    fn open(&mut self, now: Instant, reason: TransitionReason) {
        let until = now + self.config.open_timeout;
        self.enter(Phase::Open { until }, reason);
    }

    fn enter(&mut self, phase: Phase, reason: TransitionReason) {
        let from = self.phase.state();
        self.phase = phase;
        self.generation += 1;
        // Each closed period judges only its own calls.
        self.window.clear();
        let to = phase.state();
        if from == to {
            // A reset of a closed breaker: counts cleared, nothing to report.
            return;
        }
        if self.transitions.len() == MAX_PENDING_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(Transition { from, to, reason });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use BreakerState::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn permit(b: &mut Breaker, now: Instant) -> Permit {
        match b.try_acquire(now) {
            Admission::Allowed(p) => p,
            other => panic!("expected a permit, got {other:?}"),
        }
    }

    fn fail(b: &mut Breaker, now: Instant) {
        let p = permit(b, now);
        b.on_failure(now, p);
    }

    fn succeed(b: &mut Breaker, now: Instant, took: Duration) {
        let p = permit(b, now);
        b.on_success(now, p, took);
    }

    fn transitions(b: &mut Breaker) -> Vec<(BreakerState, BreakerState, TransitionReason)> {
        std::iter::from_fn(|| b.poll_transition())
            .map(|t| (t.from, t.to, t.reason))
            .collect()
    }

    fn opened(t0: Instant) -> Breaker {
        let mut b = Breaker::new(BreakerConfig::store(), t0).unwrap();
        for _ in 0..5 {
            fail(&mut b, t0);
        }
        assert_eq!(b.state(), Open);
        transitions(&mut b);
        b
    }

    #[test]
    fn presets_match_the_design() {
        let table = [
            (BreakerConfig::store(), 30),
            (BreakerConfig::enrichment(), 60),
            (BreakerConfig::external(), 120),
            (BreakerConfig::default(), 30),
        ];
        for (c, open) in table {
            assert_eq!(c.open_timeout, secs(open));
            assert_eq!((c.failure_streak, c.half_open_successes), (5, 3));
            assert_eq!(c.validate(), Ok(()));
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let base = BreakerConfig::store();
        let table = [
            (
                BreakerConfig {
                    failure_streak: 0,
                    ..base
                },
                "failure_streak must be greater than zero",
            ),
            (
                BreakerConfig {
                    rate_min_calls: 0,
                    ..base
                },
                "rate_min_calls must be greater than zero",
            ),
            (
                BreakerConfig {
                    failure_rate_percent: 101,
                    ..base
                },
                "failure_rate_percent must be in 1..=100, not 101",
            ),
            (
                BreakerConfig {
                    open_timeout: Duration::ZERO,
                    ..base
                },
                "open_timeout must be greater than zero",
            ),
            (
                BreakerConfig {
                    half_open_trials: 0,
                    ..base
                },
                "half_open_trials must be greater than zero",
            ),
            (
                BreakerConfig {
                    rate_window: Duration::from_nanos(5),
                    ..base
                },
                "rate_window (5ns) must be at least rate_window_slots (10) nanoseconds",
            ),
        ];
        for (config, message) in table {
            assert_eq!(
                Breaker::new(config, Instant::now())
                    .unwrap_err()
                    .to_string(),
                message
            );
        }
    }

    #[test]
    fn five_consecutive_failures_open_and_a_success_restarts_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::store(), t0).unwrap();
        for _ in 0..4 {
            fail(&mut b, t0);
        }
        succeed(&mut b, t0, ms(1));
        for _ in 0..4 {
            fail(&mut b, t0);
        }
        assert_eq!(b.state(), Closed, "4 + 4 failures, not 5 in a row");
        fail(&mut b, t0);
        assert_eq!(
            transitions(&mut b),
            vec![(Closed, Open, TransitionReason::ConsecutiveFailures(5))]
        );
    }

    #[test]
    fn the_failure_rate_opens_once_the_window_holds_enough_calls() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::store(), t0).unwrap();
        // Alternate: 50 % failures but never two in a row.
        for i in 0..19 {
            if i % 2 == 0 {
                fail(&mut b, t0 + ms(i * 100));
            } else {
                succeed(&mut b, t0 + ms(i * 100), ms(1));
            }
        }
        assert_eq!(b.state(), Closed, "19 calls: under the minimum of 20");
        succeed(&mut b, t0 + ms(1_900), ms(1));
        assert_eq!(
            transitions(&mut b),
            vec![(
                Closed,
                Open,
                TransitionReason::FailureRate { calls: 20, bad: 10 }
            )]
        );
    }

    #[test]
    fn slow_successes_count_as_bad_for_the_rate() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::store(), t0).unwrap();
        for i in 0..20 {
            let took = if i % 2 == 0 { secs(2) } else { ms(1) };
            succeed(&mut b, t0 + ms(i * 100), took);
        }
        assert_eq!(b.state(), Open);
    }

    #[test]
    fn old_calls_leave_the_rate_window() {
        // 8 bad of 10 calls at t0, then 9 bad of 20 later: opens only if the old calls
        // still count (17 of 30), not once they have rolled out (9 of 20).
        for (later, expected) in [(secs(5), Open), (secs(11), Closed)] {
            let t0 = Instant::now();
            let mut b = Breaker::new(BreakerConfig::store(), t0).unwrap();
            for _ in 0..2 {
                for _ in 0..4 {
                    fail(&mut b, t0);
                }
                succeed(&mut b, t0, ms(1));
            }
            for i in 0..20 {
                if b.state() != Closed {
                    break;
                }
                if i % 2 == 0 && i < 18 {
                    fail(&mut b, t0 + later);
                } else {
                    succeed(&mut b, t0 + later, ms(1));
                }
            }
            assert_eq!(b.state(), expected, "second round at +{later:?}");
        }
    }

    #[test]
    fn open_rejects_with_the_exact_time_left_then_probes() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        for (at, left) in [(0, 30_000), (1, 29_999), (29_999, 1)] {
            assert_eq!(
                b.try_acquire(t0 + ms(at)),
                Admission::Rejected {
                    retry_after: ms(left)
                }
            );
        }
        assert_eq!(b.next_deadline(), Some(t0 + secs(30)));
        let trials: Vec<_> = (0..3).map(|_| permit(&mut b, t0 + secs(30))).collect();
        assert_eq!(
            b.try_acquire(t0 + secs(30)),
            Admission::Rejected {
                retry_after: HALF_OPEN_BUSY_RETRY_AFTER
            },
            "only 3 trials at once"
        );
        for p in trials {
            assert_eq!(b.state(), HalfOpen);
            b.on_success(t0 + secs(31), p, ms(5));
        }
        assert_eq!(
            transitions(&mut b),
            vec![
                (Open, HalfOpen, TransitionReason::OpenTimeoutElapsed),
                (HalfOpen, Closed, TransitionReason::TrialsSucceeded),
            ]
        );
    }

    #[test]
    fn a_bad_trial_reopens_with_a_fresh_timeout() {
        type Outcome = fn(&mut Breaker, Instant, Permit);
        let table: [(&str, Outcome, TransitionReason); 2] = [
            (
                "failed",
                |b, now, p| b.on_failure(now, p),
                TransitionReason::TrialFailed,
            ),
            (
                "slow",
                |b, now, p| b.on_success(now, p, secs(2)),
                TransitionReason::TrialSlow,
            ),
        ];
        for (name, outcome, reason) in table {
            let t0 = Instant::now();
            let probe = t0 + secs(30);
            let mut b = opened(t0);
            let p = permit(&mut b, probe);
            outcome(&mut b, probe + secs(1), p);
            assert_eq!(
                transitions(&mut b),
                vec![
                    (Open, HalfOpen, TransitionReason::OpenTimeoutElapsed),
                    (HalfOpen, Open, reason),
                ],
                "{name}"
            );
            assert_eq!(
                b.try_acquire(probe + secs(1)),
                Admission::Rejected {
                    retry_after: secs(30)
                },
                "{name}: the new timeout runs from the reopening"
            );
        }
    }

    #[test]
    fn a_stale_permit_is_not_a_trial() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::store(), t0).unwrap();
        let stale_failure = permit(&mut b, t0);
        let stale_success = permit(&mut b, t0);
        for _ in 0..5 {
            fail(&mut b, t0);
        }
        let now = t0 + secs(30);
        let trials: Vec<_> = (0..3).map(|_| permit(&mut b, now)).collect();
        // Calls admitted while closed finish during half-open: neither is a trial.
        b.on_failure(now, stale_failure);
        assert_eq!(b.state(), HalfOpen, "a stale failure does not reopen");
        b.on_success(now, stale_success, ms(1));
        assert!(
            matches!(b.try_acquire(now), Admission::Rejected { .. }),
            "a stale success frees no trial slot"
        );
        let mut trials = trials.into_iter();
        for _ in 0..2 {
            b.on_success(now, trials.next().unwrap(), ms(1));
        }
        assert_eq!(b.state(), HalfOpen, "two trial successes of three");
        b.on_success(now, trials.next().unwrap(), ms(1));
        assert_eq!(b.state(), Closed);
    }

    #[test]
    fn a_cancelled_trial_frees_its_slot() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let now = t0 + secs(30);
        let trials: Vec<_> = (0..3).map(|_| permit(&mut b, now)).collect();
        assert!(matches!(b.try_acquire(now), Admission::Rejected { .. }));
        let mut trials = trials.into_iter();
        b.on_cancel(trials.next().unwrap());
        assert!(matches!(b.try_acquire(now), Admission::Allowed(_)));
    }

    #[test]
    fn force_open_holds_until_reset() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::store(), t0).unwrap();
        let before = permit(&mut b, t0);
        b.force_open();
        assert_eq!(
            b.try_acquire(t0 + secs(3_600)),
            Admission::Rejected {
                retry_after: secs(30)
            }
        );
        b.reset();
        assert_eq!(b.state(), Closed);
        // The call admitted before the force does not count against the new period.
        b.on_failure(t0, before);
        for _ in 0..4 {
            fail(&mut b, t0);
        }
        assert_eq!(b.state(), Closed);
        assert_eq!(
            transitions(&mut b),
            vec![
                (Closed, ForcedOpen, TransitionReason::Forced),
                (ForcedOpen, Closed, TransitionReason::Reset),
            ]
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Acquire,
        Succeed(usize, u64),
        Fail(usize),
        Cancel(usize),
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Acquire),
            3 => (any::<usize>(), 0u64..300).prop_map(|(i, d)| Step::Succeed(i, d)),
            3 => any::<usize>().prop_map(Step::Fail),
            1 => any::<usize>().prop_map(Step::Cancel),
            2 => (0u64..1_500).prop_map(Step::Wait),
        ]
    }

    proptest! {
        #[test]
        fn trials_stay_bounded_and_open_rejects_until_its_timeout(
            trials in 1u32..5,
            successes in 1u32..5,
            steps in proptest::collection::vec(step(), 0..300),
        ) {
            let config = BreakerConfig {
                failure_streak: 2,
                rate_min_calls: 4,
                slow_call: ms(200),
                open_timeout: secs(1),
                half_open_trials: trials,
                half_open_successes: successes,
                ..BreakerConfig::store()
            };
            let t0 = Instant::now();
            let mut now = t0;
            let mut b = Breaker::new(config, t0).unwrap();
            let mut state = Closed;
            // Outstanding permits, tagged with the half-open episode they are trials of.
            let mut permits: Vec<(Permit, Option<u32>)> = Vec::new();
            let mut episode = 0u32;
            let mut open_until = None;
            for s in steps {
                let before = now;
                let mut admitted = None;
                match s {
                    Step::Acquire => match b.try_acquire(now) {
                        Admission::Allowed(p) => {
                            prop_assert!(open_until.is_none_or(|u| now >= u),
                                "admitted while open");
                            admitted = Some(p);
                        }
                        Admission::Rejected { retry_after } => {
                            prop_assert!(!retry_after.is_zero());
                            if let Some(until) = open_until.filter(|&u| now < u) {
                                prop_assert_eq!(retry_after, until - now);
                            }
                        }
                    },
                    Step::Succeed(i, d) if !permits.is_empty() => {
                        let (p, _) = permits.swap_remove(i % permits.len());
                        b.on_success(now, p, ms(d));
                    }
                    Step::Fail(i) if !permits.is_empty() => {
                        let (p, _) = permits.swap_remove(i % permits.len());
                        b.on_failure(now, p);
                    }
                    Step::Cancel(i) if !permits.is_empty() => {
                        let (p, _) = permits.swap_remove(i % permits.len());
                        b.on_cancel(p);
                    }
                    Step::Wait(d) => now += ms(d),
                    _ => {}
                }
                while let Some(t) = b.poll_transition() {
                    prop_assert_eq!(t.from, state, "transitions chain");
                    state = t.to;
                    match t.to {
                        Open => open_until = Some(before + config.open_timeout),
                        HalfOpen => {
                            episode += 1;
                            open_until = None;
                        }
                        _ => open_until = None,
                    }
                }
                prop_assert_eq!(state, b.state());
                if let Some(p) = admitted {
                    permits.push((p, (state == HalfOpen).then_some(episode)));
                }
                if state == HalfOpen {
                    let in_flight = permits.iter().filter(|(_, e)| *e == Some(episode)).count();
                    prop_assert!(in_flight <= trials as usize,
                        "{} trials in flight, at most {}", in_flight, trials);
                }
            }
        }
    }

    #[test]
    fn a_reconfigured_breaker_keeps_its_state_and_takes_the_new_limits() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::store(), t0).unwrap();
        b.force_open();
        let config = BreakerConfig {
            failure_streak: 2,
            ..BreakerConfig::store()
        };
        b.reconfigure(config, t0).unwrap();
        assert_eq!(b.state(), ForcedOpen);
        b.reset();
        fail(&mut b, t0);
        assert_eq!(b.state(), Closed);
        fail(&mut b, t0 + ms(1));
        assert_eq!(b.state(), Open, "two failures open it under the new streak");
        let invalid = BreakerConfig {
            failure_streak: 0,
            ..BreakerConfig::store()
        };
        assert!(b.reconfigure(invalid, t0).is_err());
        assert_eq!(b.config.failure_streak, 2);
        let _ = secs(0);
    }
}
