//! The node supervisor: spawns the store, the validator pool (a ractor factory) and
//! the intake actor as linked children and
//! restarts a child that fails, within a restart intensity ([`RestartIntensity`]).
//!
//! The current children are published on a `watch` channel ([`Children`]); callers
//! read it per request, so after a restart they reach the new actor, and while a child
//! is down they get `Unavailable` at once instead of waiting.

use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::ErrorCode;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::core::admission::STORE_DEPENDENCY;
use crate::enrichment::{Enricher, EnricherError};
use crate::intake::{IntakeActor, IntakeArgs};
use crate::messages::{Children, StoreMsg};
use crate::pipeline::{LivePolicy, PipelineConfig};
use crate::published_breaker::{BreakerBoard, new_board};
use crate::published_bulkhead::BulkheadBoard;
use crate::published_door::DoorBoard;
use crate::restart::{RestartDecision, RestartIntensity, RestartPolicy};
use crate::store::Store;
use crate::store_actor::{StoreActor, StoreArgs};
use crate::tier_queues::{LevelBoard, TierQueues, TierQueuesArgs, new_level_board};
use crate::validation::Validator;
use crate::validator_pool::{self, ReviewTask, Reviewer, ValidatorFactory};

/// How long shutdown waits for a child to stop.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Child {
    /// The store actor.
    Store,
    /// The intake actor.
    Intake,
    /// The validator pool.
    Validators,
    /// The tier queues.
    Tiers,
}

impl Child {
    fn name(self) -> &'static str {
        match self {
            Child::Store => "store",
            Child::Intake => "intake",
            Child::Validators => "validators",
            Child::Tiers => "tiers",
        }
    }
}

/// Messages of the supervisor.
pub enum SupervisorMsg {
    /// Internal: a restart's backoff elapsed.
    Restart(Child),
    /// Stop intake, make every queued write durable, stop the store, then stop.
    Shutdown {
        /// `Ok` once everything accepted is durable and the children have stopped.
        reply: RpcReplyPort<Result<(), ErrorCode>>,
    },
}

// A local-only message under ractor's `cluster` feature (see `crate::messages`).
#[cfg(feature = "cluster")]
impl ractor::Message for SupervisorMsg {}

/// Arguments of the supervisor.
pub struct SupervisorArgs {
    /// The opened store, handed to every incarnation of the store actor.
    pub store: Arc<Store>,
    /// Where the current children are published.
    pub children: watch::Sender<Children>,
    /// Restart limits per child.
    pub policy: RestartPolicy,
    /// The write pipeline's settings.
    pub pipeline: PipelineConfig,
    /// Where the store's circuit breaker publishes its state (outlives store restarts).
    pub store_breaker: BreakerBoard,
    /// Where the degradation level is published (outlives tier queue restarts).
    pub level: LevelBoard,
    /// Where the tier stage's door is published (outlives tier queue restarts).
    pub door: Arc<DoorBoard>,
    /// Where the store-writes bulkhead's occupancy is published (outlives store restarts).
    pub store_writes: Arc<BulkheadBoard>,
    /// The enrichment client with its breaker and bulkhead, if a URL is configured
    /// (shared by every validator incarnation, and by the handle for `chorus ctl`).
    pub enricher: Option<Arc<Enricher>>,
    /// Where the settings that change while the node runs are published (outlives
    /// every restart, so a restarted stage takes the settings in force).
    pub live: watch::Sender<LivePolicy>,
}

impl SupervisorArgs {
    /// Arguments with fresh boards (store breaker closed, level normal) and the
    /// enrichment client the pipeline configures, if any.
    pub fn new(
        store: Arc<Store>,
        children: watch::Sender<Children>,
        pipeline: PipelineConfig,
        policy: RestartPolicy,
    ) -> Result<Self, EnricherError> {
        let enricher = Enricher::from_config(&pipeline.enrichment)?;
        Ok(SupervisorArgs {
            store,
            children,
            policy,
            store_breaker: new_board(),
            level: new_level_board(),
            door: DoorBoard::new(),
            store_writes: BulkheadBoard::new(STORE_DEPENDENCY, pipeline.store_writes),
            enricher,
            live: watch::Sender::new(pipeline.live()),
            pipeline,
        })
    }
}

/// The node supervisor actor.
#[derive(Debug, Default)]
pub struct NodeSupervisor;

