//! bincode 2 encoding of frames, with an allocation limit on every decode.
//!
//! The allocation limit of a decode is the frame limit of what is decoded (the
//! configured `max_frame_bytes`, the hello's 4 KiB, what a welcome announced), not the
//! 16 MiB ceiling: bincode decodes a string or a byte vector by allocating its declared
//! length before reading it, so with the ceiling a 10-byte frame could make a decoder
//! allocate 16 MiB. bincode 2's limit is a const generic and its `Decoder` trait is
//! sealed, so a runtime limit picks one of a ladder of configurations, one per power of
//! two from 4 KiB to 16 MiB ([`decode_value_within`]): the effective limit is the frame
//! limit rounded up to a power of two, at most twice it.

use bincode::config::{self, Configuration, Limit};
use bincode::error::DecodeError;
use bincode::{Decode, Encode};

use crate::SUPPORTED_VERSIONS;
use crate::bounded::bound_violation;
use crate::error::ErrorCode;
use crate::frame::{FRAME_HEADER_LEN, FrameError, FrameLimit, MAX_FRAME_CEILING};
use crate::message::{ClientFrame, Hello, Request, ServerFrame, Welcome};

type Config =
    Configuration<config::LittleEndian, config::Varint, Limit<{ MAX_FRAME_CEILING as usize }>>;

const CONFIG: Config = config::standard().with_limit::<{ MAX_FRAME_CEILING as usize }>();

/// Appends `value` as one frame (length prefix + payload) to `out`. Fails, leaving `out`
/// as it was, when the payload would exceed `limit`.
pub fn encode_value<T: Encode>(
    value: &T,
    limit: FrameLimit,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    if let Err(e) = bincode::encode_into_std_write(value, out, CONFIG) {
        out.truncate(start);
        return Err(FrameError::Malformed(e.to_string()));
    }
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > limit.get() as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len: len as u64,
            limit: limit.get(),
        });
    }
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes `value` as a bare payload (no length prefix), as stored on disk.
pub fn encode_payload<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, CONFIG).expect("encoding into a Vec cannot fail")
}

/// Decodes a whole payload as one `T` with the 16 MiB ceiling as allocation limit, for
/// bytes this process wrote itself (its own store); anything from the network goes
/// through [`decode_value_within`] and its frame limit. Trailing bytes are an error.
pub fn decode_value<T: Decode<()>>(payload: &[u8]) -> Result<T, DecodeError> {
    let (value, read) = bincode::decode_from_slice(payload, CONFIG)?;
    no_trailing(payload, read)?;
    Ok(value)
}

/// Decodes a `T` from the start of `payload` with an allocation limit of `limit`
/// rounded up to a power of two (4 KiB..=16 MiB); how many bytes it took.
fn decode_prefix_within<T: Decode<()>>(
    payload: &[u8],
    limit: FrameLimit,
) -> Result<(T, usize), DecodeError> {
    macro_rules! ladder {
        ($bytes:expr; $($n:literal),+) => {
            match $bytes {
                $(b if b <= $n => bincode::decode_from_slice(payload, config::standard().with_limit::<$n>()),)+
                _ => bincode::decode_from_slice(payload, CONFIG),
            }
        };
    }
    ladder!(limit.get() as usize;
        4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288,
        1048576, 2097152, 4194304, 8388608, 16777216)
}

/// Decodes a whole payload as one `T`, allocating at most `limit` (rounded up to a
/// power of two) however long the payload declares its strings and sequences to be.
/// Trailing bytes are an error.
pub fn decode_value_within<T: Decode<()>>(
    payload: &[u8],
    limit: FrameLimit,
) -> Result<T, DecodeError> {
    let (value, read) = decode_prefix_within(payload, limit)?;
    no_trailing(payload, read)?;
    Ok(value)
}

