//! Retention: every partition's leader expires the items stored longer ago than
//! `[retention] max_age_secs`, a part at a time, by writing their tombstones (as a
//! user's deletion does, see `chorus_actors::store`), so they expire on every replica
//! and their bytes are reclaimed by compaction.
//!
//! Each round walks each led partition in sequence order from where the last round
//! stopped (a node that just took a partition over starts from its beginning), and
//! stops at the first item young enough to keep. Expired items are counted in
//! `chorus_retention_expired_total`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_protocol::PartitionId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::server::Backend;

/// Items expired by retention.
pub const RETENTION_EXPIRED_TOTAL: &str = "chorus_retention_expired_total";
/// Most parts one round expires per partition, so one partition far behind does not
/// hold the others back for long.
const MAX_PARTS_PER_ROUND: usize = 16;

/// Runs expiry every `interval` until `shutdown`, for items older than `max_age`.
pub async fn run(
    backend: Backend,
    max_age: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut reached: HashMap<PartitionId, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let cutoff_ms = now_ms.saturating_sub(max_age.as_millis() as u64);
        let expired = tokio::select! {
            _ = shutdown.cancelled() => return,
            expired = round(&backend, cutoff_ms, &mut reached) => expired,
        };
        if expired > 0 {
            info!(expired, cutoff_ms, "items expired past their retention");
        }
    }
}

/// One round over the partitions this node leads; how many items expired.
async fn round(backend: &Backend, cutoff_ms: u64, reached: &mut HashMap<PartitionId, u64>) -> u64 {
    let ring = backend.cluster.ring();
    let me = backend.cluster.node();
    let led: Vec<PartitionId> = (0..ring.ring.partitions())
        .filter(|&p| ring.leader(p) == me)
        .collect();
    reached.retain(|p, _| led.contains(p));
    let mut expired = 0;
    for partition in led {
        let after = reached.entry(partition).or_insert(0);
        for _ in 0..MAX_PARTS_PER_ROUND {
            match backend.node.expire_part(partition, *after, cutoff_ms).await {
                Ok((count, next)) => {
                    *after = next;
                    expired += count;
                    metrics::counter!(RETENTION_EXPIRED_TOTAL).increment(count);
                    if count == 0 {
                        break;
                    }
                }
                Err(error) => {
                    debug!(partition, %error, "expiry not run here now");
                    break;
                }
            }
        }
    }
    expired
}
