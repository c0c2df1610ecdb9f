//! A partition's digest on one replica: a hash over its live records in sequence order
//! (sequence and body), read page by page from the log. Two replicas that hold the same
//! records of a partition have the same digest; `chorus ctl replicas --digest` shows it
//! so that replicas can be compared.

use chorus_actors::NodeHandle;
use chorus_protocol::{ErrorCode, PartitionId};
use xxhash_rust::xxh3::Xxh3;

/// Record bytes read per page while hashing.
const PAGE_BYTES: usize = 1 << 20;

/// A partition's records on this replica: how many, and their hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionDigest {
    /// Live records.
    pub records: u64,
    /// xxh3 over each record's sequence (little endian) and body, in sequence order.
    pub hash: u64,
}

/// Hashes `partition`'s live records on this node.
pub async fn partition_digest(
    node: &NodeHandle,
    partition: PartitionId,
) -> Result<PartitionDigest, ErrorCode> {
    let mut hasher = Xxh3::new();
    let mut records = 0u64;
    let mut after = 0u64;
    loop {
        let (page, _) = node.read_partition(partition, after, PAGE_BYTES).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.sequence;
        for record in &page {
            hasher.update(&record.sequence.to_le_bytes());
            hasher.update(&(record.body.len() as u64).to_le_bytes());
            hasher.update(&record.body);
        }
        records += page.len() as u64;
    }
    Ok(PartitionDigest {
        records,
        hash: hasher.digest(),
    })
}
