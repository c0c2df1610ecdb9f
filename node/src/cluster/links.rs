//! Links between the nodes of a cluster: one QUIC connection per pair of nodes, under
//! mutual TLS with the cluster CA, carrying a ractor_cluster session; forwards to a
//! peer are remote calls to the peer's forward receiver over that session.
//!
//! How a link is made:
//!
//! 1. Membership calls [`Links::member_up`] with the peer's node id and address. Of the
//!    two nodes of a pair only the one with the lower node id dials ([`dials`]), so a
//!    pair makes exactly one connection.
//! 2. The dialer connects from the node's one QUIC endpoint offering ALPN
//!    `chorus-link/2` and `chorus-link/1` (the acceptor picks the newer it speaks; on a
//!    `/2` link a forward carries the ids of the requests it serves,
//!    [`wire::encode_request`]),
//!    presenting its node certificate and checking the peer's against the cluster CA
//!    with the peer's node id as the server name ([`link_client_config`]).
//! 3. The accepting node's endpoint asks for a client certificate and checks it against
//!    the cluster CA ([`link_server_config`]); the server hands a connection that
//!    negotiated the link ALPN to [`Links::accept`], which closes it unless a verified
//!    certificate was presented.
//! 4. The dialer opens one bidirectional stream and starts a ractor_cluster session on it
//!    as the client, which speaks first (a QUIC stream is invisible to the peer until it
//!    carries data); the acceptor hands the stream to its NodeServer as the server side.
//!    The session cookie is [`link_cookie`]: HKDF-SHA256 of the cluster key under a
//!    label, never the key itself. The NodeServer runs in isolated mode: peers are
//!    connected only from membership, never transitively; its own plain TCP listener
//!    (bound to 127.0.0.1, port 0, and impossible to turn off) gets no session through:
//!    a session not over one of our QUIC connections is stopped as it opens, before its
//!    handshake can finish.
//! 5. On both sides the peer's bytes pass through the name [`gate`] before the session
//!    sees them: the name the peer gives in the handshake must be one its certificate
//!    carries (for the dialer: the node it dialed, which TLS already checked), or the
//!    stream ends before the session has delivered anything. When the session is
//!    authenticated and the process groups are synchronised, the link is up (the name
//!    is checked once more then). Each node's forward receiver is in the process group
//!    `chorus.forward.<node-id>`, now mirrored on the other side.
//! 6. A dead peer stops answering QUIC keep-alives and its connection closes at the idle
//!    timeout; [`Links::member_down`] closes it at once. ractor_cluster itself never
//!    drops a dead peer. The dialer redials with backoff while the peer is a member.
//!
//! [`Links::forward`] never waits on a broken link: a peer that is not linked, whose
//! breaker is open or that has too many forwards in flight is refused at once, and a
//! call that takes longer than the call timeout ends as `Unavailable`.

mod connections;
pub mod gate;
mod peers;
mod receiver;
mod tls;
mod transport;
mod wire;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chorus_actors::NodeHandle;
use chorus_actors::policy::breaker::{BreakerConfig, BreakerConfigError, Permit};
use chorus_protocol::{ErrorCode, MAX_FRAME_CEILING, NodeId};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

pub use peers::{LinkState, PeerView, dials};
pub use receiver::{execute, group_name};
pub use tls::{
    LinkTiming, PeerVerifier, cluster_roots, link_alpn, link_client_config, link_server_config,
    negotiated_alpn, peer_chain,
};
pub use wire::{
    Forward, ForwardMsg, ForwardReply, LINK_FORMAT, decode_reply, decode_request, encode_reply,
    encode_request,
};

use crate::cluster::routing::{ForwardFuture, Forwarder};
use crate::tls::{TlsError, TlsPaths};
use connections::on_session_event;
use peers::{PeerTable, Refusal};
use receiver::{ForwardReceiver, ReceiverArgs};
use transport::Subscription;

/// The host part of every node's ractor_cluster name (`<node-id>@chorus`).
pub const SESSION_HOST: &str = "chorus";
/// Largest ractor_cluster frame accepted on a link: a forward is at most one protocol
/// frame, plus the session's envelope.
pub const MAX_LINK_FRAME: u64 = MAX_FRAME_CEILING as u64 + 64 * 1024;

