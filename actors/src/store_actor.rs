//! The store actor: the thin driver of [`StoreGate`] (bulkhead, group commit, breaker)
//! and the blocking [`Store`].
//!
//! The gate decides which writes share the next flush; the actor hands each batch to a
//! flush task that runs the blocking `apply` (one group commit for the whole batch) on
//! the blocking pool, answers every writer of the batch itself once it is durable, and
//! then tells the actor `Flushed` so the next batch can start. Because the flush task
//! holds the reply ports, a batch already on its way to disk is answered even if the
//! actor dies.
//!
//! The tier queues size their window to the store-writes bulkhead's capacity, so in
//! steady state nothing is refused here and the backlog stays in the tier queues, where
//! priorities apply.
//!
//! Reads (get, list, authenticate) never queue behind a flush: each runs on the
//! blocking pool at once and replies directly.

use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::{ErrorCode, ItemId, PartitionId, Receipt, partition_of};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, warn};

use crate::core::admission::{BatchOutcome, STORE_DEPENDENCY, merge_rejected, shed};
use crate::core::store_gate::{Admitted, GateStep, StoreGate};
use crate::group_commit::DEFAULT_MAX_BATCH_ITEMS;
use crate::messages::{AfterAck, Credit, FlushDone, StoreMsg, WriteRequest};
use crate::pipeline::LivePolicy;
use crate::policy::breaker::{BreakerCommand, BreakerConfig};
use crate::published_breaker::{BreakerBoard, publish_breaker};
use crate::published_bulkhead::BulkheadBoard;
use crate::replication::ReplicationSlot;
use crate::store::{Store, StoreError, Write};
use crate::telemetry::{STORE_BATCH_ITEMS, STORE_FLUSH_DURATION_SECONDS, STORE_QUEUE_DEPTH};

/// A writer waiting in the gate.
enum Waiter {
    Write {
        items: Vec<Write>,
        rejected: Vec<(usize, ErrorCode)>,
        tier: chorus_protocol::Tier,
        reply: RpcReplyPort<BatchOutcome>,
        after_ack: Option<AfterAck>,
        /// Dropped with the waiter, after its reply.
        _credit: Option<Credit>,
    },
    Barrier {
        reply: RpcReplyPort<Result<(), ErrorCode>>,
    },
}

impl Waiter {
    fn weight(&self) -> usize {
        match self {
            Waiter::Write { items, .. } => items.len(),
            Waiter::Barrier { .. } => 0,
        }
    }

