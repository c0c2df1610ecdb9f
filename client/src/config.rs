//! What the caller configures: who to trust and who to be ([`Credentials`]), and how the
//! client behaves on the wire ([`ClientConfig`]).

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

use chorus_protocol::{DEFAULT_MAX_FRAME, FrameLimit, MAX_FRAME_CEILING};

use crate::error::ClientError;
use crate::load_guard::LoadGuardConfig;

/// The server name verified against the certificate when none is given; the dev
/// certificate carries it.
pub const DEFAULT_SERVER_NAME: &str = "localhost";

/// Most streams a connection may pool: quinn allows 100 concurrent bidi streams per
/// connection by default, and the hello needs one.
const MAX_STREAMS_PER_CONNECTION: usize = 64;

/// Who the client trusts and how it authenticates.
#[derive(Clone)]
pub struct Credentials {
    /// The cluster CA certificate(s), PEM; the server's certificate must chain to one.
    pub ca_pem: Vec<u8>,
    /// The API key presented in the hello.
    pub api_key: String,
    /// The name checked against the server certificate (DNS name or IP literal).
    pub server_name: String,
}

impl Credentials {
    /// Credentials from a CA in PEM and an API key, for server name `localhost`.
    pub fn new(ca_pem: impl Into<Vec<u8>>, api_key: impl Into<String>) -> Self {
        Credentials {
            ca_pem: ca_pem.into(),
            api_key: api_key.into(),
            server_name: DEFAULT_SERVER_NAME.to_string(),
        }
    }

    /// Credentials whose CA is read from the PEM file at `path`.
    pub fn from_ca_file(
        path: impl AsRef<Path>,
        api_key: impl Into<String>,
    ) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let ca_pem = std::fs::read(path)
            .map_err(|e| ClientError::InvalidCa(format!("reading {}: {e}", path.display())))?;
        Ok(Credentials::new(ca_pem, api_key))
    }

    /// The same credentials, verifying the server certificate for `server_name`.
    pub fn with_server_name(mut self, server_name: impl Into<String>) -> Self {
        self.server_name = server_name.into();
        self
    }
}

impl fmt::Debug for Credentials {
    /// Never prints the API key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("api_key", &"<redacted>")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// How the client behaves on the wire. Start from [`ClientConfig::default`]; the client
/// calls [`ClientConfig::validate`] once when it connects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Long-lived request streams per connection, 1..=64 (default 4). Requests are spread
    /// over them round-robin; each carries many requests at once.
    pub streams_per_connection: NonZeroUsize,
    /// Most requests awaiting a response on one stream (default 256). A caller beyond it
    /// waits for a slot; the wait counts against its request timeout.
    pub max_in_flight_per_stream: NonZeroU32,
    /// Time for one attempt of a request, from queueing to response (default 30 s).
    pub request_timeout: Duration,
    /// Time to establish a connection to one address, hello included (default 5 s).
    pub connect_timeout: Duration,
    /// Retries after the first attempt, for failures where a retry is safe (default 3).
    pub max_retries: u32,
    /// First retry delay; doubles with each retry, with jitter (default 50 ms).
    pub initial_backoff: Duration,
    /// Longest delay between two attempts (default 2 s). A server asking for a longer
    /// `retry_after_ms` than this is not retried: the error goes to the caller.
    pub max_backoff: Duration,
    /// Largest request payload, bytes (default 1 MiB); the server's own limit from the
    /// hello applies too, whichever is smaller.
    pub max_request_frame: FrameLimit,
    /// Largest response payload, bytes (default 16 MiB: a page of items can be large).
    pub max_response_frame: FrameLimit,
    /// Interval of QUIC keep-alives, so that an idle connection stays open and a dead
    /// server is noticed (default 5 s).
    pub keep_alive_interval: Duration,
    /// Silence after which the connection is considered dead (default 15 s); must exceed
    /// the keep-alive interval.
    pub idle_timeout: Duration,
    /// Sending each request straight to the node that owns its user (default on, see
    /// [`RoutingConfig`]); `None` sends every request to the connected node, which
    /// forwards it.
    pub routing: Option<RoutingConfig>,
    /// The retry budget and adaptive throttling shared by every request of this
    /// client (default on, see [`LoadGuardConfig`]); `None` retries by the retry rules
    /// alone and never refuses locally.
    pub load_guard: Option<LoadGuardConfig>,
}

