//! When a failed request is tried again, and after how long: a pure function of the
//! error, the request's idempotence and the attempt number.

use std::time::Duration;

use chorus_protocol::ErrorCode;

use crate::error::ClientError;

/// The retry limits, taken from the client config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Longest delay; a server asking for longer is not retried.
    pub max_backoff: Duration,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Try again after the delay.
    RetryAfter(Duration),
    /// Hand the error to the caller.
    GiveUp,
}

/// Decides whether attempt number `attempt` (0 for the first) is followed by another.
///
/// - Failures before anything was sent (connecting) are retried for every request.
/// - Transport failures after sending (connection lost, stream reset) are retried only
///   for idempotent requests, which may then be applied twice harmlessly.
/// - `RateLimited` and `Overloaded` are refusals before any work: retried after the
///   server's `retry_after_ms` (at least the backoff) and up to half again at random,
///   unless that exceeds `max_backoff`.
/// - `Unavailable` is retried after the backoff, for idempotent requests only.
/// - Everything else (other typed errors, timeouts, TLS, bad config) goes to the caller:
///   a request timeout has already spent the caller's budget.
///
/// `jitter` in `0.0..1.0` spreads retries of many clients apart.
pub(crate) fn decide(
    policy: &RetryPolicy,
    idempotent: bool,
    error: &ClientError,
    attempt: u32,
    jitter: f64,
) -> Decision {
    if attempt >= policy.max_retries {
        return Decision::GiveUp;
    }
    let backoff = backoff(policy, attempt, jitter);
    match error {
        ClientError::Connect { .. } | ClientError::NoServerReachable { .. } => {
            Decision::RetryAfter(backoff)
        }
        ClientError::ConnectionLost { .. } | ClientError::StreamReset { .. } if idempotent => {
            Decision::RetryAfter(backoff)
        }
        ClientError::Server(
            ErrorCode::RateLimited { retry_after_ms }
            | ErrorCode::Overloaded { retry_after_ms, .. },
        ) => {
            let asked = Duration::from_millis(*retry_after_ms);
            if asked > policy.max_backoff {
                Decision::GiveUp
            } else {
                Decision::RetryAfter(crate::load_guard::jittered(asked.max(backoff), jitter))
            }
        }
        ClientError::Server(ErrorCode::Unavailable { .. }) if idempotent => {
            Decision::RetryAfter(backoff)
        }
        _ => Decision::GiveUp,
    }
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random, capped at
/// `max_backoff`.
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exponential = policy
        .initial_backoff
        .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX));
    let capped = exponential.min(policy.max_backoff);
    capped / 2 + capped.div_f64(2.0).mul_f64(jitter.clamp(0.0, 1.0))
}

/// A jitter value in `0.0..1.0` from the standard library's randomly keyed hasher: no
/// RNG dependency for a value that only needs to differ between clients.
pub(crate) fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{ResetCode, Tier};

    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    };

    fn lost() -> ClientError {
        ClientError::ConnectionLost {
            reason: "gone".into(),
        }
    }

    #[test]
    fn retry_decisions_by_error_and_idempotence() {
        let unreachable = ClientError::NoServerReachable {
            tried: 1,
            last_error: "timed out".into(),
        };
        let cases = [
            // (error, idempotent, retried?)
            (lost(), true, true),
            (lost(), false, false),
            (ClientError::reset(ResetCode::ShuttingDown), true, true),
            (ClientError::reset(ResetCode::ShuttingDown), false, false),
            (unreachable.clone(), false, true),
            (unreachable, true, true),
            (ClientError::Timeout, true, false),
            (ClientError::Tls("bad cert".into()), true, false),
            (ClientError::Server(ErrorCode::Unauthorized), true, false),
            (
                ClientError::Server(ErrorCode::invalid("text", "long")),
                true,
                false,
            ),
            (ClientError::Server(ErrorCode::Timeout), true, false),
            (
                ClientError::Server(ErrorCode::Unavailable {
                    reason: "draining".into(),
                }),
                true,
                true,
            ),
            (
                ClientError::Server(ErrorCode::Unavailable {
                    reason: "draining".into(),
                }),
                false,
                false,
            ),
            (
                ClientError::Server(ErrorCode::RateLimited { retry_after_ms: 10 }),
                false,
                true,
            ),
            (ClientError::Protocol("bad response".into()), true, false),
        ];
        for (error, idempotent, retried) in cases {
            let decision = decide(&POLICY, idempotent, &error, 0, 0.5);
            assert_eq!(
                matches!(decision, Decision::RetryAfter(_)),
                retried,
                "{error:?} idempotent={idempotent}: {decision:?}"
            );
        }
    }

    #[test]
    fn retries_stop_at_the_limit() {
        assert!(matches!(
            decide(&POLICY, true, &lost(), 2, 0.0),
            Decision::RetryAfter(_)
        ));
        assert_eq!(decide(&POLICY, true, &lost(), 3, 0.0), Decision::GiveUp);
    }

    #[test]
    fn the_servers_retry_after_is_honoured_within_the_cap() {
        let overloaded = |ms| {
            ClientError::Server(ErrorCode::Overloaded {
                tier: Tier::Batch,
                retry_after_ms: ms,
            })
        };
        assert_eq!(
            decide(&POLICY, true, &overloaded(1500), 0, 0.0),
            Decision::RetryAfter(Duration::from_millis(1500))
        );
        // Shorter than our own backoff: the backoff wins.
        assert_eq!(
            decide(&POLICY, true, &overloaded(1), 0, 0.0),
            Decision::RetryAfter(Duration::from_millis(50))
        );
        assert_eq!(
            decide(&POLICY, true, &overloaded(60_000), 0, 0.0),
            Decision::GiveUp
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let ms = |attempt, jitter| backoff(&POLICY, attempt, jitter).as_millis();
        assert_eq!((ms(0, 0.0), ms(0, 1.0)), (50, 100));
        assert_eq!((ms(1, 0.0), ms(1, 1.0)), (100, 200));
        assert_eq!((ms(2, 0.5), ms(3, 0.5)), (300, 600));
        assert_eq!((ms(10, 1.0), ms(40, 1.0)), (2000, 2000));
    }

    #[test]
    fn jitter_stays_in_its_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
