//! Decoding helpers that bound a count before anything is allocated for it.
//!
//! bincode's own `Vec` decoder trusts the declared length up to the allocation limit;
//! these read the length, refuse it when it is over the field's bound, and only then
//! decode the elements. A refusal carries the field and the reason, which
//! [`bound_violation`] reads back so the caller can answer `Invalid{field, reason}`.

use bincode::Decode;
use bincode::de::Decoder;
use bincode::error::DecodeError;

/// Marks a [`DecodeError::OtherString`] made by [`too_many`].
const MARK: &str = "\u{0}bound\u{0}";

/// The error for a declared count over its bound.
pub(crate) fn too_many(field: &'static str, reason: String) -> DecodeError {
    DecodeError::OtherString(format!("{MARK}{field}\u{0}{reason}"))
}

/// The field and reason of an error made by [`too_many`], if it is one.
pub(crate) fn bound_violation(error: &DecodeError) -> Option<(&str, &str)> {
    match error {
        DecodeError::OtherString(text) => text.strip_prefix(MARK)?.split_once('\u{0}'),
        _ => None,
    }
}

/// Reads a sequence length as bincode writes it (a `u64`), refusing one over `max`.
pub(crate) fn decode_len<D: Decoder>(
    decoder: &mut D,
    max: usize,
    over: impl FnOnce(u64) -> DecodeError,
) -> Result<usize, DecodeError> {
    let len = u64::decode(decoder)?;
    if len > max as u64 {
        return Err(over(len));
    }
    Ok(len as usize)
}

/// Decodes a sequence of at most `max` elements with `element`; the vector grows with
/// the elements actually decoded, never with the declared length alone.
pub(crate) fn decode_vec<D: Decoder, T>(
    decoder: &mut D,
    max: usize,
    over: impl FnOnce(u64) -> DecodeError,
    mut element: impl FnMut(&mut D) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let len = decode_len(decoder, max, over)?;
    // The bound makes the reservation small; the claim keeps it within the allocation
    // limit as bincode's own decoder does.
    decoder.claim_container_read::<T>(len)?;
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        decoder.unclaim_bytes_read(std::mem::size_of::<T>());
        out.push(element(decoder)?);
    }
    Ok(out)
}

/// Decodes a byte string of at most `max` bytes.
pub(crate) fn decode_bytes<D: Decoder>(
    decoder: &mut D,
    max: usize,
    over: impl FnOnce(u64) -> DecodeError,
) -> Result<Vec<u8>, DecodeError> {
    let len = decode_len(decoder, max, over)?;
    decoder.claim_container_read::<u8>(len)?;
    let mut bytes = vec![0; len];
    bincode::de::read::Reader::read(decoder.reader(), &mut bytes)?;
    Ok(bytes)
}
