//! Reading and writing frames on QUIC streams.

use chorus_protocol::{FRAME_HEADER_LEN, FrameError, FrameLimit, read_frame_len};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The bytes on the stream are not a valid frame; reset the stream with its code.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed (reset by the peer, connection lost).
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame's payload into `payload`. Returns `Ok(false)` when the stream ended
/// cleanly at a frame boundary.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: FrameLimit,
    payload: &mut Vec<u8>,
) -> Result<bool, ReadFrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match read_full(reader, &mut header).await? {
        0 => return Ok(false),
        FRAME_HEADER_LEN => {}
        _ => return Err(FrameError::Truncated.into()),
    }
    let len = read_frame_len(header, limit)?;
    payload.clear();
    payload.resize(len, 0);
    if read_full(reader, payload).await? < len {
        return Err(FrameError::Truncated.into());
    }
    Ok(true)
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
        while read_frame(&mut reader, limit(), &mut buf).await.unwrap() {
            seen.push(buf.clone());
        }
        assert_eq!(seen, vec![b"abc".to_vec(), vec![], b"hello".to_vec()]);
    }

    #[tokio::test]
    async fn a_cut_header_or_payload_is_truncated() {
        for bytes in [&[0u8, 0][..], &[0, 0, 0, 5, b'a', b'b'][..]] {
            let mut reader = bytes;
            let err = read_frame(&mut reader, limit(), &mut Vec::new())
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
        let err = read_frame(&mut reader, limit(), &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ReadFrameError::Frame(FrameError::TooLarge { len: 1_000_000, .. })
        ));
    }
}
