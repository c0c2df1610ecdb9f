//! The partition log: the node's store of record. One append-only sequence of
//! checksummed records in segment files under `<store>/log/`, each record tagged with
//! its partition and that partition's sequence number.
//!
//! Writers hand a whole group to [`PartitionLog::append`]: one `write` and one
//! `fdatasync` cover it (group commit), and only then does the caller send receipts.
//! Any failure of a write or a sync is fatal: the kernel may have dropped the dirty
//! pages, so nothing written after it could be trusted to be on disk. The log refuses
//! every later append until the process restarts and [`PartitionLog::open`] replays.
//!
//! Item bodies stay here (key–value separation); the sled index holds [`Locator`]s.
//! Segments are immutable once the writer moves past them; recovery reads only what
//! the index has not durably absorbed (from its checkpoint) and cuts the last segment
//! at its first torn or corrupt record, which was never acknowledged.
//!
//! A segment wholly before the checkpoint whose records the index no longer points at
//! is retired ([`PartitionLog::remove_segment`], driven by the store's retirement pass):
//! segment numbers then have gaps, and a read of a locator in a retired segment is
//! [`LogError::Retired`], which tells the reader to look the record up again.

pub mod record;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use record::{HEADER_LEN, RecordHeader, SEGMENT_MAGIC, ScanStop, decode_record, encode_record};
use tracing::{error, info, warn};

/// Default size at which the writer starts a new segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Smallest segment size accepted: small segments are for tests.
pub const MIN_SEGMENT_BYTES: u64 = 1 << 10;
/// Largest segment size accepted: the retirement pass reads a whole segment at once.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Bytes of an encoded [`Locator`].
pub const LOCATOR_LEN: usize = 20;

/// Where a record lies: its segment, its offset in it and its whole length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locator {
    /// The segment's number.
    pub segment: u64,
    /// The record's first byte within the segment.
    pub offset: u64,
    /// Header and body.
    pub len: u32,
}

impl Locator {
    /// The fixed-size form stored in the index.
    pub fn to_bytes(self) -> [u8; LOCATOR_LEN] {
        let mut out = [0; LOCATOR_LEN];
        out[..8].copy_from_slice(&self.segment.to_be_bytes());
        out[8..16].copy_from_slice(&self.offset.to_be_bytes());
        out[16..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Reads [`Locator::to_bytes`]' form; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Locator {
            segment: u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
            offset: u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?),
            len: u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?),
        })
    }

    /// The position just after this record.
    pub fn end(self) -> LogPosition {
        LogPosition {
            segment: self.segment,
            offset: self.offset + u64::from(self.len),
        }
    }
}

/// A point in the log: everything before it is covered (e.g. by the index checkpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    /// The segment's number.
    pub segment: u64,
    /// The byte offset within it.
    pub offset: u64,
}

impl LogPosition {
    /// The fixed-size form stored in the index's meta tree.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.segment.to_be_bytes());
        out[8..].copy_from_slice(&self.offset.to_be_bytes());
        out
    }

    /// Reads [`LogPosition::to_bytes`]' form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(LogPosition {
            segment: u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
            offset: u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?),
        })
    }
}

/// Why the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Opening, creating or reading a segment failed; nothing was appended.
    #[error("log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A write or sync failed during an append, now or earlier: the log accepts no more
    /// appends until the node restarts and replays. The failed group was not
    /// acknowledged.
    #[error("the log failed and takes no more writes until restart: {reason}")]
    Failed {
        /// The first failure.
        reason: String,
    },
    /// The segment was retired (its records live on elsewhere): look the record up
    /// again. Nothing was read or changed.
    #[error("log segment {segment} was retired")]
    Retired {
        /// The segment's number.
        segment: u64,
    },
    /// A record that must be intact is not: a segment other than the last is damaged,
    /// or a locator points at something that is not its record. Nothing was changed.
    #[error("corrupt log segment {segment}: {reason}")]
    Corrupt {
        /// The segment's number.
        segment: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A record read back during recovery.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// Its header.
    pub header: RecordHeader,
    /// Where it lies.
    pub locator: Locator,
    /// Its body.
    pub body: Vec<u8>,
}

