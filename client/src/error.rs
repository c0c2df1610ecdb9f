//! Everything a client call can end with, and how quinn's errors map onto it.

use std::net::SocketAddr;

use chorus_protocol::{ErrorCode, FrameError, ResetCode};

/// Why a client call failed. Each variant says whether the request may have been applied
/// on the server; a request that may have been applied is safe to repeat only if it is
/// idempotent (item ids make submits idempotent; creating an API key is not).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a typed error. Unless the [`ErrorCode`] says otherwise
    /// (`Timeout`), nothing was applied.
    #[error("server error: {0}")]
    Server(ErrorCode),
    /// Refused by this client before sending: the cluster has lately refused most of
    /// its requests as overloaded, so it sends only a share of them (adaptive
    /// throttling). Nothing was sent.
    #[error("throttled by the client: the cluster is refusing most requests as overloaded")]
    Throttled,
    /// No connection could be made to this address. Nothing was sent.
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// None of the addresses could be reached. Nothing was sent.
    #[error("no server reachable ({tried} addresses tried; last error: {last_error})")]
    NoServerReachable {
        /// How many addresses were tried.
        tried: usize,
        /// The failure of the last one.
        last_error: String,
    },
    /// The TLS handshake failed, e.g. the server certificate does not chain to the CA or
    /// does not match the server name. Nothing was sent.
    #[error("TLS: {0}")]
    Tls(String),
    /// The CA PEM could not be read or holds no usable certificate. Nothing was sent.
    #[error("invalid CA certificate: {0}")]
    InvalidCa(String),
    /// The [`ClientConfig`](crate::ClientConfig) is invalid; the reason names the field.
    /// Nothing was sent.
    #[error("invalid client config: {0}")]
    InvalidConfig(String),
    /// The local UDP socket could not be opened. Nothing was sent.
    #[error("local endpoint: {0}")]
    Endpoint(String),
    /// The connection was lost while the request was in flight: it may have been applied.
    #[error("connection lost: {reason}")]
    ConnectionLost {
        /// Why, as quinn reports it.
        reason: String,
    },
    /// The stream carrying the request was reset or stopped by the server (codes in
    /// [`ResetCode`]), or ended early; every request pending on it fails with this. It
    /// may have been applied.
    #[error("stream reset by the server (code {code})")]
    StreamReset {
        /// The application error code; see [`ResetCode::from_code`].
        code: u64,
    },
    /// No response came within the request timeout. The request may have been applied.
    #[error("request timed out")]
    Timeout,
    /// The request does not fit in one frame under the negotiated limit. Nothing was sent.
    #[error("request of {len} bytes exceeds the frame limit of {limit}")]
    FrameTooLarge {
        /// The encoded size.
        len: u64,
        /// The limit.
        limit: u32,
    },
    /// The server broke the protocol (an unreadable frame, or a response of the wrong
    /// kind). The request may have been applied.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The client was closed with [`Client::close`](crate::Client::close). Nothing was sent.
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// Whether the request is known not to have reached the server, so that repeating it
    /// is safe even when it is not idempotent.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::NoServerReachable { .. }
                | ClientError::Tls(_)
                | ClientError::InvalidCa(_)
                | ClientError::InvalidConfig(_)
                | ClientError::Endpoint(_)
                | ClientError::FrameTooLarge { .. }
                | ClientError::Closed
                | ClientError::Throttled
        )
    }

    /// The typed server error, if this is one.
    pub fn server_error(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Server(code) => Some(code),
            _ => None,
        }
    }

    /// A stream reset with a known code.
    pub(crate) fn reset(code: ResetCode) -> Self {
        ClientError::StreamReset {
            code: u64::from(code.code()),
        }
    }

    /// A frame the server sent that could not be read.
    pub(crate) fn bad_frame(error: &FrameError) -> Self {
        ClientError::Protocol(format!("response frame: {error}"))
    }
}

impl From<quinn::ConnectionError> for ClientError {
    fn from(error: quinn::ConnectionError) -> Self {
        match &error {
            // Transport error codes 0x100..0x200 are TLS alerts (RFC 9001 §4.8).
            quinn::ConnectionError::TransportError(e)
                if (0x100..0x200).contains(&u64::from(e.code)) =>
            {
                ClientError::Tls(e.to_string())
            }
            quinn::ConnectionError::LocallyClosed => ClientError::Closed,
            _ => ClientError::ConnectionLost {
                reason: error.to_string(),
            },
        }
    }
}

impl From<quinn::ReadError> for ClientError {
    fn from(error: quinn::ReadError) -> Self {
        match error {
            quinn::ReadError::Reset(code) => ClientError::StreamReset {
                code: code.into_inner(),
            },
            quinn::ReadError::ConnectionLost(e) => e.into(),
            other => ClientError::Protocol(format!("reading a stream: {other}")),
        }
    }
}

impl From<quinn::WriteError> for ClientError {
    fn from(error: quinn::WriteError) -> Self {
        match error {
            quinn::WriteError::Stopped(code) => ClientError::StreamReset {
                code: code.into_inner(),
            },
            quinn::WriteError::ConnectionLost(e) => e.into(),
            other => ClientError::Protocol(format!("writing a stream: {other}")),
        }
    }
}

impl From<quinn::ReadExactError> for ClientError {
    fn from(error: quinn::ReadExactError) -> Self {
        match error {
            quinn::ReadExactError::FinishedEarly(_) => ClientError::reset(ResetCode::Truncated),
            quinn::ReadExactError::ReadError(e) => e.into(),
        }
    }
}
