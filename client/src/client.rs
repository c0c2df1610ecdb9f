//! The public handle: typed calls, the shared (re)connection, and retries.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chorus_protocol::{
    ErrorCode, FrameError, Item, ItemId, PageToken, Receipt, Request, Response, Role, StoredItem,
    Welcome, encode_value,
};
use tracing::{debug, warn};

use crate::config::{ClientConfig, Credentials};
use crate::error::ClientError;
use crate::retry::{self, Decision, RetryPolicy};
use crate::session::Session;
use crate::tls;

/// How long [`Client::close`] waits for the close to reach the server.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A page of a user's items.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The items, oldest first.
    pub items: Vec<StoredItem>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageToken>,
}

/// A connection to a Chorus cluster, shared by every task that clones it.
///
/// Requests from all clones are pipelined over one QUIC connection. If the connection
/// drops, the next request re-establishes it (one reconnect at a time, shared by all
/// callers), trying the addresses in order.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// After a failed connection attempt, how long callers get its error instead of starting
/// another attempt.
const RECONNECT_HOLD_OFF: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection attempt that failed.
struct FailedAttempt {
    began: Instant,
    ended: Instant,
    error: ClientError,
}

struct Inner {
    endpoint: quinn::Endpoint,
    quic: quinn::ClientConfig,
    addrs: Vec<SocketAddr>,
    credentials: Credentials,
    config: ClientConfig,
    retry: RetryPolicy,
    session: Mutex<Option<Arc<Session>>>,
    /// Held while a connection is being (re-)established; holds the last failed attempt,
    /// so that callers who queued behind it share its failure instead of each waiting
    /// out a connect timeout of their own.
    reconnecting: tokio::sync::Mutex<Option<FailedAttempt>>,
    next_request_id: AtomicU64,
    closed: AtomicBool,
}

impl Client {
    /// Connects to the first of `addrs` that answers and completes the hello.
    ///
    /// Fails with [`ClientError::Server`] (`Unauthorized`, `UnsupportedVersion`) or
    /// [`ClientError::Tls`] at once, since another node of the same cluster would answer
    /// the same; with [`ClientError::Connect`] or [`ClientError::NoServerReachable`] when
    /// no address answers.
    pub async fn connect(
        addrs: &[SocketAddr],
        credentials: Credentials,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        config.validate()?;
        if addrs.is_empty() {
            return Err(ClientError::InvalidConfig("addrs: no address given".into()));
        }
        let quic = tls::quic_client_config(&credentials, &config)?;
        let endpoint = quinn::Endpoint::client(local_bind_addr(addrs))
            .map_err(|e| ClientError::Endpoint(e.to_string()))?;
        let client = Client {
            inner: Arc::new(Inner {
                endpoint,
                quic,
                addrs: addrs.to_vec(),
                retry: RetryPolicy {
                    max_retries: config.max_retries,
                    initial_backoff: config.initial_backoff,
                    max_backoff: config.max_backoff,
                },
                credentials,
                config,
                session: Mutex::new(None),
                reconnecting: tokio::sync::Mutex::new(None),
                next_request_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
            }),
        };
        client.session().await?;
        Ok(client)
    }

    /// Stores one item; the receipt comes only once it is durable. Retried on transport
    /// failures: the item id makes a repeat harmless.
    pub async fn submit(&self, item: Item) -> Result<Receipt, ClientError> {
        match self.request(Request::Submit(item)).await? {
            Response::Receipt(receipt) => Ok(receipt),
            other => Err(unexpected("Receipt", &other)),
        }
    }

    /// Stores up to `MAX_BATCH_ITEMS` items; each gets its own outcome, in order.
    pub async fn submit_batch(
        &self,
        items: Vec<Item>,
    ) -> Result<Vec<Result<Receipt, ErrorCode>>, ClientError> {
        let count = items.len();
        match self.request(Request::SubmitBatch(items)).await? {
            Response::Batch(outcomes) if outcomes.len() == count => Ok(outcomes),
            Response::Batch(outcomes) => Err(ClientError::Protocol(format!(
                "{} outcomes for a batch of {count}",
                outcomes.len()
            ))),
            other => Err(unexpected("Batch", &other)),
        }
    }

