//! The write pipeline's settings, given to the actor tree at start.

use crate::policy::rate_limit::{RateLimitConfig, RateLimitConfigError};

/// Settings of the node's write pipeline; `Default` is DESIGN.md's defaults.
#[derive(Clone, Debug, Default)]
pub struct PipelineConfig {
    /// Per-user (100 per minute), per-API-key and global submit limits.
    pub limits: RateLimitConfig,
}

impl PipelineConfig {
    /// Checks every setting; the error names the offending one.
    pub fn validate(&self) -> Result<(), RateLimitConfigError> {
        self.limits.validate()
    }
}
