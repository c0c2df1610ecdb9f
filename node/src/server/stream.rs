//! One request stream: frames are read in order, requests run concurrently (bounded),
//! responses are written as they complete, tagged with their request id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_actors::{Caller, KeyHash, NodeHandle};
use chorus_protocol::{
    ClientFrameError, ErrorCode, FrameError, FrameLimit, ResetCode, ServerFrame,
    decode_client_frame, encode_value, peek_submit,
};
use tokio::io::BufReader;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, error};

use super::dispatch::{dispatch, refuse_early};
use super::frame_io::{ReadFrameError, read_frame};
use super::{Backend, Edge};
use crate::metrics::catalog;
use crate::request_id;

/// Responses gathered into one write when several are ready at once.
const WRITE_COALESCE_BYTES: usize = 64 * 1024;
/// Read buffer per stream; small frames arrive many to a read.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// The retry hint of a request refused because the node serves its cap of requests.
const OVERLOADED_RETRY_AFTER_MS: u64 = 50;
/// How long the last responses may take to be acknowledged after the stream is finished.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How the reading side of a stream ended.
enum ReadEnd {
    /// The client finished its side, or shutdown began: answer what is in flight.
    Drain { stop: Option<ResetCode> },
    /// A broken frame: reset both directions with this code.
    Broken(ResetCode),
    /// The stream or connection failed; nobody is left to answer.
    Failed,
}

/// Whether the connection's key was revoked after its hello. The key is looked up again
/// only when the node's count of revocations moved: revocations are never withdrawn, so
/// an unchanged count means nothing new, and the usual check is one atomic load.
struct Revocation {
    key_hash: KeyHash,
    seen: Option<u64>,
    revoked: bool,
}

impl Revocation {
    fn new(key_hash: KeyHash) -> Self {
        Revocation {
            key_hash,
            seen: None,
            revoked: false,
        }
    }

    fn revoked(&mut self, node: &NodeHandle) -> bool {
        self.check(node.key_revocations(), |hash| node.key_revoked(hash))
    }

    /// `revocations`: the node's count now; `is_revoked` looks the key up.
    fn check(&mut self, revocations: u64, is_revoked: impl FnOnce(&KeyHash) -> bool) -> bool {
        if !self.revoked && self.seen != Some(revocations) {
            self.seen = Some(revocations);
            self.revoked = is_revoked(&self.key_hash);
        }
        self.revoked
    }
}

/// Serves one bidirectional request stream; once the caller's key is revoked, every
/// request on it is answered `Unauthorized`.
pub async fn serve_stream(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    backend: Backend,
    caller: Caller,
    key_hash: KeyHash,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
) {
    let mut revocation = Revocation::new(key_hash);
    let settings = &edge.settings;
    let in_flight = settings.max_in_flight_per_stream;
    let (responses, to_write) = mpsc::channel::<ServerFrame>(in_flight);
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(write_responses(
        send,
        to_write,
        settings.frame_limit,
        writer_stop.clone(),
    ));
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut requests = JoinSet::new();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, recv);
    let mut payload = Vec::new();

    let end = loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break ReadEnd::Drain { stop: Some(ResetCode::ShuttingDown) },
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break ReadEnd::Drain { stop: Some(ResetCode::ShuttingDown) },
            read = read_frame(&mut reader, settings.frame_limit, edge.limits.frame_timeout, &mut payload) => read,
        };
        match read {
            Ok(true) => {}
            Ok(false) => break ReadEnd::Drain { stop: None },
            Err(ReadFrameError::Frame(e)) => {
                debug!(error = %e, "broken frame; resetting the stream");
                break ReadEnd::Broken(e.reset_code());
            }
            Err(ReadFrameError::TimedOut(deadline)) => {
                debug!(?deadline, "frame too slow; resetting the stream");
                break ReadEnd::Broken(ResetCode::FrameTimeout);
            }
            Err(ReadFrameError::Io(e)) => {
                debug!(error = %e, "stream failed");
                break ReadEnd::Failed;
            }
        }
        let revoked = revocation.revoked(&backend.node);
        // Under overload most submits are refused; their head says so without decoding
        // the body, spawning a task or sending a message.
        if !revoked
            && let Some(head) = peek_submit(&payload)
            && let Some(error) = refuse_early(&backend, &caller, &head)
        {
            refuse_at_once(
                &responses,
                head.request_id,
                "submit",
                head.tier.as_str(),
                error,
            )
            .await;
            drop(permit);
            continue;
        }
        match decode_client_frame(&payload, settings.frame_limit) {
            Ok(frame) if revoked => {
                let (kind, tier) = (frame.request.kind(), catalog::tier_label(&frame.request));
                refuse_at_once(
                    &responses,
                    frame.request_id,
                    kind,
                    tier,
                    ErrorCode::Unauthorized,
                )
                .await;
                drop(permit);
            }
            Ok(frame) => {
                // The node-wide cap: past it a request is answered at once, costing no
                // task and no actor message.
                let Ok(served) = edge.requests.clone().try_acquire_owned() else {
                    let error = ErrorCode::Overloaded {
                        tier: frame.request.tier(),
                        retry_after_ms: OVERLOADED_RETRY_AFTER_MS,
                    };
                    catalog::record_undecoded(&error);
                    let _ = responses
                        .send(ServerFrame {
                            request_id: frame.request_id,
                            result: Err(error),
                        })
                        .await;
                    drop(permit);
                    continue;
                };
                let backend = backend.clone();
                let caller = caller.clone();
                let responses = responses.clone();
                requests.spawn(async move {
                    let (kind, tier) = (frame.request.kind(), catalog::tier_label(&frame.request));
                    let started = Instant::now();
                    let id = request_id::mint();
                    let span = debug_span!("request", request_id = id, kind, tier);
                    let mut result =
                        request_id::serve(id, dispatch(&backend, &caller, frame.request))
                            .instrument(span)
                            .await;
                    if request_id::stamp(&mut result, id) {
                        error!(request_id = id, kind, tier, "internal error answered");
                    }
                    catalog::record_request(kind, tier, started.elapsed(), &result);
                    let _ = responses
                        .send(ServerFrame {
                            request_id: frame.request_id,
                            result,
                        })
                        .await;
                    drop(permit);
                    drop(served);
                });
            }
            Err(ClientFrameError::Request { request_id, error }) => {
                catalog::record_undecoded(&error);
                let _ = responses
                    .send(ServerFrame {
                        request_id,
                        result: Err(error),
                    })
                    .await;
            }
            Err(ClientFrameError::NoRequestId(reason)) => {
                debug!(%reason, "frame without a request id; resetting the stream");
                break ReadEnd::Broken(ResetCode::Malformed);
            }
        }
        // Reap finished requests so the set stays as small as what is in flight.
        while requests.try_join_next().is_some() {}
    };

    let mut recv = reader.into_inner();
    match end {
        ReadEnd::Broken(code) => {
            catalog::record_stream_reset(code);
            let _ = recv.stop(code.code().into());
            writer_stop.cancel();
            if let Ok(mut send) = writer.await {
                let _ = send.reset(code.code().into());
            }
            // Requests already accepted still complete (and are stored); only their
            // answers are lost with the stream, and ids make a retry safe.
            requests.join_all().await;
        }
        ReadEnd::Failed => {
            writer_stop.cancel();
            let _ = writer.await;
            requests.join_all().await;
        }
        ReadEnd::Drain { stop } => {
            if let Some(code) = stop {
                catalog::record_stream_reset(code);
                let _ = recv.stop(code.code().into());
            }
            requests.join_all().await;
            drop(responses);
            if let Ok(mut send) = writer.await
                && send.finish().is_ok()
            {
                let _ = tokio::time::timeout(FINISH_TIMEOUT, send.stopped()).await;
            }
        }
    }
}

