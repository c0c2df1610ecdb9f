//! Submit admission: the per-user, per-API-key and global rate limits of one item,
//! checked together so that an item refused by one limit spends from none.

use std::time::{Duration, Instant};

use super::rate_limit::{
    Decision, KeyedLimiter, RateLimitConfig, RateLimitConfigError, TokenBucket,
};

/// Which limit refused an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    /// The user's own limit (100 per minute by default).
    User,
    /// The API key's limit.
    ApiKey,
    /// The node-wide limit.
    Global,
}

impl LimitScope {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::User => "user",
            LimitScope::ApiKey => "api_key",
            LimitScope::Global => "global",
        }
    }
}

/// An item refused by a limit; nothing was spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that refused (the one with the longest wait when several did).
    pub scope: LimitScope,
    /// When every limit involved will allow the item again.
    pub retry_after: Duration,
}

/// An admitted item; its tokens were spent from every limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The user's arrivals exceed the burst threshold (e.g. 50 in 10 s): worth logging
    /// and counting even though the item was allowed.
    pub burst: bool,
}

/// The submit limits of one node. The per-user limit is exact cluster-wide because
/// every user's items are admitted by the node that owns the user.
pub struct SubmitLimits {
    per_user: KeyedLimiter<String>,
    per_key: Option<KeyedLimiter<String>>,
    global: Option<TokenBucket>,
}

impl SubmitLimits {
    /// Limits as configured, with full buckets at `now`.
    pub fn new(config: &RateLimitConfig, now: Instant) -> Result<Self, RateLimitConfigError> {
        config.validate()?;
        Ok(SubmitLimits {
            per_user: KeyedLimiter::new(config.per_user)?,
            per_key: config.per_api_key.map(KeyedLimiter::new).transpose()?,
            global: config
                .global
                .map(|bucket| TokenBucket::new(bucket, now))
                .transpose()?,
        })
    }

    /// Admits one item of `user` sent with the key `key_id`, or says which limit refused
    /// and for how long. Spends from the limits only when all of them allow.
    pub fn admit(&mut self, now: Instant, user: &str, key_id: &str) -> Result<Admitted, Refusal> {
        let mut refusal: Option<Refusal> = None;
        let mut refuse = |scope, decision: Result<Decision, _>| {
            // A limit whose capacity is below one token refuses for good; config
            // validation rules that out, so treat it as a long wait rather than panic.
            let wait = match decision {
                Ok(Decision::Allowed) => return,
                Ok(Decision::Limited { retry_after }) => retry_after,
                Err(_) => Duration::from_secs(60),
            };
            if refusal.is_none_or(|r| wait > r.retry_after) {
                refusal = Some(Refusal {
                    scope,
                    retry_after: wait,
                });
            }
        };
        refuse(LimitScope::User, self.per_user.check(now, user, 1));
        if let Some(per_key) = &mut self.per_key {
            refuse(LimitScope::ApiKey, per_key.check(now, key_id, 1));
        }
        if let Some(global) = &mut self.global {
            refuse(LimitScope::Global, global.check(now, 1));
        }
        if let Some(refusal) = refusal {
            // The arrival still counts toward the user's burst window.
            let _ = self.per_user.record_arrival(now, user, 1);
            return Err(refusal);
        }
        let verdict = self
            .per_user
            .try_acquire(now, user, 1)
            .expect("checked above");
        if let Some(per_key) = &mut self.per_key {
            let _ = per_key.try_acquire(now, key_id, 1);
        }
        if let Some(global) = &mut self.global {
            let _ = global.try_acquire(now, 1);
        }
        Ok(Admitted {
            burst: verdict.burst,
        })
    }

    /// Forgets idle keys (they are indistinguishable from new ones); returns how many.
    pub fn purge_idle(&mut self, now: Instant) -> usize {
        self.per_user.purge_idle(now) + self.per_key.as_mut().map_or(0, |l| l.purge_idle(now))
    }

