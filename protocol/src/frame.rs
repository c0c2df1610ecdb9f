//! Framing: a `u32` big-endian payload length, then the payload.

use bincode::{Decode, Encode};

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// The default largest payload, 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;
/// The largest payload any configuration may allow, 16 MiB; also bincode's allocation
/// limit while decoding, so no frame can make a decoder allocate more.
pub const MAX_FRAME_CEILING: u32 = 16 << 20;
/// The smallest payload limit a configuration may set.
const MIN_FRAME_LIMIT: u32 = 4 << 10;
/// The largest hello payload, 4 KiB: a version, an API key and a client name. A hello
/// is read before anyone is authenticated, so it gets a limit of its own, far below the
/// frame limit.
pub const HELLO_MAX_BYTES: u32 = 4 << 10;
/// The largest answer to a hello, 64 KiB: a welcome, or a refusal whose reason may
/// name members. A client reads it before it knows the server's frame limit.
pub const HELLO_ANSWER_MAX_BYTES: u32 = 64 << 10;

/// A validated limit on payload size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimit(u32);

impl FrameLimit {
    /// A limit of `bytes`, which must lie in 4 KiB..=16 MiB.
    pub fn new(bytes: u32) -> Result<Self, String> {
        if (MIN_FRAME_LIMIT..=MAX_FRAME_CEILING).contains(&bytes) {
            Ok(FrameLimit(bytes))
        } else {
            Err(format!(
                "{bytes} bytes is outside {MIN_FRAME_LIMIT}..={MAX_FRAME_CEILING}"
            ))
        }
    }

    /// The limit of a hello payload ([`HELLO_MAX_BYTES`]).
    pub const HELLO: FrameLimit = FrameLimit(HELLO_MAX_BYTES);

    /// The limit of the answer to a hello ([`HELLO_ANSWER_MAX_BYTES`]).
    pub const HELLO_ANSWER: FrameLimit = FrameLimit(HELLO_ANSWER_MAX_BYTES);

    /// The limit in bytes.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for FrameLimit {
    fn default() -> Self {
        FrameLimit(DEFAULT_MAX_FRAME)
    }
}

/// A frame that cannot be read. The stream it came on cannot be trusted to stay in
/// step any more: the reader resets it with the matching [`ResetCode`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        limit: u32,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The payload is not the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The code to reset the stream with.
    pub fn reset_code(&self) -> ResetCode {
        match self {
            FrameError::TooLarge { .. } => ResetCode::FrameTooLarge,
            FrameError::Truncated => ResetCode::Truncated,
            FrameError::Malformed(_) => ResetCode::Malformed,
        }
    }
}

/// Application error codes for resetting a stream or closing a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
#[repr(u32)]
pub enum ResetCode {
    /// Orderly close.
    Done = 0,
    /// A frame over the size limit.
    FrameTooLarge = 1,
    /// A frame cut short by the end of the stream.
    Truncated = 2,
    /// A payload that does not decode and carries no request id to answer.
    Malformed = 3,
    /// The connection did not open with a valid hello.
    HelloRequired = 4,
    /// The server is shutting down.
    ShuttingDown = 5,
    /// Too many requests in flight on the stream.
    Overloaded = 6,
    /// A frame began but did not arrive whole within the frame deadline.
    FrameTimeout = 7,
}

impl ResetCode {
    /// The code as sent on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// A short stable name for the code, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetCode::Done => "done",
            ResetCode::FrameTooLarge => "frame_too_large",
            ResetCode::Truncated => "truncated",
            ResetCode::Malformed => "malformed",
            ResetCode::HelloRequired => "hello_required",
            ResetCode::ShuttingDown => "shutting_down",
            ResetCode::Overloaded => "overloaded",
            ResetCode::FrameTimeout => "frame_timeout",
        }
    }

    /// The code received on the wire, if known.
    pub fn from_code(code: u64) -> Option<Self> {
        [
            ResetCode::Done,
            ResetCode::FrameTooLarge,
            ResetCode::Truncated,
            ResetCode::Malformed,
            ResetCode::HelloRequired,
            ResetCode::ShuttingDown,
            ResetCode::Overloaded,
            ResetCode::FrameTimeout,
        ]
        .into_iter()
        .find(|c| u64::from(c.code()) == code)
    }
}

/// Reads a length prefix and checks it against the limit before anything is allocated.
pub fn read_frame_len(
    header: [u8; FRAME_HEADER_LEN],
    limit: FrameLimit,
) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > limit.get() {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            limit: limit.get(),
        });
    }
    Ok(len as usize)
}
