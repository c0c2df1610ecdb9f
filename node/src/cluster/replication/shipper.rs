//! One follower's shipper: for every partition this node leads with the follower in its
//! replica set, sends what the follower lacks (from memory when it is in step, from the
//! log by sequence when it is behind), one shipment in flight, and feeds the
//! follower's answers to the partitions' quorums. A follower not yet heard from in an
//! epoch gets an empty probe first, which carries the epoch history (so it truncates a
//! superseded tail) and tells the shipper where it stands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_actors::store::{ShipBatch, ShipOutcome};
use chorus_protocol::{NodeId, PartitionId};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::handoff::{HANDOFF_BYTES, HANDOFF_THROTTLED};
use super::{Part, REPLICATION_RECORDS_SHIPPED, Replicator};
use crate::cluster::routing::{Forward, ForwardReply};

/// How often a shipper looks for work without being woken (probes, retries).
const IDLE_INTERVAL: Duration = Duration::from_millis(250);
/// The first wait after a failed shipment; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait after failed shipments.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A follower's shipper as the rest of replication reaches it.
#[derive(Default)]
pub(super) struct Handle {
    /// Wakes it (records to ship).
    pub(super) wake: Notify,
    /// Held across each call to the follower and the handling of its answer, so that
    /// another call that changes what the follower holds (an anti-entropy repair) is
    /// not overtaken by the answer to a shipment sent before it.
    pub(super) turn: tokio::sync::Mutex<()>,
}

/// What to send one partition's follower.
struct Planned {
    partition: PartitionId,
    epoch: u64,
    history: Vec<(u64, u64)>,
    /// What the follower is known to hold; `None`: not heard from in this epoch.
    known: Option<u64>,
    /// The leader's last sequence.
    last: u64,
}

