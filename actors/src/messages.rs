//! What the write path's actors send each other, in one place below them all, so that
//! no actor module imports another: intake, the tier queues, the validator pool and
//! the store actor each depend on this module and on [`crate::core`], and only the
//! supervisor and the handle know the actors themselves.
//!
//! ```text
//! Intake ─TierMsg::Enqueue(TierJob)─► TierQueues ─ValidateJob(Submissions, Credit)─► validators
//!   validators ─StoreMsg::WriteMany(WriteRequests, Credit)─► Store ─► each caller's reply
//!   Credit dropped ─TierMsg::Done─► TierQueues
//! ```

use std::time::Instant;

use chorus_protocol::{ErrorCode, Item, ItemId, PageToken, Role, StoredItem, Tier};
use ractor::factory::FactoryMessage;
use ractor::{ActorRef, RpcReplyPort};

use crate::caller::Caller;
use crate::core::admission::BatchOutcome;
use crate::core::scheduler::{DegradeCommand, QueueStatus};
use crate::policy::breaker::{BreakerCommand, BreakerState};
use crate::policy::degradation::Level;
use crate::store::Write;

/// A page of a user's items and the token of the next page.
pub type Page = (Vec<StoredItem>, Option<PageToken>);

/// Work to run once a write's caller has its answer, given the ids of the items the
/// store acknowledged (production mode queues its after-ack review this way).
pub type AfterAck = Box<dyn FnOnce(Vec<ItemId>) + Send>;

/// The live children of the supervisor; `None` while a child is down or restarting.
#[derive(Clone, Default)]
pub struct Children {
    /// The store actor.
    pub store: Option<ActorRef<StoreMsg>>,
    /// The intake actor.
    pub intake: Option<ActorRef<IntakeMsg>>,
    /// The validator pool's factory.
    pub validators: Option<ValidatorPool>,
    /// The tier queues actor.
    pub tiers: Option<ActorRef<TierMsg>>,
}

/// Messages of the intake actor.
pub enum IntakeMsg {
    /// Store a batch of items (a single submit is a batch of one).
    Submit {
        /// Who submits.
        caller: Caller,
        /// The items, 1..=`MAX_BATCH_ITEMS`.
        items: Vec<Item>,
        /// One outcome per item, or one error for the whole batch.
        reply: RpcReplyPort<BatchOutcome>,
        /// When the submission reached the node: its tier's budget runs from here.
        arrived: Instant,
        /// The id of the client request it serves, for tracing.
        request: Option<u64>,
    },
    /// How many users the rate limiter tracks now (idle ones are forgotten).
    TrackedUsers {
        /// The count.
        reply: RpcReplyPort<usize>,
    },
}

/// A submission on its way through the pipeline: its items, outcomes already decided
/// for other positions of the caller's batch, its tier and where the answer goes.
pub struct Submission {
    /// The items to validate and store.
    pub items: Vec<Item>,
    /// `(index in the caller's batch, outcome)`, sorted by index.
    pub rejected: Vec<(usize, ErrorCode)>,
    /// The most urgent tier among the caller's items (decided once, at admission).
    pub tier: Tier,
    /// When it reached the node: its tier's budget runs from here.
    pub arrived: Instant,
    /// The id of the client request it serves, carried to its records for tracing.
    pub request: Option<u64>,
    /// Taken by whoever answers.
    pub reply: Option<RpcReplyPort<BatchOutcome>>,
}

impl Submission {
    /// A submission of `items` of `tier` that reached the node at `arrived`;
    /// `rejected` are the outcomes already decided for other positions of the
    /// caller's batch, sorted by index.
    pub fn new(
        items: Vec<Item>,
        rejected: Vec<(usize, ErrorCode)>,
        tier: Tier,
        arrived: Instant,
        reply: RpcReplyPort<BatchOutcome>,
    ) -> Submission {
        Submission {
            items,
            rejected,
            tier,
            arrived,
            request: None,
            reply: Some(reply),
        }
    }

