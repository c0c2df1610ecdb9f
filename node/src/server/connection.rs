//! One client connection: the hello, then a task per bidirectional stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_actors::{Caller, KeyHash, KeyStatus};
use chorus_protocol::Role;

use crate::cluster::routing::{Forward, ForwardReply};

use super::Backend;
use chorus_protocol::{ErrorCode, FrameLimit, ResetCode, Welcome, decode_hello, encode_value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span};

use super::fan_out::{ask_every_member, list};
use super::frame_io::read_frame;
use super::key_lookups::Lookup;
use super::stream::serve_stream;
use super::{Admitted, Edge};
use crate::cluster::links::{Links, close_code, link_alpn};
use crate::metrics::catalog;

/// How long the hello's answer may take to reach the client before the connection closes.
const HELLO_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one incoming connection until the client closes it or shutdown ends it.
pub(crate) async fn serve_connection(
    incoming: quinn::Incoming,
    mut admitted: Admitted,
    backend: Backend,
    edge: Arc<Edge>,
    links: Option<Links>,
    shutdown: CancellationToken,
) {
    let remote = incoming.remote_address();
    let span = info_span!("connection", %remote);
    async move {
        // `admitted` lives as long as this task: the connection counts until it ends.
        let handshake = incoming.await;
        admitted.handshake_done();
        let connection = match handshake {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "handshake failed");
                return;
            }
        };
        if link_alpn(&connection).is_some() {
            match links {
                Some(links) => links.accept(connection),
                None => connection.close(close_code::REFUSED.into(), b"no cluster links here"),
            }
            return;
        }
        let Authenticated { caller, key_hash } = match tokio::time::timeout(
            edge.settings.hello_timeout,
            hello(&connection, remote, &backend, &edge),
        )
        .await
        {
            Ok(Some(authenticated)) => authenticated,
            Ok(None) => return,
            Err(_) => {
                debug!("no hello in time");
                connection.close(ResetCode::HelloRequired.code().into(), b"hello timed out");
                return;
            }
        };
        debug!(role = ?caller.role, key = %caller.key_id, "client authenticated");
        let _open = catalog::OpenConnection::open();
        let streams = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = connection.accept_bi() => accepted,
            };
            match accepted {
                Ok((send, recv)) => {
                    streams.spawn(serve_stream(
                        send,
                        recv,
                        backend.clone(),
                        caller.clone(),
                        key_hash,
                        edge.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    debug!(reason = %e, "connection ended");
                    break;
                }
            }
        }
        streams.close();
        streams.wait().await;
        if shutdown.is_cancelled() {
            connection.close(ResetCode::ShuttingDown.code().into(), b"shutting down");
        }
    }
    .instrument(span)
    .await
}

/// Runs the hello on the connection's first stream; returns who the client is, or
/// `None` after answering a refusal and closing the connection.
///
/// The hello is read with its own small limit ([`FrameLimit::HELLO`]) before anything
/// else: nobody is authenticated yet, so an announced length above it is refused
/// without reading on, and the whole exchange is bounded by the hello timeout.
async fn hello(
    connection: &quinn::Connection,
    remote: SocketAddr,
    backend: &Backend,
    edge: &Edge,
) -> Option<Authenticated> {
    let settings = &edge.settings;
    let (mut send, mut recv) = connection.accept_bi().await.ok()?;
    let mut payload = Vec::new();
    let read = read_frame(
        &mut recv,
        FrameLimit::HELLO,
        settings.hello_timeout,
        &mut payload,
    )
    .await;
    let outcome = match read {
        Ok(true) => authenticate(&payload, remote, backend, edge).await,
        Ok(false) => Err(ErrorCode::invalid("hello", "stream ended before the hello")),
        Err(e) => Err(ErrorCode::invalid("hello", e.to_string())),
    };
    let mut out = Vec::new();
    let reply: Result<&Welcome, ErrorCode> = outcome
        .as_ref()
        .map(|(welcome, _)| welcome)
        .map_err(Clone::clone);
    encode_value(&reply, FrameLimit::HELLO_ANSWER, &mut out).ok()?;
    let written = send.write_all(&out).await.is_ok() && send.finish().is_ok();
    match outcome {
        Ok((welcome, authenticated)) if written => {
            debug!(version = welcome.version, "hello done");
            Some(authenticated)
        }
        refused => {
            debug!(?refused, "hello refused");
            let _ = tokio::time::timeout(HELLO_FLUSH_TIMEOUT, send.stopped()).await;
            connection.close(ResetCode::HelloRequired.code().into(), b"hello refused");
            None
        }
    }
}