/// The retry hint of a forward refused because too many are in flight to its peer.
const PEER_FULL_RETRY_AFTER_MS: u64 = 10;

/// QUIC application close codes of link connections.
pub mod close_code {
    /// The peer presented no certificate of the cluster CA, or not its own.
    pub const REFUSED: u32 = 0x100;
    /// Membership reported the peer down.
    pub const MEMBER_DOWN: u32 = 0x101;
    /// This node is shutting down.
    pub const SHUTTING_DOWN: u32 = 0x102;
    /// The ractor_cluster session on the connection ended.
    pub const SESSION_ENDED: u32 = 0x103;
}

/// Why the links could not start; nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The certificates could not be loaded or rustls refused them.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The peer breaker configuration is invalid.
    #[error("peer breaker: {0}")]
    Breaker(#[from] BreakerConfigError),
    /// A setting is out of range.
    #[error("link setting {field}: {reason}")]
    Setting {
        /// The setting.
        field: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The ractor_cluster NodeServer or the forward receiver did not start.
    #[error("starting the cluster session server: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    /// The NodeServer stopped before it took the session subscription.
    #[error("the cluster session server stopped while starting")]
    NodeServerStopped,
}

/// The HKDF-SHA256 label (`info`) the link cookie is derived under: a label of its own
/// keeps the cookie apart from every other key derived from the cluster key.
pub const LINK_COOKIE_LABEL: &[u8] = b"chorus/link-session-cookie/v1";

/// Bytes of the derived link cookie (hex-encoded into the session handshake).
const LINK_COOKIE_LEN: usize = 32;

/// The ractor_cluster session cookie of a cluster: HKDF-SHA256 of the cluster key under
/// [`LINK_COOKIE_LABEL`], in hex. ractor_cluster keeps its cookie in memory and mixes
/// it into challenge digests; deriving it means that neither a leaked cookie nor the
/// session handshake says anything about the key gossip is sealed with.
pub fn link_cookie(cluster_key: &[u8]) -> String {
    let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, cluster_key);
    let mut cookie = [0u8; LINK_COOKIE_LEN];
    hkdf.expand(LINK_COOKIE_LABEL, &mut cookie)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    hex::encode(cookie)
}

/// What the links of a node are made with.
#[derive(Clone)]
pub struct LinkSettings {
    /// This node's id: its certificate names it, and peers dial it by it.
    pub node: NodeId,
    /// The shared secret of ractor_cluster's session handshake ([`link_cookie`] of the
    /// cluster key); every node of the cluster must have the same. Never printed.
    pub cookie: String,
    /// The cluster CA and this node's certificate and key.
    pub tls: TlsPaths,
    /// The node's QUIC endpoint, which peers are dialed from.
    pub endpoint: quinn::Endpoint,
    /// Keep-alive and idle timeout of dialed links.
    pub timing: LinkTiming,
    /// How long a forward may take before it ends as `Unavailable` (default 2 s).
    pub call_timeout: Duration,
    /// How long dialing, or waiting for the dialer's stream, may take (default 5 s).
    pub handshake_timeout: Duration,
    /// The first wait before redialing a lost peer; it doubles up to `redial_max`.
    pub redial_min: Duration,
    /// The longest wait between dials.
    pub redial_max: Duration,
    /// Forwards in flight to one peer; more are refused with `Overloaded` (default 256).
    pub max_forwards_per_peer: usize,
    /// Forwards from peers run at once on this node; more are refused (default 1,024).
    pub max_received_in_flight: usize,
    /// Every peer's circuit breaker (default: the store's, open for 5 s).
    pub breaker: BreakerConfig,
    /// The cluster state peers' standings merge into (default none: refused).
    pub cluster: Option<super::state::ClusterState>,
    /// The certificate links are dialed with, shared with the endpoint so that a
    /// reload rotates both (default none: read from `tls` at start).
    pub cert: Option<Arc<crate::tls::NodeCert>>,
}

