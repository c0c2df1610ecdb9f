//! The `[edge]` section: what the client-facing QUIC endpoint spends on anyone who
//! connects, before and after authentication. SECURITY.md says what each limit protects.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};

/// Default cap on connections open at once (handshaking or established).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default cap on connections from one source address (IPv6: one /64).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u32 = 64;
/// Default cap on TLS handshakes in progress at once.
pub const DEFAULT_MAX_HANDSHAKES_IN_PROGRESS: u32 = 128;
/// Default cap on handshakes begun per second (also the burst).
pub const DEFAULT_MAX_HANDSHAKES_PER_SECOND: u32 = 256;
/// Default time a connection has, from acceptance, to complete its hello.
pub const DEFAULT_HELLO_TIMEOUT_MS: u64 = 5_000;
/// Default time a frame has to arrive whole once its first byte has.
pub const DEFAULT_FRAME_TIMEOUT_MS: u64 = 10_000;
/// Default cap on requests being served at once on this node, all connections together.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: u32 = 16_384;
/// Default bytes a client may send on one stream ahead of what the node has read.
pub const DEFAULT_STREAM_RECEIVE_WINDOW: u32 = 1 << 20;
/// Default bytes a client may send on one connection ahead of what the node has read.
pub const DEFAULT_CONNECTION_RECEIVE_WINDOW: u32 = 2 << 20;
/// Default bytes of responses the node buffers per connection for a slow reader.
pub const DEFAULT_SEND_WINDOW: u32 = 2 << 20;
/// Default time a key no member knew is refused without asking the members again.
pub const DEFAULT_UNKNOWN_KEY_TTL_SECS: u64 = 10;
/// Default number of unknown key hashes remembered.
pub const DEFAULT_UNKNOWN_KEY_CACHE_ENTRIES: u32 = 10_000;
/// Default lookups at other members one source address may cause per minute.
pub const DEFAULT_KEY_LOOKUPS_PER_ADDRESS_PER_MINUTE: u32 = 60;
/// Source addresses whose lookup budget is tracked at most.
pub const KEY_LOOKUP_TRACKED_ADDRESSES: usize = 65_536;

/// Limits of the client-facing endpoint. Memory a flood can hold is bounded by
/// `max_connections × connection_receive_window_bytes` plus `send_window_bytes` per
/// established connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSection {
    /// Connections open at once, from everyone (1..=1,000,000; default 1,024).
    pub max_connections: u32,
    /// Connections open at once from one source address, IPv6 counted per /64
    /// (1..=`max_connections`; default 64).
    pub max_connections_per_address: u32,
    /// TLS handshakes in progress at once (1..=100,000; default 128); beyond it new
    /// connection attempts are dropped without an answer.
    pub max_handshakes_in_progress: u32,
    /// Handshakes begun per second, also the burst (1..=1,000,000; default 256);
    /// beyond it attempts are dropped without an answer.
    pub max_handshakes_per_second: u32,
    /// Milliseconds from acceptance to a completed hello (100..=60,000; default 5,000).
    #[serde(deserialize_with = "super::units::millis")]
    pub hello_timeout_ms: u64,
    /// Milliseconds a frame has to arrive whole once its first byte has arrived
    /// (100..=600,000; default 10,000); a slower frame resets its stream.
    #[serde(deserialize_with = "super::units::millis")]
    pub frame_timeout_ms: u64,
    /// Requests served at once on this node over all connections (1..=1,000,000;
    /// default 16,384); beyond it a request is answered `Overloaded`.
    pub max_requests_in_flight: u32,
    /// Bytes a client may send on one stream ahead of the node's reading
    /// (4 KiB..=64 MiB; default 1 MiB).
    #[serde(deserialize_with = "super::units::bytes")]
    pub stream_receive_window_bytes: u32,
    /// Bytes a client may send on one connection ahead of the node's reading
    /// (4 KiB..=256 MiB, at least the stream window; default 2 MiB).
    #[serde(deserialize_with = "super::units::bytes")]
    pub connection_receive_window_bytes: u32,
    /// Bytes of unacknowledged responses buffered per connection (4 KiB..=256 MiB;
    /// default 2 MiB).
    #[serde(deserialize_with = "super::units::bytes")]
    pub send_window_bytes: u32,
    /// Seconds a key no member knew is refused without asking again (0..=3,600;
    /// default 10; 0 turns the cache off). A key created meanwhile on another member
    /// is usable here after at most this long.
    #[serde(deserialize_with = "super::units::secs")]
    pub unknown_key_ttl_secs: u64,
    /// Unknown key hashes remembered (1..=1,000,000; default 10,000).
    pub unknown_key_cache_entries: u32,
    /// Lookups at other members one source address may cause per minute, also the
    /// burst (1..=100,000; default 60); beyond it the hello is answered `RateLimited`.
    pub key_lookups_per_address_per_minute: u32,
}

