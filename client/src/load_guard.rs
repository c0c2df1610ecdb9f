//! The client's side of overload, shared by every request of one client: a retry
//! budget, so that retries add at most a fraction to the load (Finagle's and Envoy's
//! rule), and adaptive throttling, so that a fleet of clients refused by an overloaded
//! cluster backs off together (the SRE book's client-side throttling: refuse locally
//! with probability `max(0, (requests − K·accepts) / (requests + 1))`).
//!
//! A pure state machine over the time it is given; the client holds it behind a lock.

use std::time::{Duration, Instant};

/// The settings of a [`LoadGuard`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadGuardConfig {
    /// Retries allowed per request sent (0.2: at most 20 % more load from retries).
    pub retry_ratio: f64,
    /// Retries allowed per second regardless of traffic (a quiet client may still retry).
    pub min_retries_per_sec: f64,
    /// How many refusals per acceptance the throttle tolerates before it refuses
    /// locally (the SRE book's K; 2 lets the cluster see twice what it accepts).
    pub accepts_multiplier: f64,
    /// The window over which requests and acceptances are counted.
    pub throttle_window: Duration,
    /// Requests in the window below which nothing is refused locally (the ratio means
    /// little over a handful of requests).
    pub min_requests: f64,
}

impl Default for LoadGuardConfig {
    fn default() -> Self {
        LoadGuardConfig {
            retry_ratio: 0.2,
            min_retries_per_sec: 10.0,
            accepts_multiplier: 2.0,
            throttle_window: Duration::from_secs(120),
            min_requests: 20.0,
        }
    }
}

/// The window of the retry budget.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// A count that decays exponentially with time constant `window`.
#[derive(Clone, Copy, Debug, Default)]
struct Decaying {
    value: f64,
}

impl Decaying {
    fn decay(&mut self, dt: f64, window: Duration) {
        self.value *= (-dt / window.as_secs_f64()).exp();
    }
}

/// The retry budget and the adaptive throttle of one client.
#[derive(Debug)]
pub struct LoadGuard {
    config: LoadGuardConfig,
    last: Option<Instant>,
    sent: Decaying,
    retried: Decaying,
    requests: Decaying,
    accepts: Decaying,
}

impl LoadGuard {
    /// A guard with nothing counted yet.
    pub fn new(config: LoadGuardConfig) -> Self {
        LoadGuard {
            config,
            last: None,
            sent: Decaying::default(),
            retried: Decaying::default(),
            requests: Decaying::default(),
            accepts: Decaying::default(),
        }
    }

    fn advance(&mut self, now: Instant) {
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let dt = now.saturating_duration_since(last).as_secs_f64();
        self.sent.decay(dt, BUDGET_WINDOW);
        self.retried.decay(dt, BUDGET_WINDOW);
        self.requests.decay(dt, self.config.throttle_window);
        self.accepts.decay(dt, self.config.throttle_window);
    }

    /// The chance that a new request is refused locally now.
    pub fn reject_probability(&self) -> f64 {
        let requests = self.requests.value;
        let accepts = self.accepts.value;
        if requests < self.config.min_requests {
            return 0.0;
        }
        ((requests - self.config.accepts_multiplier * accepts) / (requests + 1.0)).max(0.0)
    }

    /// Whether a new request (a first attempt) may be sent at `now`; `draw` is uniform
    /// in `0.0..1.0`. A request refused here counts as a request the cluster refused,
    /// so the throttle keeps its view of the demand; one sent is counted when it is
    /// answered ([`LoadGuard::record`]), so requests in flight never look refused.
    pub fn admit(&mut self, now: Instant, draw: f64) -> bool {
        self.advance(now);
        let send = draw >= self.reject_probability();
        if send {
            self.sent.value += 1.0;
        } else {
            self.requests.value += 1.0;
        }
        send
    }

    /// An attempt was answered at `now`: `accepted` unless the cluster refused it for
    /// load (`Overloaded`, `RateLimited`).
    pub fn record(&mut self, now: Instant, accepted: bool) {
        self.advance(now);
        self.requests.value += 1.0;
        if accepted {
            self.accepts.value += 1.0;
        }
    }

