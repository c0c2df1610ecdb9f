//! The `[breakers.store]` and `[breakers.enrichment]` sections: when each circuit
//! breaker opens and how it recovers. A key left out keeps that breaker's default.

use std::time::Duration;

use chorus_actors::policy::breaker::BreakerConfig;
use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// Longest window, slow call or open time a breaker may be given: an hour.
const MAX_BREAKER_MS: u64 = 3_600_000;
/// Most slots a breaker's rate window is split into.
const MAX_WINDOW_SLOTS: u32 = 1_000;
/// Largest count (streak, calls, trials) a breaker may be given.
const MAX_BREAKER_COUNT: u32 = 1_000_000;

/// One circuit breaker's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BreakerSection {
    /// Failures in a row that open the breaker (1..=1,000,000; default 5).
    pub failure_streak: u32,
    /// Milliseconds of the rolling window the failure rate is measured over
    /// (1..=3,600,000; default 10,000).
    pub rate_window_ms: u64,
    /// Slots the window rolls by (1..=1,000; default 10).
    pub rate_window_slots: u32,
    /// Calls the window must hold before the rate can open the breaker
    /// (1..=1,000,000; default 20).
    pub rate_min_calls: u32,
    /// Percent of bad calls in the window that opens the breaker (1..=100; default 50).
    pub failure_rate_percent: u8,
    /// Milliseconds over which a call counts as bad even when it succeeds
    /// (1..=3,600,000; store 1,000, enrichment 5,000).
    pub slow_call_ms: u64,
    /// Milliseconds the breaker stays open before it lets trials through
    /// (1..=3,600,000; store 30,000, enrichment 60,000).
    pub open_timeout_ms: u64,
    /// Trial calls let through at once while half-open (1..=1,000,000; default 3).
    pub half_open_trials: u32,
    /// Trial successes that close the breaker (1..=1,000,000; default 3).
    pub half_open_successes: u32,
}

impl From<BreakerConfig> for BreakerSection {
    fn from(c: BreakerConfig) -> Self {
        BreakerSection {
            failure_streak: c.failure_streak,
            rate_window_ms: c.rate_window.as_millis() as u64,
            rate_window_slots: c.rate_window_slots,
            rate_min_calls: c.rate_min_calls,
            failure_rate_percent: c.failure_rate_percent,
            slow_call_ms: c.slow_call.as_millis() as u64,
            open_timeout_ms: c.open_timeout.as_millis() as u64,
            half_open_trials: c.half_open_trials,
            half_open_successes: c.half_open_successes,
        }
    }
}

impl BreakerSection {
    /// The breaker's settings, or the key (under `breakers.<name>`) out of range.
    pub fn to_breaker(&self, name: &str) -> Result<BreakerConfig, ConfigError> {
        let key = |field: &str| format!("breakers.{name}.{field}");
        let count = u64::from(MAX_BREAKER_COUNT);
        check_range(&key("failure_streak"), self.failure_streak.into(), 1, count)?;
        check_range(
            &key("rate_window_ms"),
            self.rate_window_ms,
            1,
            MAX_BREAKER_MS,
        )?;
        check_range(
            &key("rate_window_slots"),
            self.rate_window_slots.into(),
            1,
            MAX_WINDOW_SLOTS.into(),
        )?;
        check_range(&key("rate_min_calls"), self.rate_min_calls.into(), 1, count)?;
        check_range(
            &key("failure_rate_percent"),
            self.failure_rate_percent.into(),
            1,
            100,
        )?;
        check_range(&key("slow_call_ms"), self.slow_call_ms, 1, MAX_BREAKER_MS)?;
        check_range(
            &key("open_timeout_ms"),
            self.open_timeout_ms,
            1,
            MAX_BREAKER_MS,
        )?;
        check_range(
            &key("half_open_trials"),
            self.half_open_trials.into(),
            1,
            count,
        )?;
        check_range(
            &key("half_open_successes"),
            self.half_open_successes.into(),
            1,
            count,
        )?;
        let config = BreakerConfig {
            failure_streak: self.failure_streak,
            rate_window: Duration::from_millis(self.rate_window_ms),
            rate_window_slots: self.rate_window_slots,
            rate_min_calls: self.rate_min_calls,
            failure_rate_percent: self.failure_rate_percent,
            slow_call: Duration::from_millis(self.slow_call_ms),
            open_timeout: Duration::from_millis(self.open_timeout_ms),
            half_open_trials: self.half_open_trials,
            half_open_successes: self.half_open_successes,
        };
        config
            .validate()
            .map_err(|e| ConfigError::new(format!("breakers.{name}"), e.to_string()))?;
        Ok(config)
    }
}

