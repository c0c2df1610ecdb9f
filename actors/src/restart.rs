//! Restart intensity as a pure state machine: should a failed child be restarted, and
//! after how long, or has it failed too often and the supervisor must give up?

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Limits on restarting a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restarts allowed within `window`; one more failure gives up.
    pub max_restarts: usize,
    /// The sliding window over which restarts are counted.
    pub window: Duration,
    /// Delay before the first restart in a window; doubles with each further one.
    pub base_backoff: Duration,
    /// Longest delay before a restart.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    /// At most 5 restarts in 10 s; backoff 10 ms doubling up to 1 s.
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(10),
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// What to do about a failed child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart it after this delay.
    RestartAfter(Duration),
    /// It failed too often: stop and escalate.
    GiveUp,
}

/// The restart history of one child.
#[derive(Clone, Debug)]
pub struct RestartIntensity {
    policy: RestartPolicy,
    restarts: VecDeque<Instant>,
}

impl RestartIntensity {
    /// A child with no restarts yet.
    pub fn new(policy: RestartPolicy) -> Self {
        RestartIntensity {
            policy,
            restarts: VecDeque::new(),
        }
    }

    /// The child failed at `now`: decide, and count the restart if one is granted.
    pub fn handle_failure(&mut self, now: Instant) -> RestartDecision {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= self.policy.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() >= self.policy.max_restarts {
            return RestartDecision::GiveUp;
        }
        let exponent = self.restarts.len().min(16) as u32;
        let backoff = self
            .policy
            .base_backoff
            .saturating_mul(1 << exponent)
            .min(self.policy.max_backoff);
        self.restarts.push_back(now);
        RestartDecision::RestartAfter(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_gives_up_after_five_in_ten_seconds() {
        let mut r = RestartIntensity::new(RestartPolicy::default());
        let t0 = Instant::now();
        let delays: Vec<_> = (0..5)
            .map(|i| r.handle_failure(t0 + Duration::from_millis(i * 100)))
            .collect();
        let ms = |m| RestartDecision::RestartAfter(Duration::from_millis(m));
        assert_eq!(delays, vec![ms(10), ms(20), ms(40), ms(80), ms(160)]);
        assert_eq!(
            r.handle_failure(t0 + Duration::from_secs(1)),
            RestartDecision::GiveUp
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let mut r = RestartIntensity::new(RestartPolicy::default());
        let t0 = Instant::now();
        for i in 0..5 {
            r.handle_failure(t0 + Duration::from_secs(i));
        }
        // At t0+10.5 s only the restart at t0 has left the window: four remain.
        assert_eq!(
            r.handle_failure(t0 + Duration::from_millis(10_500)),
            RestartDecision::RestartAfter(Duration::from_millis(160))
        );
    }

    #[test]
    fn backoff_is_capped() {
        let policy = RestartPolicy {
            max_restarts: 100,
            ..RestartPolicy::default()
        };
        let mut r = RestartIntensity::new(policy);
        let now = Instant::now();
        let last = (0..20).map(|_| r.handle_failure(now)).last().unwrap();
        assert_eq!(last, RestartDecision::RestartAfter(Duration::from_secs(1)));
    }
}
