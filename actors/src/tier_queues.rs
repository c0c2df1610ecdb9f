//! The tier queues actor: the thin driver of [`TierScheduler`] and
//! [`DegradationPolicy`] between intake and the validator pool.
//!
//! ```text
//! Intake ──Enqueue(tier, job)──► TierQueues ──(≤ max_in_flight jobs)──► validators ──► store
//!                                   ▲  four bounded queues, weighted, deadline-aware
//!                                   └── Done (a job's credit dropped: its store slot is free)
//! ```
//!
//! Submissions wait here, by tier, instead of piling up behind the store: at most
//! `max_in_flight` jobs (the store-writes bulkhead's capacity) are past this point, so under overload the queue that grows is
//! this one, where realtime work is served first (weight 1000 to batch's 1), an entry
//! past its deadline is answered `Timeout` and never processed, and a full tier is
//! answered `Overloaded{tier, retry_after_ms}` at once. A timer drains expired entries
//! and feeds the queue fill and the process's CPU use into the degradation policy,
//! whose level is published for intake to shed by (no message per request).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::{ErrorCode, Item, Tier};
use ractor::factory::FactoryMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::policy::degradation::{DegradationConfig, DegradationPolicy, Level, LevelChange, Load};
use crate::policy::tier_queue::{Popped, Rejected, TierQueueConfig, TierScheduler};
use crate::store_actor::BatchOutcome;
use crate::supervisor::Children;
use crate::telemetry::{DEGRADATION_CHANGES, DEGRADATION_LEVEL, TIER_QUEUE_DEPTH};
use crate::validator_pool::{Submission, ValidateJob};

/// How often expired entries are answered and the load is observed.
pub const TICK: Duration = Duration::from_millis(50);
/// Most submissions handed to the validators in one message.
pub const MAX_DISPATCH: usize = 64;

/// The retry hint for a submission shed by the degradation level.
pub const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The answer to a submission of `tier` shed before it was queued (by the level, or a
/// full store-writes bulkhead).
pub fn shed(tier: Tier) -> ErrorCode {
    ErrorCode::Overloaded {
        tier,
        retry_after_ms: SHED_RETRY_AFTER.as_millis() as u64,
    }
}

/// Where the degradation level is published; shared by every incarnation.
pub type LevelBoard = Arc<watch::Sender<Level>>;

/// A new board starting at `Normal`.
pub fn new_level_board() -> LevelBoard {
    Arc::new(watch::channel(Level::Normal).0)
}

/// Slots past the tier queues, held by submissions until they no longer need the
/// pipeline: dropping a credit (by the store once the writes' bulkhead slots are free,
/// or on a path that answers the callers before the store) tells the tier queues its
/// slots are free. One message per credit, however many slots it holds: a batch of
/// submissions travels with one credit and is released with one message.
pub struct Credit {
    tiers: ActorRef<TierMsg>,
    slots: usize,
}

impl Credit {
    /// Splits one slot off this credit (for one submission of its batch); `None` once
    /// no slot is left.
    pub fn split_one(&mut self) -> Option<Credit> {
        if self.slots == 0 {
            return None;
        }
        self.slots -= 1;
        Some(Credit {
            tiers: self.tiers.clone(),
            slots: 1,
        })
    }

    /// Merges credits into one per tier-queues incarnation, so that releasing them
    /// costs one message each instead of one per slot.
    pub fn merge(credits: Vec<Credit>) -> Vec<Credit> {
        let mut merged: Vec<Credit> = Vec::new();
        for mut credit in credits {
            let slots = std::mem::take(&mut credit.slots);
            match merged
                .iter_mut()
                .find(|m| m.tiers.get_id() == credit.tiers.get_id())
            {
                Some(m) => m.slots += slots,
                None => merged.push(Credit {
                    tiers: credit.tiers.clone(),
                    slots,
                }),
            }
        }
        merged
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        if self.slots > 0 {
            // Fails only if the tier queues are gone; their successor starts with no
            // slots used.
            let _ = self.tiers.cast(TierMsg::Done { slots: self.slots });
        }
    }
}

impl std::fmt::Debug for Credit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credit({})", self.slots)
    }
}

