//! The intake actor: the front door of the write path, a thin driver of
//! [`Admission`].
//!
//! Admission decides (batch length, the store's breaker, the level's shed, each item's
//! shape, the rate limits); intake answers what it refuses and hands the rest to the
//! tier queues with the reply port. A validator later forwards the items to the store,
//! which answers the caller directly (no extra hop back through intake).

use std::time::Instant;

use chorus_protocol::{ErrorCode, Item};
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::caller::Caller;
use crate::core::admission::{Admission, Admit, Admitted, BatchOutcome, Gates};
use crate::messages::{Children, IntakeMsg, Submission, TierMsg};
use crate::pipeline::LivePolicy;
use crate::policy::breaker::BreakerState;
use crate::policy::degradation::Level;
use crate::policy::rate_limit::RateLimitConfig;

/// The intake actor.
#[derive(Debug, Default)]
pub struct IntakeActor;

/// Arguments of the intake actor (read-only, shared by every incarnation).
pub struct IntakeArgs {
    /// Where the current tier queues are published.
    pub children: watch::Receiver<Children>,
    /// The submit limits in force, changed while the node runs; a restarted intake,
    /// like a change, starts with full buckets.
    pub policy: watch::Receiver<LivePolicy>,
    /// The store's circuit breaker as the store actor publishes it.
    pub store_breaker: watch::Receiver<BreakerState>,
    /// The degradation level as the tier queues publish it.
    pub level: watch::Receiver<Level>,
}

/// The intake actor's state.
pub struct IntakeState {
    children: watch::Receiver<Children>,
    admission: Admission,
    store_breaker: watch::Receiver<BreakerState>,
    level: watch::Receiver<Level>,
    policy: watch::Receiver<LivePolicy>,
    /// The limits `admission` enforces.
    limits: RateLimitConfig,
}

impl IntakeState {
    /// Takes the limits published since the last message, if they changed: a change
    /// of another live setting leaves the buckets as they are.
    fn follow_policy(&mut self) {
        if !self.policy.has_changed().unwrap_or(false) {
            return;
        }
        let limits = self.policy.borrow_and_update().limits;
        if limits == self.limits {
            return;
        }
        match self.admission.reconfigure(&limits, Instant::now()) {
            Ok(()) => self.limits = limits,
            Err(e) => warn!(error = %e, "submit limits refused; the previous ones stay"),
        }
    }

    /// Admits a submission and forwards it; answers the caller itself only when
    /// nothing goes on.
    fn submit(
        &mut self,
        caller: &Caller,
        items: Vec<Item>,
        arrived: Instant,
        request: Option<u64>,
        reply: RpcReplyPort<BatchOutcome>,
    ) {
        let gates = Gates {
            store_breaker: *self.store_breaker.borrow(),
            level: *self.level.borrow(),
        };
        let Admitted {
            tier,
            items,
            rejected,
        } = match self
            .admission
            .handle_submit(Instant::now(), &caller.key_id, items, gates)
        {
            Admit::Refused(e) => {
                debug!(error = %e, "submission refused at admission");
                let _ = reply.send(Err(e));
                return;
            }
            Admit::Answered(outcomes) => {
                let _ = reply.send(Ok(outcomes));
                return;
            }
            Admit::Queue(admitted) => admitted,
        };
        let mut submission = Submission::new(items, rejected, tier, arrived, reply);
        submission.request = request;
        let Some(tiers) = self.children.borrow().tiers.clone() else {
            let mut submission = submission;
            submission.fail(tiers_unavailable());
            return;
        };
        if let Err(MessagingErr::SendErr(TierMsg::Enqueue(mut submission))) =
            tiers.cast(TierMsg::Enqueue(submission))
        {
            submission.fail(tiers_unavailable());
        }
    }
}

fn tiers_unavailable() -> ErrorCode {
    ErrorCode::Unavailable {
        reason: "tier queues restarting".into(),
    }
}

impl Actor for IntakeActor {
    type Msg = IntakeMsg;
    type State = IntakeState;
    type Arguments = IntakeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        mut args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let limits = args.policy.borrow_and_update().limits;
        Ok(IntakeState {
            children: args.children,
            admission: Admission::new(&limits, Instant::now())?,
            store_breaker: args.store_breaker,
            level: args.level,
            policy: args.policy,
            limits,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.follow_policy();
        match message {
            IntakeMsg::Submit {
                caller,
                items,
                reply,
                arrived,
                request,
            } => state.submit(&caller, items, arrived, request, reply),
            IntakeMsg::TrackedUsers { reply } => {
                let _ = reply.send(state.admission.tracked_users());
            }
        }
        Ok(())
    }
}
