//! A bulkhead's occupancy as its owning actor publishes it: the owner alone changes the
//! pure [`Bulkhead`](crate::policy::bulkhead::Bulkhead); `chorus ctl bulkheads` and the
//! metrics read these counters without a message to the owner.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::policy::bulkhead::BulkheadConfig;
use crate::telemetry::{BULKHEAD_QUEUED, BULKHEAD_RUNNING};

/// Where one bulkhead's occupancy is published; shared by every incarnation of its owner.
#[derive(Debug)]
pub struct BulkheadBoard {
    resource: &'static str,
    config: BulkheadConfig,
    running: AtomicU32,
    queued: AtomicU32,
    /// The running and queued gauges, registered at the first publish (after the node
    /// installs its recorder): looking them up by name and label cost every change.
    gauges: OnceLock<(metrics::Gauge, metrics::Gauge)>,
}

/// A bulkhead's occupancy and limits at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkheadOccupancy {
    /// The resource it guards (`store`, `enrichment`).
    pub resource: &'static str,
    /// Calls running.
    pub running: u32,
    /// Calls waiting for a slot.
    pub queued: u32,
    /// Most calls running at once.
    pub max_concurrent: u32,
    /// Most calls waiting at once.
    pub max_queue: u32,
}

impl BulkheadBoard {
    /// An empty board for `resource` with `config`'s limits.
    pub fn new(resource: &'static str, config: BulkheadConfig) -> Arc<Self> {
        Arc::new(BulkheadBoard {
            resource,
            config,
            running: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            gauges: OnceLock::new(),
        })
    }

    /// The limits the owner enforces.
    pub fn config(&self) -> BulkheadConfig {
        self.config
    }

    /// The owner's new occupancy (after every change), also set on the gauges.
    pub fn publish(&self, running: u32, queued: usize) {
        let queued = u32::try_from(queued).unwrap_or(u32::MAX);
        self.running.store(running, Ordering::Relaxed);
        self.queued.store(queued, Ordering::Relaxed);
        let (running_gauge, queued_gauge) = self.gauges.get_or_init(|| {
            (
                metrics::gauge!(BULKHEAD_RUNNING, "resource" => self.resource),
                metrics::gauge!(BULKHEAD_QUEUED, "resource" => self.resource),
            )
        });
        running_gauge.set(f64::from(running));
        queued_gauge.set(f64::from(queued));
    }

    /// The occupancy as last published.
    pub fn read(&self) -> BulkheadOccupancy {
        BulkheadOccupancy {
            resource: self.resource,
            running: self.running.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            max_concurrent: self.config.max_concurrent,
            max_queue: self.config.max_queue,
        }
    }
}