impl Default for EdgeSection {
    fn default() -> Self {
        EdgeSection {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_handshakes_in_progress: DEFAULT_MAX_HANDSHAKES_IN_PROGRESS,
            max_handshakes_per_second: DEFAULT_MAX_HANDSHAKES_PER_SECOND,
            hello_timeout_ms: DEFAULT_HELLO_TIMEOUT_MS,
            frame_timeout_ms: DEFAULT_FRAME_TIMEOUT_MS,
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            stream_receive_window_bytes: DEFAULT_STREAM_RECEIVE_WINDOW,
            connection_receive_window_bytes: DEFAULT_CONNECTION_RECEIVE_WINDOW,
            send_window_bytes: DEFAULT_SEND_WINDOW,
            unknown_key_ttl_secs: DEFAULT_UNKNOWN_KEY_TTL_SECS,
            unknown_key_cache_entries: DEFAULT_UNKNOWN_KEY_CACHE_ENTRIES,
            key_lookups_per_address_per_minute: DEFAULT_KEY_LOOKUPS_PER_ADDRESS_PER_MINUTE,
        }
    }
}

impl EdgeSection {
    /// Checks every limit; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const KIB: u64 = 1 << 10;
        const MIB: u64 = 1 << 20;
        let checks: &[(&str, u64, u64, u64)] = &[
            (
                "edge.max_connections",
                self.max_connections.into(),
                1,
                1_000_000,
            ),
            (
                "edge.max_connections_per_address",
                self.max_connections_per_address.into(),
                1,
                self.max_connections.into(),
            ),
            (
                "edge.max_handshakes_in_progress",
                self.max_handshakes_in_progress.into(),
                1,
                100_000,
            ),
            (
                "edge.max_handshakes_per_second",
                self.max_handshakes_per_second.into(),
                1,
                1_000_000,
            ),
            ("edge.hello_timeout_ms", self.hello_timeout_ms, 100, 60_000),
            ("edge.frame_timeout_ms", self.frame_timeout_ms, 100, 600_000),
            (
                "edge.max_requests_in_flight",
                self.max_requests_in_flight.into(),
                1,
                1_000_000,
            ),
            (
                "edge.stream_receive_window_bytes",
                self.stream_receive_window_bytes.into(),
                4 * KIB,
                64 * MIB,
            ),
            (
                "edge.connection_receive_window_bytes",
                self.connection_receive_window_bytes.into(),
                self.stream_receive_window_bytes.into(),
                256 * MIB,
            ),
            (
                "edge.send_window_bytes",
                self.send_window_bytes.into(),
                4 * KIB,
                256 * MIB,
            ),
            (
                "edge.unknown_key_ttl_secs",
                self.unknown_key_ttl_secs,
                0,
                3_600,
            ),
            (
                "edge.unknown_key_cache_entries",
                self.unknown_key_cache_entries.into(),
                1,
                1_000_000,
            ),
            (
                "edge.key_lookups_per_address_per_minute",
                self.key_lookups_per_address_per_minute.into(),
                1,
                100_000,
            ),
        ];
        for &(key, value, min, max) in checks {
            check_range(key, value, min, max)?;
        }
        Ok(())
    }

    /// The hello deadline.
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.hello_timeout_ms)
    }

    /// The deadline of a frame once it has begun.
    pub fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        EdgeSection::default().validate().unwrap();
    }

    #[test]
    fn each_limit_out_of_range_names_its_key() {
        type Case = (fn(&mut EdgeSection), &'static str);
        let cases: &[Case] = &[
            (|e| e.max_connections = 0, "edge.max_connections"),
            (
                |e| e.max_connections_per_address = e.max_connections + 1,
                "edge.max_connections_per_address",
            ),
            (
                |e| e.max_handshakes_in_progress = 0,
                "edge.max_handshakes_in_progress",
            ),
            (
                |e| e.max_handshakes_per_second = 0,
                "edge.max_handshakes_per_second",
            ),
            (|e| e.hello_timeout_ms = 0, "edge.hello_timeout_ms"),
            (|e| e.frame_timeout_ms = 10, "edge.frame_timeout_ms"),
            (
                |e| e.max_requests_in_flight = 0,
                "edge.max_requests_in_flight",
            ),
            (
                |e| e.stream_receive_window_bytes = 100,
                "edge.stream_receive_window_bytes",
            ),
            (
                |e| e.connection_receive_window_bytes = e.stream_receive_window_bytes - 1,
                "edge.connection_receive_window_bytes",
            ),
            (|e| e.send_window_bytes = 0, "edge.send_window_bytes"),
            (
                |e| e.unknown_key_ttl_secs = 7_200,
                "edge.unknown_key_ttl_secs",
            ),
            (
                |e| e.unknown_key_cache_entries = 0,
                "edge.unknown_key_cache_entries",
            ),
            (
                |e| e.key_lookups_per_address_per_minute = 0,
                "edge.key_lookups_per_address_per_minute",
            ),
        ];
        for (break_it, key) in cases {
            let mut edge = EdgeSection::default();
            break_it(&mut edge);
            assert_eq!(edge.validate().unwrap_err().key, *key);
        }
    }
}
