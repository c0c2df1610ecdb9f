//! The `[degradation]` section: the load thresholds at which the node sheds optional
//! work and then everything but realtime and priority, and how it steps back down.

use std::time::Duration;

use chorus_actors::policy::degradation::{DegradationConfig, DegradationConfigError};
use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// Longest dwell before a step down: an hour without a step down is a pinned level.
const MAX_DWELL_MS: u64 = 3_600_000;

/// When load degrades the node (defaults: 0.80, 0.95, 0.10 hysteresis, 5 s dwell; see
/// [`DegradationConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradationSection {
    /// Load (fraction of capacity, 0.0..=1.0) at which the batch tier and optional
    /// work are shed (default 0.80).
    pub shed_optional_at: f64,
    /// Load at which everything but realtime and priority is shed; above
    /// `shed_optional_at`, at most 1.0 (default 0.95).
    pub critical_only_at: f64,
    /// How far below a level's threshold the load must fall before the level steps
    /// down; 0.0 up to `shed_optional_at` (default 0.10).
    pub hysteresis: f64,
    /// Milliseconds the load must stay that low before each one-level step down
    /// (0..=3,600,000; default 5,000).
    #[serde(deserialize_with = "super::units::millis")]
    pub dwell_ms: u64,
}

impl Default for DegradationSection {
    fn default() -> Self {
        let preset = DegradationConfig::default();
        DegradationSection {
            shed_optional_at: preset.shed_optional_at,
            critical_only_at: preset.critical_only_at,
            hysteresis: preset.hysteresis,
            dwell_ms: preset.dwell.as_millis() as u64,
        }
    }
}

impl DegradationSection {
    /// The degradation policy's settings, or the key that is out of range.
    pub fn to_degradation(&self) -> Result<DegradationConfig, ConfigError> {
        check_range("degradation.dwell_ms", self.dwell_ms, 0, MAX_DWELL_MS)?;
        let config = DegradationConfig {
            shed_optional_at: self.shed_optional_at,
            critical_only_at: self.critical_only_at,
            hysteresis: self.hysteresis,
            dwell: Duration::from_millis(self.dwell_ms),
        };
        config.validate().map_err(|e| {
            let key = match e {
                DegradationConfigError::ShedOptionalAt(_) => "degradation.shed_optional_at",
                DegradationConfigError::CriticalOnlyAt(_) => "degradation.critical_only_at",
                DegradationConfigError::Hysteresis(_) => "degradation.hysteresis",
            };
            ConfigError::new(key, e.to_string())
        })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_policys() {
        let config = DegradationSection::default().to_degradation().unwrap();
        assert_eq!(config, DegradationConfig::default());
    }

    #[test]
    fn each_threshold_out_of_order_names_its_key() {
        type Case = (fn(&mut DegradationSection), &'static str);
        let cases: &[Case] = &[
            (|d| d.shed_optional_at = 1.5, "degradation.shed_optional_at"),
            (|d| d.critical_only_at = 0.5, "degradation.critical_only_at"),
            (|d| d.hysteresis = 0.9, "degradation.hysteresis"),
            (|d| d.dwell_ms = 7_200_000, "degradation.dwell_ms"),
        ];
        for (break_it, key) in cases {
            let mut section = DegradationSection::default();
            break_it(&mut section);
            assert_eq!(section.to_degradation().unwrap_err().key, *key);
        }
    }
}
