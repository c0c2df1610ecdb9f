//! Who leads each partition, kept in step with the ring: this node takes the lead of
//! the partitions it owns (promises from a write quorum, catch-up from the replica with
//! the newest log, then a new epoch), steps down from those it no longer owns, and
//! keeps one shipper per other member.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_actors::store::{Promise, ShipBatch, ShipOutcome};
use chorus_protocol::{ErrorCode, NodeId, PartitionId};

use futures_util::future::join_all;
use rand::Rng;
use tracing::{debug, info, warn};

use super::quorum::PartitionQuorum;
use super::{Leading, Part, REPLICATION_LEADING, REPLICATION_TAKEOVERS, Replicator, shipper};
use crate::cluster::routing::{Forward, ForwardReply};

/// How often the leadership of every partition is checked against the ring without a
/// ring change (retries after failed takeovers).
const EVALUATE_INTERVAL: Duration = Duration::from_millis(500);
/// The shortest wait before a failed takeover is tried again; up to twice as long, at
/// random, so that two would-be leaders do not keep fencing each other.
const RETRY_AFTER: Duration = Duration::from_millis(300);

/// One partition this node is about to lead.
struct Candidate {
    partition: PartitionId,
    epoch: u64,
    /// The voting replicas besides this node: they promise, and count toward W.
    followers: Vec<NodeId>,
    /// Replicas being streamed the partition: shipped to, never counted.
    learners: Vec<NodeId>,
    /// Live replicas of the placement before the last change that are replicas no
    /// more: asked for their logs, never counted (see [`Claim::witnesses`]).
    witnesses: Vec<NodeId>,
}

/// A partition to take the lead of.
pub(super) struct Claim {
    partition: PartitionId,
    /// The highest epoch seen elsewhere.
    seen: u64,
    /// Its other voters.
    followers: Vec<NodeId>,
    /// Its learners.
    learners: Vec<NodeId>,
    /// Voters of the placement before the last change that it dropped and that are
    /// live: a record committed by the leader and such a replica just before the
    /// change (a newcomer turning warm, a cordon, a leave) may be on no voter of the
    /// new set but the leader, so a new leader takes their logs into account too.
    witnesses: Vec<NodeId>,
}

/// Follows the ring until replication stops.
pub(super) async fn run(replicator: Replicator) {
    let mut ring = replicator.inner.cluster.subscribe();
    loop {
        let candidates = replicator.evaluate();
        if !candidates.is_empty() {
            replicator.spawn(take_lead(replicator.clone(), candidates));
        }
        tokio::select! {
            _ = replicator.inner.stop.cancelled() => return,
            changed = ring.changed() => if changed.is_err() { return },
            _ = replicator.inner.reevaluate.notified() => {}
            _ = tokio::time::sleep(EVALUATE_INTERVAL) => {}
        }
    }
}

