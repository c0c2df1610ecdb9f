//! A running node: the store's actor tree behind a QUIC endpoint, its cluster layers
//! (gossip, links, replication), the control socket and the metrics endpoint. [`Node`]
//! owns every task it starts; [`Node::shutdown`] stops them in order and returns once
//! each has ended and the store is flushed, so nothing of a node outlives its handle.

mod cluster_layers;
mod startup;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chorus_actors::{Durability, NodeHandle, ReplicationSlot, StoreConfig};
use chorus_protocol::NodeId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::cluster::links::{Links, link_server_config};
use crate::cluster::replication::Replicator;
use crate::cluster::runtime::ClusterRuntime;
use crate::cluster::standing_sync;
use crate::cluster::state::ClusterState;
use crate::config::{DurabilityMode, NodeConfig};
use crate::control::{ControlServer, NodeInfo};
use crate::data_dir_lock::DataDirLock;
use crate::logging::LogControl;
use crate::metrics::{MetricsServer, Readiness};
use crate::reload::{ConfigSource, Reloader};
use crate::server::{self, Backend, ServerSettings};
use crate::{secrets, tls};

/// How long a stopping node waits for its own tasks, each of which ends on the
/// shutdown token (a call in flight first ends or times out).
const TASKS_STOP_BOUND: Duration = Duration::from_secs(10);

/// What a node has brought up: kept as a start brings each part up, stopped again if
/// the start fails, and owned by the running node until it shuts down.
#[derive(Debug, Default)]
struct Parts {
    /// The metrics endpoint and its own token: it answers probes ("draining") until
    /// the store is flushed.
    metrics: Option<(MetricsServer, CancellationToken)>,
    store: Option<NodeHandle>,
    /// Left here only by a failed start: a running node leaves from a task as soon as
    /// its shutdown begins.
    cluster: Option<ClusterRuntime>,
    links: Option<Links>,
    replicator: Option<Replicator>,
    control: Option<ControlServer>,
}

impl Parts {
    /// Stops it all once `tasks` (whose token is cancelled) end: leaves the cluster
    /// (the others place the ring without it at once), closes the links, stops
    /// replication, removes the control socket, flushes the store (its error, if any,
    /// is returned) and closes the metrics endpoint last.
    async fn stop(self, tasks: &TaskTracker) -> anyhow::Result<()> {
        // The syncs, watchers and the leave end on the token; the syncs' calls are
        // answered or time out before the links close.
        tasks.close();
        if tokio::time::timeout(TASKS_STOP_BOUND, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = tasks.len(),
                "node tasks still running after shutdown; going on without them"
            );
        }
        if let Some(cluster) = self.cluster {
            cluster.leave().await;
        }
        if let Some(links) = self.links {
            links.shutdown().await;
        }
        if let Some(replicator) = self.replicator {
            replicator.stopped().await;
        }
        if let Some(control) = self.control {
            control.stopped().await;
        }
        let flushed = match self.store {
            Some(store) => store.shutdown().await.context("flushing the store"),
            None => Ok(()),
        };
        if let Some((metrics, stop)) = self.metrics {
            stop.cancel();
            metrics.join().await;
        }
        flushed
    }
}

/// Replicates API keys, events and standings to the peers, and warms this node up, until
/// `shutdown`; the node awaits these before its links close.
fn spawn_syncs(
    tasks: &TaskTracker,
    links: &Links,
    state: &ClusterState,
    node: &NodeHandle,
    shutdown: &CancellationToken,
) {
    let link_ups = links.link_ups();
    let links: Arc<dyn crate::cluster::routing::Forwarder> = Arc::new(links.clone());
    tasks.spawn(standing_sync::run(
        state.clone(),
        Arc::clone(&links),
        link_ups.clone(),
        standing_sync::ANTI_ENTROPY_INTERVAL,
        shutdown.clone(),
    ));
    tasks.spawn(standing_sync::warm_up(
        state.clone(),
        node.clone(),
        Arc::clone(&links),
        shutdown.clone(),
    ));
    tasks.spawn(crate::cluster::event_sync::run(
        node.clone(),
        Arc::clone(&links),
        link_ups.clone(),
        crate::cluster::event_sync::ANTI_ENTROPY_INTERVAL,
        shutdown.clone(),
    ));
    tasks.spawn(crate::cluster::key_sync::run(
        node.clone(),
        links,
        link_ups,
        crate::cluster::key_sync::ANTI_ENTROPY_INTERVAL,
        shutdown.clone(),
    ));
}

