//! Reading frames from QUIC streams: bounded in size before anything is allocated, in
//! memory by the bytes actually received, and in time once a frame has begun.

use std::time::Duration;

use chorus_protocol::{FRAME_HEADER_LEN, FrameError, FrameLimit, read_frame_len};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The bytes on the stream are not a valid frame; reset the stream with its code.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame began but did not arrive whole within the deadline (a slow loris);
    /// reset the stream with `ResetCode::FrameTimeout`.
    #[error("frame not complete within {0:?} of its first byte")]
    TimedOut(Duration),
    /// The stream or connection failed (reset by the peer, connection lost).
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame's payload into `payload`. Returns `Ok(false)` when the stream ended
/// cleanly at a frame boundary.
///
/// Waiting for a frame to begin is unbounded here (an idle stream is the connection's
/// idle timeout's business), but once its first byte has arrived the whole frame must
/// arrive within `deadline`. The payload buffer grows with the bytes received, never
/// with the declared length: a peer that announces the limit and sends nothing more
/// costs a few bytes, not the limit.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: FrameLimit,
    deadline: Duration,
    payload: &mut Vec<u8>,
) -> Result<bool, ReadFrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    if reader.read(&mut header[..1]).await? == 0 {
        return Ok(false);
    }
    match tokio::time::timeout(deadline, read_rest(reader, &mut header, limit, payload)).await {
        Ok(read) => read.map(|()| true),
        Err(_) => Err(ReadFrameError::TimedOut(deadline)),
    }
}

/// The rest of a frame whose first header byte is in `header[0]`.
async fn read_rest<R: AsyncRead + Unpin>(
    reader: &mut R,
    header: &mut [u8; FRAME_HEADER_LEN],
    limit: FrameLimit,
    payload: &mut Vec<u8>,
) -> Result<(), ReadFrameError> {
    if read_full(reader, &mut header[1..]).await? < FRAME_HEADER_LEN - 1 {
        return Err(FrameError::Truncated.into());
    }
    let len = read_frame_len(*header, limit)?;
    payload.clear();
    // `read_to_end` grows the buffer as bytes come (doubling from a small start), so
    // the allocation follows what the peer really sent.
    let read = reader.take(len as u64).read_to_end(payload).await?;
    if read < len {
        return Err(FrameError::Truncated.into());
    }
    Ok(())
}

/// Fills `buf` unless the stream ends first; returns how many bytes were read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn limit() -> FrameLimit {
        FrameLimit::new(4096).unwrap()
    }

    #[tokio::test]
    async fn frames_in_a_row_then_clean_end() {
        let mut bytes = Vec::new();
        for payload in [&b"abc"[..], b"", b"hello"] {
            bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            bytes.extend_from_slice(payload);
        }
        let mut reader = &bytes[..];
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while read_frame(&mut reader, limit(), DEADLINE, &mut buf)
            .await
            .unwrap()
        {
            seen.push(buf.clone());
        }
        assert_eq!(seen, vec![b"abc".to_vec(), vec![], b"hello".to_vec()]);
    }

    #[tokio::test]
    async fn a_cut_header_or_payload_is_truncated() {
        for bytes in [&[0u8, 0][..], &[0, 0, 0, 5, b'a', b'b'][..]] {
            let mut reader = bytes;
            let err = read_frame(&mut reader, limit(), DEADLINE, &mut Vec::new())
                .await
                .unwrap_err();
            assert!(
                matches!(err, ReadFrameError::Frame(FrameError::Truncated)),
                "{err:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_the_payload() {
        let bytes = 1_000_000u32.to_be_bytes();
        let mut reader = &bytes[..];
        let err = read_frame(&mut reader, limit(), DEADLINE, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ReadFrameError::Frame(FrameError::TooLarge { len: 1_000_000, .. })
        ));
    }

    #[tokio::test]
    async fn a_frame_that_stalls_after_its_first_byte_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client.write_all(&[0, 0, 1, 0, b'x']).await.unwrap();
        let err = read_frame(
            &mut server,
            limit(),
            Duration::from_millis(50),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ReadFrameError::TimedOut(_)), "{err:?}");
        drop(client);
    }

    #[tokio::test]
    async fn the_buffer_follows_the_bytes_received_not_the_declared_length() {
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        // Announces 4,000 bytes, sends 10, then ends.
        client.write_all(&4000u32.to_be_bytes()).await.unwrap();
        client.write_all(&[7; 10]).await.unwrap();
        drop(client);
        let mut payload = Vec::new();
        let err = read_frame(&mut server, limit(), DEADLINE, &mut payload)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadFrameError::Frame(FrameError::Truncated)));
        assert!(payload.capacity() < 1000, "{}", payload.capacity());
    }
}
