//! The QUIC endpoint of the client protocol: accepts connections, runs the hello, then
//! serves requests on long-lived bidirectional streams until shutdown.
//!
//! Ownership: `serve` owns one task per connection, a connection owns one task per
//! stream, a stream owns one task per request in flight; each level waits for the one
//! below before it returns, so a graceful shutdown ends with every accepted request
//! answered.

mod connection;
mod dispatch;
mod fan_out;
mod frame_io;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use chorus_actors::NodeHandle;

use crate::cluster::routing::Forwarder;
use crate::cluster::state::ClusterState;
use chorus_protocol::FrameLimit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::links::Links;

/// What the server serves requests with: this node's actors, its view of the cluster
/// and the links to the other owners.
#[derive(Clone)]
pub struct Backend {
    /// This node's actor tree.
    pub node: NodeHandle,
    /// The ring and members as this node sees them.
    pub cluster: ClusterState,
    /// The links that carry requests to their owners; `None` on a single node.
    pub peers: Option<Arc<dyn Forwarder>>,
}

impl Backend {
    /// A single node's backend: it owns every partition and has no peers.
    pub fn single(node: NodeHandle, cluster: ClusterState) -> Self {
        Backend {
            node,
            cluster,
            peers: None,
        }
    }
}

/// Limits the server applies to every connection.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Largest frame accepted or sent.
    pub frame_limit: FrameLimit,
    /// Requests in flight per stream before the server stops reading it.
    pub max_in_flight_per_stream: usize,
    /// How long a new connection has to complete its hello.
    pub hello_timeout: Duration,
    /// How long shutdown waits for streams to drain.
    pub shutdown_grace: Duration,
}

/// Accepts connections on `endpoint` until `shutdown` is cancelled, then stops accepting,
/// lets every connection finish its requests in flight (within the grace period) and
/// returns. Link connections are refused: see [`serve_with_links`].
pub async fn serve(
    endpoint: quinn::Endpoint,
    backend: Backend,
    settings: ServerSettings,
    shutdown: CancellationToken,
) {
    serve_with_links(endpoint, backend, settings, None, shutdown).await
}

/// [`serve`], handing every connection that negotiated the cluster link ALPN to `links`
/// (or closing it when there are none).
pub async fn serve_with_links(
    endpoint: quinn::Endpoint,
    backend: Backend,
    settings: ServerSettings,
    links: Option<Links>,
    shutdown: CancellationToken,
) {
    let settings = Arc::new(settings);
    let connections = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        connections.spawn(connection::serve_connection(
            incoming,
            backend.clone(),
            settings.clone(),
            links.clone(),
            shutdown.clone(),
        ));
    }
    // Refuse new connections from now on; those already accepted drain below.
    endpoint.set_server_config(None);
    connections.close();
    if tokio::time::timeout(settings.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?settings.shutdown_grace,
            "connections still open after the grace period; closing them"
        );
    }
    endpoint.close(
        chorus_protocol::ResetCode::ShuttingDown.code().into(),
        b"shutting down",
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}
