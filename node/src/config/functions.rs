//! The `[functions]` section: when the feedback about a function version marks it
//! `requires_update` (a mean rating under a floor, or a mean error rate over a ceiling,
//! each judged once enough items gave it).

use std::time::Duration;

use chorus_protocol::UpdateRule;
use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// The thresholds (defaults: 50 items, a mean rating under 3.0, an error rate over 5 %).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionsSection {
    /// Judge a version only once this many items rated it (for the rating) or reported
    /// execution metrics (for the error rate); 1..=1,000,000,000 (default 50).
    pub min_items: u64,
    /// A mean rating under this marks a version, 1.0..=5.0 (default 3.0).
    pub min_mean_rating: f64,
    /// A mean error rate over this marks a version, 0.0..=1.0 (default 0.05).
    pub max_error_rate: f64,
    /// How often every version is judged, recording `requires_update` and
    /// `update_cleared` events; 1,000..=3,600,000 ms (default 10,000).
    #[serde(deserialize_with = "super::units::millis")]
    pub check_interval_ms: u64,
}

impl Default for FunctionsSection {
    fn default() -> Self {
        let rule = UpdateRule::default();
        FunctionsSection {
            min_items: rule.min_items,
            min_mean_rating: rule.min_mean_rating,
            max_error_rate: rule.max_error_rate,
            check_interval_ms: 10_000,
        }
    }
}

impl FunctionsSection {
    /// How often every version is judged.
    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }

    /// The rule, or the key that is out of range.
    pub fn to_rule(&self) -> Result<UpdateRule, ConfigError> {
        check_range("functions.min_items", self.min_items, 1, 1_000_000_000)?;
        check_range(
            "functions.check_interval_ms",
            self.check_interval_ms,
            1_000,
            3_600_000,
        )?;
        if !(1.0..=5.0).contains(&self.min_mean_rating) {
            return Err(ConfigError::new(
                "functions.min_mean_rating",
                format!("{} is outside 1.0..=5.0", self.min_mean_rating),
            ));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(ConfigError::new(
                "functions.max_error_rate",
                format!("{} is outside 0.0..=1.0", self.max_error_rate),
            ));
        }
        Ok(UpdateRule {
            min_items: self.min_items,
            min_mean_rating: self.min_mean_rating,
            max_error_rate: self.max_error_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_rules_and_each_bound_names_its_key() {
        assert_eq!(
            FunctionsSection::default().to_rule().unwrap(),
            UpdateRule::default()
        );
        type Case = (fn(&mut FunctionsSection), &'static str);
        let cases: [Case; 5] = [
            (|s| s.min_items = 0, "functions.min_items"),
            (|s| s.check_interval_ms = 10, "functions.check_interval_ms"),
            (|s| s.min_mean_rating = 0.5, "functions.min_mean_rating"),
            (
                |s| s.min_mean_rating = f64::NAN,
                "functions.min_mean_rating",
            ),
            (|s| s.max_error_rate = 1.5, "functions.max_error_rate"),
        ];
        for (breaks, key) in cases {
            let mut section = FunctionsSection::default();
            breaks(&mut section);
            let error = section.to_rule().unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
    }
}