impl Replicator {
    /// Compares each partition's leadership with the ring: steps down where this node
    /// is no longer the owner, updates the followers where the replica set changed,
    /// starts shippers for new members, and returns the partitions to take the lead of
    /// (marked as being taken over).
    fn evaluate(&self) -> Vec<Claim> {
        if self.standing_down() {
            return Vec::new();
        }
        let view = self.inner.cluster.ring();
        let previous = self.inner.cluster.previous_ring();
        // A member still warming up learns its partitions; it never leads one.
        let warming = self.inner.cluster.warming();
        let me = &self.inner.me;
        let now = Instant::now();
        let mut candidates = Vec::new();
        let mut stepping_down = Vec::new();
        let mut led = 0usize;
        {
            let mut parts = self.parts();
            for (p, part) in parts.iter_mut().enumerate() {
                let partition = p as PartitionId;
                if partition >= view.ring.partitions() {
                    break;
                }
                let should_lead = !warming && self.named_leader(&view, partition);
                let followers: Vec<NodeId> = view
                    .replicas(partition)
                    .filter(|r| *r != me)
                    .cloned()
                    .collect();
                let learners: Vec<NodeId> = view
                    .learners(partition)
                    .filter(|r| *r != me)
                    .cloned()
                    .collect();
                match part {
                    Part::Leading(leading) if !should_lead => {
                        stepping_down.push((partition, leading.epoch))
                    }
                    Part::Leading(leading) => {
                        led += 1;
                        // A follower down is not counted on: back, it is probed for
                        // where it stands before its acknowledgements count again.
                        for down in followers.iter().filter(|f| !view.live.contains(*f)) {
                            leading.quorum.forget(down);
                        }
                        if leading.followers != followers || leading.learners != learners {
                            for gone in leading
                                .followers
                                .iter()
                                .chain(&leading.learners)
                                .filter(|f| !followers.contains(f) && !learners.contains(f))
                            {
                                leading.quorum.forget(gone);
                            }
                            leading.quorum.set_learners(learners.iter().cloned());
                            leading.followers = followers;
                            leading.learners = learners;
                        }
                    }
                    Part::Idle { seen, not_before }
                        if should_lead && not_before.is_none_or(|t| now >= t) =>
                    {
                        let witnesses = previous
                            .as_ref()
                            .filter(|prev| partition < prev.ring.partitions())
                            .map(|prev| {
                                prev.replicas(partition)
                                    .filter(|r| {
                                        *r != me
                                            && view.live.contains(*r)
                                            && !followers.contains(r)
                                            && !learners.contains(r)
                                    })
                                    .cloned()
                                    .collect()
                            })
                            .unwrap_or_default();
                        candidates.push(Claim {
                            partition,
                            seen: *seen,
                            followers,
                            learners,
                            witnesses,
                        });
                        *part = Part::TakingOver;
                    }
                    Part::Idle { .. } | Part::TakingOver => {}
                }
            }
        }
        for (partition, epoch) in stepping_down {
            self.step_down(partition, epoch, "no longer the partition's owner");
        }
        metrics::gauge!(REPLICATION_LEADING).set(led as f64);
        self.keep_shippers(view.ring.members().iter().filter(|m| *m != me).cloned());
        candidates
    }

    /// One shipper per member in `others`, each told to look at every partition again;
    /// shippers of members gone are dropped (they notice and stop).
    fn keep_shippers(&self, others: impl Iterator<Item = NodeId>) {
        let others: HashSet<NodeId> = others.collect();
        let mut shippers = self
            .inner
            .shippers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shippers.retain(|node, _| others.contains(node));
        for node in others {
            match shippers.get(&node) {
                // Replica sets may have changed: every partition is looked at again.
                Some(handle) => handle.rescan(),
                None => {
                    let handle = Arc::new(shipper::Handle::default());
                    shippers.insert(node.clone(), Arc::clone(&handle));
                    self.spawn(shipper::run(self.clone(), node, handle));
                }
            }
        }
    }

    /// A takeover of `partition` failed: it waits a while, then is tried again with an
    /// epoch above `seen`.
    fn takeover_failed(&self, partition: PartitionId, seen: u64, why: &str) {
        debug!(partition, seen, why, "takeover failed");
        let jitter = rand::rng().random_range(0..=RETRY_AFTER.as_millis() as u64);
        let mut parts = self.parts();
        if let Some(part @ Part::TakingOver) = parts.get_mut(usize::from(partition)) {
            *part = Part::Idle {
                seen,
                not_before: Some(Instant::now() + RETRY_AFTER + Duration::from_millis(jitter)),
            };
        }
        drop(parts);
        self.takeovers_ended();
    }
}