    /// Whether a retry may be sent at `now`: the retries in the window stay within
    /// `retry_ratio` of the requests sent, plus `min_retries_per_sec`. Takes a token
    /// when it answers yes.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.advance(now);
        let allowed = self.config.retry_ratio * self.sent.value
            + self.config.min_retries_per_sec * BUDGET_WINDOW.as_secs_f64();
        if self.retried.value + 1.0 > allowed {
            return false;
        }
        self.retried.value += 1.0;
        true
    }
}

/// `asked` with up to half of it again, drawn from `jitter` in `0.0..1.0`: clients told
/// to come back after the same time do not all come back at once.
pub fn jittered(asked: Duration, jitter: f64) -> Duration {
    asked + asked.mul_f64(0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a seeded, dependency-free source of uniform draws.
    struct Draws(u64);

    impl Draws {
        fn random(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A fleet of requests at `rate` per second for `seconds` against a cluster that
    /// accepts each attempt with probability `accept`; every refused attempt is retried
    /// while the budget allows. Returns (requests, attempts sent, first attempts sent).
    fn run(rate: f64, seconds: u64, accept: f64, seed: u64) -> (u64, u64, u64) {
        let mut rng = Draws(seed);
        let mut guard = LoadGuard::new(LoadGuardConfig::default());
        let start = Instant::now();
        let total = (rate * seconds as f64) as u64;
        let (mut attempts, mut firsts) = (0u64, 0u64);
        for n in 0..total {
            let now = start + Duration::from_secs_f64(n as f64 / rate);
            if !guard.admit(now, rng.random()) {
                continue;
            }
            firsts += 1;
            attempts += 1;
            let mut accepted = rng.random() < accept;
            guard.record(now, accepted);
            for _ in 0..3 {
                if accepted || !guard.try_retry(now) {
                    break;
                }
                attempts += 1;
                accepted = rng.random() < accept;
                guard.record(now, accepted);
            }
        }
        (total, attempts, firsts)
    }

    #[test]
    fn retries_cannot_multiply_the_offered_load() {
        // Everything refused for 100 s at 1,000 requests a second: without a budget,
        // three retries each would be 4× the load.
        let (requests, attempts, firsts) = run(1000.0, 100, 0.0, 1);
        // The floor: 10 retries a second, and one window's worth at the start.
        let floor = 10.0 * (100.0 + 10.0);
        assert!(
            attempts as f64 <= 1.2 * firsts as f64 + floor,
            "{attempts} attempts for {firsts} first attempts"
        );
        // And the throttle has the fleet send a small fraction of what it is asked.
        assert!(
            (firsts as f64) < 0.1 * requests as f64,
            "{firsts} of {requests} sent while everything is refused"
        );
    }

    #[test]
    fn a_healthy_cluster_sees_every_request() {
        let (requests, attempts, firsts) = run(1000.0, 30, 1.0, 2);
        assert_eq!(firsts, requests);
        assert_eq!(attempts, requests);
    }

    #[test]
    fn half_refused_is_still_sent_and_retried_within_the_budget() {
        let (requests, attempts, firsts) = run(1000.0, 60, 0.5, 3);
        // Accepting half is within K = 2: the throttle lets (nearly) everything through.
        assert!(
            firsts as f64 > 0.95 * requests as f64,
            "{firsts} of {requests}"
        );
        assert!(attempts as f64 <= 1.2 * firsts as f64 + 10.0 * (60.0 + 10.0));
    }

    #[test]
    fn requests_in_flight_are_not_counted_as_refused() {
        let mut guard = LoadGuard::new(LoadGuardConfig::default());
        let now = Instant::now();
        // A burst sent before any answer arrives: none is refused locally.
        assert!((0..500).all(|_| guard.admit(now, 0.0)));
        // Then every one of them is refused by the cluster: the next ones mostly are.
        for _ in 0..500 {
            guard.record(now, false);
        }
        assert!(guard.reject_probability() > 0.99);
    }

    #[test]
    fn a_retry_hint_is_spread() {
        let asked = Duration::from_millis(100);
        assert_eq!(jittered(asked, 0.0), asked);
        assert_eq!(jittered(asked, 1.0), Duration::from_millis(150));
        assert_eq!(jittered(asked, 7.0), Duration::from_millis(150));
    }
}
