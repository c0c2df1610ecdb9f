//! One follower's shipper: for every partition this node leads with the follower in its
//! replica set, sends what the follower lacks (from memory when it is in step, from the
//! log by sequence when it is behind), and feeds the follower's answers to the
//! partitions' quorums. A follower not yet heard from in an epoch gets an empty probe
//! first, which carries the epoch history (so it truncates a superseded tail) and
//! tells the shipper where it stands.
//!
//! Shipments are pipelined when there is enough to send: up to `shipments_in_flight`
//! await the follower's answer, each carrying what was staged after the one before, so
//! a backlog (a follower catching up, a burst) streams without waiting a round trip
//! per shipment, and the follower writes shipments that queue behind its log as one
//! group. A trickle of writes instead gathers behind the shipment in flight: each
//! shipment costs both ends about the same whatever it carries.
//!
//! A shipper in step plans only the partitions given new records since it last looked
//! (the write path names them), not every partition on each write; it looks at every
//! partition after a change of leadership or of a replica set, after a failure, and at
//! each idle tick.
//!
//! The shipper remembers how far it sent each partition; a follower that answers
//! `Behind` (a shipment overtaken by a later one, or a follower that lost records) is
//! sent again from where it says it stands, and whatever a follower already holds it
//! skips, so a shipment sent twice changes nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_actors::store::{ShipBatch, ShipOutcome};
use chorus_protocol::{NodeId, PartitionId};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, RwLock, RwLockReadGuard};
use tracing::{Instrument, debug, debug_span, warn};

use super::handoff::{HANDOFF_BYTES, HANDOFF_THROTTLED};
use super::{Part, REPLICATION_RECORDS_SHIPPED, Replicator};
use crate::cluster::routing::{Forward, ForwardReply};
use crate::request_id;

/// How often a shipper looks for work without being woken (probes, retries).
const IDLE_INTERVAL: Duration = Duration::from_millis(250);
/// The first wait after a failed shipment; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait after failed shipments.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Fewest records waiting for a follower that go out in a shipment of their own while
/// others are in flight.
const PIPELINE_MIN_RECORDS: u64 = 256;

/// A follower's shipper as the rest of replication reaches it.
#[derive(Default)]
pub(super) struct Handle {
    /// Wakes it (records to ship, or a change to look at).
    pub(super) wake: Notify,
    /// Partitions given new records since it last looked: in step, it plans those only
    /// rather than every partition on each write.
    fresh: std::sync::Mutex<Vec<PartitionId>>,
    /// Its next plan looks at every partition (set by any wake but new records).
    rescan: std::sync::atomic::AtomicBool,
    /// Each shipment holds it shared from its send until its answer is handled; a call
    /// that changes what the follower holds (an anti-entropy repair) holds it alone, so
    /// it is not overtaken by the answer to a shipment sent before it.
    pub(super) turn: RwLock<()>,
}

