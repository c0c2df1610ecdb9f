//! The audit log: an append-only, hash-chained record of administrative actions.
//!
//! Tree `audit`: `seq` (u64 BE, from 1) → encoded [`AuditEntry`], plus one record under
//! [`HEAD_KEY`] holding the last entry's `(seq, hash)`. Each entry's hash covers the
//! previous entry's hash and this entry's fields, so editing, reordering or deleting an
//! entry breaks the chain at that entry; the head record also catches a deleted tail.
//!
//! What the chain proves, and what it does not: it detects accidental corruption and a
//! naive edit of the database. Someone able to rewrite the whole tree (every hash after
//! the edit, and the head) is not detected; anchoring [`AuditReport::head`] outside the
//! node (e.g. in a log shipper) is what turns this into evidence against that.

use std::sync::Mutex;

use bincode::{Decode, Encode};
use chorus_protocol::{decode_value, encode_payload};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, now_ms};

/// The hash the first entry chains from.
pub const GENESIS_HASH: [u8; 32] = [0; 32];
/// Key of the head record; not 8 bytes long, so it never collides with an entry's key.
pub const HEAD_KEY: &[u8] = b"head";
/// Longest `actor` accepted, in bytes.
pub const MAX_ACTOR_BYTES: usize = 256;
/// Longest `action` accepted, in bytes.
pub const MAX_ACTION_BYTES: usize = 128;
/// Longest `detail` accepted, in bytes.
pub const MAX_DETAIL_BYTES: usize = 4096;

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When it was appended, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who: `ctl uid=N` for the control socket, `api` for the client protocol.
    pub actor: String,
    /// What, e.g. `log-level` or `api-key.create`.
    pub action: String,
    /// The action's arguments, e.g. `from=info to=debug`.
    pub detail: String,
    /// The previous entry's `hash` ([`GENESIS_HASH`] for the first).
    pub prev_hash: [u8; 32],
    /// `sha256(prev_hash ‖ canonical fields)`, see [`AuditEntry::compute_hash`].
    pub hash: [u8; 32],
}

impl AuditEntry {
    /// The hash this entry should carry: SHA-256 over `prev_hash`, then `seq` and
    /// `at_ms` (u64 BE), then `actor`, `action`, `detail` each as a u32 BE length and
    /// its bytes. Written by hand rather than with bincode so that a codec upgrade can
    /// never change what old hashes mean.
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.prev_hash);
        h.update(self.seq.to_be_bytes());
        h.update(self.at_ms.to_be_bytes());
        for field in [&self.actor, &self.action, &self.detail] {
            h.update((field.len() as u32).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.finalize().into()
    }

    /// The stored form of this entry.
    pub fn encode(&self) -> Vec<u8> {
        encode_payload(self)
    }

    /// Decodes a stored entry.
    pub fn decode(raw: &[u8]) -> Result<AuditEntry, StoreError> {
        decode_value(raw).map_err(|e| StoreError::Corrupt {
            tree: "audit",
            reason: e.to_string(),
        })
    }
}

/// The outcome of walking the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries read (all of them, also those after a break).
    pub entries: u64,
    /// The last entry's `(seq, hash)`, if any: anchor it elsewhere to detect a rewrite.
    pub head: Option<(u64, [u8; 32])>,
    /// The first entry that does not verify, and why; `None` when the chain is intact.
    pub first_broken: Option<(u64, String)>,
}

impl AuditReport {
    /// Whether the whole chain verified.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// A key and value of the tree as stored.
pub type RawRecord = (Vec<u8>, Vec<u8>);

/// The last entry's position and hash, as kept in the head record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
struct Head {
    seq: u64,
    hash: [u8; 32],
}

/// The audit tree with its append lock. Blocking, like the rest of the store.
pub struct AuditLog {
    tree: sled::Tree,
    /// Serialises appends; holds the head so an append needs no read.
    head: Mutex<Head>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Wraps the `audit` tree, reading its head record.
    pub fn open(tree: sled::Tree) -> Result<AuditLog, StoreError> {
        let head = match tree.get(HEAD_KEY)? {
            Some(raw) => decode_value::<Head>(&raw).map_err(|e| StoreError::Corrupt {
                tree: "audit",
                reason: format!("head: {e}"),
            })?,
            None => Head {
                seq: 0,
                hash: GENESIS_HASH,
            },
        };
        Ok(AuditLog {
            tree,
            head: Mutex::new(head),
        })
    }

