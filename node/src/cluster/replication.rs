//! Replication of the partition log: each partition's replica set is its first
//! `replication_factor` members of the ring's placement (owner first); the owner leads.
//!
//! ```text
//!  write ─► store actor ─ admit(p)? ─► sequences assigned ─► leader's log sync
//!                          shipping(records) ─► shipper per follower ─Ship─► follower
//!                          appended(records) ─► quorum (the leader's own copy)  │
//!                          commit(p, seq)  ◄── quorum ◄── Appended { last } ◄───┘
//! ```
//!
//! - **Followers write while the leader syncs.** A group's records go to the shippers
//!   as soon as their sequences are assigned; the leader's copy counts toward the write
//!   quorum once its own sync returns, like any follower's. If that append fails, the
//!   store reuses the sequences, so the leader steps down from those partitions and a
//!   new epoch settles what the followers hold.
//! - **Epochs fence.** A node that becomes a partition's leader first proposes an epoch
//!   above every one it has seen; replicas promise it ([`Forward::Promise`]) and from
//!   then on refuse records from a lower epoch. With a write quorum W of a majority, two
//!   nodes that both believe they lead cannot both gather W acknowledgements.
//! - **Catch up before serving.** Among the replicas that promised, the new leader takes
//!   the log of the one with the newest (epoch, sequence), truncating what its own log
//!   holds past the point where that log's history diverges, and fetches the rest by
//!   sequence ([`Forward::Fetch`]); only then does it open the epoch and serve. Every
//!   acknowledged record is on W replicas and the promises come from W, so the new
//!   leader sees each of them.
//! - **Followers converge.** Every shipment carries the leader's epoch history; a
//!   follower truncates records of an epoch the leader superseded (an old leader's
//!   unacknowledged tail) and answers `Behind` when it lacks what precedes the
//!   shipment, and its shipper then sends from where it stands, reading the leader's
//!   log by sequence. A replica that comes back thus catches up before it counts
//!   toward W again.
//!
//! - **Learners.** A member warming up (see [`super::standing`]) is a learner of the
//!   partitions it will hold: the leader ships to it as to a follower and tracks where
//!   it stands, but never counts it toward W, and a new leader weighs its log without
//!   counting its promise, so an empty newcomer can neither make a record look durable
//!   nor lose one in a takeover. When
//!   it turns warm the replica sets flip to include it as a voter, its copy already
//!   within a shipment or two of the leader's. A record committed by the leader and a
//!   replica that the flip drops, in those last moments before the newcomer received
//!   it, rests on the leader and that dropped replica until the newcomer's next
//!   shipment: so a new leader also asks the live replicas the last change of placement
//!   dropped (*witnesses*) for their logs, weighing them as it weighs the voters' but
//!   not counting them toward the quorum.
//!
//! - **Copies are compared.** [`anti_entropy`] compares each follower's copy of a
//!   partition at rest with the leader's, by digests of ranges of sequences, and has a
//!   copy that differs cut where it starts to differ and shipped again.
//!
//! - **Copies left behind are shed.** A member that a change of placement leaves out of
//!   a partition's replica set drops its copy once the copy has sat unchanged for the
//!   down grace and the leader holds as far ([`shed`]).
//!
//! [`quorum`] is the pure part: which sequence a quorum holds, and who waits for it.
//! [`shipper`] sends to one follower; [`takeover`] runs a partition's change of leader.

pub mod anti_entropy;
pub mod digest;
pub mod handoff;
pub mod quorum;
mod recent;
pub mod shed;
mod shipper;
mod takeover;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chorus_actors::store::ReplicaRecord;
use chorus_actors::{CommitFuture, NodeHandle, Replication, SettledFuture};
use chorus_protocol::{ErrorCode, NodeId, PartitionId};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::routing::Forwarder;
use super::state::{ClusterState, RingView};
use quorum::PartitionQuorum;

