//! What an authenticated packet body carries: `version || kind || payload`, where the
//! payload is foca's own gossip bytes, a chunk of a roster sync, one half of the join
//! handshake (a joiner knows its seed's address but not its name, which foca needs), or
//! a down notice. Kinds are wire tags: new ones are appended, old ones keep their value.

use foca::Member;

use super::codec::{BincodeCodec, CodecError};
use super::identity::MemberIdentity;

/// The envelope format this build speaks; a packet with another version is refused.
pub const VERSION: u8 = 1;

/// Bytes of envelope in front of the payload (version and kind).
pub const HEADER_LEN: usize = 2;

/// The most member updates one roster-sync packet may claim; a packet that says more is
/// refused before anything is decoded.
pub const MAX_ROSTER_MEMBERS: u16 = 512;

const KIND_GOSSIP: u8 = 0;
const KIND_ROSTER_SYNC: u8 = 1;
const KIND_JOIN: u8 = 2;
const KIND_WELCOME: u8 = 3;
const KIND_DOWN_NOTICE: u8 = 4;

/// The envelope header of a gossip packet; foca's bytes follow it.
pub const GOSSIP_HEADER: [u8; HEADER_LEN] = [VERSION, KIND_GOSSIP];

/// One decoded packet body.
#[derive(Debug, PartialEq)]
pub enum Envelope<'a> {
    /// SWIM traffic, handed to foca as is.
    Gossip(&'a [u8]),
    /// Part of a sender's full membership table, sent to a member that just joined.
    RosterSync(Vec<Member<MemberIdentity>>),
    /// A node that knows only this node's address asks to join; it says who it is.
    Join(MemberIdentity),
    /// The answer to a join: who this seed is, so the joiner can announce to it.
    Welcome(MemberIdentity),
    /// "You are down here": the answer to a packet from a run the sender holds down.
    DownNotice(DownNotice),
}

/// Tells `subject` that `notifier` holds it down, so that it renews its identity (foca
/// ignores every packet from a run it holds down, and never says so itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownNotice {
    /// Who holds the subject down.
    pub notifier: MemberIdentity,
    /// The run held down; a receiver that runs under another one ignores the notice.
    pub subject: MemberIdentity,
    /// How many live members the notifier sees, itself included: when two members hold
    /// each other down (a healed partition), the one that sees fewer renews.
    pub live_members: u32,
}

/// Why a packet body could not be decoded; the packet is dropped and nothing changes.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is shorter than the envelope header.
    #[error("body of {len} bytes has no envelope header")]
    Truncated {
        /// The body's length.
        len: usize,
    },
    /// The sender speaks an envelope version this build does not.
    #[error("unknown envelope version {0}")]
    Version(u8),
    /// The kind byte names no known payload.
    #[error("unknown envelope kind {0}")]
    Kind(u8),
    /// A roster sync claims more members than [`MAX_ROSTER_MEMBERS`].
    #[error("roster sync claims {0} members, at most {MAX_ROSTER_MEMBERS} allowed")]
    TooManyMembers(u16),
    /// A roster sync holds bytes after its last member.
    #[error("{0} bytes after the last roster member")]
    Trailing(usize),
    /// A roster member or a handshake identity could not be decoded.
    #[error("payload: {0}")]
    Payload(#[from] CodecError),
}

/// The body of a join request from `joiner`.
pub fn encode_join(
    joiner: &MemberIdentity,
    codec: &mut BincodeCodec,
) -> Result<Vec<u8>, CodecError> {
    encode_identity(KIND_JOIN, joiner, codec)
}

/// The body of a welcome from `seed`.
pub fn encode_welcome(
    seed: &MemberIdentity,
    codec: &mut BincodeCodec,
) -> Result<Vec<u8>, CodecError> {
    encode_identity(KIND_WELCOME, seed, codec)
}

/// The body of a down notice.
pub fn encode_down_notice(
    notice: &DownNotice,
    codec: &mut BincodeCodec,
) -> Result<Vec<u8>, CodecError> {
    let mut body = encode_identity(KIND_DOWN_NOTICE, &notice.notifier, codec)?;
    codec.encode_identity_to(&notice.subject, &mut body)?;
    body.extend_from_slice(&notice.live_members.to_be_bytes());
    Ok(body)
}

fn encode_identity(
    kind: u8,
    identity: &MemberIdentity,
    codec: &mut BincodeCodec,
) -> Result<Vec<u8>, CodecError> {
    let mut body = vec![VERSION, kind];
    codec.encode_identity_to(identity, &mut body)?;
    Ok(body)
}

