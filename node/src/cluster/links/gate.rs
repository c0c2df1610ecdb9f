//! The name gate: the bytes a peer sends on a link reach ractor_cluster's session only
//! once the name the peer gives in the session handshake has been checked against the
//! TLS certificate it presented (or, for a link this node dialed, against the node it
//! dialed).
//!
//! ractor_cluster learns the peer's name from the first handshake frame that carries
//! one (the client's `NameMessage`, or the server's `Challenge`), and delivers remote
//! calls as soon as the cookie handshake succeeds: checking the name in a session event
//! afterwards leaves a window in which an impostor holding the cookie and any cluster
//! certificate can reach this node's actors. The gate closes that window below the
//! session: frames are parsed as they arrive (`u64` big-endian length, then a protobuf
//! `NetworkMessage`); handshake frames without a name pass, the named frame passes only
//! if the name checks out, and anything else before it (a remote call, a control
//! message, an oversized frame) ends the stream with an error, so the session stops
//! before any message is delivered. After the named frame the stream is passed through
//! untouched.
//!
//! [`scan`] is the pure part; [`GatedRead`] is the `AsyncRead` around it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The largest handshake frame accepted before the peer's name is checked. ractor's
/// handshake frames hold a name, a connection string and a few integers: a few hundred
/// bytes. Anything larger is refused before it is buffered.
pub const MAX_HANDSHAKE_FRAME: usize = 4 * 1024;

/// Bytes of the length prefix of a ractor_cluster frame.
const LENGTH_PREFIX: usize = 8;

/// Bytes read from the peer at a time while the gate is closed.
const READ_CHUNK: usize = 1024;

/// The parts of ractor_cluster's wire schema (`meta.proto`, `auth.proto`) the gate reads.
/// The field numbers are ractor_cluster's; a oneof member is encoded as a plain field,
/// and the fields not declared here are skipped.
mod schema {
    /// `meta.NetworkMessage`: `auth = 1`, `node = 2`, `control = 3` (a oneof).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NetworkMessage {
        /// A handshake message.
        #[prost(message, optional, tag = "1")]
        pub auth: Option<AuthenticationMessage>,
    }

    /// `auth.AuthenticationMessage`: of its oneof, the two members that carry a name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthenticationMessage {
        /// The client's `NameMessage` (first frame a server receives).
        #[prost(message, optional, tag = "1")]
        pub name: Option<Named>,
        /// The server's `Challenge` (the frame that names the server to a client).
        #[prost(message, optional, tag = "4")]
        pub server_challenge: Option<Named>,
    }

    /// `auth.NameMessage` and `auth.Challenge` both carry the name as field 1.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Named {
        /// `node@host`.
        #[prost(string, tag = "1")]
        pub name: String,
    }
}

/// Why the gate ended a link's stream before the session saw the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// A frame before the name check declares more than [`MAX_HANDSHAKE_FRAME`] bytes.
    #[error("handshake frame of {0} bytes exceeds the {MAX_HANDSHAKE_FRAME}-byte limit")]
    Oversized(u64),
    /// A frame is not valid protobuf.
    #[error("handshake frame does not decode")]
    Malformed,
    /// A frame that is not part of the handshake came before the peer's name.
    #[error("a session message came before the peer named itself")]
    BeforeName,
    /// The peer gave a name its certificate does not carry.
    #[error("peer name {0:?} does not match its certificate")]
    NameMismatch(String),
}

/// How far the scan of the buffered bytes got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The first `n` bytes may go to the session; more are needed to decide the rest.
    Hold(usize),
    /// The name was accepted after the first `n` bytes: they and everything after pass.
    Open(usize),
}

/// Scans `held` (every byte read from the peer so far, the first `released` of which are
/// already known to be harmless) frame by frame, calling `check` with the name the peer
/// gives. Pure: the same bytes give the same answer.
pub fn scan(
    held: &[u8],
    mut released: usize,
    check: &dyn Fn(&str) -> bool,
) -> Result<Scan, GateError> {
    use prost::Message;
    loop {
        let rest = &held[released..];
        let Some((prefix, after)) = rest.split_first_chunk::<LENGTH_PREFIX>() else {
            return Ok(Scan::Hold(released));
        };
        let declared = u64::from_be_bytes(*prefix);
        if declared > MAX_HANDSHAKE_FRAME as u64 {
            return Err(GateError::Oversized(declared));
        }
        let len = declared as usize;
        if after.len() < len {
            return Ok(Scan::Hold(released));
        }
        let frame =
            schema::NetworkMessage::decode(&after[..len]).map_err(|_| GateError::Malformed)?;
        let end = released + LENGTH_PREFIX + len;
        let Some(auth) = frame.auth else {
            return Err(GateError::BeforeName);
        };
        match auth.name.or(auth.server_challenge) {
            Some(named) if check(&named.name) => return Ok(Scan::Open(end)),
            Some(named) => return Err(GateError::NameMismatch(named.name)),
            // A status, a challenge reply or an ack: part of the handshake, no name.
            None => released = end,
        }
    }
}

/// The check a gate applies to the name a peer gives (`node@host`).
pub type NameCheck = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// An `AsyncRead` that holds the peer's bytes back until [`scan`] lets them through.
pub struct GatedRead<R> {
    inner: R,
    check: Option<NameCheck>,
    held: Vec<u8>,
    /// Bytes of `held` that may go to the reader.
    released: usize,
    /// Bytes of `held` already given to the reader.
    given: usize,
}