/// Writes answered after a write quorum held them.
pub const REPLICATION_COMMITS: &str = "chorus_replication_commits_total";
/// Writes refused because no write quorum held them in time.
pub const REPLICATION_COMMIT_TIMEOUTS: &str = "chorus_replication_commit_timeouts_total";
/// Partitions this node took the lead of.
pub const REPLICATION_TAKEOVERS: &str = "chorus_replication_takeovers_total";
/// Requests that waited for a takeover, by `outcome`: `settled` (it ended in time) or
/// `bound` (the wait reached its bound; the request is refused as before).
pub const REPLICATION_REQUESTS_HELD: &str = "chorus_replication_requests_held_total";
/// Records shipped to followers.
pub const REPLICATION_RECORDS_SHIPPED: &str = "chorus_replication_records_shipped_total";
/// Partitions this node leads now.
pub const REPLICATION_LEADING: &str = "chorus_replication_partitions_led";

/// How replication runs on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// Replicas of each partition (the leader included).
    pub factor: usize,
    /// Replicas that must hold a record before its writer is answered.
    pub write_quorum: usize,
    /// Longest a writer waits for the quorum before `Unavailable`.
    pub commit_timeout: Duration,
    /// Most record bytes in one shipment or fetch.
    pub batch_bytes: usize,
    /// Most record bytes kept in memory for shippers (older ones are read back from the
    /// log).
    pub recent_bytes: usize,
    /// Time between two anti-entropy checks (one follower's copy of one partition);
    /// `None`: no anti-entropy.
    pub anti_entropy_interval: Option<Duration>,
    /// Bytes per second that streams to followers catching up share; `None`: no cap.
    pub handoff_bytes_per_sec: Option<u64>,
    /// Most shipments to one follower awaiting its answer (at least 1).
    pub shipments_in_flight: usize,
    /// How long a copy of a partition this node no longer replicates is kept, unchanged,
    /// before it is shed (see [`shed`]).
    pub shed_after: Duration,
    /// The longest a request waits for this node to finish taking the lead of its
    /// partition before it is refused (see [`Replication::settled`]).
    pub leader_change_hold: Duration,
}

impl ReplicationSettings {
    /// `factor` replicas with a majority as the write quorum.
    pub fn majority(factor: usize) -> Self {
        ReplicationSettings {
            factor,
            write_quorum: factor / 2 + 1,
            commit_timeout: Duration::from_secs(5),
            batch_bytes: 1 << 20,
            recent_bytes: 64 << 20,
            anti_entropy_interval: Some(Duration::from_millis(200)),
            handoff_bytes_per_sec: Some(64 << 20),
            shipments_in_flight: 4,
            shed_after: Duration::from_secs(300),
            leader_change_hold: LEADER_CHANGE_HOLD,
        }
    }
}

/// Waiters of one partition past which those that gave up are dropped.
const PRUNE_WAITERS_ABOVE: usize = 4_096;

/// A writer waiting for its record's quorum.
type CommitWaiter = oneshot::Sender<Result<Vec<NodeId>, ErrorCode>>;

/// One partition as this node sees it.
enum Part {
    /// Another node leads it, or nobody yet.
    Idle {
        /// The highest epoch seen refused or promised elsewhere: the next proposal
        /// goes above it.
        seen: u64,
        /// No takeover before this instant (after a failed one).
        not_before: Option<Instant>,
    },
    /// This node is becoming its leader.
    TakingOver,
    /// This node leads it.
    Leading(Box<Leading>),
}

/// A partition this node leads.
struct Leading {
    epoch: u64,
    /// The last sequence handed to the shippers: at or past the quorum's `last` (the
    /// last durable here), as records ship while the leader syncs.
    staged: u64,
    /// The epoch history followers adopt with each shipment.
    history: Vec<(u64, u64)>,
    /// The other voting replicas.
    followers: Vec<NodeId>,
    /// Replicas being streamed the partition before they vote.
    learners: Vec<NodeId>,
    quorum: PartitionQuorum<CommitWaiter>,
}

