//! The byte pipe under a ractor_cluster session: one bidirectional QUIC stream of a
//! link connection, and the session events that tell the links which peer a
//! connection turned out to be.

use ractor_cluster::node::{NodeEventSubscription, NodeServerSessionInformation};
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream};
use tokio::io::BufReader;

use super::gate::{GatedRead, NameCheck};

/// One QUIC stream carrying a ractor_cluster session. The label names the connection
/// (it comes back as the session's peer address in session events).
pub struct QuicStream {
    /// The sending half.
    pub send: quinn::SendStream,
    /// The receiving half.
    pub recv: quinn::RecvStream,
    /// The connection's label.
    pub label: String,
    /// What the name the peer gives in the session handshake must satisfy before any
    /// of its bytes reach the session (see [`super::gate`]).
    pub check: NameCheck,
}

impl ClusterBidiStream for QuicStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        // The session reads a frame header and then its body in small reads.
        let gated = GatedRead::new(self.recv, self.check);
        (Box::new(BufReader::new(gated)), Box::new(self.send))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.label.clone())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.label.clone())
    }
}

/// A session event, reduced to what the links need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session started, before its handshake.
    Opened {
        /// The connection label (the stream's peer label, or the TCP peer address of a
        /// session on the NodeServer's own listener).
        label: String,
    },
    /// A session is authenticated and its process groups are synchronised.
    Ready {
        /// The connection label (the stream's peer label).
        label: String,
        /// The name the peer gave (`node@host`).
        peer_name: String,
        /// ractor_cluster's id of the session (the `node_id` of its remote actors).
        session_node: u64,
    },
    /// A session ended.
    Closed {
        /// The connection label.
        label: String,
    },
}

/// The name ractor_cluster gives node `node` of a chorus cluster.
pub fn session_name(node: &str) -> String {
    format!("{node}@{}", super::SESSION_HOST)
}

/// The node id inside a ractor_cluster peer name (`node@host`).
pub fn node_of_peer_name(peer_name: &str) -> &str {
    peer_name
        .rsplit_once('@')
        .map_or(peer_name, |(node, _)| node)
}

/// Forwards session events to a handler; runs inside the NodeServer actor, so the
/// handler must not block.
pub struct Subscription<F> {
    handler: F,
}

impl<F> Subscription<F>
where
    F: Fn(SessionEvent, &NodeServerSessionInformation) + Send + 'static,
{
    /// A subscription calling `handler` on each event.
    pub fn new(handler: F) -> Self {
        Subscription { handler }
    }
}

impl<F> NodeEventSubscription for Subscription<F>
where
    F: Fn(SessionEvent, &NodeServerSessionInformation) + Send + 'static,
{
    fn node_session_opened(&self, session: NodeServerSessionInformation) {
        let event = SessionEvent::Opened {
            label: session.peer_addr.clone(),
        };
        (self.handler)(event, &session);
    }

    fn node_session_authenticated(&self, _session: NodeServerSessionInformation) {}

    fn node_session_ready(&self, session: NodeServerSessionInformation) {
        let Some(name) = session.peer_name.as_ref() else {
            return;
        };
        let event = SessionEvent::Ready {
            label: session.peer_addr.clone(),
            peer_name: name.name.clone(),
            session_node: session.node_id,
        };
        (self.handler)(event, &session);
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        let event = SessionEvent::Closed {
            label: session.peer_addr.clone(),
        };
        (self.handler)(event, &session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_is_the_part_before_the_last_at() {
        assert_eq!(node_of_peer_name("node-1@chorus"), "node-1");
        assert_eq!(node_of_peer_name("a@b@chorus"), "a@b");
        assert_eq!(node_of_peer_name("plain"), "plain");
    }
}