/// Takes the lead of `candidates` (partition, highest epoch seen elsewhere, followers).
async fn take_lead(replicator: Replicator, candidates: Vec<Claim>) {
    let node = &replicator.inner.node;
    let candidates: Vec<Candidate> = candidates
        .into_iter()
        .map(|claim| {
            let (epochs, _) = node.partition_state(claim.partition);
            Candidate {
                partition: claim.partition,
                epoch: epochs.promised.max(claim.seen) + 1,
                followers: claim.followers,
                learners: claim.learners,
                witnesses: claim.witnesses,
            }
        })
        .collect();
    let local = match node.promise(epochs_of(&candidates)).await {
        Ok(local) if local.len() == candidates.len() => local,
        other => {
            warn!(answer = ?other.err(), "promising epochs locally failed");
            all_failed(&replicator, &candidates, "local promise");
            return;
        }
    };
    let remote = ask_promises(&replicator, &candidates).await;
    let mut finishing = Vec::new();
    for (at, (candidate, mine)) in candidates.into_iter().zip(local).enumerate() {
        let mut promises: Vec<(NodeId, Promise)> = Vec::new();
        let mut seen = mine.epochs.promised;
        for (peer, answers) in &remote {
            if let Some(promise) = answers.get(&at) {
                seen = seen.max(promise.epochs.promised);
                if promise.accepted {
                    promises.push((peer.clone(), promise.clone()));
                }
            }
        }
        // Only voters count toward the quorum; the others' logs are still weighed.
        let accepted = promises
            .iter()
            .filter(|(peer, _)| candidate.followers.contains(peer))
            .count()
            + usize::from(mine.accepted);
        if !mine.accepted || accepted < replicator.inner.settings.write_quorum {
            replicator.takeover_failed(candidate.partition, seen, "no write quorum promised");
            continue;
        }
        promises.push((replicator.inner.me.clone(), mine));
        finishing.push((candidate, promises));
    }
    // Candidates whose newest log is elsewhere catch up from it, all those of one
    // source together: one fetch and one durable append per round, not per partition.
    let mut ready = Vec::new();
    let mut by_source: BTreeMap<NodeId, Vec<(Candidate, Promise)>> = BTreeMap::new();
    for (candidate, promises) in finishing {
        match newest_elsewhere(&replicator, &promises) {
            Some((source, best)) => by_source
                .entry(source.clone())
                .or_default()
                .push((candidate, best.clone())),
            None => ready.push(candidate),
        }
    }
    let caught_up = join_all(
        by_source
            .into_iter()
            .map(|(source, behind)| catch_up(&replicator, source, behind)),
    )
    .await;
    ready.extend(caught_up.into_iter().flatten());
    open_epochs(&replicator, ready).await;
}

/// Each candidate's partition and proposed epoch.
fn epochs_of(candidates: &[Candidate]) -> Vec<(PartitionId, u64)> {
    candidates.iter().map(|c| (c.partition, c.epoch)).collect()
}

/// Every candidate's takeover failed, for the same reason.
fn all_failed(replicator: &Replicator, candidates: &[Candidate], why: &str) {
    for candidate in candidates {
        replicator.takeover_failed(candidate.partition, candidate.epoch, why);
    }
}

/// Asks each follower, learner and witness to promise the epochs of the candidates it
/// replicates or replicated; per peer, its promises by the candidate's position.
async fn ask_promises(
    replicator: &Replicator,
    candidates: &[Candidate],
) -> Vec<(NodeId, BTreeMap<usize, Promise>)> {
    let mut asks: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
    for (at, candidate) in candidates.iter().enumerate() {
        let asked = candidate
            .followers
            .iter()
            .chain(&candidate.learners)
            .chain(&candidate.witnesses);
        for peer in asked {
            asks.entry(peer.clone()).or_default().push(at);
        }
    }
    let peers = &replicator.inner.peers;
    join_all(asks.into_iter().map(|(peer, positions)| async move {
        let partitions = positions
            .iter()
            .map(|&at| (candidates[at].partition, candidates[at].epoch))
            .collect();
        let answers = match peers.forward(&peer, Forward::Promise { partitions }).await {
            Ok(ForwardReply::Promised(promises)) if promises.len() == positions.len() => {
                positions.into_iter().zip(promises).collect()
            }
            Ok(other) => {
                warn!(%peer, answer = ?other, "unexpected answer to a promise request");
                BTreeMap::new()
            }
            Err(error) => {
                debug!(%peer, %error, "promise request failed");
                BTreeMap::new()
            }
        };
        (peer, answers)
    }))
    .await
}

