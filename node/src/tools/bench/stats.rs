//! Per-tier counters and latency histograms of the closed and open loops.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of microseconds.
    pub(crate) fn of<C: hdrhistogram::Counter>(h: &Histogram<C>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// What one worker measured, for one tier.
pub(crate) struct TierStats {
    /// Latencies of the successful requests, microseconds.
    pub(crate) histogram: Histogram<u64>,
    /// Requests answered successfully.
    pub(crate) ok: u64,
    /// Failed requests, by kind.
    pub(crate) errors: BTreeMap<String, u64>,
}

impl TierStats {
    /// Nothing measured yet.
    pub(crate) fn new() -> Self {
        TierStats {
            histogram: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Adds `other`'s counts and latencies to these.
    pub(crate) fn add(&mut self, other: &TierStats) {
        self.histogram
            .add(&other.histogram)
            .expect("same histogram bounds");
        self.ok += other.ok;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_insert(0) += n;
        }
    }

    /// Latency percentiles of the successful requests, milliseconds.
    pub(crate) fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.histogram)
    }
}

/// Empty statistics for each tier, indexed like `Tier::ALL`.
pub(crate) fn new_tier_stats() -> [TierStats; 4] {
    [
        TierStats::new(),
        TierStats::new(),
        TierStats::new(),
        TierStats::new(),
    ]
}

/// A latency histogram of 1 µs .. 10 min at 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}