    fn fail(self, error: ErrorCode) {
        // A dropped receiver means the caller gave up; nobody is left to tell.
        match self {
            Waiter::Write { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Waiter::Barrier { reply } => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// The answer to a write the gate could not take: `Overloaded` for its tier.
    fn refuse_overloaded(self) {
        let error = match &self {
            Waiter::Write { tier, .. } => shed(*tier),
            Waiter::Barrier { .. } => ErrorCode::Unavailable {
                reason: "store busy".into(),
            },
        };
        self.fail(error);
    }
}

/// The store actor (read-only arguments: the store and the batch cap).
#[derive(Debug, Default)]
pub struct StoreActor;

/// Arguments of the store actor.
#[derive(Clone)]
pub struct StoreArgs {
    /// The opened store, shared with nobody who writes.
    pub store: Arc<Store>,
    /// Most items per flush.
    pub max_batch: std::num::NonZeroUsize,
    /// When the store's circuit breaker opens and how it recovers.
    pub breaker: BreakerConfig,
    /// Where the breaker's state is published (intake reads it to refuse at once).
    pub board: BreakerBoard,
    /// The store-writes bulkhead's limits and where its occupancy is published.
    pub writes: Arc<BulkheadBoard>,
    /// Replication, when this node is one replica of each partition (None: the only
    /// one, and a write is answered once it is durable here).
    pub replication: Option<ReplicationSlot>,
    /// Where breaker settings changed while the node runs are published (None: the
    /// breaker keeps `breaker`).
    pub policy: Option<watch::Receiver<LivePolicy>>,
}

impl StoreArgs {
    /// Arguments with the default batch cap.
    pub fn new(
        store: Arc<Store>,
        breaker: BreakerConfig,
        board: BreakerBoard,
        writes: Arc<BulkheadBoard>,
    ) -> Self {
        StoreArgs {
            store,
            max_batch: DEFAULT_MAX_BATCH_ITEMS,
            breaker,
            board,
            writes,
            replication: None,
            policy: None,
        }
    }
}

/// A timer that sends the actor a message.
type Timer = JoinHandle<Result<(), ractor::MessagingErr<StoreMsg>>>;

/// The store actor's state.
pub struct StoreState {
    store: Arc<Store>,
    /// Replication, if this node is one of several replicas.
    replication: Option<ReplicationSlot>,
    gate: StoreGate<Waiter>,
    /// Sequence number of the batch in flight (or of the last one).
    batch: u64,
    /// The task persisting the batch in flight.
    flush_task: Option<JoinHandle<()>>,
    /// Reads and key operations running on the blocking pool.
    reads: JoinSet<()>,
    /// Where the breaker's state is published.
    board: BreakerBoard,
    /// Where the bulkhead's occupancy is published.
    writes_board: Arc<BulkheadBoard>,
    /// The timer for the gate's next timed change; replaced when re-armed, aborted
    /// when the actor stops.
    timer: Option<(Instant, Timer)>,
    /// Breaker settings changed while the node runs.
    policy: Option<watch::Receiver<LivePolicy>>,
}

impl StoreState {
    /// Gives the breaker the settings published since the last message, if any.
    fn follow_policy(&mut self) {
        let Some(policy) = &mut self.policy else {
            return;
        };
        if !policy.has_changed().unwrap_or(false) {
            return;
        }
        let breaker = policy.borrow_and_update().store_breaker;
        if let Err(e) = self.gate.reconfigure_breaker(breaker, Instant::now()) {
            warn!(error = %e, "store breaker settings refused; the previous ones stay");
        }
    }
}

impl StoreState {
    /// Carries out the gate's steps until it has none, then publishes what changed.
    fn drive(&mut self, myself: &ActorRef<StoreMsg>) {
        let now = Instant::now();
        while let Some(step) = self.gate.poll(now) {
            match step {
                GateStep::Flush(batch) => {
                    self.batch += 1;
                    let seq = self.batch;
                    let store = self.store.clone();
                    let replication = self.replication.clone();
                    let myself = myself.clone();
                    self.flush_task = Some(tokio::spawn(async move {
                        let (durable, credits) = persist_and_reply(store, replication, batch).await;
                        // Fails only if the actor is gone; its successor starts fresh.
                        let _ = myself.cast(StoreMsg::Flushed(FlushDone {
                            batch: seq,
                            durable,
                            credits,
                        }));
                    }));
                }
                GateStep::Refuse(batch) => {
                    for waiter in batch {
                        waiter.fail(ErrorCode::CircuitOpen {
                            dependency: STORE_DEPENDENCY.into(),
                        });
                    }
                }
                GateStep::Expired(waiter) => {
                    debug!("store write waited too long for a slot");
                    waiter.refuse_overloaded();
                }
            }
        }
        self.publish(myself);
    }

    /// Publishes the breaker and the bulkhead, and arms the gate's next timed change.
    fn publish(&mut self, myself: &ActorRef<StoreMsg>) {
        metrics::gauge!(STORE_QUEUE_DEPTH).set(self.gate.queued_items() as f64);
        let (running, queued) = self.gate.occupancy();
        self.writes_board.publish(running, queued);
        // Called on every message: the breaker is reported only when it moved.
        let state = self.gate.breaker_state();
        let gate = &mut self.gate;
        let mut transitions = std::iter::from_fn(|| gate.poll_transition()).peekable();
        if transitions.peek().is_some() || *self.board.borrow() != state {
            publish_breaker(STORE_DEPENDENCY, &self.board, transitions, state);
        }
        let deadline = self.gate.next_deadline();
        if self.timer.as_ref().map(|(at, _)| *at) == deadline {
            return;
        }
        if let Some((_, timer)) = self.timer.take() {
            timer.abort();
        }
        if let Some(deadline) = deadline {
            let delay = deadline.saturating_duration_since(Instant::now());
            self.timer = Some((deadline, myself.send_after(delay, || StoreMsg::Tick)));
        }
    }

    /// Runs a blocking read on the blocking pool and replies with its result.
    fn read<T, F>(&mut self, reply: RpcReplyPort<Result<T, ErrorCode>>, op: F)
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        // Reap finished reads so the set stays as small as the reads in flight.
        while self.reads.try_join_next().is_some() {}
        let store = self.store.clone();
        self.reads.spawn_blocking(move || {
            let result = op(&store).map_err(|e| {
                warn!(error = %e, "store read failed");
                e.to_error_code()
            });
            let _ = reply.send(result);
        });
    }
}

/// Persists a batch on the blocking pool, then answers each of its waiters; returns
/// whether the batch became durable, and the writers' tier-queue credits that are free
/// now (a replicated batch keeps its credits until its writers have their answers).
async fn persist_and_reply(
    store: Arc<Store>,
    replication: Option<ReplicationSlot>,
    batch: Vec<Waiter>,
) -> (bool, Vec<Credit>) {
    let (items, waiters, credits) = unpack(batch);
    match replication {
        None => {
            let result = apply_blocking(store, items, Store::try_apply).await;
            let durable = result.is_ok();
            answer(waiters, result);
            (durable, credits)
        }
        Some(slot) => persist_replicated(store, slot, items, waiters, credits).await,
    }
}

/// A batch's items in order, its waiters without their items (with how many outcomes
/// each takes), and their credits.
fn unpack(batch: Vec<Waiter>) -> (Vec<Write>, Vec<(usize, Waiter)>, Vec<Credit>) {
    let mut items = Vec::with_capacity(batch.iter().map(Waiter::weight).sum());
    let mut waiters = Vec::with_capacity(batch.len());
    let mut credits = Vec::with_capacity(batch.len());
    for waiter in batch {
        match waiter {
            Waiter::Write {
                items: own,
                rejected,
                tier,
                reply,
                after_ack,
                _credit,
            } => {
                credits.extend(_credit);
                waiters.push((
                    own.len(),
                    Waiter::Write {
                        items: Vec::new(),
                        rejected,
                        tier,
                        reply,
                        after_ack,
                        _credit: None,
                    },
                ));
                items.extend(own);
            }
            barrier @ Waiter::Barrier { .. } => waiters.push((0, barrier)),
        }
    }
    (items, waiters, credits)
}

/// Runs one group commit of `items` on the blocking pool, timed; a store failure or a
/// panicked task becomes the error every item gets.
async fn apply_blocking<T: Send + 'static>(
    store: Arc<Store>,
    items: Vec<Write>,
    apply: impl FnOnce(&Store, Vec<Write>) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ErrorCode> {
    let count = items.len();
    let started = Instant::now();
    let applied = tokio::task::spawn_blocking(move || apply(&store, items)).await;
    metrics::histogram!(STORE_FLUSH_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::histogram!(STORE_BATCH_ITEMS).record(count as f64);
    match applied {
        Ok(Ok(outcomes)) => Ok(outcomes),
        Ok(Err(e)) => {
            error!(error = %e, items = count, "store batch failed");
            Err(e.to_error_code())
        }
        Err(join) => {
            error!(error = %join, items = count, "store flush task panicked");
            Err(ErrorCode::Unavailable {
                reason: "store flush failed".into(),
            })
        }
    }
}

/// Answers each waiter with its share of `result` (one outcome per item, in order).
fn answer(
    waiters: Vec<(usize, Waiter)>,
    result: Result<Vec<Result<Receipt, ErrorCode>>, ErrorCode>,
) {
    debug!(writers = waiters.len(), "batch done");
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(code) => {
            for (_, waiter) in waiters {
                waiter.fail(code.clone());
            }
            return;
        }
    };
    let mut outcomes = outcomes.into_iter();
    for (len, waiter) in waiters {
        match waiter {
            Waiter::Write {
                rejected,
                reply,
                after_ack,
                ..
            } => {
                let own: Vec<_> = outcomes.by_ref().take(len).collect();
                let acked: Vec<ItemId> = match after_ack {
                    Some(_) => own.iter().flatten().map(|r| r.id).collect(),
                    None => Vec::new(),
                };
                let _ = reply.send(Ok(merge_rejected(own, rejected)));
                if let Some(after_ack) = after_ack
                    && !acked.is_empty()
                {
                    after_ack(acked);
                }
            }
            Waiter::Barrier { reply } => {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

/// The leader's write: the items of partitions this node leads are appended to its log
/// and shipped; each is answered once a write quorum holds it (its receipt names the
/// replicas), in a task of its own so the next group commit need not wait for the
/// followers. The credits go with that task: the tier window counts a write until its
/// writer has the answer.
async fn persist_replicated(
    store: Arc<Store>,
    slot: ReplicationSlot,
    items: Vec<Write>,
    waiters: Vec<(usize, Waiter)>,
    credits: Vec<Credit>,
) -> (bool, Vec<Credit>) {
    let replication = match slot.get() {
        Ok(replication) => Arc::clone(replication),
        Err(refusal) => {
            answer(waiters, Err(refusal));
            return (true, credits);
        }
    };
    let partitions = store.partitions();
    let mut outcomes: Vec<Option<Result<Receipt, ErrorCode>>> = vec![None; items.len()];
    let mut admitted = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (at, write) in items.into_iter().enumerate() {
        match replication.admit(partition_of(&write.item.user_id, partitions)) {
            Ok(()) => {
                positions.push(at);
                admitted.push(write);
            }
            Err(refusal) => outcomes[at] = Some(Err(refusal)),
        }
    }
    let touched: Vec<PartitionId> = admitted
        .iter()
        .map(|w| partition_of(&w.item.user_id, partitions))
        .collect();
    let shipper = Arc::clone(&replication);
    let apply = move |store: &Store, writes| {
        store.try_apply_replicated(writes, &mut |records, requests| {
            shipper.shipping(records, requests)
        })
    };
    let applied = match apply_blocking(store, admitted, apply).await {
        Ok(applied) => applied,
        Err(code) => {
            // Records may have gone to followers under sequences the store now reuses.
            replication.failed(touched);
            answer(waiters, Err(code));
            return (false, credits);
        }
    };
    replication.appended(&applied.records);
    let mut waits = Vec::new();
    let mut waiting = Vec::new();
    for ((at, outcome), wait) in positions
        .into_iter()
        .zip(applied.outcomes)
        .zip(applied.waits)
    {
        if let (Ok(_), Some(wait)) = (&outcome, wait) {
            waiting.push(at);
            waits.push(wait);
        }
        outcomes[at] = Some(outcome);
    }
    tokio::spawn(async move {
        let committed = if waits.is_empty() {
            Vec::new()
        } else {
            replication.commit(waits).await
        };
        for (at, result) in waiting.into_iter().zip(committed) {
            match (result, &mut outcomes[at]) {
                (Ok(replicas), Some(Ok(receipt))) => receipt.replicas = replicas,
                (Err(refusal), outcome) => *outcome = Some(Err(refusal)),
                _ => {}
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(ErrorCode::Unavailable {
                        reason: "replication lost the write".into(),
                    })
                })
            })
            .collect();
        answer(waiters, Ok(outcomes));
        drop(credits);
    });
    (true, Vec::new())
}

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        mut args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A restarted store actor takes the settings in force, not those of the start.
        let breaker = args
            .policy
            .as_mut()
            .map_or(args.breaker, |p| p.borrow_and_update().store_breaker);
        let gate = StoreGate::new(
            args.writes.config(),
            breaker,
            args.max_batch,
            Instant::now(),
        )?;
        let mut state = StoreState {
            store: args.store,
            replication: args.replication,
            gate,
            batch: 0,
            flush_task: None,
            reads: JoinSet::new(),
            board: args.board,
            writes_board: args.writes,
            timer: None,
            policy: args.policy,
        };
        // The first report whatever the board holds (the gauge starts here).
        publish_breaker(
            STORE_DEPENDENCY,
            &state.board,
            std::iter::empty(),
            state.gate.breaker_state(),
        );
        state.publish(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.follow_policy();
        match message {
            StoreMsg::WriteMany {
                requests,
                mut credit,
            } => {
                let now = Instant::now();
                for WriteRequest {
                    items,
                    rejected,
                    tier,
                    reply,
                    after_ack,
                } in requests
                {
                    if items.is_empty() {
                        let _ = reply.send(Ok(merge_rejected(Vec::new(), rejected)));
                        continue;
                    }
                    let waiter = Waiter::Write {
                        items,
                        rejected,
                        tier,
                        reply,
                        after_ack,
                        _credit: credit.as_mut().and_then(Credit::split_one),
                    };
                    let weight = waiter.weight();
                    if let Admitted::Full(waiter) = state.gate.handle_write(now, waiter, weight) {
                        debug!(tier = tier.as_str(), "store-writes bulkhead full");
                        waiter.refuse_overloaded();
                    }
                }
                // Slots of submissions answered before the store are free now.
                drop(credit);
                state.drive(&myself);
            }
            StoreMsg::Flush { reply } => {
                state.gate.handle_barrier(Waiter::Barrier { reply });
                state.drive(&myself);
            }
            StoreMsg::Flushed(done) => {
                if done.batch == state.batch && state.gate.flushing() {
                    state.flush_task = None;
                    state.gate.handle_flushed(Instant::now(), done.durable);
                    // After the slots are free: a credit lets the tier queues send the
                    // next write, which must find its slot.
                    drop(Credit::merge(done.credits));
                    state.drive(&myself);
                } else {
                    warn!(
                        batch = done.batch,
                        current = state.batch,
                        "stale flush completion"
                    );
                }
            }
            StoreMsg::Breaker { command, reply } => {
                match command {
                    BreakerCommand::ForceOpen => state.gate.force_open(),
                    BreakerCommand::Reset => state.gate.reset(),
                }
                // Published before the answer: whoever hears it finds the board moved.
                state.drive(&myself);
                let _ = reply.send(state.gate.breaker_state());
            }
            StoreMsg::Tick => {
                // The timer fired: a later deadline needs a new one.
                state.timer = None;
                state.gate.tick(Instant::now());
                state.drive(&myself);
            }
            StoreMsg::Get { id, reply } => state.read(reply, move |s| s.get(id)),
            StoreMsg::List {
                user_id,
                after,
                limit,
                reply,
            } => state.read(reply, move |s| s.list_by_user(&user_id, after, limit)),
            StoreMsg::Authenticate { key, reply } => {
                state.read(reply, move |s| s.authenticate(&key))
            }
            StoreMsg::CreateApiKey { role, name, reply } => {
                state.read(reply, move |s| s.create_api_key(role, name))
            }
            StoreMsg::EnsureAdminKey { reply } => state.read(reply, |s| s.ensure_admin_key()),
            #[cfg(feature = "fault-injection")]
            StoreMsg::InjectPanic => panic!("injected store actor panic"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let stopping = || ErrorCode::Unavailable {
            reason: "store stopping".into(),
        };
        let queued = state.gate.drain();
        let failed_queued = queued.len();
        for waiter in queued {
            waiter.fail(stopping());
        }
        if let Some((_, timer)) = state.timer.take() {
            timer.abort();
        }
        // The next incarnation starts with an empty bulkhead.
        state.writes_board.publish(0, 0);
        metrics::gauge!(STORE_QUEUE_DEPTH).set(0.0);
        // The batch on its way to disk answers its own writers; wait for it so that a
        // stopped store has nothing in flight.
        if let Some(task) = state.flush_task.take() {
            let _ = task.await;
        }
        while state.reads.join_next().await.is_some() {}
        debug!(failed_queued, "store actor stopped");
        Ok(())
    }
}
