//! What an authenticated packet body carries: `version || kind || payload`, where the
//! payload is foca's own gossip bytes, a chunk of a roster sync, one half of the join
//! handshake (a joiner knows its seed's address but not its name, which foca needs), a
//! down notice, or a joiner's request for the parts of a roster it is missing. Kinds are
//! wire tags: new ones are appended, old ones keep their value.

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
const KIND_ROSTER_RANGE: u8 = 5;
/// A roster pull of the previous release: no window, answered with the seed's own.
const KIND_ROSTER_PULL_UNWINDOWED: u8 = 6;
const KIND_ROSTER_PULL: u8 = 7;

/// The most key ranges one roster pull may ask for.
pub const MAX_PULL_RANGES: u8 = 16;

/// An inclusive range of name keys (see [`NameKey`](super::identity::NameKey)): the unit in which a roster is
/// sent and asked for again.
pub type KeyRange = (u64, u64);

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
    /// Every member of the sender's table whose name key lies in a range.
    RosterRange(RosterRange),
    /// A joiner asks for the parts of the roster it has not received.
    RosterPull(RosterPull),
}

/// Part of a roster: `members` are *all* the members of `sender`'s table whose name key
/// lies in `range`, so a receiver knows which parts it holds and which it must ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct RosterRange {
    /// Who sent it (and answers pulls for the rest).
    pub sender: MemberIdentity,
    /// The name keys covered, inclusive.
    pub range: KeyRange,
    /// The members in the range.
    pub members: Vec<Member<MemberIdentity>>,
}

/// A joiner asks `sender`-of-a-roster for the key ranges it has not received yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterPull {
    /// Who asks (the answer goes to its gossip address).
    pub puller: MemberIdentity,
    /// The ranges missing, at most [`MAX_PULL_RANGES`].
    pub ranges: Vec<KeyRange>,
    /// The most packets the puller takes in answer (at least 1): it asks again once
    /// they have arrived, so this is all it ever has in flight.
    pub window: u16,
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
    /// A roster pull asks for more than [`MAX_PULL_RANGES`] ranges or for no packet,
    /// or a range is reversed.
    #[error("roster pull or range is malformed")]
    BadRange,
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
        KIND_ROSTER_RANGE => decode_roster_range(payload, codec).map(Envelope::RosterRange),
        KIND_ROSTER_PULL => decode_roster_pull(payload, codec, true).map(Envelope::RosterPull),
        KIND_ROSTER_PULL_UNWINDOWED => {
            decode_roster_pull(payload, codec, false).map(Envelope::RosterPull)
        }
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

/// Encodes the members of `sorted` (ordered by name key) whose keys lie in `range` as
/// roster-range bodies of at most `max_body` bytes, each saying which keys it covers,
/// stopping after `max_packets` bodies: the keys after the last body sent stay
/// uncovered, for the receiver to pull. Bodies come in key order.
pub fn encode_roster_range(
    sender: &MemberIdentity,
    sorted: &[&Member<MemberIdentity>],
    range: KeyRange,
    codec: &mut BincodeCodec,
    max_body: usize,
    max_packets: usize,
) -> Result<Vec<Vec<u8>>, CodecError> {
    // version, kind, sender, from, to, count
    let mut head = vec![VERSION, KIND_ROSTER_RANGE];
    codec.encode_identity_to(sender, &mut head)?;
    let fixed = head.len() + 8 + 8 + 2;
    let start = sorted.partition_point(|m| m.id().key().0 < range.0);
    let mut bodies = Vec::new();
    let mut from = range.0;
    let mut members: Vec<u8> = Vec::with_capacity(max_body);
    let mut count: u16 = 0;
    let mut item = Vec::new();
    let finish = |members: &mut Vec<u8>, count: &mut u16, from: u64, to: u64| {
        let mut body = Vec::with_capacity(fixed + members.len());
        body.extend_from_slice(&head);
        body.extend_from_slice(&from.to_be_bytes());
        body.extend_from_slice(&to.to_be_bytes());
        body.extend_from_slice(&count.to_be_bytes());
        body.append(members);
        *count = 0;
        body
    };
    for member in &sorted[start..] {
        let key = member.id().key().0;
        if key > range.1 {
            break;
        }
        item.clear();
        if codec.encode_member_to(member, &mut item).is_err() || fixed + item.len() > max_body {
            continue;
        }
        if fixed + members.len() + item.len() > max_body || count >= MAX_ROSTER_MEMBERS {
            // This body ends just before `key`; the next starts at it.
            bodies.push(finish(&mut members, &mut count, from, (key - 1).max(from)));
            from = key;
            if bodies.len() >= max_packets {
                return Ok(bodies);
            }
        }
        members.extend_from_slice(&item);
        count += 1;
    }
    if bodies.len() < max_packets {
        bodies.push(finish(&mut members, &mut count, from, range.1));
    }
    Ok(bodies)
}

