//! Draining a node (`chorus ctl drain`): before it leaves, every partition it holds is
//! streamed to the members that take its place in the partition's replica set, so a
//! leave never leaves a partition one replica short while the others catch up.
//!
//! The node computes the placement the others will compute once it has left (the
//! current placement's members without it), and for each partition it holds, the
//! members that join the replica set ([`plan`]). It then ships each of them its own
//! copy, as a follower's log is shipped: records by sequence, with its epoch history and
//! the epoch of its last record, so the receiver fences and truncates exactly as it
//! would for a leader (a shipment from an older epoch than the receiver promised is
//! refused, and that partition is left to its leader). The streams share the node's
//! `handoff_bytes_per_sec`. When every stream is done, the node leaves; the partitions'
//! leaders then find the new replicas holding all but the writes of the last moments.
//! `chorus ctl handoff` shows the progress; `--abort` stops the drain and the node
//! stays.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_actors::NodeHandle;
use chorus_actors::store::{ShipBatch, ShipOutcome};
use chorus_protocol::{ErrorCode, NodeId, PartitionId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::placement;
use super::replication::handoff::Bandwidth;
use super::ring::{Ring, RingError};
use super::routing::{Forward, ForwardReply, Forwarder};
use super::standing::Standings;
use super::state::RingView;

/// Most record bytes in one drain shipment.
const BATCH_BYTES: usize = 1 << 20;
/// How often a failed shipment is retried before the drain gives up on it.
const ATTEMPTS: u32 = 5;

/// One stream of a drain: a partition and a member that joins its replica set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// The partition.
    pub partition: PartitionId,
    /// The member that will hold it once this node has left.
    pub to: NodeId,
}

/// The streams that move this node's partitions to the members that replace it: the
/// placement without `me` under the members' `standings` (cordoned members take none),
/// compared with `view`'s, partition by partition.
pub fn plan(
    view: &RingView,
    me: &NodeId,
    standings: Option<&Standings>,
) -> Result<Vec<Stream>, RingError> {
    let others: Vec<NodeId> = view
        .ring
        .members()
        .iter()
        .filter(|m| *m != me)
        .cloned()
        .collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let after = Ring::place(others, view.ring.partitions())?;
    let sets = placement::replica_sets(&after, view.factor, standings);
    let mut streams = Vec::new();
    for partition in 0..view.ring.partitions() {
        let before: BTreeSet<&NodeId> = view.replicas(partition).collect();
        if !before.contains(me) {
            continue;
        }
        // The replicas once this node has left: voters, and learners (the full set the
        // voters will become).
        let mut to = placement::named(&after, &sets.voters, partition);
        to.extend(placement::named(&after, &sets.learners, partition));
        for to in to {
            if !before.contains(to) {
                streams.push(Stream {
                    partition,
                    to: to.clone(),
                });
            }
        }
    }
    Ok(streams)
}

/// Where a drain stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    /// `running`, `aborting`, `done` (the node leaves), `aborted` or `failed`.
    pub state: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Streams planned.
    pub streams: u32,
    /// Streams finished.
    pub streams_done: u32,
    /// Streams refused by a receiver under a newer epoch (left to the leader).
    pub streams_fenced: u32,
    /// Records shipped.
    pub records: u64,
    /// Bytes shipped.
    pub bytes: u64,
    /// Seconds since the drain began.
    pub elapsed_secs: u64,
}

/// A drain in progress or ended, shared with `chorus ctl handoff`.
#[derive(Clone, Debug)]
pub struct Drain {
    progress: Arc<Mutex<DrainProgress>>,
    abort: CancellationToken,
    started: Instant,
}

impl Drain {
    /// A drain of `streams` streams, running.
    pub fn new(streams: usize) -> Self {
        Drain {
            progress: Arc::new(Mutex::new(DrainProgress {
                state: "running".into(),
                streams: streams as u32,
                ..DrainProgress::default()
            })),
            abort: CancellationToken::new(),
            started: Instant::now(),
        }
    }

    /// Where it stands now.
    pub fn progress(&self) -> DrainProgress {
        let mut progress = self.lock().clone();
        progress.elapsed_secs = self.started.elapsed().as_secs();
        progress
    }

    /// Whether it is still running (or aborting).
    pub fn running(&self) -> bool {
        matches!(self.lock().state.as_str(), "running" | "aborting")
    }