    /// Reads one item by id; `None` if no item has it.
    pub async fn get(&self, id: ItemId) -> Result<Option<StoredItem>, ClientError> {
        match self.request(Request::Get(id)).await? {
            Response::Item(item) => Ok(item.map(|boxed| *boxed)),
            other => Err(unexpected("Item", &other)),
        }
    }

    /// One page of a user's items, oldest first, starting after `after`.
    pub async fn list_by_user(
        &self,
        user_id: impl Into<String>,
        after: Option<PageToken>,
        limit: u32,
    ) -> Result<Page, ClientError> {
        let request = Request::ListByUser {
            user_id: user_id.into(),
            after,
            limit,
        };
        match self.request(request).await? {
            Response::Page { items, next } => Ok(Page { items, next }),
            other => Err(unexpected("Page", &other)),
        }
    }

    /// Every item of a user, fetched `page_size` at a time. Holds them all in memory:
    /// for large histories, page with [`Client::list_by_user`] instead.
    pub async fn list_all_by_user(
        &self,
        user_id: impl Into<String>,
        page_size: u32,
    ) -> Result<Vec<StoredItem>, ClientError> {
        let user_id = user_id.into();
        let mut items = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_by_user(user_id.clone(), after, page_size).await?;
            items.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// Creates an API key with `role` (needs an admin key); returns the secret, shown
    /// only this once. Not retried after it may have been sent: a repeat would create a
    /// second key.
    pub async fn create_api_key(
        &self,
        role: Role,
        name: impl Into<String>,
    ) -> Result<String, ClientError> {
        let request = Request::CreateApiKey {
            role,
            name: name.into(),
        };
        match self.request(request).await? {
            Response::ApiKeyCreated { key, .. } => Ok(key),
            other => Err(unexpected("ApiKeyCreated", &other)),
        }
    }

    /// Sends any request, with the client's timeout and retry rules, and returns the
    /// untyped response. The typed methods above are built on it.
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let idempotent = request.is_idempotent();
        let mut attempt = 0;
        loop {
            let error = match self.attempt(&request).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let decision = retry::decide(
                &self.inner.retry,
                idempotent || error.nothing_sent(),
                &error,
                attempt,
                retry::jitter(),
            );
            match decision {
                Decision::RetryAfter(delay) => {
                    debug!(%error, attempt, ?delay, "retrying request");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Decision::GiveUp => return Err(error),
            }
        }
    }

    /// The server's hello answer on the current connection, if connected.
    pub fn welcome(&self) -> Option<Welcome> {
        self.current_session().map(|s| s.welcome().clone())
    }

    /// Closes the connection; requests in flight and later calls fail with
    /// [`ClientError::Closed`]. Waits briefly for the close to reach the server.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let session = self.lock_session().take();
        if let Some(session) = session {
            session.close();
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.inner.endpoint.wait_idle()).await;
    }

