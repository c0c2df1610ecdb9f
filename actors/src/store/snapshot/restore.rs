//! Restoring a snapshot into a fresh store directory (offline: no store may be open on
//! the target).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chorus_protocol::ItemId;
use tracing::info;

use super::LOG_DIR;
use super::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, ManifestError, SegmentEntry};
use crate::store::index::{Index, IndexEntry};
use crate::store::log::record::{HEADER_LEN, MAX_BODY_BYTES, scan};
use crate::store::log::{
    Locator, LogError, LogPosition, MAX_SEGMENT_BYTES, segment_path, sync_dir,
};
use crate::store::{
    MAX_INDEX_BATCH, META_NODE, META_PARTITIONS, StoreError, decode_item, index_entry,
    open_index_db,
};

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The store directory written.
    pub path: PathBuf,
    /// The node the snapshot was taken on.
    pub node: String,
    /// The store's partition count.
    pub partitions: u16,
    /// Segments restored.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Log records in them.
    pub records: u64,
    /// Distinct items indexed.
    pub items: usize,
    /// API keys restored.
    pub api_keys: usize,
    /// The end position of the log restored.
    pub end: LogPosition,
    /// How long it took.
    pub duration: Duration,
}

/// Why a snapshot was not restored. The target is untouched in every case (what was
/// written went to a staging directory beside it, removed where possible).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target store directory exists and is not empty.
    #[error("{path} exists and is not empty: restore only into a fresh data dir")]
    TargetNotEmpty {
        /// The target.
        path: PathBuf,
    },
    /// The snapshot has no manifest: it is incomplete (interrupted) or not a snapshot.
    #[error("{path} has no {MANIFEST_FILE}: not a snapshot, or an incomplete one")]
    NoManifest {
        /// The snapshot directory.
        path: PathBuf,
    },
    /// The manifest is damaged, edited, or of another format.
    #[error("snapshot manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// A segment is missing, of the wrong size, fails its checksum, or holds a record
    /// that is not intact.
    #[error("snapshot segment {segment}: {reason}")]
    Segment {
        /// The segment's number.
        segment: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading the snapshot or writing the store failed.
    #[error("restore {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Building the index failed.
    #[error("building the index: {0}")]
    Store(#[from] StoreError),
}

impl From<LogError> for RestoreError {
    fn from(e: LogError) -> RestoreError {
        RestoreError::Store(e.into())
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The largest segment file a snapshot may hold (as the log writes them).
const MAX_SEGMENT_FILE: u64 = MAX_SEGMENT_BYTES + (HEADER_LEN + MAX_BODY_BYTES) as u64;

/// Reads and checks the manifest of the snapshot in `from`.
pub fn read_manifest(from: &Path) -> Result<Manifest, RestoreError> {
    let path = from.join(MANIFEST_FILE);
    let len = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RestoreError::NoManifest {
                path: from.to_path_buf(),
            });
        }
        Err(e) => return Err(io_error(&path)(e)),
    };
    if len > MAX_MANIFEST_BYTES {
        return Err(ManifestError::Json(format!(
            "{len} bytes, more than a manifest may hold ({MAX_MANIFEST_BYTES})"
        ))
        .into());
    }
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    Ok(Manifest::decode(&bytes)?)
}

/// Checks the snapshot in `from` without writing anything: its manifest, and every
/// segment's size, checksum and records.
pub fn verify(from: &Path) -> Result<Manifest, RestoreError> {
    let manifest = read_manifest(from)?;
    for entry in &manifest.segments {
        read_segment(from, entry, manifest.partitions)?;
    }
    Ok(manifest)
}

