//! `chorus agent`: runs one node until SIGINT, SIGTERM or `chorus ctl shutdown`, then
//! shuts it down gracefully.

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::NodeConfig;
use crate::logging::LogControl;
use crate::node::Node;
use crate::reload::ConfigSource;

/// Runs a node with a validated configuration, read from `source`, until a termination
/// signal; `log` changes the log filter on `chorus ctl log-level` and on reload.
pub async fn run(config: NodeConfig, source: ConfigSource, log: LogControl) -> anyhow::Result<()> {
    // First of all: a SIGTERM while the node starts (a service manager's stop, an
    // impatient operator) still shuts it down gracefully once it is up.
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let node = Node::start(config, source, log, shutdown.clone()).await;
    let stopped = match node {
        Ok(node) => {
            node.stopping().await;
            node.shutdown().await
        }
        Err(e) => Err(e),
    };
    signals.abort();
    let _ = signals.await;
    stopped?;
    info!("chorus agent stopped");
    Ok(())
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    info!(
        signal = name,
        "shutting down: no new requests; finishing those in flight"
    );
    shutdown.cancel();
}
