//! What the node's server records: metric names, their descriptions, and the helpers
//! the request path calls. Labels are `&'static str` so recording never allocates.

use std::time::Duration;

use chorus_protocol::{ErrorCode, Request, ResetCode, Response};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};

/// Requests answered, by `request` kind and `outcome` (`ok` or the error kind).
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

/// The `outcome` label of a request answered without error.
const OK: &str = "ok";
/// The `tier` label of requests that carry no tier.
const NO_TIER: &str = "none";
/// The `tier` label of a batch whose items ask for different tiers.
const MIXED_TIER: &str = "mixed";
/// The `request` label of a frame whose request could not be decoded.
const UNDECODED: &str = "undecoded";

/// Registers every description with the installed recorder (the store's too).
pub(super) fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests answered, by request kind and outcome (ok or the error kind)."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a decoded request to its answer, by request kind and tier."
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
    chorus_actors::telemetry::describe();
}

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