impl Leading {
    /// Whether `node` is shipped this partition (a follower or a learner).
    fn ships_to(&self, node: &NodeId) -> bool {
        self.followers.contains(node) || self.learners.contains(node)
    }

    /// Every replica this partition is shipped to.
    fn shipped_to(&self) -> impl Iterator<Item = &NodeId> {
        self.followers.iter().chain(&self.learners)
    }
}

/// The replication state shared by the write path, the shippers and the takeover task.
struct Inner {
    me: NodeId,
    settings: ReplicationSettings,
    node: NodeHandle,
    cluster: ClusterState,
    peers: Arc<dyn Forwarder>,
    parts: Mutex<Vec<Part>>,
    recent: Mutex<recent::Recent>,
    /// Each follower's shipper.
    shippers: Mutex<HashMap<NodeId, Arc<shipper::Handle>>>,
    /// Wakes the takeover task (a fencing refusal, a ring change).
    reevaluate: Notify,
    /// What anti-entropy found since start.
    anti_entropy: anti_entropy::Counts,
    /// The cap catch-up shipments share.
    bandwidth: Option<Mutex<handoff::Bandwidth>>,
    /// Catch-up shipped so far.
    progress: Mutex<handoff::Progress>,
    /// This node is stopping: it leads nothing from now on (see
    /// [`Replicator::stand_down`]).
    standing_down: AtomicBool,
    stop: CancellationToken,
    /// Every task replication runs, so that a stopping node can wait for them to end.
    tasks: TaskTracker,
    /// Woken when takeovers end (led or failed): requests held meanwhile look again.
    settled: Notify,
}

