//! The control socket: a local Unix socket (mode 0600) through which `chorus ctl`
//! administers a running node.
//!
//! - [`protocol`]: the request and response types, one JSON object per line.
//! - [`handler`]: one method per command, no IO of its own.
//! - [`listener`]: binding the socket, peer credentials, bounded line IO.
//!
//! Every command that changes the node is written to the store's hash-chained audit log,
//! with the caller's uid from the socket's peer credentials, before it takes effect; if
//! the audit log cannot record it, it does not happen. Read-only commands (`status`,
//! `audit-verify`) are not audited.

pub mod handler;
pub mod listener;
pub mod protocol;

use std::sync::Arc;

use chorus_actors::NodeHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use handler::{Handler, NodeInfo, Peer};
pub use listener::{BindError, ControlSocket};
pub use protocol::{ControlError, Reply, Request, Response};

use crate::logging::LogControl;

/// The running control server: an owned task that stops with the node's shutdown token.
#[derive(Debug)]
pub struct ControlServer {
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Binds the socket at `info.socket` and serves it until `shutdown` is cancelled.
    /// Fails, with nothing listening, if the socket cannot be bound.
    pub fn start(
        node: NodeHandle,
        log: LogControl,
        info: NodeInfo,
        shutdown: CancellationToken,
    ) -> Result<ControlServer, BindError> {
        let socket = ControlSocket::bind(&info.socket)?;
        info!(socket = %socket.path().display(), "control socket listening");
        let handler = Arc::new(Handler::new(node, log, info));
        Ok(ControlServer {
            task: tokio::spawn(socket.serve(handler, shutdown)),
        })
    }

    /// Waits for the server to stop (after the shutdown token is cancelled); the socket
    /// file is gone when this returns.
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            warn!(error = %e, "control server task ended abnormally");
        }
    }
}