/// A key this node does not hold: refused at once when no member knew it moments ago,
/// rate-limited per source address, otherwise looked up at the members (and cached
/// when none knows it), so that cycling made-up keys cannot make every hello a
/// cluster-wide fan-out.
async fn unknown_key_role(
    backend: &Backend,
    edge: &Edge,
    remote: SocketAddr,
    api_key: &str,
) -> Result<Role, ErrorCode> {
    if backend.peers.is_none() {
        // A single node asks nobody: there is nothing to cache or throttle.
        return peer_role(backend, api_key).await;
    }
    let key_hash = chorus_actors::store::key_hash(api_key);
    let lookup = lock(&edge.key_lookups).handle_unknown(Instant::now(), remote.ip(), key_hash);
    match lookup {
        Lookup::KnownUnknown => {
            catalog::record_unknown_key("cached");
            Err(ErrorCode::Unauthorized)
        }
        Lookup::Throttled { retry_after } => {
            catalog::record_unknown_key("throttled");
            Err(ErrorCode::RateLimited {
                retry_after_ms: retry_after.as_millis().try_into().unwrap_or(u64::MAX),
            })
        }
        Lookup::Ask => {
            catalog::record_unknown_key("asked");
            let role = peer_role(backend, api_key).await;
            if role == Err(ErrorCode::Unauthorized)
                && !edge.limits.key_lookups.negative_ttl.is_zero()
            {
                lock(&edge.key_lookups).handle_refused(Instant::now(), key_hash);
            }
            role
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A key this node does not hold yet (keys reach every member within moments of
/// their creation, so this is the fallback) may have been created on another member:
/// the role the peers that know it give (only its SHA-256 crosses the link). A peer
/// that knows it as revoked makes it `Unauthorized`, whatever the others say; no peer
/// knowing it is `Unauthorized`; a peer that could not be asked might know it, so then
/// the answer is `Unavailable` (the client retries) rather than a wrong refusal.
async fn peer_role(backend: &Backend, api_key: &str) -> Result<Role, ErrorCode> {
    let key_hash = chorus_actors::store::key_hash(api_key);
    let answers = ask_every_member(backend, Forward::Authenticate { key_hash }).await;
    if answers.replies.contains(&ForwardReply::Revoked) {
        return Err(ErrorCode::Unauthorized);
    }
    let role = answers.replies.iter().find_map(|reply| match reply {
        ForwardReply::Role(role) => *role,
        _ => None,
    });
    match role {
        Some(role) => Ok(role),
        None if answers.unreachable.is_empty() => Err(ErrorCode::Unauthorized),
        None => Err(ErrorCode::Unavailable {
            reason: format!(
                "the key is not known here and {} could not be asked",
                list(&answers.unreachable)
            ),
        }),
    }
}

/// Checks the hello's version and key; the welcome to send and who the client is.
async fn authenticate(
    payload: &[u8],
    remote: SocketAddr,
    backend: &Backend,
    edge: &Edge,
) -> Result<(Welcome, Authenticated), ErrorCode> {
    let hello = decode_hello(payload)?;
    let key_hash = chorus_actors::store::key_hash(&hello.api_key);
    // Keys are replicated to every member: one held here is decided here, and one known
    // here as revoked is refused without asking anyone.
    let role = match backend.node.key_status(key_hash).await? {
        KeyStatus::Active(role) => role,
        KeyStatus::Revoked => return Err(ErrorCode::Unauthorized),
        KeyStatus::Unknown => unknown_key_role(backend, edge, remote, &hello.api_key).await?,
    };
    let node = &backend.node;
    let welcome = Welcome {
        version: hello.version,
        node: node.node_id().clone(),
        role,
        max_frame: edge.settings.frame_limit.get(),
    };
    let caller = Caller::for_key(&hello.api_key, role);
    Ok((welcome, Authenticated { caller, key_hash }))
}

/// Who a connection serves after its hello: the caller, and the SHA-256 of its key,
/// checked against the revocations before each request.
#[derive(Debug)]
struct Authenticated {
    caller: Caller,
    key_hash: KeyHash,
}