/// Replication on this node; cheap to clone.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("me", &self.inner.me)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Replicator {
    /// Starts replication: the task that takes the lead of the partitions this node
    /// owns, and a shipper per follower. Stops with `stop`.
    pub fn start(
        settings: ReplicationSettings,
        node: NodeHandle,
        cluster: ClusterState,
        peers: Arc<dyn Forwarder>,
        stop: CancellationToken,
    ) -> Replicator {
        let partitions = usize::from(node.partitions());
        let parts = (0..partitions)
            .map(|_| Part::Idle {
                seen: 0,
                not_before: None,
            })
            .collect();
        metrics::counter!(REPLICATION_COMMITS).increment(0);
        metrics::counter!(REPLICATION_COMMIT_TIMEOUTS).increment(0);
        metrics::counter!(REPLICATION_TAKEOVERS).increment(0);
        for outcome in ["settled", "bound"] {
            metrics::counter!(REPLICATION_REQUESTS_HELD, "outcome" => outcome).increment(0);
        }
        metrics::counter!(REPLICATION_RECORDS_SHIPPED).increment(0);
        metrics::gauge!(REPLICATION_LEADING).set(0.0);
        let bandwidth = settings
            .handoff_bytes_per_sec
            .map(|cap| Mutex::new(handoff::Bandwidth::new(cap, Instant::now())));
        metrics::counter!(handoff::HANDOFF_BYTES).increment(0);
        metrics::counter!(handoff::HANDOFF_THROTTLED).increment(0);
        let replicator = Replicator {
            inner: Arc::new(Inner {
                me: cluster.node().clone(),
                recent: Mutex::new(recent::Recent::new(settings.recent_bytes)),
                settings,
                node,
                cluster,
                peers,
                parts: Mutex::new(parts),
                shippers: Mutex::new(HashMap::new()),
                reevaluate: Notify::new(),
                anti_entropy: anti_entropy::Counts::default(),
                bandwidth,
                progress: Mutex::new(handoff::Progress::default()),
                standing_down: AtomicBool::new(false),
                stop,
                tasks: TaskTracker::new(),
                settled: Notify::new(),
            }),
        };
        replicator.spawn(takeover::run(replicator.clone()));
        replicator.spawn(publish_lag(replicator.clone()));
        if let Some(interval) = replicator.inner.settings.anti_entropy_interval {
            replicator.spawn(anti_entropy::run(replicator.clone(), interval));
        }
        replicator.spawn(shed::run(replicator.clone()));
        replicator
    }

    /// Runs `task` as one of replication's own, awaited by [`Replicator::stopped`].
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(task);
    }

    /// Waits until every task of replication has ended; they end once the stop token
    /// given at start is cancelled (a takeover or a call in flight first finishes, each
    /// bounded by its own timeout).
    pub async fn stopped(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// The links replication ships over (a drain streams over them too).
    pub fn peers(&self) -> Arc<dyn Forwarder> {
        Arc::clone(&self.inner.peers)
    }

    /// The settings replication runs with.
    pub fn settings(&self) -> &ReplicationSettings {
        &self.inner.settings
    }

    /// Whether this node serves reads of `partition` now: it leads it and has caught
    /// up, so a listing from here holds every acknowledged item.
    pub fn serving(&self, partition: PartitionId) -> Result<(), ErrorCode> {
        match self.parts().get(usize::from(partition)) {
            Some(Part::Leading(_)) => Ok(()),
            Some(Part::TakingOver) => Err(changing_leader(partition)),
            _ => {
                let members = self.inner.cluster.ring().live.len();
                let quorum = self.inner.settings.write_quorum;
                Err(ErrorCode::Unavailable {
                    reason: if members < quorum {
                        format!("{members} of the {quorum} replicas a write needs are up")
                    } else {
                        format!("this node does not lead partition {partition} now")
                    },
                })
            }
        }
    }

    /// The streams from this node to followers that are behind (`chorus ctl handoff`).
    pub fn handoff(&self) -> handoff::HandoffReport {
        let view = self.inner.cluster.ring();
        let mut lags: BTreeMap<NodeId, handoff::FollowerLag> = BTreeMap::new();
        let (mut done, mut left, mut records_left) = (0u32, 0u32, 0u64);
        for part in self.parts().iter() {
            let Part::Leading(leading) = part else {
                continue;
            };
            let last = leading.quorum.last();
            for follower in leading.shipped_to() {
                let lag = lags
                    .entry(follower.clone())
                    .or_insert_with(|| handoff::FollowerLag {
                        follower: follower.to_string(),
                        ..handoff::FollowerLag::default()
                    });
                lag.partitions += 1;
                match leading.quorum.follower_last(follower) {
                    Some(known) if known >= last => done += 1,
                    known => {
                        let behind = known.map_or(0, |k| last - k);
                        lag.behind += 1;
                        lag.records_behind += behind;
                        records_left += behind;
                        left += 1;
                    }
                }
            }
        }
        // Followers down are not streamed to: leave them out rather than show them stuck.
        let followers: Vec<handoff::FollowerLag> = lags
            .into_iter()
            .filter(|(node, _)| view.live.contains(node))
            .map(|(_, lag)| lag)
            .collect();
        let mut progress = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let rate = progress.rate(Instant::now());
        let (bytes_left, eta_secs) =
            handoff::estimate(records_left, progress.mean_record_bytes(), rate);
        handoff::HandoffReport {
            followers,
            pairs_done: done,
            pairs_left: left,
            records_left,
            bytes_left,
            bytes_done: progress.bytes,
            rate_bytes_per_sec: rate as u64,
            eta_secs,
            limit_bytes_per_sec: self.inner.settings.handoff_bytes_per_sec,
            throttled: progress.throttled,
            drain: None,
        }
    }

    /// What anti-entropy found on this node since start.
    pub fn anti_entropy(&self) -> anti_entropy::Found {
        self.inner.anti_entropy.read()
    }

    /// The partitions this node leads, with their epochs.
    pub fn leading(&self) -> BTreeMap<PartitionId, u64> {
        self.parts()
            .iter()
            .enumerate()
            .filter_map(|(p, part)| match part {
                Part::Leading(leading) => Some((p as PartitionId, leading.epoch)),
                _ => None,
            })
            .collect()
    }

    fn parts(&self) -> MutexGuard<'_, Vec<Part>> {
        self.inner.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shipper of `follower`, if it has one.
    fn shipper(&self, follower: &NodeId) -> Option<Arc<shipper::Handle>> {
        let shippers = self
            .inner
            .shippers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shippers.get(follower).cloned()
    }

    /// Wakes the shippers of `followers` to look at every partition (a change of
    /// leadership, of a replica set, a repair).
    fn wake(&self, followers: &BTreeSet<NodeId>) {
        let shippers = self
            .inner
            .shippers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for follower in followers {
            if let Some(shipper) = shippers.get(follower) {
                shipper.rescan();
            }
        }
    }

    /// Wakes the shippers of the followers in `fresh` to ship the partitions named
    /// there, which were given new records.
    fn wake_for(&self, fresh: BTreeMap<NodeId, Vec<PartitionId>>) {
        let shippers = self
            .inner
            .shippers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (follower, partitions) in fresh {
            if let Some(shipper) = shippers.get(&follower) {
                shipper.fresh(partitions);
            }
        }
    }

    /// This node is stopping: steps down from every partition it leads and takes the
    /// lead of none again. Its writers waiting for a quorum are answered at once
    /// (`Unavailable`, changing leader) rather than when the commit timeout ends them,
    /// since the other replicas, told the node is leaving, take its partitions over and
    /// fence its epochs; they retry at the next leader.
    pub fn stand_down(&self) {
        self.inner.standing_down.store(true, Ordering::SeqCst);
        let leading: Vec<(PartitionId, u64)> = self
            .parts()
            .iter()
            .enumerate()
            .filter_map(|(p, part)| match part {
                Part::Leading(leading) => Some((p as PartitionId, leading.epoch)),
                _ => None,
            })
            .collect();
        if !leading.is_empty() {
            info!(
                partitions = leading.len(),
                "stopping: stepping down from every partition"
            );
        }
        for (partition, epoch) in leading {
            self.step_down(partition, epoch, "this node is stopping");
        }
    }

    /// Whether this node is taking, or is about to take, the lead of any of
    /// `partitions`: a takeover is under way, or the ring names this node the leader
    /// and a takeover is still to begin (its links coming up, a retry after a failed
    /// attempt).
    fn taking_over(&self, partitions: &[PartitionId]) -> bool {
        let view = self.inner.cluster.ring();
        let may_lead = !self.standing_down() && !self.inner.cluster.warming();
        let parts = self.parts();
        partitions.iter().any(|&p| match parts.get(usize::from(p)) {
            Some(Part::TakingOver) => true,
            Some(Part::Idle { .. }) => {
                may_lead && p < view.ring.partitions() && self.named_leader(&view, p)
            }
            _ => false,
        })
    }

    /// Whether `view` names this node the leader of `partition` and a write quorum of
    /// its replicas is live: it should lead it (unless warming up or stopping).
    fn named_leader(&self, view: &RingView, partition: PartitionId) -> bool {
        let live = view
            .replicas(partition)
            .filter(|r| view.live.contains(*r))
            .count();
        view.leader(partition) == &self.inner.me && live >= self.inner.settings.write_quorum
    }

    /// Wakes the requests held while takeovers were under way.
    fn takeovers_ended(&self) {
        self.inner.settled.notify_waiters();
    }

    /// Whether this node is stopping (see [`Replicator::stand_down`]).
    fn standing_down(&self) -> bool {
        self.inner.standing_down.load(Ordering::SeqCst)
    }

    /// Stops leading `partition` (fenced, or no longer its owner): its writers are told.
    fn step_down(&self, partition: PartitionId, seen: u64, why: &str) {
        let mut parts = self.parts();
        let Some(part) = parts.get_mut(usize::from(partition)) else {
            return;
        };
        if let Part::Leading(leading) = part {
            info!(partition, epoch = leading.epoch, seen, why, "stepping down");
            for waiter in leading.quorum.take_waiters() {
                let _ = waiter.send(Err(changing_leader(partition)));
            }
            metrics::gauge!(REPLICATION_LEADING).decrement(1.0);
        }
        *part = Part::Idle {
            seen,
            not_before: None,
        };
        drop(parts);
        self.inner.reevaluate.notify_one();
    }
}

