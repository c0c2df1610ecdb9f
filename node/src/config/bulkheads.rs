//! The `[store_writes]` section: the store-writes bulkhead's limits.

use chorus_actors::policy::bulkhead::BulkheadConfig;
use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// Submissions in the store's group commit at once, and waiting for a place in it
/// (defaults 128 and 64: see [`BulkheadConfig::store_writes`]). The tier queues let at
/// most their sum past them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreWritesSection {
    /// Submissions being written at once, sharing one flush (default 128).
    pub max_concurrent: u32,
    /// Submissions waiting for a slot (default 64); more are refused `Overloaded`.
    pub max_queue: u32,
}

impl Default for StoreWritesSection {
    fn default() -> Self {
        let preset = BulkheadConfig::store_writes();
        StoreWritesSection {
            max_concurrent: preset.max_concurrent,
            max_queue: preset.max_queue,
        }
    }
}

impl StoreWritesSection {
    /// The bulkhead's limits, or the key that is out of range.
    pub fn to_bulkhead(&self) -> Result<BulkheadConfig, ConfigError> {
        check_range(
            "store_writes.max_concurrent",
            self.max_concurrent.into(),
            1,
            100_000,
        )?;
        check_range(
            "store_writes.max_queue",
            self.max_queue.into(),
            0,
            1_000_000,
        )?;
        Ok(BulkheadConfig {
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
            max_queue_wait: None,
        })
    }
}
