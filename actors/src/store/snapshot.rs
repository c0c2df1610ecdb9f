//! Online snapshots of the store, and restoring one into a fresh store.
//!
//! ```text
//! <dir>/log/*.seg        the partition log up to the snapshot's end position
//! <dir>/manifest.json    node id, partitions, end position, every segment's size and
//!                        CRC-32, the API keys, revocations, audit log and events;
//!                        SHA-256 checked
//! ```
//!
//! The snapshot is the log, not sled: the log is the store of record, and the index is
//! rebuilt from it on restore. Taking one ([`Store::snapshot`]) notes the log's end
//! under the log's append lock (a moment: every record acknowledged so far lies before
//! it), hard-links every sealed segment into the snapshot (sealed segments never
//! change; a link survives the retirement pass deleting the original), copies what
//! does not link (another filesystem) and the segment being written up to the noted
//! end, then writes the manifest last, so a snapshot without one is incomplete. Writes
//! go on meanwhile; only the retirement pass waits, while the links are made.
//!
//! Restoring ([`restore()`]) checks the manifest and every segment's checksum, copies the
//! segments into a staging directory beside the target, rebuilds the index from them
//! in log order (a record of an id seen before, a rewritten verdict or a copy made by
//! compaction, replaces it, as replay does), re-imports the metadata trees, and moves
//! the staging directory into place. A store opened on it has nothing to replay.

pub mod manifest;
pub mod restore;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::encode_payload;
use tracing::{debug, info};

use super::log::record::scan;
use super::log::{LogError, LogPosition, segment_path, sync_dir};
use super::{Store, StoreError, now_ms};
use manifest::{FORMAT_VERSION, SegmentEntry, TreeRecord};
pub use manifest::{MANIFEST_FILE, Manifest, ManifestError};
pub use restore::{RestoreError, RestoreReport, read_manifest, restore, verify};

/// The segments' directory in a snapshot.
pub const LOG_DIR: &str = "log";
/// Mode of the directories a snapshot makes: it holds every item and the API keys'
/// hashes, as private as the data dir.
const SNAPSHOT_DIR_MODE: u32 = 0o700;
/// Mode of the files a snapshot writes (a hard link keeps its segment's own mode).
const SNAPSHOT_FILE_MODE: u32 = 0o600;
/// How often a snapshot in progress logs how far it is.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How far a snapshot is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotProgress {
    /// Segments written and checked.
    pub segments_done: usize,
    /// Segments the snapshot holds.
    pub segments_total: usize,
    /// Bytes written and checked.
    pub bytes_done: u64,
    /// Bytes the snapshot holds.
    pub bytes_total: u64,
}

/// What a finished snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Where it is.
    pub dir: PathBuf,
    /// The end of the log when it began: everything acknowledged before is in it.
    pub end: LogPosition,
    /// Segments, and bytes of them, written and checked (done = total when finished).
    pub progress: SnapshotProgress,
    /// Of the segments, those hard-linked rather than copied.
    pub linked_segments: usize,
    /// Log records in it.
    pub records: u64,
    /// API keys in it.
    pub api_keys: usize,
    /// Records of the audit tree in it (its entries and head).
    pub audit_records: usize,
    /// How long it took.
    pub duration: Duration,
}

