//! `chorus agent`: runs one node until SIGINT or SIGTERM, then shuts down gracefully.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chorus_actors::{Durability, NodeHandle, ReplicationSlot, StoreConfig};
use chorus_protocol::NodeId;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cluster::links::{LinkSettings, Links, link_cookie, link_server_config};
use crate::cluster::replication::Replicator;
use crate::cluster::runtime::{ClusterRuntime, ClusterSettings, MemberLinks};
use crate::cluster::standing::Standing;
use crate::cluster::state::ClusterState;
use crate::cluster::{standing_file, standing_sync};
use crate::config::{DurabilityMode, NodeConfig, admin_key_path};
use crate::control::{ControlServer, NodeInfo};
use crate::logging::LogControl;
use crate::metrics::{MetricsServer, Readiness};
use crate::reload::{ConfigSource, Reloader, SIGHUP_ACTOR};
use crate::server::{self, Backend, ServerSettings};
use crate::{secrets, tls};

/// Runs a node with a validated configuration, read from `source`, until a termination
/// signal; `log` changes the log filter on `chorus ctl log-level` and on reload.
pub async fn run(config: NodeConfig, source: ConfigSource, log: LogControl) -> anyhow::Result<()> {
    // First of all: a SIGTERM while the node starts (a service manager's stop, an
    // impatient operator) still shuts it down gracefully once it is up.
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    // Before anything is created or bound: a key file others can read is refused.
    secrets::check_key_files(&config)?;
    let data_dir_open = secrets::create_private_dir(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // Held until the agent returns: a second agent on this store stops here.
    let _lock = crate::data_dir_lock::DataDirLock::acquire(&config.data_dir)?;
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
    let metrics = if config.metrics.enabled {
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
        Some(server)
    } else {
        None
    };

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
    readiness.set_store_available(true);
    // Not ready while the store's breaker turns writes away; ready again when it closes.
    let breaker_watch = tokio::spawn(follow_store_breaker(
        node.store_breaker(),
        readiness.clone(),
    ));
    let store_watch = tokio::spawn(watch_store(node.clone(), readiness.clone()));
    if let Some(key) = node.ensure_admin_key().await? {
        announce_admin_key(&config, &key)?;
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
            // A member with an empty store that joins through others has its partitions
            // to learn. One that founds the cluster (no seed but itself) has nothing to
            // learn, and one that holds data (a restart, an upgrade from a release
            // without standings) was a member already.
            let founder = section.seeds.iter().all(|s| *s == section.gossip_addr());
            let empty = (0..node.partitions()).all(|p| node.partition_state(p).1 == 0);
            let may_learn = section.replication_factor > 1 && !founder;
            keep_standings(&state, &config.data_dir, may_learn, empty)?;
            let key = section.load_key()?;
            let mut link_settings = LinkSettings::new(
                NodeId(config.node_id.clone()),
                link_cookie(&key.0),
                tls_paths.clone(),
                endpoint.clone(),
            );
            link_settings.call_timeout = Duration::from_millis(section.forward_timeout_ms);
            link_settings.cluster = Some(state.clone());
            link_settings.cert = Some(Arc::clone(&node_cert));
            let links = Links::start(link_settings, node.clone())
                .await
                .context("starting the cluster links")?;
            let settings = ClusterSettings {
                gossip_listen: section.gossip_listen,
                gossip_addr: section.gossip_addr(),
                seeds: section.seeds.clone(),
                key,
                keyring_file: Some(
                    config
                        .data_dir
                        .join(crate::cluster::keyring_file::KEYRING_FILE),
                ),
                gossip: section.gossip.clone(),
            };
            let member_links: Arc<dyn MemberLinks> = Arc::new(links.clone());
            let runtime =
                ClusterRuntime::start(settings, state.clone(), Some(member_links)).await?;
            (Some(runtime), Some(links))
        }
        None => (None, None),
    };
    let peers = links
        .clone()
        .map(|l| Arc::new(l) as Arc<dyn crate::cluster::routing::Forwarder>);
    let replication_stop = shutdown.child_token();
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
                replication_stop.clone(),
            );
            slot.install(Arc::new(replicator.clone()));
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
    let hangups = tokio::spawn(reload_on_hangup(Arc::clone(&reloader), shutdown.clone()));
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
            reloader: Some(reloader),
        },
        shutdown.clone(),
    )
    .context("opening the control socket")?;
    // Not ready from the moment shutdown begins, whoever begins it.
    let draining = tokio::spawn(readiness.clone().drain_on(shutdown.clone()));
    // On shutdown the others learn at once that this node is gone (instead of after a
    // suspicion) and place the ring without it while its requests drain.
    // It also steps down from every partition it leads, so that its writers in flight
    // retry at the next leader instead of waiting for a quorum that has moved on.
    let leaving = cluster.clone().map(|cluster| {
        let shutdown = shutdown.clone();
        let replicator = replicator.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            cluster.leave().await;
            if let Some(replicator) = replicator {
                replicator.stand_down();
            }
        })
    });
    let backend = Backend {
        node: node.clone(),
        cluster: state.clone(),
        peers,
        replication: replicator,
    };
    // Replicates API keys to the peers until the server stops; owned here and awaited
    // before the links close.
    let key_sync_stop = shutdown.child_token();
    let key_sync = links.clone().map(|links| {
        let link_ups = links.link_ups();
        let links: Arc<dyn crate::cluster::routing::Forwarder> = Arc::new(links);
        let standings = tokio::spawn(standing_sync::run(
            state.clone(),
            Arc::clone(&links),
            link_ups.clone(),
            standing_sync::ANTI_ENTROPY_INTERVAL,
            key_sync_stop.clone(),
        ));
        let warm_up = tokio::spawn(standing_sync::warm_up(
            state.clone(),
            node.clone(),
            Arc::clone(&links),
            key_sync_stop.clone(),
        ));
        let keys = tokio::spawn(crate::cluster::key_sync::run(
            node.clone(),
            links,
            link_ups,
            crate::cluster::key_sync::ANTI_ENTROPY_INTERVAL,
            key_sync_stop.clone(),
        ));
        async move {
            let _ = tokio::join!(keys, standings, warm_up);
        }
    });
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
        links.clone(),
        shutdown.clone(),
    )
    .await;
    key_sync_stop.cancel();
    replication_stop.cancel();
    if let Some(key_sync) = key_sync {
        key_sync.await;
    }
    if let Some(links) = &links {
        links.shutdown().await;
    }
    signals.abort();
    hangups.abort();
    breaker_watch.abort();
    store_watch.abort();
    if let Some(leaving) = leaving {
        let _ = leaving.await;
    }
    // The control socket closes with the endpoint, before the store is flushed; the
    // token is already cancelled unless the server stopped on its own.
    shutdown.cancel();
    control.stopped().await;
    draining.abort();
    let flushed = node.shutdown().await.context("flushing the store");
    // The endpoint outlives the drain (its own token, cancelled only now) so that probes
    // see 503 "draining" rather than a refused connection while requests finish.
    metrics_stop.cancel();
    if let Some(metrics) = metrics {
        metrics.join().await;
    }
    flushed?;
    info!("chorus agent stopped");
    Ok(())
}

