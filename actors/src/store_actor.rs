//! The store actor: the thin driver around [`GroupCommit`] and the blocking [`Store`].
//!
//! Writes queue in the group commit policy; the actor hands each batch to a flush task
//! that runs the blocking `apply` (one flush for the whole batch) on the blocking pool,
//! answers every writer of the batch itself once it is durable, and then tells the
//! actor `Flushed` so the next batch can start. Because the flush task holds the reply
//! ports, a batch already on its way to disk is answered even if the actor dies.
//!
//! Writes pass the store-writes bulkhead first: at most `max_concurrent` submissions are
//! in the group commit (the batch being flushed and the next one), at most `max_queue`
//! wait for a slot, and the rest are refused `Overloaded` at once. The tier queues size
//! their window to the bulkhead's capacity, so in steady state nothing is refused here
//! and the backlog stays in the tier queues, where priorities apply.
//!
//! Reads (get, list, authenticate) never queue behind a flush: each runs on the
//! blocking pool at once and replies directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::{ErrorCode, ItemId, PageToken, Receipt, Role, StoredItem, Tier};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, warn};

use crate::group_commit::{DEFAULT_MAX_BATCH_ITEMS, GroupCommit};
use crate::policy::breaker::{Admission, BreakerConfig, BreakerState, Permit};
use crate::policy::bulkhead::{Bulkhead, Entry};
use crate::published_breaker::{BreakerBoard, PublishedBreaker};
use crate::published_bulkhead::BulkheadBoard;
use crate::store::{Store, StoreError, Write};
use crate::telemetry::{STORE_BATCH_ITEMS, STORE_FLUSH_DURATION_SECONDS, STORE_QUEUE_DEPTH};
use crate::tier_queues::{Credit, shed};

/// One outcome per submitted item, in order, or one error for the whole batch (the
/// store is unavailable and nothing of the batch was acknowledged).
pub type BatchOutcome = Result<Vec<Result<Receipt, ErrorCode>>, ErrorCode>;

/// A page of a user's items and the token of the next page.
pub type Page = (Vec<StoredItem>, Option<PageToken>);

/// Work to run once a write's caller has its answer, given the ids of the items the
/// store acknowledged (production mode queues its after-ack review this way).
pub type AfterAck = Box<dyn FnOnce(Vec<ItemId>) + Send>;

/// One submission's write: the items with their verdicts, outcomes already decided for
/// other positions of the caller's batch, and where the merged outcomes go.
pub struct WriteRequest {
    /// The items to store, with the content policy's verdicts.
    pub items: Vec<Write>,
    /// `(index in the caller's batch, outcome)`, sorted by index.
    pub rejected: Vec<(usize, ErrorCode)>,
    /// Where the merged outcomes go.
    pub reply: RpcReplyPort<BatchOutcome>,
    /// Run after the reply when the store acknowledged any item; dropped otherwise.
    pub after_ack: Option<AfterAck>,
}

/// Messages of the store actor.
pub enum StoreMsg {
    /// Store submissions (a validator's batch, or one), each answered on its own; the
    /// credit holds their tier-queue slots and is released once their bulkhead slots
    /// are free.
    WriteMany {
        /// The submissions' writes, in order.
        requests: Vec<WriteRequest>,
        /// The tier-queue slots of the batch.
        credit: Option<Credit>,
    },
    /// Read one item.
    Get {
        /// Its id.
        id: ItemId,
        /// The item, if stored.
        reply: RpcReplyPort<Result<Option<StoredItem>, ErrorCode>>,
    },
    /// Read a page of a user's items, oldest first.
    List {
        /// Whose items.
        user_id: String,
        /// Where the previous page ended.
        after: Option<PageToken>,
        /// Most items to return.
        limit: u32,
        /// The page.
        reply: RpcReplyPort<Result<Page, ErrorCode>>,
    },
    /// Create an API key.
    CreateApiKey {
        /// Its role.
        role: Role,
        /// An operator's label.
        name: String,
        /// The key, shown once.
        reply: RpcReplyPort<Result<String, ErrorCode>>,
    },
    /// Create an admin key if no key exists.
    EnsureAdminKey {
        /// The new key, or `None` if keys exist.
        reply: RpcReplyPort<Result<Option<String>, ErrorCode>>,
    },
    /// Look up the role of an API key.
    Authenticate {
        /// The presented key.
        key: String,
        /// Its role, or `None` if unknown.
        reply: RpcReplyPort<Result<Option<Role>, ErrorCode>>,
    },
    /// Answer once every write queued before this message is durable.
    Flush {
        /// `Ok` once durable.
        reply: RpcReplyPort<Result<(), ErrorCode>>,
    },
    /// An operator's command to the store's circuit breaker; answers the new state.
    Breaker {
        /// What to do.
        command: BreakerCommand,
        /// The breaker's state afterwards.
        reply: RpcReplyPort<BreakerState>,
    },
    /// Internal: a timed breaker change (open → half-open) may be due.
    BreakerTick,
    /// Test-only: panic in the handler, as a bug would, to exercise supervision.
    #[cfg(feature = "fault-injection")]
    InjectPanic,
    /// Internal: the actor's flush task finished a batch.
    Flushed(FlushDone),
}