/// Encodes `members` as roster-sync bodies of at most `max_body` bytes each, stopping
/// after `max_packets` bodies (a table too large for that is sent in part; gossip brings
/// the rest).
pub fn encode_roster_sync<'m>(
    members: impl IntoIterator<Item = &'m Member<MemberIdentity>>,
    codec: &mut BincodeCodec,
    max_body: usize,
    max_packets: usize,
) -> Vec<Vec<u8>> {
    const COUNT_LEN: usize = 2;
    let mut bodies = Vec::new();
    let mut current: Option<(Vec<u8>, u16)> = None;
    let mut item = Vec::new();
    for member in members {
        item.clear();
        if codec.encode_member_to(member, &mut item).is_err()
            || HEADER_LEN + COUNT_LEN + item.len() > max_body
        {
            continue;
        }
        let full = current.as_ref().is_some_and(|(body, count)| {
            body.len() + item.len() > max_body || *count >= MAX_ROSTER_MEMBERS
        });
        if full {
            bodies.push(finish_roster(current.take()));
            if bodies.len() >= max_packets {
                return bodies;
            }
        }
        let (body, count) = current.get_or_insert_with(|| {
            let mut body = Vec::with_capacity(max_body);
            body.extend_from_slice(&[VERSION, KIND_ROSTER_SYNC, 0, 0]);
            (body, 0)
        });
        body.extend_from_slice(&item);
        *count += 1;
    }
    if current.is_some() && bodies.len() < max_packets {
        bodies.push(finish_roster(current));
    }
    bodies
}

fn finish_roster(current: Option<(Vec<u8>, u16)>) -> Vec<u8> {
    let (mut body, count) = current.expect("a roster body in progress");
    body[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&count.to_be_bytes());
    body
}

/// Decodes a packet body (after authentication); identities go through `codec`'s
/// interner.
pub fn decode<'a>(body: &'a [u8], codec: &BincodeCodec) -> Result<Envelope<'a>, EnvelopeError> {
    let [version, kind, payload @ ..] = body else {
        return Err(EnvelopeError::Truncated { len: body.len() });
    };
    if *version != VERSION {
        return Err(EnvelopeError::Version(*version));
    }
    match *kind {
        KIND_GOSSIP => Ok(Envelope::Gossip(payload)),
        KIND_ROSTER_SYNC => decode_roster(payload, codec).map(Envelope::RosterSync),
        KIND_JOIN => decode_identity(payload, codec).map(Envelope::Join),
        KIND_WELCOME => decode_identity(payload, codec).map(Envelope::Welcome),
        KIND_DOWN_NOTICE => decode_down_notice(payload, codec).map(Envelope::DownNotice),
        other => Err(EnvelopeError::Kind(other)),
    }
}

fn decode_identity(
    mut payload: &[u8],
    codec: &BincodeCodec,
) -> Result<MemberIdentity, EnvelopeError> {
    let identity = codec.decode_identity_from(&mut payload)?;
    if !payload.is_empty() {
        return Err(EnvelopeError::Trailing(payload.len()));
    }
    Ok(identity)
}

fn decode_down_notice(
    mut payload: &[u8],
    codec: &BincodeCodec,
) -> Result<DownNotice, EnvelopeError> {
    let notifier = codec.decode_identity_from(&mut payload)?;
    let subject = codec.decode_identity_from(&mut payload)?;
    let Some((live, rest)) = payload.split_first_chunk::<4>() else {
        return Err(EnvelopeError::Truncated {
            len: HEADER_LEN + payload.len(),
        });
    };
    if !rest.is_empty() {
        return Err(EnvelopeError::Trailing(rest.len()));
    }
    Ok(DownNotice {
        notifier,
        subject,
        live_members: u32::from_be_bytes(*live),
    })
}