/// A running node and every task it started.
#[derive(Debug)]
pub struct Node {
    /// Cancelled when the node is to stop, by whoever asks first.
    shutdown: CancellationToken,
    /// The client (and link) server: ends once its requests have drained.
    server: JoinHandle<()>,
    /// The watchers, the cluster's syncs, the leave and anything a control request
    /// started (a drain).
    tasks: TaskTracker,
    parts: Parts,
    addr: SocketAddr,
    /// Held until the node has stopped: a second node on this store stops at start.
    _lock: DataDirLock,
}

impl Node {
    /// Starts a node with a validated configuration, read from `source`; `log` changes
    /// the log filter on `chorus ctl log-level` and on reload. The node stops once
    /// `shutdown` is cancelled (a signal, `chorus ctl shutdown`, the end of a drain),
    /// and is stopped for good by [`Node::shutdown`]. A failed start stops what it had
    /// brought up (it leaves the cluster it joined, closes its links, flushes its store,
    /// closes its metrics endpoint) and waits for the tasks it had started.
    pub async fn start(
        config: NodeConfig,
        source: ConfigSource,
        log: LogControl,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Node> {
        let tasks = TaskTracker::new();
        let mut parts = Parts::default();
        let started = Self::start_with(
            config,
            source,
            log,
            shutdown.clone(),
            tasks.clone(),
            &mut parts,
        )
        .await;
        if started.is_err() {
            shutdown.cancel();
            if let Err(e) = parts.stop(&tasks).await {
                tracing::warn!(error = format!("{e:#}"), "after a failed start");
            }
        }
        started
    }

    async fn start_with(
        config: NodeConfig,
        source: ConfigSource,
        log: LogControl,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        parts: &mut Parts,
    ) -> anyhow::Result<Node> {
        // Before anything is created or bound: a key file others can read is refused.
        secrets::check_key_files(&config)?;
        let data_dir_open = secrets::create_private_dir(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        // Held until the agent returns: a second agent on this store stops here.
        let lock = crate::data_dir_lock::DataDirLock::acquire(&config.data_dir)?;
        if data_dir_open {
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                fix = %format!("chmod 700 {}", config.data_dir.display()),
                "the data dir is accessible by others"
            );
        }
        let tls_paths = config.tls_paths();
        if config.uses_dev_certificates()
            && tls::ensure_dev_certificates(
                &tls_paths,
                &tls::TlsPaths::dev_ca_key(&config.data_dir),
                &config.node_id,
                &[config.listen.ip().to_string()],
            )?
        {
            info!(ca = %tls_paths.ca_cert.display(), "generated a development CA and node certificate");
        }
        // One certificate for clients and peers alike, swapped whole on a reload.
        let node_cert = tls::NodeCert::load(&tls_paths)?;
        // A cluster member's endpoint also accepts links from its peers (mutual TLS).
        let transport = tls::TransportLimits::from_config(&config);
        let server_config = if config.cluster.is_some() {
            let mut server_config = link_server_config(
                &tls_paths,
                Arc::clone(&node_cert),
                config.max_streams_per_connection,
                Duration::from_secs(config.idle_timeout_secs),
            )?;
            // The same endpoint serves clients: its transport limits are the edge's.
            server_config.transport_config(Arc::new(transport.transport()?));
            server_config
        } else {
            tls::client_protocol_server_config(Arc::clone(&node_cert), &transport)?
        };

        // Up before the store, so a probe can tell a node that is starting (503) from one
        // that is down; a bind error ends the start here, naming the address.
        let readiness = Readiness::new();
        let metrics_stop = CancellationToken::new();
        if config.metrics.enabled {
            let server = MetricsServer::start_with(
                config.metrics.listen,
                crate::metrics::EndpointLimits {
                    max_connections: config.metrics.max_connections as usize,
                    connection_timeout: Duration::from_millis(config.metrics.connection_timeout_ms),
                },
                readiness.clone(),
                metrics_stop.clone(),
            )
            .await?;
            info!(addr = %server.local_addr(), "metrics and health endpoint listening");
            parts.metrics = Some((server, metrics_stop.clone()));
        }

        let store_config = StoreConfig {
            path: config.data_dir.join("store"),
            node: NodeId(config.node_id.clone()),
            partitions: config.partitions,
            durability: match config.durability {
                DurabilityMode::Full => Durability::Full,
                DurabilityMode::Flush => Durability::Flush,
            },
            log: config.store_log(),
        };
        // A member of a replicated cluster answers writes only once a write quorum holds
        // them; replication is installed once the links it ships over are up.
        let replication = config
            .cluster
            .as_ref()
            .map(|section| section.replication())
            .filter(|settings| settings.factor > 1);
        let slot = replication.as_ref().map(|_| ReplicationSlot::new());
        let mut pipeline = config.pipeline();
        pipeline.replication = slot.clone();
        let node = NodeHandle::start_with(store_config, pipeline)
            .await
            .context("starting the store")?;
        parts.store = Some(node.clone());
        readiness.set_store_available(true);
        // Not ready while the store's breaker turns writes away; ready again when it closes.
        tasks.spawn(watch::follow_store_breaker(
            node.store_breaker(),
            readiness.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(watch::watch_store(
            node.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        if let Some(key) = node.ensure_admin_key().await? {
            startup::announce_admin_key(&config, &key)?;
        }

        let socket = std::net::UdpSocket::bind(config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::new(tls::stateless_reset_key(&tls_paths.key)?),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .with_context(|| format!("serving on {}", config.listen))?;
        info!(
            node = %config.node_id,
            addr = %endpoint.local_addr()?,
            data_dir = %config.data_dir.display(),
            "chorus agent listening"
        );

        let advertised = match config.cluster {
            Some(_) => config.advertised_addr(),
            None => endpoint.local_addr()?,
        };
        let state = match &config.cluster {
            Some(section) => ClusterState::replicated(
                NodeId(config.node_id.clone()),
                advertised,
                config.partitions,
                usize::from(section.replication_factor),
                Duration::from_millis(section.down_grace_ms),
            )?,
            None => ClusterState::new(
                NodeId(config.node_id.clone()),
                advertised,
                config.partitions,
            )?,
        };
        let (cluster, links) = match &config.cluster {
            Some(section) => {
                let (runtime, links) = cluster_layers::start(
                    cluster_layers::Inputs {
                        config: &config,
                        section,
                        state: &state,
                        node: &node,
                        endpoint: &endpoint,
                        cert: &node_cert,
                    },
                    parts,
                )
                .await?;
                (Some(runtime), Some(links))
            }
            None => (None, None),
        };
        let peers = links
            .clone()
            .map(|l| Arc::new(l) as Arc<dyn crate::cluster::routing::Forwarder>);
        let replicator = match (replication, &slot, &peers) {
            (Some(settings), Some(slot), Some(peers)) => {
                info!(
                    factor = settings.factor,
                    write_quorum = settings.write_quorum,
                    "replicating the partition log"
                );
                let replicator = Replicator::start(
                    settings,
                    node.clone(),
                    state.clone(),
                    Arc::clone(peers),
                    shutdown.clone(),
                );
                slot.install(Arc::new(replicator.clone()));
                parts.replicator = Some(replicator.clone());
                Some(replicator)
            }
            _ => None,
        };
        let reloader = Arc::new(Reloader::new(
            source,
            config.clone(),
            node.clone(),
            log.clone(),
            Arc::clone(&node_cert),
        ));
        tasks.spawn(watch::reload_on_hangup(
            Arc::clone(&reloader),
            shutdown.clone(),
        ));
        let control = ControlServer::start(
            node.clone(),
            log,
            NodeInfo {
                node_id: config.node_id.clone(),
                data_dir: config.data_dir.clone(),
                listen: endpoint.local_addr()?.to_string(),
                socket: config.control_socket(),
                limits: config.limits.clone(),
                cluster: state.clone(),
                runtime: cluster.clone(),
                replication: replicator.clone(),
                links: links.clone(),
                shutdown: shutdown.clone(),
                tasks: tasks.clone(),
                reloader: Some(reloader),
            },
            shutdown.clone(),
        )
        .context("opening the control socket")?;
        // Not ready from the moment shutdown begins, whoever begins it.
        tasks.spawn(readiness.clone().drain_on(shutdown.clone()));
        // On shutdown the others learn at once that this node is gone (instead of after a
        // suspicion) and place the ring without it while its requests drain.
        // It also steps down from every partition it leads, so that its writers in flight
        // retry at the next leader instead of waiting for a quorum that has moved on.
        if let Some(cluster) = cluster.clone() {
            let shutdown = shutdown.clone();
            let replicator = replicator.clone();
            tasks.spawn(async move {
                shutdown.cancelled().await;
                cluster.leave().await;
                if let Some(replicator) = replicator {
                    replicator.stand_down();
                }
            });
        }
        let backend = Backend {
            node: node.clone(),
            cluster: state.clone(),
            peers,
            replication: replicator.clone(),
            functions: crate::functions::FunctionPages::new(config.update_rule()),
            insights: crate::insights::Insights::new(
                config.insights.epsilon_budget,
                config.insights.cache(),
            ),
        };
        if let Some(links) = &links {
            spawn_syncs(&tasks, links, &state, &node, &shutdown);
        }
        tasks.spawn(crate::review::record_flagged(
            backend.clone(),
            shutdown.clone(),
        ));
        if let Some(max_age) = config.retention.max_age() {
            tasks.spawn(crate::retention::run(
                backend.clone(),
                max_age,
                config.retention.check_interval(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(crate::version_watch::run(
            backend.clone(),
            config.update_rule(),
            config.functions.check_interval(),
            shutdown.clone(),
        ));
        let addr = endpoint.local_addr()?;
        let links_for_server = links.clone();
        let server_stop = shutdown.clone();
        let server = tokio::spawn(async move {
            server::serve_with_edge(
                endpoint,
                backend,
                ServerSettings {
                    frame_limit: config.frame_limit(),
                    max_in_flight_per_stream: config.max_in_flight_per_stream as usize,
                    hello_timeout: config.edge.hello_timeout(),
                    shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
                },
                server::EdgeSettings::from_section(&config.edge),
                links_for_server,
                server_stop.clone(),
            )
            .await;
            // A server that stops on its own stops the node.
            server_stop.cancel();
        });
        // Started: from here the node owns all of it, and leaves from its task.
        parts.control = Some(control);
        parts.cluster = None;
        Ok(Node {
            shutdown,
            server,
            tasks,
            parts: std::mem::take(parts),
            addr,
            _lock: lock,
        })
    }

    /// The address the node serves clients (and links) on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns once the node has been asked to stop.
    pub async fn stopping(&self) {
        self.shutdown.cancelled().await;
    }

    /// Stops the node and waits for every task it started: no new requests, those in
    /// flight answered, the cluster left, the links closed, the control socket
    /// removed, the store flushed, then the metrics endpoint closed. The store's
    /// flush error, if any, is returned.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Err(e) = self.server.await {
            tracing::warn!(error = %e, "the server task ended abnormally");
        }
        self.parts.stop(&self.tasks).await
    }
}