/// The completion of a batch, sent by the actor's own flush task (opaque outside).
pub struct FlushDone {
    batch: u64,
    /// Whether the batch became durable (the breaker's outcome).
    durable: bool,
    /// The tier-queue credits of the batch's writers, dropped by the actor only after
    /// it has freed their bulkhead slots: a credit lets the tier queues send another
    /// write, which must find its slot free.
    credits: Vec<Credit>,
}

/// What an operator can do to a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerCommand {
    /// Open it until reset: every write is refused with `CircuitOpen`.
    ForceOpen,
    /// Close it and forget its history.
    Reset,
}

/// The name of the store's dependency in `CircuitOpen` errors, metrics and `chorus ctl`.
pub const STORE_DEPENDENCY: &str = "store";

/// A writer waiting in the group commit queue.
enum Waiter {
    Write {
        items: Vec<Write>,
        rejected: Vec<(usize, ErrorCode)>,
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

    /// Whether it holds a store-writes bulkhead slot (barriers do not).
    fn is_write(&self) -> bool {
        matches!(self, Waiter::Write { .. })
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
        }
    }
}

/// The store actor's state.
pub struct StoreState {
    store: Arc<Store>,
    commit: GroupCommit<Waiter>,
    /// Sequence number of the batch in flight (or of the last one).
    batch: u64,
    /// The task persisting the batch in flight.
    flush_task: Option<JoinHandle<()>>,
    /// The store's circuit breaker: every batch is one call.
    breaker: PublishedBreaker,
    /// The permit of the batch in flight, and when it started.
    permit: Option<(Permit, Instant)>,
    /// Reads and key operations running on the blocking pool.
    reads: JoinSet<()>,
    /// The store-writes bulkhead: a slot per write in the group commit.
    writes: Bulkhead<u64>,
    /// Writes waiting for a bulkhead slot, by ticket (the bulkhead keeps their order).
    waiting: HashMap<u64, Waiter>,
    next_ticket: u64,
    /// Writes of the batch in flight: they free their slots when it completes.
    in_flight_writes: usize,
    /// Where the bulkhead's occupancy is published.
    writes_board: Arc<BulkheadBoard>,
}

