//! The process's one Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::catalog;

/// Latency buckets, seconds: 50 µs (a local actor round trip) to 120 s, roughly
/// 1-2.5-5 per decade, with a bound at every tier's budget (0.1, 1, 10 and 60 s) so the
/// alert rules can tell a p99 over budget from one just under it.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Batch size buckets, items: powers of two up to the group commit's default cap (4096).
const BATCH_ITEM_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the global `metrics` recorder on the first call
/// and returns a handle to render it; later calls (several nodes in one test process)
/// return the same handle.
///
/// The caller runs [`PrometheusHandle::run_upkeep`] periodically ([`super::MetricsServer`]
/// does) so histogram samples are drained even if nobody scrapes.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(chorus_actors::telemetry::STORE_BATCH_ITEMS.into()),
                        BATCH_ITEM_BUCKETS,
                    )
                })
                .expect("the bucket lists are constant and non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                // Someone else's recorder (an embedding program): ours renders empty.
                tracing::warn!(error = %e, "a metrics recorder was already installed");
            }
            catalog::describe();
            handle
        })
        .clone()
}
