//! Reading the head of a submit without decoding it: who it is for and its tier.
//!
//! An overloaded node refuses most of what it is sent. Whether it refuses a submit
//! depends only on the tier (and, in a cluster, on who owns the user), so the server
//! reads those from the frame in place — borrowing the user id, skipping the text and
//! tags without copying them — and answers a refusal before the body is decoded.
//! Anything this reader does not recognise is left to the full decoder, which gives
//! the typed error.

use bincode::de::{BorrowDecode, BorrowDecoder, Decode};
use bincode::error::DecodeError;

use crate::item::{ItemId, Kind, MAX_TAGS, Tier};
use crate::message::tag;

/// The head of a client frame that carries one submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitHead<'a> {
    /// The frame's request id.
    pub request_id: u64,
    /// Whether the client sent it to the owner its ring snapshot names.
    pub routed: bool,
    /// The user the item comes from (not yet checked against the schema's limits).
    pub user_id: &'a str,
    /// The item's tier.
    pub tier: Tier,
}

/// The head of `payload` (a client frame) if it carries a single submit, plain or
/// routed; `None` for any other request or a frame that does not read as one.
pub fn peek_submit(payload: &[u8]) -> Option<SubmitHead<'_>> {
    bincode::borrow_decode_from_slice(payload, bincode::config::standard())
        .ok()
        .map(|(head, _)| head)
}

impl<'de, C> BorrowDecode<'de, C> for SubmitHead<'de> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        let request_id = u64::decode(d)?;
        let mut variant = u32::decode(d)?;
        let routed = variant == tag::ROUTED;
        if routed {
            let _epoch = u64::decode(d)?;
            variant = u32::decode(d)?;
        }
        if variant != tag::SUBMIT {
            return Err(DecodeError::Other("not a submit"));
        }
        // The fields of `Item` before its tier, in order.
        let _id = ItemId::decode(d)?;
        let user_id = <&'de str>::borrow_decode(d)?;
        let _kind = Kind::decode(d)?;
        let _rating = Option::<u8>::decode(d)?;
        let _text = <&'de [u8]>::borrow_decode(d)?;
        let tags = u64::decode(d)?;
        if tags > MAX_TAGS as u64 {
            return Err(DecodeError::Other("too many tags"));
        }
        for _ in 0..tags {
            let _tag = <&'de [u8]>::borrow_decode(d)?;
        }
        let tier = Tier::decode(d)?;
        Ok(SubmitHead {
            request_id,
            routed,
            user_id,
            tier,
        })
    }
}