    /// Appends one entry (entry and head in one atomic sled batch) and returns it. Not
    /// flushed: see [`Store::audit_append`]. Over-long fields are refused unwritten.
    pub fn append(
        &self,
        at_ms: u64,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<AuditEntry, StoreError> {
        for (field, value, max) in [
            ("actor", actor, MAX_ACTOR_BYTES),
            ("action", action, MAX_ACTION_BYTES),
            ("detail", detail, MAX_DETAIL_BYTES),
        ] {
            if value.len() > max {
                return Err(StoreError::Invalid {
                    field,
                    reason: format!("{} bytes, at most {max}", value.len()),
                });
            }
        }
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let mut entry = AuditEntry {
            seq: head.seq + 1,
            at_ms,
            actor: actor.to_owned(),
            action: action.to_owned(),
            detail: detail.to_owned(),
            prev_hash: head.hash,
            hash: [0; 32],
        };
        entry.hash = entry.compute_hash();
        let next = Head {
            seq: entry.seq,
            hash: entry.hash,
        };
        let mut batch = sled::Batch::default();
        batch.insert(&entry.seq.to_be_bytes()[..], entry.encode());
        batch.insert(HEAD_KEY, encode_payload(&next));
        self.tree.apply_batch(batch)?;
        *head = next;
        Ok(entry)
    }

    /// Every record of the tree (entries and head) as stored, read under the append
    /// lock so the head matches the last entry (for snapshots).
    pub fn export(&self) -> Result<Vec<RawRecord>, StoreError> {
        let _head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = Vec::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            records.push((key.to_vec(), value.to_vec()));
        }
        Ok(records)
    }

    /// The entry at `seq`, if present.
    pub fn get(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        self.tree
            .get(seq.to_be_bytes())?
            .map(|raw| AuditEntry::decode(&raw))
            .transpose()
    }

    /// Number of entries appended through this log (the head's seq): O(1).
    pub fn len(&self) -> u64 {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).seq
    }

    /// Whether nothing was ever appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw tree, for offline tools and tests. Writing to it bypasses the chain, and
    /// [`AuditLog::verify`] will say so.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Walks the whole chain in order (O(n) reads) and reports the first entry that
    /// does not verify. An unreadable tree is an error; a corrupt entry is a break.
    pub fn verify(&self) -> Result<AuditReport, StoreError> {
        let mut entries = 0u64;
        let mut prev = Head {
            seq: 0,
            hash: GENESIS_HASH,
        };
        let mut first_broken: Option<(u64, String)> = None;
        let mut head_record = None;
        let mut last = None;
        for record in self.tree.iter() {
            let (key, raw) = record?;
            if key.as_ref() == HEAD_KEY {
                head_record = Some(raw);
                continue;
            }
            entries += 1;
            let Ok(key_bytes) = <[u8; 8]>::try_from(key.as_ref()) else {
                first_broken.get_or_insert((prev.seq + 1, format!("foreign key {key:?}")));
                continue;
            };
            let seq = u64::from_be_bytes(key_bytes);
            let expected = prev.seq + 1;
            let found = AuditEntry::decode(&raw);
            if first_broken.is_none() {
                first_broken = check(expected, seq, &prev, &found);
            }
            // Continue from what is stored, so `head` describes the tree as it is.
            prev = match found {
                Ok(entry) => Head {
                    seq,
                    hash: entry.hash,
                },
                Err(_) => Head {
                    seq,
                    hash: GENESIS_HASH,
                },
            };
            last = Some(prev);
        }
        if first_broken.is_none()
            && let Some(raw) = head_record
        {
            match decode_value::<Head>(&raw) {
                Ok(recorded) if Some(recorded) == last => {}
                Ok(recorded) if recorded.seq > last.map_or(0, |l| l.seq) => {
                    first_broken = Some((
                        last.map_or(1, |l| l.seq + 1),
                        format!(
                            "missing: the log ends at {} but its head records entry {}",
                            last.map_or(0, |l| l.seq),
                            recorded.seq
                        ),
                    ));
                }
                Ok(recorded) if recorded.seq < last.map_or(0, |l| l.seq) => {
                    first_broken = Some((
                        recorded.seq + 1,
                        format!(
                            "appended outside the log: its head records entry {}",
                            recorded.seq
                        ),
                    ));
                }
                Ok(recorded) => {
                    first_broken = Some((
                        recorded.seq,
                        "the head record does not match this entry's hash".into(),
                    ));
                }
                Err(e) => first_broken = Some((last.map_or(1, |l| l.seq), format!("head: {e}"))),
            }
        }
        Ok(AuditReport {
            entries,
            head: last.map(|l| (l.seq, l.hash)),
            first_broken,
        })
    }
}

/// Checks one stored entry against its position and the entry before it.
fn check(
    expected: u64,
    key_seq: u64,
    prev: &Head,
    found: &Result<AuditEntry, StoreError>,
) -> Option<(u64, String)> {
    if key_seq != expected {
        return Some((
            expected,
            format!("missing: the entry after {} is {key_seq}", prev.seq),
        ));
    }
    let entry = match found {
        Ok(entry) => entry,
        Err(e) => return Some((key_seq, format!("unreadable: {e}"))),
    };
    if entry.seq != key_seq {
        Some((
            key_seq,
            format!("out of place: entry {} is stored at {key_seq}", entry.seq),
        ))
    } else if entry.prev_hash != prev.hash {
        Some((
            key_seq,
            format!("prev_hash does not match entry {}'s hash", prev.seq),
        ))
    } else if entry.compute_hash() != entry.hash {
        Some((key_seq, "hash mismatch: the entry was edited".into()))
    } else {
        None
    }
}

