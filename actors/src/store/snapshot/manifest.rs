//! A snapshot's manifest: what it holds and the checksums that prove it intact. Pure
//! encoding and decoding, no IO.
//!
//! ```text
//! manifest.json = body (one line of JSON) ‖ "\n" ‖ "sha256 " ‖ hex(SHA-256(body)) ‖ "\n"
//! ```
//!
//! The body is JSON so an operator can read what a snapshot holds without Chorus; the
//! trailing SHA-256 catches a damaged or edited manifest before anything is restored
//! from it. Segment checksums are CRC-32: they catch damage (the records inside carry
//! their own CRCs too), not a deliberate forgery.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::log::LogPosition;
use crate::store::log::record::SEGMENT_MAGIC;

/// The manifest's file name in a snapshot directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this version writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest manifest read: far above one with many audit entries (~5 KB each at
/// most), far below what a corrupt file could make a reader allocate.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// What precedes the checksum on the manifest's last line.
const CHECKSUM_PREFIX: &[u8] = b"sha256 ";

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] when written.
    pub format: u32,
    /// The id of the node the snapshot was taken on.
    pub node: String,
    /// The store's partition count.
    pub partitions: u16,
    /// When the snapshot began, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The end of the log when the snapshot began: every record acknowledged before
    /// then lies before it.
    pub end: Position,
    /// The log's segments, ascending; the last ends at `end`.
    pub segments: Vec<SegmentEntry>,
    /// Records in the segments (an item rewritten or copied forward counts each time).
    pub records: u64,
    /// The `api_keys` tree: SHA-256 of a key → its record, hex.
    pub api_keys: Vec<TreeRecord>,
    /// The `revoked_keys` tree: SHA-256 of a key → when it was revoked, hex.
    #[serde(default)]
    pub revoked_keys: Vec<TreeRecord>,
    /// The `audit` tree (entries and head), hex.
    pub audit: Vec<TreeRecord>,
    /// The `events` tree: origin and sequence → event, hex. Absent from manifests
    /// made before events existed. The trees derived from it (by time, heads, version
    /// status, privacy spent) are rebuilt from it on restore.
    #[serde(default)]
    pub events: Vec<TreeRecord>,
}

/// A log position in the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The segment's number.
    pub segment: u64,
    /// The byte offset within it.
    pub offset: u64,
}

impl From<LogPosition> for Position {
    fn from(p: LogPosition) -> Position {
        Position {
            segment: p.segment,
            offset: p.offset,
        }
    }
}

impl From<Position> for LogPosition {
    fn from(p: Position) -> LogPosition {
        LogPosition {
            segment: p.segment,
            offset: p.offset,
        }
    }
}

/// One segment of the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Its number (its file is `log/<number, 20 digits>.seg`).
    pub segment: u64,
    /// Its length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of those bytes.
    pub crc32: u32,
}

/// One key and value of a sled tree, hex encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeRecord {
    /// The key, hex.
    pub key: String,
    /// The value, hex.
    pub value: String,
}

impl TreeRecord {
    /// The record of a raw key and value.
    pub fn new(key: &[u8], value: &[u8]) -> TreeRecord {
        TreeRecord {
            key: hex::encode(key),
            value: hex::encode(value),
        }
    }

    /// The raw key and value; `None` if either is not hex.
    pub fn decode(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        Some((hex::decode(&self.key).ok()?, hex::decode(&self.value).ok()?))
    }
}

/// Why a manifest is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The last line is not the checksum: the file is cut short or not a manifest.
    #[error("no checksum line: truncated or not a snapshot manifest")]
    NoChecksum,
    /// The body does not match its checksum: the manifest was damaged or edited.
    #[error("checksum mismatch: the manifest was damaged or edited")]
    ChecksumMismatch,
    /// The body is not the manifest's JSON.
    #[error("not a snapshot manifest: {0}")]
    Json(String),
    /// Written by a format this version cannot read.
    #[error("manifest format {found}, this version reads {FORMAT_VERSION}")]
    UnsupportedFormat {
        /// The format in the file.
        found: u32,
    },
    /// The fields contradict each other (e.g. segments out of order).
    #[error("inconsistent manifest: {0}")]
    Inconsistent(String),
}

