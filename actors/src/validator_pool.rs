//! The validator pool (DESIGN.md §3 "Validators"): a ractor factory of workers that
//! run the content policy ([`Validator::check`]) between intake and the store.
//!
//! ```text
//! Intake ──dispatch(ValidateJob)──► factory (queue, bounded) ──► worker
//!   worker: check(&mut item) per item (PII redacted in place, status, score)
//!           ──cast StoreMsg::Write(items + verdicts)──► Store ──► caller's reply
//! ```
//!
//! One message per submission each way: intake dispatches the whole batch as one job,
//! a worker casts one write to the store, and the store answers the caller. The rules
//! are CPU work, so they run on the workers, not on the intake actor.
//!
//! Routing is [`QueuerRouting`]: jobs queue in the factory and go to the next idle
//! worker. The factory queue is bounded at [`QUEUE_BOUND`] jobs (submissions, each at
//! most `MAX_BATCH_ITEMS` items); a job arriving at a full queue is refused at once
//! with `Overloaded` (discard mode `Newest`), and jobs still queued when the pool stops
//! are answered `Unavailable`. Neither is ever silent: the discard handler answers the
//! caller.

use std::sync::Arc;

use chorus_protocol::{ErrorCode, Item, Tier};
use ractor::factory::queues::DefaultQueue;
use ractor::factory::routing::QueuerRouting;
use ractor::factory::{
    DiscardHandler, DiscardMode, DiscardReason, DiscardSettings, Factory, FactoryArguments,
    FactoryMessage, Job, Worker, WorkerId, worker_builder,
};
use ractor::{ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::watch;
use tracing::debug;

use crate::store::Write;
use crate::store_actor::{BatchOutcome, StoreMsg};
use crate::supervisor::Children;
use crate::telemetry::VALIDATION_DEFERRED_UNCHECKED;
use crate::validation::Validator;

/// Most submissions waiting in the factory queue for a free worker; beyond it a new
/// submission is refused with `Overloaded`. Sized for about a second of peak load at
/// the default worker counts, small enough that a refused caller learns it at once.
pub const QUEUE_BOUND: usize = 1024;

/// How long a caller refused by a full queue should wait before retrying.
const OVERLOADED_RETRY_MS: u64 = 100;

/// The factory's message type.
pub type ValidatorMsg = FactoryMessage<(), ValidateJob>;

/// The validator pool as the rest of the tree sees it.
pub type ValidatorPool = ActorRef<ValidatorMsg>;

/// The factory actor of the pool.
pub type ValidatorFactory = Factory<
    (),
    ValidateJob,
    ValidatorArgs,
    ValidatorWorker,
    QueuerRouting<(), ValidateJob>,
    DefaultQueue<(), ValidateJob>,
>;

/// One submission's schema-checked, rate-limited items on their way to the store.
pub struct ValidateJob {
    items: Vec<Item>,
    /// `(index in the caller's batch, outcome)`, sorted by index.
    rejected: Vec<(usize, ErrorCode)>,
    /// Taken by whoever answers: the store (through the worker) or the discard handler.
    reply: Option<RpcReplyPort<BatchOutcome>>,
}

impl ValidateJob {
    /// A job for `items`; `rejected` are the outcomes already decided for other
    /// positions of the caller's batch, sorted by index.
    pub fn new(
        items: Vec<Item>,
        rejected: Vec<(usize, ErrorCode)>,
        reply: RpcReplyPort<BatchOutcome>,
    ) -> ValidateJob {
        ValidateJob {
            items,
            rejected,
            reply: Some(reply),
        }
    }

    /// Answers the caller with one error for the whole batch (if not answered yet).
    pub fn fail(&mut self, error: ErrorCode) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(error));
        }
    }
}

/// A worker of the pool (stateless; its state holds the shared validator).
#[derive(Debug, Default)]
pub struct ValidatorWorker;

/// What every worker starts with.
#[derive(Clone)]
pub struct ValidatorArgs {
    /// The compiled content policy, shared read-only by the whole pool.
    pub validator: Arc<Validator>,
    /// Where the current store actor is published.
    pub children: watch::Receiver<Children>,
}

impl Worker for ValidatorWorker {
    type Key = ();
    type Message = ValidateJob;
    type Arguments = ValidatorArgs;
    type State = ValidatorArgs;

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<ValidatorMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<ValidatorMsg>,
        Job { key, mut msg, .. }: Job<(), ValidateJob>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(reply) = msg.reply.take() else {
            return Ok(key);
        };
        let (writes, rejected) = validate(&state.validator, msg.items, msg.rejected);
        let Some(store) = state.children.borrow().store.clone() else {
            let _ = reply.send(Err(store_unavailable()));
            return Ok(key);
        };
        let write = StoreMsg::Write {
            items: writes,
            rejected,
            reply,
        };
        if let Err(MessagingErr::SendErr(StoreMsg::Write { reply, .. })) = store.cast(write) {
            let _ = reply.send(Err(store_unavailable()));
        }
        Ok(key)
    }
}