impl Handle {
    /// Wakes the shipper to look at every partition.
    pub(super) fn rescan(&self) {
        self.rescan.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Wakes the shipper to ship `partitions`, which were given new records.
    pub(super) fn fresh(&self, partitions: Vec<PartitionId>) {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(partitions);
        self.wake.notify_one();
    }

    /// What the shipper should look at next: every partition, or those in `pending`
    /// and any given new records since.
    fn take(&self, pending: &mut BTreeSet<PartitionId>) -> bool {
        pending.extend(
            self.fresh
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..),
        );
        self.rescan.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// What to send one partition's follower.
struct Planned {
    partition: PartitionId,
    epoch: u64,
    history: Vec<(u64, u64)>,
    /// Where the follower stands once what is in flight arrives; `None`: not heard
    /// from in this epoch.
    from: Option<u64>,
    /// The leader's last sequence.
    last: u64,
}

/// How far shipments awaiting an answer reach, per partition: (epoch, last sequence
/// sent; 0 for a probe).
type Sent = HashMap<PartitionId, (u64, u64)>;

/// How a shipment ended.
enum Ended {
    /// The follower answered: whether any partition's known position moved, and the
    /// partitions it said it is behind in.
    Answered {
        moved: bool,
        behind: Vec<PartitionId>,
    },
    /// An answer that is not a shipment's.
    Unexpected,
    /// No answer (link down, timeout, refusal).
    Failed,
}

/// Ships to `follower` until replication stops or the follower leaves the ring.
pub(super) async fn run(replicator: Replicator, follower: NodeId, handle: Arc<Handle>) {
    let mut backoff = MIN_BACKOFF;
    // No new shipment before this (after a failure), nor until news (after an answer
    // that moved nothing).
    let mut paused_until: Option<Instant> = None;
    let mut stalled = false;
    let mut sent = Sent::new();
    // The partitions to look at when not looking at all of them, and whether to.
    let mut pending: BTreeSet<PartitionId> = BTreeSet::new();
    let mut everything = true;
    let mut in_flight = FuturesUnordered::new();
    let depth = replicator.inner.settings.shipments_in_flight.max(1);
    loop {
        if !replicator.is_current_shipper(&follower, &handle) {
            debug!(%follower, "shipper stops: the follower left the ring");
            return;
        }
        if paused_until.is_some_and(|until| Instant::now() >= until) {
            paused_until = None;
        }
        everything |= handle.take(&mut pending);
        while in_flight.len() < depth && !stalled && paused_until.is_none() {
            // Never wait for the turn here: the shipments holding it are only
            // answered when this loop polls them.
            let Ok(turn) = handle.turn.try_read() else {
                break;
            };
            let plan = replicator.ship_plan(&follower, &sent, (!everything).then_some(&pending));
            // What was looked at and has nothing to send is off the list; the rest
            // leaves it once shipped whole.
            everything = false;
            pending = plan.iter().map(|p| p.partition).collect();
            if plan.is_empty() || (!in_flight.is_empty() && !worth_pipelining(&plan)) {
                break;
            }
            let tips: HashMap<PartitionId, u64> =
                plan.iter().map(|p| (p.partition, p.last)).collect();
            let (batches, requests) = replicator.fill(plan).await;
            if batches.is_empty() {
                break;
            }
            let size = Size::of(&batches, &tips);
            replicator.throttle(size.catch_up_bytes).await;
            for batch in &batches {
                let through = batch.records.last().map_or(0, |r| r.sequence);
                sent.insert(batch.partition, (batch.epoch, through));
                let tip = tips.get(&batch.partition).copied().unwrap_or(0);
                if batch.records.is_empty() || through >= tip {
                    pending.remove(&batch.partition);
                }
            }
            in_flight.push(ship(&replicator, &follower, turn, batches, requests, size));
        }
        let wait = paused_until.map_or(IDLE_INTERVAL, |until| {
            until.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = replicator.inner.stop.cancelled() => return,
            Some((partitions, ended)) = in_flight.next(), if !in_flight.is_empty() => {
                // Whatever the answer, these are looked at again (a probe answered, a
                // follower behind, records staged while the shipment was away).
                pending.extend(partitions.iter().copied());
                match ended {
                    Ended::Answered { moved, behind } => {
                        backoff = MIN_BACKOFF;
                        // Nothing moved: wait for news rather than spin.
                        stalled = !moved;
                        for partition in behind {
                            sent.remove(&partition);
                        }
                    }
                    Ended::Unexpected => {
                        everything = true;
                        paused_until = Some(Instant::now() + MAX_BACKOFF);
                        forget(&mut sent, &partitions);
                    }
                    Ended::Failed => {
                        everything = true;
                        paused_until = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        forget(&mut sent, &partitions);
                    }
                }
                if in_flight.is_empty() {
                    // Every answer is in: the quorum knows where the follower stands.
                    sent.clear();
                }
            }
            _ = handle.wake.notified() => stalled = false,
            _ = tokio::time::sleep(wait) => {
                stalled = false;
                everything = true;
            }
        }
    }
}

/// Whether `plan` is worth a shipment beside those in flight rather than waiting to
/// ride in the next one: a probe, or a backlog of at least [`PIPELINE_MIN_RECORDS`].
/// Every shipment costs both ends a message, a task and a log write whatever it
/// carries, so a trickle of writes goes best gathered behind the shipment in flight.
fn worth_pipelining(plan: &[Planned]) -> bool {
    let mut records = 0u64;
    for planned in plan {
        let Some(from) = planned.from else {
            return true;
        };
        records += planned.last.saturating_sub(from);
    }
    records >= PIPELINE_MIN_RECORDS
}

/// Forgets how far `partitions` were sent: the next shipment starts where the
/// follower is known to stand.
fn forget(sent: &mut Sent, partitions: &[PartitionId]) {
    for partition in partitions {
        sent.remove(partition);
    }
}

/// Sends one shipment on behalf of the `requests` whose records it carries (the
/// follower logs it under their ids) and applies the follower's answer, holding the
/// turn until then; returns the partitions it carried and how it ended.
async fn ship(
    replicator: &Replicator,
    follower: &NodeId,
    turn: RwLockReadGuard<'_, ()>,
    batches: Vec<ShipBatch>,
    requests: Vec<u64>,
    size: Size,
) -> (Vec<PartitionId>, Ended) {
    let sent: Vec<(PartitionId, u64)> = batches.iter().map(|b| (b.partition, b.epoch)).collect();
    let span = debug_span!("shipment", %follower, request_ids = ?requests);
    let forward = replicator
        .inner
        .peers
        .forward(follower, Forward::Ship { batches });
    let reply = request_id::serve_several(requests.into(), forward)
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    let ended = match reply {
        Ok(ForwardReply::Shipped(outcomes)) if outcomes.len() == sent.len() => {
            metrics::counter!(REPLICATION_RECORDS_SHIPPED).increment(size.records);
            replicator.count_shipped(&size);
            let behind = sent
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| matches!(outcome, ShipOutcome::Behind { .. }))
                .map(|(&(partition, _), _)| partition)
                .collect();
            let moved = replicator.shipped(follower, &sent, outcomes);
            Ended::Answered { moved, behind }
        }
        Ok(other) => {
            warn!(%follower, reply = ?other, "unexpected answer to a shipment");
            Ended::Unexpected
        }
        Err(error) => {
            debug!(%follower, %error, "shipment failed");
            Ended::Failed
        }
    };
    drop(turn);
    (sent.into_iter().map(|(p, _)| p).collect(), ended)
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

    /// The partitions where `follower` lacks something this node leads beyond what is
    /// on its way (`sent`); a partition whose probe is on its way waits for its answer.
    /// `only`: look at those partitions alone (the others have nothing new).
    fn ship_plan(
        &self,
        follower: &NodeId,
        sent: &Sent,
        only: Option<&BTreeSet<PartitionId>>,
    ) -> Vec<Planned> {
        let parts = self.parts();
        let looked_at: Box<dyn Iterator<Item = (usize, &Part)>> = match only {
            Some(only) => Box::new(
                only.iter()
                    .filter_map(|&p| parts.get(usize::from(p)).map(|part| (usize::from(p), part))),
            ),
            None => Box::new(parts.iter().enumerate()),
        };
        looked_at
            .filter_map(|(p, part)| match part {
                Part::Leading(leading) if leading.ships_to(follower) => {
                    let partition = p as PartitionId;
                    let on_its_way = sent
                        .get(&partition)
                        .filter(|(epoch, _)| *epoch == leading.epoch)
                        .map(|&(_, through)| through);
                    let known = leading.quorum.follower_last(follower);
                    let from = match (known, on_its_way) {
                        (None, Some(_)) => return None,
                        (None, None) => None,
                        (Some(known), through) => Some(known.max(through.unwrap_or(0))),
                    };
                    let last = leading.staged.max(leading.quorum.last());
                    (from.is_none_or(|f| f < last)).then(|| Planned {
                        partition,
                        epoch: leading.epoch,
                        history: leading.history.clone(),
                        from,
                        last,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Turns a plan into batches within the shipment's byte budget: a probe for a
    /// follower not heard from, else the records after what it holds (from memory, or
    /// read back from the log); with the ids of the requests whose records it carries
    /// from memory.
    async fn fill(&self, plan: Vec<Planned>) -> (Vec<ShipBatch>, Vec<u64>) {
        let mut budget = self.inner.settings.batch_bytes;
        let mut batches = Vec::with_capacity(plan.len());
        let mut requests = Vec::new();
        for planned in plan {
            let Some(known) = planned.from else {
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
                Some(run) => {
                    requests.extend(run.requests);
                    run.records
                }
                None => match self
                    .inner
                    .node
                    .read_partition(planned.partition, known, budget)
                    .await
                {
                    Ok((records, _)) => {
                        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
                        requests.extend(recent.requests_of(&records));
                        records
                    }
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
        requests.sort_unstable();
        requests.dedup();
        (batches, requests)
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
                        let known = leading.quorum.follower_last(follower);
                        // Appended answers may come out of order; within an epoch a
                        // follower's log only shrinks by a repair, which waits for them.
                        let last = match outcome {
                            ShipOutcome::Appended { .. } => last.max(known.unwrap_or(0)),
                            _ => last,
                        };
                        moved |= known != Some(last);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(partition: PartitionId, from: Option<u64>, last: u64) -> Planned {
        Planned {
            partition,
            epoch: 1,
            history: vec![(1, 1)],
            from,
            last,
        }
    }

    #[test]
    fn a_backlog_or_a_probe_goes_beside_shipments_in_flight_and_a_trickle_waits() {
        let trickle = [planned(0, Some(10), 12), planned(1, Some(3), 4)];
        assert!(!worth_pipelining(&trickle));
        let backlog = [
            planned(0, Some(0), PIPELINE_MIN_RECORDS - 1),
            planned(1, Some(7), 8),
        ];
        assert!(worth_pipelining(&backlog));
        let probe = [planned(0, Some(10), 12), planned(2, None, 40)];
        assert!(worth_pipelining(&probe));
    }
}