/// What a failure injected in tests does (the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Refuse the append before any byte is written (transient: the log stays usable).
    BeforeWrite,
    /// Write the group, then fail its `fdatasync` (fatal, as a real sync failure is).
    Sync,
}

/// The log's writing end; one append at a time.
struct Writer {
    file: File,
    segment: u64,
    len: u64,
    /// The first write or sync failure; set once, never cleared.
    failed: Option<String>,
    /// Reused between appends.
    buffer: Vec<u8>,
    #[cfg(feature = "fault-injection")]
    fault: Option<Fault>,
}

/// The partition log. Cheap to share; appends serialise on the writer, reads do not.
pub struct PartitionLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// `fdatasync` after each group (full durability) or only `write` (survives a
    /// process crash, not a power loss).
    sync: bool,
    writer: Mutex<Writer>,
    /// Every segment, open for positional reads.
    readers: RwLock<BTreeMap<u64, Arc<File>>>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("sync", &self.sync)
            .finish()
    }
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, and returns every intact record at or after
    /// `from` in log order. The last segment is cut at its first torn or corrupt record;
    /// damage anywhere else is `Corrupt`.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        sync: bool,
        from: LogPosition,
    ) -> Result<(PartitionLog, Vec<Recovered>), LogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            create_segment(dir, 1)?;
            segments.push(1);
        }
        let last = *segments.last().expect("at least one segment");
        let mut recovered = Vec::new();
        for &segment in segments.iter().filter(|&&s| s >= from.segment) {
            let path = segment_path(dir, segment);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let (found, stop) = record::scan(&bytes);
            let start = if segment == from.segment {
                from.offset as usize
            } else {
                0
            };
            for (offset, record) in found.into_iter().filter(|(o, _)| *o >= start) {
                recovered.push(Recovered {
                    header: record.header,
                    locator: Locator {
                        segment,
                        offset: offset as u64,
                        len: record.len as u32,
                    },
                    body: record.body.to_vec(),
                });
            }
            match stop {
                None => {}
                Some(stop) if segment == last => cut_tail(&path, &stop, bytes.len())?,
                Some(stop) => {
                    return Err(LogError::Corrupt {
                        segment,
                        reason: stop.to_string(),
                    });
                }
            }
        }
        let mut readers = BTreeMap::new();
        for &segment in &segments {
            let path = segment_path(dir, segment);
            readers.insert(segment, Arc::new(File::open(&path).map_err(io(&path))?));
        }
        let path = segment_path(dir, last);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            sync,
            writer: Mutex::new(Writer {
                file,
                segment: last,
                len,
                failed: None,
                buffer: Vec::new(),
                #[cfg(feature = "fault-injection")]
                fault: None,
            }),
            readers: RwLock::new(readers),
        };
        info!(dir = %dir.display(), segments = segments.len(), replayed = recovered.len(), "partition log opened");
        Ok((log, recovered))
    }

    /// Appends a group of records with one write and (when syncing) one `fdatasync`,
    /// and returns where each lies. `on_durable` runs with the locators while the writer
    /// is still held, so whatever it records is in log order.
    pub fn append<T>(
        &self,
        records: &[(RecordHeader, &[u8])],
        on_durable: impl FnOnce(&[Locator]) -> T,
    ) -> Result<T, LogError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = &writer.failed {
            return Err(LogError::Failed {
                reason: reason.clone(),
            });
        }
        #[cfg(feature = "fault-injection")]
        if writer.fault == Some(Fault::BeforeWrite) {
            return Err(LogError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("injected write failure"),
            });
        }
        let bytes: u64 = records
            .iter()
            .map(|(_, body)| (HEADER_LEN + body.len()) as u64)
            .sum();
        if writer.len > SEGMENT_MAGIC.len() as u64 && writer.len + bytes > self.segment_bytes {
            self.roll(&mut writer)?;
        }
        let mut buffer = std::mem::take(&mut writer.buffer);
        buffer.clear();
        let mut locators = Vec::with_capacity(records.len());
        for (header, body) in records {
            let offset = writer.len + buffer.len() as u64;
            encode_record(*header, body, &mut buffer);
            locators.push(Locator {
                segment: writer.segment,
                offset,
                len: (HEADER_LEN + body.len()) as u32,
            });
        }
        let written = writer.file.write_all(&buffer);
        let synced = written.and_then(|()| self.sync_file(&writer));
        writer.buffer = buffer;
        if let Err(e) = synced {
            let reason = format!("segment {}: {e}", writer.segment);
            error!(%reason, "partition log write failed; no more writes until restart");
            writer.failed = Some(reason.clone());
            return Err(LogError::Failed { reason });
        }
        writer.len += bytes;
        Ok(on_durable(&locators))
    }

    /// The body of the record at `locator`, checked against its checksum and `expect`.
    pub fn read(
        &self,
        locator: Locator,
        expect: &dyn Fn(&RecordHeader) -> bool,
    ) -> Result<Vec<u8>, LogError> {
        let file = self
            .readers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&locator.segment)
            .cloned()
            .ok_or(LogError::Retired {
                segment: locator.segment,
            })?;
        let corrupt = |reason: String| LogError::Corrupt {
            segment: locator.segment,
            reason,
        };
        if locator.len as usize > HEADER_LEN + record::MAX_BODY_BYTES {
            return Err(corrupt(format!("locator length {}", locator.len)));
        }
        let mut bytes = vec![0; locator.len as usize];
        file.read_exact_at(&mut bytes, locator.offset)
            .map_err(|source| LogError::Io {
                path: segment_path(&self.dir, locator.segment),
                source,
            })?;
        match decode_record(&bytes, locator.offset as usize) {
            Ok(Some(found)) if found.len == bytes.len() && expect(&found.header) => {
                bytes.drain(..HEADER_LEN);
                Ok(bytes)
            }
            Ok(_) => Err(corrupt(format!(
                "the record at {} is not the one indexed",
                locator.offset
            ))),
            Err(stop) => Err(corrupt(stop.to_string())),
        }
    }

    /// The first failure that stopped the log, if any.
    pub fn failure(&self) -> Option<String> {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .clone()
    }

    /// Segments and bytes on disk.
    pub fn disk_usage(&self) -> (usize, u64) {
        let readers = self.readers.read().unwrap_or_else(|p| p.into_inner());
        let bytes = readers
            .values()
            .filter_map(|file| file.metadata().ok())
            .map(|meta| meta.len())
            .sum();
        (readers.len(), bytes)
    }

    /// The segments on disk, ascending, with their sizes in bytes.
    pub fn segments(&self) -> Vec<(u64, u64)> {
        let readers = self.readers.read().unwrap_or_else(|p| p.into_inner());
        readers
            .iter()
            .filter_map(|(&segment, file)| Some((segment, file.metadata().ok()?.len())))
            .collect()
    }

    /// The size at which the writer starts a new segment.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The position just after the last record appended.
    pub fn end(&self) -> LogPosition {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        LogPosition {
            segment: writer.segment,
            offset: writer.len,
        }
    }

    /// The segment the writer appends to (never retired).
    pub fn head_segment(&self) -> u64 {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .segment
    }

    /// The whole of segment `segment`, read for the retirement pass. The caller asks
    /// only for segments the writer has moved past, which no longer change.
    pub fn read_segment(&self, segment: u64) -> Result<Vec<u8>, LogError> {
        let file = self
            .readers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&segment)
            .cloned()
            .ok_or(LogError::Retired { segment })?;
        let path = segment_path(&self.dir, segment);
        let io = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_SEGMENT_BYTES + record::MAX_BODY_BYTES as u64 + HEADER_LEN as u64 {
            return Err(LogError::Corrupt {
                segment,
                reason: format!("{len} bytes, more than a segment may hold"),
            });
        }
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, 0).map_err(io)?;
        Ok(bytes)
    }

    /// Every segment up to and including `through`, each with its path and an open
    /// handle: a handle keeps reading a segment even if it is retired meanwhile.
    pub(crate) fn segment_files(&self, through: u64) -> Vec<(u64, PathBuf, Arc<File>)> {
        let readers = self.readers.read().unwrap_or_else(|p| p.into_inner());
        readers
            .range(..=through)
            .map(|(&segment, file)| (segment, segment_path(&self.dir, segment), Arc::clone(file)))
            .collect()
    }

    /// Deletes a segment whose records are all dead, durably (the directory is synced).
    /// Readers that already hold the file finish their read; later reads of its
    /// locators are [`LogError::Retired`]. Refuses the segment being written.
    pub fn remove_segment(&self, segment: u64) -> Result<(), LogError> {
        if segment >= self.head_segment() {
            return Err(LogError::Corrupt {
                segment,
                reason: "the segment being written cannot be retired".into(),
            });
        }
        self.readers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&segment);
        let path = segment_path(&self.dir, segment);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogError::Io { path, source }),
        }
        sync_dir(&self.dir)?;
        info!(segment, "log segment retired");
        Ok(())
    }

    /// Test-only: make appends fail as `fault` says (`None`: work again, unless a fatal
    /// failure already happened).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, fault: Option<Fault>) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).fault = fault;
    }

    fn sync_file(&self, writer: &Writer) -> std::io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if writer.fault == Some(Fault::Sync) {
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        if self.sync {
            writer.file.sync_data()?;
        }
        Ok(())
    }

    /// Starts the next segment. The current one is already durable up to its end.
    fn roll(&self, writer: &mut Writer) -> Result<(), LogError> {
        let next = writer.segment + 1;
        let created = create_segment(&self.dir, next).and_then(|()| {
            let path = segment_path(&self.dir, next);
            let io = |source| LogError::Io {
                path: path.clone(),
                source,
            };
            let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
            let reader = File::open(&path).map_err(io)?;
            Ok((file, reader))
        });
        match created {
            Ok((file, reader)) => {
                writer.file = file;
                writer.segment = next;
                writer.len = SEGMENT_MAGIC.len() as u64;
                self.readers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(next, Arc::new(reader));
                Ok(())
            }
            Err(e) => {
                // A half-made segment could hold anything: stop rather than guess.
                let reason = e.to_string();
                writer.failed = Some(reason.clone());
                Err(LogError::Failed { reason })
            }
        }
    }
}

/// `<dir>/<segment, 20 digits>.seg`: names sort in log order.
pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

/// The segment numbers present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LogError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push(number);
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Creates segment `number` holding only the magic, durably (file and directory entry).
fn create_segment(dir: &Path, number: u64) -> Result<(), LogError> {
    let path = segment_path(dir, number);
    let io = |source| LogError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(&SEGMENT_MAGIC).map_err(io)?;
    file.sync_all().map_err(io)?;
    sync_dir(dir)
}

/// Cuts the last segment at a torn or corrupt record: it was never acknowledged (its
/// group's sync did not complete), so nothing acknowledged is lost.
fn cut_tail(path: &Path, stop: &ScanStop, len: usize) -> Result<(), LogError> {
    let keep = stop.offset();
    warn!(path = %path.display(), keep, dropped = len - keep, %stop, "cutting the log's torn tail");
    let io = |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new().write(true).open(path).map_err(io)?;
    if keep < SEGMENT_MAGIC.len() {
        // Not even the magic survived: the segment was being created.
        file.set_len(0).map_err(io)?;
        file.write_all(&SEGMENT_MAGIC).map_err(io)?;
    } else {
        file.set_len(keep as u64).map_err(io)?;
    }
    file.sync_all().map_err(io)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests;