impl<R> GatedRead<R> {
    /// Gates `inner` with `check`.
    pub fn new(inner: R, check: NameCheck) -> Self {
        GatedRead {
            inner,
            check: Some(check),
            held: Vec::new(),
            released: 0,
            given: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for GatedRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.given < this.released {
                let n = (this.released - this.given).min(out.remaining());
                out.put_slice(&this.held[this.given..this.given + n]);
                this.given += n;
                if this.given == this.held.len() && this.check.is_none() {
                    // Fully open and drained: no buffer kept for the session's life.
                    this.held = Vec::new();
                    this.released = 0;
                    this.given = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let Some(check) = this.check.as_ref() else {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            };
            let mut chunk = [0u8; READ_CHUNK];
            let mut chunk = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                // The peer closed before naming itself: end of stream for the session.
                return Poll::Ready(Ok(()));
            }
            this.held.extend_from_slice(chunk.filled());
            match scan(&this.held, this.released, check.as_ref()) {
                Ok(Scan::Hold(released)) => this.released = released,
                Ok(Scan::Open(_)) => {
                    this.released = this.held.len();
                    this.check = None;
                }
                Err(error) => {
                    this.check = Some(Box::new(|_| false));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        error,
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;
    use tokio::io::AsyncReadExt;

    use super::schema::{AuthenticationMessage, Named, NetworkMessage};
    use super::*;

    fn frame(message: &NetworkMessage) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = (body.len() as u64).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn name_frame(name: &str) -> Vec<u8> {
        frame(&NetworkMessage {
            auth: Some(AuthenticationMessage {
                name: Some(Named { name: name.into() }),
                server_challenge: None,
            }),
        })
    }

    fn challenge_frame(name: &str) -> Vec<u8> {
        frame(&NetworkMessage {
            auth: Some(AuthenticationMessage {
                name: None,
                server_challenge: Some(Named { name: name.into() }),
            }),
        })
    }

    /// A server status frame: `auth { server_status (field 2) { status = 0 } }`.
    fn status_frame() -> Vec<u8> {
        let body = [0x0a, 0x02, 0x12, 0x00];
        let mut out = (body.len() as u64).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// A remote call frame: `node (field 2) { ... }`.
    fn call_frame() -> Vec<u8> {
        let body = [0x12, 0x02, 0x0a, 0x00];
        let mut out = (body.len() as u64).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn only(name: &'static str) -> impl Fn(&str) -> bool {
        move |claimed| claimed == name
    }

    #[test]
    fn the_right_name_opens_the_gate_after_its_frame() {
        let first = name_frame("node-a@chorus");
        let mut held = first.clone();
        held.extend_from_slice(&call_frame());
        assert_eq!(
            scan(&held, 0, &only("node-a@chorus")),
            Ok(Scan::Open(first.len()))
        );
    }

    #[test]
    fn a_client_opens_on_the_servers_challenge_after_its_status() {
        let mut held = status_frame();
        let status = held.len();
        assert_eq!(scan(&held, 0, &only("s@chorus")), Ok(Scan::Hold(status)));
        held.extend_from_slice(&challenge_frame("s@chorus"));
        assert_eq!(
            scan(&held, status, &only("s@chorus")),
            Ok(Scan::Open(held.len()))
        );
    }

    #[test]
    fn a_wrong_name_a_call_before_the_name_and_oversized_frames_are_refused() {
        assert_eq!(
            scan(&name_frame("node-b@chorus"), 0, &only("node-a@chorus")),
            Err(GateError::NameMismatch("node-b@chorus".into()))
        );
        assert_eq!(
            scan(&call_frame(), 0, &only("node-a@chorus")),
            Err(GateError::BeforeName)
        );
        let huge = (MAX_HANDSHAKE_FRAME as u64 + 1).to_be_bytes();
        assert_eq!(
            scan(&huge, 0, &only("x")),
            Err(GateError::Oversized(MAX_HANDSHAKE_FRAME as u64 + 1))
        );
        let mut garbage = 3u64.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(scan(&garbage, 0, &only("x")), Err(GateError::Malformed));
    }

    #[test]
    fn partial_frames_are_held() {
        let frame = name_frame("node-a@chorus");
        for cut in 0..frame.len() {
            assert_eq!(
                scan(&frame[..cut], 0, &only("node-a@chorus")),
                Ok(Scan::Hold(0))
            );
        }
    }

    #[tokio::test]
    async fn the_reader_passes_everything_after_the_right_name_and_nothing_after_a_wrong_one() {
        let mut stream = name_frame("node-a@chorus");
        stream.extend_from_slice(&call_frame());
        stream.extend_from_slice(b"anything at all");
        let mut gated = GatedRead::new(&stream[..], Box::new(only("node-a@chorus")));
        let mut got = Vec::new();
        gated.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, stream);

        let mut refused = GatedRead::new(&stream[..], Box::new(only("node-z@chorus")));
        let mut got = Vec::new();
        let error = refused.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            got.is_empty(),
            "no byte of a refused peer reaches the session"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_never_open_for_a_name_not_checked(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            if let Ok(Scan::Open(end)) = scan(&bytes, 0, &|_| false) {
                prop_assert!(false, "opened at {end} without a name");
            }
        }
    }
}
