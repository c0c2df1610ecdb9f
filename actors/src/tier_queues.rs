//! The tier queues actor: the thin driver of [`TierStage`] between intake and the
//! validator pool.
//!
//! ```text
//! Intake ──Enqueue(submission)──► TierQueues ──(≤ max_in_flight jobs)──► validators ──► store
//!                                    ▲  four bounded queues, weighted, deadline-aware
//!                                    └── Done (a job's credit dropped: its store slot is free)
//! ```
//!
//! The stage decides; this actor moves messages: it answers refusals and expired
//! entries, hands dispatched jobs to the validators with a [`Credit`] for their slots,
//! samples the process's CPU use every [`TICK`], and publishes the degradation level
//! for admission to shed by (no message per request).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::{ErrorCode, Tier};
use ractor::factory::FactoryMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::core::scheduler::{Step, TierStage};
use crate::messages::{Children, Credit, Submission, TierMsg, ValidateJob};
use crate::pipeline::LivePolicy;
use crate::policy::degradation::{Level, LevelChange, Load};
use crate::published_door::DoorBoard;
use crate::telemetry::{DEGRADATION_CHANGES, DEGRADATION_LEVEL, TIER_QUEUE_DEPTH};

/// How often expired entries are answered and the load is observed.
pub const TICK: Duration = Duration::from_millis(50);

/// Where the degradation level is published; shared by every incarnation.
pub type LevelBoard = Arc<watch::Sender<Level>>;

/// A new board starting at `Normal`.
pub fn new_level_board() -> LevelBoard {
    Arc::new(watch::channel(Level::Normal).0)
}

/// Arguments of the tier queues actor.
pub struct TierQueuesArgs {
    /// Where the validator pool is published.
    pub children: watch::Receiver<Children>,
    /// The four queues and the degradation thresholds in force, changed while the
    /// node runs.
    pub policy: watch::Receiver<LivePolicy>,
    /// Most jobs past the queues at once.
    pub max_in_flight: usize,
    /// Where the degradation level is published.
    pub level: LevelBoard,
    /// Where the stage's door is published.
    pub door: Arc<DoorBoard>,
}

/// The tier queues actor.
#[derive(Debug, Default)]
pub struct TierQueues;

/// Its state.
pub struct TierQueuesState {
    children: watch::Receiver<Children>,
    stage: TierStage<Submission>,
    level: LevelBoard,
    door: Arc<DoorBoard>,
    cpu: CpuSampler,
    /// The timer sending `Tick`; aborted when the actor stops.
    ticker: tokio::task::JoinHandle<()>,
    /// Whether a `Pump` is already in the mailbox.
    pump_scheduled: bool,
    /// Tier and degradation settings changed while the node runs.
    policy: watch::Receiver<LivePolicy>,
}

impl TierQueuesState {
    /// Takes the tier and degradation settings published since the last message.
    fn follow_policy(&mut self) {
        if !self.policy.has_changed().unwrap_or(false) {
            return;
        }
        let policy = *self.policy.borrow_and_update();
        if let Err(e) = self.stage.reconfigure(policy.tiers, policy.degradation) {
            warn!(error = %e, "tier settings refused; the previous ones stay");
        }
    }

    /// Asks for a `Pump` after the messages already in the mailbox, unless one is due.
    fn schedule_pump(&mut self, myself: &ActorRef<TierMsg>) {
        if !self.pump_scheduled {
            self.pump_scheduled = true;
            // Fails only while the actor stops; nothing is left to pump then.
            let _ = myself.cast(TierMsg::Pump);
        }
    }

    /// Carries out the stage's steps until it has none.
    fn pump(&mut self, myself: &ActorRef<TierMsg>) {
        let now = Instant::now();
        while let Some(step) = self.stage.poll(now) {
            match step {
                Step::Expired(tier, mut job) => {
                    debug!(tier = tier.as_str(), "deadline passed in the queue");
                    job.fail(ErrorCode::Timeout);
                }
                Step::Dispatch(jobs) => self.dispatch(jobs, myself),
            }
        }
        self.door.publish(&self.stage);
    }