/// A submission waiting for a validator: its items, outcomes already decided for other
/// positions of the caller's batch, and where the answer goes.
pub struct TierJob {
    /// The items to validate and store.
    pub items: Vec<Item>,
    /// `(index in the caller's batch, outcome)`, sorted by index.
    pub rejected: Vec<(usize, ErrorCode)>,
    /// The caller.
    pub reply: RpcReplyPort<BatchOutcome>,
}

impl TierJob {
    fn fail(self, error: ErrorCode) {
        let _ = self.reply.send(Err(error));
    }
}

/// What `chorus ctl queues` shows.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueStatus {
    /// Entries waiting per tier, most urgent first, with each tier's capacity.
    pub tiers: Vec<(Tier, usize, usize)>,
    /// Jobs past the queues (validating or storing).
    pub in_flight: usize,
    /// The most jobs allowed past the queues.
    pub max_in_flight: usize,
    /// The degradation level, and whether an operator pinned it.
    pub level: Level,
    /// Whether the level is set by hand.
    pub manual: bool,
}

/// An operator's command to the degradation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DegradeCommand {
    /// Pin the level.
    Set(Level),
    /// Let the load decide again.
    Auto,
}

/// Messages of the tier queues actor.
pub enum TierMsg {
    /// Queue a submission in its tier.
    Enqueue {
        /// The most urgent tier among the submission's items.
        tier: Tier,
        /// The submission.
        job: TierJob,
    },
    /// Internal: a credit was dropped; its slots are free.
    Done {
        /// How many.
        slots: usize,
    },
    /// Internal: hand ready jobs to the validators (scheduled once per burst of
    /// arrivals and releases, so that what arrived meanwhile travels as one batch).
    Pump,
    /// Internal: answer expired entries and observe the load.
    Tick,
    /// The queues' state.
    Status {
        /// Where it goes.
        reply: RpcReplyPort<QueueStatus>,
    },
    /// Pin the degradation level or return it to automatic; answers the level.
    Degrade {
        /// What to do.
        command: DegradeCommand,
        /// The level afterwards.
        reply: RpcReplyPort<Level>,
    },
}

/// Arguments of the tier queues actor.
pub struct TierQueuesArgs {
    /// Where the validator pool is published.
    pub children: watch::Receiver<Children>,
    /// The four queues.
    pub tiers: TierQueueConfig,
    /// Thresholds of the degradation levels.
    pub degradation: DegradationConfig,
    /// Most jobs past the queues at once.
    pub max_in_flight: usize,
    /// Where the degradation level is published.
    pub level: LevelBoard,
}

/// The tier queues actor.
#[derive(Debug, Default)]
pub struct TierQueues;

/// Its state.
pub struct TierQueuesState {
    children: watch::Receiver<Children>,
    scheduler: TierScheduler<TierJob>,
    degradation: DegradationPolicy,
    level: LevelBoard,
    in_flight: usize,
    max_in_flight: usize,
    cpu: CpuSampler,
    /// The timer sending `Tick`; aborted when the actor stops.
    ticker: tokio::task::JoinHandle<()>,
    /// Whether a `Pump` is already in the mailbox.
    pump_scheduled: bool,
}

impl TierQueuesState {
    /// Asks for a `Pump` after the messages already in the mailbox, unless one is due.
    fn schedule_pump(&mut self, myself: &ActorRef<TierMsg>) {
        if !self.pump_scheduled {
            self.pump_scheduled = true;
            // Fails only while the actor stops; nothing is left to pump then.
            let _ = myself.cast(TierMsg::Pump);
        }
    }

