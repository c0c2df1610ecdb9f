//! What leader-based replication needs of the store; the node crate moves the bytes.
//!
//! A partition's leader appends through [`Store::try_apply_replicated`], which also
//! hands back the records it wrote and, per item, the sequence the followers must reach
//! before the item's receipt may go out. Followers pull nothing themselves: the leader
//! reads a partition in sequence order ([`Store::read_partition`], over the
//! `by_sequence` tree and the unindexed tail) and ships it; a follower appends what it
//! is sent with [`Store::accept_shipment`], keeping each record's (partition,
//! sequence), so the follower's log is the leader's, gaps included.
//!
//! Leadership is fenced by epochs, per partition ([`PartitionEpochs`], in the sled tree
//! `epochs`: partition (u16 BE) → bincode, cached in memory). A would-be leader asks
//! for promises ([`Store::promise`]); a replica that promised a higher epoch refuses
//! older leaders' shipments. Each replica keeps, beside the promise, the epoch history
//! of its log (which epoch wrote from which sequence on), as Kafka's leader-epoch cache
//! does: a follower compares its history with the leader's to find where its log
//! diverged ([`PartitionEpochs::divergence`]) and truncates its suffix written by a
//! superseded leader ([`Store::truncate_after`]) before appending.
//!
//! Every method takes the append lock (the per-partition sequences) wherever it reads
//! or changes sequences, so each is atomic with appends. A change to an epoch is
//! durable (sled flushed) before the method returns; a truncation is durable in the
//! index (the indexer drained first, then one sled batch and flush).
//!
//! The log keeps a truncated record's bytes until the retirement pass reclaims them
//! (they count as dead); recovery never replays them, because truncation waits until
//! the index checkpoint is past them. A store rebuilt from its log (a snapshot's
//! restore) would bring them back and forgets the epochs: restore a replica from a
//! snapshot only to re-seed it from its leader.
//!
//! Truncating a rewritten verdict must not take its item with it: the leader still
//! holds the version the rewrite replaced. Each rewrite's `by_sequence` entry names the
//! sequence it replaced, so a truncation follows those links back to the item's newest
//! version that stays and copies that record to the log's head under its own sequence
//! (as the retirement pass copies, so a segment planned for retirement cannot take it
//! away). The version is gone only if its segment was reclaimed already, or the rewrite
//! predates the links (indexed before `by_sequence` existed, or by a snapshot restore).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bincode::{Decode, Encode};
use chorus_protocol::{
    ErrorCode, FrameLimit, ItemId, MAX_USER_ID_BYTES, PartitionId, Receipt, StoredItem,
    decode_value_within, encode_payload, partition_of,
};
use tracing::{debug, info, warn};

use super::index::{Identified, Index};
use super::keys::item_key;
use super::log::record::{MAX_BODY_BYTES, RecordHeader, RecordKind};
use super::log::{Locator, LogError, PartitionLog};
use super::{Store, StoreError, decode_item, index_entry};

/// Most entries a partition's epoch history keeps; the oldest are dropped beyond it.
pub const MAX_EPOCH_HISTORY: usize = 32;
/// Most body bytes one [`Store::accept_shipment`] appends: they go in one log group.
pub const MAX_SHIPMENT_BYTES: usize = 16 << 20;
/// The highest sequence a shipped record may carry: far beyond any real partition,
/// far enough below `u64::MAX` that counting on from it cannot overflow.
pub const MAX_SHIPPED_SEQUENCE: u64 = 1 << 62;
/// Most bytes a stored [`PartitionEpochs`] may decode from (32 entries need < 700).
const EPOCHS_LIMIT_BYTES: u32 = 4096;
/// Most `ids` entries the `by_sequence` rebuild holds before writing them.
const REBUILD_BATCH: usize = 64 * 1024;

/// One record as replication ships it: its partition, sequence and the log body (the encoded StoredItem exactly as in the log).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ReplicaRecord {
    /// The record's partition.
    pub partition: PartitionId,
    /// Its sequence in the partition.
    pub sequence: u64,
    /// The encoded `StoredItem`, byte for byte as the log holds it.
    pub body: Vec<u8>,
}

/// A partition's epochs on this replica: the highest epoch promised, and (epoch, first sequence written in it) ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct PartitionEpochs {
    /// The highest epoch this replica promised; older leaders are fenced.
    pub promised: u64,
    /// (epoch, first sequence written in it), both ascending, at most
    /// [`MAX_EPOCH_HISTORY`].
    pub history: Vec<(u64, u64)>,
}

/// Records a leader ships for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ShipBatch {
    /// The partition.
    pub partition: PartitionId,
    /// The leader's epoch.
    pub epoch: u64,
    /// The leader's epoch history for the partition.
    pub history: Vec<(u64, u64)>,
    /// The sequence the records follow: the follower must hold everything up to it.
    pub prev: u64,
    /// The records, strictly ascending by sequence, all of `partition`.
    pub records: Vec<ReplicaRecord>,
}