    /// One attempt: a live connection, a stream, the frame, the response.
    async fn attempt(&self, request: &Request) -> Result<Response, ClientError> {
        let session = self.session().await?;
        let request_id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        // `(request_id, &request)` encodes exactly as `ClientFrame { request_id, request }`
        // (bincode writes struct fields in order, untagged) without cloning the request,
        // which a retry still needs.
        encode_value(&(request_id, request), session.request_limit(), &mut frame).map_err(|e| {
            match e {
                FrameError::TooLarge { len, limit } => ClientError::FrameTooLarge { len, limit },
                other => ClientError::Protocol(format!("encoding the request: {other}")),
            }
        })?;
        let call = async {
            let pipeline = session.pipeline().await?;
            pipeline.call(request_id, frame).await
        };
        match tokio::time::timeout(self.inner.config.request_timeout, call).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(error)) => Err(error),
            Ok(Ok(Err(code))) => Err(ClientError::Server(code)),
            Ok(Ok(Ok(response))) => Ok(response),
        }
    }

    /// The live session, connecting first if there is none.
    async fn session(&self) -> Result<Arc<Session>, ClientError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        if let Some(session) = self.current_session() {
            return Ok(session);
        }
        let asked_at = Instant::now();
        let mut last_failure = self.inner.reconnecting.lock().await;
        // Another caller may have reconnected while this one waited...
        if let Some(session) = self.current_session() {
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
        let session = match self.connect_any().await {
            Ok(session) => Arc::new(session),
            Err(error) => {
                *last_failure = Some(FailedAttempt {
                    began,
                    ended: Instant::now(),
                    error: error.clone(),
                });
                return Err(error);
            }
        };
        if self.inner.closed.load(Ordering::SeqCst) {
            session.close();
            return Err(ClientError::Closed);
        }
        *self.lock_session() = Some(session.clone());
        Ok(session)
    }

    /// Tries each address in order. TLS and typed server errors stop the search: every
    /// node of the cluster would answer the same.
    async fn connect_any(&self) -> Result<Session, ClientError> {
        let inner = &self.inner;
        let mut last_error = None;
        for &addr in &inner.addrs {
            match Session::connect(
                &inner.endpoint,
                &inner.quic,
                addr,
                &inner.credentials,
                &inner.config,
            )
            .await
            {
                Ok(session) => return Ok(session),
                Err(error @ ClientError::Connect { .. }) => {
                    warn!(%addr, %error, "server unreachable");
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        match last_error {
            Some(error) if inner.addrs.len() == 1 => Err(error),
            last => Err(ClientError::NoServerReachable {
                tried: inner.addrs.len(),
                last_error: last.map(|e| e.to_string()).unwrap_or_default(),
            }),
        }
    }

    /// The current session if it is alive and the client open.
    fn current_session(&self) -> Option<Arc<Session>> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return None;
        }
        self.lock_session()
            .as_ref()
            .filter(|s| s.is_alive())
            .cloned()
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, Option<Arc<Session>>> {
        self.inner.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.inner.addrs)
            .field("connected", &self.current_session().is_some())
            .finish_non_exhaustive()
    }
}

/// The local address to bind: IPv4 when every server is IPv4, else dual-stack IPv6.
fn local_bind_addr(addrs: &[SocketAddr]) -> SocketAddr {
    if addrs.iter().all(SocketAddr::is_ipv4) {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// The error for a response of the wrong kind.
fn unexpected(expected: &str, got: &Response) -> ClientError {
    let got = match got {
        Response::Receipt(_) => "Receipt",
        Response::Batch(_) => "Batch",
        Response::Item(_) => "Item",
        Response::Page { .. } => "Page",
        Response::ApiKeyCreated { .. } => "ApiKeyCreated",
        Response::Ring(_) => "Ring",
    };
    ClientError::Protocol(format!("expected a {expected} response, got {got}"))
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{ClientFrame, FrameLimit, Kind, decode_client_frame};

    use super::*;

    #[test]
    fn the_borrowed_request_encoding_is_a_client_frame() {
        let request = Request::Submit(Item::new("user-1", Kind::Text));
        let mut borrowed = Vec::new();
        encode_value(&(42u64, &request), FrameLimit::default(), &mut borrowed).unwrap();
        let mut owned = Vec::new();
        let frame = ClientFrame {
            request_id: 42,
            request,
        };
        encode_value(&frame, FrameLimit::default(), &mut owned).unwrap();
        assert_eq!(borrowed, owned);
        assert_eq!(decode_client_frame(&borrowed[4..]), Ok(frame));
    }

    #[test]
    fn the_local_socket_matches_the_servers_family() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert!(local_bind_addr(&[v4]).is_ipv4());
        assert!(local_bind_addr(&[v4, v6]).is_ipv6());
    }
}
