//! The cluster's API keys as a convergent set, so that every member can hold all of
//! them and any two members that exchange their sets end up equal.
//!
//! Two grow-only sets, each a sled tree keyed by the SHA-256 of a key:
//!
//! ```text
//! api_keys      hash → ApiKeyRecord (bincode)   immutable once written
//! revoked_keys  hash → revoked_at (u64 BE, ms)  a revocation is never withdrawn
//! ```
//!
//! Merging is a union: a record for a hash already held is ignored (records are never
//! rewritten, and a hash names one random key), and of two revocation times of one key
//! the earlier wins, so the merge is commutative, associative and idempotent. Keeping
//! revocations in a tree of their own leaves the `api_keys` encoding as it always was:
//! data directories written before revocation existed open unchanged.
//!
//! The revoked hashes are also kept in memory, with a counter that grows with them, so
//! that an open connection can check its key before every request for the price of an
//! atomic load.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use chorus_protocol::{
    ApiKeyInfo, KEY_ID_HEX_LEN, MAX_API_KEY_NAME_BYTES, MAX_API_KEYS, Role, decode_value,
    encode_payload,
};
use tracing::warn;
use xxhash_rust::xxh3::Xxh3;

use super::{ApiKeyRecord, StoreError};

/// The SHA-256 of an API key: how the store and its peers name the key.
pub type KeyHash = [u8; 32];

/// A key's state, as a hello needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// This node holds no record of the key (another member may).
    Unknown,
    /// The key is valid, with this role.
    Active(Role),
    /// The key was revoked: it never authenticates again.
    Revoked,
}

/// One key as `keys list` shows it: its hash, its record, and its revocation if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyEntry {
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// What was recorded when it was created.
    pub record: ApiKeyRecord,
    /// When it was revoked, milliseconds since the Unix epoch.
    pub revoked_at: Option<u64>,
}

impl ApiKeyEntry {
    /// The entry as the client protocol shows it (an id, never the hash whole).
    pub fn info(&self) -> ApiKeyInfo {
        ApiKeyInfo {
            id: key_id(&self.hash),
            role: self.record.role,
            name: self.record.name.clone(),
            created_at: self.record.created_at,
            revoked_at: self.revoked_at,
        }
    }
}

/// The id of a key: the first [`KEY_ID_HEX_LEN`] hex digits of its SHA-256.
pub fn key_id(hash: &KeyHash) -> String {
    let mut id = hex::encode(hash);
    id.truncate(KEY_ID_HEX_LEN);
    id
}

/// Key records and revocations, as members exchange them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    /// Keys by hash.
    pub keys: Vec<(KeyHash, ApiKeyRecord)>,
    /// Revocations by hash, with their time (ms since the Unix epoch).
    pub revocations: Vec<(KeyHash, u64)>,
}

impl KeySet {
    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.revocations.is_empty()
    }
}

/// The two trees and what is kept in memory beside them.
pub(crate) struct ApiKeys {
    pub(super) keys: sled::Tree,
    revoked: sled::Tree,
    /// Every revoked hash; read before each request of an open connection.
    revoked_set: RwLock<HashSet<KeyHash>>,
    /// How many revocations are known; grows with `revoked_set`, so a reader that saw
    /// the same count has nothing new to check.
    revocations: AtomicU64,
    /// Bumped after every write, so a cached digest knows when it is stale.
    changes: AtomicU64,
    /// The digest and the `changes` it was computed at.
    digest: Mutex<Option<(u64, u64)>>,
    /// Serialises "count, then insert", which keeps the bound exact.
    writer: Mutex<()>,
}

fn corrupt(tree: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        tree,
        reason: reason.to_string(),
    }
}

fn hash_of(raw: &[u8], tree: &'static str) -> Result<KeyHash, StoreError> {
    raw.try_into()
        .map_err(|_| corrupt(tree, format!("a key of {} bytes, not 32", raw.len())))
}