/// The replica with the newest log among the promises (highest epoch of its last
/// record, then last sequence), if it is newer than this node's.
fn newest_elsewhere<'a>(
    replicator: &Replicator,
    promises: &'a [(NodeId, Promise)],
) -> Option<(&'a NodeId, &'a Promise)> {
    let key = |p: &Promise| (p.epochs.epoch_at(p.last), p.last);
    let me = &replicator.inner.me;
    let mine = promises.iter().find(|(n, _)| n == me).map(|(_, p)| key(p));
    promises
        .iter()
        .max_by_key(|(_, p)| key(p))
        .filter(|(source, best)| source != me && Some(key(best)) > mine)
        .map(|(source, best)| (source, best))
}

/// Opens the candidates' epochs (one durable flush for all) and starts leading those
/// no newer epoch was promised for meanwhile.
async fn open_epochs(replicator: &Replicator, candidates: Vec<Candidate>) {
    if candidates.is_empty() {
        return;
    }
    let node = &replicator.inner.node;
    let begun = match node.begin_epochs(epochs_of(&candidates)).await {
        Ok(begun) if begun.len() == candidates.len() => begun,
        other => {
            warn!(answer = ?other.err(), "opening epochs failed");
            all_failed(replicator, &candidates, "epoch");
            return;
        }
    };
    let me = &replicator.inner.me;
    let write_quorum = replicator.inner.settings.write_quorum;
    let mut followers = std::collections::BTreeSet::new();
    let mut led = 0;
    for (candidate, begun) in candidates.into_iter().zip(begun) {
        let partition = candidate.partition;
        if !begun {
            replicator.takeover_failed(partition, candidate.epoch, "a newer epoch was promised");
            continue;
        }
        let (epochs, last) = node.partition_state(partition);
        let mut parts = replicator.parts();
        let Some(part @ Part::TakingOver) = parts.get_mut(usize::from(partition)) else {
            continue;
        };
        if replicator.standing_down() {
            *part = Part::Idle {
                seen: candidate.epoch,
                not_before: None,
            };
            continue;
        }
        followers.extend(candidate.followers.iter().cloned());
        followers.extend(candidate.learners.iter().cloned());
        let mut quorum = PartitionQuorum::new(me.clone(), write_quorum, last);
        quorum.set_learners(candidate.learners.iter().cloned());
        *part = Part::Leading(Box::new(Leading {
            epoch: candidate.epoch,
            staged: last,
            history: epochs.history,
            followers: candidate.followers,
            learners: candidate.learners,
            quorum,
        }));
        led += 1;
    }
    metrics::counter!(REPLICATION_TAKEOVERS).increment(led);
    replicator.takeovers_ended();
    info!(partitions = led, "leading");
    replicator.wake(&followers);
}