/// A replica's answer to one ShipBatch.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ShipOutcome {
    /// The records after the follower's last were appended; `last` is its last now.
    Appended {
        /// The follower's last sequence of the partition.
        last: u64,
    },
    /// The follower lacks records before `prev`: ship again from `last`.
    Behind {
        /// The follower's last sequence of the partition.
        last: u64,
    },
    /// The follower promised a higher epoch; nothing was changed.
    Fenced {
        /// The epoch promised.
        promised: u64,
    },
}

/// A replica's answer to a leader's repair (see [`Store::repair_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum RepairOutcome {
    /// The records after the point were removed (`removed` of them live); the leader
    /// ships them again.
    Truncated {
        /// Live records removed.
        removed: u64,
    },
    /// The replica promised a higher epoch; nothing was changed.
    Fenced {
        /// The epoch promised.
        promised: u64,
    },
    /// The partition's last sequence is no longer the one the repair was planned at
    /// (records arrived or went meanwhile); nothing was changed.
    Moved {
        /// The partition's last sequence here.
        last: u64,
    },
}

/// The answer to a promise request.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Promise {
    /// Whether the epoch asked for was higher than any promised before (and is now).
    pub accepted: bool,
    /// The partition's epochs after the request.
    pub epochs: PartitionEpochs,
    /// The partition's last sequence here.
    pub last: u64,
}

/// What a leader's write batch appended, beside its receipts.
#[derive(Clone, Debug)]
pub struct Applied {
    /// One outcome per write, as [`Store::try_apply`] returns them.
    pub outcomes: Vec<Result<Receipt, ErrorCode>>,
    /// Per write, the (partition, sequence) replication must reach before its receipt
    /// is sent; `None` for a refused write.
    pub waits: Vec<Option<(PartitionId, u64)>>,
    /// The records appended, in log order.
    pub records: Vec<ReplicaRecord>,
}

impl PartitionEpochs {
    /// The epoch that wrote `sequence`: that of the entry with the largest start at or
    /// below it, 0 if none (records written before any epoch, e.g. by a single node).
    pub fn epoch_at(&self, sequence: u64) -> u64 {
        self.history
            .iter()
            .rev()
            .find(|&&(_, start)| start <= sequence)
            .map_or(0, |&(epoch, _)| epoch)
    }

    /// Where this replica's log, ending at `my_last`, leaves the leader's: `Some(d)`
    /// when the records above `d` were written in an epoch the leader superseded and
    /// must be truncated; `None` when the log is a prefix of the leader's.
    ///
    /// The leader's first epoch after the one of `my_last` starts at `s`; records from
    /// `s` on diverge. Also, where both histories cover a sequence (from the later of
    /// their first starts), the first start at which they name different epochs
    /// diverges: that catches records of an epoch the leader never had, written by a
    /// leader whose promises did not survive, which the first rule misses.
    pub fn divergence(&self, my_last: u64, leader_history: &[(u64, u64)]) -> Option<u64> {
        let mine = self.epoch_at(my_last);
        let superseded = leader_history
            .iter()
            .find(|&&(epoch, _)| epoch > mine)
            .map(|&(_, start)| start)
            .filter(|&start| start <= my_last);
        let leader = PartitionEpochs {
            promised: 0,
            history: leader_history.to_vec(),
        };
        let covered_from = match (self.history.first(), leader_history.first()) {
            (Some(&(_, a)), Some(&(_, b))) => Some(a.max(b)),
            _ => None,
        };
        let mismatch = covered_from.and_then(|from| {
            self.history
                .iter()
                .chain(leader_history)
                .map(|&(_, start)| start)
                .filter(|&start| start >= from && start <= my_last)
                .filter(|&start| self.epoch_at(start) != leader.epoch_at(start))
                .min()
        });
        [superseded, mismatch]
            .into_iter()
            .flatten()
            .min()
            .map(|start| start.saturating_sub(1))
    }

    /// Takes the leader's history up to `last`: this replica's entries that start
    /// before the leader's first (and are older than its first epoch), then the
    /// leader's that start at or below `last`; the oldest dropped past
    /// [`MAX_EPOCH_HISTORY`].
    pub fn adopt(&mut self, leader_history: &[(u64, u64)], last: u64) {
        let Some(&(first_epoch, first_start)) = leader_history.first() else {
            return;
        };
        self.history
            .retain(|&(epoch, start)| start < first_start && epoch < first_epoch);
        self.history.extend(
            leader_history
                .iter()
                .filter(|&&(_, start)| start <= last)
                .copied(),
        );
        self.cap();
    }

    /// Notes that `epoch` writes from `start` on. A last entry with the same start is
    /// replaced (an epoch that wrote nothing); beginning the last epoch again changes
    /// nothing, since it already started.
    pub fn begin(&mut self, epoch: u64, start: u64) {
        match self.history.last() {
            Some(&(last_epoch, _)) if last_epoch == epoch => return,
            Some(&(_, last_start)) if last_start == start => {
                self.history.pop();
            }
            _ => {}
        }
        self.history.push((epoch, start));
        self.cap();
    }

    /// Forgets the entries of epochs that start after `last` (their records are gone).
    fn forget_after(&mut self, last: u64) {
        self.history.retain(|&(_, start)| start <= last);
    }