/// Keeps the lag gauges current until replication stops.
async fn publish_lag(replicator: Replicator) {
    loop {
        let report = replicator.handoff();
        metrics::gauge!(handoff::HANDOFF_RECORDS_BEHIND).set(report.records_left as f64);
        metrics::gauge!(handoff::HANDOFF_COPIES_BEHIND).set(f64::from(report.pairs_left));
        tokio::select! {
            _ = replicator.inner.stop.cancelled() => return,
            _ = tokio::time::sleep(handoff::LAG_INTERVAL) => {}
        }
    }
}

/// Each partition's highest sequence among `records`.
fn lasts(records: &[ReplicaRecord]) -> BTreeMap<PartitionId, u64> {
    let mut lasts: BTreeMap<PartitionId, u64> = BTreeMap::new();
    for record in records {
        let last = lasts.entry(record.partition).or_default();
        *last = (*last).max(record.sequence);
    }
    lasts
}

/// The longest a request waits by default for this node to finish taking the lead of
/// its partition before it is refused: a takeover is promises, a catch-up and a new
/// epoch, well under a second on a healthy cluster, and one failed attempt is retried
/// within a second. A cluster member holds for half its forward timeout instead, so
/// that a forwarded request held to the bound still has time to be written before its
/// caller gives up on it.
pub const LEADER_CHANGE_HOLD: Duration = Duration::from_secs(1);

