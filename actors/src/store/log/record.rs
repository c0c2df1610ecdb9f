//! The partition log's record format: pure encoding and decoding, no IO.
//!
//! ```text
//! segment  = magic (8 bytes, "CHORUSL" ‖ format version) ‖ record*
//! record   = body_len (u32 LE) ‖ crc (u32 LE) ‖ kind (u8) ‖ partition (u16 LE)
//!            ‖ sequence (u64 LE) ‖ body (body_len bytes)
//! crc      = CRC-32 (IEEE) of body_len ‖ kind ‖ partition ‖ sequence ‖ body
//! ```
//!
//! A record is written whole by one `write` and covered by the group's `fdatasync`; a
//! crash can leave the tail of the last segment torn (short) or holding garbage. The
//! length is checked against [`MAX_BODY_BYTES`] before anything is allocated, and the
//! checksum before the body is trusted, so a scan stops at the first record that is not
//! exactly what was written.

use chorus_protocol::PartitionId;

/// The first bytes of every segment: a name and the format version (1).
pub const SEGMENT_MAGIC: [u8; 8] = *b"CHORUSL\x01";
/// Bytes of a record's header.
pub const HEADER_LEN: usize = 4 + 4 + 1 + 2 + 8;
/// The largest record body accepted: far above any item (at most ~10 KB encoded), far
/// below what a corrupt length could make a reader allocate.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A stored item with its receipt (a `StoredItem`); a later record of the same id
    /// replaces it (a rewritten verdict).
    Item = 1,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordKind::Item),
            _ => None,
        }
    }
}

/// A record's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the body is.
    pub kind: RecordKind,
    /// The partition the record belongs to.
    pub partition: PartitionId,
    /// Its sequence number within the partition, from 1, assigned in log order.
    pub sequence: u64,
}

/// Appends one record to `out`.
pub fn encode_record(header: RecordHeader, body: &[u8], out: &mut Vec<u8>) {
    debug_assert!(body.len() <= MAX_BODY_BYTES);
    let mut fields = [0u8; 11];
    fields[0] = header.kind as u8;
    fields[1..3].copy_from_slice(&header.partition.to_le_bytes());
    fields[3..11].copy_from_slice(&header.sequence.to_le_bytes());
    let len = (body.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&fields);
    crc.update(body);
    out.reserve(HEADER_LEN + body.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&fields);
    out.extend_from_slice(body);
}

/// Why a scan stopped before the end of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanStop {
    /// The bytes end inside a record (or its header): a write cut short.
    #[error("torn record at offset {offset}")]
    Torn {
        /// Where the record starts.
        offset: usize,
    },
    /// A record that is not what was written: bad length, kind or checksum.
    #[error("corrupt record at offset {offset}: {reason}")]
    Corrupt {
        /// Where the record starts.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl ScanStop {
    /// Where the bad record starts: everything before it is intact.
    pub fn offset(&self) -> usize {
        match self {
            ScanStop::Torn { offset } | ScanStop::Corrupt { offset, .. } => *offset,
        }
    }
}

/// One intact record found by [`decode_record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// Its header.
    pub header: RecordHeader,
    /// Its body.
    pub body: &'a [u8],
    /// Bytes the whole record takes (header and body).
    pub len: usize,
}

/// Decodes the record at the start of `bytes`, which starts at `offset` in its segment
/// (for the error). `Ok(None)` when `bytes` is empty.
pub fn decode_record(bytes: &[u8], offset: usize) -> Result<Option<Found<'_>>, ScanStop> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(ScanStop::Torn { offset });
    };
    let body_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    if body_len > MAX_BODY_BYTES {
        return Err(ScanStop::Corrupt {
            offset,
            reason: "length over the record limit",
        });
    }
    let Some(body) = bytes.get(HEADER_LEN..HEADER_LEN + body_len) else {
        return Err(ScanStop::Torn { offset });
    };
    let stored_crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[0..4]);
    crc.update(&header[8..]);
    crc.update(body);
    if crc.finalize() != stored_crc {
        return Err(ScanStop::Corrupt {
            offset,
            reason: "checksum mismatch",
        });
    }
    let Some(kind) = RecordKind::from_byte(header[8]) else {
        return Err(ScanStop::Corrupt {
            offset,
            reason: "unknown record kind",
        });
    };
    let partition = u16::from_le_bytes(header[9..11].try_into().expect("2 bytes"));
    let sequence = u64::from_le_bytes(header[11..19].try_into().expect("8 bytes"));
    Ok(Some(Found {
        header: RecordHeader {
            kind,
            partition,
            sequence,
        },
        body,
        len: HEADER_LEN + body_len,
    }))
}