/// Ships to `follower` until replication stops or the follower leaves the ring.
pub(super) async fn run(replicator: Replicator, follower: NodeId, handle: Arc<Handle>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        tokio::select! {
            _ = replicator.inner.stop.cancelled() => return,
            _ = handle.wake.notified() => {}
            _ = tokio::time::sleep(IDLE_INTERVAL) => {}
        }
        loop {
            if !replicator.is_current_shipper(&follower, &handle) {
                debug!(%follower, "shipper stops: the follower left the ring");
                return;
            }
            let turn = handle.turn.lock().await;
            let plan = replicator.ship_plan(&follower);
            if plan.is_empty() {
                break;
            }
            let tips: HashMap<PartitionId, u64> =
                plan.iter().map(|p| (p.partition, p.last)).collect();
            let batches = replicator.fill(plan).await;
            let size = Size::of(&batches, &tips);
            replicator.throttle(size.catch_up_bytes).await;
            let sent: Vec<(PartitionId, u64)> =
                batches.iter().map(|b| (b.partition, b.epoch)).collect();
            let reply = replicator
                .inner
                .peers
                .forward(&follower, Forward::Ship { batches })
                .await;
            let moved = match reply {
                Ok(ForwardReply::Shipped(outcomes)) if outcomes.len() == sent.len() => {
                    metrics::counter!(REPLICATION_RECORDS_SHIPPED).increment(size.records);
                    replicator.count_shipped(&size);
                    Ok(replicator.shipped(&follower, &sent, outcomes))
                }
                other => Err(other),
            };
            drop(turn);
            match moved {
                Ok(true) => backoff = MIN_BACKOFF,
                Ok(false) => {
                    // Nothing moved: wait for news rather than spin.
                    backoff = MIN_BACKOFF;
                    break;
                }
                Err(Ok(other)) => {
                    warn!(%follower, reply = ?other, "unexpected answer to a shipment");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    break;
                }
                Err(Err(error)) => {
                    debug!(%follower, %error, "shipment failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
    }
}

/// What one shipment carries.
struct Size {
    records: u64,
    bytes: u64,
    /// The same, if the shipment leaves its follower short of the leader's last record
    /// in some partition (catch-up, which the handoff cap applies to); else zero.
    catch_up_bytes: u64,
    catch_up_records: u64,
}

impl Size {
    /// The size of `batches`, each partition planned up to the leader's last in `tips`.
    fn of(batches: &[ShipBatch], tips: &HashMap<PartitionId, u64>) -> Size {
        let records = batches.iter().map(|b| b.records.len() as u64).sum();
        let bytes = batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| r.body.len() as u64)
            .sum();
        let short = batches.iter().any(|batch| {
            let tip = tips.get(&batch.partition).copied().unwrap_or(0);
            batch.records.last().is_some_and(|r| r.sequence < tip)
        });
        Size {
            records,
            bytes,
            catch_up_bytes: if short { bytes } else { 0 },
            catch_up_records: if short { records } else { 0 },
        }
    }
}

impl Replicator {
    /// Waits until the handoff cap lets `bytes` of catch-up go.
    async fn throttle(&self, bytes: u64) {
        let Some(bandwidth) = &self.inner.bandwidth else {
            return;
        };
        if bytes == 0 {
            return;
        }
        let wait = bandwidth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(bytes, Instant::now());
        if !wait.is_zero() {
            self.inner
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .throttled += 1;
            metrics::counter!(HANDOFF_THROTTLED).increment(1);
            tokio::time::sleep(wait).await;
        }
    }

    /// Counts a shipment that went out.
    fn count_shipped(&self, size: &Size) {
        let mut progress = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        progress.observe(size.bytes, size.records);
        if size.catch_up_records > 0 {
            progress.shipped(size.catch_up_bytes, size.catch_up_records, Instant::now());
            metrics::counter!(HANDOFF_BYTES).increment(size.catch_up_bytes);
        }
    }

    /// Whether `wake` is still the shipper of `follower` (a shipper whose follower left
    /// the ring, or that was replaced, stops).
    fn is_current_shipper(&self, follower: &NodeId, handle: &Arc<Handle>) -> bool {
        let shippers = self
            .inner
            .shippers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shippers
            .get(follower)
            .is_some_and(|h| Arc::ptr_eq(h, handle))
    }

    /// The partitions where `follower` lacks something this node leads.
    fn ship_plan(&self, follower: &NodeId) -> Vec<Planned> {
        let parts = self.parts();
        parts
            .iter()
            .enumerate()
            .filter_map(|(p, part)| match part {
                Part::Leading(leading) if leading.ships_to(follower) => {
                    let known = leading.quorum.follower_last(follower);
                    let last = leading.staged.max(leading.quorum.last());
                    (known.is_none_or(|k| k < last)).then(|| Planned {
                        partition: p as PartitionId,
                        epoch: leading.epoch,
                        history: leading.history.clone(),
                        known,
                        last,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Turns a plan into batches within the shipment's byte budget: a probe for a
    /// follower not heard from, else the records after what it holds (from memory, or
    /// read back from the log).
    async fn fill(&self, plan: Vec<Planned>) -> Vec<ShipBatch> {
        let mut budget = self.inner.settings.batch_bytes;
        let mut batches = Vec::with_capacity(plan.len());
        for planned in plan {
            let Some(known) = planned.known else {
                batches.push(ShipBatch {
                    partition: planned.partition,
                    epoch: planned.epoch,
                    history: planned.history,
                    prev: planned.last,
                    records: Vec::new(),
                });
                continue;
            };
            if budget == 0 {
                continue;
            }
            let cached = self
                .inner
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .after(planned.partition, known, planned.last, budget);
            let records = match cached {
                Some(records) => records,
                None => match self
                    .inner
                    .node
                    .read_partition(planned.partition, known, budget)
                    .await
                {
                    Ok((records, _)) => records,
                    Err(error) => {
                        warn!(partition = planned.partition, %error, "reading records to ship failed");
                        continue;
                    }
                },
            };
            budget = budget.saturating_sub(records.iter().map(|r| r.body.len()).sum());
            batches.push(ShipBatch {
                partition: planned.partition,
                epoch: planned.epoch,
                history: planned.history,
                prev: known,
                records,
            });
        }
        batches
    }

    /// Applies `follower`'s answers to the batches `sent` (partition, epoch); returns
    /// whether any partition's known position moved.
    fn shipped(
        &self,
        follower: &NodeId,
        sent: &[(PartitionId, u64)],
        outcomes: Vec<ShipOutcome>,
    ) -> bool {
        let mut moved = false;
        let mut fenced = Vec::new();
        {
            let mut parts = self.parts();
            for (&(partition, epoch), outcome) in sent.iter().zip(outcomes) {
                let Some(Part::Leading(leading)) = parts.get_mut(usize::from(partition)) else {
                    continue;
                };
                if leading.epoch != epoch || !leading.ships_to(follower) {
                    continue;
                }
                match outcome {
                    ShipOutcome::Appended { last } | ShipOutcome::Behind { last } => {
                        moved |= leading.quorum.follower_last(follower) != Some(last);
                        for (waiter, holders) in leading.quorum.acked(follower, last) {
                            let _ = waiter.send(Ok(holders));
                        }
                    }
                    ShipOutcome::Fenced { promised } => fenced.push((partition, promised)),
                }
            }
        }
        for (partition, promised) in fenced {
            self.step_down(partition, promised, "a replica promised a newer epoch");
        }
        moved
    }
}
