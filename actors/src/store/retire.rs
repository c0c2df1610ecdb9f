//! Segment retirement: the partition log's garbage collection (as WiscKey's), which
//! keeps its disk use bounded by what is live.
//!
//! A record is live while the index's `ids` tree (or the unindexed tail, which is
//! newer) points at exactly its locator; a rewritten verdict makes the record it
//! replaces dead, and the indexer counts the dead bytes per segment ([`super::index`]).
//! A background thread owned by the [`Store`](super::Store) runs one pass per interval,
//! off the receipt path, over segments wholly before the durable checkpoint (never the
//! one being written):
//!
//! 1. **Plan.** Pick the segment with the largest dead fraction at or above the
//!    threshold (or with nothing live), read it, and list its records that are live.
//!    A record found dead stays dead (nothing ever points back at an older record), so
//!    this runs without the append lock.
//! 2. **Copy.** In small groups, under the append lock (so no rewrite of the same id can
//!    fall between the check and the copy): check each listed record again and append
//!    a copy of it to the log's head through the normal group commit, with the same
//!    partition, sequence and body. Its index entry is a plain put behind the log like
//!    any other, so a later rewrite still wins, and it supersedes the original.
//! 3. **Remove.** Once the checkpoint has durably passed the copies, nothing in the
//!    index points into the segment: drop it from the readers, unlink it, sync the
//!    directory, forget its dead count. A reader that located a record there just
//!    before sees [`LogError::Retired`](super::log::LogError::Retired) and looks again.
//!
//! A crash at any point loses nothing: before the removal the segment is intact and the
//! index points either at it or at copies that are durable in the log (replay re-indexes
//! them, in log order); the removal happens only after the index durably points
//! elsewhere. Copies left by an interrupted pass are ordinary records: the originals
//! they superseded are counted dead, so the next pass finds that segment wholly dead.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chorus_protocol::{ItemId, StoredItem};
use tracing::{debug, info, warn};

use super::log::record::{RecordHeader, RecordKind, SEGMENT_MAGIC, scan};
use super::log::{Locator, LogError, LogPosition};
use super::{INDEX_INTERVAL, Shared, StoreError, decode_item, index_entry};
use crate::telemetry::{STORE_LOG_COPIED_BYTES, STORE_SEGMENTS_COMPACTED, STORE_SEGMENTS_RETIRED};

/// Most bytes of live records copied in one group: the append lock is held for one
/// group, so this bounds how long a writer can wait behind the pass.
const COPY_GROUP_BYTES: usize = 256 << 10;

/// The log's disk use, as [`Store::log_usage`](super::Store::log_usage) reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogUsage {
    /// Segment files on disk.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of records the index no longer points at, in segments still on disk.
    pub dead_bytes: u64,
    /// `bytes − dead_bytes`: live records, records not yet known dead (a superseded
    /// record counts once the index absorbs what replaced it), segment headers.
    pub live_bytes: u64,
    /// Segments deleted since the store opened.
    pub retired_segments: u64,
    /// Of those, segments whose live records were copied forward first.
    pub compacted_segments: u64,
    /// Bytes of live records copied forward since the store opened.
    pub copied_bytes: u64,
}

/// What one step of the retirement pass did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetireStep {
    /// Nothing qualifies: every segment before the checkpoint is live enough.
    Idle,
    /// Chose `segment`; `live` of its records must be copied before it can go.
    Planned {
        /// The segment's number.
        segment: u64,
        /// Its live records.
        live: usize,
    },
    /// Copied `records` live records of `segment` to the log's head (a record
    /// rewritten since the plan is skipped: it died on its own).
    Copied {
        /// The segment's number.
        segment: u64,
        /// Records copied in this step.
        records: usize,
    },
    /// Waiting for the index to durably absorb the copies of `segment`'s records.
    Waiting {
        /// The segment's number.
        segment: u64,
    },
    /// Deleted `segment`; `compacted`: some of its records were copied first.
    Removed {
        /// The segment's number.
        segment: u64,
        /// Whether live records were copied forward.
        compacted: bool,
    },
}

/// A live record to copy forward.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Live {
    id: ItemId,
    header: RecordHeader,
    locator: Locator,
}

/// Where the pass is.
#[derive(Debug, Default)]
pub(crate) enum Stage {
    /// No segment chosen.
    #[default]
    Idle,
    /// Copying `live[next..]` of `segment`; `through` is the end of the log after the
    /// plan or the last copy.
    Copying {
        segment: u64,
        live: Vec<Live>,
        next: usize,
        through: LogPosition,
    },
    /// Every copy is appended; the segment goes once the checkpoint passes `through`.
    Draining {
        segment: u64,
        compacted: bool,
        through: LogPosition,
    },
}