impl std::fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cookie admits a session to this cluster: never in logs.
        f.debug_struct("LinkSettings")
            .field("node", &self.node)
            .field("cookie", &"<redacted>")
            .field("tls", &self.tls)
            .field("timing", &self.timing)
            .field("call_timeout", &self.call_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("redial_min", &self.redial_min)
            .field("redial_max", &self.redial_max)
            .field("max_forwards_per_peer", &self.max_forwards_per_peer)
            .field("max_received_in_flight", &self.max_received_in_flight)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl LinkSettings {
    /// Settings with the defaults.
    pub fn new(node: NodeId, cookie: String, tls: TlsPaths, endpoint: quinn::Endpoint) -> Self {
        LinkSettings {
            node,
            cookie,
            tls,
            endpoint,
            timing: LinkTiming::default(),
            call_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            redial_min: Duration::from_millis(200),
            redial_max: Duration::from_secs(5),
            max_forwards_per_peer: 256,
            max_received_in_flight: 1024,
            breaker: BreakerConfig {
                open_timeout: Duration::from_secs(5),
                ..BreakerConfig::store()
            },
            cluster: None,
            cert: None,
        }
    }

    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), LinkError> {
        let setting = |field, reason| Err(LinkError::Setting { field, reason });
        if rustls_pki_types::DnsName::try_from(self.node.0.clone()).is_err() {
            return setting("node", "must be a valid DNS name");
        }
        if self.cookie.is_empty() {
            return setting("cookie", "must not be empty");
        }
        if self.call_timeout.is_zero() {
            return setting("call_timeout", "must be greater than zero");
        }
        if self.handshake_timeout.is_zero() {
            return setting("handshake_timeout", "must be greater than zero");
        }
        if self.redial_min.is_zero() || self.redial_max < self.redial_min {
            return setting("redial_min", "must be positive and at most redial_max");
        }
        if self.timing.keep_alive.is_zero() || self.timing.idle_timeout <= self.timing.keep_alive {
            return setting(
                "timing",
                "keep_alive must be positive and below idle_timeout",
            );
        }
        if self.max_forwards_per_peer == 0 || self.max_received_in_flight == 0 {
            return setting("max_forwards_per_peer", "limits must be greater than zero");
        }
        self.breaker.validate()?;
        Ok(())
    }
}

/// One peer's link as `chorus ctl peers` shows it.
#[derive(Clone, Debug)]
pub struct PeerLink {
    /// Its membership, link and breaker state.
    pub view: PeerView,
    /// The QUIC path's smoothed round-trip time, while its session's connection is open.
    pub rtt: Option<Duration>,
    /// Forwards to it waiting for their answer now.
    pub forwards_in_flight: usize,
    /// The most forwards it may have in flight; more are refused `Overloaded`.
    pub forwards_max: usize,
}

/// A link connection this node knows, by label.
struct LinkConnection {
    connection: quinn::Connection,
    /// Whether it negotiated `chorus-link/2`: its forwards carry request ids.
    carries_request_ids: bool,
    /// The node dialed, for connections this node opened.
    dialed: Option<NodeId>,
}

/// Everything the links share between callers, tasks and session events.
struct Shared {
    table: PeerTable,
    connections: HashMap<String, LinkConnection>,
    dialers: HashMap<NodeId, CancellationToken>,
    slots: HashMap<NodeId, Arc<Semaphore>>,
    /// Per peer, cancelled when membership reports it down: calls in flight to it end
    /// at once instead of at their timeout.
    gone: HashMap<NodeId, CancellationToken>,
    /// Counts links coming up, so that what must happen on a new link (an exchange of
    /// API keys) can follow it without a queue.
    link_ups: watch::Sender<u64>,
}

