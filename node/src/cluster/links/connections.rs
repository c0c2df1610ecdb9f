//! The connections under the links: dialing a peer and keeping its link while it is a
//! member, serving a link a peer dialed, and binding each session to the peer its
//! certificate names.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chorus_protocol::NodeId;
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::gate::NameCheck;
use super::transport::{QuicStream, SessionEvent, node_of_peer_name, session_name};
use super::{Inner, LinkConnection, PeerVerifier, Shared, close_code, lock, peer_chain};

/// The label of a connection, unique within this process.
fn label_of(connection: &quinn::Connection, side: &str) -> String {
    format!(
        "quic-{side}:{}#{}",
        connection.remote_address(),
        connection.stable_id()
    )
}

/// Applies a session event; runs inside the NodeServer actor.
pub(super) fn on_session_event(
    shared: &Mutex<Shared>,
    verifier: &PeerVerifier,
    local: &NodeId,
    event: SessionEvent,
    session: &ActorRef<ractor_cluster::NodeSessionMessage>,
) {
    let now = Instant::now();
    let mut shared = lock(shared);
    match event {
        SessionEvent::Opened { label } => {
            // The NodeServer's own TCP listener cannot be turned off: a session it
            // accepted is not over one of our QUIC links, and is stopped as it opens.
            // A server session cannot finish its handshake without the NodeServer
            // answering its session check, which the NodeServer does only after this
            // event: the stop always comes first, so nothing is ever delivered.
            if !shared.connections.contains_key(&label) {
                warn!(%label, "session not over a link connection; stopping it");
                session.stop(Some("not a chorus link".into()));
            }
        }
        SessionEvent::Ready {
            label,
            peer_name,
            session_node,
        } => {
            let node = NodeId(node_of_peer_name(&peer_name).to_string());
            let Some(link) = shared.connections.get(&label) else {
                // Only sessions over our QUIC links count, not the NodeServer's own
                // TCP listener.
                warn!(%peer_name, %label, "session not over a link connection; stopping it");
                session.stop(Some("not a chorus link".into()));
                return;
            };
            let genuine = node != *local
                && match &link.dialed {
                    Some(dialed) => *dialed == node,
                    None => peer_chain(&link.connection)
                        .is_some_and(|chain| verifier.names(&chain, &node.0)),
                };
            if !genuine {
                warn!(%peer_name, %label, "peer name does not match its certificate; closing");
                if let Some(link) = shared.connections.remove(&label) {
                    link.connection.close(
                        close_code::REFUSED.into(),
                        b"name does not match certificate",
                    );
                }
                session.stop(Some("name does not match certificate".into()));
                return;
            }
            info!(peer = %node, %label, "link up");
            shared.link_ups.send_modify(|ups| *ups += 1);
            if let Some(previous) = shared
                .table
                .session_up(now, &node, label.clone(), session_node)
                && previous != label
                && let Some(old) = shared.connections.remove(&previous)
            {
                old.connection
                    .close(close_code::SESSION_ENDED.into(), b"replaced");
            }
        }
        SessionEvent::Closed { label } => {
            if let Some(link) = shared.connections.remove(&label) {
                link.connection
                    .close(close_code::SESSION_ENDED.into(), b"session ended");
            }
            if let Some(node) = shared.table.session_down(now, &label) {
                info!(peer = %node, %label, "link down");
            }
        }
    }
}

/// Why one dial failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("the session server stopped")]
    NodeServerStopped,
    #[error("timed out")]
    TimedOut,
}

impl Inner {
    /// Dials `node` and keeps a link to it while it is a member, redialing with backoff.
    pub(super) async fn dial_loop(self: Arc<Self>, node: NodeId, cancel: CancellationToken) {
        let mut backoff = self.settings.redial_min;
        loop {
            let Some(addr) = lock(&self.shared).table.should_dial(&node) else {
                break;
            };
            lock(&self.shared).table.dialing(Instant::now(), &node);
            let attempt =
                tokio::time::timeout(self.settings.handshake_timeout, self.dial_once(&node, addr));
            let outcome = tokio::select! {
                _ = cancel.cancelled() => break,
                outcome = attempt => outcome.unwrap_or(Err(DialError::TimedOut)),
            };
            match outcome {
                Ok((connection, label)) => {
                    let opened = Instant::now();
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            connection.close(close_code::MEMBER_DOWN.into(), b"member down");
                        }
                        reason = connection.closed() => debug!(%reason, "link connection closed"),
                    }
                    self.forget_connection(&label);
                    if opened.elapsed() >= self.settings.redial_max {
                        backoff = self.settings.redial_min;
                    }
                }
                Err(e) => debug!(%addr, error = %e, "dial failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.settings.redial_max);
        }
    }

