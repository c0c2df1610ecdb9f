//! One authenticated connection: the QUIC handshake, the hello, and the pool of
//! pipelined request streams, each replaced when it fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chorus_protocol::{
    FRAME_HEADER_LEN, FrameLimit, Hello, PROTOCOL_VERSION, ResetCode, Welcome, decode_hello_answer,
    encode_value,
};
use quinn::VarInt;
use tracing::{Instrument, debug, info, info_span};

use crate::config::{ClientConfig, Credentials};
use crate::error::ClientError;
use crate::link::Connector;
use crate::pending::FrameBuffer;
use crate::pipeline::{Pipeline, PipelineLimits};

/// The name the client gives itself in the hello.
const CLIENT_NAME: &str = concat!("chorus-client/", env!("CARGO_PKG_VERSION"));

/// A connection past its hello, with its stream pool.
pub(crate) struct Session {
    connection: quinn::Connection,
    welcome: Welcome,
    /// The request frame limit: ours and the server's, whichever is smaller.
    request_limit: FrameLimit,
    limits: PipelineLimits,
    slots: Vec<Slot>,
    next_slot: AtomicUsize,
}

/// One place in the stream pool.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<Pipeline>>>,
    /// Held while a replacement stream is opened, so that callers racing on a dead
    /// stream open one replacement, not one each.
    opening: tokio::sync::Mutex<()>,
}

impl Session {
    /// Connects to `addr`, verifies that the server's certificate names `server_name` and
    /// says hello; bounded by the connect timeout.
    pub(crate) async fn connect(
        connector: &Connector,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Session, ClientError> {
        let Connector {
            endpoint,
            quic,
            credentials,
            config,
        } = connector;
        let attempt = async {
            let connecting = endpoint
                .connect_with(quic.clone(), addr, server_name)
                .map_err(|e| ClientError::Connect {
                    addr,
                    reason: e.to_string(),
                })?;
            let connection = connecting.await.map_err(|e| match ClientError::from(e) {
                ClientError::ConnectionLost { reason } => ClientError::Connect { addr, reason },
                other => other,
            })?;
            let welcome = hello(&connection, credentials, config).await;
            if welcome.is_err() {
                connection.close(
                    VarInt::from_u32(ResetCode::HelloRequired.code()),
                    b"hello failed",
                );
            }
            Ok::<_, ClientError>((connection, welcome?))
        };
        let span = info_span!("connect", %addr, %server_name);
        let (connection, welcome) =
            tokio::time::timeout(config.connect_timeout, attempt.instrument(span))
                .await
                .map_err(|_| ClientError::Connect {
                    addr,
                    reason: format!("no answer within {:?}", config.connect_timeout),
                })??;
        let server_limit = FrameLimit::new(welcome.max_frame).map_err(|e| {
            ClientError::Protocol(format!("server frame limit {}: {e}", welcome.max_frame))
        })?;
        let request_limit = smaller(server_limit, config.max_request_frame);
        // Responses are read within what the server announced it sends at most (and
        // what this client accepts): a larger frame is a protocol error, and no
        // response makes the decoder allocate more.
        let response_limit = smaller(server_limit, config.max_response_frame);
        info!(%addr, node = %welcome.node, role = %welcome.role, "connected");
        Ok(Session {
            connection,
            welcome,
            request_limit,
            limits: PipelineLimits {
                max_in_flight: config.max_in_flight_per_stream.get(),
                max_response_frame: response_limit,
            },
            slots: (0..config.streams_per_connection.get())
                .map(|_| Slot::default())
                .collect(),
            next_slot: AtomicUsize::new(0),
        })
    }

    /// Whether the connection is still up.
    pub(crate) fn is_alive(&self) -> bool {
        self.connection.close_reason().is_none()
    }

    /// The server's hello answer.
    pub(crate) fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The largest request payload the server accepts.
    pub(crate) fn request_limit(&self) -> FrameLimit {
        self.request_limit
    }

    /// A live stream from the pool, round-robin; a failed one is replaced first.
    pub(crate) async fn pipeline(&self) -> Result<Arc<Pipeline>, ClientError> {
        let index = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[index];
        if let Some(pipeline) = slot.live() {
            return Ok(pipeline);
        }
        let _opening = slot.opening.lock().await;
        if let Some(pipeline) = slot.live() {
            return Ok(pipeline);
        }
        let (send, recv) = self.connection.open_bi().await?;
        debug!(slot = index, stream = %send.id(), "request stream opened");
        let pipeline = Arc::new(Pipeline::start(send, recv, self.limits));
        *slot.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(pipeline.clone());
        Ok(pipeline)
    }

    /// Closes the connection; requests in flight fail with [`ClientError::Closed`].
    pub(crate) fn close(&self) {
        self.connection
            .close(VarInt::from_u32(ResetCode::Done.code()), b"client closed");
    }
}

fn smaller(a: FrameLimit, b: FrameLimit) -> FrameLimit {
    if a.get() < b.get() { a } else { b }
}

impl Slot {
    fn live(&self) -> Option<Arc<Pipeline>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|p| p.is_open()).cloned()
    }
}

/// Sends the hello on a stream of its own and reads the server's answer.
async fn hello(
    connection: &quinn::Connection,
    credentials: &Credentials,
    config: &ClientConfig,
) -> Result<Welcome, ClientError> {
    let (mut send, mut recv) = connection.open_bi().await?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        api_key: credentials.api_key.clone(),
        client: CLIENT_NAME.to_string(),
    };
    let mut frame = Vec::new();
    encode_value(&hello, config.max_request_frame, &mut frame).map_err(|e| {
        ClientError::InvalidConfig(format!("api_key: the hello does not fit a frame: {e}"))
    })?;
    send.write_all(&frame).await?;
    let _ = send.finish();

    // The answer is read before the server's frame limit is known: the hello answer
    // has a small limit of its own.
    let limit = FrameLimit::HELLO_ANSWER;
    let bytes = recv
        .read_to_end(limit.get() as usize + FRAME_HEADER_LEN)
        .await
        .map_err(|e| match e {
            quinn::ReadToEndError::Read(e) => ClientError::from(e),
            quinn::ReadToEndError::TooLong => {
                ClientError::Protocol("hello answer exceeds the frame limit".into())
            }
        })?;
    let mut buffer = FrameBuffer::default();
    buffer.push(&bytes);
    let payload = buffer
        .next_frame(limit)
        .map_err(|e| ClientError::bad_frame(&e))?
        .ok_or_else(|| ClientError::Protocol("hello answer truncated".into()))?;
    let answer = decode_hello_answer(payload)
        .map_err(|e| ClientError::Protocol(format!("hello answer: {e}")))?;
    answer.map_err(ClientError::Server)
}