/// Runs the content policy on each item (redacting PII in place) and pairs it with its
/// verdict; an item the policy refuses to judge (`Err`) becomes a rejection at its
/// position in the caller's batch.
fn validate(
    validator: &Validator,
    items: Vec<Item>,
    mut rejected: Vec<(usize, ErrorCode)>,
) -> (Vec<Write>, Vec<(usize, ErrorCode)>) {
    let mut writes = Vec::with_capacity(items.len());
    // Intake checked the schema, so `check` failing is rare: collect its errors aside
    // (no allocation unless one happens) and merge them into `rejected` at the end.
    let mut errors: Vec<(usize, ErrorCode)> = Vec::new();
    // The position of each item in the caller's batch: the positions not in `rejected`,
    // in order.
    let mut position = 0;
    let mut skip = rejected.iter().map(|(at, _)| *at).peekable();
    for mut item in items {
        while skip.next_if_eq(&position).is_some() {
            position += 1;
        }
        match validator.check(&mut item) {
            Ok(verdict) => {
                if verdict.deferred.is_some() {
                    // Production mode: the rules are meant to run after the ack
                    // (`Validator::check_deferred`); that stage is not built yet, so
                    // the item is stored with its provisional status. Counted, not
                    // silently dropped.
                    debug!(item = %item.id, "deferred content check not run (not wired yet)");
                    metrics::counter!(VALIDATION_DEFERRED_UNCHECKED).increment(1);
                }
                writes.push(Write {
                    item,
                    status: verdict.status,
                    score: verdict.score,
                });
            }
            Err(e) => {
                debug!(item = %item.id, error = %e, "item refused by the validator");
                errors.push((position, e));
            }
        }
        position += 1;
    }
    if !errors.is_empty() {
        rejected.extend(errors);
        rejected.sort_by_key(|(at, _)| *at);
    }
    (writes, rejected)
}

/// Answers the caller of a job the factory drops (full queue, shutdown, expiry).
struct AnswerDiscarded;

impl DiscardHandler<(), ValidateJob> for AnswerDiscarded {
    fn discard(&self, reason: DiscardReason, job: &mut Job<(), ValidateJob>) {
        debug!(
            ?reason,
            items = job.msg.items.len(),
            "validation job discarded"
        );
        let error = match reason {
            DiscardReason::Loadshed | DiscardReason::RateLimited => ErrorCode::Overloaded {
                tier: job.msg.items.first().map_or(Tier::Standard, |i| i.tier),
                retry_after_ms: OVERLOADED_RETRY_MS,
            },
            DiscardReason::TtlExpired | DiscardReason::Shutdown => ErrorCode::Unavailable {
                reason: "validators stopping".into(),
            },
        };
        job.msg.fail(error);
    }
}

/// The factory's arguments for a pool of `workers` sharing `validator`.
pub fn factory_args(
    validator: Arc<Validator>,
    children: watch::Receiver<Children>,
    workers: usize,
) -> FactoryArguments<
    (),
    ValidateJob,
    ValidatorArgs,
    ValidatorWorker,
    QueuerRouting<(), ValidateJob>,
    DefaultQueue<(), ValidateJob>,
> {
    let args = ValidatorArgs {
        validator,
        children,
    };
    FactoryArguments::builder()
        .worker_builder(Box::new(worker_builder(move |_wid| {
            (ValidatorWorker, args.clone())
        })))
        .num_initial_workers(workers)
        .router(QueuerRouting::default())
        .queue(DefaultQueue::default())
        .discard_handler(Arc::new(AnswerDiscarded))
        .discard_settings(DiscardSettings::Static {
            limit: QUEUE_BOUND,
            mode: DiscardMode::Newest,
        })
        .build()
}

fn store_unavailable() -> ErrorCode {
    ErrorCode::Unavailable {
        reason: "store restarting".into(),
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{Kind, Status};

    use super::*;
    use crate::validation::ValidationConfig;

    fn item(text: &str) -> Item {
        let mut item = Item::new("u", Kind::Text);
        item.text = text.into();
        item
    }

    #[test]
    fn verdicts_ride_with_the_items_and_errors_land_in_place() {
        let validator = Validator::new(ValidationConfig::research()).unwrap();
        let mut bad = item("fine");
        bad.user_id = String::new();
        let rejected_before = vec![(0, ErrorCode::invalid("text", "x"))];
        let (writes, rejected) = validate(
            &validator,
            vec![item("works well"), bad, item("mail me at a@b.example")],
            rejected_before,
        );
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].status, Status::Accepted);
        assert!(writes[0].score.is_some());
        assert!(writes[1].item.text.contains("[email]"));
        let at: Vec<usize> = rejected.iter().map(|(at, _)| *at).collect();
        assert_eq!(at, vec![0, 2]);
    }
}
