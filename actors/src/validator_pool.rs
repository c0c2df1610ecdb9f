//! The validator pool ("Validators" in the pipeline): a ractor factory of workers that
//! run the content policy ([`Validator::check`]) between intake and the store.
//!
//! ```text
//! TierQueues ──dispatch(ValidateJob: ≤ 64 submissions)──► factory (queue, bounded) ──► worker
//!   worker: check(&mut item) per item (PII redacted in place, status, score)
//!           ──cast StoreMsg::WriteMany(each submission's items + verdicts)──► Store
//!   Store ──► each caller's reply
//! ```
//!
//! Between the two, when an enrichment URL is configured, the worker runs the optional
//! enrichment call for the job's items concurrently ([`crate::enrichment`]); its outcome
//! rides in each write's `enrichment` and never fails the submit.
//!
//! Under load the hops are shared: the tier queues hand over everything they have ready
//! (up to [`crate::core::scheduler::MAX_DISPATCH`] submissions) as one job, a worker casts
//! one message to the store for all of them, and the store answers each caller. With
//! one submission in flight a job is one submission, so batching adds no wait. The rules
//! are CPU work, so they run on the workers, not on an actor in the message path.
//!
//! Routing is [`QueuerRouting`]: jobs queue in the factory and go to the next idle
//! worker. The factory queue is bounded at [`QUEUE_BOUND`] jobs (batches of submissions
//! of at most `MAX_BATCH_ITEMS` items each); a job arriving at a full queue is refused at once
//! with `Overloaded` (discard mode `Newest`), and jobs still queued when the pool stops
//! are answered `Unavailable`. Neither is ever silent: the discard handler answers the
//! caller.
//!
//! Production mode's after-ack review ([`Reviewer`]): the rules of an item whose
//! verdict carries a [`DeferredCheck`] run only after its receipt was sent. The worker
//! hands the store an [`AfterAck`] with the write: once the store has answered the
//! caller, it queues the items it acknowledged for review, in a bounded queue
//! ([`DEFERRED_QUEUE_BOUND`]) drained by one background task per pool.
//! The review checks the item as it was stored (redacted) with [`Validator::check_deferred`] and,
//! when the item is flagged or rejected, rewrites the stored receipt's status and score
//! ([`Store::update_verdict`]); an accepted item keeps its unscored ack receipt.
//! So in production mode an ack means "stored and redacted; content review may still
//! flag or reject it": the ack is never changed, a later `get` shows the review. A full
//! queue never blocks the write path: the item keeps its provisional status and is
//! counted (`chorus_validation_deferred_skipped_total`).

use std::sync::Arc;

use chorus_protocol::{Enrichment, ErrorCode, Item, ItemId, Status, Tier};
use ractor::factory::queues::DefaultQueue;
use ractor::factory::routing::QueuerRouting;
use ractor::factory::{
    DiscardHandler, DiscardMode, DiscardReason, DiscardSettings, Factory, FactoryArguments, Job,
    Worker, WorkerId, worker_builder,
};
use ractor::{ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::core::admission::{BatchOutcome, merge_rejected};
use crate::enrichment::{Enricher, enrich_writes};
use crate::messages::{AfterAck, Children, StoreMsg, ValidateJob, ValidatorMsg, WriteRequest};
use crate::policy::degradation::Level;
use crate::store::{Store, StoreError, Write};
use crate::telemetry::{
    VALIDATION_DEFERRED_CHECKED, VALIDATION_DEFERRED_FAILED, VALIDATION_DEFERRED_SKIPPED,
    VALIDATION_DEFERRED_UPDATED, VALIDATION_OUTCOMES, VALIDATION_PII_REDACTED,
};
use crate::validation::{DeferredCheck, Validator, Verdict};

/// Most submissions waiting in the factory queue for a free worker; beyond it a new
/// submission is refused with `Overloaded`. Sized for about a second of peak load at
/// the default worker counts, small enough that a refused caller learns it at once.
pub const QUEUE_BOUND: usize = 1024;

/// Most items waiting for production mode's after-ack review; beyond it an item is not
/// reviewed (it keeps its provisional `Accepted`) and is counted as skipped.
pub const DEFERRED_QUEUE_BOUND: usize = 4096;

/// Most items the review task checks at once (and rewrites with one store flush): at a
/// few microseconds an item, 64 keep the task from holding its runtime thread for more
/// than a few hundred microseconds.
const REVIEW_BATCH: usize = 64;

/// How long a caller refused by a full queue should wait before retrying.
const OVERLOADED_RETRY_MS: u64 = 100;

/// The factory actor of the pool.
pub type ValidatorFactory = Factory<
    (),
    ValidateJob,
    ValidatorArgs,
    ValidatorWorker,
    QueuerRouting<(), ValidateJob>,
    DefaultQueue<(), ValidateJob>,
>;

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
    /// The after-ack review queue (production mode).
    pub reviewer: Reviewer,
    /// The enrichment client and its gate, shared by the pool; `None` when off.
    pub enricher: Option<Arc<Enricher>>,
    /// The degradation level (optional work runs only at `Normal`).
    pub level: watch::Receiver<Level>,
}

