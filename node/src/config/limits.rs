//! The `[limits]` section: submit rate limits, as operators think of them, and their
//! translation into the pipeline's token buckets.

use chorus_actors::policy::rate_limit::{BucketConfig, KeyedLimiterConfig, Rate, RateLimitConfig};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Submit rate limits. A user's limit is exact cluster-wide (it lives at the user's
/// owner); `0` turns the per-key and global limits off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Items one user may submit per minute, sustained (default 100).
    pub per_user_per_minute: u32,
    /// Items one user may submit at once after being idle (bucket size; default 100).
    pub per_user_burst: u32,
    /// Items one API key may submit per second; 0 = no per-key limit (default).
    pub per_api_key_per_second: u32,
    /// Items the node admits per second from everyone; 0 = no global limit (default).
    pub global_per_second: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            per_user_per_minute: 100,
            per_user_burst: 100,
            per_api_key_per_second: 0,
            global_per_second: 0,
        }
    }
}

impl LimitsSection {
    /// The pipeline's rate-limit settings, or the key that makes them impossible.
    pub fn to_rate_limits(&self) -> Result<RateLimitConfig, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError {
            key: format!("limits.{key}"),
            reason: reason.to_string(),
        };
        if self.per_user_per_minute == 0 {
            return Err(invalid("per_user_per_minute", "must be at least 1"));
        }
        if self.per_user_burst == 0 {
            return Err(invalid("per_user_burst", "must be at least 1"));
        }
        let per_second = |n: u32| BucketConfig {
            capacity: n,
            refill: Rate::per_second(n),
        };
        let config = RateLimitConfig {
            per_user: KeyedLimiterConfig {
                bucket: BucketConfig {
                    capacity: self.per_user_burst,
                    refill: Rate::per_minute(self.per_user_per_minute),
                },
                ..KeyedLimiterConfig::per_user()
            },
            per_api_key: (self.per_api_key_per_second > 0).then(|| KeyedLimiterConfig {
                bucket: per_second(self.per_api_key_per_second),
                ..KeyedLimiterConfig::per_user()
            }),
            global: (self.global_per_second > 0).then(|| per_second(self.global_per_second)),
            ..RateLimitConfig::default()
        };
        config
            .validate()
            .map_err(|e| invalid("*", &e.to_string()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_100_a_minute_per_user_and_nothing_else() {
        let limits = LimitsSection::default().to_rate_limits().unwrap();
        assert_eq!(limits.per_user.bucket.capacity, 100);
        assert_eq!(limits.per_user.bucket.refill, Rate::per_minute(100));
        assert!(limits.per_api_key.is_none() && limits.global.is_none());
    }

    #[test]
    fn non_zero_key_and_global_limits_turn_on() {
        let section = LimitsSection {
            per_api_key_per_second: 500,
            global_per_second: 20_000,
            ..LimitsSection::default()
        };
        let limits = section.to_rate_limits().unwrap();
        assert_eq!(
            limits.per_api_key.unwrap().bucket.refill,
            Rate::per_second(500)
        );
        assert_eq!(limits.global.unwrap().capacity, 20_000);
    }

    #[test]
    fn a_zero_user_limit_names_its_key() {
        let section = LimitsSection {
            per_user_per_minute: 0,
            ..LimitsSection::default()
        };
        assert_eq!(
            section.to_rate_limits().unwrap_err().key,
            "limits.per_user_per_minute"
        );
    }
}