/// The body of a roster pull.
pub fn encode_roster_pull(
    pull: &RosterPull,
    codec: &mut BincodeCodec,
) -> Result<Vec<u8>, CodecError> {
    let mut body = encode_identity(KIND_ROSTER_PULL, &pull.puller, codec)?;
    body.extend_from_slice(&pull.window.max(1).to_be_bytes());
    let ranges = &pull.ranges[..pull.ranges.len().min(usize::from(MAX_PULL_RANGES))];
    body.push(ranges.len() as u8);
    for (from, to) in ranges {
        body.extend_from_slice(&from.to_be_bytes());
        body.extend_from_slice(&to.to_be_bytes());
    }
    Ok(body)
}

fn take_u64(payload: &mut &[u8]) -> Result<u64, EnvelopeError> {
    let Some((head, rest)) = payload.split_first_chunk::<8>() else {
        return Err(EnvelopeError::Truncated {
            len: HEADER_LEN + payload.len(),
        });
    };
    *payload = rest;
    Ok(u64::from_be_bytes(*head))
}

fn decode_roster_range(
    mut payload: &[u8],
    codec: &BincodeCodec,
) -> Result<RosterRange, EnvelopeError> {
    let sender = codec.decode_identity_from(&mut payload)?;
    let from = take_u64(&mut payload)?;
    let to = take_u64(&mut payload)?;
    if from > to {
        return Err(EnvelopeError::BadRange);
    }
    let members = decode_roster(payload, codec)?;
    // A member outside the range it claims to cover would make the receiver believe
    // it holds a part it does not.
    if members
        .iter()
        .any(|m| !(from..=to).contains(&m.id().key().0))
    {
        return Err(EnvelopeError::BadRange);
    }
    Ok(RosterRange {
        sender,
        range: (from, to),
        members,
    })
}