impl StoreState {
    /// Starts the next batch if the policy says so.
    fn maybe_flush(&mut self, myself: &ActorRef<StoreMsg>) {
        loop {
            let batch = self.commit.poll_batch();
            // Every change of the queue passes through here, so the gauge stays current.
            metrics::gauge!(STORE_QUEUE_DEPTH).set(self.commit.queued_items() as f64);
            let Some(batch) = batch else {
                return;
            };
            let now = Instant::now();
            let writes = batch.iter().filter(|w| w.is_write()).count();
            match self.breaker.try_acquire(now) {
                Admission::Allowed(permit) => {
                    self.in_flight_writes = writes;
                    self.permit = Some((permit, now));
                    self.batch += 1;
                    let seq = self.batch;
                    let store = self.store.clone();
                    let myself = myself.clone();
                    self.flush_task = Some(tokio::spawn(async move {
                        let (durable, credits) = persist_and_reply(store, batch).await;
                        // Fails only if the actor is gone; its successor starts fresh.
                        let _ = myself.cast(StoreMsg::Flushed(FlushDone {
                            batch: seq,
                            durable,
                            credits,
                        }));
                    }));
                    return;
                }
                Admission::Rejected { .. } => {
                    // The store is considered down: answer at once instead of queueing.
                    for waiter in batch {
                        waiter.fail(ErrorCode::CircuitOpen {
                            dependency: STORE_DEPENDENCY.into(),
                        });
                    }
                    self.commit.handle_flushed();
                    self.release_writes(writes, now);
                    self.schedule_tick(myself);
                }
            }
        }
    }

