//! One client connection: the hello, then a task per bidirectional stream.

use std::sync::Arc;
use std::time::Duration;

use chorus_actors::Caller;
use chorus_protocol::Role;

use crate::cluster::routing::{Forward, ForwardReply};

use super::Backend;
use chorus_protocol::{ALPN_LINK, ErrorCode, ResetCode, Welcome, decode_hello, encode_value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span};

use super::ServerSettings;
use super::fan_out::{FanOut, ask_members, list};
use super::frame_io::read_frame;
use super::stream::serve_stream;
use crate::cluster::links::{Links, close_code, negotiated_alpn};
use crate::metrics::catalog;

/// How long the hello's answer may take to reach the client before the connection closes.
const HELLO_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one incoming connection until the client closes it or shutdown ends it.
pub async fn serve_connection(
    incoming: quinn::Incoming,
    backend: Backend,
    settings: Arc<ServerSettings>,
    links: Option<Links>,
    shutdown: CancellationToken,
) {
    let remote = incoming.remote_address();
    let span = info_span!("connection", %remote);
    async move {
        let connection = match incoming.await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "handshake failed");
                return;
            }
        };
        if negotiated_alpn(&connection).as_deref() == Some(ALPN_LINK) {
            match links {
                Some(links) => links.accept(connection),
                None => connection.close(close_code::REFUSED.into(), b"no cluster links here"),
            }
            return;
        }
        let caller = match tokio::time::timeout(
            settings.hello_timeout,
            hello(&connection, &backend, &settings),
        )
        .await
        {
            Ok(Some(caller)) => caller,
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
                        settings.clone(),
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
async fn hello(
    connection: &quinn::Connection,
    backend: &Backend,
    settings: &ServerSettings,
) -> Option<Caller> {
    let (mut send, mut recv) = connection.accept_bi().await.ok()?;
    let mut payload = Vec::new();
    let outcome = match read_frame(&mut recv, settings.frame_limit, &mut payload).await {
        Ok(true) => authenticate(&payload, backend, settings).await,
        Ok(false) => Err(ErrorCode::invalid("hello", "stream ended before the hello")),
        Err(e) => Err(ErrorCode::invalid("hello", e.to_string())),
    };
    let mut out = Vec::new();
    let reply: Result<&Welcome, ErrorCode> = outcome
        .as_ref()
        .map(|(welcome, _)| welcome)
        .map_err(Clone::clone);
    encode_value(&reply, settings.frame_limit, &mut out).ok()?;
    let written = send.write_all(&out).await.is_ok() && send.finish().is_ok();
    match outcome {
        Ok((welcome, caller)) if written => {
            debug!(version = welcome.version, "hello done");
            Some(caller)
        }
        refused => {
            debug!(?refused, "hello refused");
            let _ = tokio::time::timeout(HELLO_FLUSH_TIMEOUT, send.stopped()).await;
            connection.close(ResetCode::HelloRequired.code().into(), b"hello refused");
            None
        }
    }
}

/// A key this node does not know may have been created on another member: the role
/// the first peer that knows it gives (only its SHA-256 crosses the link). No peer
/// knowing it is `Unauthorized`; a peer that could not be asked might know it, so then
/// the answer is `Unavailable` (the client retries) rather than a wrong refusal.
async fn peer_role(backend: &Backend, api_key: &str) -> Result<Role, ErrorCode> {
    let key_hash = chorus_actors::store::key_hash(api_key);
    match ask_members(
        backend,
        Forward::Authenticate { key_hash },
        |reply| match reply {
            ForwardReply::Role(role) => role,
            _ => None,
        },
    )
    .await
    {
        FanOut::Found(role) => Ok(role),
        FanOut::Missing { unreachable } if unreachable.is_empty() => Err(ErrorCode::Unauthorized),
        FanOut::Missing { unreachable } => Err(ErrorCode::Unavailable {
            reason: format!(
                "the key is not known here and {} could not be asked",
                list(&unreachable)
            ),
        }),
    }
}

/// Checks the hello's version and key; the welcome to send and who the client is.
async fn authenticate(
    payload: &[u8],
    backend: &Backend,
    settings: &ServerSettings,
) -> Result<(Welcome, Caller), ErrorCode> {
    let hello = decode_hello(payload)?;
    let role = match backend.node.authenticate(&hello.api_key).await? {
        Some(role) => role,
        None => peer_role(backend, &hello.api_key).await?,
    };
    let node = &backend.node;
    let welcome = Welcome {
        version: hello.version,
        node: node.node_id().clone(),
        role,
        max_frame: settings.frame_limit.get(),
    };
    Ok((welcome, Caller::for_key(&hello.api_key, role)))
}