/// The retirement thread: a pass per `interval` (each step of a pass back to back,
/// waiting for the indexer between), until the store is dropped.
pub(super) fn run(shared: &Shared, interval: Duration) {
    let mut stage = shared.retirement.lock().unwrap_or_else(|p| p.into_inner());
    let mut wait = interval;
    loop {
        // Checked under the lock the store's drop takes before waking this thread, so
        // the wake-up cannot fall between the check and the wait.
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        stage = shared
            .retire_wake
            .wait_timeout(stage, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        wait = interval;
        if shared.failure().is_some() {
            continue;
        }
        loop {
            match step(shared, &mut stage) {
                Ok(RetireStep::Idle) => break,
                Ok(RetireStep::Waiting { .. }) => {
                    // The segment waits for the checkpoint: the indexer goes at once.
                    shared.index_soon.store(true, Ordering::Release);
                    shared.tail_changed.notify_all();
                    wait = INDEX_INTERVAL;
                    break;
                }
                Ok(RetireStep::Removed { .. }) => break,
                Ok(_) if shared.stopping.load(Ordering::Acquire) => return,
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "log retirement pass failed; retrying at the next");
                    *stage = Stage::Idle;
                    break;
                }
            }
        }
    }
}

/// One step now, on the caller's thread.
pub(super) fn step_now(shared: &Shared) -> Result<RetireStep, StoreError> {
    let mut stage = shared.retirement.lock().unwrap_or_else(|p| p.into_inner());
    let done = step(shared, &mut stage);
    if done.is_err() {
        *stage = Stage::Idle;
    }
    done
}

/// Advances the pass by one step.
fn step(shared: &Shared, stage: &mut Stage) -> Result<RetireStep, StoreError> {
    match std::mem::take(stage) {
        Stage::Idle => plan(shared, stage),
        Stage::Copying {
            segment,
            live,
            next,
            through,
        } => copy(shared, stage, segment, live, next, through),
        Stage::Draining {
            segment,
            compacted,
            through,
        } => {
            if shared.index.checkpoint() < through {
                *stage = Stage::Draining {
                    segment,
                    compacted,
                    through,
                };
                return Ok(RetireStep::Waiting { segment });
            }
            remove(shared, segment, compacted)
        }
    }
}

/// Picks a segment and lists its live records.
fn plan(shared: &Shared, stage: &mut Stage) -> Result<RetireStep, StoreError> {
    let Some(segment) = choose(shared) else {
        return Ok(RetireStep::Idle);
    };
    let bytes = shared.log.read_segment(segment)?;
    let (records, stop) = scan(&bytes);
    if let Some(stop) = stop {
        return Err(LogError::Corrupt {
            segment,
            reason: format!("retiring an indexed segment: {stop}"),
        }
        .into());
    }
    let mut live = Vec::new();
    for (offset, record) in records {
        let locator = Locator {
            segment,
            offset: offset as u64,
            len: record.len as u32,
        };
        let id = decode_item(record.body)?.item.id;
        if shared.locate(id)? == Some(locator) {
            live.push(Live {
                id,
                header: record.header,
                locator,
            });
        }
    }
    // Whatever made these records dead lies before this point: the segment goes only
    // once the index durably holds it, so the durable index never points into it.
    let end = shared.log.end();
    debug!(
        segment,
        live = live.len(),
        "log segment chosen for retirement"
    );
    let count = live.len();
    *stage = if live.is_empty() {
        Stage::Draining {
            segment,
            compacted: false,
            through: end,
        }
    } else {
        Stage::Copying {
            segment,
            live,
            next: 0,
            through: end,
        }
    };
    Ok(RetireStep::Planned {
        segment,
        live: count,
    })
}