    /// Hands jobs to the validators while slots are free, in batches of at most
    /// [`MAX_DISPATCH`]; expired ones get `Timeout`.
    fn pump(&mut self, myself: &ActorRef<TierMsg>) {
        let mut batch = Vec::new();
        while self.in_flight + batch.len() < self.max_in_flight {
            match self.scheduler.pop(Instant::now()) {
                None => break,
                Some(Popped::Expired { item, tier }) => {
                    debug!(tier = tier.as_str(), "deadline passed in the queue");
                    item.fail(ErrorCode::Timeout);
                }
                Some(Popped::Ready { item, .. }) => {
                    batch.push(item);
                    if batch.len() == MAX_DISPATCH {
                        self.dispatch(std::mem::take(&mut batch), myself);
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.dispatch(batch, myself);
        }
    }

    /// Sends jobs, most urgent first, to the validators as one message with a
    /// [`Credit`] for their slots.
    fn dispatch(&mut self, jobs: Vec<TierJob>, myself: &ActorRef<TierMsg>) {
        let Some(validators) = self.children.borrow().validators.clone() else {
            for job in jobs {
                job.fail(ErrorCode::Unavailable {
                    reason: "validators restarting".into(),
                });
            }
            return;
        };
        self.in_flight += jobs.len();
        let credit = Credit {
            tiers: myself.clone(),
            slots: jobs.len(),
        };
        let submissions = jobs
            .into_iter()
            .map(
                |TierJob {
                     items,
                     rejected,
                     reply,
                 }| Submission::new(items, rejected, reply),
            )
            .collect();
        let job = ValidateJob::new(submissions, credit);
        if let Err(e) = validators.dispatch((), job)
            && let MessagingErr::SendErr(FactoryMessage::Dispatch(mut refused)) = *e
        {
            // Answering drops the credit, which frees the slots again.
            refused.msg.fail(ErrorCode::Unavailable {
                reason: "validators restarting".into(),
            });
        }
    }

    /// Answers expired entries and moves the degradation level with the load.
    fn tick(&mut self, myself: &ActorRef<TierMsg>) {
        let now = Instant::now();
        for (tier, job) in self.scheduler.drain_expired(now) {
            debug!(tier = tier.as_str(), "deadline passed in the queue");
            job.fail(ErrorCode::Timeout);
        }
        let load = self.scheduler.load(self.cpu.sample(now));
        if let Some(change) = self.degradation.observe(now, load) {
            self.publish_level(change, load);
        }
        self.pump(myself);
        // Sampled every tick rather than set on every pump (four lookups a request).
        self.publish_depths();
    }

    fn publish_level(&mut self, change: LevelChange, load: Load) {
        warn!(
            from = change.from.as_str(),
            to = change.to.as_str(),
            queue_fill = load.queue_fill,
            batch_fill = load.batch_fill,
            cpu = load.cpu,
            "degradation level changed"
        );
        metrics::counter!(DEGRADATION_CHANGES, "to" => change.to.as_str()).increment(1);
        metrics::gauge!(DEGRADATION_LEVEL).set(level_number(change.to));
        self.level.send_replace(change.to);
    }

    fn publish_depths(&self) {
        for tier in Tier::ALL {
            metrics::gauge!(TIER_QUEUE_DEPTH, "tier" => tier.as_str())
                .set(self.scheduler.len(tier) as f64);
        }
    }

    fn status(&self) -> QueueStatus {
        QueueStatus {
            tiers: Tier::ALL
                .iter()
                .map(|t| {
                    (
                        *t,
                        self.scheduler.len(*t),
                        self.scheduler.config().tier(*t).capacity.get(),
                    )
                })
                .collect(),
            in_flight: self.in_flight,
            max_in_flight: self.max_in_flight,
            level: self.degradation.level(),
            manual: self.degradation.is_manual(),
        }
    }
}

fn level_number(level: Level) -> f64 {
    match level {
        Level::Normal => 0.0,
        Level::ShedOptional => 1.0,
        Level::CriticalOnly => 2.0,
    }
}

impl Actor for TierQueues {
    type Msg = TierMsg;
    type State = TierQueuesState;
    type Arguments = TierQueuesArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ticker = myself.send_interval(TICK, || TierMsg::Tick);
        let degradation = DegradationPolicy::new(args.degradation)?;
        args.level.send_replace(degradation.level());
        Ok(TierQueuesState {
            children: args.children,
            scheduler: TierScheduler::new(args.tiers)?,
            degradation,
            level: args.level,
            in_flight: 0,
            max_in_flight: args.max_in_flight.max(1),
            cpu: CpuSampler::new(Instant::now()),
            ticker,
            pump_scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TierMsg::Enqueue { tier, job } => {
                if let Err(Rejected {
                    tier,
                    retry_after,
                    item,
                }) = state.scheduler.push(Instant::now(), tier, job)
                {
                    item.fail(ErrorCode::Overloaded {
                        tier,
                        retry_after_ms: retry_after.as_millis().max(1) as u64,
                    });
                }
                state.schedule_pump(&myself);
            }
            TierMsg::Done { slots } => {
                state.in_flight = state.in_flight.saturating_sub(slots);
                state.schedule_pump(&myself);
            }
            TierMsg::Pump => {
                state.pump_scheduled = false;
                state.pump(&myself);
            }
            TierMsg::Tick => state.tick(&myself),
            TierMsg::Status { reply } => {
                let _ = reply.send(state.status());
            }
            TierMsg::Degrade { command, reply } => {
                match command {
                    DegradeCommand::Set(level) => {
                        if let Some(change) = state.degradation.set(level) {
                            state.publish_level(change, state.scheduler.load(f64::NAN));
                        }
                    }
                    DegradeCommand::Auto => state.degradation.auto(),
                }
                let _ = reply.send(state.degradation.level());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        // Everything still queued is answered; jobs in flight answer themselves (and
        // their credits' `Done` finds this actor gone, which is harmless).
        let now = Instant::now();
        while let Some(popped) = state.scheduler.pop(now) {
            let job = match popped {
                Popped::Ready { item, .. } | Popped::Expired { item, .. } => item,
            };
            job.fail(ErrorCode::Unavailable {
                reason: "node stopping".into(),
            });
        }
        Ok(())
    }
}

/// The process's CPU use, from `/proc/self/stat`, as a fraction of all cores.
struct CpuSampler {
    last: Option<(Instant, u64)>,
    cores: f64,
    ticks_per_sec: f64,
}

/// Clock ticks per second of `/proc` times (USER_HZ; 100 on Linux).
const USER_HZ: f64 = 100.0;
/// Shortest interval over which CPU use is measured (shorter is too coarse at 100 Hz).
const CPU_WINDOW: Duration = Duration::from_millis(500);

impl CpuSampler {
    fn new(now: Instant) -> Self {
        CpuSampler {
            last: process_ticks().map(|t| (now, t)),
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            ticks_per_sec: USER_HZ,
        }
    }

    /// CPU use since the last sample, 0.0..=1.0; NaN when unknown (ignored by the policy).
    fn sample(&mut self, now: Instant) -> f64 {
        let Some((then, ticks)) = self.last else {
            return f64::NAN;
        };
        let elapsed = now.duration_since(then);
        if elapsed < CPU_WINDOW {
            return f64::NAN;
        }
        let Some(current) = process_ticks() else {
            return f64::NAN;
        };
        self.last = Some((now, current));
        let used = current.saturating_sub(ticks) as f64 / self.ticks_per_sec;
        used / (elapsed.as_secs_f64() * self.cores)
    }
}

/// utime + stime of this process, in clock ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_ticks() {
        assert!(process_ticks().is_some());
    }
}
