//! The `[insights]` section: each API key's lifetime privacy budget for differentially
//! private insights, and how long an answer is served again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// The budget and the cache (defaults: ε 10 per key, answers kept 5 s).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InsightsSection {
    /// The ε each API key may spend on differentially private insights over its life,
    /// in (0, 10] (default 10): a query past it is refused.
    pub epsilon_budget: f64,
    /// How long an answer is served again to the same question (and, under
    /// differential privacy, the same key) without asking the members or spending
    /// budget: the staleness bound of an insight; 0..=600,000 ms (default 5,000).
    #[serde(deserialize_with = "super::units::millis")]
    pub cache_ms: u64,
}

impl Default for InsightsSection {
    fn default() -> Self {
        InsightsSection {
            epsilon_budget: 10.0,
            cache_ms: 5_000,
        }
    }
}

impl InsightsSection {
    /// Checks every key; the first out of range is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.epsilon_budget > 0.0 && self.epsilon_budget <= 10.0) {
            return Err(ConfigError::new(
                "insights.epsilon_budget",
                format!("{} is outside (0, 10]", self.epsilon_budget),
            ));
        }
        check_range("insights.cache_ms", self.cache_ms, 0, 600_000)
    }

    /// How long an answer is served again.
    pub fn cache(&self) -> Duration {
        Duration::from_millis(self.cache_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_names_its_key() {
        InsightsSection::default().validate().unwrap();
        for budget in [0.0, -1.0, 10.5, f64::NAN] {
            let section = InsightsSection {
                epsilon_budget: budget,
                ..InsightsSection::default()
            };
            let error = section.validate().unwrap_err();
            assert!(
                error.to_string().contains("insights.epsilon_budget"),
                "{error}"
            );
        }
        let section = InsightsSection {
            cache_ms: 700_000,
            ..InsightsSection::default()
        };
        assert!(
            section
                .validate()
                .unwrap_err()
                .to_string()
                .contains("insights.cache_ms")
        );
    }
}
