//! The metrics this crate records, by name, and their descriptions.
//!
//! Recording goes through the `metrics` facade: without an installed recorder (tests,
//! benchmarks) every macro is a no-op, so this crate never needs to know whether or how
//! the node exports them.

/// Seconds one group-commit batch took to become durable (apply, flush and sync).
pub const STORE_FLUSH_DURATION_SECONDS: &str = "chorus_store_flush_duration_seconds";
/// Items written by one group-commit batch.
pub const STORE_BATCH_ITEMS: &str = "chorus_store_batch_items";
/// Items queued in the group commit, waiting for the flush in flight to finish.
pub const STORE_QUEUE_DEPTH: &str = "chorus_store_queue_depth";
/// Items stored with a provisional status because their deferred (production mode)
/// content check is not run yet.
pub const VALIDATION_DEFERRED_UNCHECKED: &str = "chorus_validation_deferred_unchecked_total";

/// Registers the descriptions of this crate's metrics with the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(
        STORE_FLUSH_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time for one group-commit batch to become durable."
    );
    metrics::describe_histogram!(
        STORE_BATCH_ITEMS,
        metrics::Unit::Count,
        "Items written by one group-commit batch."
    );
    metrics::describe_gauge!(
        STORE_QUEUE_DEPTH,
        metrics::Unit::Count,
        "Items waiting in the group-commit queue for the next flush."
    );
    metrics::describe_counter!(
        VALIDATION_DEFERRED_UNCHECKED,
        metrics::Unit::Count,
        "Items stored with a provisional status: the deferred content check is not run yet."
    );
}