/// Writes responses as they come, several to a write when more than one is ready, until
/// every sender is gone or `stop` is cancelled; hands the stream back to be finished or reset.
async fn write_responses(
    mut send: quinn::SendStream,
    mut to_write: mpsc::Receiver<ServerFrame>,
    limit: FrameLimit,
    stop: CancellationToken,
) -> quinn::SendStream {
    let mut buf = Vec::with_capacity(WRITE_COALESCE_BYTES);
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            frame = to_write.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        buf.clear();
        encode_response(&frame, limit, &mut buf);
        while buf.len() < WRITE_COALESCE_BYTES {
            match to_write.try_recv() {
                Ok(frame) => encode_response(&frame, limit, &mut buf),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            written = send.write_all(&buf) => written,
        };
        if let Err(e) = written {
            debug!(error = %e, "client stopped reading responses");
            break;
        }
    }
    send
}

/// Encodes a response; one too large for a frame is answered with a typed error instead.
fn encode_response(frame: &ServerFrame, limit: FrameLimit, buf: &mut Vec<u8>) {
    if let Err(FrameError::TooLarge { len, .. }) = encode_value(frame, limit, buf) {
        let refusal = ServerFrame {
            request_id: frame.request_id,
            result: Err(ErrorCode::invalid(
                "limit",
                format!("the response ({len} bytes) exceeds the frame limit; ask for fewer items"),
            )),
        };
        encode_value(&refusal, limit, buf).expect("a short error always fits in a frame");
    }
}

/// Answers `request_id` with `error` without serving it, counted as a request of `kind`
/// and `tier` that took no time.
async fn refuse_at_once(
    responses: &mpsc::Sender<ServerFrame>,
    request_id: u64,
    kind: &'static str,
    tier: &'static str,
    error: ErrorCode,
) {
    let result = Err(error);
    catalog::record_request(kind, tier, Duration::ZERO, &result);
    let _ = responses.send(ServerFrame { request_id, result }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_looked_up_only_when_the_revocations_moved_and_stays_revoked() {
        let mut revocation = Revocation::new([1; 32]);
        let mut lookups = 0;
        let mut check = |count, revoked| {
            revocation.check(count, |_| {
                lookups += 1;
                revoked
            })
        };
        assert!(!check(0, false), "first request: looked up");
        assert!(!check(0, true), "no new revocation: not looked up");
        assert!(
            check(1, true),
            "a new revocation: looked up, and it is this key"
        );
        assert!(check(2, false), "revoked for good");
        assert_eq!(lookups, 2);
    }
}