/// Restores the snapshot in `from` into the store directory `store_path`, which must
/// not exist or be empty; `index_cache_bytes` is sled's cache while the index is
/// rebuilt. Everything is checked before the store appears at `store_path`.
pub fn restore(
    from: &Path,
    store_path: &Path,
    index_cache_bytes: u64,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let manifest = read_manifest(from)?;
    if !is_empty_or_absent(store_path)? {
        return Err(RestoreError::TargetNotEmpty {
            path: store_path.to_path_buf(),
        });
    }
    let staging = staging_path(store_path);
    if staging.exists() {
        // Ours by name: left by an interrupted restore.
        std::fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    let built = build(from, &manifest, &staging, index_cache_bytes);
    let (records, items) = match built {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if store_path.exists() {
        std::fs::remove_dir(store_path).map_err(io_error(store_path))?;
    }
    std::fs::rename(&staging, store_path).map_err(io_error(store_path))?;
    if let Some(parent) = store_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let report = RestoreReport {
        path: store_path.to_path_buf(),
        node: manifest.node.clone(),
        partitions: manifest.partitions,
        segments: manifest.segments.len(),
        bytes: manifest.segments.iter().map(|s| s.bytes).sum(),
        records,
        items,
        api_keys: manifest.api_keys.len(),
        end: manifest.end.into(),
        duration: started.elapsed(),
    };
    info!(
        path = %store_path.display(),
        segments = report.segments,
        bytes = report.bytes,
        records,
        items,
        millis = report.duration.as_millis() as u64,
        "snapshot restored"
    );
    Ok(report)
}

/// `<store>.restoring`, beside the target: the rename into place stays on one
/// filesystem.
fn staging_path(store_path: &Path) -> PathBuf {
    let mut name = store_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "store".into());
    name.push(".restoring");
    store_path.with_file_name(name)
}

fn is_empty_or_absent(path: &Path) -> Result<bool, RestoreError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Writes the segments and the index into `staging`; returns records and items.
fn build(
    from: &Path,
    manifest: &Manifest,
    staging: &Path,
    index_cache_bytes: u64,
) -> Result<(u64, usize), RestoreError> {
    let log_dir = staging.join(LOG_DIR);
    std::fs::create_dir_all(&log_dir).map_err(io_error(&log_dir))?;
    let index_path = staging.join("index");
    let db = open_index_db(&index_path, index_cache_bytes)?;
    import_trees(&db, manifest)?;
    let index = Index::open(db.clone(), &index_path, false, manifest.partitions)?;
    let mut rebuild = Rebuild::default();
    for entry in &manifest.segments {
        let bytes = read_segment(from, entry, manifest.partitions)?;
        let target = segment_path(&log_dir, entry.segment);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(io_error(&target))?;
        file.write_all(&bytes).map_err(io_error(&target))?;
        file.sync_all().map_err(io_error(&target))?;
        rebuild.segment(&index, entry.segment, &bytes)?;
    }
    sync_dir(&log_dir)?;
    rebuild.finish(&index, manifest.end.into())?;
    let items = index.len();
    index.flush()?;
    db.flush().map_err(StoreError::from)?;
    Ok((rebuild.records, items))
}

/// The metadata trees: partition count and node id, API keys and their revocations,
/// the audit log, and the events (with the trees derived from them rebuilt).
fn import_trees(db: &sled::Db, manifest: &Manifest) -> Result<(), RestoreError> {
    let meta = db.open_tree("meta").map_err(StoreError::from)?;
    meta.insert(META_PARTITIONS, &manifest.partitions.to_be_bytes())
        .map_err(StoreError::from)?;
    meta.insert(META_NODE, manifest.node.as_bytes())
        .map_err(StoreError::from)?;
    for (name, records) in [
        ("api_keys", &manifest.api_keys),
        ("revoked_keys", &manifest.revoked_keys),
        ("audit", &manifest.audit),
    ] {
        let tree = db.open_tree(name).map_err(StoreError::from)?;
        for record in records {
            let (key, value) = record.decode().ok_or_else(|| {
                ManifestError::Inconsistent(format!("a record of {name} is not hex"))
            })?;
            tree.insert(key, value).map_err(StoreError::from)?;
        }
    }
    let mut events = Vec::with_capacity(manifest.events.len());
    for record in &manifest.events {
        let (_, value) = record.decode().ok_or_else(|| {
            ManifestError::Inconsistent("a record of events is not hex".to_string())
        })?;
        events.push(value);
    }
    crate::store::events::Events::open(db)?.import(events)?;
    Ok(())
}

/// Reads one segment of the snapshot and checks it against its manifest entry: size,
/// checksum, every record intact and of a known partition.
fn read_segment(
    from: &Path,
    entry: &SegmentEntry,
    partitions: u16,
) -> Result<Vec<u8>, RestoreError> {
    let bad = |reason: String| RestoreError::Segment {
        segment: entry.segment,
        reason,
    };
    let path = segment_path(&from.join(LOG_DIR), entry.segment);
    let len = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(format!("{} is missing", path.display())));
        }
        Err(e) => return Err(io_error(&path)(e)),
    };
    if len != entry.bytes {
        return Err(bad(format!(
            "{len} bytes, the manifest says {}",
            entry.bytes
        )));
    }
    if len > MAX_SEGMENT_FILE {
        return Err(bad(format!("{len} bytes, more than a segment may hold")));
    }
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    if crc32fast::hash(&bytes) != entry.crc32 {
        return Err(bad("checksum mismatch: the segment was damaged".into()));
    }
    let (found, stop) = scan(&bytes);
    if let Some(stop) = stop {
        return Err(bad(stop.to_string()));
    }
    if let Some((_, record)) = found.iter().find(|(_, r)| r.header.partition >= partitions) {
        return Err(bad(format!(
            "a record of partition {}, the store has {partitions}",
            record.header.partition
        )));
    }
    Ok(bytes)
}

/// The index rebuilt from the log in log order, in batches.
#[derive(Default)]
struct Rebuild {
    batch: Vec<IndexEntry>,
    /// Where each id of the batch lies, for the next record of the same id.
    in_batch: HashMap<ItemId, Locator>,
    through: LogPosition,
    records: u64,
}

impl Rebuild {
    /// Indexes one segment's records.
    fn segment(&mut self, index: &Index, segment: u64, bytes: &[u8]) -> Result<(), RestoreError> {
        let (found, _) = scan(bytes);
        for (offset, record) in found {
            let locator = Locator {
                segment,
                offset: offset as u64,
                len: record.len as u32,
            };
            let stored = decode_item(record.body)?;
            let id = stored.item.id;
            // A later record of an id replaces the earlier one (a rewritten verdict, or
            // a copy made by compaction), whose bytes become dead.
            let supersedes = match self.in_batch.get(&id) {
                Some(&earlier) => Some(earlier),
                None => index.locate(id)?,
            };
            let mut entry = index_entry(
                &stored,
                record.header.partition,
                record.header.sequence,
                locator,
            );
            entry.supersedes = supersedes;
            self.batch.push(entry);
            self.in_batch.insert(id, locator);
            self.through = locator.end();
            self.records += 1;
            if self.batch.len() >= MAX_INDEX_BATCH {
                index.apply(&self.batch, self.through)?;
                self.batch.clear();
                self.in_batch.clear();
            }
        }
        Ok(())
    }

    /// Applies the rest and moves the checkpoint to the log's end: a store opened on
    /// it replays nothing.
    fn finish(&mut self, index: &Index, end: LogPosition) -> Result<(), RestoreError> {
        index.apply(&self.batch, end.max(self.through))?;
        self.batch.clear();
        self.in_batch.clear();
        Ok(())
    }
}