// A local-only message under ractor's `cluster` feature (see `crate::messages`).
#[cfg(feature = "cluster")]
impl ractor::Message for ValidatorArgs {}

/// One stored item waiting for its after-ack content check: the item as stored
/// (redacted) and the status it was acknowledged with, so that the common case — the
/// check agrees — needs no read of the store.
#[derive(Clone, Debug)]
pub struct DeferredWork {
    item: Box<Item>,
    acked: Status,
    check: DeferredCheck,
}

impl DeferredWork {
    fn id(&self) -> ItemId {
        self.item.id
    }
}

/// The sending side of the pool's bounded after-ack review queue; the background task
/// that drains it ends once every `Reviewer` (the pool's workers and the forwarding
/// tasks still waiting on the store) is gone.
#[derive(Clone, Debug)]
pub struct Reviewer {
    queue: mpsc::Sender<DeferredWork>,
}

impl Reviewer {
    /// Starts the review task (on the current tokio runtime) for `store`; the caller
    /// owns the task and closes it ([`ReviewTask::close`]).
    pub fn spawn(validator: Arc<Validator>, store: Arc<Store>) -> (Reviewer, ReviewTask) {
        let (queue, rx) = mpsc::channel(DEFERRED_QUEUE_BOUND);
        let (close, closed) = oneshot::channel();
        let handle = tokio::spawn(review_loop(rx, closed, validator, store));
        let task = ReviewTask {
            handle,
            close: Some(close),
        };
        (Reviewer { queue }, task)
    }

    /// Queues `work` for review without waiting; `false` (counted and logged) when the
    /// queue is full or the review task is gone.
    fn submit(&self, work: DeferredWork) -> bool {
        let id = work.id();
        match self.queue.try_send(work) {
            Ok(()) => true,
            Err(e) => {
                let full = matches!(e, mpsc::error::TrySendError::Full(_));
                debug!(item = %id, full, "after-ack content check skipped");
                metrics::counter!(VALIDATION_DEFERRED_SKIPPED).increment(1);
                false
            }
        }
    }

    /// Queues the checks of the items in `stored` (an item that failed to store has
    /// nothing to review); returns how many were skipped.
    fn submit_stored(&self, stored: &[ItemId], deferred: Vec<DeferredWork>) -> usize {
        deferred
            .into_iter()
            .filter(|w| stored.contains(&w.id()))
            .map(|w| self.submit(w))
            .filter(|queued| !queued)
            .count()
    }
}