/// How the client keeps its copy of the ring, which tells it the owner of each user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingConfig {
    /// How often the ring snapshot is fetched again in the background (default 5 s).
    pub refresh_interval: Duration,
    /// Shortest time between two fetches of the snapshot (default 100 ms): a burst of
    /// `NotOwner` answers after a membership change costs one fetch, not one each. At
    /// most `refresh_interval`.
    pub min_refresh_interval: Duration,
    /// Time to connect to a partition's leader before sending the request through a
    /// connected node instead (default 1 s, at most `connect_timeout`): a leader that
    /// just died costs a failover this long, not a whole connect timeout.
    pub owner_connect_timeout: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            refresh_interval: Duration::from_secs(5),
            min_refresh_interval: Duration::from_millis(100),
            owner_connect_timeout: Duration::from_secs(1),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            streams_per_connection: NonZeroUsize::new(4).expect("non-zero"),
            max_in_flight_per_stream: NonZeroU32::new(256).expect("non-zero"),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_request_frame: FrameLimit::new(DEFAULT_MAX_FRAME).expect("default is valid"),
            max_response_frame: FrameLimit::new(MAX_FRAME_CEILING).expect("ceiling is valid"),
            keep_alive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            routing: Some(RoutingConfig::default()),
            load_guard: Some(LoadGuardConfig::default()),
        }
    }
}

impl ClientConfig {
    /// Checks the limits and relations between fields; the error names the field.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |field: &str, reason: &str| {
            Err(ClientError::InvalidConfig(format!("{field}: {reason}")))
        };
        if self.streams_per_connection.get() > MAX_STREAMS_PER_CONNECTION {
            return invalid(
                "streams_per_connection",
                &format!("at most {MAX_STREAMS_PER_CONNECTION}"),
            );
        }
        for (field, value) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("keep_alive_interval", self.keep_alive_interval),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return invalid(field, "must be positive");
            }
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return invalid("keep_alive_interval", "must be shorter than idle_timeout");
        }
        if self.initial_backoff > self.max_backoff {
            return invalid("initial_backoff", "must not exceed max_backoff");
        }
        if let Some(routing) = &self.routing {
            if routing.refresh_interval.is_zero() {
                return invalid("routing.refresh_interval", "must be positive");
            }
            if routing.min_refresh_interval > routing.refresh_interval {
                return invalid(
                    "routing.min_refresh_interval",
                    "must not exceed routing.refresh_interval",
                );
            }
            if routing.owner_connect_timeout.is_zero() {
                return invalid("routing.owner_connect_timeout", "must be positive");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid() {
        assert_eq!(ClientConfig::default().validate(), Ok(()));
    }

    type Mutation = Box<dyn Fn(&mut ClientConfig)>;

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "streams_per_connection",
                Box::new(|c| c.streams_per_connection = NonZeroUsize::new(65).unwrap()),
            ),
            (
                "request_timeout",
                Box::new(|c| c.request_timeout = Duration::ZERO),
            ),
            (
                "keep_alive_interval",
                Box::new(|c| c.keep_alive_interval = c.idle_timeout),
            ),
            (
                "initial_backoff",
                Box::new(|c| c.initial_backoff = Duration::from_secs(10)),
            ),
            (
                "routing.refresh_interval",
                Box::new(|c| {
                    c.routing = Some(RoutingConfig {
                        refresh_interval: Duration::ZERO,
                        min_refresh_interval: Duration::ZERO,
                        ..RoutingConfig::default()
                    })
                }),
            ),
            (
                "routing.min_refresh_interval",
                Box::new(|c| {
                    c.routing = Some(RoutingConfig {
                        refresh_interval: Duration::from_secs(1),
                        min_refresh_interval: Duration::from_secs(2),
                        ..RoutingConfig::default()
                    })
                }),
            ),
            (
                "routing.owner_connect_timeout",
                Box::new(|c| {
                    c.routing = Some(RoutingConfig {
                        owner_connect_timeout: Duration::ZERO,
                        ..RoutingConfig::default()
                    })
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut config = ClientConfig::default();
            mutate(&mut config);
            match config.validate() {
                Err(ClientError::InvalidConfig(reason)) => {
                    assert!(reason.starts_with(field), "{reason} should name {field}")
                }
                other => panic!("expected InvalidConfig for {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_never_shows_the_api_key() {
        let creds = Credentials::new(b"pem".to_vec(), "secret-key");
        assert!(!format!("{creds:?}").contains("secret-key"));
        assert_eq!(creds.server_name, DEFAULT_SERVER_NAME);
    }
}