    fn cap(&mut self) {
        let excess = self.history.len().saturating_sub(MAX_EPOCH_HISTORY);
        self.history.drain(..excess);
    }
}

/// A history from the network: bounded, epochs and starts strictly ascending.
fn check_history(history: &[(u64, u64)]) -> Result<(), StoreError> {
    if history.len() > MAX_EPOCH_HISTORY {
        return Err(StoreError::Invalid {
            field: "history",
            reason: format!("{} entries, at most {MAX_EPOCH_HISTORY}", history.len()),
        });
    }
    if history
        .windows(2)
        .any(|w| w[0].0 >= w[1].0 || w[0].1 >= w[1].1)
    {
        return Err(StoreError::Invalid {
            field: "history",
            reason: "epochs and starts must be strictly ascending".into(),
        });
    }
    Ok(())
}

/// Shipments waiting for a follower's group commit, with each caller's answer.
pub(crate) type ShipmentQueue =
    shipments::Queue<(Vec<ShipBatch>, Vec<Vec<Shipped>>), Result<Vec<ShipOutcome>, StoreError>>;

/// A queue of shipments whose groups append at most [`MAX_SHIPMENT_BYTES`].
pub(crate) fn shipment_queue() -> ShipmentQueue {
    shipments::Queue::new(MAX_SHIPMENT_BYTES)
}

/// The `epochs` tree and its in-memory copy.
pub(crate) struct Epochs {
    tree: sled::Tree,
    cache: Mutex<Vec<PartitionEpochs>>,
}

