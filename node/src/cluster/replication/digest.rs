//! A partition's digest on one replica: a hash over its live records in sequence order
//! (sequence and body), read page by page from the log, whole or over ranges of
//! sequences. Two replicas that hold the same records of a partition have the same
//! digest; `chorus ctl replicas --digest` shows it so that replicas can be compared,
//! and anti-entropy compares ranges to find where a follower's copy differs.
//!
//! Which records are live depends on later ones (a rewrite supersedes an older
//! record), so digests of two replicas agree only when both stand at the same last
//! sequence: [`range_digests`] answers `None` when the partition's last sequence is
//! not the one expected before or after the scan.

use bincode::{Decode, Encode};
use chorus_actors::NodeHandle;
use chorus_protocol::{ErrorCode, PartitionId};
use xxhash_rust::xxh3::Xxh3;

/// Record bytes read per page while hashing.
const PAGE_BYTES: usize = 1 << 20;
/// Most ranges one digest request may ask for.
pub const MAX_DIGEST_RANGES: usize = 64;

/// A partition's records on this replica (or those in a range of sequences): how
/// many, and their hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PartitionDigest {
    /// Live records.
    pub records: u64,
    /// xxh3 over each record's sequence (little endian), length and body, in sequence
    /// order.
    pub hash: u64,
}

/// One range's running digest.
struct Running {
    hasher: Xxh3,
    records: u64,
}

impl Running {
    fn new() -> Self {
        Running {
            hasher: Xxh3::new(),
            records: 0,
        }
    }

    fn finish(&self) -> PartitionDigest {
        PartitionDigest {
            records: self.records,
            hash: self.hasher.digest(),
        }
    }
}

/// Hashes `partition`'s live records on this node.
pub async fn partition_digest(
    node: &NodeHandle,
    partition: PartitionId,
) -> Result<PartitionDigest, ErrorCode> {
    let (digests, _) = scan(node, partition, &[(0, u64::MAX)]).await?;
    Ok(digests[0])
}

/// The digest of each range `(after, up_to]` of `partition`'s sequences (ascending,
/// not overlapping), or `None` when the partition does not end at `expect_last`
/// before and after the scan (records arrived or went: the digests would not compare).
pub async fn range_digests(
    node: &NodeHandle,
    partition: PartitionId,
    expect_last: u64,
    ranges: &[(u64, u64)],
) -> Result<Option<Vec<PartitionDigest>>, ErrorCode> {
    check_ranges(ranges)?;
    if node.partition_state(partition).1 != expect_last {
        return Ok(None);
    }
    let (digests, lasts) = scan(node, partition, ranges).await?;
    Ok(lasts.iter().all(|&l| l == expect_last).then_some(digests))
}

/// Refuses ranges that are empty, too many, out of order or overlapping.
fn check_ranges(ranges: &[(u64, u64)]) -> Result<(), ErrorCode> {
    if ranges.is_empty() || ranges.len() > MAX_DIGEST_RANGES {
        return Err(ErrorCode::invalid(
            "ranges",
            format!("1 to {MAX_DIGEST_RANGES} ranges, not {}", ranges.len()),
        ));
    }
    let ordered = ranges.iter().all(|&(after, up_to)| after < up_to)
        && ranges.windows(2).all(|w| w[0].1 <= w[1].0);
    if !ordered {
        return Err(ErrorCode::invalid(
            "ranges",
            "each range must be non-empty, ascending and apart from the next",
        ));
    }
    Ok(())
}

/// Reads `partition` from the first range's start to the last one's end, hashing each
/// record into its range; returns the digests and the partition's last sequence as
/// each page saw it.
async fn scan(
    node: &NodeHandle,
    partition: PartitionId,
    ranges: &[(u64, u64)],
) -> Result<(Vec<PartitionDigest>, Vec<u64>), ErrorCode> {
    let mut running: Vec<Running> = ranges.iter().map(|_| Running::new()).collect();
    let mut lasts = Vec::new();
    let end = ranges.last().map_or(0, |&(_, up_to)| up_to);
    let mut after = ranges.first().map_or(0, |&(after, _)| after);
    let mut slot = 0;
    'pages: loop {
        let (page, last) = node.read_partition(partition, after, PAGE_BYTES).await?;
        lasts.push(last);
        let Some(final_record) = page.last() else {
            break;
        };
        after = final_record.sequence;
        for record in &page {
            if record.sequence > end {
                break 'pages;
            }
            while slot < ranges.len() && record.sequence > ranges[slot].1 {
                slot += 1;
            }
            let Some(range) = running.get_mut(slot) else {
                break 'pages;
            };
            if record.sequence <= ranges[slot].0 {
                continue;
            }
            range.hasher.update(&record.sequence.to_le_bytes());
            range
                .hasher
                .update(&(record.body.len() as u64).to_le_bytes());
            range.hasher.update(&record.body);
            range.records += 1;
        }
        if after >= end {
            break;
        }
    }
    // A page's last sequence is read before its records: look once more after them.
    lasts.push(node.partition_state(partition).1);
    Ok((running.iter().map(Running::finish).collect(), lasts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_must_be_few_ascending_and_apart() {
        assert!(check_ranges(&[(0, 5), (5, 9)]).is_ok());
        assert!(check_ranges(&[]).is_err());
        assert!(check_ranges(&[(3, 3)]).is_err());
        assert!(check_ranges(&[(0, 5), (4, 9)]).is_err());
        assert!(check_ranges(&[(5, 9), (0, 5)]).is_err());
        let many: Vec<_> = (0..=MAX_DIGEST_RANGES as u64).map(|i| (i, i + 1)).collect();
        assert!(check_ranges(&many).is_err());
    }
}