fn decode_roster(
    payload: &[u8],
    codec: &BincodeCodec,
) -> Result<Vec<Member<MemberIdentity>>, EnvelopeError> {
    let [hi, lo, rest @ ..] = payload else {
        return Err(EnvelopeError::Truncated {
            len: HEADER_LEN + payload.len(),
        });
    };
    let mut rest: &[u8] = rest;
    let count = u16::from_be_bytes([*hi, *lo]);
    if count > MAX_ROSTER_MEMBERS {
        return Err(EnvelopeError::TooManyMembers(count));
    }
    // Grown with the members decoded, not reserved for the count claimed: each takes
    // bytes of a packet of at most `max_packet_size`.
    let mut members = Vec::new();
    for _ in 0..count {
        members.push(codec.decode_member_from(&mut rest)?);
    }
    if !rest.is_empty() {
        return Err(EnvelopeError::Trailing(rest.len()));
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use chorus_protocol::NodeId;
    use foca::State;
    use proptest::prelude::*;

    use super::*;

    fn member(i: u32) -> Member<MemberIdentity> {
        Member::new(
            MemberIdentity::new(
                NodeId(format!("node-{i}")),
                SocketAddr::from(([10, 0, 0, 1], 7946)),
                SocketAddr::from(([10, 0, 0, 1], 7000)),
                u64::from(i),
            ),
            0,
            State::Alive,
        )
    }

    #[test]
    fn gossip_and_handshakes_round_trip() {
        let body = [&GOSSIP_HEADER[..], b"swim"].concat();
        assert_eq!(
            decode(&body, &BincodeCodec::new()).expect("decode"),
            Envelope::Gossip(b"swim")
        );
        let mut codec = BincodeCodec::new();
        let joiner = member(1).id().clone();
        let join = encode_join(&joiner, &mut codec).expect("encode");
        assert_eq!(
            decode(&join, &BincodeCodec::new()).expect("decode"),
            Envelope::Join(joiner.clone())
        );
        let welcome = encode_welcome(&joiner, &mut codec).expect("encode");
        assert_eq!(
            decode(&welcome, &BincodeCodec::new()).expect("decode"),
            Envelope::Welcome(joiner)
        );
        let mut trailing = join.clone();
        trailing.push(0);
        assert!(matches!(
            decode(&trailing, &BincodeCodec::new()),
            Err(EnvelopeError::Trailing(1))
        ));
    }

    #[test]
    fn a_down_notice_round_trips_and_its_tag_is_appended() {
        assert_eq!(KIND_DOWN_NOTICE, 4, "existing kinds keep their tags");
        let mut codec = BincodeCodec::new();
        let notice = DownNotice {
            notifier: member(1).id().clone(),
            subject: member(2).id().clone(),
            live_members: 997,
        };
        let body = encode_down_notice(&notice, &mut codec).expect("encode");
        assert_eq!(
            decode(&body, &BincodeCodec::new()).expect("decode"),
            Envelope::DownNotice(notice)
        );
        assert!(matches!(
            decode(&body[..body.len() - 1], &BincodeCodec::new()),
            Err(EnvelopeError::Truncated { .. })
        ));
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(matches!(
            decode(&trailing, &BincodeCodec::new()),
            Err(EnvelopeError::Trailing(1))
        ));
    }

    #[test]
    fn a_large_roster_is_split_into_bounded_packets_that_round_trip() {
        let members: Vec<_> = (0..200).map(member).collect();
        let bodies = encode_roster_sync(&members, &mut BincodeCodec::new(), 400, 100);
        assert!(bodies.len() > 1);
        let mut decoded = Vec::new();
        for body in &bodies {
            assert!(body.len() <= 400);
            match decode(body, &BincodeCodec::new()).expect("decode") {
                Envelope::RosterSync(part) => decoded.extend(part),
                other => panic!("not a roster: {other:?}"),
            }
        }
        assert_eq!(decoded, members);
    }

    #[test]
    fn a_roster_sync_stops_at_its_packet_budget() {
        let members: Vec<_> = (0..200).map(member).collect();
        let bodies = encode_roster_sync(&members, &mut BincodeCodec::new(), 400, 2);
        assert_eq!(bodies.len(), 2);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(matches!(
            decode(&[], &BincodeCodec::new()),
            Err(EnvelopeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&[9, 0], &BincodeCodec::new()),
            Err(EnvelopeError::Version(9))
        ));
        assert!(matches!(
            decode(&[VERSION, 7], &BincodeCodec::new()),
            Err(EnvelopeError::Kind(7))
        ));
        assert!(matches!(
            decode(
                &[VERSION, KIND_ROSTER_SYNC, 0xff, 0xff],
                &BincodeCodec::new()
            ),
            Err(EnvelopeError::TooManyMembers(u16::MAX))
        ));
        assert!(matches!(
            decode(&[VERSION, KIND_ROSTER_SYNC, 0, 1], &BincodeCodec::new()),
            Err(EnvelopeError::Payload(_))
        ));
        assert!(matches!(
            decode(&[VERSION, KIND_ROSTER_SYNC, 0, 0, 1], &BincodeCodec::new()),
            Err(EnvelopeError::Trailing(1))
        ));
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes, &BincodeCodec::new());
            for kind in [KIND_ROSTER_SYNC, KIND_JOIN, KIND_WELCOME, KIND_DOWN_NOTICE] {
                let mut body = vec![VERSION, kind];
                body.extend_from_slice(&bytes);
                let _ = decode(&body, &BincodeCodec::new());
            }
        }
    }
}