    /// Answers the caller with one error for the whole submission (if not answered yet).
    pub fn fail(&mut self, error: ErrorCode) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(error));
        }
    }
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
    /// A credit for `slots` slots of the tier queues `tiers`.
    pub fn new(tiers: ActorRef<TierMsg>, slots: usize) -> Credit {
        Credit { tiers, slots }
    }

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

/// Messages of the tier queues actor.
pub enum TierMsg {
    /// Queue a submission in its tier.
    Enqueue(Submission),
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

/// Submissions handed to the validator pool together (what the tier queues had ready
/// at once), with the tier queues' credit for their slots: one message to the factory,
/// one to a worker and one to the store for the whole batch.
pub struct ValidateJob {
    /// The submissions, most urgent first.
    pub submissions: Vec<Submission>,
    /// The tier queues' slots, carried to the store and dropped once they are free.
    pub credit: Option<Credit>,
}

impl ValidateJob {
    /// A job for `submissions` holding `credit` until they no longer need the pipeline.
    pub fn new(submissions: Vec<Submission>, credit: Credit) -> ValidateJob {
        ValidateJob {
            submissions,
            credit: Some(credit),
        }
    }

    /// A job for one submission that holds no tier-queue slot.
    pub fn single(submission: Submission) -> ValidateJob {
        ValidateJob {
            submissions: vec![submission],
            credit: None,
        }
    }

    /// The most urgent tier among the job's submissions.
    pub fn tier(&self) -> Tier {
        Tier::most_urgent(self.submissions.iter().map(|s| s.tier)).unwrap_or_default()
    }

    /// Answers every caller not answered yet with one error for its submission.
    pub fn fail(&mut self, error: ErrorCode) {
        for submission in &mut self.submissions {
            submission.fail(error.clone());
        }
    }
}

/// The validator pool factory's message type.
pub type ValidatorMsg = FactoryMessage<(), ValidateJob>;

/// The validator pool as the rest of the tree sees it.
pub type ValidatorPool = ActorRef<ValidatorMsg>;

/// One submission's write: the items with their verdicts, outcomes already decided for
/// other positions of the caller's batch, and where the merged outcomes go.
pub struct WriteRequest {
    /// The items to store, with the content policy's verdicts.
    pub items: Vec<Write>,
    /// `(index in the caller's batch, outcome)`, sorted by index.
    pub rejected: Vec<(usize, ErrorCode)>,
    /// The submission's tier (what a refusal names).
    pub tier: Tier,
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
    /// Internal: a timed change (breaker open → half-open, a waiter's expiry) may be due.
    Tick,
    /// Test-only: panic in the handler, as a bug would, to exercise supervision.
    #[cfg(feature = "fault-injection")]
    InjectPanic,
    /// Internal: the actor's flush task finished a batch.
    Flushed(FlushDone),
}

/// The completion of a batch, sent by the store actor's own flush task.
pub struct FlushDone {
    /// Which batch.
    pub(crate) batch: u64,
    /// Whether the batch became durable (the breaker's outcome).
    pub(crate) durable: bool,
    /// The tier-queue credits of the batch's writers, dropped by the actor only after
    /// it has freed their bulkhead slots: a credit lets the tier queues send another
    /// write, which must find its slot free.
    pub(crate) credits: Vec<Credit>,
}

/// Local-only messages under ractor's `cluster` feature: without it, ractor implements
/// `Message` for every `Send + 'static` type; with it (turned on by this crate's
/// `cluster` feature whenever something in the build enables `ractor/cluster`), each
/// message type needs its own impl. Ours never leave the node, so the defaults (not
/// serializable) are right.
#[cfg(feature = "cluster")]
mod impls {
    impl ractor::Message for super::StoreMsg {}
    impl ractor::Message for super::IntakeMsg {}
    impl ractor::Message for super::TierMsg {}
    impl ractor::Message for super::ValidateJob {}
}