/// Saves the first admin key beside the data (mode 0600, created new) and prints it
/// once, only to a terminal: under systemd or a pipe stdout ends up in a journal or a
/// file others may read, so then only the log names the file that holds the key.
/// Loads the members' standings from the data dir (saving every change there) and
/// gives this node its first standing if it has none, or a new one if it departed:
/// warming when it `may_learn` (it replicates and joins through others) and its store
/// is `empty` or stale (back after a drain), so that it learns its partitions before
/// it votes.
fn keep_standings(
    state: &ClusterState,
    data_dir: &std::path::Path,
    may_learn: bool,
    empty: bool,
) -> anyhow::Result<()> {
    let file = data_dir.join(standing_file::STANDINGS_FILE);
    let own = state
        .keep_standings_in(file)
        .context("loading the members' standings")?;
    let next = match own {
        None => Standing::new(may_learn && empty),
        // Back after a drain: its copies are stale, so it learns before it votes.
        Some(own) if own.departed => own.changed(|s| {
            s.departed = false;
            s.warming = may_learn;
        }),
        Some(_) => return Ok(()),
    };
    state
        .set_own_standing(next)
        .context("saving this node's standing")?;
    Ok(())
}

fn announce_admin_key(config: &NodeConfig, key: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let path = admin_key_path(&config.data_dir);
    secrets::write_secret_file(&path, format!("{key}\n").as_bytes())?;
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        info!(
            file = %path.display(),
            "first start: an admin API key was created and saved (mode 0600); \
             it is not printed because stdout is not a terminal"
        );
        return Ok(());
    }
    let ca = config.tls_paths().ca_cert;
    let mut out = stdout.lock();
    writeln!(out, "Chorus first start: an admin API key was created.")?;
    writeln!(out)?;
    writeln!(out, "  {key}")?;
    writeln!(out)?;
    writeln!(
        out,
        "It is shown only this once, and saved to {} (mode 0600) for the local CLI.",
        path.display()
    )?;
    writeln!(
        out,
        "Clients verify this node with the CA certificate {}.",
        ca.display()
    )?;
    out.flush()?;
    Ok(())
}

/// Mirrors the store breaker into readiness until the node's breaker board goes away.
async fn follow_store_breaker(
    mut breaker: tokio::sync::watch::Receiver<chorus_actors::policy::breaker::BreakerState>,
    readiness: crate::metrics::Readiness,
) {
    loop {
        let state = *breaker.borrow_and_update();
        readiness.set_store_available(!chorus_actors::published_breaker::rejects(state));
        if breaker.changed().await.is_err() {
            return;
        }
    }
}

/// How often the store's health and size are read.
const STORE_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Publishes the store's metrics and, once the store has failed for good, marks the
/// node not ready and says why (once).
async fn watch_store(node: chorus_actors::NodeHandle, readiness: crate::metrics::Readiness) {
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
        tokio::time::sleep(STORE_WATCH_INTERVAL).await;
    }
}

/// Reloads the configuration on every SIGHUP until `shutdown`; a refused reload is
/// logged (and audited) and the node runs on unchanged.
async fn reload_on_hangup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reload with chorus ctl reload");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
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
