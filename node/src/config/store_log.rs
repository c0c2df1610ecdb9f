//! The `[store_log]` section: the partition log's segment size, how its dead records
//! are reclaimed, and the cache of the index behind it.

use std::time::Duration;

use chorus_actors::store::LogConfig;
use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// Segments and their retirement (defaults: 64 MiB segments, compacted once half
/// dead, one pass every 2 s: see [`LogConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreLogSection {
    /// Bytes at which a new segment starts (1 KiB..=1 GiB; default 64 MiB).
    #[serde(deserialize_with = "super::units::bytes")]
    pub segment_bytes: u64,
    /// Percent of a segment's bytes dead at which it is compacted (1..=100; default
    /// 50). Disk use stays within live bytes × 100 / (100 − this) plus the tail.
    pub retire_dead_percent: u32,
    /// Milliseconds between retirement passes (10..=3,600,000; default 2,000).
    #[serde(deserialize_with = "super::units::millis")]
    pub retire_interval_ms: u64,
    /// MiB of cache for the index behind the log (4..=65,536; default 64). The index
    /// holds about four times this in memory once the store outgrows it.
    #[serde(deserialize_with = "super::units::mib")]
    pub index_cache_mib: u64,
}

impl Default for StoreLogSection {
    fn default() -> Self {
        let preset = LogConfig::default();
        StoreLogSection {
            segment_bytes: preset.segment_bytes,
            retire_dead_percent: (preset.retire_dead_fraction * 100.0).round() as u32,
            retire_interval_ms: preset.retire_interval.as_millis() as u64,
            index_cache_mib: preset.index_cache_bytes >> 20,
        }
    }
}

impl StoreLogSection {
    /// The log's settings, or the key that is out of range.
    pub fn to_log_config(&self) -> Result<LogConfig, ConfigError> {
        check_range(
            "store_log.segment_bytes",
            self.segment_bytes,
            chorus_actors::store::log::MIN_SEGMENT_BYTES,
            chorus_actors::store::log::MAX_SEGMENT_BYTES,
        )?;
        check_range(
            "store_log.retire_dead_percent",
            self.retire_dead_percent.into(),
            1,
            100,
        )?;
        check_range(
            "store_log.retire_interval_ms",
            self.retire_interval_ms,
            10,
            3_600_000,
        )?;
        check_range(
            "store_log.index_cache_mib",
            self.index_cache_mib,
            chorus_actors::store::MIN_INDEX_CACHE_BYTES >> 20,
            chorus_actors::store::MAX_INDEX_CACHE_BYTES >> 20,
        )?;
        Ok(LogConfig {
            segment_bytes: self.segment_bytes,
            retire_dead_fraction: f64::from(self.retire_dead_percent) / 100.0,
            retire_interval: Duration::from_millis(self.retire_interval_ms),
            index_cache_bytes: self.index_cache_mib << 20,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_stores_and_bad_values_name_their_key() {
        let config = StoreLogSection::default().to_log_config().unwrap();
        assert_eq!(config, LogConfig::default());
        let zero = StoreLogSection {
            retire_dead_percent: 0,
            ..StoreLogSection::default()
        };
        let error = zero.to_log_config().unwrap_err().to_string();
        assert!(error.contains("store_log.retire_dead_percent"), "{error}");
        let tiny_cache = StoreLogSection {
            index_cache_mib: 1,
            ..StoreLogSection::default()
        };
        let error = tiny_cache.to_log_config().unwrap_err().to_string();
        assert!(error.contains("store_log.index_cache_mib"), "{error}");
        let cache = StoreLogSection {
            index_cache_mib: 256,
            ..StoreLogSection::default()
        };
        assert_eq!(cache.to_log_config().unwrap().index_cache_bytes, 256 << 20);
    }
}
