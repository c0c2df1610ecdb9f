//! The sled index over the partition log: small keys that find records, applied behind
//! the log in large batches, off the receipt path.
//!
//! Trees (partition = `partition_of(user_id, partitions)`, `u16` BE):
//! - `listing`: partition ‖ user_len (u8) ‖ user ‖ stored_at (u64 BE) ‖ id → [`Locator`].
//!   A user's items are one range, oldest first; a partition is one contiguous range.
//! - `ids`: id → [`Locator`]: `get` and dedup by id. Values stay 20 bytes so sled keeps
//!   them inline (no allocation per entry when it copies a leaf on each insert).
//! - `sequences`: partition (u16 BE) → the last sequence indexed (u64 BE), lowered only
//!   by a replica's truncation ([`super::replica`]).
//! - `by_sequence`: partition (u16 BE) ‖ sequence (u64 BE) → [`Locator`], then, for a
//!   rewrite, the sequence of the record it replaced (u64 BE): a partition in sequence
//!   order, for replication, and the way back to an item's earlier version when a
//!   replica truncates its rewrite. A record copied forward overwrites its key with the
//!   new locator; a superseded record's key stays and readers skip it (its id's live
//!   record lies elsewhere). Stores made before the tree existed get it rebuilt when
//!   they open, from `ids` and each live record's header in the log
//!   ([`super::replica`]); `meta` `by_sequence` marks it complete.
//! - `function_stats`: partition (u16 BE) → its function stats and the last sequence
//!   they count ([`super::functions`]).
//! - `review`: the `listing` keys of the items whose newest record is flagged: the
//!   review queue ([`super::review`]). Kept as entries are applied; a reader checks
//!   each item's current status, so an entry a truncation left behind is skipped.
//! - `meta`: `checkpoint` — the log position up to which everything is indexed durably;
//!   recovery replays the log from there (every entry is a plain put, so replaying what
//!   is already indexed changes nothing). `dead` ‖ segment (u64 BE) → bytes (u64 BE):
//!   how much of that segment the index no longer points at.
//!
//! Dead bytes are counted when an entry that supersedes an older record (a rewritten
//! verdict, or a record copied forward by the retirement pass) is applied: its writer
//! knew the record it replaced ([`IndexEntry::supersedes`]), so counting costs the
//! indexer no read. The counts go in the same atomic `meta` batch as the checkpoint, so
//! an entry is counted exactly when the checkpoint durably passes it, and replay after a
//! crash (which starts at that checkpoint) never counts it twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use chorus_protocol::{Facet, FunctionRef, ItemId, PartitionId, Tally, VersionStats};

use super::StoreError;
use super::functions::{self, Facts, PERSIST_INTERVAL, PartitionStats};
use super::log::{LOCATOR_LEN, Locator, LogPosition};

/// `meta` key of the checkpoint.
const META_CHECKPOINT: &[u8] = b"checkpoint";
/// Prefix of the `meta` keys counting a segment's dead bytes.
const META_DEAD: &[u8] = b"dead";
/// `meta` key present once `by_sequence` covers every indexed record.
const META_BY_SEQUENCE: &[u8] = b"by_sequence";
/// `meta` key present once the function stats count every indexed item.
/// (Stores made before the facets were counted hold `function_stats` and its mark; the
/// new names make them count every item once more, facets included, when they open.)
const META_FUNCTION_STATS: &[u8] = b"function_stats/2";
/// `meta` key present once `review` holds every flagged item indexed.
const META_REVIEW: &[u8] = b"review";

/// The `by_sequence` key of a record.
pub(crate) fn sequence_key(partition: PartitionId, sequence: u64) -> [u8; 10] {
    let mut key = [0; 10];
    key[..2].copy_from_slice(&partition.to_be_bytes());
    key[2..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// The sequence in a `by_sequence` key.
fn key_sequence(key: &[u8]) -> Result<u64, StoreError> {
    key.get(2..10)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            tree: "by_sequence",
            reason: format!("key of {} bytes, expected 10", key.len()),
        })
}

/// A `by_sequence` value as a locator.
fn sequence_locator(raw: &[u8]) -> Result<Locator, StoreError> {
    Locator::from_bytes(raw).ok_or_else(|| StoreError::Corrupt {
        tree: "by_sequence",
        reason: "entry shorter than a locator".into(),
    })
}

