//! What the node's server records: metric names, their descriptions, and the helpers
//! the request path calls. Labels are `&'static str` so recording never allocates.

use std::time::Duration;

use chorus_protocol::{ErrorCode, Request, ResetCode, Response};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};

/// Requests answered, by `request` kind and `outcome` (`ok`, `not_found` for a read by
/// id that found nothing, or the error kind).
pub const REQUESTS_TOTAL: &str = "chorus_requests_total";
/// Seconds from a decoded request to its answer, by `request` kind and `tier`.
pub const REQUEST_DURATION_SECONDS: &str = "chorus_request_duration_seconds";
/// Typed errors sent to clients (whole requests and single items of a batch), by `reason`.
pub const REJECTIONS_TOTAL: &str = "chorus_rejections_total";
/// Client connections past the hello.
pub const CONNECTIONS_OPEN: &str = "chorus_connections_open";
/// Request streams reset or stopped by the server, by `code`.
pub const STREAM_RESETS_TOTAL: &str = "chorus_stream_resets_total";
/// Connection attempts turned away before their handshake, by `reason`.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "chorus_connections_refused_total";
/// Hellos whose key no local store held, by `outcome` (`asked`, `cached`, `throttled`).
pub const UNKNOWN_KEY_HELLOS_TOTAL: &str = "chorus_unknown_key_hellos_total";
/// Reads by an id without a partition hint, which ask every member.
pub const GET_FAN_OUTS_TOTAL: &str = "chorus_get_fan_outs_total";

/// The `outcome` label of a request answered without error.
const OK: &str = "ok";
/// The `outcome` label of a read by id that found no item.
const NOT_FOUND: &str = "not_found";
/// The `tier` label of requests that carry no tier.
const NO_TIER: &str = "none";
/// The `tier` label of a batch whose items ask for different tiers.
const MIXED_TIER: &str = "mixed";
/// The `request` label of a frame whose request could not be decoded.
const UNDECODED: &str = "undecoded";
/// The `reason` label of a connection sent a stateless retry under handshake load.
const REFUSED_RETRY: &str = "retry";

/// Registers every description with the installed recorder (the store's too).
pub(super) fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests answered, by request kind and outcome (ok, not_found or the error kind)."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a decoded request to its answer, by request kind and tier."
    );
    describe_counter!(
        crate::functions::FUNCTION_PAGES_TOTAL,
        Unit::Count,
        "Function pages answered, by source: cache (served again within a second) or members (merged)."
    );
    describe_counter!(
        REJECTIONS_TOTAL,
        Unit::Count,
        "Typed errors sent to clients, per request or per batch item, by reason."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        Unit::Count,
        "Client connections open past the hello."
    );
    describe_counter!(
        STREAM_RESETS_TOTAL,
        Unit::Count,
        "Request streams the server reset or stopped, by reset code."
    );
    describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        Unit::Count,
        "Connection attempts turned away before their handshake, by reason."
    );
    describe_counter!(
        UNKNOWN_KEY_HELLOS_TOTAL,
        Unit::Count,
        "Hellos with a key this node does not hold, by outcome (asked, cached, throttled)."
    );
    describe_counter!(
        GET_FAN_OUTS_TOTAL,
        Unit::Count,
        "Reads by an id that names no partition (not minted by the SDK), which ask every member."
    );
    crate::cluster::describe_metrics();
    chorus_actors::telemetry::describe();
    export_initial_values();
}