    /// Stops it (`aborting` until its current shipment ends); the node stays.
    pub fn abort(&self) {
        self.abort.cancel();
        let mut progress = self.lock();
        if progress.state == "running" {
            progress.state = "aborting".into();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DrainProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(&self, state: &str, error: Option<String>) {
        let mut progress = self.lock();
        progress.state = state.into();
        progress.error = error;
    }
}

/// Runs `streams` from this node's store to their members, within `cap` bytes per
/// second; returns whether every stream finished (the node may leave).
pub async fn run(
    drain: Drain,
    streams: Vec<Stream>,
    node: NodeHandle,
    peers: Arc<dyn Forwarder>,
    cap: Option<u64>,
) -> bool {
    let mut bandwidth = cap.map(|c| Bandwidth::new(c, Instant::now()));
    for stream in streams {
        if drain.abort.is_cancelled() {
            break;
        }
        match send(&drain, &stream, &node, peers.as_ref(), &mut bandwidth).await {
            Ok(fenced) => {
                let mut progress = drain.lock();
                progress.streams_done += 1;
                progress.streams_fenced += u32::from(fenced);
            }
            Err(error) => {
                warn!(partition = stream.partition, to = %stream.to, %error, "drain stream failed");
                drain.end(
                    "failed",
                    Some(format!(
                        "partition {} to {}: {error}",
                        stream.partition, stream.to
                    )),
                );
                return false;
            }
        }
    }
    if drain.abort.is_cancelled() {
        info!("drain aborted: this node stays");
        drain.end("aborted", None);
        return false;
    }
    info!("drain done: every partition has its new replicas; leaving");
    drain.end("done", None);
    true
}

/// Ships `stream`'s partition until the receiver holds this node's last record;
/// returns whether the receiver refused it under a newer epoch.
async fn send(
    drain: &Drain,
    stream: &Stream,
    node: &NodeHandle,
    peers: &dyn Forwarder,
    bandwidth: &mut Option<Bandwidth>,
) -> Result<bool, ErrorCode> {
    let (epochs, last) = node.partition_state(stream.partition);
    if last == 0 {
        return Ok(false);
    }
    let epoch = epochs.epoch_at(last);
    // An empty shipment first: the receiver says where it stands.
    let mut known = None;
    let mut failures = 0;
    loop {
        if drain.abort.is_cancelled() {
            return Ok(false);
        }
        let (records, prev) = match known {
            None => (Vec::new(), last),
            Some(k) if k >= last => return Ok(false),
            Some(k) => (
                node.read_partition(stream.partition, k, BATCH_BYTES)
                    .await?
                    .0,
                k,
            ),
        };
        let bytes: u64 = records.iter().map(|r| r.body.len() as u64).sum();
        if let Some(bandwidth) = bandwidth {
            let wait = bandwidth.take(bytes, Instant::now());
            tokio::select! {
                _ = drain.abort.cancelled() => return Ok(false),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let count = records.len() as u64;
        let batch = ShipBatch {
            partition: stream.partition,
            epoch,
            history: epochs.history.clone(),
            prev,
            records,
        };
        let reply = peers
            .forward(
                &stream.to,
                Forward::Ship {
                    batches: vec![batch],
                },
            )
            .await;
        match reply {
            Ok(ForwardReply::Shipped(outcomes)) if outcomes.len() == 1 => {
                failures = 0;
                match outcomes[0] {
                    ShipOutcome::Appended { last: theirs }
                    | ShipOutcome::Behind { last: theirs } => {
                        if known.is_some() {
                            let mut progress = drain.lock();
                            progress.records += count;
                            progress.bytes += bytes;
                        }
                        if known == Some(theirs) && count == 0 {
                            // Nothing left to read up to our last: the gap is retired records.
                            return Ok(false);
                        }
                        known = Some(theirs);
                    }
                    ShipOutcome::Fenced { .. } => return Ok(true),
                }
            }
            other => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(match other {
                        Err(error) => error,
                        Ok(reply) => ErrorCode::Unavailable {
                            reason: format!("unexpected answer {reply:?}"),
                        },
                    });
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn view(names: &[&str], factor: usize) -> RingView {
        let nodes: Vec<NodeId> = names.iter().map(|n| NodeId((*n).into())).collect();
        let ring = Ring::place(nodes.clone(), 64).unwrap();
        RingView::new(ring, factor, nodes.into_iter().collect(), BTreeMap::new())
    }

    #[test]
    fn a_drain_streams_each_held_partition_to_its_new_replicas_only() {
        let me = NodeId("d".into());
        let view = view(&["a", "b", "c", "d"], 3);
        let streams = plan(&view, &me, None).unwrap();
        let held: Vec<PartitionId> = (0..64)
            .filter(|&p| view.replicas(p).any(|r| *r == me))
            .collect();
        let streamed: BTreeSet<PartitionId> = streams.iter().map(|s| s.partition).collect();
        // With four members and three replicas, every held partition gains one member.
        assert_eq!(streamed.into_iter().collect::<Vec<_>>(), held);
        assert_eq!(streams.len(), held.len());
        for stream in &streams {
            assert_ne!(stream.to, me);
            assert!(!view.replicas(stream.partition).any(|r| *r == stream.to));
        }
    }

    #[test]
    fn a_drain_streams_nothing_to_a_cordoned_member() {
        use crate::cluster::standing::{PartitionSet, Standing};
        let view = view(&["a", "b", "c", "d", "e"], 3);
        let e = NodeId("e".into());
        let held = PartitionSet::of((0..64).filter(|&p| view.replicas(p).any(|r| *r == e)));
        let standing = |cordoned| Standing {
            version: 1,
            warming: false,
            departed: false,
            cordoned,
        };
        let standings = Standings::from_entries(
            ["a", "b", "c", "d"]
                .map(|n| (NodeId(n.into()), standing(None)))
                .into_iter()
                .chain([(e.clone(), standing(Some(held)))]),
        );
        let streams = plan(&view, &NodeId("d".into()), Some(&standings)).unwrap();
        assert!(!streams.is_empty());
        assert!(streams.iter().all(|s| s.to != e), "{streams:?}");
    }

    #[test]
    fn with_no_member_to_take_its_place_nothing_streams() {
        // Three members, three replicas: the two left hold every partition already.
        let streams = plan(&view(&["a", "b", "c"], 3), &NodeId("c".into()), None).unwrap();
        assert!(streams.is_empty());
        assert!(
            plan(&view(&["a"], 3), &NodeId("a".into()), None)
                .unwrap()
                .is_empty()
        );
    }
}