/// Why a snapshot failed. The store is unchanged in every case; the partial snapshot
/// is removed where possible, and one without `manifest.json` is never restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The target exists and is not an empty directory; nothing was written.
    #[error("{path} exists and is not an empty directory")]
    TargetNotEmpty {
        /// The target.
        path: PathBuf,
    },
    /// Reading the log or writing the snapshot failed.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A segment of the live log is damaged before the snapshot's end.
    #[error("{0}")]
    Log(#[from] LogError),
    /// Reading the metadata trees failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The snapshot's task stopped before finishing (it panicked).
    #[error("the snapshot stopped before finishing: {reason}")]
    Aborted {
        /// What stopped it.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A segment to put in the snapshot.
struct Planned {
    segment: u64,
    /// Open on the live segment: reads it even if it is retired meanwhile.
    file: Arc<File>,
    /// Bytes to take: the whole of a sealed segment, the noted end of the last.
    len: u64,
    /// Already hard-linked into the snapshot.
    linked: bool,
}

impl Store {
    /// Writes a consistent snapshot of the store into `dir` (created if missing; an
    /// existing one must be empty) while writes go on: everything acknowledged before
    /// the call is in it. Blocking; calls `progress` after each segment.
    pub fn snapshot(
        &self,
        dir: &Path,
        progress: &mut dyn FnMut(&SnapshotProgress),
    ) -> Result<SnapshotReport, SnapshotError> {
        let started = Instant::now();
        let created_at_ms = now_ms();
        prepare_target(dir)?;
        let log_dir = dir.join(LOG_DIR);
        std::fs::DirBuilder::new()
            .mode(SNAPSHOT_DIR_MODE)
            .create(&log_dir)
            .map_err(io_error(&log_dir))?;
        match self.write_snapshot(dir, &log_dir, created_at_ms, started, progress) {
            Ok(report) => Ok(report),
            Err(e) => {
                // Best effort: a snapshot without its manifest is refused anyway.
                let _ = std::fs::remove_dir_all(&log_dir);
                let _ = std::fs::remove_file(dir.join(format!("{MANIFEST_FILE}.tmp")));
                Err(e)
            }
        }
    }

    fn write_snapshot(
        &self,
        dir: &Path,
        log_dir: &Path,
        created_at_ms: u64,
        started: Instant,
        progress: &mut dyn FnMut(&SnapshotProgress),
    ) -> Result<SnapshotReport, SnapshotError> {
        let shared = &self.shared;
        let (end, planned) = {
            // The retirement pass waits between its steps while segments are listed and
            // linked, so none is deleted in between; once linked, a deletion cannot
            // touch them, and a copy reads through a handle opened before.
            let _retirement = shared.retirement.lock().unwrap_or_else(|p| p.into_inner());
            // Taken under the log's append lock: an append is acknowledged only after
            // it returns, so every acknowledged record ends at or before this.
            let end = shared.log.end();
            let mut planned = Vec::new();
            for (segment, path, file) in shared.log.segment_files(end.segment) {
                let (len, linked) = if segment == end.segment {
                    // The segment being written grows past the end: copied, never linked.
                    (end.offset, false)
                } else {
                    let len = file.metadata().map_err(io_error(&path))?.len();
                    let target = segment_path(log_dir, segment);
                    match std::fs::hard_link(&path, &target) {
                        Ok(()) => (len, true),
                        Err(e) => {
                            debug!(segment, error = %e, "cannot link the segment; copying it");
                            (len, false)
                        }
                    }
                };
                planned.push(Planned {
                    segment,
                    file,
                    len,
                    linked,
                });
            }
            (end, planned)
        };
        let mut done = SnapshotProgress {
            segments_total: planned.len(),
            bytes_total: planned.iter().map(|p| p.len).sum(),
            ..SnapshotProgress::default()
        };
        info!(
            dir = %dir.display(),
            end_segment = end.segment,
            end_offset = end.offset,
            segments = done.segments_total,
            bytes = done.bytes_total,
            "snapshot started"
        );
        let mut segments = Vec::with_capacity(planned.len());
        let mut records = 0u64;
        let mut logged = Instant::now();
        for plan in &planned {
            let (entry, count) = take_segment(plan, log_dir)?;
            segments.push(entry);
            records += count;
            done.segments_done += 1;
            done.bytes_done += plan.len;
            progress(&done);
            if logged.elapsed() >= PROGRESS_INTERVAL {
                logged = Instant::now();
                info!(
                    segments_done = done.segments_done,
                    segments_total = done.segments_total,
                    bytes_done = done.bytes_done,
                    bytes_total = done.bytes_total,
                    "snapshot in progress"
                );
            }
        }
        sync_dir(log_dir)?;
        // In their stored forms (see `api_keys`), so restore writes them back as-is.
        let keys = self.api_keys.state()?;
        let api_keys: Vec<TreeRecord> = keys
            .keys
            .iter()
            .map(|(hash, record)| TreeRecord::new(hash, &encode_payload(record)))
            .collect();
        let revoked_keys: Vec<TreeRecord> = keys
            .revocations
            .iter()
            .map(|(hash, at)| TreeRecord::new(hash, &at.to_be_bytes()))
            .collect();
        let audit: Vec<TreeRecord> = self
            .audit
            .export()?
            .iter()
            .map(|(k, v)| TreeRecord::new(k, v))
            .collect();
        let events: Vec<TreeRecord> = self
            .events
            .export()?
            .iter()
            .map(|(k, v)| TreeRecord::new(k, v))
            .collect();
        let manifest = Manifest {
            format: FORMAT_VERSION,
            node: self.node.0.clone(),
            partitions: self.partitions,
            created_at_ms,
            end: end.into(),
            segments,
            records,
            api_keys,
            revoked_keys,
            audit,
            events,
        };
        write_manifest(dir, &manifest)?;
        let report = SnapshotReport {
            dir: dir.to_path_buf(),
            end,
            progress: done,
            linked_segments: planned.iter().filter(|p| p.linked).count(),
            records,
            api_keys: manifest.api_keys.len(),
            audit_records: manifest.audit.len(),
            duration: started.elapsed(),
        };
        info!(
            dir = %dir.display(),
            segments = done.segments_total,
            linked = report.linked_segments,
            bytes = done.bytes_total,
            records,
            end_segment = end.segment,
            end_offset = end.offset,
            millis = report.duration.as_millis() as u64,
            "snapshot written"
        );
        Ok(report)
    }
}

/// Creates `dir` (and its parents) or checks that it is an empty directory.
fn prepare_target(dir: &Path) -> Result<(), SnapshotError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SnapshotError::TargetNotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(SNAPSHOT_DIR_MODE)
            .create(dir)
            .map_err(io_error(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(SnapshotError::TargetNotEmpty {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => Err(io_error(dir)(e)),
    }
}

/// Reads the segment's bytes, checks that every record in them is intact, writes
/// them unless linked, and returns its manifest entry and record count.
fn take_segment(plan: &Planned, log_dir: &Path) -> Result<(SegmentEntry, u64), SnapshotError> {
    let target = segment_path(log_dir, plan.segment);
    let mut bytes = vec![0; plan.len as usize];
    plan.file
        .read_exact_at(&mut bytes, 0)
        .map_err(io_error(&target))?;
    let (found, stop) = scan(&bytes);
    if let Some(stop) = stop {
        return Err(LogError::Corrupt {
            segment: plan.segment,
            reason: format!("in a snapshot: {stop}"),
        }
        .into());
    }
    if !plan.linked {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SNAPSHOT_FILE_MODE)
            .open(&target)
            .map_err(io_error(&target))?;
        file.write_all(&bytes).map_err(io_error(&target))?;
        file.sync_all().map_err(io_error(&target))?;
    }
    let entry = SegmentEntry {
        segment: plan.segment,
        bytes: plan.len,
        crc32: crc32fast::hash(&bytes),
    };
    Ok((entry, found.len() as u64))
}

/// Writes the manifest durably and atomically: a temporary file, synced, renamed.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), SnapshotError> {
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let path = dir.join(MANIFEST_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SNAPSHOT_FILE_MODE)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(&manifest.encode()).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests;
