//! One server (or a list of interchangeable addresses) and the connection to it: made on
//! first use, re-made after a loss, one attempt at a time with a hold-off after a
//! failure, so that callers share one connect instead of each waiting out a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tracing::warn;

use crate::config::{ClientConfig, Credentials};
use crate::error::ClientError;
use crate::session::Session;

/// After a failed connection attempt, how long callers get its error instead of starting
/// another attempt.
const RECONNECT_HOLD_OFF: Duration = Duration::from_secs(1);

/// How long an address has on its own before the next one is tried beside it.
const NEXT_ADDRESS_AFTER: Duration = Duration::from_millis(250);

/// What every connection of a client is made with.
pub(crate) struct Connector {
    /// The local UDP endpoint all connections share.
    pub endpoint: quinn::Endpoint,
    /// TLS (cluster CA) and transport settings.
    pub quic: quinn::ClientConfig,
    /// The API key and CA.
    pub credentials: Credentials,
    /// The caller's settings.
    pub config: ClientConfig,
}

/// A connection attempt that failed.
struct FailedAttempt {
    began: Instant,
    ended: Instant,
    error: ClientError,
}

/// A server reachable at `addrs` (tried in order, staggered) under `server_name`.
pub(crate) struct Link {
    addrs: Vec<SocketAddr>,
    server_name: String,
    session: Mutex<Option<Arc<Session>>>,
    /// Held while a connection is being (re-)established; holds the last failed attempt,
    /// so that callers who queued behind it share its failure.
    reconnecting: tokio::sync::Mutex<Option<FailedAttempt>>,
}

impl Link {
    /// A link with no connection yet.
    pub(crate) fn new(addrs: Vec<SocketAddr>, server_name: String) -> Self {
        Link {
            addrs,
            server_name,
            session: Mutex::new(None),
            reconnecting: tokio::sync::Mutex::new(None),
        }
    }

    /// The addresses tried, in order.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The live session, if there is one.
    pub(crate) fn current(&self) -> Option<Arc<Session>> {
        self.lock_session()
            .as_ref()
            .filter(|s| s.is_alive())
            .cloned()
    }

    /// The live session, connecting first if there is none.
    pub(crate) async fn session(&self, connector: &Connector) -> Result<Arc<Session>, ClientError> {
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let asked_at = Instant::now();
        let mut last_failure = self.reconnecting.lock().await;
        // Another caller may have reconnected while this one waited...
        if let Some(session) = self.current() {
            return Ok(session);
        }
        // ...or failed to, in an attempt that began after this caller asked or only
        // moments ago: retrying at once would only wait out another connect timeout.
        if let Some(failed) = last_failure.as_ref()
            && (failed.began >= asked_at || failed.ended.elapsed() < RECONNECT_HOLD_OFF)
        {
            return Err(failed.error.clone());
        }
        let began = Instant::now();
        match self.connect_any(connector).await {
            Ok(session) => {
                let session = Arc::new(session);
                *self.lock_session() = Some(session.clone());
                *last_failure = None;
                Ok(session)
            }
            Err(error) => {
                *last_failure = Some(FailedAttempt {
                    began,
                    ended: Instant::now(),
                    error: error.clone(),
                });
                Err(error)
            }
        }
    }

    /// Closes the connection, if any; a later [`Link::session`] makes a new one.
    pub(crate) fn close(&self) {
        if let Some(session) = self.lock_session().take() {
            session.close();
        }
    }

    /// Tries the addresses in order, each given [`NEXT_ADDRESS_AFTER`] on its own before
    /// the next starts beside it, so that a dead first address costs a moment rather
    /// than its whole connect timeout; the first to connect wins. TLS and typed server
    /// errors stop the search: every address of the same server would answer the same.
    async fn connect_any(&self, connector: &Connector) -> Result<Session, ClientError> {
        let mut last_error = None;
        let mut next = self.addrs.iter().copied();
        let mut running = FuturesUnordered::new();
        let attempt = |addr: SocketAddr| async move {
            (
                addr,
                Session::connect(connector, addr, &self.server_name).await,
            )
        };
        loop {
            if running.is_empty() {
                match next.next() {
                    Some(addr) => running.push(attempt(addr)),
                    None => break,
                }
            }
            tokio::select! {
                Some((addr, outcome)) = running.next() => match outcome {
                    Ok(session) => return Ok(session),
                    Err(error @ ClientError::Connect { .. }) => {
                        warn!(%addr, %error, "server unreachable");
                        last_error = Some(error);
                    }
                    Err(error) => return Err(error),
                },
                _ = tokio::time::sleep(NEXT_ADDRESS_AFTER), if next.len() > 0 => {
                    if let Some(addr) = next.next() {
                        running.push(attempt(addr));
                    }
                }
            }
        }
        match last_error {
            Some(error) if self.addrs.len() == 1 => Err(error),
            last => Err(ClientError::NoServerReachable {
                tried: self.addrs.len(),
                last_error: last.map(|e| e.to_string()).unwrap_or_default(),
            }),
        }
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, Option<Arc<Session>>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}
