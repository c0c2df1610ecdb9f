//! The `[tiers.<tier>]` sections: each tier queue's latency budget, timeout, retries,
//! weight and capacity, and their translation into the scheduler's [`TierQueueConfig`].
//! A tier left out, or a key left out of a tier, keeps that tier's default.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use chorus_actors::policy::tier_queue::{
    MAX_TIER_CAPACITY, MAX_TIER_TIMEOUT, TierParams, TierQueueConfig,
};
use chorus_protocol::Tier;
use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// Largest tier weight: the stride of weight 1 is 2³² passes, so a weight this large
/// still advances its tier's pass.
pub const MAX_TIER_WEIGHT: u32 = 1_000_000;
/// Most retries a tier may advise clients to make.
pub const MAX_TIER_RETRIES: u32 = 100;

/// One tier's service parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TierSection {
    /// Milliseconds an item may wait in its queue before it is answered `Timeout`
    /// (1..=3,600,000; defaults 100, 1,000, 10,000, 60,000 from realtime to batch).
    pub latency_budget_ms: u64,
    /// The request's overall deadline as clients apply it, retries included, in
    /// milliseconds (`latency_budget_ms`..=3,600,000; defaults 200, 2,000, 20,000,
    /// 300,000).
    pub timeout_ms: u64,
    /// Retries clients are advised to make (0..=100; defaults 0, 1, 3, 5).
    pub retries: u32,
    /// Share of the service while every tier is busy (1..=1,000,000; defaults 1,000,
    /// 100, 10, 1).
    pub weight: u32,
    /// Items queued in the tier at most (1..=1,048,576; default 1,024 each).
    pub capacity: u32,
}

impl TierSection {
    /// The section of a tier's defaults.
    pub fn default_for(tier: Tier) -> Self {
        let p = TierParams::default_for(tier);
        TierSection {
            latency_budget_ms: p.latency_budget.as_millis() as u64,
            timeout_ms: p.timeout.as_millis() as u64,
            retries: p.retries,
            weight: p.weight.get(),
            capacity: p.capacity.get() as u32,
        }
    }

    fn to_params(self, tier: Tier) -> Result<TierParams, ConfigError> {
        let key = |field: &str| format!("tiers.{}.{field}", tier.as_str());
        let max_timeout_ms = MAX_TIER_TIMEOUT.as_millis() as u64;
        check_range(
            &key("latency_budget_ms"),
            self.latency_budget_ms,
            1,
            max_timeout_ms,
        )?;
        check_range(
            &key("timeout_ms"),
            self.timeout_ms,
            self.latency_budget_ms,
            max_timeout_ms,
        )?;
        check_range(
            &key("retries"),
            self.retries.into(),
            0,
            MAX_TIER_RETRIES.into(),
        )?;
        check_range(
            &key("weight"),
            self.weight.into(),
            1,
            MAX_TIER_WEIGHT.into(),
        )?;
        check_range(
            &key("capacity"),
            self.capacity.into(),
            1,
            MAX_TIER_CAPACITY as u64,
        )?;
        let nonzero = |field: &str| ConfigError::new(key(field), "must be at least 1");
        Ok(TierParams {
            latency_budget: Duration::from_millis(self.latency_budget_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
            weight: NonZeroU32::new(self.weight).ok_or_else(|| nonzero("weight"))?,
            capacity: NonZeroUsize::new(self.capacity as usize)
                .ok_or_else(|| nonzero("capacity"))?,
        })
    }
}

/// A tier as written: every key optional, the tier's default where absent.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    #[serde(default, deserialize_with = "super::units::opt_millis")]
    latency_budget_ms: Option<u64>,
    #[serde(default, deserialize_with = "super::units::opt_millis")]
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    weight: Option<u32>,
    capacity: Option<u32>,
}

impl RawTier {
    fn over(self, tier: Tier) -> TierSection {
        let base = TierSection::default_for(tier);
        TierSection {
            latency_budget_ms: self.latency_budget_ms.unwrap_or(base.latency_budget_ms),
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            retries: self.retries.unwrap_or(base.retries),
            weight: self.weight.unwrap_or(base.weight),
            capacity: self.capacity.unwrap_or(base.capacity),
        }
    }
}

/// The `[tiers]` table as written.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiers {
    #[serde(default)]
    realtime: RawTier,
    #[serde(default)]
    priority: RawTier,
    #[serde(default)]
    standard: RawTier,
    #[serde(default)]
    batch: RawTier,
}

/// The four tier queues, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawTiers")]
pub struct TiersSection {
    /// `[tiers.realtime]`.
    pub realtime: TierSection,
    /// `[tiers.priority]`.
    pub priority: TierSection,
    /// `[tiers.standard]`.
    pub standard: TierSection,
    /// `[tiers.batch]`.
    pub batch: TierSection,
}

impl From<RawTiers> for TiersSection {
    fn from(raw: RawTiers) -> Self {
        TiersSection {
            realtime: raw.realtime.over(Tier::Realtime),
            priority: raw.priority.over(Tier::Priority),
            standard: raw.standard.over(Tier::Standard),
            batch: raw.batch.over(Tier::Batch),
        }
    }
}

impl Default for TiersSection {
    fn default() -> Self {
        RawTiers::default().into()
    }
}

impl TiersSection {
    /// The scheduler's settings, or the key that is out of range.
    pub fn to_tier_queues(&self) -> Result<TierQueueConfig, ConfigError> {
        let config = TierQueueConfig {
            realtime: self.realtime.to_params(Tier::Realtime)?,
            priority: self.priority.to_params(Tier::Priority)?,
            standard: self.standard.to_params(Tier::Standard)?,
            batch: self.batch.to_params(Tier::Batch)?,
        };
        config
            .validate()
            .map_err(|e| ConfigError::new("tiers", e.to_string()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_schedulers() {
        let config = TiersSection::default().to_tier_queues().unwrap();
        assert_eq!(config, TierQueueConfig::default());
    }

    #[test]
    fn a_tier_written_in_part_keeps_its_other_defaults() {
        let tiers: TiersSection =
            toml::from_str("[batch]\nweight = 2\nlatency_budget_ms = \"90s\"").unwrap();
        assert_eq!(tiers.batch.weight, 2);
        assert_eq!(tiers.batch.latency_budget_ms, 90_000);
        assert_eq!(
            tiers.batch.timeout_ms,
            TierSection::default_for(Tier::Batch).timeout_ms
        );
        assert_eq!(tiers.realtime, TierSection::default_for(Tier::Realtime));
    }

    #[test]
    fn each_value_out_of_range_names_its_key() {
        type Case = (fn(&mut TiersSection), &'static str);
        let cases: &[Case] = &[
            (|t| t.realtime.weight = 0, "tiers.realtime.weight"),
            (|t| t.priority.capacity = 0, "tiers.priority.capacity"),
            (
                |t| t.standard.latency_budget_ms = 0,
                "tiers.standard.latency_budget_ms",
            ),
            (|t| t.batch.timeout_ms = 1, "tiers.batch.timeout_ms"),
            (|t| t.batch.retries = 1_000, "tiers.batch.retries"),
        ];
        for (break_it, key) in cases {
            let mut tiers = TiersSection::default();
            break_it(&mut tiers);
            assert_eq!(tiers.to_tier_queues().unwrap_err().key, *key);
        }
    }
}