/// Waits while `busy` holds, looking again each time `changed` is notified, until
/// `deadline`; whether `busy` ended before it.
async fn hold_while(
    changed: &Notify,
    deadline: tokio::time::Instant,
    busy: impl Fn() -> bool,
) -> bool {
    loop {
        // Registered before the check, so that a change between the check and the wait
        // still wakes this waiter.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !busy() {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return false;
        }
    }
}

/// The refusal of a request for a partition whose leader is changing.
fn changing_leader(partition: PartitionId) -> ErrorCode {
    ErrorCode::Unavailable {
        reason: format!("partition {partition} is changing leader; retry shortly"),
    }
}

impl Replication for Replicator {
    fn admit(&self, partition: PartitionId) -> Result<(), ErrorCode> {
        self.serving(partition)
    }

    fn settled(&self, partitions: Vec<PartitionId>) -> SettledFuture {
        let replicator = self.clone();
        Box::pin(async move {
            if !replicator.taking_over(&partitions) {
                return;
            }
            let deadline =
                tokio::time::Instant::now() + replicator.inner.settings.leader_change_hold;
            let settled = hold_while(&replicator.inner.settled, deadline, || {
                replicator.taking_over(&partitions)
            })
            .await;
            let outcome = if settled { "settled" } else { "bound" };
            metrics::counter!(REPLICATION_REQUESTS_HELD, "outcome" => outcome).increment(1);
        })
    }

    fn shipping(&self, records: &[ReplicaRecord], requests: &[Option<u64>]) {
        let lasts = lasts(records);
        let requests = requests.iter().copied().chain(std::iter::repeat(None));
        self.inner
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(records.iter().cloned().zip(requests));
        let mut fresh: BTreeMap<NodeId, Vec<PartitionId>> = BTreeMap::new();
        let mut parts = self.parts();
        for (partition, last) in lasts {
            if let Some(Part::Leading(leading)) = parts.get_mut(usize::from(partition)) {
                leading.staged = leading.staged.max(last);
                for follower in leading.shipped_to() {
                    fresh.entry(follower.clone()).or_default().push(partition);
                }
            }
        }
        drop(parts);
        self.wake_for(fresh);
    }

