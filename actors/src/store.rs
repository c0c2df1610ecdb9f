//! The node's durable store: one sled database under `<data_dir>/store`.
//!
//! Blocking by design: every method does disk IO and must run off the async reactor
//! (the store actor uses `spawn_blocking`). Writes arrive in batches from group commit
//! and are made durable with one flush per batch before any receipt leaves.
//!
//! Trees and key layouts (partition = `partition_of(user_id, partitions)`, `u16` BE):
//! - `items`: partition ‖ user_len (u8) ‖ user ‖ stored_at (u64 BE) ‖ id → encoded
//!   [`StoredItem`]. The items are clustered by user: listing a user is one range scan
//!   that reads the items themselves, and a partition is one contiguous key range.
//! - `ids`: id → the item's `items` key. A local lookup index so `get(id)` needs no
//!   user; it is derivable from `items` (rebuild it by scanning `items`) and is never
//!   streamed with a partition.
//! - `api_keys`: sha256(key) → encoded [`ApiKeyRecord`].
//! - `meta`: `partitions` (u16 BE, fixed at creation), `node` (the node id).
//! - `audit`: the hash-chained log of administrative actions ([`audit`]).
//!
//! Why two trees and not one per index: every sled insert costs a tree descent and a
//! copy of the leaf it changes, and that cost bounds the node's write rate (measured:
//! items + a separate per-user index + ids ran at ~35 k items/s on this hardware, items
//! clustered by user + ids at ~50 k/s). One insert per tree per item is the floor for
//! get-by-id plus list-by-user.
//!
//! Within a batch the trees are written in the order `ids`, then `items`, each as one
//! sled batch. sled recovers a prefix of its log, so after a crash between the two an
//! `ids` entry may point at an item that was never written (and never acknowledged):
//! reads treat such an entry as absent, and a retry of that id stores the item afresh.

pub mod audit;
mod keys;
mod verdict;

use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bincode::{Decode, Encode};
use chorus_protocol::{
    Enrichment, ErrorCode, Item, ItemId, MAX_PAGE_LIMIT, MAX_USER_ID_BYTES, NodeId, PageToken,
    Receipt, Role, Status, StoredItem, decode_value, encode_payload, partition_of,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tracing::{debug, error, info};

pub use audit::{AuditEntry, AuditLog, AuditReport};
use keys::{item_key, split_item_key, user_prefix};

/// Prefix of every API key, so a leaked key is recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "chorus_";
/// Random bytes behind an API key (shown as 64 hex characters).
const API_KEY_RANDOM_BYTES: usize = 32;
/// The name of the admin key made by [`Store::ensure_admin_key`].
const BOOTSTRAP_KEY_NAME: &str = "bootstrap-admin";
/// `meta` key holding the partition count.
const META_PARTITIONS: &[u8] = b"partitions";
/// `meta` key holding the node id.
const META_NODE: &[u8] = b"node";

/// One item to store with the content policy's answer, which its receipt carries.
/// A rejected item is stored too: its receipt is the record of the refusal, so a retry
/// with the same id gets the same answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// The item, already redacted.
    pub item: Item,
    /// The receipt's status.
    pub status: Status,
    /// The receipt's alignment score, when the rules ran.
    pub score: Option<f32>,
    /// Whether the optional enrichment call ran, as the receipt says.
    pub enrichment: Enrichment,
}

impl From<Item> for Write {
    /// An `Accepted`, unscored write (no content policy ran).
    fn from(item: Item) -> Write {
        Write {
            item,
            status: Status::Accepted,
            score: None,
            enrichment: Enrichment::NotConfigured,
        }
    }
}

/// How hard a batch is pushed to disk before its receipts are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// sled's flush, then an fdatasync of sled's files: survives a power loss.
    #[default]
    Full,
    /// sled's flush only (`sync_file_range`): survives a process crash, not a power loss.
    Flush,
}

/// Where and how to open the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The sled directory, conventionally `<data_dir>/store`; created if missing.
    pub path: PathBuf,
    /// This node's id: the owner and sole replica named in receipts.
    pub node: NodeId,
    /// Number of partitions, 1..=65535; fixed when the store is created.
    pub partitions: u16,
    /// How hard writes are synced before they are acknowledged.
    pub durability: Durability,
}

