//! The write pipeline's settings, given to the actor tree at start.

use crate::enrichment::{EnrichmentConfig, EnrichmentConfigError};
use crate::policy::breaker::{BreakerConfig, BreakerConfigError};
use crate::policy::bulkhead::{BulkheadConfig, BulkheadConfigError};
use crate::policy::degradation::{DegradationConfig, DegradationConfigError};
use crate::policy::rate_limit::{RateLimitConfig, RateLimitConfigError};
use crate::policy::tier_queue::{TierQueueConfig, TierQueueConfigError};
use crate::replication::ReplicationSlot;
use crate::validation::{ValidationConfig, ValidationConfigError};

/// Most validator workers a node runs.
pub const MAX_VALIDATOR_WORKERS: usize = 64;

/// Settings of the node's write pipeline; `Default` is the documented defaults.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Per-user (100 per minute), per-API-key and global submit limits.
    pub limits: RateLimitConfig,
    /// The content policy the validator pool applies (`[validation]`).
    pub validation: ValidationConfig,
    /// Workers in the validator pool, 1..=[`MAX_VALIDATOR_WORKERS`]; default: the
    /// available parallelism clamped to 1..=8.
    pub validator_workers: usize,
    /// The store's circuit breaker (opens after 5 failed flushes in a row; half-open
    /// after 30 s).
    pub store_breaker: BreakerConfig,
    /// The four tier queues (weights, timeouts, capacities).
    pub tiers: TierQueueConfig,
    /// When load sheds the batch tier, and when everything but realtime and priority.
    pub degradation: DegradationConfig,
    /// The store-writes bulkhead (128 writes in the group commit, 64 waiting). The tier
    /// queues let at most its capacity (running + waiting) past them, so under overload
    /// the tier queues, where priorities apply, hold the backlog.
    pub store_writes: BulkheadConfig,
    /// The optional enrichment call (off unless a URL is set).
    pub enrichment: EnrichmentConfig,
    /// Where the cluster layer installs replication (None: a single copy of each
    /// partition, answered once durable here).
    pub replication: Option<ReplicationSlot>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            limits: RateLimitConfig::default(),
            validation: ValidationConfig::default(),
            validator_workers: default_validator_workers(),
            store_breaker: BreakerConfig::store(),
            tiers: TierQueueConfig::default(),
            degradation: DegradationConfig::default(),
            store_writes: BulkheadConfig::store_writes(),
            enrichment: EnrichmentConfig::default(),
            replication: None,
        }
    }
}

/// The available parallelism clamped to 1..=8.
pub fn default_validator_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// Why a [`PipelineConfig`] is invalid; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum PipelineConfigError {
    /// A submit limit is invalid.
    #[error("limits: {0}")]
    Limits(#[from] RateLimitConfigError),
    /// The content policy is invalid.
    #[error("validation: {0}")]
    Validation(#[from] ValidationConfigError),
    /// The store's circuit breaker settings are invalid.
    #[error("store_breaker: {0}")]
    StoreBreaker(#[from] BreakerConfigError),
    /// A tier queue's settings are invalid.
    #[error("tiers: {0}")]
    Tiers(#[from] TierQueueConfigError),
    /// The degradation thresholds are invalid.
    #[error("degradation: {0}")]
    Degradation(#[from] DegradationConfigError),
    /// The enrichment settings are invalid.
    #[error("enrichment: {0}")]
    Enrichment(#[from] EnrichmentConfigError),
    /// The store-writes bulkhead's limits are invalid.
    #[error("store_writes: {0}")]
    StoreWrites(#[from] BulkheadConfigError),
    /// `validator_workers` is out of range.
    #[error("validator_workers is {0}, must be 1..={MAX_VALIDATOR_WORKERS}")]
    ValidatorWorkers(usize),
}

/// The part of the pipeline's settings that may change while the node runs: applied
/// by [`crate::NodeHandle::reconfigure`] to the running stages, and by every stage
/// restarted after it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LivePolicy {
    /// The submit limits (a change starts every bucket full).
    pub limits: RateLimitConfig,
    /// The tier queues' budgets, weights and capacities (queued items keep their
    /// deadlines).
    pub tiers: TierQueueConfig,
    /// The degradation thresholds (the level in force stays until the load moves it).
    pub degradation: DegradationConfig,
    /// The store's circuit breaker (its state is kept).
    pub store_breaker: BreakerConfig,
    /// The enrichment service's circuit breaker (its state is kept).
    pub enrichment_breaker: BreakerConfig,
}

impl LivePolicy {
    /// Checks every setting; nothing is applied when one is invalid.
    pub fn validate(&self) -> Result<(), PipelineConfigError> {
        self.limits.validate()?;
        self.tiers.validate()?;
        self.degradation.validate()?;
        self.store_breaker.validate()?;
        self.enrichment_breaker
            .validate()
            .map_err(|e| PipelineConfigError::Enrichment(EnrichmentConfigError::Breaker(e)))?;
        Ok(())
    }
}

impl PipelineConfig {
    /// The settings of this pipeline that may change while it runs.
    pub fn live(&self) -> LivePolicy {
        LivePolicy {
            limits: self.limits,
            tiers: self.tiers,
            degradation: self.degradation,
            store_breaker: self.store_breaker,
            enrichment_breaker: self.enrichment.breaker,
        }
    }

    /// Most submissions past the tier queues at once (validating or storing): what the
    /// store-writes bulkhead holds, running and waiting.
    pub fn max_in_flight(&self) -> usize {
        (self.store_writes.max_concurrent + self.store_writes.max_queue) as usize
    }

    /// Checks every setting; the error names the offending one.
    pub fn validate(&self) -> Result<(), PipelineConfigError> {
        self.limits.validate()?;
        self.validation.validate()?;
        self.store_breaker.validate()?;
        self.tiers.validate()?;
        self.degradation.validate()?;
        self.enrichment.validate()?;
        self.store_writes.validate()?;
        if !(1..=MAX_VALIDATOR_WORKERS).contains(&self.validator_workers) {
            return Err(PipelineConfigError::ValidatorWorkers(
                self.validator_workers,
            ));
        }
        Ok(())
    }
}