    /// Users tracked.
    pub fn tracked_users(&self) -> usize {
        self.per_user.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::rate_limit::{BucketConfig, KeyedLimiterConfig, Rate};

    fn per_minute(n: u32) -> KeyedLimiterConfig {
        KeyedLimiterConfig {
            bucket: BucketConfig {
                capacity: n,
                refill: Rate::per_minute(n),
            },
            ..KeyedLimiterConfig::per_user()
        }
    }

    #[test]
    fn a_user_gets_100_a_minute_then_a_retry_hint() {
        let t0 = Instant::now();
        let mut limits = SubmitLimits::new(&RateLimitConfig::default(), t0).unwrap();
        for _ in 0..100 {
            limits.admit(t0, "alice", "k").unwrap();
        }
        let refusal = limits.admit(t0, "alice", "k").unwrap_err();
        assert_eq!(refusal.scope, LimitScope::User);
        assert_eq!(refusal.retry_after, Duration::from_millis(600));
        assert!(
            limits.admit(t0, "bob", "k").is_ok(),
            "other users are unaffected"
        );
        assert!(limits.admit(t0 + refusal.retry_after, "alice", "k").is_ok());
    }

    #[test]
    fn a_refusal_by_one_limit_spends_from_none() {
        let t0 = Instant::now();
        let config = RateLimitConfig {
            per_user: per_minute(1),
            per_api_key: Some(per_minute(1)),
            ..RateLimitConfig::default()
        };
        let mut limits = SubmitLimits::new(&config, t0).unwrap();
        limits.admit(t0, "a", "key-1").unwrap();
        let refusal = limits.admit(t0, "d", "key-1").unwrap_err();
        assert_eq!(refusal.scope, LimitScope::ApiKey);
        // "d" spent nothing: its single token is still there for another key.
        limits.admit(t0, "d", "key-2").unwrap();
        assert_eq!(
            limits.admit(t0, "d", "key-3").unwrap_err().scope,
            LimitScope::User
        );
    }

    #[test]
    fn the_longest_wait_is_reported() {
        let t0 = Instant::now();
        let config = RateLimitConfig {
            per_user: per_minute(1),
            global: Some(BucketConfig {
                capacity: 1,
                refill: Rate::per_second(1),
            }),
            ..RateLimitConfig::default()
        };
        let mut limits = SubmitLimits::new(&config, t0).unwrap();
        limits.admit(t0, "u", "k").unwrap();
        let refusal = limits.admit(t0, "u", "k").unwrap_err();
        assert_eq!(refusal.scope, LimitScope::User, "60 s beats the global 1 s");
        assert_eq!(refusal.retry_after, Duration::from_secs(60));
    }

    #[test]
    fn a_burst_is_flagged_while_still_allowed() {
        let t0 = Instant::now();
        let mut limits = SubmitLimits::new(&RateLimitConfig::default(), t0).unwrap();
        let flagged: Vec<bool> = (0..51)
            .map(|_| limits.admit(t0, "spiky", "k").unwrap().burst)
            .collect();
        assert!(!flagged[49] && flagged[50], "the 51st in 10 s is a burst");
    }

    proptest! {
        #[test]
        fn never_more_than_a_limit_allows(
            gaps in proptest::collection::vec(0u64..2_000, 1..300),
        ) {
            let t0 = Instant::now();
            let config = RateLimitConfig { per_user: per_minute(10), ..RateLimitConfig::default() };
            let mut limits = SubmitLimits::new(&config, t0).unwrap();
            let mut now = t0;
            let mut admitted = 0u64;
            for gap in gaps {
                now += Duration::from_millis(gap);
                if limits.admit(now, "u", "k").is_ok() {
                    admitted += 1;
                }
            }
            let elapsed = now.duration_since(t0).as_secs_f64();
            let ceiling = 10.0 + 10.0 * elapsed / 60.0;
            prop_assert!(admitted as f64 <= ceiling + 1e-9, "{} admitted, ceiling {}", admitted, ceiling);
        }
    }
}