/// The sequence a rewrite's `by_sequence` value names after its locator, if any.
fn sequence_replaces(raw: &[u8]) -> Option<u64> {
    raw.get(LOCATOR_LEN..LOCATOR_LEN + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// A `by_sequence` value: the locator, then the sequence a rewrite replaced.
fn sequence_value(locator: Locator, replaces: Option<u64>) -> Vec<u8> {
    let mut value = locator.to_bytes().to_vec();
    if let Some(sequence) = replaces {
        value.extend_from_slice(&sequence.to_be_bytes());
    }
    value
}

/// The `meta` key of segment `segment`'s dead-byte count.
fn dead_key(segment: u64) -> [u8; 12] {
    let mut key = [0; 12];
    key[..4].copy_from_slice(META_DEAD);
    key[4..].copy_from_slice(&segment.to_be_bytes());
    key
}

/// What the record at a locator is, as a truncation needs to know it.
pub(crate) struct Identified {
    /// Its item's id.
    pub id: ItemId,
    /// Its `listing` key.
    pub listing_key: Vec<u8>,
    /// What it tells of the function its item names.
    pub facts: Option<Facts>,
}

/// Names the record at a locator, or `None` if its segment is gone.
pub(crate) type Identify<'a> = dyn FnMut(Locator) -> Result<Option<Identified>, StoreError> + 'a;

/// What the index learns about one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The item's id.
    pub id: ItemId,
    /// Its `listing` key.
    pub listing_key: Vec<u8>,
    /// Where its newest record lies.
    pub locator: Locator,
    /// Its partition.
    pub partition: PartitionId,
    /// The record's sequence in the partition.
    pub sequence: u64,
    /// The record of the same id this one replaces, which becomes dead once this entry
    /// is indexed; `None` for a first write.
    pub supersedes: Option<Locator>,
    /// The sequence of the record of the same id this one rewrites, when that is
    /// another sequence (not a copy of the same record); kept in `by_sequence` so a
    /// truncation of this record can bring that version back.
    pub replaces: Option<u64>,
    /// What its item tells the stats (its function version's and its facet's),
    /// counted when the item first becomes live; `None` for a tombstone.
    pub facts: Option<Facts>,
    /// Whether the record's status is flagged: its item waits for review.
    pub flagged: bool,
    /// Whether the record is a tombstone (its item deleted or expired).
    pub deleted: bool,
    /// For a tombstone: the facts of the item it deletes, read by the indexer from the
    /// record it supersedes, taken out of the function stats.
    pub uncount: Option<Facts>,
}

/// The sled trees of the index.
pub(crate) struct Index {
    db: sled::Db,
    listing: sled::Tree,
    ids: sled::Tree,
    sequences: sled::Tree,
    by_sequence: sled::Tree,
    meta: sled::Tree,
    /// sled's log file, to fdatasync after a flush when the store syncs.
    db_file: Option<File>,
    /// What the index holds durably; one lock so the checkpoint and the dead counts
    /// always move together.
    durable: Mutex<Durable>,
    function_stats: sled::Tree,
    /// The review queue's listing keys ([`super::review`]).
    review: sled::Tree,
    /// The function stats of every partition ([`super::functions`]).
    functions: Mutex<Functions>,
}

/// The function stats in memory, and which partitions' changed since written.
#[derive(Debug)]
struct Functions {
    partitions: Vec<PartitionStats>,
    dirty: BTreeSet<PartitionId>,
    written: Instant,
    /// The stats summed over the partitions last asked about (those a node leads), kept
    /// up to date as records are counted, so that a summary costs what it returns, not
    /// partitions × versions; `None` until asked, and after a recount or truncation.
    summed: Option<Summed>,
}

/// Stats summed over a set of partitions.
#[derive(Debug)]
struct Summed {
    /// Which partitions.
    over: Vec<bool>,
    /// Each version's stats over them.
    versions: BTreeMap<FunctionRef, VersionStats>,
    /// Each facet's items and ratings over them.
    facets: BTreeMap<Facet, Tally>,
}

impl Functions {
    /// The sums over the partitions `wanted` picks: kept ones if they are over the
    /// same partitions, else summed afresh (and kept).
    fn summed(&mut self, wanted: &dyn Fn(PartitionId) -> bool) -> &Summed {
        let over: Vec<bool> = (0..self.partitions.len())
            .map(|p| wanted(p as PartitionId))
            .collect();
        if self.summed.as_ref().is_none_or(|s| s.over != over) {
            let mut versions: BTreeMap<FunctionRef, VersionStats> = BTreeMap::new();
            let mut facets: BTreeMap<Facet, Tally> = BTreeMap::new();
            for (stats, _) in self.partitions.iter().zip(&over).filter(|(_, w)| **w) {
                for (function, version) in &stats.versions {
                    match versions.get_mut(function) {
                        Some(sum) => sum.merge(version),
                        None => {
                            versions.insert(function.clone(), version.clone());
                        }
                    }
                }
                for (facet, tally) in &stats.facets {
                    facets.entry(*facet).or_default().merge(tally);
                }
            }
            self.summed = Some(Summed {
                over,
                versions,
                facets,
            });
        }
        self.summed.as_ref().expect("summed above")
    }

    /// Adds an item counted in `partition` to the kept sums, if they are over it.
    fn add_to_summed(&mut self, partition: PartitionId, facts: &Facts) {
        if let Some(summed) = &mut self.summed
            && summed.over.get(usize::from(partition)) == Some(&true)
        {
            if let Some((function, item)) = &facts.function {
                match summed.versions.get_mut(function) {
                    Some(sum) => sum.add(item),
                    None => {
                        let mut sum = VersionStats::default();
                        sum.add(item);
                        summed.versions.insert(function.clone(), sum);
                    }
                }
            }
            summed
                .facets
                .entry(facts.facet)
                .or_default()
                .add(facts.rating);
        }
    }
}

/// The index's durable bookkeeping, mirrored in memory.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    /// Everything before it is indexed durably.
    pub checkpoint: LogPosition,
    /// Dead bytes per segment (only segments with some).
    pub dead: BTreeMap<u64, u64>,
    /// The last sequence indexed per partition: a record copied forward keeps its old
    /// sequence, so the stored value only ever grows.
    sequences: Vec<u64>,
}

