//! The metrics this crate records, by name, and their descriptions.
//!
//! Recording goes through the `metrics` facade: without an installed recorder (tests,
//! benchmarks) every macro is a no-op, so this crate never needs to know whether or how
//! the node exports them.

/// Seconds one group-commit batch took to become durable (apply, flush and sync).
pub const STORE_FLUSH_DURATION_SECONDS: &str = "chorus_store_flush_duration_seconds";
/// Items written by one group-commit batch.
pub const STORE_BATCH_ITEMS: &str = "chorus_store_batch_items";
/// Bytes of the partition log's segments on disk.
pub const STORE_LOG_BYTES: &str = "chorus_store_log_bytes";
/// Acknowledged records the index has not absorbed yet (served from memory).
pub const STORE_UNINDEXED_RECORDS: &str = "chorus_store_unindexed_records";
/// Items queued in the group commit, waiting for the flush in flight to finish.
pub const STORE_QUEUE_DEPTH: &str = "chorus_store_queue_depth";
/// Items whose deferred (production mode) content check ran after the ack.
pub const VALIDATION_DEFERRED_CHECKED: &str = "chorus_validation_deferred_checked_total";
/// Items whose deferred check changed the stored verdict (flagged or rejected).
pub const VALIDATION_DEFERRED_UPDATED: &str = "chorus_validation_deferred_updated_total";
/// Items whose deferred check was skipped: the review queue was full (or stopping), so
/// the item keeps its provisional status.
pub const VALIDATION_DEFERRED_SKIPPED: &str = "chorus_validation_deferred_skipped_total";
/// Items whose deferred check failed on a store error (their provisional status stays).
pub const VALIDATION_DEFERRED_FAILED: &str = "chorus_validation_deferred_failed_total";

/// Enrichment calls by outcome (done, skipped reasons: shed, circuit_open, bulkhead_full, failed).
pub const ENRICHMENT_CALLS: &str = "chorus_enrichment_total";

/// A circuit breaker's state: 0 closed, 1 half-open, 2 open, 3 forced open.
pub const BREAKER_STATE: &str = "chorus_breaker_state";
/// Changes of a circuit breaker's state, by the state entered.
pub const BREAKER_TRANSITIONS: &str = "chorus_breaker_transitions_total";

/// Submissions waiting in each tier's queue.
pub const TIER_QUEUE_DEPTH: &str = "chorus_tier_queue_depth";
/// The degradation level: 0 normal, 1 shedding batch and optional work, 2 critical only.
pub const DEGRADATION_LEVEL: &str = "chorus_degradation_level";
/// Changes of the degradation level, by the level entered.
pub const DEGRADATION_CHANGES: &str = "chorus_degradation_changes_total";

/// Items judged by the content policy, by the status it gave (`accepted`, `flagged`,
/// `rejected`; production mode's provisional status before the after-ack review).
pub const VALIDATION_OUTCOMES: &str = "chorus_validation_outcomes_total";
/// Items in which PII was found and redacted before storage.
pub const VALIDATION_PII_REDACTED: &str = "chorus_validation_pii_redacted_total";

/// Calls running in a bulkhead, by resource.
pub const BULKHEAD_RUNNING: &str = "chorus_bulkhead_running";
/// Calls waiting for a bulkhead slot, by resource.
pub const BULKHEAD_QUEUED: &str = "chorus_bulkhead_queued";

/// Bytes of the partition log's records still live (or not yet known dead): its disk
/// use minus the dead bytes.
pub const STORE_LOG_LIVE_BYTES: &str = "chorus_store_log_live_bytes";
/// Bytes of the partition log's records the index no longer points at (superseded),
/// in segments still on disk: what the retirement pass can reclaim.
pub const STORE_LOG_DEAD_BYTES: &str = "chorus_store_log_dead_bytes";
/// Segment files of the partition log on disk.
pub const STORE_LOG_SEGMENTS: &str = "chorus_store_log_segments";
/// Log segments deleted by the retirement pass (all their records dead).
pub const STORE_SEGMENTS_RETIRED: &str = "chorus_store_segments_retired_total";
/// Of the retired segments, those compacted: live records copied forward first.
pub const STORE_SEGMENTS_COMPACTED: &str = "chorus_store_segments_compacted_total";
/// Bytes of live records the retirement pass copied to the log's head.
pub const STORE_LOG_COPIED_BYTES: &str = "chorus_store_log_copied_bytes_total";

