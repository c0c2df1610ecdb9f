//! A circuit breaker as its owning actor drives it: outcomes go into the pure
//! [`Breaker`], and its state is published on a `watch` so that callers decide without
//! a message round trip (they read the state; the owner alone writes it).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::policy::breaker::{
    Admission, Breaker, BreakerConfig, BreakerConfigError, BreakerState, Permit, Transition,
};
use crate::telemetry::{BREAKER_STATE, BREAKER_TRANSITIONS};

/// Where a breaker's state is published; shared by every incarnation of its owner.
pub type BreakerBoard = Arc<watch::Sender<BreakerState>>;

/// A new board for a breaker that starts closed.
pub fn new_board() -> BreakerBoard {
    Arc::new(watch::channel(BreakerState::Closed).0)
}

/// Whether callers should be turned away at once (no trial can be made).
pub fn rejects(state: BreakerState) -> bool {
    state.rejects()
}

/// The lowercase name of a state, for logs, metrics and `chorus ctl`.
pub fn state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half-open",
        BreakerState::Open => "open",
        BreakerState::ForcedOpen => "forced-open",
    }
}

/// A breaker for one dependency, owned by the actor that sees its outcomes.
pub struct PublishedBreaker {
    dependency: &'static str,
    breaker: Breaker,
    board: BreakerBoard,
}

impl PublishedBreaker {
    /// A closed breaker for `dependency`, published on `board`.
    pub fn new(
        dependency: &'static str,
        config: BreakerConfig,
        board: BreakerBoard,
        now: Instant,
    ) -> Result<Self, BreakerConfigError> {
        let mut published = PublishedBreaker {
            dependency,
            breaker: Breaker::new(config, now)?,
            board,
        };
        published.publish();
        Ok(published)
    }

    /// Leave to make one call (see [`Breaker::try_acquire`]).
    pub fn try_acquire(&mut self, now: Instant) -> Admission {
        let admission = self.breaker.try_acquire(now);
        self.publish();
        admission
    }

    /// The call made with `permit` succeeded after `duration`.
    pub fn on_success(&mut self, now: Instant, permit: Permit, duration: std::time::Duration) {
        self.breaker.on_success(now, permit, duration);
        self.publish();
    }

    /// The call made with `permit` failed.
    pub fn on_failure(&mut self, now: Instant, permit: Permit) {
        self.breaker.on_failure(now, permit);
        self.publish();
    }

    /// The call made with `permit` was abandoned before an outcome.
    pub fn on_cancel(&mut self, permit: Permit) {
        self.breaker.on_cancel(permit);
        self.publish();
    }

    /// Lets time-driven changes (open → half-open) happen without a call.
    pub fn tick(&mut self, now: Instant) {
        self.breaker.tick(now);
        self.publish();
    }

    /// When [`PublishedBreaker::tick`] should run next, if a timed change is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.breaker.next_deadline()
    }

    /// Takes `config` from now on, keeping the state (see [`Breaker::reconfigure`]).
    pub fn reconfigure(
        &mut self,
        config: BreakerConfig,
        now: Instant,
    ) -> Result<(), BreakerConfigError> {
        self.breaker.reconfigure(config, now)
    }

    /// Opens the breaker until [`PublishedBreaker::reset`] (an operator's action).
    pub fn force_open(&mut self) {
        self.breaker.force_open();
        self.publish();
    }

    /// Closes the breaker and forgets its history (an operator's action).
    pub fn reset(&mut self) {
        self.breaker.reset();
        self.publish();
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Logs and counts every transition since the last call, and publishes the state.
    fn publish(&mut self) {
        let state = self.breaker.state();
        let breaker = &mut self.breaker;
        let transitions = std::iter::from_fn(|| breaker.poll_transition());
        publish_breaker(self.dependency, &self.board, transitions, state);
    }
}

/// Reports a breaker's transitions (logs, metrics) and publishes its `state` on `board`
/// and as a gauge; for owners that hold the pure [`Breaker`] inside a larger state
/// machine.
pub fn publish_breaker(
    dependency: &'static str,
    board: &BreakerBoard,
    transitions: impl IntoIterator<Item = Transition>,
    state: BreakerState,
) {
    for t in transitions {
        let (from, to) = (state_name(t.from), state_name(t.to));
        if t.to == BreakerState::Closed {
            info!(dependency, from, to, reason = ?t.reason, "circuit breaker closed");
        } else {
            warn!(dependency, from, to, reason = ?t.reason, "circuit breaker changed state");
        }
        metrics::counter!(BREAKER_TRANSITIONS, "dependency" => dependency, "to" => to).increment(1);
    }
    let level = match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
        BreakerState::ForcedOpen => 3.0,
    };
    metrics::gauge!(BREAKER_STATE, "dependency" => dependency).set(level);
    board.send_if_modified(|published| {
        let changed = *published != state;
        *published = state;
        changed
    });
}