    fn appended(&self, records: &[ReplicaRecord]) {
        let mut parts = self.parts();
        for (partition, last) in lasts(records) {
            if let Some(Part::Leading(leading)) = parts.get_mut(usize::from(partition)) {
                for (waiter, holders) in leading.quorum.appended(last) {
                    let _ = waiter.send(Ok(holders));
                }
            }
        }
    }

    fn failed(&self, partitions: Vec<PartitionId>) {
        let partitions: BTreeSet<PartitionId> = partitions.into_iter().collect();
        for partition in partitions {
            let seen = match self.parts().get(usize::from(partition)) {
                Some(Part::Leading(leading)) => leading.epoch,
                _ => continue,
            };
            self.step_down(partition, seen, "appending to the log failed");
        }
    }

    fn commit(&self, waits: Vec<(PartitionId, u64)>) -> CommitFuture {
        let mut receivers = Vec::with_capacity(waits.len());
        {
            let mut parts = self.parts();
            for (partition, sequence) in waits {
                let (tx, rx) = oneshot::channel();
                match parts.get_mut(usize::from(partition)) {
                    Some(Part::Leading(leading)) => {
                        if let Err((tx, holders)) = leading.quorum.wait(sequence, tx) {
                            let _ = tx.send(Ok(holders));
                        }
                        // Writers that gave up (their commit timed out) leave their
                        // senders behind while no quorum forms: drop them now and then.
                        if leading.quorum.waiting() > PRUNE_WAITERS_ABOVE {
                            leading.quorum.retain_waiters(|w| !w.is_closed());
                        }
                    }
                    _ => {
                        let _ = tx.send(Err(changing_leader(partition)));
                    }
                }
                receivers.push(rx);
            }
        }
        let timeout = self.inner.settings.commit_timeout;
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut outcomes = Vec::with_capacity(receivers.len());
            for rx in receivers {
                let outcome = match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => Err(ErrorCode::Unavailable {
                        reason: "replication stopped".into(),
                    }),
                    Err(_) => {
                        metrics::counter!(REPLICATION_COMMIT_TIMEOUTS).increment(1);
                        Err(ErrorCode::Unavailable {
                            reason: format!(
                                "no write quorum held the item within {} ms",
                                timeout.as_millis()
                            ),
                        })
                    }
                };
                if outcome.is_ok() {
                    metrics::counter!(REPLICATION_COMMITS).increment(1);
                }
                outcomes.push(outcome);
            }
            debug!(writes = outcomes.len(), "commit waits done");
            outcomes
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_held_request_goes_on_when_the_takeover_ends_and_no_later_than_the_bound() {
        let changed = Arc::new(Notify::new());
        let busy = Arc::new(AtomicBool::new(true));
        let start = tokio::time::Instant::now();
        let deadline = start + LEADER_CHANGE_HOLD;
        let (flip_changed, flip_busy) = (Arc::clone(&changed), Arc::clone(&busy));
        tokio::spawn(async move {
            // A wake with nothing settled yet: the waiter looks, and waits on.
            tokio::time::sleep(Duration::from_millis(100)).await;
            flip_changed.notify_waiters();
            tokio::time::sleep(Duration::from_millis(200)).await;
            flip_busy.store(false, Ordering::SeqCst);
            flip_changed.notify_waiters();
        });
        assert!(hold_while(&changed, deadline, || busy.load(Ordering::SeqCst)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        // Never settled: released at the bound, to be refused as before.
        busy.store(true, Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        let settled = hold_while(&changed, start + LEADER_CHANGE_HOLD, || {
            busy.load(Ordering::SeqCst)
        })
        .await;
        assert!(!settled);
        assert_eq!(start.elapsed(), LEADER_CHANGE_HOLD);

        // Not taking over: no wait at all.
        busy.store(false, Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        let settled = hold_while(&changed, start + LEADER_CHANGE_HOLD, || {
            busy.load(Ordering::SeqCst)
        })
        .await;
        assert!(settled);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