/// Drains the review queue in batches. The rules run here, on the task (a few
/// microseconds an item, CPU only); only a batch with changed verdicts goes to the
/// blocking pool to be written, so the common case costs no thread handoff.
async fn review_loop(
    mut rx: mpsc::Receiver<DeferredWork>,
    mut close: oneshot::Receiver<()>,
    validator: Arc<Validator>,
    store: Arc<Store>,
) {
    let mut batch = Vec::with_capacity(REVIEW_BATCH);
    let mut closing = false;
    loop {
        if closing {
            // Closing: review what is queued now, without waiting for more.
            while batch.len() < REVIEW_BATCH {
                match rx.try_recv() {
                    Ok(work) => batch.push(work),
                    Err(_) => break,
                }
            }
        } else {
            tokio::select! {
                _ = rx.recv_many(&mut batch, REVIEW_BATCH) => {}
                // Asked to close, or the owner is gone.
                _ = &mut close => closing = true,
            }
        }
        if batch.is_empty() {
            if closing || rx.is_closed() && rx.is_empty() {
                return;
            }
            continue;
        }
        review(&validator, &store, &mut batch).await;
    }
}

/// Reviews one batch; writes the changed verdicts on the blocking pool.
async fn review(validator: &Validator, store: &Arc<Store>, batch: &mut Vec<DeferredWork>) {
    let checked = batch.len() as u64;
    let changed = changed_verdicts(validator, batch.drain(..));
    metrics::counter!(VALIDATION_DEFERRED_CHECKED).increment(checked);
    if changed.is_empty() {
        return;
    }
    let count = changed.len() as u64;
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || write_verdicts(&store, changed)).await {
        Ok(Ok(updated)) => {
            metrics::counter!(VALIDATION_DEFERRED_UPDATED).increment(updated);
        }
        Ok(Err(e)) => {
            warn!(error = %e, items = count, "after-ack content check failed");
            metrics::counter!(VALIDATION_DEFERRED_FAILED).increment(count);
        }
        Err(e) => {
            warn!(error = %e, items = count, "after-ack content check panicked");
            metrics::counter!(VALIDATION_DEFERRED_FAILED).increment(count);
        }
    }
}

/// The running review task, held by its owner (the node supervisor), which closes it.
#[derive(Debug)]
pub struct ReviewTask {
    handle: JoinHandle<()>,
    close: Option<oneshot::Sender<()>>,
}

impl ReviewTask {
    /// Reviews what is queued, then ends; waits at most `limit`, then stops it.
    /// Returns whether it finished in time.
    pub async fn close(mut self, limit: std::time::Duration) -> bool {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        match tokio::time::timeout(limit, &mut self.handle).await {
            Ok(_) => true,
            Err(_) => {
                self.handle.abort();
                false
            }
        }
    }

    /// Stops it at once (what is queued is not reviewed).
    pub fn abort(&self) {
        self.handle.abort();
    }
}

/// Runs the deferred checks on the stored (redacted) items; returns the verdicts that
/// differ from the status each item was acknowledged with.
fn changed_verdicts(
    validator: &Validator,
    work: impl Iterator<Item = DeferredWork>,
) -> Vec<(ItemId, Verdict)> {
    work.filter_map(|DeferredWork { item, acked, check }| {
        let verdict = validator.check_deferred(&item, &check);
        // The common case: the review agrees with the ack; nothing to read or write.
        (verdict.status != acked).then_some((item.id, verdict))
    })
    .collect()
}