    /// One dial: connect, open the session's stream, start the session as its client.
    async fn dial_once(
        &self,
        node: &NodeId,
        addr: SocketAddr,
    ) -> Result<(quinn::Connection, String), DialError> {
        let connection = self
            .settings
            .endpoint
            .connect_with(self.client_config.clone(), addr, &node.0)?
            .await?;
        let (send, recv) = connection.open_bi().await?;
        let label = label_of(&connection, "out");
        lock(&self.shared).connections.insert(
            label.clone(),
            LinkConnection {
                connection: connection.clone(),
                carries_request_ids: carries_request_ids(&connection),
                dialed: Some(node.clone()),
            },
        );
        // TLS checked the peer's certificate against the node dialed; the gate checks
        // that the session names that node too.
        let expected = session_name(&node.0);
        let stream = QuicStream {
            send,
            recv,
            label: label.clone(),
            check: Box::new(move |claimed| claimed == expected),
        };
        if ractor_cluster::client_connect_external(&self.node_server, Box::new(stream))
            .await
            .is_err()
        {
            self.forget_connection(&label);
            return Err(DialError::NodeServerStopped);
        }
        Ok((connection, label))
    }

    /// Serves an accepted link connection until it closes.
    pub(super) async fn serve_accepted(self: Arc<Self>, connection: quinn::Connection) {
        let stream = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            stream = tokio::time::timeout(self.settings.handshake_timeout, connection.accept_bi()) => stream,
        };
        let (send, recv) = match stream {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(error = %e, "link closed before its stream");
                return;
            }
            Err(_) => {
                debug!("no link stream in time");
                connection.close(close_code::REFUSED.into(), b"no stream in time");
                return;
            }
        };
        let label = label_of(&connection, "in");
        lock(&self.shared).connections.insert(
            label.clone(),
            LinkConnection {
                connection: connection.clone(),
                carries_request_ids: carries_request_ids(&connection),
                dialed: None,
            },
        );
        let Some(check) = self.accepted_name_check(&connection) else {
            self.forget_connection(&label);
            connection.close(close_code::REFUSED.into(), b"no certificate");
            return;
        };
        let stream = Box::new(QuicStream {
            send,
            recv,
            label: label.clone(),
            check,
        });
        if self
            .node_server
            .cast(NodeServerMessage::ConnectionOpenedExternal {
                stream,
                is_server: true,
            })
            .is_err()
        {
            self.forget_connection(&label);
            connection.close(close_code::SHUTTING_DOWN.into(), b"shutting down");
            return;
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => {
                connection.close(close_code::SHUTTING_DOWN.into(), b"shutting down");
            }
            reason = connection.closed() => debug!(%reason, "link connection closed"),
        }
        self.forget_connection(&label);
    }

    /// The check that binds an accepted connection's session to its certificate: the
    /// name the peer gives must be `<node>@chorus` for a node its certificate (already
    /// verified against the cluster CA by TLS) is valid for, and not this node.
    fn accepted_name_check(&self, connection: &quinn::Connection) -> Option<NameCheck> {
        let chain = peer_chain(connection)?;
        let verifier = self.verifier.clone();
        let local = self.settings.node.0.clone();
        Some(Box::new(move |claimed: &str| {
            match claimed.rsplit_once('@') {
                Some((node, host)) if host == super::SESSION_HOST && node != local => {
                    verifier.names(&chain, node)
                }
                _ => false,
            }
        }))
    }

    /// Drops a closed connection from the table (its session may already be gone).
    fn forget_connection(&self, label: &str) {
        let mut shared = lock(&self.shared);
        shared.connections.remove(label);
        if let Some(node) = shared.table.session_down(Instant::now(), label) {
            info!(peer = %node, %label, "link down");
        }
    }
}

/// Whether `connection` negotiated the link ALPN whose forwards carry request ids.
fn carries_request_ids(connection: &quinn::Connection) -> bool {
    super::link_alpn(connection) == Some(chorus_protocol::ALPN_LINK)
}