/// Why a store operation failed. Unless a variant says otherwise, a failed write may or
/// may not have reached the disk, and was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (IO error, corruption it detected, or a bug).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// Syncing sled's files to disk failed; the batch is not known to be durable.
    #[error("sync {path}: {source}")]
    Sync {
        /// The file that failed to sync.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A stored value could not be decoded: the store is corrupt or from an
    /// incompatible version. Nothing was changed.
    #[error("corrupt record in tree {tree}: {reason}")]
    Corrupt {
        /// The tree holding the record.
        tree: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The store was created with another partition count; nothing was opened.
    #[error("the store has {stored} partitions but {configured} are configured")]
    PartitionMismatch {
        /// The count recorded at creation.
        stored: u16,
        /// The count in the configuration.
        configured: u16,
    },
    /// The configuration is unusable (e.g. zero partitions); nothing was opened.
    #[error("invalid store config: {0}")]
    InvalidConfig(String),
    /// A request argument was refused before touching the store.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending argument.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// The typed error a client sees for this failure.
    pub fn to_error_code(&self) -> ErrorCode {
        match self {
            StoreError::Invalid { field, reason } => ErrorCode::invalid(*field, reason.clone()),
            other => ErrorCode::Unavailable {
                reason: format!("store: {other}"),
            },
        }
    }
}

/// What is stored for an API key (under the SHA-256 of the key, never the key).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ApiKeyRecord {
    /// What the key may do.
    pub role: Role,
    /// An operator's label.
    pub name: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// The node's sled-backed store. Cheap to share behind an `Arc`; every method blocks.
pub struct Store {
    db: sled::Db,
    items: sled::Tree,
    ids: sled::Tree,
    api_keys: sled::Tree,
    /// Administrative actions, hash chained; see [`audit`].
    audit: AuditLog,
    node: NodeId,
    partitions: u16,
    durability: Durability,
    path: PathBuf,
    /// sled's log file, kept open to fdatasync it after each flush (Full durability).
    log_file: File,
    /// Blob files already synced; sled writes values too large for its log as files
    /// under `blobs/` and never syncs them itself.
    synced_blobs: Mutex<HashSet<OsString>>,
    /// Serialises "create a key if there is none".
    bootstrap: Mutex<()>,
    /// Test-only: make every write fail, as a broken disk would.
    #[cfg(feature = "fault-injection")]
    failing: std::sync::atomic::AtomicBool,
    /// Test-only: milliseconds every write batch takes at least, as a slow disk would.
    #[cfg(feature = "fault-injection")]
    delay_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("node", &self.node)
            .field("partitions", &self.partitions)
            .field("durability", &self.durability)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store. Fails with `PartitionMismatch` when the store was
    /// created with another partition count.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        if config.partitions == 0 {
            return Err(StoreError::InvalidConfig(
                "partitions must be at least 1".into(),
            ));
        }
        let db = sled::Config::new().path(&config.path).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get(META_PARTITIONS)? {
            Some(raw) => {
                let stored = u16::from_be_bytes(raw.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        tree: "meta",
                        reason: format!("partitions is {} bytes, expected 2", raw.len()),
                    }
                })?);
                if stored != config.partitions {
                    return Err(StoreError::PartitionMismatch {
                        stored,
                        configured: config.partitions,
                    });
                }
            }
            None => {
                meta.insert(META_PARTITIONS, &config.partitions.to_be_bytes())?;
                info!(path = %config.path.display(), partitions = config.partitions, "store created");
            }
        }
        match meta.get(META_NODE)? {
            Some(stored) if stored.as_ref() != config.node.0.as_bytes() => {
                info!(stored = %String::from_utf8_lossy(&stored), node = %config.node, "store opened under a new node id");
                meta.insert(META_NODE, config.node.0.as_bytes())?;
            }
            Some(_) => {}
            None => {
                meta.insert(META_NODE, config.node.0.as_bytes())?;
            }
        }
        let log_path = config.path.join("db");
        let log_file = File::open(&log_path).map_err(|source| StoreError::Sync {
            path: log_path,
            source,
        })?;
        let store = Store {
            items: db.open_tree("items")?,
            ids: db.open_tree("ids")?,
            api_keys: db.open_tree("api_keys")?,
            audit: AuditLog::open(db.open_tree("audit")?)?,
            db,
            node: config.node,
            partitions: config.partitions,
            durability: config.durability,
            path: config.path,
            log_file,
            synced_blobs: Mutex::new(HashSet::new()),
            bootstrap: Mutex::new(()),
            #[cfg(feature = "fault-injection")]
            failing: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "fault-injection")]
            delay_ms: std::sync::atomic::AtomicU64::new(0),
        };
        store.flush()?;
        if store.durability == Durability::Full {
            // Make the directory entries of sled's files (created on first open) durable.
            sync_dir(&store.path)?;
        }
        Ok(store)
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The partition count fixed at creation.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The durability writes get.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Stores a batch and makes it durable with one flush (and, under `Full`, one
    /// fdatasync) before returning: group commit's durable step. One outcome per item,
    /// in order; each receipt carries its write's status and score (a plain [`Item`] is
    /// an `Accepted`, unscored write). An id already stored, or earlier in the batch,
    /// gets the first receipt and stores nothing. A store failure fails every item with
    /// `Unavailable`.
    pub fn apply<W: Into<Write>>(&self, writes: Vec<W>) -> Vec<Result<Receipt, ErrorCode>> {
        let count = writes.len();
        match self.try_apply(writes.into_iter().map(Into::into).collect()) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                error!(error = %e, items = count, "store batch failed");
                let code = e.to_error_code();
                vec![Err(code); count]
            }
        }
    }

    /// [`Store::apply`] with the store failure as a typed error.
    pub fn try_apply(
        &self,
        writes: Vec<Write>,
    ) -> Result<Vec<Result<Receipt, ErrorCode>>, StoreError> {
        #[cfg(feature = "fault-injection")]
        std::thread::sleep(std::time::Duration::from_millis(
            self.delay_ms.load(std::sync::atomic::Ordering::Relaxed),
        ));
        #[cfg(feature = "fault-injection")]
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Sync {
                path: self.path.clone(),
                source: std::io::Error::other("injected write failure"),
            });
        }
        let stored_at = now_ms();
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut seen: HashMap<ItemId, usize> = HashMap::new();
        let mut items = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut fresh = 0usize;
        for Write {
            item,
            status,
            score,
            enrichment,
        } in writes
        {
            if let Some(&first) = seen.get(&item.id) {
                outcomes.push(outcomes_at(&outcomes, first));
                continue;
            }
            if let Some(existing) = self.get(item.id)? {
                seen.insert(item.id, outcomes.len());
                outcomes.push(Ok(existing.receipt));
                continue;
            }
            if let Err(e) = check_user(&item.user_id) {
                outcomes.push(Err(e.to_error_code()));
                continue;
            }
            let partition = partition_of(&item.user_id, self.partitions);
            let receipt = Receipt {
                id: item.id,
                status,
                alignment_score: score,
                owner: self.node.clone(),
                replicas: vec![self.node.clone()],
                stored_at,
                enrichment,
            };
            let key = item_key(partition, &item.user_id, stored_at, item.id);
            ids.insert(&item.id.to_bytes()[..], &key[..]);
            seen.insert(item.id, outcomes.len());
            outcomes.push(Ok(receipt.clone()));
            items.insert(&key[..], encode_payload(&StoredItem { item, receipt }));
            fresh += 1;
        }
        if fresh > 0 {
            // `ids` first: see the module doc on crash consistency.
            self.ids.apply_batch(ids)?;
            self.items.apply_batch(items)?;
        }
        self.flush()?;
        debug!(items = outcomes.len(), fresh, "store batch durable");
        Ok(outcomes)
    }

    /// The item with this id, if stored.
    pub fn get(&self, id: ItemId) -> Result<Option<StoredItem>, StoreError> {
        let Some(key) = self.ids.get(id.to_bytes())? else {
            return Ok(None);
        };
        // A dangling entry is a write that crashed before its item: absent.
        let Some(raw) = self.items.get(&key)? else {
            return Ok(None);
        };
        decode_item(&raw).map(Some)
    }

    /// A user's items, oldest first, at most `limit` (clamped to 1..=`MAX_PAGE_LIMIT`)
    /// after the page token. `next` is the token of the last item returned, or `None`
    /// when nothing follows.
    pub fn list_by_user(
        &self,
        user_id: &str,
        after: Option<PageToken>,
        limit: u32,
    ) -> Result<(Vec<StoredItem>, Option<PageToken>), StoreError> {
        check_user(user_id)?;
        let limit = limit.clamp(1, MAX_PAGE_LIMIT) as usize;
        let partition = partition_of(user_id, self.partitions);
        let prefix = user_prefix(partition, user_id);
        let iter = match after {
            None => self.items.scan_prefix(&prefix),
            Some(PageToken(token)) => {
                if !token.starts_with(&prefix) || split_item_key(&token[prefix.len()..]).is_none() {
                    return Err(StoreError::Invalid {
                        field: "after",
                        reason: "page token does not belong to this user".into(),
                    });
                }
                self.items
                    .range::<&[u8], _>((Bound::Excluded(&token[..]), Bound::Unbounded))
            }
        };
        let mut page = Vec::with_capacity(limit.min(64));
        let mut last_key = None;
        for entry in iter {
            let (key, raw) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            if page.len() == limit {
                // Something follows the page: hand out where it ended.
                return Ok((page, last_key.map(|k: sled::IVec| PageToken(k.to_vec()))));
            }
            page.push(decode_item(&raw)?);
            last_key = Some(key);
        }
        Ok((page, None))
    }

    /// Creates an API key with `role`, stores only its SHA-256, flushes, and returns the
    /// key (the only time it exists in clear).
    pub fn create_api_key(&self, role: Role, name: String) -> Result<String, StoreError> {
        let mut secret = [0u8; API_KEY_RANDOM_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let key = format!("{API_KEY_PREFIX}{}", hex::encode(secret));
        let record = ApiKeyRecord {
            role,
            name,
            created_at: now_ms(),
        };
        self.api_keys
            .insert(key_hash(&key), encode_payload(&record))?;
        self.flush()?;
        info!(role = %role, name = %record.name, "api key created");
        Ok(key)
    }

    /// The role of `key`, or `None` if it is not a known key.
    pub fn authenticate(&self, key: &str) -> Result<Option<Role>, StoreError> {
        self.authenticate_hash(&key_hash(key))
    }

    /// The role of the key whose SHA-256 is `hash`, or `None` if it is not known here
    /// (another node of the cluster may know it).
    pub fn authenticate_hash(&self, hash: &[u8; 32]) -> Result<Option<Role>, StoreError> {
        let Some(raw) = self.api_keys.get(hash)? else {
            return Ok(None);
        };
        let record: ApiKeyRecord = decode_value(&raw).map_err(|e| StoreError::Corrupt {
            tree: "api_keys",
            reason: e.to_string(),
        })?;
        Ok(Some(record.role))
    }

    /// How many API keys exist.
    pub fn api_key_count(&self) -> usize {
        self.api_keys.len()
    }

    /// Creates an admin key if the store has no key at all and returns it; `None` if
    /// keys already exist.
    pub fn ensure_admin_key(&self) -> Result<Option<String>, StoreError> {
        let _guard = self.bootstrap.lock().unwrap_or_else(|p| p.into_inner());
        if !self.api_keys.is_empty() {
            return Ok(None);
        }
        self.create_api_key(Role::Admin, BOOTSTRAP_KEY_NAME.into())
            .map(Some)
    }

    /// Makes everything written so far durable (per the configured durability).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        if self.durability == Durability::Full {
            self.sync_files()?;
        }
        Ok(())
    }

    /// fdatasync sled's log, and any blob file not synced yet.
    fn sync_files(&self) -> Result<(), StoreError> {
        self.log_file
            .sync_data()
            .map_err(|source| StoreError::Sync {
                path: self.path.join("db"),
                source,
            })?;
        let blob_dir = self.path.join("blobs");
        let entries = match std::fs::read_dir(&blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Sync {
                    path: blob_dir,
                    source,
                });
            }
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut new_blobs = false;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Sync {
                path: blob_dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                File::open(&path)
                    .and_then(|f| f.sync_data())
                    .map_err(|source| StoreError::Sync { path, source })?;
                new_blobs = true;
            }
            present.insert(name);
        }
        // sled deletes blobs it no longer needs; forget them.
        *synced = present;
        if new_blobs {
            sync_dir(&blob_dir)?;
        }
        Ok(())
    }

    /// Test-only: make every write fail (`true`) or work again (`false`).
    #[cfg(feature = "fault-injection")]
    pub fn inject_write_failures(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::Relaxed);
    }

    /// Test-only: make every write batch take at least `delay` (a slow disk).
    #[cfg(feature = "fault-injection")]
    pub fn inject_write_delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Number of items stored (all partitions). O(n): for tests and tools.
    pub fn item_count(&self) -> usize {
        self.items.len()
    }
}

fn decode_item(raw: &[u8]) -> Result<StoredItem, StoreError> {
    decode_value::<StoredItem>(raw).map_err(|e| StoreError::Corrupt {
        tree: "items",
        reason: e.to_string(),
    })
}

/// The outcome recorded at `index`, for a duplicate later in the same batch.
fn outcomes_at(
    outcomes: &[Result<Receipt, ErrorCode>],
    index: usize,
) -> Result<Receipt, ErrorCode> {
    outcomes[index].clone()
}

fn check_user(user_id: &str) -> Result<(), StoreError> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        return Err(StoreError::Invalid {
            field: "user_id",
            reason: format!("{} bytes, must be 1..={MAX_USER_ID_BYTES}", user_id.len()),
        });
    }
    Ok(())
}

/// The SHA-256 of an API key: how the store (and a peer asked about it) knows it.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Sync {
            path: path.to_path_buf(),
            source,
        })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