/// Rewrites the receipts whose status the review changed (flagged or rejected; the
/// receipt then carries the score), with one flush; returns how many. An item already
/// scored (reviewed and changed before, or stored by another mode) is left alone.
fn write_verdicts(store: &Store, changed: Vec<(ItemId, Verdict)>) -> Result<u64, StoreError> {
    let mut updates = Vec::new();
    for (id, verdict) in changed {
        let Some(stored) = store.get(id)? else {
            continue;
        };
        if stored.receipt.alignment_score.is_some() {
            continue;
        }
        // Only a changed status is written: a clean item keeps the receipt it was
        // acknowledged with (a retry gets the same answer) and costs no rewrite.
        if verdict.status != stored.receipt.status {
            debug!(item = %id, status = ?verdict.status, score = ?verdict.score, "after-ack verdict");
            updates.push((id, verdict.status, verdict.score));
        }
    }
    if updates.is_empty() {
        return Ok(0);
    }
    Ok(store.update_verdicts(updates)? as u64)
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
        let credit = msg.credit.take();
        let Some(store) = state.children.borrow().store.clone() else {
            msg.fail(store_unavailable());
            return Ok(key);
        };
        // Validate every submission; keep, per submission, its writes and where its
        // answer goes.
        let mut validated = Vec::with_capacity(msg.submissions.len());
        for submission in msg.submissions.drain(..) {
            let Some(reply) = submission.reply else {
                continue;
            };
            let (writes, rejected, deferred) = validate(
                &state.validator,
                submission.items,
                submission.rejected,
                submission.request,
            );
            validated.push((writes, rejected, deferred, submission.tier, reply));
        }
        if let Some(enricher) = &state.enricher {
            let level = *state.level.borrow();
            enrich_all(enricher, level, &mut validated).await;
        }
        let mut requests = Vec::with_capacity(validated.len());
        for (writes, rejected, deferred, tier, reply) in validated {
            if writes.is_empty() {
                let _ = reply.send(Ok(merge_rejected(Vec::new(), rejected)));
                continue;
            }
            // Production mode: the store queues the review once the caller has its
            // answer, for the items it acknowledged.
            let after_ack = (!deferred.is_empty()).then(|| {
                let reviewer = state.reviewer.clone();
                Box::new(move |acked: Vec<ItemId>| {
                    reviewer.submit_stored(&acked, deferred);
                }) as AfterAck
            });
            requests.push(WriteRequest {
                items: writes,
                rejected,
                tier,
                reply,
                after_ack,
            });
        }
        if !requests.is_empty() {
            let write = StoreMsg::WriteMany { requests, credit };
            if let Err(MessagingErr::SendErr(StoreMsg::WriteMany { requests, .. })) =
                store.cast(write)
            {
                for request in requests {
                    let _ = request.reply.send(Err(store_unavailable()));
                }
            }
        }
        Ok(key)
    }
}

/// One validated submission: its writes, rejections, deferred checks, tier and reply
/// port.
type Validated = (
    Vec<Write>,
    Vec<(usize, ErrorCode)>,
    Vec<DeferredWork>,
    Tier,
    RpcReplyPort<BatchOutcome>,
);

/// Runs the optional enrichment call for every write of the batch at once.
async fn enrich_all(enricher: &Arc<Enricher>, level: Level, validated: &mut [Validated]) {
    let lengths: Vec<usize> = validated.iter().map(|v| v.0.len()).collect();
    let mut all: Vec<Write> = validated
        .iter_mut()
        .flat_map(|v| std::mem::take(&mut v.0))
        .collect();
    enrich_writes(Some(enricher), level, &mut all).await;
    let mut all = all.into_iter();
    for (v, len) in validated.iter_mut().zip(lengths) {
        v.0 = all.by_ref().take(len).collect();
    }
}