/// A breaker as written: every key optional, the breaker's preset where absent.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failure_streak: Option<u32>,
    #[serde(default, deserialize_with = "super::units::opt_millis")]
    rate_window_ms: Option<u64>,
    rate_window_slots: Option<u32>,
    rate_min_calls: Option<u32>,
    failure_rate_percent: Option<u8>,
    #[serde(default, deserialize_with = "super::units::opt_millis")]
    slow_call_ms: Option<u64>,
    #[serde(default, deserialize_with = "super::units::opt_millis")]
    open_timeout_ms: Option<u64>,
    half_open_trials: Option<u32>,
    half_open_successes: Option<u32>,
}

impl RawBreaker {
    fn over(self, preset: BreakerConfig) -> BreakerSection {
        let base = BreakerSection::from(preset);
        BreakerSection {
            failure_streak: self.failure_streak.unwrap_or(base.failure_streak),
            rate_window_ms: self.rate_window_ms.unwrap_or(base.rate_window_ms),
            rate_window_slots: self.rate_window_slots.unwrap_or(base.rate_window_slots),
            rate_min_calls: self.rate_min_calls.unwrap_or(base.rate_min_calls),
            failure_rate_percent: self
                .failure_rate_percent
                .unwrap_or(base.failure_rate_percent),
            slow_call_ms: self.slow_call_ms.unwrap_or(base.slow_call_ms),
            open_timeout_ms: self.open_timeout_ms.unwrap_or(base.open_timeout_ms),
            half_open_trials: self.half_open_trials.unwrap_or(base.half_open_trials),
            half_open_successes: self.half_open_successes.unwrap_or(base.half_open_successes),
        }
    }
}

/// The `[breakers]` table as written.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreakers {
    #[serde(default)]
    store: RawBreaker,
    #[serde(default)]
    enrichment: RawBreaker,
}

/// The node's circuit breakers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawBreakers")]
pub struct BreakersSection {
    /// The local store's breaker (`[breakers.store]`).
    pub store: BreakerSection,
    /// The enrichment service's breaker (`[breakers.enrichment]`).
    pub enrichment: BreakerSection,
}

impl From<RawBreakers> for BreakersSection {
    fn from(raw: RawBreakers) -> Self {
        BreakersSection {
            store: raw.store.over(BreakerConfig::store()),
            enrichment: raw.enrichment.over(BreakerConfig::enrichment()),
        }
    }
}

impl Default for BreakersSection {
    fn default() -> Self {
        RawBreakers::default().into()
    }
}

impl BreakersSection {
    /// The store breaker's settings, or the key out of range.
    pub fn store(&self) -> Result<BreakerConfig, ConfigError> {
        self.store.to_breaker("store")
    }

    /// The enrichment breaker's settings, or the key out of range.
    pub fn enrichment(&self) -> Result<BreakerConfig, ConfigError> {
        self.enrichment.to_breaker("enrichment")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_presets() {
        let breakers = BreakersSection::default();
        assert_eq!(breakers.store().unwrap(), BreakerConfig::store());
        assert_eq!(breakers.enrichment().unwrap(), BreakerConfig::enrichment());
    }

    #[test]
    fn a_breaker_written_in_part_keeps_its_presets_other_values() {
        let breakers: BreakersSection =
            toml::from_str("[enrichment]\nfailure_streak = 9\nopen_timeout_ms = \"2m\"").unwrap();
        let enrichment = breakers.enrichment().unwrap();
        assert_eq!(enrichment.failure_streak, 9);
        assert_eq!(enrichment.open_timeout, Duration::from_secs(120));
        assert_eq!(enrichment.slow_call, BreakerConfig::enrichment().slow_call);
        assert_eq!(breakers.store().unwrap(), BreakerConfig::store());
    }

    #[test]
    fn each_value_out_of_range_names_its_key() {
        type Case = (fn(&mut BreakersSection), &'static str);
        let cases: &[Case] = &[
            (
                |b| b.store.failure_streak = 0,
                "breakers.store.failure_streak",
            ),
            (
                |b| b.store.failure_rate_percent = 101,
                "breakers.store.failure_rate_percent",
            ),
            (
                |b| b.enrichment.open_timeout_ms = 0,
                "breakers.enrichment.open_timeout_ms",
            ),
            (
                |b| b.enrichment.rate_window_slots = 0,
                "breakers.enrichment.rate_window_slots",
            ),
        ];
        for (break_it, key) in cases {
            let mut breakers = BreakersSection::default();
            break_it(&mut breakers);
            let err = breakers
                .store()
                .and_then(|_| breakers.enrichment())
                .unwrap_err();
            assert_eq!(err.key, *key);
        }
    }
}