/// The intact records of a segment's bytes after its magic, with their offsets (from
/// the segment's start), and why the scan stopped early, if it did.
pub fn scan(segment: &[u8]) -> (Vec<(usize, Found<'_>)>, Option<ScanStop>) {
    let mut found = Vec::new();
    let mut offset = SEGMENT_MAGIC.len();
    if segment.len() < offset || segment[..offset] != SEGMENT_MAGIC {
        let stop = if SEGMENT_MAGIC.starts_with(segment) {
            ScanStop::Torn { offset: 0 }
        } else {
            ScanStop::Corrupt {
                offset: 0,
                reason: "not a Chorus log segment",
            }
        };
        return (found, Some(stop));
    }
    loop {
        match decode_record(&segment[offset..], offset) {
            Ok(Some(record)) => {
                let len = record.len;
                found.push((offset, record));
                offset += len;
            }
            Ok(None) => return (found, None),
            Err(stop) => return (found, Some(stop)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn segment(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = SEGMENT_MAGIC.to_vec();
        for (i, body) in bodies.iter().enumerate() {
            let header = RecordHeader {
                kind: RecordKind::Item,
                partition: i as u16,
                sequence: i as u64 + 1,
            };
            encode_record(header, body, &mut out);
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let bytes = segment(&[b"one", b"", b"three"]);
        let (found, stop) = scan(&bytes);
        assert_eq!(stop, None);
        let bodies: Vec<&[u8]> = found.iter().map(|(_, r)| r.body).collect();
        assert_eq!(bodies, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(found[2].1.header.sequence, 3);
        assert_eq!(found[1].0, SEGMENT_MAGIC.len() + HEADER_LEN + 3);
    }

    #[test]
    fn a_length_over_the_limit_is_corrupt_before_anything_is_read() {
        let mut bytes = SEGMENT_MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; HEADER_LEN]);
        let (_, stop) = scan(&bytes);
        assert!(matches!(stop, Some(ScanStop::Corrupt { offset: 8, .. })));
    }

    #[test]
    fn a_foreign_file_is_not_a_segment() {
        let (_, stop) = scan(b"hello, world");
        assert!(matches!(stop, Some(ScanStop::Corrupt { offset: 0, .. })));
        let (_, stop) = scan(b"CHOR");
        assert_eq!(stop, Some(ScanStop::Torn { offset: 0 }));
    }

    proptest! {
        /// Cut anywhere: the scan keeps exactly the records wholly before the cut.
        #[test]
        fn a_cut_keeps_every_whole_record_before_it(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8),
            cut_at in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
            let bytes = segment(&refs);
            let cut = cut_at.index(bytes.len() + 1);
            let (found, stop) = scan(&bytes[..cut]);
            let whole = found.iter().map(|(o, r)| o + r.len).max().unwrap_or(SEGMENT_MAGIC.len().min(cut));
            prop_assert!(whole <= cut);
            for (i, (_, record)) in found.iter().enumerate() {
                prop_assert_eq!(record.body, refs[i]);
            }
            if cut == bytes.len() {
                prop_assert_eq!(found.len(), bodies.len());
                prop_assert_eq!(stop, None);
            } else if cut >= SEGMENT_MAGIC.len() && cut > whole {
                prop_assert_eq!(stop, Some(ScanStop::Torn { offset: whole }));
            }
        }

        /// Flip any byte: the scan never returns a record that differs from what was
        /// written, and stops at or before the flipped record.
        #[test]
        fn a_flipped_byte_is_never_returned_as_data(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
            let mut bytes = segment(&refs);
            let at = at.index(bytes.len());
            bytes[at] ^= flip;
            let (found, _) = scan(&bytes);
            for (i, (offset, record)) in found.iter().enumerate() {
                prop_assert!(offset + record.len <= at);
                prop_assert_eq!(record.body, refs[i]);
            }
        }
    }
}