/// Exports, at zero or at their starting value, the series that otherwise appear only
/// after their first event: an alert on `rate()` or `increase()` of a counter sees
/// nothing until the counter exists, and a dashboard shows "no data" rather than 0.
/// Adding zero (never setting) keeps whatever a component recorded before this call.
fn export_initial_values() {
    use chorus_actors::policy::breaker::BreakerState;
    use chorus_actors::policy::degradation::Level;
    use chorus_actors::published_breaker::state_name;
    use chorus_actors::telemetry as t;

    // A node starts at the normal level, its queues empty and its store breaker closed.
    metrics::gauge!(t::DEGRADATION_LEVEL).increment(0.0);
    for level in Level::ALL {
        counter!(t::DEGRADATION_CHANGES, "to" => level.as_str()).increment(0);
    }
    for tier in chorus_protocol::Tier::ALL {
        metrics::gauge!(t::TIER_QUEUE_DEPTH, "tier" => tier.as_str()).increment(0.0);
    }
    metrics::gauge!(t::STORE_QUEUE_DEPTH).increment(0.0);
    counter!(GET_FAN_OUTS_TOTAL).increment(0);
    metrics::gauge!(t::STORE_UNINDEXED_RECORDS).increment(0.0);
    metrics::gauge!(t::BREAKER_STATE, "dependency" => STORE_BREAKER).increment(0.0);
    for state in [
        BreakerState::Closed,
        BreakerState::HalfOpen,
        BreakerState::Open,
        BreakerState::ForcedOpen,
    ] {
        counter!(t::BREAKER_TRANSITIONS, "dependency" => STORE_BREAKER, "to" => state_name(state))
            .increment(0);
    }
    for counter in [
        t::STORE_SEGMENTS_RETIRED,
        t::STORE_SEGMENTS_COMPACTED,
        t::STORE_LOG_COPIED_BYTES,
        t::VALIDATION_PII_REDACTED,
    ] {
        counter!(counter).increment(0);
    }
    counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => REFUSED_RETRY).increment(0);
    for refusal in crate::server::admission::Refusal::ALL {
        counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => refusal.as_str()).increment(0);
    }
    metrics::gauge!(CONNECTIONS_OPEN).increment(0.0);
    counter!(crate::cluster::key_sync::KEYS_SYNCED_TOTAL).increment(0);
}

/// The `dependency` label of the store's circuit breaker, the one every node has.
const STORE_BREAKER: &str = chorus_actors::STORE_DEPENDENCY;

/// The `tier` label of a request: the items' tier for submits, `none` otherwise.
pub fn tier_label(request: &Request) -> &'static str {
    match request {
        Request::Submit(item) => item.tier.as_str(),
        Request::SubmitBatch(items) => match items.split_first() {
            Some((first, rest)) if rest.iter().all(|i| i.tier == first.tier) => first.tier.as_str(),
            Some(_) => MIXED_TIER,
            None => NO_TIER,
        },
        _ => NO_TIER,
    }
}

/// Records one answered request: its count, its latency, and its typed errors.
pub fn record_request(
    kind: &'static str,
    tier: &'static str,
    elapsed: Duration,
    result: &Result<Response, ErrorCode>,
) {
    histogram!(REQUEST_DURATION_SECONDS, "request" => kind, "tier" => tier)
        .record(elapsed.as_secs_f64());
    match result {
        Ok(Response::Item(None)) => {
            counter!(REQUESTS_TOTAL, "request" => kind, "outcome" => NOT_FOUND).increment(1);
        }
        Ok(response) => {
            counter!(REQUESTS_TOTAL, "request" => kind, "outcome" => OK).increment(1);
            if let Response::Batch(outcomes) = response {
                for error in outcomes.iter().filter_map(|o| o.as_ref().err()) {
                    record_rejection(error);
                }
            }
        }
        Err(error) => {
            counter!(REQUESTS_TOTAL, "request" => kind, "outcome" => error.kind()).increment(1);
            record_rejection(error);
        }
    }
}

/// Records a request refused before it could be decoded (it had a request id to answer).
pub fn record_undecoded(error: &ErrorCode) {
    counter!(REQUESTS_TOTAL, "request" => UNDECODED, "outcome" => error.kind()).increment(1);
    record_rejection(error);
}

fn record_rejection(error: &ErrorCode) {
    counter!(REJECTIONS_TOTAL, "reason" => error.kind()).increment(1);
}

/// Records a connection attempt turned away before its handshake.
pub fn record_connection_refused(reason: &'static str) {
    counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Records a connection sent a stateless retry under handshake load.
pub fn record_connection_retried() {
    counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => REFUSED_RETRY).increment(1);
}

/// Records what a hello with a key unknown here led to.
pub fn record_unknown_key(outcome: &'static str) {
    counter!(UNKNOWN_KEY_HELLOS_TOTAL, "outcome" => outcome).increment(1);
}

/// Records a stream the server reset or stopped with `code`.
pub fn record_stream_reset(code: ResetCode) {
    counter!(STREAM_RESETS_TOTAL, "code" => code.as_str()).increment(1);
}

/// Counts an open connection for as long as it lives.
#[derive(Debug)]
pub struct OpenConnection(());

impl OpenConnection {
    /// Counts one more open connection until the returned guard is dropped.
    pub fn open() -> Self {
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}