impl Store {
    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Appends an audit entry stamped now and makes it durable before returning, so an
    /// action audited first is never in effect without its record.
    pub fn audit_append(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<AuditEntry, StoreError> {
        let entry = self.audit.append(now_ms(), actor, action, detail)?;
        self.sync_meta()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: u64) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log = AuditLog::open(db.open_tree("audit").unwrap()).unwrap();
        for i in 1..=n {
            let e = log
                .append(1_000 + i, "ctl uid=0", "test", &format!("n={i}"))
                .unwrap();
            assert_eq!(e.seq, i);
        }
        (dir, log)
    }

    fn broken_at(log: &AuditLog) -> Option<u64> {
        log.verify().unwrap().first_broken.map(|(seq, _)| seq)
    }

    fn put(log: &AuditLog, seq: u64, entry: &AuditEntry) {
        log.tree.insert(seq.to_be_bytes(), entry.encode()).unwrap();
    }

    #[test]
    fn an_empty_log_verifies() {
        let (_dir, log) = log_with(0);
        let report = log.verify().unwrap();
        assert_eq!(report.entries, 0);
        assert!(report.is_intact());
        assert_eq!(report.head, None);
    }

    #[test]
    fn a_chain_of_n_verifies_and_chains_from_zero() {
        let (_dir, log) = log_with(20);
        let report = log.verify().unwrap();
        assert_eq!(report.entries, 20);
        assert!(report.is_intact(), "{report:?}");
        let first = log.get(1).unwrap().unwrap();
        assert_eq!(first.prev_hash, GENESIS_HASH);
        assert_eq!(log.get(2).unwrap().unwrap().prev_hash, first.hash);
        assert_eq!(report.head.unwrap().0, 20);
        assert_eq!(log.len(), 20);
    }

    #[test]
    fn the_chain_continues_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log = AuditLog::open(db.open_tree("audit").unwrap()).unwrap();
        log.append(1, "a", "x", "").unwrap();
        drop(log);
        let log = AuditLog::open(db.open_tree("audit").unwrap()).unwrap();
        assert_eq!(log.append(2, "a", "x", "").unwrap().seq, 2);
        assert!(log.verify().unwrap().is_intact());
    }

    #[test]
    fn an_edited_detail_breaks_at_that_entry() {
        let (_dir, log) = log_with(10);
        let mut e = log.get(4).unwrap().unwrap();
        e.detail = "n=400".into();
        put(&log, 4, &e);
        let report = log.verify().unwrap();
        let (seq, reason) = report.first_broken.unwrap();
        assert_eq!(seq, 4);
        assert!(reason.contains("edited"), "{reason}");
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_at_the_next_entry() {
        let (_dir, log) = log_with(10);
        let mut e = log.get(4).unwrap().unwrap();
        e.actor = "someone else".into();
        e.hash = e.compute_hash();
        put(&log, 4, &e);
        assert_eq!(broken_at(&log), Some(5));
    }

    #[test]
    fn a_deleted_entry_breaks_where_it_was() {
        let (_dir, log) = log_with(10);
        log.tree.remove(7u64.to_be_bytes()).unwrap();
        assert_eq!(broken_at(&log), Some(7));
    }

    #[test]
    fn a_deleted_tail_is_caught_by_the_head() {
        let (_dir, log) = log_with(10);
        log.tree.remove(10u64.to_be_bytes()).unwrap();
        assert_eq!(broken_at(&log), Some(10));
    }

    #[test]
    fn swapped_entries_break_at_the_first_of_them() {
        let (_dir, log) = log_with(10);
        let a = log.get(3).unwrap().unwrap();
        let b = log.get(6).unwrap().unwrap();
        put(&log, 3, &b);
        put(&log, 6, &a);
        assert_eq!(broken_at(&log), Some(3));
    }

    #[test]
    fn swapped_and_renumbered_entries_still_break() {
        let (_dir, log) = log_with(10);
        let mut a = log.get(3).unwrap().unwrap();
        let mut b = log.get(4).unwrap().unwrap();
        std::mem::swap(&mut a.seq, &mut b.seq);
        put(&log, 3, &b);
        put(&log, 4, &a);
        assert_eq!(broken_at(&log), Some(3));
    }

    #[test]
    fn garbage_in_an_entry_is_a_break_not_an_error() {
        let (_dir, log) = log_with(5);
        log.tree.insert(2u64.to_be_bytes(), &b"junk"[..]).unwrap();
        assert_eq!(broken_at(&log), Some(2));
    }

    #[test]
    fn over_long_fields_are_refused_unwritten() {
        let (_dir, log) = log_with(1);
        let long = "x".repeat(MAX_DETAIL_BYTES + 1);
        assert!(matches!(
            log.append(2, "a", "b", &long),
            Err(StoreError::Invalid {
                field: "detail",
                ..
            })
        ));
        assert_eq!(log.len(), 1);
        assert!(log.verify().unwrap().is_intact());
    }
}