/// Makes this node's log of each partition of `behind` the newest one's, `source`'s:
/// truncates what diverges from its history, then fetches by sequence up to the last
/// sequence it promised with. Returns the candidates caught up; the others failed.
async fn catch_up(
    replicator: &Replicator,
    source: NodeId,
    behind: Vec<(Candidate, Promise)>,
) -> Vec<Candidate> {
    let node = &replicator.inner.node;
    let batch = |candidate: &Candidate, best: &Promise, prev, records| ShipBatch {
        partition: candidate.partition,
        epoch: candidate.epoch,
        history: best.epochs.history.clone(),
        prev,
        records,
    };
    // First the histories alone: each partition truncates what diverges.
    let syncs = behind
        .iter()
        .map(|(c, best)| batch(c, best, 0, Vec::new()))
        .collect();
    let mut mine: Vec<Option<u64>> = match appended(node.accept_shipment(syncs).await, behind.len())
    {
        Ok(lasts) => lasts,
        Err(why) => {
            debug!(%why, "syncing histories failed");
            vec![None; behind.len()]
        }
    };
    let started = mine.clone();
    let max_bytes = replicator.inner.settings.batch_bytes;
    let mut done: Vec<bool> = behind
        .iter()
        .zip(&mine)
        .map(|((_, best), m)| m.is_none_or(|m| m >= best.last))
        .collect();
    while done.iter().any(|d| !d) {
        let asked: Vec<usize> = (0..behind.len()).filter(|&i| !done[i]).collect();
        let fetch = Forward::Fetch {
            partitions: asked
                .iter()
                .map(|&i| (behind[i].0.partition, mine[i].unwrap_or_default()))
                .collect(),
            max_bytes: max_bytes as u32,
        };
        let records = match replicator.inner.peers.forward(&source, fetch).await {
            Ok(ForwardReply::Records(records)) => records,
            other => {
                debug!(%source, answer = ?other, "fetch failed");
                for &i in &asked {
                    mine[i] = None;
                }
                break;
            }
        };
        let bytes: usize = records.iter().map(|r| r.body.len()).sum();
        let mut by_partition: BTreeMap<PartitionId, Vec<_>> = BTreeMap::new();
        for record in records {
            by_partition
                .entry(record.partition)
                .or_default()
                .push(record);
        }
        let mut shipped = Vec::new();
        let mut batches = Vec::new();
        for &i in &asked {
            let (candidate, best) = &behind[i];
            match by_partition.remove(&candidate.partition) {
                Some(records) => {
                    shipped.push(i);
                    batches.push(batch(candidate, best, mine[i].unwrap_or_default(), records));
                }
                // Nothing more where the page was not full: the source has no more.
                None if bytes < max_bytes => done[i] = true,
                None => {}
            }
        }
        if batches.is_empty() {
            break;
        }
        match appended(node.accept_shipment(batches).await, shipped.len()) {
            Ok(lasts) => {
                for (i, last) in shipped.into_iter().zip(lasts) {
                    match last {
                        Some(last) if Some(last) > mine[i] => {
                            mine[i] = Some(last);
                            done[i] = last >= behind[i].1.last;
                        }
                        Some(_) => done[i] = true,
                        None => {
                            mine[i] = None;
                            done[i] = true;
                        }
                    }
                }
            }
            Err(why) => {
                debug!(%why, "appending fetched records failed");
                for i in shipped {
                    mine[i] = None;
                    done[i] = true;
                }
            }
        }
    }
    let mut caught = Vec::new();
    for (((candidate, _), last), from) in behind.into_iter().zip(mine).zip(started) {
        match last {
            Some(to) => {
                debug!(partition = candidate.partition, %source, from = ?from, to, "caught up");
                caught.push(candidate);
            }
            None => replicator.takeover_failed(
                candidate.partition,
                candidate.epoch,
                "catching up failed",
            ),
        }
    }
    info!(%source, partitions = caught.len(), "caught up");
    caught
}

/// The last sequence of each of `count` batches of an accepted shipment; `None` for
/// a batch that was fenced.
fn appended(
    outcome: Result<Vec<ShipOutcome>, ErrorCode>,
    count: usize,
) -> Result<Vec<Option<u64>>, String> {
    let outcomes = outcome.map_err(|e| e.to_string())?;
    if outcomes.len() != count {
        return Err(format!("{} outcomes for {count} batches", outcomes.len()));
    }
    Ok(outcomes
        .into_iter()
        .map(|o| match o {
            ShipOutcome::Appended { last } | ShipOutcome::Behind { last } => Some(last),
            ShipOutcome::Fenced { .. } => None,
        })
        .collect())
}