/// Decodes a pull; one `windowed` names its window, one of the previous release does
/// not and takes as many packets as the seed sends at most.
fn decode_roster_pull(
    mut payload: &[u8],
    codec: &BincodeCodec,
    windowed: bool,
) -> Result<RosterPull, EnvelopeError> {
    let puller = codec.decode_identity_from(&mut payload)?;
    let (window, payload) = if windowed {
        let Some((window, payload)) = payload.split_first_chunk::<2>() else {
            return Err(EnvelopeError::Truncated {
                len: HEADER_LEN + payload.len(),
            });
        };
        (u16::from_be_bytes(*window), payload)
    } else {
        (u16::MAX, payload)
    };
    if window == 0 {
        return Err(EnvelopeError::BadRange);
    }
    let [count, rest @ ..] = payload else {
        return Err(EnvelopeError::Truncated {
            len: HEADER_LEN + payload.len(),
        });
    };
    if *count > MAX_PULL_RANGES {
        return Err(EnvelopeError::BadRange);
    }
    let mut rest: &[u8] = rest;
    let mut ranges = Vec::with_capacity(usize::from(*count));
    for _ in 0..*count {
        let from = take_u64(&mut rest)?;
        let to = take_u64(&mut rest)?;
        if from > to {
            return Err(EnvelopeError::BadRange);
        }
        ranges.push((from, to));
    }
    if !rest.is_empty() {
        return Err(EnvelopeError::Trailing(rest.len()));
    }
    Ok(RosterPull {
        puller,
        ranges,
        window,
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
    fn roster_ranges_cover_the_key_space_in_order_and_stop_at_their_budget() {
        assert_eq!(
            (KIND_ROSTER_RANGE, KIND_ROSTER_PULL),
            (5, 7),
            "tags are appended"
        );
        let members: Vec<_> = (0..200).map(member).collect();
        let mut sorted: Vec<_> = members.iter().collect();
        sorted.sort_by_key(|m| m.id().key());
        let sender = member(999).id().clone();
        let mut codec = BincodeCodec::new();
        let all = encode_roster_range(&sender, &sorted, (0, u64::MAX), &mut codec, 400, 1_000)
            .expect("encode");
        assert!(all.len() > 1);
        let mut next = 0u64;
        let mut decoded = Vec::new();
        for body in &all {
            assert!(body.len() <= 400);
            let Envelope::RosterRange(part) = decode(body, &BincodeCodec::new()).expect("decode")
            else {
                panic!("not a roster range");
            };
            assert_eq!((part.sender.clone(), part.range.0), (sender.clone(), next));
            next = part.range.1.wrapping_add(1);
            decoded.extend(part.members);
        }
        assert_eq!(next, 0, "the last range ends at the top of the key space");
        let mut expected: Vec<_> = sorted.into_iter().cloned().collect();
        expected.sort_by_key(|m| m.id().key());
        assert_eq!(decoded, expected);
        let two = encode_roster_range(
            &sender,
            &members.iter().collect::<Vec<_>>()[..0],
            (5, 9),
            &mut codec,
            400,
            2,
        )
        .expect("encode");
        assert_eq!(two.len(), 1, "an empty range is still said to be empty");
    }

    #[test]
    fn a_roster_pull_round_trips_and_a_bad_one_is_refused() {
        let mut codec = BincodeCodec::new();
        let pull = RosterPull {
            puller: member(1).id().clone(),
            ranges: vec![(0, 10), (20, u64::MAX)],
            window: 64,
        };
        let body = encode_roster_pull(&pull, &mut codec).expect("encode");
        assert_eq!(
            decode(&body, &BincodeCodec::new()).expect("decode"),
            Envelope::RosterPull(pull.clone())
        );
        // A pull for no packet at all asks for nothing a seed could send.
        let mut no_window = body.clone();
        let at = encode_identity(KIND_ROSTER_PULL, &pull.puller, &mut codec)
            .expect("encode")
            .len();
        no_window[at..at + 2].copy_from_slice(&0u16.to_be_bytes());
        assert!(matches!(
            decode(&no_window, &BincodeCodec::new()),
            Err(EnvelopeError::BadRange)
        ));
        // The previous release's pull (kind 6, no window) is answered with the seed's.
        let mut previous = body[..at].to_vec();
        previous[1] = KIND_ROSTER_PULL_UNWINDOWED;
        previous.extend_from_slice(&body[at + 2..]);
        assert_eq!(
            decode(&previous, &BincodeCodec::new()).expect("decode"),
            Envelope::RosterPull(RosterPull {
                window: u16::MAX,
                ..pull.clone()
            })
        );
        let reversed = RosterPull {
            ranges: vec![(10, 0)],
            ..pull
        };
        let body = encode_roster_pull(&reversed, &mut codec).expect("encode");
        assert!(matches!(
            decode(&body, &BincodeCodec::new()),
            Err(EnvelopeError::BadRange)
        ));
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
            decode(&[VERSION, 8], &BincodeCodec::new()),
            Err(EnvelopeError::Kind(8))
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
            for kind in [
                KIND_ROSTER_SYNC,
                KIND_JOIN,
                KIND_WELCOME,
                KIND_DOWN_NOTICE,
                KIND_ROSTER_RANGE,
                KIND_ROSTER_PULL,
            ] {
                let mut body = vec![VERSION, kind];
                body.extend_from_slice(&bytes);
                let _ = decode(&body, &BincodeCodec::new());
            }
        }
    }
}
