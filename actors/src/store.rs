//! The node's durable store: a partition log of record, indexed by sled.
//!
//! ```text
//! <path>/log/*.seg   the partition log (store of record): checksummed records, each
//!                    tagged (partition, sequence); one write + fdatasync per group
//! <path>/index/      sled: the index over the log (`listing`, `ids`, `sequences`,
//!                    `by_sequence`, checkpoint, dead bytes per segment) and the small
//!                    metadata trees (`api_keys` and `revoked_keys` ([`api_keys`]),
//!                    `audit`, `epochs` ([`replica`]), the events ([`events`]), `meta`:
//!                    partition count, node id)
//! ```
//!
//! A write is acknowledged once its group's `fdatasync` returns ([`log`]); its record
//! then waits in the in-memory [`tail`] until the indexer thread applies it to sled in
//! a large batch and moves the checkpoint ([`index`]). Reads look at the tail first, so
//! every acknowledged item is readable at once. Item bodies stay in the log (key–value
//! separation, as in WiscKey): sled holds only keys and [`log::Locator`]s, which keeps
//! its per-insert cost off the acknowledgement path and its tree small.
//!
//! Blocking by design: every method does disk IO and must run off the async reactor
//! (the store actor uses `spawn_blocking`).
//!
//! A failed log write or sync is fatal ([`Store::failure`]): the store refuses every
//! later write with [`StoreError::Failed`] and the node reports not ready until it is
//! restarted and the log replayed. Reads keep working.
//!
//! A record is *live* while the index (or the tail, which is newer) points at it; a
//! rewritten verdict makes the record it replaces dead. A background thread, the
//! [`retire`] pass, deletes segments wholly before the checkpoint once nothing in them
//! is live, and compacts those mostly dead (copying their live records to the log's
//! head), so the log's disk use stays bounded by what is live ([`Store::log_usage`]).
//!
//! [`replica`] holds what leader-based replication needs of the store: a partition read
//! in sequence order, a follower's append of shipped records, truncation of a
//! partition's diverged suffix, and each partition's leader epochs.
//!
//! A [`snapshot`] is the log up to the end noted when it began, hard-linked where it
//! can be, with a checksummed manifest of the metadata trees; restoring one rebuilds
//! the index from the log.

pub mod api_keys;
pub mod audit;
mod erase;
pub(crate) mod events;
mod functions;
pub mod index;
mod keys;
pub mod log;
pub mod replica;
pub mod retire;
pub mod review;
pub mod snapshot;
mod tail;
#[cfg(test)]
mod test_model;
mod verdict;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bincode::{Decode, Encode};
use chorus_protocol::{
    Enrichment, ErrorCode, FrameLimit, FunctionRef, Item, ItemId, MAX_PAGE_LIMIT,
    MAX_USER_ID_BYTES, NodeId, PageToken, PartitionId, Receipt, Role, Status, StoredItem,
    VersionStats, decode_value_within, encode_payload, partition_of,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tracing::{debug, error, info};

use api_keys::ApiKeys;
pub use api_keys::{ApiKeyEntry, KeyHash, KeySet, KeyStatus, key_id};
pub use audit::{AuditEntry, AuditLog, AuditReport};
use index::{Index, IndexEntry};
use keys::{item_key, split_item_key, user_prefix};
use log::record::{RecordHeader, RecordKind};
use log::{LogError, PartitionLog};
pub use replica::{
    Applied, MAX_EPOCH_HISTORY, PartitionEpochs, Promise, RepairOutcome, ReplicaRecord, ShipBatch,
    ShipOutcome,
};
pub use retire::{LogUsage, RetireStep};
pub use snapshot::{RestoreError, RestoreReport, SnapshotError, SnapshotProgress, SnapshotReport};
use tail::Tail;

use crate::telemetry::{
    STORE_LOG_BYTES, STORE_LOG_DEAD_BYTES, STORE_LOG_LIVE_BYTES, STORE_LOG_SEGMENTS,
    STORE_UNINDEXED_RECORDS,
};

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
/// Most records the indexer applies to sled in one batch.
const MAX_INDEX_BATCH: usize = 16 * 1024;
/// How long the indexer lets records gather before a batch smaller than the most.
const INDEX_INTERVAL: Duration = Duration::from_millis(50);
/// Most acknowledged records waiting for the index; a writer waits for room beyond it,
/// which bounds the tail's memory (about 1 KB per record) when sled falls behind.
const MAX_UNINDEXED: usize = 256 * 1024;

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
    /// The id of the client request that wrote it: handed to replication with its
    /// record, never stored.
    pub request: Option<u64>,
}

/// What a leader's append shows replication before its records are durable: the
/// records, in sequence order, and beside each the id of the client request that wrote
/// it (an empty slice when none is known, as for a rewrite).
pub type Shipping<'a> = dyn FnMut(&[ReplicaRecord], &[Option<u64>]) + 'a;

impl From<Item> for Write {
    /// An `Accepted`, unscored write (no content policy ran).
    fn from(item: Item) -> Write {
        Write {
            item,
            status: Status::Accepted,
            score: None,
            enrichment: Enrichment::NotConfigured,
            request: None,
        }
    }
}

/// How hard a group is pushed to disk before its receipts are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `write` then `fdatasync` of the log: survives a power loss.
    #[default]
    Full,
    /// `write` only: survives a process crash, not a power loss.
    Flush,
}

/// Where and how to open the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The store directory, conventionally `<data_dir>/store`; created if missing.
    pub path: PathBuf,
    /// This node's id: the owner and sole replica named in receipts.
    pub node: NodeId,
    /// Number of partitions, 1..=65535; fixed when the store is created.
    pub partitions: u16,
    /// How hard writes are synced before they are acknowledged.
    pub durability: Durability,
    /// The partition log's segment size and how its dead records are reclaimed.
    pub log: LogConfig,
}

