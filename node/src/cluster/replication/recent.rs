//! The records this leader appended last, kept in memory so that shipping them to
//! followers in step needs no read of the log, each with the id of the client request
//! that wrote it (so a shipment names the requests it serves). Bounded by bytes, oldest
//! dropped first; a follower further behind is served from the log instead.

use std::collections::{BTreeMap, VecDeque};

use chorus_actors::store::ReplicaRecord;
use chorus_protocol::PartitionId;

/// Recently appended records by (partition, sequence), with their requests' ids.
#[derive(Debug)]
pub(super) struct Recent {
    max_bytes: usize,
    bytes: usize,
    records: BTreeMap<(PartitionId, u64), (ReplicaRecord, Option<u64>)>,
    order: VecDeque<(PartitionId, u64)>,
}

/// A partition's records from [`Recent::after`], and the ids of the requests that wrote
/// them (each once, ascending).
#[derive(Debug, Default)]
pub(super) struct Run {
    /// The records, ascending by sequence, with no gap.
    pub(super) records: Vec<ReplicaRecord>,
    /// The requests they serve.
    pub(super) requests: Vec<u64>,
}

impl Recent {
    /// An empty cache of at most `max_bytes` of record bodies.
    pub(super) fn new(max_bytes: usize) -> Self {
        Recent {
            max_bytes,
            bytes: 0,
            records: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `records`, each with the request that wrote it, dropping the oldest
    /// beyond the bound.
    pub(super) fn extend(
        &mut self,
        records: impl IntoIterator<Item = (ReplicaRecord, Option<u64>)>,
    ) {
        for (record, request) in records {
            let key = (record.partition, record.sequence);
            self.bytes += record.body.len();
            if let Some((old, _)) = self.records.insert(key, (record, request)) {
                self.bytes -= old.body.len();
            } else {
                self.order.push_back(key);
            }
        }
        while self.bytes > self.max_bytes {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if let Some((old, _)) = self.records.remove(&key) {
                self.bytes -= old.body.len();
            }
        }
    }

    /// The ids of the requests that wrote those of `records` still remembered here
    /// (each once, ascending): a shipment read back from the log still names them.
    pub(super) fn requests_of(&self, records: &[ReplicaRecord]) -> Vec<u64> {
        let mut requests: Vec<u64> = records
            .iter()
            .filter_map(|r| self.records.get(&(r.partition, r.sequence)))
            .filter_map(|(_, request)| *request)
            .collect();
        requests.sort_unstable();
        requests.dedup();
        requests
    }

    /// The partition's records right after `after`, with no gap, up to `last` and
    /// about `max_bytes`; `None` when the one right after `after` is not here.
    pub(super) fn after(
        &self,
        partition: PartitionId,
        after: u64,
        last: u64,
        max_bytes: usize,
    ) -> Option<Run> {
        let mut out = Run::default();
        let mut bytes = 0;
        let first = after.checked_add(1)?;
        let run = self.records.range((partition, first)..=(partition, last));
        for ((&(_, sequence), (record, request)), expected) in run.zip(first..) {
            if sequence != expected
                || (!out.records.is_empty() && bytes + record.body.len() > max_bytes)
            {
                break;
            }
            bytes += record.body.len();
            out.records.push(record.clone());
            out.requests.extend(request);
        }
        out.requests.sort_unstable();
        out.requests.dedup();
        (!out.records.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: PartitionId, sequence: u64, len: usize) -> (ReplicaRecord, Option<u64>) {
        let record = ReplicaRecord {
            partition,
            sequence,
            body: vec![0; len],
        };
        (record, Some(sequence / 2))
    }

    #[test]
    fn a_run_without_gaps_is_served_and_a_missing_start_is_not() {
        let mut recent = Recent::new(1_000);
        recent.extend((1..=5).map(|s| record(3, s, 10)));
        recent.extend([record(3, 7, 10), record(4, 1, 10)]);
        let run = recent.after(3, 1, 10, 1_000).unwrap();
        assert_eq!(
            run.records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            [2, 3, 4, 5]
        );
        assert_eq!(run.requests, [1, 2], "each request once");
        assert!(recent.after(3, 5, 10, 1_000).is_none(), "6 is missing");
        assert_eq!(
            recent.after(3, 0, 2, 15).unwrap().records.len(),
            1,
            "bytes bound"
        );
        assert!(recent.after(3, 7, 10, 1_000).is_none());
    }

    #[test]
    fn records_read_elsewhere_are_named_by_the_requests_remembered_here() {
        let mut recent = Recent::new(1_000);
        recent.extend((4..=6).map(|s| record(2, s, 10)));
        let read: Vec<ReplicaRecord> = (1..=6).map(|s| record(2, s, 10).0).collect();
        assert_eq!(recent.requests_of(&read), [2, 3]);
        assert!(recent.requests_of(&read[..3]).is_empty());
    }

    #[test]
    fn the_oldest_records_go_first_beyond_the_bound() {
        let mut recent = Recent::new(30);
        recent.extend((1..=5).map(|s| record(1, s, 10)));
        assert!(recent.after(1, 0, 5, 1_000).is_none());
        let kept = recent.after(1, 2, 5, 1_000).unwrap();
        assert_eq!(kept.records.len(), 3);
    }
}
