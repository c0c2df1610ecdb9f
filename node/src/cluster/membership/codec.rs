//! foca's wire items (headers and member updates) on bincode 2, decoded within bounds.

use bytes::{Buf, BufMut};
use foca::{Header, Member, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::identity::{IdentityInterner, MemberIdentity};

/// The most bytes one decoded item may claim: a header holds two identities (each a name
/// of at most a few dozen bytes and two socket addresses), a member one. Anything larger
/// is hostile or corrupt, and is refused before it is allocated.
pub const MAX_ITEM_BYTES: usize = 1_024;

type WireConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_ITEM_BYTES>,
>;

const WIRE: WireConfig = bincode::config::standard().with_limit::<MAX_ITEM_BYTES>();

/// Why an item could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The item did not fit in the space left in the packet; nothing was written.
    #[error("item needs {needed} bytes, {available} left in the packet")]
    NoSpace {
        /// Bytes the encoded item takes.
        needed: usize,
        /// Bytes left in the packet.
        available: usize,
    },
    /// bincode could not encode the item.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid item (truncated, oversized or malformed).
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

/// foca's [`Codec`](foca::Codec) for [`MemberIdentity`] on bincode 2 (varint integers,
/// items of at most [`MAX_ITEM_BYTES`]). Every identity it decodes goes through its
/// [`IdentityInterner`], so that the same run, heard of again and again, is held once.
#[derive(Debug, Default)]
pub struct BincodeCodec {
    /// Reused encode buffer, so that a full item is checked against the space left
    /// before any byte reaches the packet.
    scratch: Vec<u8>,
    interner: IdentityInterner,
}

impl BincodeCodec {
    /// A codec with an empty scratch buffer and an interner of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec that interns the identities it decodes in `interner` (shared with
    /// whoever else holds a clone of it).
    pub fn with_interner(interner: IdentityInterner) -> Self {
        BincodeCodec {
            scratch: Vec::new(),
            interner,
        }
    }

    /// The interner the identities it decodes go through.
    pub fn interner(&self) -> &IdentityInterner {
        &self.interner
    }

    /// Encodes any wire item of ours, all or nothing.
    pub(super) fn encode<T: Serialize>(
        &mut self,
        item: &T,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.scratch.clear();
        bincode::serde::encode_into_std_write(item, &mut self.scratch, WIRE)?;
        let available = buf.remaining_mut();
        if self.scratch.len() > available {
            return Err(CodecError::NoSpace {
                needed: self.scratch.len(),
                available,
            });
        }
        buf.put_slice(&self.scratch);
        Ok(())
    }

    /// Decodes any wire item of ours within [`MAX_ITEM_BYTES`], advancing `buf` past it.
    pub(super) fn decode<T: DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
        let (item, read) = bincode::serde::decode_from_slice(buf.chunk(), WIRE)?;
        buf.advance(read);
        Ok(item)
    }

    /// Encodes one member update on its own (used by roster sync).
    pub fn encode_member_to(
        &mut self,
        member: &Member<MemberIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.encode(member, buf)
    }

    /// Decodes one member update, advancing `buf` past it.
    pub fn decode_member_from(&self, buf: impl Buf) -> Result<Member<MemberIdentity>, CodecError> {
        let member: Member<MemberIdentity> = Self::decode(buf)?;
        Ok(Member::new(
            self.interner.intern(member.id().clone()),
            member.incarnation(),
            member.state(),
        ))
    }

    /// Encodes one identity on its own (used by the join handshake).
    pub fn encode_identity_to(
        &mut self,
        identity: &MemberIdentity,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.encode(identity, buf)
    }

    /// Decodes one identity, advancing `buf` past it.
    pub fn decode_identity_from(&self, buf: impl Buf) -> Result<MemberIdentity, CodecError> {
        Self::decode(buf).map(|identity| self.interner.intern(identity))
    }

    /// Decodes a header, advancing `buf` past it.
    pub fn decode_header_from(&self, buf: impl Buf) -> Result<Header<MemberIdentity>, CodecError> {
        let mut header: Header<MemberIdentity> = Self::decode(buf)?;
        header.src = self.interner.intern(header.src);
        header.dst = self.interner.intern(header.dst);
        match &mut header.message {
            Message::PingReq { target: id, .. }
            | Message::IndirectAck { target: id, .. }
            | Message::IndirectPing { origin: id, .. }
            | Message::ForwardedAck { origin: id, .. } => {
                *id = self.interner.intern(id.clone());
            }
            Message::Ping(_)
            | Message::Ack(_)
            | Message::Announce
            | Message::Feed
            | Message::Gossip
            | Message::Broadcast
            | Message::TurnUndead => {}
        }
        Ok(header)
    }
}

