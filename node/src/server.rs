//! The QUIC endpoint of the client protocol: accepts connections, runs the hello, then
//! serves requests on long-lived bidirectional streams until shutdown.
//!
//! Ownership: `serve` owns one task per connection, a connection owns one task per
//! stream, a stream owns one task per request in flight; each level waits for the one
//! below before it returns, so a graceful shutdown ends with every accepted request
//! answered.

pub mod admission;
mod connection;
mod dispatch;
pub mod fan_out;
mod frame_io;
pub mod key_lookups;
mod stream;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_actors::NodeHandle;

use crate::cluster::replication::Replicator;
use crate::cluster::routing::Forwarder;
use crate::cluster::state::ClusterState;
use chorus_protocol::FrameLimit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::links::Links;
use crate::metrics::catalog;
use admission::{Admission, AdmissionLimits};
use key_lookups::{KeyLookupLimits, KeyLookups};

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
    /// Replication of the partitions this node leads; `None` with one replica each.
    pub replication: Option<Replicator>,
    /// The function pages this node answers (judged by its `[functions]` rule).
    pub functions: crate::functions::FunctionPages,
    /// The insights this node answers (`[insights]`).
    pub insights: crate::insights::Insights,
}

impl Backend {
    /// A single node's backend: it owns every partition and has no peers.
    pub fn single(node: NodeHandle, cluster: ClusterState) -> Self {
        Backend {
            node,
            cluster,
            peers: None,
            replication: None,
            functions: crate::functions::FunctionPages::default(),
            insights: crate::insights::Insights::default(),
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

/// What the endpoint spends on anyone who connects, before and after authentication
/// (the `[edge]` config section; SECURITY.md says what each protects).
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    /// Caps applied to a connection attempt before its handshake.
    pub admission: AdmissionLimits,
    /// The unknown-key negative cache and per-address lookup budget.
    pub key_lookups: KeyLookupLimits,
    /// How long a frame may take to arrive once its first byte has.
    pub frame_timeout: Duration,
    /// Requests served at once over all connections; more are answered `Overloaded`.
    pub max_requests_in_flight: usize,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings::from_section(&crate::config::EdgeSection::default())
    }
}

impl EdgeSettings {
    /// The settings of a validated `[edge]` section.
    pub fn from_section(edge: &crate::config::EdgeSection) -> Self {
        EdgeSettings {
            admission: AdmissionLimits {
                max_connections: edge.max_connections as usize,
                max_connections_per_address: edge.max_connections_per_address as usize,
                max_handshakes_in_progress: edge.max_handshakes_in_progress as usize,
                max_handshakes_per_second: edge.max_handshakes_per_second,
            },
            key_lookups: KeyLookupLimits {
                negative_ttl: Duration::from_secs(edge.unknown_key_ttl_secs),
                negative_capacity: edge.unknown_key_cache_entries as usize,
                lookups_per_address_per_minute: edge.key_lookups_per_address_per_minute,
                tracked_addresses: crate::config::edge::KEY_LOOKUP_TRACKED_ADDRESSES,
            },
            frame_timeout: edge.frame_timeout(),
            max_requests_in_flight: edge.max_requests_in_flight as usize,
        }
    }
}

/// The settings and the shared state every connection task of one endpoint uses.
pub(crate) struct Edge {
    pub settings: ServerSettings,
    pub limits: EdgeSettings,
    admission: Mutex<Admission>,
    pub key_lookups: Mutex<KeyLookups>,
    /// Permits for requests being served, all connections together.
    pub requests: Arc<tokio::sync::Semaphore>,
}

impl Edge {
    fn new(settings: ServerSettings, limits: EdgeSettings) -> Self {
        Edge {
            admission: Mutex::new(Admission::new(limits.admission)),
            key_lookups: Mutex::new(KeyLookups::new(limits.key_lookups)),
            requests: Arc::new(tokio::sync::Semaphore::new(limits.max_requests_in_flight)),
            settings,
            limits,
        }
    }

    fn admission(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An admitted connection's place in the counts: the end of its handshake and its close
/// are reported when marked or dropped, whatever path the connection task takes.
pub(crate) struct Admitted {
    edge: Arc<Edge>,
    addr: std::net::IpAddr,
    handshaking: bool,
}

impl Admitted {
    /// The handshake ended (completed or failed).
    pub fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.edge.admission().handle_handshake_done();
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.handshake_done();
        self.edge.admission().handle_closed(self.addr);
    }
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
    serve_with_edge(
        endpoint,
        backend,
        settings,
        EdgeSettings::default(),
        None,
        shutdown,
    )
    .await
}

/// [`serve`], handing every connection that negotiated the cluster link ALPN to `links`
/// (or closing it when there are none); the edge limits are the defaults.
pub async fn serve_with_links(
    endpoint: quinn::Endpoint,
    backend: Backend,
    settings: ServerSettings,
    links: Option<Links>,
    shutdown: CancellationToken,
) {
    serve_with_edge(
        endpoint,
        backend,
        settings,
        EdgeSettings::default(),
        links,
        shutdown,
    )
    .await
}

/// [`serve_with_links`] with the edge limits given: each connection attempt is
/// admitted, refused or silently dropped before its handshake begins.
pub async fn serve_with_edge(
    endpoint: quinn::Endpoint,
    backend: Backend,
    settings: ServerSettings,
    limits: EdgeSettings,
    links: Option<Links>,
    shutdown: CancellationToken,
) {
    let grace = settings.shutdown_grace;
    let edge = Arc::new(Edge::new(settings, limits));
    let connections = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let addr = incoming.remote_address().ip();
        // Under handshake load an unproven source address gets a stateless retry (one
        // packet, no state) and is counted only when it comes back with the token.
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && edge.admission().under_handshake_load()
        {
            catalog::record_connection_retried();
            let _ = incoming.retry();
            continue;
        }
        let admitted = edge.admission().handle_incoming(Instant::now(), addr);
        if let Err(refusal) = admitted {
            catalog::record_connection_refused(refusal.as_str());
            tracing::debug!(remote = %incoming.remote_address(), %refusal, "connection turned away");
            if refusal.is_silent() {
                incoming.ignore();
            } else {
                incoming.refuse();
            }
            continue;
        }
        let admitted = Admitted {
            edge: edge.clone(),
            addr,
            handshaking: true,
        };
        connections.spawn(connection::serve_connection(
            incoming,
            admitted,
            backend.clone(),
            edge.clone(),
            links.clone(),
            shutdown.clone(),
        ));
    }
    // Refuse new connections from now on; those already accepted drain below.
    endpoint.set_server_config(None);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the grace period; closing them"
        );
    }
    endpoint.close(
        chorus_protocol::ResetCode::ShuttingDown.code().into(),
        b"shutting down",
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}