struct Inner {
    settings: LinkSettings,
    /// Checks a peer's certificate against the name its session gives.
    verifier: PeerVerifier,
    client_config: quinn::ClientConfig,
    node_server: ActorRef<NodeServerMessage>,
    receiver: ActorRef<ForwardMsg>,
    shared: Arc<Mutex<Shared>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// The cluster links of one node; cheap to clone.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("node", &self.inner.settings.node)
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves the table consistent (every update is a
    // single assignment); keep serving.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unavailable(to: &NodeId, what: impl std::fmt::Display) -> ErrorCode {
    ErrorCode::Unavailable {
        reason: format!("link to {to}: {what}"),
    }
}

impl Links {
    /// Starts the ractor_cluster NodeServer and this node's forward receiver. Link
    /// connections come from [`Links::accept`] and [`Links::member_up`].
    pub async fn start(settings: LinkSettings, node: NodeHandle) -> Result<Links, LinkError> {
        settings.validate()?;
        let cert = match &settings.cert {
            Some(cert) => Arc::clone(cert),
            None => crate::tls::NodeCert::load(&settings.tls)?,
        };
        let client_config = link_client_config(&settings.tls, cert, settings.timing)?;
        let verifier = PeerVerifier::new(&settings.tls)?;
        let shared = Arc::new(Mutex::new(Shared {
            table: PeerTable::new(settings.node.clone(), settings.breaker)?,
            connections: HashMap::new(),
            dialers: HashMap::new(),
            slots: HashMap::new(),
            gone: HashMap::new(),
            link_ups: watch::Sender::new(0),
        }));

        let server = NodeServer::new(
            0,
            settings.cookie.clone(),
            settings.node.0.clone(),
            SESSION_HOST.to_string(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(Ipv4Addr::LOCALHOST.into())
        .with_max_inbound_frame_size(MAX_LINK_FRAME);
        let (node_server, _) = Actor::spawn(None, server, ()).await?;
        let events = {
            let shared = shared.clone();
            let local = settings.node.clone();
            let verifier = verifier.clone();
            Subscription::new(move |event, session| {
                on_session_event(&shared, &verifier, &local, event, &session.actor);
            })
        };
        if node_server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "chorus.links".to_string(),
                subscription: Box::new(events),
            })
            .is_err()
        {
            return Err(LinkError::NodeServerStopped);
        }
        let receiver = match Actor::spawn(
            None,
            ForwardReceiver,
            ReceiverArgs {
                node_id: settings.node.clone(),
                node,
                max_in_flight: settings.max_received_in_flight,
                cluster: settings.cluster.clone(),
            },
        )
        .await
        {
            Ok((receiver, _)) => receiver,
            Err(e) => {
                node_server.stop(None);
                return Err(e.into());
            }
        };
        info!(node = %settings.node, "cluster links started");
        Ok(Links {
            inner: Arc::new(Inner {
                settings,
                verifier,
                client_config,
                node_server,
                receiver,
                shared,
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// Takes a connection that negotiated the link ALPN on the node's endpoint: closes it
    /// unless the peer presented a certificate of the cluster CA, else waits for the
    /// dialer's stream and runs the session on it.
    pub fn accept(&self, connection: quinn::Connection) {
        let refuse = |reason: &'static [u8]| {
            connection.close(close_code::REFUSED.into(), reason);
        };
        if self.inner.shutdown.is_cancelled() {
            connection.close(close_code::SHUTTING_DOWN.into(), b"shutting down");
            return;
        }
        if link_alpn(&connection).is_none() {
            refuse(b"not a link connection");
            return;
        }
        if peer_chain(&connection).is_none() {
            debug!(remote = %connection.remote_address(), "link without a certificate refused");
            refuse(b"a link needs a certificate of the cluster CA");
            return;
        }
        let inner = self.inner.clone();
        let span = info_span!("link", remote = %connection.remote_address(), side = "accept");
        self.inner
            .tasks
            .spawn(async move { inner.serve_accepted(connection).await }.instrument(span));
    }

    /// Membership reports `node` up with its link address: link to it (this node dials
    /// when its id is the lower one; otherwise it waits for the peer).
    pub fn member_up(&self, node: NodeId, link_addr: SocketAddr) {
        self.up(node, link_addr, false);
    }

    /// Membership reports that `node` restarted (a new run replaced the old one, maybe at
    /// the same address): drop the old run's link and link to the new one.
    pub fn member_renewed(&self, node: NodeId, link_addr: SocketAddr) {
        self.up(node, link_addr, true);
    }

    fn up(&self, node: NodeId, link_addr: SocketAddr, renewed: bool) {
        let inner = &self.inner;
        let mut shared = lock(&inner.shared);
        let now = Instant::now();
        let up = if renewed {
            shared.table.member_renewed(now, &node, link_addr)
        } else {
            shared.table.member_up(now, &node, link_addr)
        };
        if let Some(stale) = up.stale
            && let Some(link) = shared.connections.remove(&stale)
        {
            info!(peer = %node, %link_addr, "peer restarted or moved: closing its old link");
            link.connection
                .close(close_code::MEMBER_DOWN.into(), b"peer restarted");
        }
        if !up.dial || inner.shutdown.is_cancelled() || shared.dialers.contains_key(&node) {
            return;
        }
        let cancel = inner.shutdown.child_token();
        shared.dialers.insert(node.clone(), cancel.clone());
        drop(shared);
        let span = info_span!("link", peer = %node, side = "dial");
        let task = inner.clone();
        inner
            .tasks
            .spawn(async move { task.dial_loop(node, cancel).await }.instrument(span));
    }

    /// Membership reports `node` down: stop dialing it and close its link.
    pub fn member_down(&self, node: &NodeId) {
        let mut shared = lock(&self.inner.shared);
        if let Some(cancel) = shared.dialers.remove(node) {
            cancel.cancel();
        }
        shared.slots.remove(node);
        if let Some(gone) = shared.gone.remove(node) {
            gone.cancel();
        }
        if let Some(label) = shared.table.member_down(node)
            && let Some(link) = shared.connections.remove(&label)
        {
            info!(peer = %node, "member down: closing its link");
            link.connection
                .close(close_code::MEMBER_DOWN.into(), b"member down");
        }
    }

    /// Runs `request` on node `to` and returns its answer. Refused at once with
    /// `Unavailable` when the link is not up or the peer's breaker is open, with
    /// `Overloaded` when too many forwards to `to` are in flight; a call that takes
    /// longer than the call timeout ends as `Unavailable` (it may or may not have run).
    pub async fn forward(&self, to: &NodeId, request: Forward) -> Result<ForwardReply, ErrorCode> {
        let inner = &self.inner;
        let tier = wire::overload_tier(&request);
        let (admitted, _slot, gone, requests) = {
            let mut shared = lock(&inner.shared);
            let admitted =
                shared
                    .table
                    .admit(Instant::now(), to)
                    .map_err(|refusal| match refusal {
                        Refusal::Unknown => unavailable(to, "not a linked member"),
                        Refusal::LinkNot(state) => unavailable(to, state.as_str()),
                        Refusal::BreakerOpen { retry_after } => unavailable(
                            to,
                            format_args!("circuit open, retry in {} ms", retry_after.as_millis()),
                        ),
                    })?;
            let gone = shared.gone.entry(to.clone()).or_default().clone();
            let max = inner.settings.max_forwards_per_peer;
            let slots = shared
                .slots
                .entry(to.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(max)))
                .clone();
            // A `chorus-link/1` peer (an older release) reads no request id.
            let requests = shared
                .table
                .session_label(to)
                .and_then(|label| shared.connections.get(label))
                .filter(|link| link.carries_request_ids)
                .map(|_| crate::request_id::carried())
                .unwrap_or_default();
            match slots.try_acquire_owned() {
                Ok(slot) => (admitted, slot, gone, requests),
                Err(_) => {
                    shared.table.on_cancel(to, admitted.permit);
                    return Err(ErrorCode::Overloaded {
                        tier,
                        retry_after_ms: PEER_FULL_RETRY_AFTER_MS,
                    });
                }
            }
        };
        // Hands the permit back if this future is dropped before the outcome is known,
        // so that an abandoned call never holds a half-open trial slot.
        let mut permit = PermitGuard {
            shared: &inner.shared,
            to,
            permit: Some(admitted.permit),
        };
        let target = ractor::pg::get_members(&group_name(to))
            .into_iter()
            .find(|cell| {
                matches!(cell.get_id(), ActorId::Remote { node_id, .. }
                    if node_id == admitted.session_node)
            });
        let Some(target) = target else {
            return Err(unavailable(to, "its forward receiver is not known yet"));
        };
        let payload = wire::encode_request(request, &requests);
        let timeout = inner.settings.call_timeout;
        let started = Instant::now();
        let actor: ActorRef<ForwardMsg> = target.into();
        let call = actor.call(|port| ForwardMsg::Forward(payload, port), Some(timeout));
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, call) => outcome,
            // The guard hands the permit back: a peer declared down is no breaker event.
            _ = gone.cancelled() => return Err(unavailable(to, "declared down during the call")),
        };
        let now = Instant::now();
        let permit = permit.take();
        let mut shared = lock(&inner.shared);
        let result = match outcome {
            Ok(Ok(CallResult::Success(bytes))) => {
                shared.table.on_success(now, to, permit, now - started);
                wire::decode_reply(&bytes)
                    .unwrap_or_else(|| Err(unavailable(to, "malformed reply")))
            }
            failed => {
                shared.table.on_failure(now, to, permit);
                let what = match failed {
                    Ok(Ok(CallResult::Timeout)) | Err(_) => "timed out",
                    _ => "session closed during the call",
                };
                Err(unavailable(to, what))
            }
        };
        while let Some((peer, transition)) = shared.table.poll_transition() {
            info!(%peer, from = ?transition.from, to = ?transition.to, reason = ?transition.reason, "peer breaker changed");
        }
        result
    }

    /// A counter that grows each time a link to a peer comes up; wait on it with
    /// `changed()` to act on new links.
    pub fn link_ups(&self) -> watch::Receiver<u64> {
        lock(&self.inner.shared).link_ups.subscribe()
    }

    /// Every known peer: its link state, since when, and its breaker's state.
    pub fn peers(&self) -> Vec<PeerView> {
        lock(&self.inner.shared).table.views(Instant::now())
    }

    /// The most forwards one peer may have in flight.
    pub fn forwards_max(&self) -> usize {
        self.inner.settings.max_forwards_per_peer
    }

    /// Every known peer with what its connection measures: `chorus ctl peers`.
    pub fn peer_links(&self) -> Vec<PeerLink> {
        let max = self.forwards_max();
        let mut shared = lock(&self.inner.shared);
        let views = shared.table.views(Instant::now());
        views
            .into_iter()
            .map(|view| {
                let rtt = shared
                    .table
                    .session_label(&view.node)
                    .and_then(|label| shared.connections.get(label))
                    .map(|link| link.connection.rtt());
                let forwards_in_flight = shared
                    .slots
                    .get(&view.node)
                    .map_or(0, |slots| max.saturating_sub(slots.available_permits()));
                PeerLink {
                    view,
                    rtt,
                    forwards_in_flight,
                    forwards_max: max,
                }
            })
            .collect()
    }

    /// Closes every link, stops the session server and the forward receiver (which
    /// answers the forwards it is running first), and waits for the link tasks.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        {
            let mut shared = lock(&inner.shared);
            for (_, link) in shared.connections.drain() {
                link.connection
                    .close(close_code::SHUTTING_DOWN.into(), b"shutting down");
            }
        }
        let grace = Some(inner.settings.call_timeout);
        let _ = inner.receiver.stop_and_wait(None, grace).await;
        let _ = inner.node_server.stop_and_wait(None, grace).await;
        inner.tasks.close();
        if tokio::time::timeout(inner.settings.handshake_timeout, inner.tasks.wait())
            .await
            .is_err()
        {
            warn!("link tasks still running after shutdown");
        }
        info!(node = %inner.settings.node, "cluster links stopped");
    }
}