fn time_of(raw: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| corrupt("revoked_keys", "a revocation time that is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_record(raw: &[u8]) -> Result<ApiKeyRecord, StoreError> {
    decode_value(raw).map_err(|e| corrupt("api_keys", e))
}

fn too_many() -> StoreError {
    StoreError::TooManyKeys { max: MAX_API_KEYS }
}

impl ApiKeys {
    /// Opens the trees and loads the revoked hashes.
    pub(crate) fn open(db: &sled::Db) -> Result<ApiKeys, StoreError> {
        let keys = db.open_tree("api_keys")?;
        let revoked = db.open_tree("revoked_keys")?;
        let mut revoked_set = HashSet::new();
        for entry in revoked.iter() {
            let (hash, _) = entry?;
            revoked_set.insert(hash_of(&hash, "revoked_keys")?);
        }
        Ok(ApiKeys {
            keys,
            revoked,
            revocations: AtomicU64::new(revoked_set.len() as u64),
            revoked_set: RwLock::new(revoked_set),
            changes: AtomicU64::new(0),
            digest: Mutex::new(None),
            writer: Mutex::new(()),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    fn mark_revoked(&self, hashes: impl IntoIterator<Item = KeyHash>) {
        let mut set = self.revoked_set.write().unwrap_or_else(|p| p.into_inner());
        for hash in hashes {
            if set.insert(hash) {
                self.revocations.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// How many keys are held.
    pub(crate) fn count(&self) -> usize {
        self.keys.len()
    }

    /// Stores a new key's record; refused past [`MAX_API_KEYS`].
    pub(crate) fn insert_new(
        &self,
        hash: KeyHash,
        record: &ApiKeyRecord,
    ) -> Result<(), StoreError> {
        let _writer = self.writer();
        if self.keys.len() >= MAX_API_KEYS {
            return Err(too_many());
        }
        self.keys.insert(hash, encode_payload(record))?;
        self.changed();
        Ok(())
    }

    /// Whether `hash` is revoked; memory only.
    pub(crate) fn is_revoked(&self, hash: &KeyHash) -> bool {
        self.revoked_set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(hash)
    }

    /// How many revocations are known; it only grows.
    pub(crate) fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }

    /// The state of the key whose SHA-256 is `hash`.
    pub(crate) fn status(&self, hash: &KeyHash) -> Result<KeyStatus, StoreError> {
        if self.is_revoked(hash) {
            return Ok(KeyStatus::Revoked);
        }
        match self.keys.get(hash)? {
            Some(raw) => Ok(KeyStatus::Active(decode_record(&raw)?.role)),
            None => Ok(KeyStatus::Unknown),
        }
    }

    fn revoked_at(&self, hash: &KeyHash) -> Result<Option<u64>, StoreError> {
        self.revoked.get(hash)?.map(|raw| time_of(&raw)).transpose()
    }

    /// Every key, ordered by hash, with its revocation.
    pub(crate) fn list(&self) -> Result<Vec<ApiKeyEntry>, StoreError> {
        let mut out = Vec::with_capacity(self.keys.len());
        for entry in self.keys.iter() {
            let (hash, raw) = entry?;
            let hash = hash_of(&hash, "api_keys")?;
            out.push(ApiKeyEntry {
                hash,
                record: decode_record(&raw)?,
                revoked_at: self.revoked_at(&hash)?,
            });
        }
        Ok(out)
    }

    /// The one key whose id (hex of its hash) starts with `prefix`.
    pub(crate) fn resolve(&self, prefix: &str) -> Result<KeyHash, StoreError> {
        let mut found = None;
        let mut matches = 0;
        for entry in self.keys.iter() {
            let (hash, _) = entry?;
            if hex::encode(&hash).starts_with(prefix) {
                matches += 1;
                found = Some(hash_of(&hash, "api_keys")?);
            }
        }
        match (found, matches) {
            (Some(hash), 1) => Ok(hash),
            (None, _) => Err(StoreError::UnknownKey { id: prefix.into() }),
            (Some(_), matches) => Err(StoreError::AmbiguousKey {
                id: prefix.into(),
                matches,
            }),
        }
    }

    /// Revokes the key `hash` at `now` (ms); a key revoked already keeps its first time.
    pub(crate) fn revoke(&self, hash: &KeyHash, now: u64) -> Result<ApiKeyEntry, StoreError> {
        let _writer = self.writer();
        let Some(raw) = self.keys.get(hash)? else {
            return Err(StoreError::UnknownKey { id: key_id(hash) });
        };
        let record = decode_record(&raw)?;
        let revoked_at = match self.revoked_at(hash)? {
            Some(at) => at,
            None => {
                if self.revoked.len() >= MAX_API_KEYS {
                    return Err(too_many());
                }
                self.revoked.insert(hash, &now.to_be_bytes()[..])?;
                self.mark_revoked([*hash]);
                self.changed();
                now
            }
        };
        Ok(ApiKeyEntry {
            hash: *hash,
            record,
            revoked_at: Some(revoked_at),
        })
    }

    /// Applies a peer's keys and revocations; returns how many entries changed this
    /// node's state. Refused whole, with nothing changed, if the result would hold more
    /// than [`MAX_API_KEYS`] keys or revocations, or if a record is malformed.
    pub(crate) fn merge(&self, set: &KeySet) -> Result<usize, StoreError> {
        if set.keys.len() > MAX_API_KEYS || set.revocations.len() > MAX_API_KEYS {
            return Err(too_many());
        }
        if let Some((_, record)) = set
            .keys
            .iter()
            .find(|(_, r)| r.name.len() > MAX_API_KEY_NAME_BYTES)
        {
            return Err(StoreError::Invalid {
                field: "name",
                reason: format!(
                    "{} bytes, at most {MAX_API_KEY_NAME_BYTES}",
                    record.name.len()
                ),
            });
        }
        let _writer = self.writer();
        let mut new_keys = sled::Batch::default();
        let mut added_keys = HashSet::new();
        for (hash, record) in &set.keys {
            match self.keys.get(hash)? {
                None if added_keys.insert(*hash) => {
                    new_keys.insert(&hash[..], encode_payload(record))
                }
                None => {}
                Some(raw) => {
                    let differs = decode_record(&raw)? != *record;
                    if differs {
                        // Never rewritten: a hash names one random key, so a differing
                        // record is a peer's bug, not news.
                        warn!(key = %key_id(hash), "a peer holds another record for a key; kept ours");
                    }
                }
            }
        }
        // The earliest time each hash is revoked at in the peer's set, then only what
        // is new here or earlier than what is held.
        let mut earliest: HashMap<KeyHash, u64> = HashMap::new();
        for &(hash, at) in &set.revocations {
            earliest
                .entry(hash)
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
        let mut revocations = sled::Batch::default();
        let mut updated = 0;
        let mut newly_revoked = Vec::new();
        for (hash, at) in earliest {
            let news = match self.revoked_at(&hash)? {
                None => {
                    newly_revoked.push(hash);
                    true
                }
                Some(ours) => at < ours,
            };
            if news {
                revocations.insert(&hash[..], &at.to_be_bytes()[..]);
                updated += 1;
            }
        }
        if self.keys.len() + added_keys.len() > MAX_API_KEYS
            || self.revoked.len() + newly_revoked.len() > MAX_API_KEYS
        {
            return Err(too_many());
        }
        let changed = added_keys.len() + updated;
        if changed == 0 {
            return Ok(0);
        }
        // Revocations first: a key and its revocation learned together must never be
        // valid here, even for a moment.
        self.revoked.apply_batch(revocations)?;
        self.mark_revoked(newly_revoked);
        self.keys.apply_batch(new_keys)?;
        self.changed();
        Ok(changed)
    }

    /// Everything held.
    pub(crate) fn state(&self) -> Result<KeySet, StoreError> {
        self.missing_from(&KeySet::default())
    }

    /// What this node holds that `theirs` lacks: keys they do not have, and revocations
    /// they do not have or hold with a later time.
    pub(crate) fn missing_from(&self, theirs: &KeySet) -> Result<KeySet, StoreError> {
        let their_keys: HashSet<&KeyHash> = theirs.keys.iter().map(|(h, _)| h).collect();
        let their_revocations: HashMap<&KeyHash, u64> =
            theirs.revocations.iter().map(|(h, at)| (h, *at)).collect();
        let mut out = KeySet::default();
        for entry in self.keys.iter() {
            let (hash, raw) = entry?;
            let hash = hash_of(&hash, "api_keys")?;
            if !their_keys.contains(&hash) {
                out.keys.push((hash, decode_record(&raw)?));
            }
        }
        for entry in self.revoked.iter() {
            let (hash, raw) = entry?;
            let hash = hash_of(&hash, "revoked_keys")?;
            let at = time_of(&raw)?;
            if their_revocations
                .get(&hash)
                .is_none_or(|theirs| *theirs > at)
            {
                out.revocations.push((hash, at));
            }
        }
        Ok(out)
    }

    /// The record and revocation of one key, as a push to the peers carries them.
    pub(crate) fn delta(&self, hash: &KeyHash) -> Result<KeySet, StoreError> {
        let mut out = KeySet::default();
        if let Some(raw) = self.keys.get(hash)? {
            out.keys.push((*hash, decode_record(&raw)?));
        }
        if let Some(at) = self.revoked_at(hash)? {
            out.revocations.push((*hash, at));
        }
        Ok(out)
    }

    /// A digest of every key and revocation (xxh3 over both trees in hash order): two
    /// members with equal digests hold the same set, so anti-entropy skips them.
    pub(crate) fn digest(&self) -> Result<u64, StoreError> {
        let at = self.changes.load(Ordering::SeqCst);
        let mut cached = self.digest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((when, digest)) = *cached
            && when == at
        {
            return Ok(digest);
        }
        let mut hasher = Xxh3::new();
        for entry in self.keys.iter() {
            let (hash, raw) = entry?;
            hasher.update(&hash);
            hasher.update(&(raw.len() as u64).to_le_bytes());
            hasher.update(&raw);
        }
        // Apart from the keys, so that no key list can hash like a revocation list.
        hasher.update(b"\xffrevoked");
        for entry in self.revoked.iter() {
            let (hash, raw) = entry?;
            hasher.update(&hash);
            hasher.update(&raw);
        }
        let digest = hasher.digest();
        *cached = Some((at, digest));
        Ok(digest)
    }
}