/// Runs the content policy on each item (redacting PII in place) and pairs it with its
/// verdict; an item the policy refuses to judge (`Err`) becomes a rejection at its
/// position in the caller's batch. The third list is the checks to run after the ack.
fn validate(
    validator: &Validator,
    items: Vec<Item>,
    mut rejected: Vec<(usize, ErrorCode)>,
    request: Option<u64>,
) -> (Vec<Write>, Vec<(usize, ErrorCode)>, Vec<DeferredWork>) {
    let mut writes = Vec::with_capacity(items.len());
    let mut deferred = Vec::new();
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
                metrics::counter!(VALIDATION_OUTCOMES, "status" => verdict.status.as_str())
                    .increment(1);
                if !verdict.pii.is_empty() {
                    metrics::counter!(VALIDATION_PII_REDACTED).increment(1);
                }
                if let Some(check) = verdict.deferred {
                    // Production mode: the rules run after the ack (see `Reviewer`).
                    deferred.push(DeferredWork {
                        item: Box::new(item.clone()),
                        acked: verdict.status.clone(),
                        check,
                    });
                }
                writes.push(Write {
                    item,
                    status: verdict.status,
                    score: verdict.score,
                    enrichment: Enrichment::NotConfigured,
                    request,
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
    (writes, rejected, deferred)
}

/// Answers the caller of a job the factory drops (full queue, shutdown, expiry).
struct AnswerDiscarded;

impl DiscardHandler<(), ValidateJob> for AnswerDiscarded {
    fn discard(&self, reason: DiscardReason, job: &mut Job<(), ValidateJob>) {
        debug!(
            ?reason,
            submissions = job.msg.submissions.len(),
            "validation job discarded"
        );
        let tier = job.msg.tier();
        let error = match reason {
            DiscardReason::Loadshed | DiscardReason::RateLimited => ErrorCode::Overloaded {
                tier,
                retry_after_ms: OVERLOADED_RETRY_MS,
            },
            DiscardReason::TtlExpired | DiscardReason::Shutdown => ErrorCode::Unavailable {
                reason: "validators stopping".into(),
            },
        };
        job.msg.fail(error);
    }
}

/// The factory's arguments for a pool of `workers` sharing `validator` (and
/// `enricher`, when enrichment is on; `level` tells whether it may run), queueing
/// production mode's after-ack reviews on `reviewer`.
pub fn factory_args(
    validator: Arc<Validator>,
    children: watch::Receiver<Children>,
    workers: usize,
    reviewer: Reviewer,
    enricher: Option<Arc<Enricher>>,
    level: watch::Receiver<Level>,
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
        reviewer,
        enricher,
        level,
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
        let (writes, rejected, deferred) = validate(
            &validator,
            vec![item("works well"), bad, item("mail me at a@b.example")],
            rejected_before,
            Some(7),
        );
        assert_eq!(writes.len(), 2);
        assert!(
            writes.iter().all(|w| w.request == Some(7)),
            "each write names its request"
        );
        assert_eq!(writes[0].status, Status::Accepted);
        assert!(writes[0].score.is_some());
        assert!(writes[1].item.text.contains("[email]"));
        let at: Vec<usize> = rejected.iter().map(|(at, _)| *at).collect();
        assert_eq!(at, vec![0, 2]);
        assert!(deferred.is_empty(), "research mode defers nothing");
    }

    #[test]
    fn production_mode_defers_the_rules_of_each_stored_item() {
        let validator = Validator::new(ValidationConfig::default()).unwrap();
        let (writes, _, deferred) = validate(
            &validator,
            vec![item("i will kill you"), item("fine")],
            Vec::new(),
            None,
        );
        assert!(writes.iter().all(|w| w.status == Status::Accepted));
        let ids: Vec<ItemId> = deferred.iter().map(|w| w.id()).collect();
        assert_eq!(ids, vec![writes[0].item.id, writes[1].item.id]);
    }

    #[test]
    fn a_full_review_queue_skips_without_blocking() {
        let (queue, mut rx) = mpsc::channel(1);
        let reviewer = Reviewer { queue };
        let work = |text: &str| DeferredWork {
            item: Box::new(item(text)),
            acked: Status::Accepted,
            check: DeferredCheck {
                pii: Default::default(),
            },
        };
        let (a, b, c) = (work("a"), work("b"), work("c"));
        let (a_id, b_id) = (a.id(), b.id());
        let stored = [a_id, b_id];
        // `c` was not stored: not queued, not counted; `b` finds the queue full.
        assert_eq!(reviewer.submit_stored(&stored, vec![a.clone(), b, c]), 1);
        assert_eq!(rx.try_recv().unwrap().id(), a_id);
        assert!(rx.try_recv().is_err());
        // A stopped review task counts as skipped too.
        drop(rx);
        assert!(!reviewer.submit(a));
    }
}