/// A server frame as the SDK reads it: within the frame limit the welcome announced
/// (and the client accepts), with batch outcomes, page items and ring members bounded
/// while decoding.
pub fn decode_server_frame(payload: &[u8], limit: FrameLimit) -> Result<ServerFrame, DecodeError> {
    decode_value_within(payload, limit)
}

/// The server's answer to a hello, read within [`FrameLimit::HELLO_ANSWER`].
pub fn decode_hello_answer(payload: &[u8]) -> Result<Result<Welcome, ErrorCode>, DecodeError> {
    decode_value_within(payload, FrameLimit::HELLO_ANSWER)
}

fn no_trailing(payload: &[u8], read: usize) -> Result<(), DecodeError> {
    if read != payload.len() {
        return Err(DecodeError::OtherString(format!(
            "{} trailing bytes",
            payload.len() - read
        )));
    }
    Ok(())
}

/// Decodes a client hello within the hello limit ([`FrameLimit::HELLO`], 4 KiB),
/// refusing an unsupported version before the rest is read.
pub fn decode_hello(payload: &[u8]) -> Result<Hello, ErrorCode> {
    let (version, _): (u16, usize) = decode_prefix_within(payload, FrameLimit::HELLO)
        .map_err(|e| ErrorCode::invalid("hello", e.to_string()))?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(ErrorCode::UnsupportedVersion {
            supported: SUPPORTED_VERSIONS.to_vec(),
        });
    }
    decode_value_within(payload, FrameLimit::HELLO).map_err(|e| field_error("hello", e))
}

/// Why a client frame could not be decoded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ClientFrameError {
    /// Not even a request id could be read: there is nobody to answer, so the stream
    /// must be reset.
    #[error("no request id: {0}")]
    NoRequestId(String),
    /// The request id was read but the request was not valid; answer it with `error`.
    #[error("request {request_id}: {error}")]
    Request {
        /// The id to answer.
        request_id: u64,
        /// The typed error to answer with.
        error: ErrorCode,
    },
}

/// Decodes a client frame within the configured frame limit `limit`. A frame whose
/// request id can be read is answerable even when the request itself is not: the caller
/// answers with the typed error and keeps the stream.
pub fn decode_client_frame(
    payload: &[u8],
    limit: FrameLimit,
) -> Result<ClientFrame, ClientFrameError> {
    let (request_id, read): (u64, usize) = bincode::decode_from_slice(payload, CONFIG)
        .map_err(|e| ClientFrameError::NoRequestId(e.to_string()))?;
    let request: Request =
        decode_value_within(&payload[read..], limit).map_err(|e| ClientFrameError::Request {
            request_id,
            error: field_error("request", e),
        })?;
    Ok(ClientFrame {
        request_id,
        request,
    })
}

/// Turns a decode failure into `Invalid{field, reason}`, naming the field where the
/// decoder knows it (invalid UTF-8 is reported by the item decoder as `Other(field)`).
fn field_error(default_field: &str, error: DecodeError) -> ErrorCode {
    if let Some((field, reason)) = bound_violation(&error) {
        return ErrorCode::invalid(field, reason);
    }
    match error {
        DecodeError::Other(field) => ErrorCode::invalid(field, "not valid UTF-8"),
        DecodeError::UnexpectedVariant {
            type_name, found, ..
        } => ErrorCode::invalid(
            short_type_name(type_name, default_field),
            format!("unknown tag {found}"),
        ),
        DecodeError::UnexpectedEnd { .. } => ErrorCode::invalid(default_field, "truncated payload"),
        DecodeError::LimitExceeded => {
            ErrorCode::invalid(default_field, "declares more data than a frame may hold")
        }
        other => ErrorCode::invalid(default_field, other.to_string()),
    }
}

/// `chorus_protocol::message::Request` → `request`; generic types keep the default name.
fn short_type_name(type_name: &str, default_field: &str) -> String {
    match type_name.rsplit("::").next() {
        Some(name) if !name.contains('<') && !name.is_empty() => name.to_ascii_lowercase(),
        _ => default_field.to_string(),
    }
}
