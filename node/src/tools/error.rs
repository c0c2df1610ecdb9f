//! How a CLI tool fails: one error for every client-side subcommand, printed once by
//! the dispatcher (`tools::commands`).

use chorus_client::{ClientError, ErrorCode};

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The node answered with, or the SDK ended with, an error.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The command line or the local files are not usable.
    #[error("{0}")]
    Usage(String),
    /// What was asked for does not exist.
    #[error("no {what} with {field} {value}")]
    NotFound {
        /// What was sought (`item`).
        what: &'static str,
        /// The field it was sought by.
        field: &'static str,
        /// The value sought.
        value: String,
    },
}

impl From<ErrorCode> for CliError {
    fn from(code: ErrorCode) -> Self {
        CliError::Client(ClientError::Server(code))
    }
}
