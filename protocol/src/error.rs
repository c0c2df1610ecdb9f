//! Typed errors carried to the client.

use bincode::{Decode, Encode};

use crate::item::Tier;
use crate::receipt::NodeId;

/// An error a request can end with, carried over the wire so that the caller can match
/// on it. Unless a variant says otherwise, nothing was stored.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum ErrorCode {
    /// The request breaks the schema: `field` names what, `reason` says why.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, e.g. `user_id` or `tags`.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// No valid API key was presented.
    #[error("unauthorized: no valid API key")]
    Unauthorized,
    /// The API key is valid but its role does not allow this request.
    #[error("forbidden: the API key's role does not allow this request")]
    Forbidden,
    /// A rate limit was hit; retry after the given delay.
    #[error("rate limited: retry after {retry_after_ms} ms")]
    RateLimited {
        /// Milliseconds until a retry can succeed.
        retry_after_ms: u64,
    },
    /// The node sheds load for this tier; retry after the given delay.
    #[error("overloaded ({tier:?} tier): retry after {retry_after_ms} ms")]
    Overloaded {
        /// The tier being shed.
        tier: Tier,
        /// Milliseconds until a retry may succeed.
        retry_after_ms: u64,
    },
    /// A dependency's circuit breaker is open; the request was not attempted.
    #[error("circuit open for {dependency}")]
    CircuitOpen {
        /// The dependency behind the open breaker, e.g. `store`.
        dependency: String,
    },
    /// The request's deadline passed before it completed; it may or may not have been
    /// applied, so retry with the same id.
    #[error("timed out")]
    Timeout,
    /// This node does not own the user's partition; send it to `owner`.
    #[error("not the owner: send to {owner}")]
    NotOwner {
        /// The node that owns the partition.
        owner: NodeId,
    },
    /// The data is unreachable right now (owner down, node draining, store failed).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What is unavailable and why.
        reason: String,
    },
    /// The client's protocol version is not served here.
    #[error("unsupported protocol version; this server supports {supported:?}")]
    UnsupportedVersion {
        /// The versions this server supports.
        supported: Vec<u16>,
    },
    /// A bug or an unexpected failure on the server; the id finds it in the node's log.
    #[error("internal error (request {request_id})")]
    Internal {
        /// The id under which the server logged the failure.
        request_id: u64,
    },
}

impl ErrorCode {
    /// Shorthand for [`ErrorCode::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ErrorCode::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A short stable name for the variant, for metrics, logs and `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            ErrorCode::Invalid { .. } => "invalid",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited { .. } => "rate_limited",
            ErrorCode::Overloaded { .. } => "overloaded",
            ErrorCode::CircuitOpen { .. } => "circuit_open",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotOwner { .. } => "not_owner",
            ErrorCode::Unavailable { .. } => "unavailable",
            ErrorCode::UnsupportedVersion { .. } => "unsupported_version",
            ErrorCode::Internal { .. } => "internal",
        }
    }
}