impl Manifest {
    /// The file's bytes: the body, then its checksum line.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("a manifest always serialises");
        let digest = hex::encode(Sha256::digest(&out));
        out.push(b'\n');
        out.extend_from_slice(CHECKSUM_PREFIX);
        out.extend_from_slice(digest.as_bytes());
        out.push(b'\n');
        out
    }

    /// Reads [`Manifest::encode`]'s form, checking the checksum, the format and that
    /// the fields agree with each other.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let bytes = bytes.strip_suffix(b"\n").ok_or(ManifestError::NoChecksum)?;
        let split = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .ok_or(ManifestError::NoChecksum)?;
        let (body, line) = (&bytes[..split], &bytes[split + 1..]);
        let digest = line
            .strip_prefix(CHECKSUM_PREFIX)
            .ok_or(ManifestError::NoChecksum)?;
        if digest != hex::encode(Sha256::digest(body)).as_bytes() {
            return Err(ManifestError::ChecksumMismatch);
        }
        // The format first, so a newer manifest is named as such, not as bad JSON.
        #[derive(Deserialize)]
        struct Versioned {
            format: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        if versioned.format != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedFormat {
                found: versioned.format,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The fields agree: segments ascending, each at least a segment header, the last
    /// one ending at `end`, at least one partition.
    fn check(&self) -> Result<(), ManifestError> {
        let bad = |reason: String| Err(ManifestError::Inconsistent(reason));
        if self.partitions == 0 {
            return bad("zero partitions".into());
        }
        let Some(last) = self.segments.last() else {
            return bad("no segments".into());
        };
        if self
            .segments
            .windows(2)
            .any(|w| w[0].segment >= w[1].segment)
        {
            return bad("segments not in ascending order".into());
        }
        if let Some(short) = self
            .segments
            .iter()
            .find(|s| s.bytes < SEGMENT_MAGIC.len() as u64)
        {
            return bad(format!("segment {} shorter than its header", short.segment));
        }
        if (last.segment, last.bytes) != (self.end.segment, self.end.offset) {
            return bad(format!(
                "the last segment ({}, {} bytes) does not end at the end position ({}, {})",
                last.segment, last.bytes, self.end.segment, self.end.offset
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            node: "node-1".into(),
            partitions: 8,
            created_at_ms: 1,
            end: Position {
                segment: 3,
                offset: 40,
            },
            segments: vec![
                SegmentEntry {
                    segment: 1,
                    bytes: 100,
                    crc32: 7,
                },
                SegmentEntry {
                    segment: 3,
                    bytes: 40,
                    crc32: 9,
                },
            ],
            records: 4,
            api_keys: vec![TreeRecord::new(b"k", b"v")],
            revoked_keys: vec![],
            audit: vec![],
            events: vec![TreeRecord::new(b"e", b"v")],
        }
    }

    #[test]
    fn a_manifest_round_trips() {
        let m = manifest();
        assert_eq!(Manifest::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn any_changed_byte_of_the_body_is_a_checksum_mismatch() {
        let bytes = manifest().encode();
        let body_len = bytes.iter().position(|&b| b == b'\n').unwrap();
        for at in [0, body_len / 2, body_len - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                Manifest::decode(&bad),
                Err(ManifestError::ChecksumMismatch),
                "{at}"
            );
        }
    }

    #[test]
    fn a_truncated_manifest_has_no_checksum() {
        let bytes = manifest().encode();
        for cut in [0, 10, bytes.iter().position(|&b| b == b'\n').unwrap() + 1] {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn another_format_is_named() {
        let mut m = manifest();
        m.format = 2;
        assert_eq!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::UnsupportedFormat { found: 2 })
        );
    }

    #[test]
    fn contradictory_fields_are_refused() {
        let mut m = manifest();
        m.end.offset = 41;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::Inconsistent(_))
        ));
        let mut m = manifest();
        m.segments.swap(0, 1);
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::Inconsistent(_))
        ));
    }
}