/// Registers the descriptions of this crate's metrics with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(
        BULKHEAD_RUNNING,
        metrics::Unit::Count,
        "Calls running in a bulkhead, by resource."
    );
    metrics::describe_gauge!(
        BULKHEAD_QUEUED,
        metrics::Unit::Count,
        "Calls waiting for a bulkhead slot, by resource."
    );
    metrics::describe_counter!(
        VALIDATION_OUTCOMES,
        metrics::Unit::Count,
        "Items judged by the content policy, by status."
    );
    metrics::describe_counter!(
        VALIDATION_PII_REDACTED,
        metrics::Unit::Count,
        "Items in which PII was found and redacted before storage."
    );
    metrics::describe_gauge!(
        TIER_QUEUE_DEPTH,
        metrics::Unit::Count,
        "Submissions waiting in each tier's queue."
    );
    metrics::describe_gauge!(
        DEGRADATION_LEVEL,
        metrics::Unit::Count,
        "Degradation level: 0 normal, 1 shedding batch and optional work, 2 critical only."
    );
    metrics::describe_counter!(
        DEGRADATION_CHANGES,
        metrics::Unit::Count,
        "Changes of the degradation level, by the level entered."
    );
    metrics::describe_gauge!(
        BREAKER_STATE,
        metrics::Unit::Count,
        "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open, 3 forced open."
    );
    metrics::describe_counter!(
        BREAKER_TRANSITIONS,
        metrics::Unit::Count,
        "Circuit breaker state changes per dependency, by the state entered."
    );
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
        VALIDATION_DEFERRED_CHECKED,
        metrics::Unit::Count,
        "Items whose production-mode content check ran after the ack."
    );
    metrics::describe_counter!(
        VALIDATION_DEFERRED_UPDATED,
        metrics::Unit::Count,
        "Items the after-ack content check flagged or rejected (stored receipt rewritten)."
    );
    metrics::describe_counter!(
        VALIDATION_DEFERRED_SKIPPED,
        metrics::Unit::Count,
        "Items left with a provisional status: the after-ack review queue was full."
    );
    metrics::describe_counter!(
        VALIDATION_DEFERRED_FAILED,
        metrics::Unit::Count,
        "Items whose after-ack content check failed on a store error."
    );
    metrics::describe_gauge!(
        STORE_LOG_BYTES,
        metrics::Unit::Bytes,
        "Bytes of the partition log's segments on disk."
    );
    metrics::describe_gauge!(
        STORE_UNINDEXED_RECORDS,
        metrics::Unit::Count,
        "Acknowledged records the index has not absorbed yet (served from memory)."
    );
    metrics::describe_gauge!(
        STORE_LOG_LIVE_BYTES,
        metrics::Unit::Bytes,
        "Bytes of the partition log not known dead: disk use minus dead bytes."
    );
    metrics::describe_gauge!(
        STORE_LOG_DEAD_BYTES,
        metrics::Unit::Bytes,
        "Bytes of superseded log records still on disk, reclaimable by retirement."
    );
    metrics::describe_gauge!(
        STORE_LOG_SEGMENTS,
        metrics::Unit::Count,
        "Segment files of the partition log on disk."
    );
    metrics::describe_counter!(
        STORE_SEGMENTS_RETIRED,
        metrics::Unit::Count,
        "Log segments deleted by the retirement pass."
    );
    metrics::describe_counter!(
        STORE_SEGMENTS_COMPACTED,
        metrics::Unit::Count,
        "Retired log segments whose live records were copied forward first."
    );
    metrics::describe_counter!(
        STORE_LOG_COPIED_BYTES,
        metrics::Unit::Bytes,
        "Bytes of live log records copied forward by the retirement pass."
    );
}