impl Epochs {
    /// Opens the `epochs` tree of a store of `partitions`.
    pub(crate) fn open(db: &sled::Db, partitions: u16) -> Result<Epochs, StoreError> {
        let tree = db.open_tree("epochs")?;
        let mut cache = vec![PartitionEpochs::default(); usize::from(partitions)];
        let limit = FrameLimit::new(EPOCHS_LIMIT_BYTES).map_err(StoreError::InvalidConfig)?;
        for entry in tree.iter() {
            let (key, raw) = entry?;
            let corrupt = |reason: String| StoreError::Corrupt {
                tree: "epochs",
                reason,
            };
            let partition = <[u8; 2]>::try_from(key.as_ref())
                .map(u16::from_be_bytes)
                .map_err(|_| corrupt(format!("key of {} bytes, expected 2", key.len())))?;
            let epochs: PartitionEpochs =
                decode_value_within(&raw, limit).map_err(|e| corrupt(e.to_string()))?;
            if epochs.history.len() > MAX_EPOCH_HISTORY {
                return Err(corrupt(format!(
                    "partition {partition}: {} history entries",
                    epochs.history.len()
                )));
            }
            if let Some(slot) = cache.get_mut(usize::from(partition)) {
                *slot = epochs;
            }
        }
        Ok(Epochs {
            tree,
            cache: Mutex::new(cache),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<PartitionEpochs>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a partition's epochs to the tree; durable at the next flush.
    fn stage(&self, partition: PartitionId, epochs: &PartitionEpochs) -> Result<(), StoreError> {
        self.tree
            .insert(partition.to_be_bytes(), encode_payload(epochs))?;
        Ok(())
    }
}

/// Makes `by_sequence` cover every indexed record, for a store made before the tree
/// existed: from the index (each `ids` entry's record header, read from the log), once;
/// the `meta` mark says it is done, so an interrupted rebuild starts again.
pub(crate) fn complete_by_sequence(index: &Index, log: &PartitionLog) -> Result<(), StoreError> {
    if index.by_sequence_complete()? {
        return Ok(());
    }
    let mut entries = Vec::new();
    let mut rebuilt = 0usize;
    for entry in index.live_records() {
        let (_, locator) = entry?;
        let header = Cell::new(None);
        match log.read(locator, &|h| {
            header.set(Some(*h));
            h.kind == RecordKind::Item
        }) {
            Ok(_) => {}
            // Nothing live is in a retired segment; a stale entry has nothing to index.
            Err(LogError::Retired { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(h) = header.get() {
            entries.push((h.partition, h.sequence, locator));
        }
        if entries.len() >= REBUILD_BATCH {
            rebuilt += entries.len();
            index.complete_by_sequence(&entries, false)?;
            entries.clear();
        }
    }
    rebuilt += entries.len();
    index.complete_by_sequence(&entries, true)?;
    info!(records = rebuilt, "rebuilt the by-sequence index");
    Ok(())
}

/// The id and `listing` key of the item record at `locator` in `partition`; `None` if
/// its segment was retired.
fn identify(
    log: &PartitionLog,
    partition: PartitionId,
    locator: Locator,
) -> Result<Option<Identified>, StoreError> {
    match log.read(locator, &|h| h.kind == RecordKind::Item) {
        Ok(body) => {
            let stored = decode_item(&body)?;
            let listing_key = item_key(
                partition,
                &stored.item.user_id,
                stored.receipt.stored_at,
                stored.item.id,
            );
            Ok(Some(Identified {
                id: stored.item.id,
                listing_key,
                facts: super::functions::facts_of(&stored),
            }))
        }
        Err(LogError::Retired { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The sequence of the record at `replaced` that a new record of the same id at
/// `sequence` supersedes: its own, for a rewrite; for a copy of the same record (same
/// sequence), the one that record rewrote, as `by_sequence` holds it. `None` for a
/// first write or a record whose segment is gone.
pub(crate) fn replaced_sequence(
    log: &PartitionLog,
    index: &Index,
    replaced: Option<Locator>,
    partition: PartitionId,
    sequence: u64,
) -> Result<Option<u64>, StoreError> {
    let Some(locator) = replaced else {
        return Ok(None);
    };
    let header = Cell::new(None);
    match log.read(locator, &|h| {
        header.set(Some(*h));
        h.kind == RecordKind::Item
    }) {
        Ok(_) => {}
        Err(LogError::Retired { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    match header.get() {
        Some(h) if h.partition != partition => Ok(None),
        Some(h) if h.sequence == sequence => Ok(index
            .sequence_entry(partition, sequence)?
            .and_then(|(_, replaces)| replaces)),
        Some(h) => Ok(Some(h.sequence)),
        None => Ok(None),
    }
}

/// A shipped record, checked and decoded.
pub(crate) struct Shipped {
    header: RecordHeader,
    body: Vec<u8>,
    stored: StoredItem,
}

impl Store {
    /// Refuses a partition this store does not have.
    pub(crate) fn check_partition(&self, partition: PartitionId) -> Result<(), StoreError> {
        if partition >= self.partitions {
            return Err(StoreError::Invalid {
                field: "partition",
                reason: format!("{partition}, the store has {}", self.partitions),
            });
        }
        Ok(())
    }

    /// The partition's epochs here.
    pub fn partition_epochs(&self, partition: PartitionId) -> PartitionEpochs {
        self.epochs
            .lock()
            .get(usize::from(partition))
            .cloned()
            .unwrap_or_default()
    }

    /// The partition's last assigned sequence (0 for none or an unknown partition).
    pub fn last_sequence(&self, partition: PartitionId) -> u64 {
        self.shared
            .sequences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(usize::from(partition))
            .copied()
            .unwrap_or(0)
    }

    /// The live records of `partition` with a sequence above `after`, ascending, their
    /// bodies within `max_bytes` (but at least one record if any), and the partition's
    /// last sequence. A record superseded (its id has a newer one) or whose segment was
    /// retired is left out: the range may have gaps.
    pub fn read_partition(
        &self,
        partition: PartitionId,
        after: u64,
        max_bytes: usize,
    ) -> Result<(Vec<ReplicaRecord>, u64), StoreError> {
        self.check_partition(partition)?;
        let last = self.last_sequence(partition);
        let mut out = Vec::new();
        if after >= last {
            return Ok((out, last));
        }
        // The tail before the index: a record leaves the tail only once indexed.
        let unindexed = self
            .shared
            .tail()
            .partition_range(partition, after, last, max_bytes);
        // The tail may hold more than was taken: stop where it was cut.
        let taken: usize = unindexed.iter().map(|(_, l)| l.len as usize).sum();
        let through = match unindexed.last() {
            Some(&(sequence, _)) if taken >= max_bytes => sequence,
            _ => last,
        };
        let mut unindexed = unindexed.into_iter().peekable();
        let mut indexed = self
            .shared
            .index
            .sequences_after(partition, after)
            .peekable();
        let mut bytes = 0usize;
        loop {
            if !out.is_empty() && bytes >= max_bytes {
                break;
            }
            if let Some(Err(_)) = indexed.peek() {
                indexed.next().transpose()?;
            }
            let next_indexed = indexed
                .peek()
                .and_then(|e| e.as_ref().ok())
                .map(|&(s, _)| s);
            let next_unindexed = unindexed.peek().map(|&(s, _)| s);
            let (sequence, locator, in_tail) = match (next_unindexed, next_indexed) {
                (None, None) => break,
                (Some(u), i) if i.is_none_or(|i| u <= i) => {
                    if i == Some(u) {
                        // The tail's is the newer (a copy not yet indexed).
                        indexed.next();
                    }
                    let (s, l) = unindexed.next().expect("peeked");
                    (s, l, true)
                }
                _ => {
                    let (s, l) = indexed.next().expect("peeked")?;
                    (s, l, false)
                }
            };
            if sequence > through {
                break;
            }
            if let Some(body) = self.read_live(partition, sequence, locator, in_tail)? {
                if !out.is_empty() && bytes.saturating_add(body.len()) > max_bytes {
                    break;
                }
                bytes += body.len();
                out.push(ReplicaRecord {
                    partition,
                    sequence,
                    body,
                });
            }
        }
        Ok((out, last))
    }

    /// The body of record `sequence` of `partition` at `locator` if it is still live.
    /// A record from the tail was live when listed; one from the index is checked
    /// against its id's live record. Its segment retired meanwhile: its copy is in the
    /// index by now (a segment goes only once its copies are), so look once more.
    fn read_live(
        &self,
        partition: PartitionId,
        sequence: u64,
        locator: Locator,
        in_tail: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let expect = |h: &RecordHeader| {
            h.kind == RecordKind::Item && h.partition == partition && h.sequence == sequence
        };
        let (locator, body) = match self.shared.log.read(locator, &expect) {
            Ok(body) => (locator, body),
            Err(LogError::Retired { .. }) => {
                match self.shared.index.locate_sequence(partition, sequence)? {
                    Some(again) if again != locator => match self.shared.log.read(again, &expect) {
                        Ok(body) => (again, body),
                        Err(LogError::Retired { .. }) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    },
                    _ => return Ok(None),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if in_tail {
            return Ok(Some(body));
        }
        let id = decode_item(&body)?.item.id;
        Ok((self.shared.locate(id)? == Some(locator)).then_some(body))
    }

    /// The follower's side of replication: applies each batch in order (see the
    /// module doc and [`ShipOutcome`]), with one log write and sync for every record
    /// appended and one sled flush for the epochs, before returning. A batch that is
    /// malformed (records out of order or of another partition, a body that does not
    /// decode, a bad history, too many bytes) refuses the whole call with `Invalid`,
    /// nothing changed.
    pub fn accept_shipment(&self, batches: Vec<ShipBatch>) -> Result<Vec<ShipOutcome>, StoreError> {
        let decoded = batches
            .iter()
            .map(|batch| self.check_batch(batch))
            .collect::<Result<Vec<_>, _>>()?;
        let total: usize = decoded.iter().flatten().map(|s| s.body.len()).sum();
        if total > MAX_SHIPMENT_BYTES {
            return Err(StoreError::Invalid {
                field: "records",
                reason: format!("{total} bytes, at most {MAX_SHIPMENT_BYTES} per call"),
            });
        }
        let job = self.shipments.push((batches, decoded), total);
        let locked = self.shared.lock_for_append();
        // Whoever held the lock before may have written this shipment with its own.
        if let Some(answer) = job.take_answer() {
            return answer;
        }
        let mut sequences = match locked {
            Ok(sequences) => sequences,
            Err(error) => {
                self.shipments.withdraw(&job);
                return Err(error);
            }
        };
        let group = self.shipments.take_group(&job);
        if group.is_empty() {
            // Taken by a caller that stopped (panicked) before answering.
            return Err(StoreError::Failed {
                reason: "the group that took this shipment stopped before answering".into(),
            });
        }
        let counts: Vec<usize> = group.iter().map(|(_, (b, _))| b.len()).collect();
        let mut batches = Vec::with_capacity(counts.iter().sum());
        let mut decoded = Vec::with_capacity(batches.capacity());
        let mut jobs = Vec::with_capacity(group.len());
        for (job, (b, d)) in group {
            batches.extend(b);
            decoded.extend(d);
            jobs.push(job);
        }
        let result = self.append_shipments(&mut sequences, batches, decoded);
        if jobs.len() > 1 {
            debug!(shipments = jobs.len(), "shipments written as one group");
        }
        // Answers go out while the lock is held: their callers look once they have it.
        let mut own = None;
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for (other, count) in jobs.into_iter().zip(counts) {
                    let answer: Vec<ShipOutcome> = outcomes.by_ref().take(count).collect();
                    if Arc::ptr_eq(&other, &job) {
                        own = Some(Ok(answer));
                    } else {
                        other.answer(Ok(answer));
                    }
                }
            }
            Err(error) => {
                for other in jobs.iter().filter(|other| !Arc::ptr_eq(other, &job)) {
                    other.answer(Err(StoreError::Failed {
                        reason: format!("a shipment written in the same group failed: {error}"),
                    }));
                }
                own = Some(Err(error));
            }
        }
        drop(sequences);
        own.expect("a non-empty group holds the caller's own job")
    }

    /// Applies shipped batches, in order, under the append lock: the body of
    /// [`Store::accept_shipment`] for one group of shipments.
    fn append_shipments(
        &self,
        sequences: &mut MutexGuard<'_, Vec<u64>>,
        batches: Vec<ShipBatch>,
        decoded: Vec<Vec<Shipped>>,
    ) -> Result<Vec<ShipOutcome>, StoreError> {
        let mut cache = self.epochs.lock();
        // This call's view: epochs and last sequences as its batches leave them.
        let mut epochs: BTreeMap<PartitionId, PartitionEpochs> = BTreeMap::new();
        let mut lasts: HashMap<PartitionId, u64> = HashMap::new();
        let mut pending: Vec<Shipped> = Vec::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        for (batch, records) in batches.into_iter().zip(decoded) {
            let partition = batch.partition;
            let slot = usize::from(partition);
            let state = epochs
                .entry(partition)
                .or_insert_with(|| cache[slot].clone());
            if batch.epoch < state.promised {
                outcomes.push(ShipOutcome::Fenced {
                    promised: state.promised,
                });
                continue;
            }
            state.promised = batch.epoch;
            let mut last = lasts.get(&partition).copied().unwrap_or(sequences[slot]);
            if let Some(keep) = state.divergence(last, &batch.history)
                && keep < last
            {
                pending.retain(|s| s.header.partition != partition || s.header.sequence <= keep);
                if keep < sequences[slot] {
                    self.truncate_locked(sequences, partition, keep)?;
                }
                state.forget_after(keep);
                info!(
                    partition,
                    from = keep + 1,
                    to = last,
                    "truncated a diverged suffix"
                );
                last = keep;
            }
            lasts.insert(partition, last);
            if last < batch.prev {
                outcomes.push(ShipOutcome::Behind { last });
                continue;
            }
            for shipped in records {
                if shipped.header.sequence > last {
                    last = shipped.header.sequence;
                    pending.push(shipped);
                }
            }
            lasts.insert(partition, last);
            state.adopt(&batch.history, last);
            outcomes.push(ShipOutcome::Appended { last });
        }
        self.append_shipped(sequences, pending)?;
        let mut staged = false;
        for (partition, state) in epochs {
            let slot = &mut cache[usize::from(partition)];
            if *slot != state {
                self.epochs.stage(partition, &state)?;
                *slot = state;
                staged = true;
            }
        }
        if staged {
            self.shared.index.flush()?;
        }
        Ok(outcomes)
    }

    /// Checks a shipped batch before anything changes and decodes its records.
    fn check_batch(&self, batch: &ShipBatch) -> Result<Vec<Shipped>, StoreError> {
        self.check_partition(batch.partition)?;
        check_history(&batch.history)?;
        let invalid = |reason: String| StoreError::Invalid {
            field: "records",
            reason,
        };
        let mut previous = 0u64;
        let mut out = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            if record.partition != batch.partition {
                return Err(invalid(format!(
                    "a record of partition {} in a batch of {}",
                    record.partition, batch.partition
                )));
            }
            if record.sequence > MAX_SHIPPED_SEQUENCE {
                return Err(invalid(format!(
                    "sequence {}, at most {MAX_SHIPPED_SEQUENCE}",
                    record.sequence
                )));
            }
            if record.sequence <= previous {
                return Err(invalid(format!(
                    "sequence {} after {previous}: must be strictly ascending from 1",
                    record.sequence
                )));
            }
            previous = record.sequence;
            if record.body.len() > MAX_BODY_BYTES {
                return Err(invalid(format!(
                    "a body of {} bytes, at most {MAX_BODY_BYTES}",
                    record.body.len()
                )));
            }
            let stored = decode_item(&record.body).map_err(|e| invalid(e.to_string()))?;
            let user = &stored.item.user_id;
            if user.is_empty() || user.len() > MAX_USER_ID_BYTES {
                return Err(invalid(format!("a user id of {} bytes", user.len())));
            }
            if partition_of(user, self.partitions) != batch.partition {
                return Err(invalid(format!(
                    "an item of partition {}, shipped in {}",
                    partition_of(user, self.partitions),
                    batch.partition
                )));
            }
            out.push(Shipped {
                header: RecordHeader {
                    kind: RecordKind::Item,
                    partition: record.partition,
                    sequence: record.sequence,
                },
                body: record.body.clone(),
                stored,
            });
        }
        Ok(out)
    }

    /// Appends shipped records as one group, each with its own (partition, sequence),
    /// each superseding the live record of its id, and raises the partitions' last
    /// sequences. The caller holds the append lock (`sequences`).
    fn append_shipped(
        &self,
        sequences: &mut [u64],
        shipped: Vec<Shipped>,
    ) -> Result<(), StoreError> {
        if shipped.is_empty() {
            return Ok(());
        }
        // Each with the live record it supersedes and that record's sequence; an id
        // twice in the group supersedes its earlier copy instead.
        let mut replaces = Vec::with_capacity(shipped.len());
        let mut earlier_in_group: HashMap<ItemId, u64> = HashMap::new();
        for s in &shipped {
            let id = s.stored.item.id;
            let replaced = self.shared.locate(id)?;
            let sequence = match earlier_in_group.insert(id, s.header.sequence) {
                Some(earlier) => Some(earlier),
                None => replaced_sequence(
                    &self.shared.log,
                    &self.shared.index,
                    replaced,
                    s.header.partition,
                    s.header.sequence,
                )?,
            };
            replaces.push((replaced, sequence));
        }
        let records: Vec<(RecordHeader, &[u8])> = shipped
            .iter()
            .map(|s| (s.header, s.body.as_slice()))
            .collect();
        let shared = &self.shared;
        shared.log.append(&records, |locators| {
            let mut tail = shared.tail();
            // An id twice in the group: the later supersedes the earlier copy.
            let mut in_group: HashMap<ItemId, Locator> = HashMap::new();
            for ((s, (replaced, sequence)), locator) in shipped.iter().zip(&replaces).zip(locators)
            {
                let id = s.stored.item.id;
                let mut entry =
                    index_entry(&s.stored, s.header.partition, s.header.sequence, *locator);
                entry.supersedes = in_group.get(&id).copied().or(*replaced);
                entry.replaces = *sequence;
                in_group.insert(id, *locator);
                tail.insert(entry, Arc::new(s.stored.clone()), locator.end());
            }
        })?;
        shared.tail_changed.notify_all();
        for s in &shipped {
            let last = &mut sequences[usize::from(s.header.partition)];
            *last = (*last).max(s.header.sequence);
        }
        debug!(records = records.len(), "shipped records durable");
        Ok(())
    }

    /// Asks for a promise of `epoch` on each partition: accepted when it is higher than
    /// any promised before, which fences older leaders. One durable flush for all;
    /// returns each partition's epochs after and its last sequence.
    pub fn promise(&self, partitions: &[(PartitionId, u64)]) -> Result<Vec<Promise>, StoreError> {
        self.change_epochs(partitions, |epochs, epoch, last| {
            let accepted = epoch > epochs.promised;
            if accepted {
                epochs.promised = epoch;
            }
            Promise {
                accepted,
                epochs: epochs.clone(),
                last,
            }
        })
    }

    /// Starts `epoch` on `partition` as its leader, from the next sequence, durably;
    /// `false` (nothing changed) when the promise here is for another epoch (a higher
    /// one: another leader took over).
    pub fn begin_epoch(&self, partition: PartitionId, epoch: u64) -> Result<bool, StoreError> {
        Ok(self.begin_epochs(&[(partition, epoch)])?[0])
    }

    /// [`Store::begin_epoch`] for many partitions with one durable flush (a node taking
    /// the lead of hundreds of partitions at once would otherwise flush for each).
    pub fn begin_epochs(&self, starts: &[(PartitionId, u64)]) -> Result<Vec<bool>, StoreError> {
        self.change_epochs(starts, |epochs, epoch, last| {
            if epochs.promised != epoch {
                return false;
            }
            epochs.begin(epoch, last.saturating_add(1));
            true
        })
    }

    /// Applies `change` to the epochs of each `(partition, epoch)` asked (with the
    /// partition's last sequence) under the append lock, and makes every change durable
    /// with one flush before it takes effect here. One answer per partition, in order;
    /// a partition asked twice sees its own earlier change.
    fn change_epochs<T>(
        &self,
        asks: &[(PartitionId, u64)],
        mut change: impl FnMut(&mut PartitionEpochs, u64, u64) -> T,
    ) -> Result<Vec<T>, StoreError> {
        for &(partition, _) in asks {
            self.check_partition(partition)?;
        }
        let sequences = self
            .shared
            .sequences
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut cache = self.epochs.lock();
        let mut answers = Vec::with_capacity(asks.len());
        let mut changed: BTreeMap<usize, PartitionEpochs> = BTreeMap::new();
        for &(partition, epoch) in asks {
            let slot = usize::from(partition);
            let current = changed.get(&slot).unwrap_or(&cache[slot]);
            let mut next = current.clone();
            answers.push(change(&mut next, epoch, sequences[slot]));
            if next != *current {
                self.epochs.stage(partition, &next)?;
                changed.insert(slot, next);
            }
        }
        if !changed.is_empty() {
            self.shared.index.flush()?;
            for (slot, next) in changed {
                cache[slot] = next;
            }
        }
        Ok(answers)
    }

    /// A leader's anti-entropy repair: removes the records of `partition` above
    /// `after` (as [`Store::truncate_after`]) so the leader ships its own again, but
    /// only if no epoch above `epoch` was promised here and the partition still ends
    /// at `expect_last` (the sequence its digests were compared at), both checked under
    /// the append lock.
    pub fn repair_after(
        &self,
        partition: PartitionId,
        epoch: u64,
        expect_last: u64,
        after: u64,
    ) -> Result<RepairOutcome, StoreError> {
        self.check_partition(partition)?;
        let mut sequences = self.shared.lock_for_append()?;
        let slot = usize::from(partition);
        let promised = self.epochs.lock()[slot].promised;
        if promised > epoch {
            return Ok(RepairOutcome::Fenced { promised });
        }
        if sequences[slot] != expect_last {
            return Ok(RepairOutcome::Moved {
                last: sequences[slot],
            });
        }
        let removed = self.truncate_forgetting_epochs(&mut sequences, partition, after)?;
        info!(
            partition,
            after, removed, "repaired: truncated for the leader to ship again"
        );
        Ok(RepairOutcome::Truncated { removed })
    }

    /// Drops this replica's whole copy of `partition` (as [`Store::truncate_after`]
    /// sequence 0) when the node no longer replicates it, but only if the partition
    /// still ends at `expect_last`, checked under the append lock: a copy that moved
    /// meanwhile (a leader shipped to it again) is kept. The epochs promised stay, so a
    /// leader fenced here stays fenced. Returns the live records removed, or `None` if
    /// the partition moved.
    pub fn shed_partition(
        &self,
        partition: PartitionId,
        expect_last: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.check_partition(partition)?;
        let mut sequences = self.shared.lock_for_append()?;
        if sequences[usize::from(partition)] != expect_last {
            return Ok(None);
        }
        let removed = self.truncate_forgetting_epochs(&mut sequences, partition, 0)?;
        info!(
            partition,
            last = expect_last,
            removed,
            "shed a copy of a partition this node no longer replicates"
        );
        Ok(Some(removed))
    }

    /// Removes the records of `partition` with a sequence above `sequence`, durably:
    /// they leave the index and the tail, their bytes count as dead, the partition's
    /// last sequence becomes `sequence`, and epochs that started after it are
    /// forgotten. An item whose truncated record was a rewrite falls back to its newest
    /// version at or below `sequence` (see the module doc). Returns how many live
    /// records went. Other partitions are untouched.
    pub fn truncate_after(&self, partition: PartitionId, sequence: u64) -> Result<u64, StoreError> {
        self.check_partition(partition)?;
        let mut sequences = self.shared.lock_for_append()?;
        self.truncate_forgetting_epochs(&mut sequences, partition, sequence)
    }

    /// [`Store::truncate_after`] under the append lock the caller holds: the records,
    /// then the epochs that started after `sequence`, durably.
    fn truncate_forgetting_epochs(
        &self,
        sequences: &mut [u64],
        partition: PartitionId,
        sequence: u64,
    ) -> Result<u64, StoreError> {
        let removed = self.truncate_locked(sequences, partition, sequence)?;
        let mut cache = self.epochs.lock();
        let slot = usize::from(partition);
        let mut next = cache[slot].clone();
        next.forget_after(sequence);
        if next != cache[slot] {
            self.epochs.stage(partition, &next)?;
            self.shared.index.flush()?;
            cache[slot] = next;
        }
        Ok(removed)
    }

    /// [`Store::truncate_after`]'s records, under the append lock the caller holds.
    /// The indexer drains first, so the tail holds nothing of the partition and the
    /// checkpoint lies past every truncated record (replay never brings one back).
    fn truncate_locked(
        &self,
        sequences: &mut [u64],
        partition: PartitionId,
        sequence: u64,
    ) -> Result<u64, StoreError> {
        let slot = usize::from(partition);
        if sequence >= sequences[slot] {
            return Ok(0);
        }
        self.flush()?;
        let log = &self.shared.log;
        let live = self
            .shared
            .index
            .live_after(partition, sequence, &mut |l| identify(log, partition, l))?;
        let restored = self.restore_rewritten(partition, sequence, &live)?;
        if restored > 0 {
            // The copies are indexed before the cut, which then finds their rewrites dead.
            self.flush()?;
        }
        let removed = self
            .shared
            .index
            .truncate(partition, sequence, &mut |l| identify(log, partition, l))?
            + restored;
        sequences[slot] = sequence;
        info!(
            partition,
            after = sequence,
            removed,
            restored,
            "partition truncated"
        );
        Ok(removed)
    }

    /// For each live record about to be truncated that rewrote an item, brings back the
    /// item's newest version at or below `keep`: a copy of that record, under its own
    /// sequence, at the log's head (as the retirement pass copies), superseding the
    /// rewrite. Returns how many came back. A version whose segment is gone stays gone.
    fn restore_rewritten(
        &self,
        partition: PartitionId,
        keep: u64,
        live: &[(ItemId, Locator, Option<u64>)],
    ) -> Result<u64, StoreError> {
        let index = &self.shared.index;
        let log = &self.shared.log;
        let mut copies: Vec<(Shipped, Locator, Option<u64>)> = Vec::new();
        for &(id, rewrite, replaces) in live {
            // Follow the rewrites back, each to a lower sequence, to one that stays.
            let mut link = replaces;
            let mut found = None;
            while let Some(earlier) = link {
                let Some((locator, before)) = index.sequence_entry(partition, earlier)? else {
                    break;
                };
                if earlier <= keep {
                    found = Some((earlier, locator, before));
                    break;
                }
                link = before.filter(|&b| b < earlier);
            }
            let Some((earlier, locator, before)) = found else {
                continue;
            };
            let expect = |h: &RecordHeader| {
                h.kind == RecordKind::Item && h.partition == partition && h.sequence == earlier
            };
            let body = match log.read(locator, &expect) {
                Ok(body) => body,
                Err(LogError::Retired { .. }) => {
                    warn!(
                        partition,
                        sequence = earlier,
                        "the version a truncated rewrite replaced was reclaimed"
                    );
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let stored = decode_item(&body)?;
            if stored.item.id != id {
                continue;
            }
            let header = RecordHeader {
                kind: RecordKind::Item,
                partition,
                sequence: earlier,
            };
            copies.push((
                Shipped {
                    header,
                    body,
                    stored,
                },
                rewrite,
                before,
            ));
        }
        if copies.is_empty() {
            return Ok(0);
        }
        let records: Vec<(RecordHeader, &[u8])> = copies
            .iter()
            .map(|(s, _, _)| (s.header, s.body.as_slice()))
            .collect();
        let shared = &self.shared;
        shared.log.append(&records, |locators| {
            let mut tail = shared.tail();
            for ((s, rewrite, before), locator) in copies.iter().zip(locators) {
                let mut entry = index_entry(&s.stored, partition, s.header.sequence, *locator);
                entry.supersedes = Some(*rewrite);
                entry.replaces = *before;
                tail.insert(entry, Arc::new(s.stored.clone()), locator.end());
            }
        })?;
        shared.tail_changed.notify_all();
        Ok(copies.len() as u64)
    }
}

mod shipments;
#[cfg(test)]
mod tests;