    /// Sends jobs to the validators as one message with a [`Credit`] for their slots
    /// (dropping it, on any path, gives the slots back).
    fn dispatch(&mut self, jobs: Vec<Submission>, myself: &ActorRef<TierMsg>) {
        let credit = Credit::new(myself.clone(), jobs.len());
        let mut job = ValidateJob::new(jobs, credit);
        let Some(validators) = self.children.borrow().validators.clone() else {
            job.fail(validators_unavailable());
            return;
        };
        if let Err(e) = validators.dispatch((), job)
            && let MessagingErr::SendErr(FactoryMessage::Dispatch(mut refused)) = *e
        {
            refused.msg.fail(validators_unavailable());
        }
    }

    /// Answers expired entries and moves the degradation level with the load.
    fn tick(&mut self, myself: &ActorRef<TierMsg>) {
        let now = Instant::now();
        let tick = self.stage.handle_tick(now, self.cpu.sample(now));
        for (tier, mut job) in tick.expired {
            debug!(tier = tier.as_str(), "deadline passed in the queue");
            job.fail(ErrorCode::Timeout);
        }
        if let Some((change, load)) = tick.change {
            self.publish_level(change, load);
        }
        self.pump(myself);
        // Sampled every tick rather than set on every pump (four lookups a request).
        for tier in Tier::ALL {
            metrics::gauge!(TIER_QUEUE_DEPTH, "tier" => tier.as_str())
                .set(self.stage.queued(tier) as f64);
        }
    }

    fn publish_level(&mut self, change: LevelChange, load: Load) {
        warn!(
            from = change.from.as_str(),
            to = change.to.as_str(),
            critical_wait = load.critical_wait,
            // Unknown (no sample yet, or an operator's command): left out, not NaN.
            cpu = (!load.cpu.is_nan()).then_some(load.cpu),
            "degradation level changed"
        );
        metrics::counter!(DEGRADATION_CHANGES, "to" => change.to.as_str()).increment(1);
        metrics::gauge!(DEGRADATION_LEVEL).set(level_number(change.to));
        self.level.send_replace(change.to);
    }
}

fn validators_unavailable() -> ErrorCode {
    ErrorCode::Unavailable {
        reason: "validators restarting".into(),
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
        mut args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let policy = *args.policy.borrow_and_update();
        let stage = TierStage::new(policy.tiers, policy.degradation, args.max_in_flight)?;
        args.level.send_replace(stage.level());
        let ticker = myself.send_interval(TICK, || TierMsg::Tick);
        Ok(TierQueuesState {
            children: args.children,
            stage,
            level: args.level,
            door: args.door,
            cpu: CpuSampler::new(Instant::now()),
            ticker,
            pump_scheduled: false,
            policy: args.policy,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.follow_policy();
        match message {
            TierMsg::Enqueue(submission) => {
                let (tier, arrived) = (submission.tier, submission.arrived);
                if let Err((mut submission, error)) =
                    state
                        .stage
                        .handle_enqueue(Instant::now(), arrived, tier, submission)
                {
                    submission.fail(error);
                }
                state.schedule_pump(&myself);
            }
            TierMsg::Done { slots } => {
                state.stage.handle_done(Instant::now(), slots);
                state.schedule_pump(&myself);
            }
            TierMsg::Pump => {
                state.pump_scheduled = false;
                state.pump(&myself);
            }
            TierMsg::Tick => state.tick(&myself),
            TierMsg::Status { reply } => {
                let _ = reply.send(state.stage.status());
            }
            TierMsg::Degrade { command, reply } => {
                if let Some((change, load)) = state.stage.degrade(command) {
                    state.publish_level(change, load);
                }
                let _ = reply.send(state.stage.level());
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
        state.door.open_all();
        // Everything still queued is answered; jobs in flight answer themselves (and
        // their credits' `Done` finds this actor gone, which is harmless).
        for mut job in state.stage.drain(Instant::now()) {
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