/// The supervisor's state.
pub struct SupervisorState {
    store: Arc<Store>,
    pipeline: PipelineConfig,
    store_breaker: BreakerBoard,
    store_writes: Arc<BulkheadBoard>,
    /// The content policy, compiled once and shared by every validator incarnation.
    validator: Arc<Validator>,
    /// The enrichment client and its breaker, shared by every validator incarnation.
    enricher: Option<Arc<Enricher>>,
    children: watch::Sender<Children>,
    store_restarts: RestartIntensity,
    intake_restarts: RestartIntensity,
    validator_restarts: RestartIntensity,
    tier_restarts: RestartIntensity,
    /// Where the degradation level is published.
    level: LevelBoard,
    /// Where the tier stage's door is published.
    door: Arc<DoorBoard>,
    /// Where the settings that change while the node runs are published.
    live: watch::Sender<LivePolicy>,
    /// Pending restart timers, aborted on shutdown.
    timers: Vec<JoinHandle<Result<(), ractor::MessagingErr<SupervisorMsg>>>>,
    /// The after-ack review queue, shared by every validator incarnation.
    reviewer: Option<Reviewer>,
    /// The review task, closed at shutdown (what is queued is reviewed before the
    /// final flush) and aborted if the supervisor stops any other way.
    review_task: Option<ReviewTask>,
    shutting_down: bool,
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        child: Child,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let cell: ActorCell = myself.get_cell();
        match child {
            Child::Store => {
                let mut args = StoreArgs::new(
                    self.store.clone(),
                    self.pipeline.store_breaker,
                    self.store_breaker.clone(),
                    Arc::clone(&self.store_writes),
                );
                args.replication = self.pipeline.replication.clone();
                args.policy = Some(self.live.subscribe());
                let (actor, _) = Actor::spawn_linked(None, StoreActor, args, cell).await?;
                self.children.send_modify(|c| c.store = Some(actor));
            }
            Child::Intake => {
                let args = IntakeArgs {
                    children: self.children.subscribe(),
                    policy: self.live.subscribe(),
                    store_breaker: self.store_breaker.subscribe(),
                    level: self.level.subscribe(),
                };
                let (actor, _) = Actor::spawn_linked(None, IntakeActor, args, cell).await?;
                self.children.send_modify(|c| c.intake = Some(actor));
            }
            Child::Validators => {
                let Some(reviewer) = self.reviewer.clone() else {
                    return Err("the review queue is closed: shutting down".into());
                };
                let args = validator_pool::factory_args(
                    Arc::clone(&self.validator),
                    self.children.subscribe(),
                    self.pipeline.validator_workers,
                    reviewer,
                    self.enricher.clone(),
                    self.level.subscribe(),
                );
                let (actor, _) =
                    Actor::spawn_linked(None, ValidatorFactory::default(), args, cell).await?;
                self.children.send_modify(|c| c.validators = Some(actor));
            }
            Child::Tiers => {
                let args = TierQueuesArgs {
                    children: self.children.subscribe(),
                    policy: self.live.subscribe(),
                    max_in_flight: self.pipeline.max_in_flight(),
                    level: self.level.clone(),
                    door: Arc::clone(&self.door),
                };
                let (actor, _) = Actor::spawn_linked(None, TierQueues, args, cell).await?;
                self.children.send_modify(|c| c.tiers = Some(actor));
            }
        }
        Ok(())
    }

    /// Which child a cell is, if it is a current one.
    fn which(&self, cell: &ActorCell) -> Option<Child> {
        let id = cell.get_id();
        let children = self.children.borrow();
        if children.store.as_ref().is_some_and(|a| a.get_id() == id) {
            Some(Child::Store)
        } else if children.intake.as_ref().is_some_and(|a| a.get_id() == id) {
            Some(Child::Intake)
        } else if children
            .validators
            .as_ref()
            .is_some_and(|a| a.get_id() == id)
        {
            Some(Child::Validators)
        } else if children.tiers.as_ref().is_some_and(|a| a.get_id() == id) {
            Some(Child::Tiers)
        } else {
            None
        }
    }

    /// A child is down: unpublish it and schedule its restart, or give up.
    fn child_down(&mut self, child: Child, myself: &ActorRef<SupervisorMsg>) {
        self.children.send_modify(|c| match child {
            Child::Store => c.store = None,
            Child::Intake => c.intake = None,
            Child::Validators => c.validators = None,
            Child::Tiers => c.tiers = None,
        });
        let intensity = match child {
            Child::Store => &mut self.store_restarts,
            Child::Intake => &mut self.intake_restarts,
            Child::Validators => &mut self.validator_restarts,
            Child::Tiers => &mut self.tier_restarts,
        };
        match intensity.handle_failure(Instant::now()) {
            RestartDecision::RestartAfter(delay) => {
                warn!(
                    child = child.name(),
                    delay_ms = delay.as_millis() as u64,
                    "restarting child"
                );
                self.timers.retain(|t| !t.is_finished());
                self.timers
                    .push(myself.send_after(delay, move || SupervisorMsg::Restart(child)));
            }
            RestartDecision::GiveUp => {
                error!(
                    child = child.name(),
                    "child failed too often; node supervisor stopping"
                );
                self.shutting_down = true;
                self.children.send_replace(Children::default());
                myself.stop_children(Some("restart intensity exceeded".into()));
                myself.stop(Some(format!("{} failed too often", child.name())));
            }
        }
    }

    async fn shutdown(&mut self, myself: &ActorRef<SupervisorMsg>) -> Result<(), ErrorCode> {
        self.shutting_down = true;
        for timer in self.timers.drain(..) {
            timer.abort();
        }
        let children = self.children.send_replace(Children::default());
        if let Some(intake) = children.intake {
            let _ = intake
                .stop_and_wait(Some("shutdown".into()), Some(STOP_TIMEOUT))
                .await;
        }
        // The tier queues answer what still waits in them, and their jobs in flight
        // reach the validators before those stop.
        if let Some(tiers) = children.tiers {
            let _ = tiers
                .stop_and_wait(Some("shutdown".into()), Some(STOP_TIMEOUT))
                .await;
        }
        // Validators next: a job being checked still reaches the store before the
        // final flush below; jobs still queued are answered `Unavailable`.
        if let Some(validators) = children.validators {
            let _ = validators
                .stop_and_wait(Some("shutdown".into()), Some(STOP_TIMEOUT))
                .await;
        }
        // No validator queues reviews any more: the task reviews what is queued,
        // writes its verdicts (made durable by the final flush below), and ends.
        self.reviewer = None;
        if let Some(task) = self.review_task.take()
            && !task.close(STOP_TIMEOUT).await
        {
            warn!("after-ack review did not finish in time; stopped");
        }
        let mut result = Ok(());
        if let Some(store) = children.store {
            result = match store
                .call(|reply| StoreMsg::Flush { reply }, Some(STOP_TIMEOUT))
                .await
            {
                Ok(ractor::rpc::CallResult::Success(r)) => r,
                Ok(ractor::rpc::CallResult::Timeout) => Err(ErrorCode::Timeout),
                _ => Err(ErrorCode::Unavailable {
                    reason: "store stopped before the final flush".into(),
                }),
            };
            let _ = store
                .stop_and_wait(Some("shutdown".into()), Some(STOP_TIMEOUT))
                .await;
        }
        myself
            .stop_children_and_wait(Some("shutdown".into()), Some(STOP_TIMEOUT))
            .await;
        // The store actor's last batch is durable; flush once more for key writes.
        let store = self.store.clone();
        let final_flush = tokio::task::spawn_blocking(move || store.flush()).await;
        match final_flush {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "final flush failed");
                result = result.and(Err(e.to_error_code()));
            }
            Err(e) => {
                error!(error = %e, "final flush panicked");
                result = result.and(Err(ErrorCode::Unavailable {
                    reason: "final flush failed".into(),
                }));
            }
        }
        info!(ok = result.is_ok(), "node supervisor shut down");
        result
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let validator = Arc::new(Validator::new(args.pipeline.validation.clone())?);
        let enricher = args.enricher;
        let (reviewer, review_task) =
            Reviewer::spawn(Arc::clone(&validator), Arc::clone(&args.store));
        let mut state = SupervisorState {
            store: args.store,
            pipeline: args.pipeline,
            store_breaker: args.store_breaker,
            store_writes: args.store_writes,
            validator,
            enricher,
            children: args.children,
            store_restarts: RestartIntensity::new(args.policy),
            intake_restarts: RestartIntensity::new(args.policy),
            validator_restarts: RestartIntensity::new(args.policy),
            tier_restarts: RestartIntensity::new(args.policy),
            live: args.live,
            level: args.level,
            door: args.door,
            timers: Vec::new(),
            reviewer: Some(reviewer),
            review_task: Some(review_task),
            shutting_down: false,
        };
        state.spawn(Child::Store, &myself).await?;
        state.spawn(Child::Validators, &myself).await?;
        state.spawn(Child::Tiers, &myself).await?;
        state.spawn(Child::Intake, &myself).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(child) => {
                if state.shutting_down {
                    return Ok(());
                }
                if let Err(e) = state.spawn(child, &myself).await {
                    error!(child = child.name(), error = %e, "child failed to start");
                    state.child_down(child, &myself);
                } else {
                    info!(child = child.name(), "child restarted");
                }
            }
            SupervisorMsg::Shutdown { reply } => {
                let result = state.shutdown(&myself).await;
                let _ = reply.send(result);
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.shutting_down {
            return Ok(());
        }
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(child) = state.which(&cell) {
                    error!(child = child.name(), error = %err, "child failed");
                    state.child_down(child, &myself);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(child) = state.which(&cell) {
                    warn!(child = child.name(), ?reason, "child stopped unexpectedly");
                    state.child_down(child, &myself);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for timer in state.timers.drain(..) {
            timer.abort();
        }
        if let Some(task) = state.review_task.take() {
            task.abort();
        }
        state.children.send_replace(Children::default());
        Ok(())
    }
}