/// A breaker permit that goes back to the peer's breaker as cancelled unless taken.
struct PermitGuard<'a> {
    shared: &'a Mutex<Shared>,
    to: &'a NodeId,
    permit: Option<Permit>,
}

impl PermitGuard<'_> {
    fn take(&mut self) -> Permit {
        self.permit.take().expect("a permit is taken once")
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            lock(self.shared).table.on_cancel(self.to, permit);
        }
    }
}

impl Forwarder for Links {
    fn forward<'a>(&'a self, to: &'a NodeId, request: Forward) -> ForwardFuture<'a> {
        Box::pin(Links::forward(self, to, request))
    }

    fn peers(&self) -> Vec<NodeId> {
        Links::peers(self)
            .into_iter()
            .filter(|peer| peer.link == LinkState::Up)
            .map(|peer| peer.node)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_derived_from_the_cluster_key_and_is_not_the_key() {
        let key = [7u8; 32];
        let cookie = link_cookie(&key);
        assert_eq!(
            cookie,
            link_cookie(&key),
            "every node derives the same cookie"
        );
        assert_eq!(cookie.len(), 2 * LINK_COOKIE_LEN);
        assert_ne!(cookie, hex::encode(key));
        assert!(!cookie.contains(&hex::encode(&key[..8])));
        assert_ne!(
            cookie,
            link_cookie(&[8u8; 32]),
            "another cluster, another cookie"
        );
    }
}
