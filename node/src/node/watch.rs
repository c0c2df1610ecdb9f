//! The node's watchers: small loops that mirror the store's health into readiness and
//! metrics, and reload the configuration on SIGHUP. Each ends when the node stops.

use std::sync::Arc;
use std::time::Duration;

use chorus_actors::NodeHandle;
use chorus_actors::policy::breaker::BreakerState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Readiness;
use crate::reload::{Reloader, SIGHUP_ACTOR};

/// How often the store's health and size are read.
const STORE_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Mirrors the store breaker into readiness until `stop` or until the node's breaker
/// board goes away.
pub async fn follow_store_breaker(
    mut breaker: watch::Receiver<BreakerState>,
    readiness: Readiness,
    stop: CancellationToken,
) {
    loop {
        let state = *breaker.borrow_and_update();
        readiness.set_store_available(!chorus_actors::published_breaker::rejects(state));
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = breaker.changed() => if changed.is_err() {
                return;
            },
        }
    }
}

/// Publishes the store's metrics until `stop` and, once the store has failed for
/// good, marks the node not ready and says why (once).
pub async fn watch_store(node: NodeHandle, readiness: Readiness, stop: CancellationToken) {
    let mut reported = false;
    loop {
        node.publish_store_metrics();
        if let Some(reason) = node.store_failure()
            && !reported
        {
            tracing::error!(%reason, "the store failed and takes no writes until the node is restarted; not ready");
            readiness.set_store_failed();
            reported = true;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STORE_WATCH_INTERVAL) => {}
        }
    }
}

/// Reloads the configuration on every SIGHUP until `stop`; a refused reload is logged
/// (and audited) and the node runs on unchanged.
pub async fn reload_on_hangup(reloader: Arc<Reloader>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reload with chorus ctl reload");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hangup.recv() => {
                if received.is_none() {
                    return;
                }
                // The outcome is logged and audited by the reloader itself.
                let _ = reloader.reload(SIGHUP_ACTOR, std::env::vars().collect()).await;
            }
        }
    }
}