    /// A write asks for a bulkhead slot: it joins the group commit, waits, or is refused.
    fn admit_write(&mut self, waiter: Waiter, tier: Tier) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        match self.writes.try_enter(Instant::now(), ticket) {
            Entry::Run => {
                let weight = waiter.weight();
                self.commit.handle_write(waiter, weight);
            }
            Entry::Queued { .. } => {
                self.waiting.insert(ticket, waiter);
            }
            Entry::Full => {
                debug!(tier = tier.as_str(), "store-writes bulkhead full");
                waiter.fail(shed(tier));
            }
        }
        self.publish_writes();
    }

    /// `count` writes are done: their slots go to waiting writes, in order.
    fn release_writes(&mut self, count: usize, now: Instant) {
        for _ in 0..count {
            if let Some(next) = self.writes.leave(now)
                && let Some(waiter) = self.waiting.remove(&next)
            {
                let weight = waiter.weight();
                self.commit.handle_write(waiter, weight);
            }
        }
        self.publish_writes();
    }

    fn publish_writes(&self) {
        self.writes_board
            .publish(self.writes.running(), self.writes.queued());
    }

    /// Arms a timer for the breaker's next timed change, if one is pending.
    fn schedule_tick(&self, myself: &ActorRef<StoreMsg>) {
        if let Some(deadline) = self.breaker.next_deadline() {
            let delay = deadline.saturating_duration_since(Instant::now());
            // The timer's handle is not kept: a tick that finds nothing due is harmless.
            drop(myself.send_after(delay, || StoreMsg::BreakerTick));
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
/// whether the batch became durable, and the writers' tier-queue credits.
async fn persist_and_reply(store: Arc<Store>, batch: Vec<Waiter>) -> (bool, Vec<Credit>) {
    let mut items = Vec::with_capacity(batch.iter().map(Waiter::weight).sum());
    // The waiters without their items: how many outcomes each takes, and where to send.
    let mut waiters = Vec::with_capacity(batch.len());
    let mut credits = Vec::with_capacity(batch.len());
    for waiter in batch {
        match waiter {
            Waiter::Write {
                items: own,
                rejected,
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
    let count = items.len();
    let started = Instant::now();
    let applied = tokio::task::spawn_blocking(move || store.try_apply(items)).await;
    metrics::histogram!(STORE_FLUSH_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::histogram!(STORE_BATCH_ITEMS).record(count as f64);
    let result = match applied {
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
    };
    debug!(items = count, writers = waiters.len(), "batch done");
    let durable = result.is_ok();
    match result {
        Ok(outcomes) => {
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
                        let _ = reply.send(Ok(merge(own, rejected)));
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
        Err(code) => {
            for (_, waiter) in waiters {
                waiter.fail(code.clone());
            }
        }
    }
    (durable, credits)
}

/// Splices pre-decided outcomes back into their positions of the caller's batch.
pub fn merge(
    stored: Vec<Result<Receipt, ErrorCode>>,
    rejected: Vec<(usize, ErrorCode)>,
) -> Vec<Result<Receipt, ErrorCode>> {
    if rejected.is_empty() {
        return stored;
    }
    let total = stored.len() + rejected.len();
    let mut stored = stored.into_iter();
    let mut rejected = rejected.into_iter().peekable();
    (0..total)
        .map(|i| match rejected.next_if(|(at, _)| *at == i) {
            Some((_, code)) => Err(code),
            // `apply` returns one outcome per item; a shortfall would be a bug.
            None => stored
                .next()
                .unwrap_or(Err(ErrorCode::Internal { request_id: 0 })),
        })
        .collect()
}

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let breaker =
            PublishedBreaker::new(STORE_DEPENDENCY, args.breaker, args.board, Instant::now())?;
        Ok(StoreState {
            store: args.store,
            commit: GroupCommit::new(args.max_batch),
            batch: 0,
            flush_task: None,
            breaker,
            permit: None,
            reads: JoinSet::new(),
            writes: Bulkhead::new(args.writes.config())?,
            waiting: HashMap::new(),
            next_ticket: 0,
            in_flight_writes: 0,
            writes_board: args.writes,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StoreMsg::WriteMany {
                requests,
                mut credit,
            } => {
                for WriteRequest {
                    items,
                    rejected,
                    reply,
                    after_ack,
                } in requests
                {
                    if items.is_empty() {
                        let _ = reply.send(Ok(merge(Vec::new(), rejected)));
                        continue;
                    }
                    let tier =
                        Tier::most_urgent(items.iter().map(|w| w.item.tier)).unwrap_or_default();
                    let waiter = Waiter::Write {
                        items,
                        rejected,
                        reply,
                        after_ack,
                        _credit: credit.as_mut().and_then(Credit::split_one),
                    };
                    state.admit_write(waiter, tier);
                }
                // Slots of submissions answered before the store are free now.
                drop(credit);
                state.maybe_flush(&myself);
            }
            StoreMsg::Flush { reply } => {
                state.commit.handle_write(Waiter::Barrier { reply }, 0);
                state.maybe_flush(&myself);
            }
            StoreMsg::Flushed(done) => {
                if done.batch == state.batch && state.commit.in_flight() {
                    state.flush_task = None;
                    state.commit.handle_flushed();
                    let done_writes = std::mem::take(&mut state.in_flight_writes);
                    state.release_writes(done_writes, Instant::now());
                    drop(Credit::merge(done.credits));
                    if let Some((permit, started)) = state.permit.take() {
                        let now = Instant::now();
                        if done.durable {
                            state.breaker.on_success(now, permit, now - started);
                        } else {
                            state.breaker.on_failure(now, permit);
                            state.schedule_tick(&myself);
                        }
                    }
                    state.maybe_flush(&myself);
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
                    BreakerCommand::ForceOpen => state.breaker.force_open(),
                    BreakerCommand::Reset => state.breaker.reset(),
                }
                let _ = reply.send(state.breaker.state());
                state.maybe_flush(&myself);
            }
            StoreMsg::BreakerTick => {
                state.breaker.tick(Instant::now());
                state.schedule_tick(&myself);
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
        let queued = state.commit.queued() + state.waiting.len();
        let stopping = || ErrorCode::Unavailable {
            reason: "store stopping".into(),
        };
        for waiter in state.commit.drain() {
            waiter.fail(stopping());
        }
        for (_, waiter) in state.waiting.drain() {
            waiter.fail(stopping());
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
        debug!(failed_queued = queued, "store actor stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(n: u128) -> Result<Receipt, ErrorCode> {
        Ok(Receipt {
            id: ItemId(n),
            status: chorus_protocol::Status::Accepted,
            alignment_score: None,
            owner: chorus_protocol::NodeId("n".into()),
            replicas: vec![],
            stored_at: 0,
            enrichment: chorus_protocol::Enrichment::NotConfigured,
        })
    }

    #[test]
    fn merge_puts_rejections_back_in_place() {
        let bad = ErrorCode::invalid("text", "too long");
        let merged = merge(
            vec![receipt(1), receipt(3)],
            vec![(0, bad.clone()), (2, bad.clone()), (4, bad.clone())],
        );
        assert_eq!(
            merged,
            vec![
                Err(bad.clone()),
                receipt(1),
                Err(bad.clone()),
                receipt(3),
                Err(bad)
            ]
        );
    }
}