/// The segment most worth retiring: wholly before the checkpoint, its dead fraction at
/// or above the threshold, the largest such.
fn choose(shared: &Shared) -> Option<u64> {
    let head = shared.log.head_segment();
    let (checkpoint, dead) = {
        let durable = shared.index.durable();
        (durable.checkpoint, durable.dead.clone())
    };
    let magic = SEGMENT_MAGIC.len() as u64;
    shared
        .log
        .segments()
        .into_iter()
        .filter(|&(segment, _)| segment < checkpoint.segment && segment < head)
        .filter_map(|(segment, bytes)| {
            let data = bytes.saturating_sub(magic);
            let dead = dead.get(&segment).copied().unwrap_or(0);
            let fraction = if data == 0 {
                1.0
            } else {
                dead as f64 / data as f64
            };
            (fraction >= shared.dead_fraction).then_some((segment, fraction))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(segment, _)| segment)
}

/// Copies the next group of live records forward, under the append lock.
fn copy(
    shared: &Shared,
    stage: &mut Stage,
    segment: u64,
    live: Vec<Live>,
    next: usize,
    mut through: LogPosition,
) -> Result<RetireStep, StoreError> {
    // Small against a segment too, so copies do not make the head segment outgrow it.
    let most = COPY_GROUP_BYTES.min(shared.log.segment_bytes() as usize / 4);
    let mut end = next;
    let mut bytes = 0;
    while end < live.len() && (end == next || bytes + live[end].locator.len as usize <= most) {
        bytes += live[end].locator.len as usize;
        end += 1;
    }
    let copied = {
        let _append = shared.lock_for_append()?;
        let mut group: Vec<(Live, StoredItem, Vec<u8>)> = Vec::with_capacity(end - next);
        for record in &live[next..end] {
            // Checked again under the lock: a rewrite since the plan killed it.
            if shared.locate(record.id)? != Some(record.locator) {
                continue;
            }
            let body = shared
                .log
                .read(record.locator, &|h| h.kind == RecordKind::Item)?;
            group.push((*record, decode_item(&body)?, body));
        }
        // A copy keeps the way back to the version its record rewrote.
        let mut links = Vec::with_capacity(group.len());
        for (record, _, _) in &group {
            let entry = shared
                .index
                .sequence_entry(record.header.partition, record.header.sequence)?;
            links.push(entry.and_then(|(_, replaces)| replaces));
        }
        if !group.is_empty() {
            let records: Vec<(RecordHeader, &[u8])> = group
                .iter()
                .map(|(record, _, body)| (record.header, body.as_slice()))
                .collect();
            let copied_bytes: u64 = group
                .iter()
                .map(|(record, _, _)| u64::from(record.locator.len))
                .sum();
            let last = shared.log.append(&records, |locators| {
                let mut tail = shared.tail();
                for (((record, stored, _), locator), replaces) in
                    group.iter().zip(locators).zip(&links)
                {
                    let mut entry = index_entry(
                        stored,
                        record.header.partition,
                        record.header.sequence,
                        *locator,
                    );
                    entry.supersedes = Some(record.locator);
                    entry.replaces = *replaces;
                    tail.insert(entry, Arc::new(stored.clone()), locator.end());
                }
                locators.last().map(|l| l.end())
            })?;
            shared.tail_changed.notify_all();
            shared
                .copied_bytes
                .fetch_add(copied_bytes, Ordering::Relaxed);
            metrics::counter!(STORE_LOG_COPIED_BYTES).increment(copied_bytes);
            through = last.unwrap_or(through).max(through);
        }
        group.len()
    };
    *stage = if end == live.len() {
        Stage::Draining {
            segment,
            compacted: true,
            through,
        }
    } else {
        Stage::Copying {
            segment,
            live,
            next: end,
            through,
        }
    };
    Ok(RetireStep::Copied {
        segment,
        records: copied,
    })
}

/// Deletes a segment nothing in the index points into.
fn remove(shared: &Shared, segment: u64, compacted: bool) -> Result<RetireStep, StoreError> {
    shared.log.remove_segment(segment)?;
    shared.index.forget_segment(segment)?;
    shared.retired.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(STORE_SEGMENTS_RETIRED).increment(1);
    if compacted {
        shared.compacted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(STORE_SEGMENTS_COMPACTED).increment(1);
    }
    info!(segment, compacted, "log segment reclaimed");
    Ok(RetireStep::Removed { segment, compacted })
}

/// The log's disk use now.
pub(super) fn usage(shared: &Shared) -> LogUsage {
    let segments = shared.log.segments();
    let bytes = segments.iter().map(|&(_, b)| b).sum();
    let dead_bytes = {
        let durable = shared.index.durable();
        segments
            .iter()
            .filter_map(|(segment, _)| durable.dead.get(segment))
            .sum()
    };
    LogUsage {
        segments: segments.len(),
        bytes,
        dead_bytes,
        live_bytes: u64::saturating_sub(bytes, dead_bytes),
        retired_segments: shared.retired.load(Ordering::Relaxed),
        compacted_segments: shared.compacted.load(Ordering::Relaxed),
        copied_bytes: shared.copied_bytes.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests;
