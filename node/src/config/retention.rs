//! The `[retention]` section: how long items are kept before they expire (each becomes
//! a tombstone on every replica, as a user's deletion makes them).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// How long items are kept (default: for ever) and how often expiry runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Items stored longer ago than this expire, e.g. `"400d"`; 0 (the default) keeps
    /// them for ever. At most 100 years.
    #[serde(deserialize_with = "super::units::secs")]
    pub max_age_secs: u64,
    /// How often each partition's leader looks for expired items; 1..=86,400 s
    /// (default 60).
    #[serde(deserialize_with = "super::units::secs")]
    pub check_interval_secs: u64,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            max_age_secs: 0,
            check_interval_secs: 60,
        }
    }
}

impl RetentionSection {
    /// Checks every key; the first out of range is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "retention.max_age_secs",
            self.max_age_secs,
            0,
            100 * 365 * 86_400,
        )?;
        check_range(
            "retention.check_interval_secs",
            self.check_interval_secs,
            1,
            86_400,
        )
    }

    /// How long items are kept, if not for ever.
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_secs > 0).then(|| Duration::from_secs(self.max_age_secs))
    }

    /// How often expiry runs.
    pub fn check_interval(&self) -> Duration {
        Duration::from_secs(self.check_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_with_a_unit_is_read_and_bounds_name_their_key() {
        let section: RetentionSection = toml::from_str("max_age_secs = \"400d\"").unwrap();
        assert_eq!(section.max_age(), Some(Duration::from_secs(400 * 86_400)));
        assert_eq!(RetentionSection::default().max_age(), None);
        let section = RetentionSection {
            check_interval_secs: 0,
            ..RetentionSection::default()
        };
        let error = section.validate().unwrap_err();
        assert!(
            error.to_string().contains("retention.check_interval_secs"),
            "{error}"
        );
    }
}