impl foca::Codec<MemberIdentity> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<MemberIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.encode(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<MemberIdentity>, CodecError> {
        self.decode_header_from(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<MemberIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.encode(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<MemberIdentity>, CodecError> {
        self.decode_member_from(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use chorus_protocol::NodeId;
    use foca::{Codec, Message, State};
    use proptest::prelude::*;

    use super::*;

    fn identity(name: &str, incarnation: u64) -> MemberIdentity {
        MemberIdentity::new(
            NodeId(name.into()),
            SocketAddr::from(([10, 0, 0, 1], 7946)),
            "[::1]:7000".parse().expect("addr"),
            incarnation,
        )
    }

    fn messages() -> Vec<Message<MemberIdentity>> {
        let target = identity("target", 3);
        vec![
            Message::Ping(1),
            Message::Ack(2),
            Message::PingReq {
                target: target.clone(),
                probe_number: 3,
            },
            Message::IndirectPing {
                origin: target.clone(),
                probe_number: 4,
            },
            Message::IndirectAck {
                target: target.clone(),
                probe_number: 5,
            },
            Message::ForwardedAck {
                origin: target,
                probe_number: 6,
            },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ]
    }

    #[test]
    fn headers_and_members_round_trip() {
        let mut codec = BincodeCodec::new();
        for message in messages() {
            let header = Header {
                src: identity("a", 1),
                src_incarnation: 9,
                dst: identity("b", u64::MAX),
                message,
            };
            let mut buf = Vec::new();
            codec.encode_header(&header, &mut buf).expect("encode");
            let mut slice = &buf[..];
            assert_eq!(codec.decode_header(&mut slice).expect("decode"), header);
            assert!(slice.is_empty(), "decode consumes exactly one item");
        }
        for state in [State::Alive, State::Suspect, State::Down] {
            let member = Member::new(identity("c", 42), 7, state);
            let mut buf = Vec::new();
            codec.encode_member(&member, &mut buf).expect("encode");
            buf.extend_from_slice(b"trailing");
            let mut slice = &buf[..];
            assert_eq!(codec.decode_member(&mut slice).expect("decode"), member);
            assert_eq!(slice, b"trailing");
        }
    }

    #[test]
    fn an_item_that_does_not_fit_leaves_the_buffer_untouched() {
        let mut codec = BincodeCodec::new();
        let mut out = Vec::new();
        let mut limited = (&mut out).limit(8);
        let err = codec
            .encode_member(&Member::alive(identity("long-name", 1)), &mut limited)
            .expect_err("too small");
        assert!(matches!(err, CodecError::NoSpace { .. }));
        assert!(out.is_empty());
    }

    #[test]
    fn an_item_larger_than_the_limit_is_refused_when_decoded() {
        let mut codec = BincodeCodec::new();
        let big = Member::alive(identity(&"x".repeat(MAX_ITEM_BYTES * 2), 1));
        // The limit bounds what a peer can make us allocate; our own encoding is bounded
        // by the packet size instead.
        let mut buf = Vec::new();
        codec.encode_member(&big, &mut buf).expect("encode");
        assert!(matches!(
            codec.decode_member(&buf[..]),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn a_run_decoded_again_shares_its_data_with_earlier_copies() {
        let interner = IdentityInterner::new();
        let mut codec = BincodeCodec::with_interner(interner.clone());
        let member = Member::alive(identity("c", 42));
        let mut buf = Vec::new();
        codec.encode_member(&member, &mut buf).expect("encode");
        let first = codec.decode_member(&buf[..]).expect("decode");
        // Another codec on the same interner (another member of the same process).
        let second = BincodeCodec::with_interner(interner)
            .decode_member(&buf[..])
            .expect("decode");
        assert_eq!(first, member);
        assert!(std::sync::Arc::ptr_eq(first.id().run(), second.id().run()));
        let mut header = Vec::new();
        let sent = Header {
            src: identity("c", 42),
            src_incarnation: 0,
            dst: identity("d", 1),
            message: Message::PingReq {
                target: identity("c", 42),
                probe_number: 1,
            },
        };
        codec.encode_header(&sent, &mut header).expect("encode");
        let decoded = codec.decode_header(&header[..]).expect("decode");
        assert_eq!(decoded, sent);
        let Message::PingReq { target, .. } = &decoded.message else {
            panic!("not a ping-req: {decoded:?}");
        };
        assert!(std::sync::Arc::ptr_eq(decoded.src.run(), first.id().run()));
        assert!(std::sync::Arc::ptr_eq(target.run(), first.id().run()));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = BincodeCodec::new();
            let _ = codec.decode_header(&bytes[..]);
            let _ = codec.decode_member(&bytes[..]);
        }

        #[test]
        fn members_round_trip(name in "[a-z0-9._-]{1,64}", incarnation: u64, foca_incarnation: u16, state in 0u8..3) {
            let state = [State::Alive, State::Suspect, State::Down][usize::from(state)];
            let member = Member::new(identity(&name, incarnation), foca_incarnation, state);
            let mut codec = BincodeCodec::new();
            let mut buf = Vec::new();
            codec.encode_member(&member, &mut buf).expect("encode");
            prop_assert_eq!(codec.decode_member(&buf[..]).expect("decode"), member);
        }
    }
}