impl StoreConfig {
    /// Checks every limit; `InvalidConfig` names the first one broken.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.partitions == 0 {
            return Err(StoreError::InvalidConfig(
                "partitions must be at least 1".into(),
            ));
        }
        self.log.validate()
    }
}

/// The partition log's layout, its reclamation ([`retire`]) and the memory of the index
/// behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Bytes at which the writer starts a new segment, the unit the retirement pass
    /// deletes: [`log::MIN_SEGMENT_BYTES`]..=[`log::MAX_SEGMENT_BYTES`].
    pub segment_bytes: u64,
    /// A segment wholly indexed whose dead bytes are at least this fraction of it is
    /// compacted (its live records copied forward, then it is deleted); in (0, 1]. The
    /// log's disk use stays within live bytes / (1 − this), plus the segments not yet
    /// indexed and one more; 1 retires only segments with nothing live.
    pub retire_dead_fraction: f64,
    /// Time between retirement passes; each retires at most one segment. At least
    /// [`MIN_RETIRE_INTERVAL`].
    pub retire_interval: Duration,
    /// sled's cache for the index, in bytes: [`MIN_INDEX_CACHE_BYTES`]..=
    /// [`MAX_INDEX_CACHE_BYTES`]. sled counts pages by their size on disk, so the index
    /// holds about four times this in memory once it is larger than the cache; below it,
    /// the index's memory grows with every key written (about 440 bytes per item).
    pub index_cache_bytes: u64,
}

/// The shortest [`LogConfig::retire_interval`] accepted.
pub const MIN_RETIRE_INTERVAL: Duration = Duration::from_millis(10);
/// The index cache by default: 64 MiB, which holds the node's index at about 300 MiB
/// however many items it stores (BENCHMARKS.md, "The index's memory").
pub const DEFAULT_INDEX_CACHE_BYTES: u64 = 64 << 20;
/// The smallest index cache accepted.
pub const MIN_INDEX_CACHE_BYTES: u64 = 4 << 20;
/// The largest index cache accepted.
pub const MAX_INDEX_CACHE_BYTES: u64 = 64 << 30;

impl Default for LogConfig {
    /// 64 MiB segments, compacted at half dead, a pass every two seconds; a 64 MiB
    /// index cache.
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: log::DEFAULT_SEGMENT_BYTES,
            retire_dead_fraction: 0.5,
            retire_interval: Duration::from_secs(2),
            index_cache_bytes: DEFAULT_INDEX_CACHE_BYTES,
        }
    }
}

impl LogConfig {
    /// Checks every limit; `InvalidConfig` names the first one broken.
    pub fn validate(&self) -> Result<(), StoreError> {
        if !(log::MIN_SEGMENT_BYTES..=log::MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(StoreError::InvalidConfig(format!(
                "segment_bytes is {}, must be {}..={}",
                self.segment_bytes,
                log::MIN_SEGMENT_BYTES,
                log::MAX_SEGMENT_BYTES
            )));
        }
        let fraction = self.retire_dead_fraction;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(StoreError::InvalidConfig(format!(
                "retire_dead_fraction is {fraction}, must be in (0, 1]"
            )));
        }
        if self.retire_interval < MIN_RETIRE_INTERVAL {
            return Err(StoreError::InvalidConfig(format!(
                "retire_interval is {:?}, must be at least {MIN_RETIRE_INTERVAL:?}",
                self.retire_interval
            )));
        }
        if !(MIN_INDEX_CACHE_BYTES..=MAX_INDEX_CACHE_BYTES).contains(&self.index_cache_bytes) {
            return Err(StoreError::InvalidConfig(format!(
                "index_cache_bytes is {}, must be {MIN_INDEX_CACHE_BYTES}..={MAX_INDEX_CACHE_BYTES}",
                self.index_cache_bytes
            )));
        }
        Ok(())
    }
}