impl Index {
    /// Opens the index trees in `db` for a store of `partitions`; `sync`: fdatasync
    /// sled's log after each batch.
    pub(crate) fn open(
        db: sled::Db,
        path: &Path,
        sync: bool,
        partitions: u16,
    ) -> Result<Index, StoreError> {
        let db_file = if sync {
            let log_path = path.join("db");
            Some(File::open(&log_path).map_err(|source| StoreError::Sync {
                path: log_path,
                source,
            })?)
        } else {
            None
        };
        let mut index = Index {
            listing: db.open_tree("listing")?,
            ids: db.open_tree("ids")?,
            sequences: db.open_tree("sequences")?,
            by_sequence: db.open_tree("by_sequence")?,
            meta: db.open_tree("meta")?,
            function_stats: db.open_tree("function_stats/2")?,
            review: db.open_tree("review")?,
            db,
            db_file,
            durable: Mutex::new(Durable::default()),
            functions: Mutex::new(Functions {
                partitions: Vec::new(),
                dirty: BTreeSet::new(),
                written: Instant::now(),
                summed: None,
            }),
        };
        let durable = Durable {
            checkpoint: index.read_checkpoint()?,
            dead: index.read_dead()?,
            sequences: index.read_sequences(partitions)?,
        };
        index.durable = Mutex::new(durable);
        if index.ids.is_empty() && !index.by_sequence_complete()? {
            // Nothing indexed yet: `by_sequence` grows with the rest from here.
            index.meta.insert(META_BY_SEQUENCE, &[1u8][..])?;
        }
        if index.live_records().next().is_none() && !index.function_stats_complete()? {
            // Nothing indexed yet: the stats grow with the rest from here.
            index.meta.insert(META_FUNCTION_STATS, &[1u8][..])?;
        }
        if index.ids.is_empty() && !index.review_complete()? {
            // Nothing indexed yet: the queue grows with the rest from here.
            index.meta.insert(META_REVIEW, &[1u8][..])?;
        }
        let held = index.read_function_stats(partitions)?;
        index.functions().partitions = held;
        Ok(index)
    }

