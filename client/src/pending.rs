//! The pure bookkeeping of one pipelined stream: the requests awaiting a response, keyed
//! by request id, and the reassembly of response frames from the bytes of the stream.
//! No IO here: the pipeline's tasks feed it and act on what it returns.

use std::collections::HashMap;

use chorus_protocol::{FRAME_HEADER_LEN, FrameError, FrameLimit, read_frame_len};

use crate::error::ClientError;

/// The requests of one stream awaiting a response. `W` is whatever wakes the caller (a
/// oneshot sender in the pipeline, a plain value in tests).
///
/// Once closed, with the error that ended the stream, it refuses new requests with that
/// error: a request registered after the stream died would otherwise wait forever.
#[derive(Debug)]
pub(crate) struct PendingMap<W> {
    waiters: HashMap<u64, W>,
    closed: Option<ClientError>,
}

impl<W> PendingMap<W> {
    /// An empty, open map.
    pub(crate) fn new() -> Self {
        PendingMap {
            waiters: HashMap::new(),
            closed: None,
        }
    }

    /// Registers a request; fails with the stream's error if it is closed.
    pub(crate) fn insert(&mut self, request_id: u64, waiter: W) -> Result<(), ClientError> {
        if let Some(error) = &self.closed {
            return Err(error.clone());
        }
        let previous = self.waiters.insert(request_id, waiter);
        debug_assert!(previous.is_none(), "request id {request_id} reused");
        Ok(())
    }

    /// The waiter of the request a response answers, removed; `None` for an id nobody
    /// waits for (a request that timed out or was cancelled).
    pub(crate) fn complete(&mut self, request_id: u64) -> Option<W> {
        self.waiters.remove(&request_id)
    }

    /// Forgets a request whose caller stopped waiting.
    pub(crate) fn abandon(&mut self, request_id: u64) {
        self.waiters.remove(&request_id);
    }

    /// Closes the map with the error that ended the stream and hands back every waiter
    /// to be failed with it. Only the first error is kept: later ones are consequences.
    pub(crate) fn close(&mut self, error: ClientError) -> (ClientError, Vec<W>) {
        let error = self.closed.get_or_insert(error).clone();
        let waiters = self.waiters.drain().map(|(_, w)| w).collect();
        (error, waiters)
    }

    /// Whether the stream has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Requests awaiting a response.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }
}

/// Reassembles length-prefixed frames from the chunks a stream delivers, checking each
/// length against the limit before the payload is buffered.
#[derive(Debug, Default)]
pub(crate) struct FrameBuffer {
    bytes: Vec<u8>,
    /// Start of the first unconsumed byte.
    start: usize,
}

impl FrameBuffer {
    /// Appends bytes read from the stream.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(chunk);
    }

    /// The next complete payload, if one has arrived; an error if the next length prefix
    /// exceeds `limit` (the stream is then out of step for good).
    pub(crate) fn next_frame(&mut self, limit: FrameLimit) -> Result<Option<&[u8]>, FrameError> {
        let available = &self.bytes[self.start..];
        let Some(header) = available.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = read_frame_len(*header, limit)?;
        if available.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let payload_start = self.start + FRAME_HEADER_LEN;
        self.start = payload_start + len;
        Ok(Some(&self.bytes[payload_start..self.start]))
    }

    /// Whether bytes of an incomplete frame are buffered (so an end of stream now
    /// truncates a frame).
    pub(crate) fn has_partial_frame(&self) -> bool {
        self.start < self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{ResetCode, encode_value};

    use super::*;

    #[test]
    fn responses_in_any_order_reach_their_own_waiter() {
        let mut pending = PendingMap::new();
        for id in [1u64, 2, 3] {
            pending.insert(id, format!("caller {id}")).unwrap();
        }
        assert_eq!(pending.complete(3).as_deref(), Some("caller 3"));
        assert_eq!(pending.complete(1).as_deref(), Some("caller 1"));
        assert_eq!(pending.complete(1), None, "a response is delivered once");
        assert_eq!(pending.complete(2).as_deref(), Some("caller 2"));
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn a_response_for_an_abandoned_request_finds_nobody() {
        let mut pending = PendingMap::new();
        pending.insert(7, ()).unwrap();
        pending.abandon(7);
        assert_eq!(pending.complete(7), None);
    }

    #[test]
    fn closing_fails_every_waiter_and_refuses_new_ones() {
        let mut pending = PendingMap::new();
        pending.insert(1, "a").unwrap();
        pending.insert(2, "b").unwrap();
        let reset = ClientError::reset(ResetCode::Malformed);
        let (error, mut waiters) = pending.close(reset.clone());
        waiters.sort();
        assert_eq!((error, waiters), (reset.clone(), vec!["a", "b"]));
        assert!(pending.is_closed());
        assert_eq!(pending.insert(3, "c"), Err(reset.clone()));
        // A later failure (the connection dropping) does not replace the first cause.
        let (error, waiters) = pending.close(ClientError::Timeout);
        assert_eq!((error, waiters.len()), (reset, 0));
    }

    fn frame(payload: &u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(payload, FrameLimit::default(), &mut out).unwrap();
        out
    }

    #[test]
    fn frames_split_across_chunks_are_reassembled() {
        let mut bytes = frame(&1);
        bytes.extend(frame(&300));
        bytes.extend(frame(&u64::MAX));
        let mut buffer = FrameBuffer::default();
        let mut decoded = Vec::new();
        // One byte at a time: the worst split there is.
        for byte in bytes {
            buffer.push(&[byte]);
            while let Some(payload) = buffer.next_frame(FrameLimit::default()).unwrap() {
                decoded.push(chorus_protocol::decode_value::<u64>(payload).unwrap());
            }
        }
        assert_eq!(decoded, vec![1, 300, u64::MAX]);
        assert!(!buffer.has_partial_frame());
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_payload_arrives() {
        let limit = FrameLimit::new(4096).unwrap();
        let mut buffer = FrameBuffer::default();
        buffer.push(&5000u32.to_be_bytes());
        assert!(matches!(
            buffer.next_frame(limit),
            Err(FrameError::TooLarge { len: 5000, .. })
        ));
    }

    #[test]
    fn a_partial_frame_is_reported() {
        let mut buffer = FrameBuffer::default();
        buffer.push(&frame(&9)[..3]);
        assert_eq!(buffer.next_frame(FrameLimit::default()), Ok(None));
        assert!(buffer.has_partial_frame());
    }
}