/// Why a store operation failed. Unless a variant says otherwise, a failed write may or
/// may not have reached the disk, and was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (IO error, corruption it detected, or a bug).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// The partition log failed; see [`LogError`] for whether it is fatal.
    #[error("{0}")]
    Log(#[from] LogError),
    /// The store stopped taking writes after a failure it cannot recover from without a
    /// restart (a failed log sync, or an index it can no longer update). Nothing was
    /// written; reads still work.
    #[error("the store takes no writes until restart: {reason}")]
    Failed {
        /// The first failure.
        reason: String,
    },
    /// The indexer thread could not be started; nothing was opened.
    #[error("starting the indexer thread: {0}")]
    Indexer(std::io::Error),
    /// The retirement thread could not be started; nothing was opened.
    #[error("starting the retirement thread: {0}")]
    Retirer(std::io::Error),
    /// Syncing a file to disk failed; the batch is not known to be durable.
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
    /// The cluster holds the most API keys (or revocations) it may; nothing was changed.
    #[error("at most {max} API keys and as many revocations may exist")]
    TooManyKeys {
        /// The bound.
        max: usize,
    },
    /// No API key has an id that starts with `id`; nothing was changed.
    #[error("no API key has an id starting with {id:?}")]
    UnknownKey {
        /// The id or id prefix asked for.
        id: String,
    },
    /// Several API keys have an id that starts with `id`; nothing was changed.
    #[error("{matches} API keys have an id starting with {id:?}; give more of it")]
    AmbiguousKey {
        /// The id prefix asked for.
        id: String,
        /// How many keys it matches.
        matches: usize,
    },
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
    /// Whether this is a refusal of the request's arguments (nothing failed).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::Invalid { .. }
                | StoreError::TooManyKeys { .. }
                | StoreError::UnknownKey { .. }
                | StoreError::AmbiguousKey { .. }
        )
    }

    /// The typed error a client sees for this failure.
    pub fn to_error_code(&self) -> ErrorCode {
        match self {
            StoreError::Invalid { field, reason } => ErrorCode::invalid(*field, reason.clone()),
            StoreError::TooManyKeys { .. } => ErrorCode::invalid("keys", self.to_string()),
            StoreError::UnknownKey { .. } | StoreError::AmbiguousKey { .. } => {
                ErrorCode::invalid("id", self.to_string())
            }
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

/// What the writers and the indexer thread share.
struct Shared {
    log: PartitionLog,
    index: Index,
    tail: Mutex<Tail>,
    /// Signalled when the tail gains records (the indexer's cue) or loses them (room
    /// for a writer, progress for a flush).
    tail_changed: Condvar,
    /// The last sequence assigned per partition; held for a whole append, which is
    /// what serialises appends and keeps sequences in log order.
    sequences: Mutex<Vec<u64>>,
    /// Why the indexer stopped, if it did.
    index_failure: Mutex<Option<String>>,
    stopping: AtomicBool,
    /// Set by a flush that waits for the index: the indexer stops gathering.
    index_soon: AtomicBool,
    /// The segment the retirement pass is working on, if any.
    retirement: Mutex<retire::Stage>,
    /// Wakes the retirement thread early (to stop).
    retire_wake: Condvar,
    /// When segments qualify for compaction.
    dead_fraction: f64,
    /// Segments retired, compacted, and bytes copied forward, since the store opened.
    retired: AtomicU64,
    compacted: AtomicU64,
    copied_bytes: AtomicU64,
    /// Test-only: the indexer applies nothing (and drains nothing at stop), as if the
    /// process died before the index caught up.
    #[cfg(feature = "fault-injection")]
    indexer_paused: AtomicBool,
}

impl Shared {
    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failure(&self) -> Option<String> {
        self.log.failure().or_else(|| {
            self.index_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// Takes the append lock once the tail has room; refuses when the store failed.
    fn lock_for_append(&self) -> Result<MutexGuard<'_, Vec<u64>>, StoreError> {
        let sequences = self.sequences.lock().unwrap_or_else(|p| p.into_inner());
        let mut tail = self.tail();
        loop {
            if let Some(reason) = self.failure() {
                return Err(StoreError::Failed { reason });
            }
            if tail.unindexed() < MAX_UNINDEXED {
                return Ok(sequences);
            }
            tail = self
                .tail_changed
                .wait_timeout(tail, INDEX_INTERVAL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Where the live record of `id` lies: the tail's (newer) or else the index's.
    fn locate(&self, id: ItemId) -> Result<Option<log::Locator>, StoreError> {
        if let Some(locator) = self.tail().locate(id) {
            return Ok(Some(locator));
        }
        self.index.locate(id)
    }
}

/// The node's store. Cheap to share behind an `Arc`; every method blocks.
pub struct Store {
    shared: Arc<Shared>,
    /// Applies the tail to the index; stopped and joined on drop.
    indexer: Option<JoinHandle<()>>,
    /// Runs the retirement pass; stopped and joined on drop.
    retirer: Option<JoinHandle<()>>,
    /// API keys and their revocations.
    api_keys: ApiKeys,
    /// Administrative actions, hash chained; see [`audit`].
    audit: AuditLog,
    /// The cluster's events; see [`events`].
    events: events::Events,
    /// Items flagged by this node's writes as a leader, for `item_flagged` events.
    flagged: review::FlaggedFeed,
    node: NodeId,
    partitions: u16,
    durability: Durability,
    path: PathBuf,
    /// Serialises "create a key if there is none".
    bootstrap: Mutex<()>,
    /// Each partition's leader epochs; see [`replica`].
    epochs: replica::Epochs,
    /// Shipments waiting for the follower's next group commit.
    shipments: replica::ShipmentQueue,
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
    /// Opens (or creates) the store and replays the log from the index's checkpoint.
    /// Fails with `PartitionMismatch` when the store was created with another partition
    /// count.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        config.validate()?;
        if config.path.join("conf").exists() {
            return Err(StoreError::InvalidConfig(format!(
                "{} holds a store of an earlier format (sled only, no partition log)",
                config.path.display()
            )));
        }
        let index_path = config.path.join("index");
        let db = open_index_db(&index_path, config.log.index_cache_bytes)?;
        let meta = db.open_tree("meta")?;
        check_meta(&meta, &config)?;
        let sync = config.durability == Durability::Full;
        let index = Index::open(db.clone(), &index_path, sync, config.partitions)?;
        let checkpoint = index.checkpoint();
        let mut sequences = index.sequences();
        let (log, recovered) = PartitionLog::open(
            &config.path.join("log"),
            config.log.segment_bytes,
            sync,
            checkpoint,
        )?;
        let present: std::collections::BTreeSet<u64> =
            log.segments().into_iter().map(|(s, _)| s).collect();
        index.forget_absent(&|segment| present.contains(&segment))?;
        replica::complete_by_sequence(&index, &log)?;
        functions::complete(&index, &log)?;
        review::complete(&index, &log)?;
        functions::catch_up(&index, &log)?;
        let mut tail = Tail::default();
        for record in &recovered {
            let stored = decode_item(&record.body)?;
            let partition = record.header.partition;
            if let Some(last) = sequences.get_mut(usize::from(partition)) {
                *last = (*last).max(record.header.sequence);
            }
            // What this record replaced: an earlier replayed record, or what the index
            // held at the checkpoint. An index entry past the checkpoint (a batch whose
            // flush the crash cut short) hides the record it replaced: left uncounted,
            // which delays reclaiming it but never counts it twice.
            let in_tail = tail.locate(stored.item.id);
            let indexed = match in_tail {
                Some(_) => None,
                None => index.locate(stored.item.id)?,
            };
            let supersedes =
                in_tail
                    .or(indexed
                        .filter(|old| old.end() <= checkpoint && present.contains(&old.segment)));
            let mut entry = index_entry(&stored, partition, record.header.sequence, record.locator);
            entry.supersedes = supersedes;
            entry.replaces = replica::replaced_sequence(
                &log,
                &index,
                in_tail.or(indexed),
                partition,
                entry.sequence,
            )?;
            tail.insert(entry, Arc::new(stored), record.locator.end());
        }
        if !recovered.is_empty() {
            info!(
                records = recovered.len(),
                "replayed the log's unindexed tail"
            );
        }
        let shared = Arc::new(Shared {
            log,
            index,
            tail: Mutex::new(tail),
            tail_changed: Condvar::new(),
            sequences: Mutex::new(sequences),
            index_failure: Mutex::new(None),
            stopping: AtomicBool::new(false),
            index_soon: AtomicBool::new(false),
            retirement: Mutex::new(retire::Stage::default()),
            retire_wake: Condvar::new(),
            dead_fraction: config.log.retire_dead_fraction,
            retired: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
            copied_bytes: AtomicU64::new(0),
            #[cfg(feature = "fault-injection")]
            indexer_paused: AtomicBool::new(false),
        });
        let indexer = std::thread::Builder::new()
            .name("chorus-indexer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run_indexer(&shared)
            })
            .map_err(StoreError::Indexer)?;
        let mut store = Store {
            shared,
            indexer: Some(indexer),
            retirer: None,
            api_keys: ApiKeys::open(&db)?,
            audit: AuditLog::open(db.open_tree("audit")?)?,
            events: events::Events::open(&db)?,
            flagged: review::FlaggedFeed::default(),
            node: config.node,
            partitions: config.partitions,
            durability: config.durability,
            path: config.path,
            bootstrap: Mutex::new(()),
            epochs: replica::Epochs::open(&db, config.partitions)?,
            shipments: replica::shipment_queue(),
            #[cfg(feature = "fault-injection")]
            delay_ms: std::sync::atomic::AtomicU64::new(0),
        };
        store.sync_meta()?;
        // Started last: a failed start drops the store, which stops the indexer.
        let retirer = std::thread::Builder::new()
            .name("chorus-retirer".into())
            .spawn({
                let shared = Arc::clone(&store.shared);
                let interval = config.log.retire_interval;
                move || retire::run(&shared, interval)
            })
            .map_err(StoreError::Retirer)?;
        store.retirer = Some(retirer);
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

    /// What the feedback about each function version adds up to, summed over the
    /// partitions `wanted` picks (a node asks for those it leads). Read from counts the
    /// index keeps, never by a scan; they cover every item indexed, so an item counts
    /// once the indexer has applied it (within its gathering interval of being stored).
    pub fn function_stats(
        &self,
        wanted: impl Fn(PartitionId) -> bool,
    ) -> BTreeMap<FunctionRef, VersionStats> {
        self.function_stats_page(wanted, |_| true, usize::MAX)
    }

    /// [`Store::function_stats`], only the first `limit` versions `select` picks. The
    /// sums over the partitions asked about are kept and moved as items are counted, so
    /// asking again about the same partitions costs what the answer holds.
    pub fn function_stats_page(
        &self,
        wanted: impl Fn(PartitionId) -> bool,
        select: impl Fn(&FunctionRef) -> bool,
        limit: usize,
    ) -> BTreeMap<FunctionRef, VersionStats> {
        self.shared.index.function_summary(&wanted, &select, limit)
    }

    /// Each facet's (kind, tier, day stored) items and ratings, summed over the
    /// partitions `wanted` picks, on the days `days` names (all if `None`). Read from
    /// the counts the index keeps beside the function stats, never by a scan.
    pub fn facet_stats(
        &self,
        wanted: impl Fn(PartitionId) -> bool,
        days: Option<(u32, u32)>,
    ) -> BTreeMap<chorus_protocol::Facet, chorus_protocol::Tally> {
        self.shared.index.facet_summary(&wanted, days)
    }

    /// The durability writes get.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Why the store takes no more writes, if it stopped (a failed log write or sync,
    /// or an index it could not update). Only a restart clears it.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Stores a batch with one log write and (under `Full`) one `fdatasync` before
    /// returning: group commit's durable step. One outcome per item, in order; each
    /// receipt carries its write's status and score (a plain [`Item`] is an `Accepted`,
    /// unscored write). An id already stored, or earlier in the batch, gets the first
    /// receipt and stores nothing. A store failure fails every item with `Unavailable`.
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
        Ok(self.try_apply_replicated(writes, &mut |_, _| {})?.outcomes)
    }

    /// [`Store::try_apply`], also returning the records appended and, per item, the
    /// sequence replication must reach before its receipt may be sent. `shipping` sees
    /// the records once their sequences are assigned and before they are durable here,
    /// under the append lock (so in sequence order), for a leader to ship them to its
    /// followers while its own sync runs, beside each the id of the request that wrote
    /// it ([`Write::request`]). If the append then fails, the sequences are given back
    /// and reused: a leader that shipped them must stop leading first.
    pub fn try_apply_replicated(
        &self,
        writes: Vec<Write>,
        shipping: &mut Shipping<'_>,
    ) -> Result<Applied, StoreError> {
        #[cfg(feature = "fault-injection")]
        std::thread::sleep(std::time::Duration::from_millis(
            self.delay_ms.load(std::sync::atomic::Ordering::Relaxed),
        ));
        let stored_at = now_ms();
        let mut sequences = self.shared.lock_for_append()?;
        let mut outcomes: Vec<Result<Receipt, ErrorCode>> = Vec::with_capacity(writes.len());
        /// What an item waits for: known now, or the sequence its fresh record gets.
        #[derive(Clone, Copy)]
        enum Wait {
            Known(Option<(PartitionId, u64)>),
            Fresh(usize),
        }
        let mut waits: Vec<Wait> = Vec::with_capacity(writes.len());
        let mut seen: HashMap<ItemId, usize> = HashMap::new();
        let mut fresh = Vec::new();
        let mut requests = Vec::new();
        for Write {
            item,
            status,
            score,
            enrichment,
            request,
        } in writes
        {
            if let Some(&first) = seen.get(&item.id) {
                outcomes.push(outcomes[first].clone());
                waits.push(waits[first]);
                continue;
            }
            if let Some(existing) = self.get(item.id)? {
                seen.insert(item.id, outcomes.len());
                // The earlier record may not be replicated yet: wait for all before it.
                let partition = partition_of(&existing.item.user_id, self.partitions);
                waits.push(Wait::Known(Some((
                    partition,
                    sequences[usize::from(partition)],
                ))));
                outcomes.push(Ok(existing.receipt));
                continue;
            }
            if let Err(e) = check_user(&item.user_id)
                .and_then(|()| check_hint(item.id, &item.user_id, self.partitions))
            {
                outcomes.push(Err(e.to_error_code()));
                waits.push(Wait::Known(None));
                continue;
            }
            let receipt = Receipt {
                id: item.id,
                status,
                alignment_score: score,
                owner: self.node.clone(),
                replicas: vec![self.node.clone()],
                stored_at,
                enrichment,
            };
            seen.insert(item.id, outcomes.len());
            outcomes.push(Ok(receipt.clone()));
            waits.push(Wait::Fresh(fresh.len()));
            fresh.push(StoredItem { item, receipt });
            requests.push(request);
        }
        let flagged: Vec<StoredItem> = fresh
            .iter()
            .filter(|s| matches!(s.receipt.status, Status::Flagged { .. }))
            .cloned()
            .collect();
        let records = self.append_records(
            &mut sequences,
            fresh.into_iter().map(|s| (s, None)).collect(),
            &requests,
            shipping,
        )?;
        self.flagged.note(&flagged);
        let waits = waits
            .into_iter()
            .map(|wait| match wait {
                Wait::Known(known) => known,
                Wait::Fresh(i) => records.get(i).map(|r| (r.partition, r.sequence)),
            })
            .collect();
        Ok(Applied {
            outcomes,
            waits,
            records,
        })
    }

    /// Appends records of `items` (each the newest version of its id, with the locator
    /// of the record it replaces, if any) as one group, assigning each its partition's
    /// next sequence, and puts them in the tail once durable. The caller holds the
    /// append lock (`sequences`). `shipping` sees the records before they are written.
    /// Returns the records appended, in order.
    fn append_records(
        &self,
        sequences: &mut [u64],
        items: Vec<(StoredItem, Option<log::Locator>)>,
        requests: &[Option<u64>],
        shipping: &mut Shipping<'_>,
    ) -> Result<Vec<ReplicaRecord>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut appended = Vec::with_capacity(items.len());
        let before: Vec<(PartitionId, u64)> = items
            .iter()
            .map(|(s, _)| partition_of(&s.item.user_id, self.partitions))
            .map(|p| (p, sequences[usize::from(p)]))
            .collect();
        for (stored, _) in &items {
            let partition = partition_of(&stored.item.user_id, self.partitions);
            let sequence = &mut sequences[usize::from(partition)];
            *sequence += 1;
            appended.push(ReplicaRecord {
                partition,
                sequence: *sequence,
                body: encode_payload(stored),
            });
        }
        let headers: Vec<RecordHeader> = appended
            .iter()
            .map(|r| RecordHeader {
                kind: RecordKind::Item,
                partition: r.partition,
                sequence: r.sequence,
            })
            .collect();
        let records: Vec<(RecordHeader, &[u8])> = headers
            .iter()
            .zip(&appended)
            .map(|(h, r)| (*h, r.body.as_slice()))
            .collect();
        let shared = &self.shared;
        let mut replaces = Vec::with_capacity(items.len());
        for ((_, supersedes), header) in items.iter().zip(&headers) {
            replaces.push(replica::replaced_sequence(
                &shared.log,
                &shared.index,
                *supersedes,
                header.partition,
                header.sequence,
            )?);
        }
        shipping(&appended, requests);
        let written = shared.log.append(&records, |locators| {
            let mut tail = shared.tail();
            for ((((stored, supersedes), header), locator), replaces) in
                items.into_iter().zip(&headers).zip(locators).zip(replaces)
            {
                let mut entry = index_entry(&stored, header.partition, header.sequence, *locator);
                entry.supersedes = supersedes;
                entry.replaces = replaces;
                tail.insert(entry, Arc::new(stored), locator.end());
            }
        });
        match written {
            Ok(()) => {
                shared.tail_changed.notify_all();
                debug!(records = records.len(), "log group durable");
                drop(records);
                Ok(appended)
            }
            Err(e) => {
                // Nothing of the group is acknowledged; give its sequences back so the
                // partition's sequence stays gap-free (a fatal failure makes it moot).
                for (partition, last) in before.into_iter().rev() {
                    sequences[usize::from(partition)] = last;
                }
                Err(e.into())
            }
        }
    }

    /// The item with this id, if stored (acknowledged items are found at once, indexed
    /// or not).
    pub fn get(&self, id: ItemId) -> Result<Option<StoredItem>, StoreError> {
        Ok(self.current(id)?.map(|(item, _)| item))
    }

    /// The item with this id and where its live record lies.
    fn current(&self, id: ItemId) -> Result<Option<(StoredItem, log::Locator)>, StoreError> {
        // The tail first: a record leaves it only after the index holds it.
        if let Some((item, locator)) = self.shared.tail().get_located(id) {
            return Ok(Some(((*item).clone(), locator)));
        }
        match self.shared.index.locate(id)? {
            None => Ok(None),
            Some(locator) => self.read_located(id, locator),
        }
    }

    /// Reads the record of `id` at `locator`, found in the index a moment ago. If its
    /// segment was retired meanwhile, the index already points at the record's copy
    /// (a segment goes only once the index durably holds its copies): look again, once.
    fn read_located(
        &self,
        id: ItemId,
        locator: log::Locator,
    ) -> Result<Option<(StoredItem, log::Locator)>, StoreError> {
        match self.read_record(locator) {
            Ok(item) => Ok(Some((item, locator))),
            Err(StoreError::Log(LogError::Retired { .. })) => match self.shared.locate(id)? {
                None => Ok(None),
                Some(again) => Ok(Some((self.read_record(again)?, again))),
            },
            Err(e) => Err(e),
        }
    }

    /// Reads and decodes the item record at `locator`.
    fn read_record(&self, locator: log::Locator) -> Result<StoredItem, StoreError> {
        let body = self
            .shared
            .log
            .read(locator, &|h| h.kind == RecordKind::Item)?;
        decode_item(&body)
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
        if let Some(PageToken(token)) = &after
            && (!token.starts_with(&prefix) || split_item_key(&token[prefix.len()..]).is_none())
        {
            return Err(StoreError::Invalid {
                field: "after",
                reason: "page token does not belong to this user".into(),
            });
        }
        let after = after.map(|t| t.0);
        // The tail first (see `get`); one more than the page to know whether one follows.
        let unindexed = self
            .shared
            .tail()
            .scan(&prefix, after.as_deref(), limit + 1);
        let indexed = self
            .shared
            .index
            .scan(&prefix, after.as_deref(), limit + 1)?;
        let mut merged: std::collections::BTreeMap<Vec<u8>, Source> = indexed
            .into_iter()
            .map(|(key, locator)| (key, Source::Log(locator)))
            .collect();
        // A record in both is the tail's newer version.
        merged.extend(
            unindexed
                .into_iter()
                .map(|(key, item)| (key, Source::Tail(item))),
        );
        let more = merged.len() > limit;
        let mut page = Vec::with_capacity(limit.min(merged.len()));
        let mut last_key = None;
        for (key, source) in merged.into_iter().take(limit) {
            let stored = match source {
                Source::Tail(item) => Some((*item).clone()),
                Source::Log(locator) => {
                    let id = split_item_key(&key[prefix.len()..])
                        .map(|(_, id)| id)
                        .ok_or_else(|| StoreError::Corrupt {
                            tree: "listing",
                            reason: "key too short for an id".into(),
                        })?;
                    self.read_located(id, locator)?.map(|(item, _)| item)
                }
            };
            // A tombstone keeps its place (a retry of its id is answered from it) but
            // is never listed: its item is gone.
            if let Some(stored) = stored
                && stored.receipt.status != Status::Deleted
            {
                page.push(stored);
            }
            last_key = Some(key);
        }
        let next = if more { last_key.map(PageToken) } else { None };
        Ok((page, next))
    }

    /// Creates an API key with `role`, stores only its SHA-256, flushes, and returns the
    /// key (the only time it exists in clear). Refused with `TooManyKeys` past
    /// [`chorus_protocol::MAX_API_KEYS`].
    pub fn create_api_key(&self, role: Role, name: String) -> Result<String, StoreError> {
        let mut secret = [0u8; API_KEY_RANDOM_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let key = format!("{API_KEY_PREFIX}{}", hex::encode(secret));
        let record = ApiKeyRecord {
            role,
            name,
            created_at: now_ms(),
        };
        self.api_keys.insert_new(key_hash(&key), &record)?;
        self.sync_meta()?;
        info!(role = %role, name = %record.name, "api key created");
        Ok(key)
    }

    /// The role of `key`, or `None` if it is not a valid key here (unknown or revoked).
    pub fn authenticate(&self, key: &str) -> Result<Option<Role>, StoreError> {
        self.authenticate_hash(&key_hash(key))
    }

    /// The role of the key whose SHA-256 is `hash`, or `None` if it is revoked or not
    /// known here (another node of the cluster may know it).
    pub fn authenticate_hash(&self, hash: &[u8; 32]) -> Result<Option<Role>, StoreError> {
        match self.api_keys.status(hash)? {
            KeyStatus::Active(role) => Ok(Some(role)),
            KeyStatus::Unknown | KeyStatus::Revoked => Ok(None),
        }
    }

    /// Whether the key whose SHA-256 is `hash` is valid here, revoked, or unknown.
    pub fn api_key_status(&self, hash: &KeyHash) -> Result<KeyStatus, StoreError> {
        self.api_keys.status(hash)
    }

    /// Whether the key whose SHA-256 is `hash` is revoked; reads memory only, cheap
    /// enough for every request.
    pub fn is_key_revoked(&self, hash: &KeyHash) -> bool {
        self.api_keys.is_revoked(hash)
    }

    /// How many revocations this node knows; it only grows, so a reader that saw the
    /// same count has no new revocation to check.
    pub fn key_revocations(&self) -> u64 {
        self.api_keys.revocations()
    }

    /// Every API key held here, ordered by hash, with its revocation.
    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyEntry>, StoreError> {
        self.api_keys.list()
    }

    /// The hash of the one key whose id starts with the hex `prefix`; `UnknownKey` or
    /// `AmbiguousKey` otherwise.
    pub fn resolve_api_key(&self, prefix: &str) -> Result<KeyHash, StoreError> {
        self.api_keys.resolve(prefix)
    }

    /// Revokes the key whose SHA-256 is `hash` and flushes: it never authenticates
    /// again. A key revoked already keeps its first revocation time.
    pub fn revoke_api_key(&self, hash: &KeyHash) -> Result<ApiKeyEntry, StoreError> {
        let entry = self.api_keys.revoke(hash, now_ms())?;
        self.sync_meta()?;
        info!(key = %key_id(hash), "api key revoked");
        Ok(entry)
    }

    /// Applies a peer's keys and revocations (a union) and flushes; returns how many
    /// entries changed this node's state. Refused whole with `TooManyKeys`, nothing
    /// changed, when it would take the node past the bound.
    pub fn merge_api_keys(&self, set: &KeySet) -> Result<usize, StoreError> {
        let changed = self.api_keys.merge(set)?;
        if changed > 0 {
            self.sync_meta()?;
            debug!(changed, "api keys learned from a peer");
        }
        Ok(changed)
    }

    /// Every key and revocation held here.
    pub fn api_key_set(&self) -> Result<KeySet, StoreError> {
        self.api_keys.state()
    }

    /// What this node holds that `theirs` lacks.
    pub fn api_keys_missing_from(&self, theirs: &KeySet) -> Result<KeySet, StoreError> {
        self.api_keys.missing_from(theirs)
    }

    /// One key's record and revocation, as a push to the peers carries them.
    pub fn api_key_delta(&self, hash: &KeyHash) -> Result<KeySet, StoreError> {
        self.api_keys.delta(hash)
    }

    /// A digest of every key and revocation held: equal digests, equal sets.
    pub fn api_key_digest(&self) -> Result<u64, StoreError> {
        self.api_keys.digest()
    }

    /// How many API keys exist.
    pub fn api_key_count(&self) -> usize {
        self.api_keys.count()
    }

    /// Creates an admin key if the store has no key at all and returns it; `None` if
    /// keys already exist.
    pub fn ensure_admin_key(&self) -> Result<Option<String>, StoreError> {
        let _guard = self.bootstrap.lock().unwrap_or_else(|p| p.into_inner());
        if self.api_keys.count() > 0 {
            return Ok(None);
        }
        self.create_api_key(Role::Admin, BOOTSTRAP_KEY_NAME.into())
            .map(Some)
    }

    /// Waits until everything acknowledged so far is in the index, durably (writes are
    /// durable in the log as soon as they are acknowledged; this is for a clean stop
    /// and for tools).
    pub fn flush(&self) -> Result<(), StoreError> {
        let shared = &self.shared;
        let mut tail = shared.tail();
        while tail.unindexed() > 0 {
            if let Some(reason) = shared
                .index_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Err(StoreError::Failed { reason });
            }
            shared.index_soon.store(true, Ordering::Release);
            shared.tail_changed.notify_all();
            tail = shared
                .tail_changed
                .wait_timeout(tail, INDEX_INTERVAL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(tail);
        self.sync_meta()
    }

    /// Makes the metadata trees (keys, audit, meta) durable.
    fn sync_meta(&self) -> Result<(), StoreError> {
        self.shared.index.flush()
    }

    /// Records the log's disk use and the index's lag as metrics.
    pub fn publish_metrics(&self) {
        let usage = self.log_usage();
        metrics::gauge!(STORE_LOG_BYTES).set(usage.bytes as f64);
        metrics::gauge!(STORE_LOG_LIVE_BYTES).set(usage.live_bytes as f64);
        metrics::gauge!(STORE_LOG_DEAD_BYTES).set(usage.dead_bytes as f64);
        metrics::gauge!(STORE_LOG_SEGMENTS).set(usage.segments as f64);
        metrics::gauge!(STORE_UNINDEXED_RECORDS).set(self.shared.tail().unindexed() as f64);
    }

    /// The log's disk use: segments, bytes, how many of them are dead, and what the
    /// retirement pass has reclaimed since the store opened. Cheap (one `stat` per
    /// segment).
    pub fn log_usage(&self) -> LogUsage {
        retire::usage(&self.shared)
    }

    /// Runs one step of the retirement pass now, as its thread would (tests and tools;
    /// the thread keeps running on its own schedule).
    pub fn retire_step(&self) -> Result<RetireStep, StoreError> {
        retire::step_now(&self.shared)
    }

    /// Test-only: make every write fail before anything is written (`true`), as a
    /// refused write would, or work again (`false`). Not fatal: see
    /// [`Store::inject_sync_failure`] for the failure that is.
    #[cfg(feature = "fault-injection")]
    pub fn inject_write_failures(&self, failing: bool) {
        self.shared
            .log
            .inject_fault(failing.then_some(log::Fault::BeforeWrite));
    }

    /// Test-only: make the next log sync fail, which stops the store until restart.
    #[cfg(feature = "fault-injection")]
    pub fn inject_sync_failure(&self) {
        self.shared.log.inject_fault(Some(log::Fault::Sync));
    }

    /// Test-only: stop (`true`) or resume the indexer. Dropped while paused, the store
    /// leaves its tail only in the log, as a crash before indexing would.
    #[cfg(feature = "fault-injection")]
    pub fn pause_indexer(&self, paused: bool) {
        self.shared.indexer_paused.store(paused, Ordering::Release);
        self.shared.tail_changed.notify_all();
    }

    /// Test-only: make every write batch take at least `delay` (a slow disk).
    #[cfg(feature = "fault-injection")]
    pub fn inject_write_delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Number of items stored (all partitions), once the index has caught up. O(n): for
    /// tests and tools.
    pub fn item_count(&self) -> usize {
        if let Err(e) = self.flush() {
            error!(error = %e, "index did not catch up; counting what it holds");
        }
        self.shared.index.len()
    }
}

/// How long opening the index waits for sled's file lock: sled's background IO
/// threads release it a moment after the `Db` that held it is dropped, so a store
/// reopened in the same process may find it still taken. Another process holding it
/// still fails, after this wait.
const INDEX_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled at `path` with a cache of `cache_bytes`, waiting up to
/// [`INDEX_LOCK_WAIT`] for its file lock. sled's own default cache (1 GiB) lets the
/// index's memory grow with every key for the first few million items.
fn open_index_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                if started.elapsed() >= INDEX_LOCK_WAIT {
                    return Err(sled::Error::Io(e).into());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        // Each waiter reads `stopping` under its mutex and then waits: taking the mutex
        // here puts the store of `stopping` before that read or after the wait began,
        // so the notification below is never lost between the two.
        drop(
            self.shared
                .retirement
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        drop(self.shared.tail());
        self.shared.retire_wake.notify_all();
        self.shared.tail_changed.notify_all();
        // The retirer first: it may be waiting for the indexer.
        if let Some(retirer) = self.retirer.take()
            && retirer.join().is_err()
        {
            error!("the retirement thread panicked");
        }
        if let Some(indexer) = self.indexer.take()
            && indexer.join().is_err()
        {
            error!("the indexer thread panicked");
        }
        // What the indexer counted since the stats were last written: a clean stop
        // leaves nothing to count again.
        let index = &self.shared.index;
        if let Err(e) = index.persist_function_stats().and_then(|()| index.flush()) {
            error!(error = %e, "writing the function stats failed; they are counted again at the next start");
        }
    }
}

/// Where a listed item is read from.
enum Source {
    Tail(Arc<StoredItem>),
    Log(log::Locator),
}

/// The index entry of a record of `stored`.
fn index_entry(
    stored: &StoredItem,
    partition: PartitionId,
    sequence: u64,
    locator: log::Locator,
) -> IndexEntry {
    IndexEntry {
        id: stored.item.id,
        listing_key: item_key(
            partition,
            &stored.item.user_id,
            stored.receipt.stored_at,
            stored.item.id,
        ),
        locator,
        partition,
        sequence,
        supersedes: None,
        replaces: None,
        facts: functions::facts_of(stored),
        flagged: matches!(stored.receipt.status, Status::Flagged { .. }),
        deleted: stored.receipt.status == Status::Deleted,
        uncount: None,
    }
}

/// The indexer thread: applies the tail to sled in batches, in log order, until the
/// store is dropped (and then the rest, so a clean stop leaves nothing to replay).
fn run_indexer(shared: &Shared) {
    loop {
        let batch = {
            let mut tail = shared.tail();
            loop {
                let stopping = shared.stopping.load(Ordering::Acquire);
                #[cfg(feature = "fault-injection")]
                if shared.indexer_paused.load(Ordering::Acquire) {
                    if stopping {
                        return;
                    }
                    tail = shared
                        .tail_changed
                        .wait_timeout(tail, INDEX_INTERVAL)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    continue;
                }
                if tail.unindexed() >= MAX_INDEX_BATCH || (stopping && tail.unindexed() > 0) {
                    break;
                }
                if stopping {
                    return;
                }
                if tail.unindexed() > 0 {
                    tail = gather(shared, tail);
                    break;
                }
                tail = shared
                    .tail_changed
                    .wait(tail)
                    .unwrap_or_else(|p| p.into_inner());
            }
            shared.index_soon.store(false, Ordering::Release);
            tail.next_batch(MAX_INDEX_BATCH)
        };
        let Some((mut entries, through)) = batch else {
            continue;
        };
        let applied = erase::facts_of_deleted(&shared.log, &mut entries)
            .and_then(|()| shared.index.apply(&entries, through));
        if let Err(e) = applied {
            let reason = format!("index: {e}");
            error!(%reason, "the index cannot be updated; the store takes no more writes");
            *shared
                .index_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(reason);
            shared.tail_changed.notify_all();
            return;
        }
        shared.tail().indexed(entries.len());
        shared.tail_changed.notify_all();
        metrics::gauge!(STORE_UNINDEXED_RECORDS).set(shared.tail().unindexed() as f64);
    }
}

/// Lets a batch gather for one [`INDEX_INTERVAL`]: one sled batch (and one flush) per
/// interval, not per group. Every append signals the condvar, so a single wait would
/// end at the next group and index group by group; this waits out the interval unless
/// the batch is full, a flush is waiting, or the store stops.
fn gather<'a>(shared: &'a Shared, mut tail: MutexGuard<'a, Tail>) -> MutexGuard<'a, Tail> {
    let deadline = std::time::Instant::now() + INDEX_INTERVAL;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero()
            || tail.unindexed() >= MAX_INDEX_BATCH
            || shared.index_soon.load(Ordering::Acquire)
            || shared.stopping.load(Ordering::Acquire)
        {
            return tail;
        }
        tail = shared
            .tail_changed
            .wait_timeout(tail, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Checks (or records, on creation) the partition count and node id.
fn check_meta(meta: &sled::Tree, config: &StoreConfig) -> Result<(), StoreError> {
    match meta.get(META_PARTITIONS)? {
        Some(raw) => {
            let stored =
                u16::from_be_bytes(raw.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    tree: "meta",
                    reason: format!("partitions is {} bytes, expected 2", raw.len()),
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
    Ok(())
}

/// A log record's body as a stored item, allocating no more than a record may hold.
pub fn decode_item(raw: &[u8]) -> Result<StoredItem, StoreError> {
    let limit = FrameLimit::new(log::record::MAX_BODY_BYTES as u32)
        .expect("the record limit is a valid frame limit");
    decode_value_within::<StoredItem>(raw, limit).map_err(|e| StoreError::Corrupt {
        tree: "log",
        reason: e.to_string(),
    })
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

/// Refuses an id whose partition hint names another partition than its user's, so
/// that every stored item with a hint is where the hint says and a read of a hinted id
/// asks that partition alone.
fn check_hint(id: ItemId, user_id: &str, partitions: u16) -> Result<(), StoreError> {
    let home = partition_of(user_id, partitions);
    match id.partition_hint() {
        Some(hint) if hint != home => Err(StoreError::Invalid {
            field: "id",
            reason: format!(
                "{id} names partition {hint}, but its user is in partition {home}; \
                 submit the item under a new id"
            ),
        }),
        _ => Ok(()),
    }
}

/// The SHA-256 of an API key: how the store (and a peer asked about it) knows it.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
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