    /// The function stats, locked.
    fn functions(&self) -> MutexGuard<'_, Functions> {
        self.functions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_function_stats(&self, partitions: u16) -> Result<Vec<PartitionStats>, StoreError> {
        let mut held = vec![PartitionStats::default(); usize::from(partitions)];
        for entry in self.function_stats.iter() {
            let (key, raw) = entry?;
            let partition = <[u8; 2]>::try_from(key.as_ref())
                .map(u16::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    tree: "function_stats",
                    reason: format!("key of {} bytes, expected 2", key.len()),
                })?;
            if let Some(slot) = held.get_mut(usize::from(partition)) {
                *slot = functions::decode_stats(&raw)?;
            }
        }
        Ok(held)
    }

    /// Whether the function stats are known to count every indexed item.
    pub(crate) fn function_stats_complete(&self) -> Result<bool, StoreError> {
        Ok(self.meta.contains_key(META_FUNCTION_STATS)?)
    }

    /// Replaces every partition's function stats with `counted` (a store that kept
    /// none yet), marks them complete and flushes.
    pub(crate) fn recount_function_stats(
        &self,
        counted: Vec<PartitionStats>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for entry in self.function_stats.iter() {
            batch.remove(entry?.0);
        }
        for (partition, stats) in counted.iter().enumerate() {
            batch.insert(
                &(partition as u16).to_be_bytes()[..],
                functions::encode_stats(stats),
            );
        }
        self.function_stats.apply_batch(batch)?;
        self.meta.insert(META_FUNCTION_STATS, &[1u8][..])?;
        self.flush()?;
        let mut held = self.functions();
        held.partitions = counted;
        held.dirty.clear();
        held.summed = None;
        Ok(())
    }

    /// The partitions of the store.
    pub(crate) fn partition_count(&self) -> u16 {
        self.functions().partitions.len() as u16
    }

    /// The last sequence of `partition` its function stats count.
    pub(crate) fn function_stats_counted(&self, partition: PartitionId) -> u64 {
        self.functions()
            .partitions
            .get(usize::from(partition))
            .map_or(0, |stats| stats.counted)
    }

    /// A copy of `partition`'s function stats.
    pub(crate) fn partition_function_stats(&self, partition: PartitionId) -> PartitionStats {
        self.functions()
            .partitions
            .get(usize::from(partition))
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces `partition`'s function stats (written at the next write).
    pub(crate) fn install_partition_function_stats(
        &self,
        partition: PartitionId,
        stats: PartitionStats,
    ) {
        let mut held = self.functions();
        if let Some(slot) = held.partitions.get_mut(usize::from(partition)) {
            *slot = stats;
            held.dirty.insert(partition);
            held.summed = None;
        }
    }

    /// Writes the function stats of the partitions that changed since last written
    /// (durable at the next flush).
    pub(crate) fn persist_function_stats(&self) -> Result<(), StoreError> {
        let mut held = self.functions();
        self.write_function_stats(&mut held)
    }

    fn write_function_stats(&self, held: &mut Functions) -> Result<(), StoreError> {
        held.written = Instant::now();
        if held.dirty.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for &partition in &held.dirty {
            if let Some(stats) = held.partitions.get(usize::from(partition)) {
                batch.insert(&partition.to_be_bytes()[..], functions::encode_stats(stats));
            }
        }
        self.function_stats.apply_batch(batch)?;
        held.dirty.clear();
        Ok(())
    }

    /// Each function version's stats, summed over the partitions `wanted` picks: every
    /// item indexed so far (the tail not yet indexed is not in them).
    pub(crate) fn function_summary(
        &self,
        wanted: &dyn Fn(PartitionId) -> bool,
        select: &dyn Fn(&FunctionRef) -> bool,
        limit: usize,
    ) -> BTreeMap<FunctionRef, VersionStats> {
        let mut held = self.functions();
        held.summed(wanted)
            .versions
            .iter()
            .filter(|(function, _)| select(function))
            .take(limit)
            .map(|(function, stats)| (function.clone(), stats.clone()))
            .collect()
    }

    /// Each facet's items and ratings summed over the partitions `wanted` picks, those
    /// on the days `days` names (all if `None`).
    pub(crate) fn facet_summary(
        &self,
        wanted: &dyn Fn(PartitionId) -> bool,
        days: Option<(u32, u32)>,
    ) -> BTreeMap<Facet, Tally> {
        let mut held = self.functions();
        held.summed(wanted)
            .facets
            .iter()
            .filter(|(facet, _)| days.is_none_or(|(from, to)| (from..=to).contains(&facet.day)))
            .map(|(facet, tally)| (*facet, *tally))
            .collect()
    }

    /// The durable bookkeeping, locked: the indexer cannot move it meanwhile.
    pub(crate) fn durable(&self) -> MutexGuard<'_, Durable> {
        self.durable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where recovery starts: everything before it is indexed durably.
    pub(crate) fn checkpoint(&self) -> LogPosition {
        self.durable().checkpoint
    }

    /// Forgets the dead count of a retired segment. Not flushed: the next batch's flush
    /// carries it, and a count left for a segment that no longer exists is ignored.
    pub(crate) fn forget_segment(&self, segment: u64) -> Result<(), StoreError> {
        let mut durable = self.durable();
        durable.dead.remove(&segment);
        self.meta.remove(dead_key(segment))?;
        Ok(())
    }

    /// Forgets the dead counts of segments not on disk (retired before a crash made
    /// their removal from `meta` durable).
    pub(crate) fn forget_absent(&self, present: &dyn Fn(u64) -> bool) -> Result<(), StoreError> {
        let absent: Vec<u64> = self
            .durable()
            .dead
            .keys()
            .copied()
            .filter(|&segment| !present(segment))
            .collect();
        for segment in absent {
            self.forget_segment(segment)?;
        }
        Ok(())
    }

    fn read_dead(&self) -> Result<BTreeMap<u64, u64>, StoreError> {
        let mut dead = BTreeMap::new();
        for entry in self.meta.scan_prefix(META_DEAD) {
            let (key, value) = entry?;
            let (Ok(segment), Ok(bytes)) = (
                <[u8; 8]>::try_from(&key[META_DEAD.len()..]),
                <[u8; 8]>::try_from(value.as_ref()),
            ) else {
                return Err(StoreError::Corrupt {
                    tree: "meta",
                    reason: "dead-byte count of the wrong size".into(),
                });
            };
            dead.insert(u64::from_be_bytes(segment), u64::from_be_bytes(bytes));
        }
        Ok(dead)
    }

    fn read_checkpoint(&self) -> Result<LogPosition, StoreError> {
        match self.meta.get(META_CHECKPOINT)? {
            None => Ok(LogPosition::default()),
            Some(raw) => LogPosition::from_bytes(&raw).ok_or_else(|| StoreError::Corrupt {
                tree: "meta",
                reason: format!("checkpoint is {} bytes, expected 16", raw.len()),
            }),
        }
    }

    /// The last sequence indexed per partition.
    pub(crate) fn sequences(&self) -> Vec<u64> {
        self.durable().sequences.clone()
    }

    fn read_sequences(&self, partitions: u16) -> Result<Vec<u64>, StoreError> {
        let mut last = vec![0; usize::from(partitions)];
        for entry in self.sequences.iter() {
            let (key, value) = entry?;
            let (Ok(partition), Ok(sequence)) = (
                <[u8; 2]>::try_from(key.as_ref()),
                <[u8; 8]>::try_from(value.as_ref()),
            ) else {
                return Err(StoreError::Corrupt {
                    tree: "sequences",
                    reason: "entry of the wrong size".into(),
                });
            };
            if let Some(slot) = last.get_mut(usize::from(u16::from_be_bytes(partition))) {
                *slot = u64::from_be_bytes(sequence);
            }
        }
        Ok(last)
    }

    /// Applies entries (in log order) and moves the checkpoint to `through`, with one
    /// flush (and fdatasync when syncing). The checkpoint is written after the entries,
    /// and sled recovers a prefix of its own log, so a durable checkpoint implies
    /// durable entries. The dead bytes the entries make are counted in the checkpoint's
    /// own batch (atomic in sled), so they are durable exactly when it is.
    pub(crate) fn apply(
        &self,
        entries: &[IndexEntry],
        through: LogPosition,
    ) -> Result<(), StoreError> {
        let mut listing = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut by_sequence = sled::Batch::default();
        let mut review = sled::Batch::default();
        let mut review_changed = false;
        let mut sequences: HashMap<PartitionId, u64> = HashMap::new();
        let mut superseded: BTreeMap<u64, u64> = BTreeMap::new();
        let mut held = self.functions();
        for entry in entries {
            // An item counts in its function's stats once, by its first record.
            let Some(stats) = held.partitions.get_mut(usize::from(entry.partition)) else {
                continue;
            };
            let (changed, counted) = stats.apply(
                entry.sequence,
                entry.replaces,
                entry.facts.as_ref(),
                entry.uncount.as_ref(),
            );
            if changed {
                held.dirty.insert(entry.partition);
                if entry.uncount.is_some() {
                    // Deletions are rare: the kept sums are summed afresh when asked.
                    held.summed = None;
                }
            }
            if let Some(counted) = counted {
                held.add_to_summed(entry.partition, counted);
            }
        }
        let write_stats = held.written.elapsed() >= PERSIST_INTERVAL;
        drop(held);
        for entry in entries {
            let locator = entry.locator.to_bytes();
            listing.insert(entry.listing_key.as_slice(), &locator[..]);
            ids.insert(&entry.id.to_bytes()[..], &locator[..]);
            by_sequence.insert(
                &sequence_key(entry.partition, entry.sequence)[..],
                sequence_value(entry.locator, entry.replaces),
            );
            // Only a rewrite can unflag an item: a first record has nothing to remove.
            if entry.flagged {
                review.insert(entry.listing_key.as_slice(), &[][..]);
                review_changed = true;
            } else if entry.supersedes.is_some() {
                review.remove(entry.listing_key.as_slice());
                review_changed = true;
            }
            let last = sequences.entry(entry.partition).or_default();
            *last = (*last).max(entry.sequence);
            if let Some(old) = entry.supersedes {
                *superseded.entry(old.segment).or_default() += u64::from(old.len);
            }
        }
        let mut durable = self.durable();
        let mut seq_batch = sled::Batch::default();
        let mut raised = false;
        for (partition, sequence) in sequences {
            if let Some(last) = durable.sequences.get_mut(usize::from(partition))
                && sequence > *last
            {
                *last = sequence;
                raised = true;
                seq_batch.insert(&partition.to_be_bytes()[..], &sequence.to_be_bytes()[..]);
            }
        }
        // A sled batch costs a manifest in its log: only when counts ride along.
        let meta = (!superseded.is_empty()).then(|| {
            let mut meta = sled::Batch::default();
            for (segment, bytes) in superseded {
                let count = durable.dead.entry(segment).or_default();
                *count += bytes;
                meta.insert(&dead_key(segment)[..], &count.to_be_bytes()[..]);
            }
            meta.insert(META_CHECKPOINT, &through.to_bytes()[..]);
            meta
        });
        self.ids.apply_batch(ids)?;
        self.listing.apply_batch(listing)?;
        self.by_sequence.apply_batch(by_sequence)?;
        if review_changed {
            self.review.apply_batch(review)?;
        }
        // After the entries they count: durable stats imply durable entries.
        if write_stats {
            self.persist_function_stats()?;
        }
        if raised {
            self.sequences.apply_batch(seq_batch)?;
        }
        match meta {
            Some(meta) => self.meta.apply_batch(meta)?,
            None => {
                self.meta.insert(META_CHECKPOINT, &through.to_bytes()[..])?;
            }
        }
        drop(durable);
        self.flush()?;
        self.durable().checkpoint = through;
        Ok(())
    }

    /// Where the newest record of `id` lies.
    pub(crate) fn locate(&self, id: ItemId) -> Result<Option<Locator>, StoreError> {
        let Some(raw) = self.ids.get(id.to_bytes())? else {
            return Ok(None);
        };
        let locator = Locator::from_bytes(&raw).ok_or_else(|| StoreError::Corrupt {
            tree: "ids",
            reason: "entry shorter than a locator".into(),
        })?;
        Ok(Some(locator))
    }

    /// The `by_sequence` entries of `partition` after sequence `after`, ascending.
    pub(crate) fn sequences_after(
        &self,
        partition: PartitionId,
        after: u64,
    ) -> impl Iterator<Item = Result<(u64, Locator), StoreError>> + use<> {
        self.entries_after(partition, after)
            .map(|entry| entry.map(|(sequence, locator, _)| (sequence, locator)))
    }

    /// Where the record `sequence` of `partition` lies, if indexed.
    pub(crate) fn locate_sequence(
        &self,
        partition: PartitionId,
        sequence: u64,
    ) -> Result<Option<Locator>, StoreError> {
        Ok(self.sequence_entry(partition, sequence)?.map(|(l, _)| l))
    }

    /// Where the record `sequence` of `partition` lies and, for a rewrite, the
    /// sequence of the record it replaced.
    pub(crate) fn sequence_entry(
        &self,
        partition: PartitionId,
        sequence: u64,
    ) -> Result<Option<(Locator, Option<u64>)>, StoreError> {
        self.by_sequence
            .get(sequence_key(partition, sequence))?
            .map(|raw| Ok((sequence_locator(&raw)?, sequence_replaces(&raw))))
            .transpose()
    }

    /// The live records of `partition` after `sequence`, each with its id, locator and
    /// the sequence it replaced (if a rewrite). `identify` as for [`Index::truncate`].
    pub(crate) fn live_after(
        &self,
        partition: PartitionId,
        sequence: u64,
        identify: &mut Identify<'_>,
    ) -> Result<Vec<(ItemId, Locator, Option<u64>)>, StoreError> {
        let mut live = Vec::new();
        if sequence == u64::MAX {
            return Ok(live);
        }
        let start = sequence_key(partition, sequence + 1);
        let end = sequence_key(partition, u64::MAX);
        for entry in self.by_sequence.range(start..=end) {
            let (_, raw) = entry?;
            let locator = sequence_locator(&raw)?;
            let Some(Identified { id, .. }) = identify(locator)? else {
                continue;
            };
            if self.locate(id)? == Some(locator) {
                live.push((id, locator, sequence_replaces(&raw)));
            }
        }
        Ok(live)
    }

    /// Whether `by_sequence` is known to cover every indexed record.
    pub(crate) fn by_sequence_complete(&self) -> Result<bool, StoreError> {
        Ok(self.meta.contains_key(META_BY_SEQUENCE)?)
    }

    /// Every `ids` entry's id and locator, for rebuilding `by_sequence`.
    /// Whether `review` holds every flagged item indexed.
    pub(crate) fn review_complete(&self) -> Result<bool, StoreError> {
        Ok(self.meta.get(META_REVIEW)?.is_some())
    }

    /// Writes the listing keys of flagged items found by a scan; with `done`, then
    /// marks the queue complete and flushes.
    pub(crate) fn complete_review(&self, keys: Vec<Vec<u8>>, done: bool) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.insert(key, &[][..]);
        }
        self.review.apply_batch(batch)?;
        if done {
            self.meta.insert(META_REVIEW, &[1u8][..])?;
            self.flush()?;
        }
        Ok(())
    }

    /// The review queue's keys of `partition`, after `after` (a listing key) if given,
    /// in listing order.
    pub(crate) fn review_keys(
        &self,
        partition: PartitionId,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> + use<> {
        let start = partition.to_be_bytes().to_vec();
        let lower = match after {
            Some(after) if after > start.as_slice() => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(start),
        };
        let upper = match partition.checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        self.review
            .range::<Vec<u8>, _>((lower, upper))
            .map(|entry| Ok(entry?.0.to_vec()))
    }

    /// Takes a key out of the review queue (its item is no longer flagged).
    pub(crate) fn forget_review(&self, key: &[u8]) -> Result<(), StoreError> {
        self.review.remove(key)?;
        Ok(())
    }

    pub(crate) fn live_records(
        &self,
    ) -> impl Iterator<Item = Result<(ItemId, Locator), StoreError>> {
        self.ids.iter().map(|entry| {
            let (key, raw) = entry?;
            let id = <[u8; 16]>::try_from(key.as_ref())
                .map(ItemId::from_bytes)
                .map_err(|_| StoreError::Corrupt {
                    tree: "ids",
                    reason: format!("key of {} bytes, expected 16", key.len()),
                })?;
            let locator = Locator::from_bytes(&raw).ok_or_else(|| StoreError::Corrupt {
                tree: "ids",
                reason: "entry shorter than a locator".into(),
            })?;
            Ok((id, locator))
        })
    }

    /// Writes rebuilt `by_sequence` entries; with `done`, then marks the tree complete
    /// and flushes.
    pub(crate) fn complete_by_sequence(
        &self,
        entries: &[(PartitionId, u64, Locator)],
        done: bool,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (partition, sequence, locator) in entries {
            batch.insert(
                &sequence_key(*partition, *sequence)[..],
                &locator.to_bytes()[..],
            );
        }
        self.by_sequence.apply_batch(batch)?;
        if !done {
            return Ok(());
        }
        self.meta.insert(META_BY_SEQUENCE, &[1u8][..])?;
        self.flush()
    }

    /// Forgets the records of `partition` after `sequence` and flushes: their
    /// `by_sequence` keys, and for each still live (`ids` points at it) its `ids` and
    /// `listing` entries, whose bytes become dead. `identify` names a record's id and
    /// listing key (`None`: its segment is gone, so nothing points at it). The
    /// partition's last sequence becomes `sequence`. Returns the live records removed.
    /// The caller holds the append lock and has let the indexer drain, so nothing
    /// pending can put them back.
    pub(crate) fn truncate(
        &self,
        partition: PartitionId,
        sequence: u64,
        identify: &mut Identify<'_>,
    ) -> Result<u64, StoreError> {
        let mut by_sequence = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut listing = sled::Batch::default();
        let mut review = sled::Batch::default();
        let mut dead: BTreeMap<u64, u64> = BTreeMap::new();
        let mut removed = 0u64;
        let mut stats = self.partition_function_stats(partition);
        let end = sequence_key(partition, u64::MAX);
        let start = sequence_key(partition, sequence.saturating_add(1));
        if sequence < u64::MAX {
            for entry in self.by_sequence.range(start..=end) {
                let (key, raw) = entry?;
                let locator = sequence_locator(&raw)?;
                by_sequence.remove(key);
                let Some(Identified {
                    id,
                    listing_key,
                    facts,
                }) = identify(locator)?
                else {
                    continue;
                };
                if self.locate(id)? == Some(locator) {
                    ids.remove(&id.to_bytes()[..]);
                    review.remove(listing_key.as_slice());
                    listing.remove(listing_key);
                    *dead.entry(locator.segment).or_default() += u64::from(locator.len);
                    removed += 1;
                    if let Some(facts) = &facts
                        && self.first_record_after(partition, sequence_replaces(&raw), sequence)?
                    {
                        stats.remove(facts);
                    }
                } else if self.listing.get(&listing_key)?.as_deref()
                    == Some(&locator.to_bytes()[..])
                {
                    // Its id lives on under another listing key: this one must not list it.
                    listing.remove(listing_key);
                }
            }
        }
        // The stats first: if what follows is durable, so are they (a crash between
        // leaves them counting records the index still holds, which it then recounts).
        stats.counted = stats.counted.min(sequence);
        self.install_partition_function_stats(partition, stats);
        self.persist_function_stats()?;
        let mut durable = self.durable();
        let mut meta = sled::Batch::default();
        for (segment, bytes) in dead {
            let count = durable.dead.entry(segment).or_default();
            *count += bytes;
            meta.insert(&dead_key(segment)[..], &count.to_be_bytes()[..]);
        }
        self.ids.apply_batch(ids)?;
        self.review.apply_batch(review)?;
        self.listing.apply_batch(listing)?;
        self.by_sequence.apply_batch(by_sequence)?;
        self.meta.apply_batch(meta)?;
        if let Some(last) = durable.sequences.get_mut(usize::from(partition)) {
            *last = sequence;
        }
        self.sequences
            .insert(&partition.to_be_bytes()[..], &sequence.to_be_bytes()[..])?;
        drop(durable);
        self.flush()?;
        Ok(removed)
    }

    /// Whether the item whose live record of `partition` rewrote sequence `replaces`
    /// (`None`: it is the item's first record) has its first record after `cut`: a
    /// truncation at `cut` then takes the item away; otherwise its earlier version
    /// comes back.
    fn first_record_after(
        &self,
        partition: PartitionId,
        mut replaces: Option<u64>,
        cut: u64,
    ) -> Result<bool, StoreError> {
        while let Some(earlier) = replaces {
            if earlier <= cut {
                return Ok(false);
            }
            replaces = self
                .sequence_entry(partition, earlier)?
                .and_then(|(_, before)| before);
        }
        Ok(true)
    }

    /// The `by_sequence` entries of `partition` after sequence `after`, ascending, each
    /// with the sequence it replaced (for a rewrite).
    pub(crate) fn entries_after(
        &self,
        partition: PartitionId,
        after: u64,
    ) -> impl Iterator<Item = Result<(u64, Locator, Option<u64>), StoreError>> + use<> {
        let start = sequence_key(partition, after.saturating_add(1));
        let end = sequence_key(partition, u64::MAX);
        let past_end = after == u64::MAX;
        self.by_sequence
            .range(start..=end)
            .filter(move |_| !past_end)
            .map(|entry| {
                let (key, raw) = entry?;
                Ok((
                    key_sequence(&key)?,
                    sequence_locator(&raw)?,
                    sequence_replaces(&raw),
                ))
            })
    }

    /// Up to `limit` `listing` entries under `prefix` strictly after `after` (or from
    /// the start), in key order.
    pub(crate) fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Locator)>, StoreError> {
        let iter = match after {
            None => self.listing.scan_prefix(prefix),
            Some(after) => self
                .listing
                .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded)),
        };
        let mut out = Vec::with_capacity(limit.min(64));
        for entry in iter {
            let (key, raw) = entry?;
            if !key.starts_with(prefix) || out.len() == limit {
                break;
            }
            let locator = Locator::from_bytes(&raw).ok_or_else(|| StoreError::Corrupt {
                tree: "listing",
                reason: "entry shorter than a locator".into(),
            })?;
            out.push((key.to_vec(), locator));
        }
        Ok(out)
    }

    /// The `listing` tree, for tests of its key layout.
    #[cfg(test)]
    pub(crate) fn listing(&self) -> &sled::Tree {
        &self.listing
    }

    /// Items indexed (one `listing` entry each).
    pub(crate) fn len(&self) -> usize {
        self.listing.len()
    }

    /// Makes everything applied so far durable.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        if let Some(file) = &self.db_file {
            file.sync_data().map_err(|source| StoreError::Sync {
                path: "index/db".into(),
                source,
            })?;
        }
        Ok(())
    }
}
