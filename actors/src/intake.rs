//! The intake actor: the front door of the write path.
//!
//! It checks a submission's shape and each item's schema, then hands the valid items to
//! the validator pool ([`crate::validator_pool`]) together with the reply port; a
//! validator forwards them to the store, which answers the caller directly (no extra
//! hop back through intake). Invalid items get their own `Invalid`
//! outcome in place while the rest of the batch proceeds. Valid items are then admitted
//! by the submit rate limits ([`SubmitLimits`]: per user, per API key, global), which
//! intake owns: it handles every submit anyway, so the limits cost no extra message.
//! Later stages (owner lookup) slot in here.

use std::time::{Duration, Instant};

use chorus_protocol::{ErrorCode, Item, Tier, check_batch_len};
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::watch;
use tracing::debug;

use crate::caller::Caller;
use crate::policy::admission::SubmitLimits;
use crate::policy::breaker::BreakerState;
use crate::policy::degradation::Level;
use crate::policy::rate_limit::RateLimitConfig;
use crate::published_breaker::rejects;
use crate::store_actor::{BatchOutcome, STORE_DEPENDENCY, merge};
use crate::supervisor::Children;
use crate::tier_queues::{TierJob, TierMsg, shed};

/// How often idle rate-limit keys are forgotten (they hold no information).
const PURGE_EVERY: Duration = Duration::from_secs(10);

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
    },
    /// How many users the rate limiter tracks now (idle ones are forgotten).
    TrackedUsers {
        /// The count.
        reply: RpcReplyPort<usize>,
    },
}

/// The intake actor.
#[derive(Debug, Default)]
pub struct IntakeActor;

/// Arguments of the intake actor (read-only, shared by every incarnation).
pub struct IntakeArgs {
    /// Where the current validator pool is published.
    pub children: watch::Receiver<Children>,
    /// The submit limits; a restarted intake starts with full buckets.
    pub limits: RateLimitConfig,
    /// The store's circuit breaker as the store actor publishes it.
    pub store_breaker: watch::Receiver<BreakerState>,
    /// The degradation level as the tier queues publish it.
    pub level: watch::Receiver<Level>,
}

/// The intake actor's state: where to find the current validator pool.
pub struct IntakeState {
    children: watch::Receiver<Children>,
    limits: SubmitLimits,
    last_purge: Instant,
    store_breaker: watch::Receiver<BreakerState>,
    level: watch::Receiver<Level>,
}

impl IntakeState {
    /// Validates a submission and forwards it; answers the caller itself only when
    /// nothing reaches the store.
    fn submit(&mut self, caller: &Caller, items: Vec<Item>, reply: RpcReplyPort<BatchOutcome>) {
        if let Err(e) = check_batch_len(items.len()) {
            let _ = reply.send(Err(e));
            return;
        }
        // With the store's breaker open nothing can be stored: say so at once, before
        // any limit is spent, rather than queue behind a failing disk.
        if rejects(*self.store_breaker.borrow()) {
            let _ = reply.send(Err(ErrorCode::CircuitOpen {
                dependency: STORE_DEPENDENCY.into(),
            }));
            return;
        }
        // A submission is as urgent as its most urgent item.
        let tier = Tier::most_urgent(items.iter().map(|i| i.tier)).unwrap_or_default();
        let level = *self.level.borrow();
        if !level.admits(tier) {
            debug!(
                tier = tier.as_str(),
                level = level.as_str(),
                "shed by the degradation level"
            );
            let _ = reply.send(Err(shed(tier)));
            return;
        }
        let mut valid = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        let now = Instant::now();
        for (index, item) in items.into_iter().enumerate() {
            if let Err(e) = item.validate() {
                debug!(item = %item.id, error = %e, "invalid item");
                rejected.push((index, e));
                continue;
            }
            match self.limits.admit(now, &item.user_id, &caller.key_id) {
                Ok(admitted) => {
                    if admitted.burst {
                        debug!(user = %item.user_id, "burst of submits");
                    }
                    valid.push(item);
                }
                Err(refusal) => {
                    debug!(user = %item.user_id, scope = refusal.scope.as_str(), "rate limited");
                    rejected.push((
                        index,
                        ErrorCode::RateLimited {
                            // Rounded up: retrying a millisecond early would fail again.
                            retry_after_ms: refusal.retry_after.as_micros().div_ceil(1000) as u64,
                        },
                    ));
                }
            }
        }
        if now.duration_since(self.last_purge) >= PURGE_EVERY {
            let purged = self.limits.purge_idle(now);
            self.last_purge = now;
            if purged > 0 {
                debug!(
                    purged,
                    tracked = self.limits.tracked_users(),
                    "idle rate-limit keys forgotten"
                );
            }
        }
        if valid.is_empty() {
            let _ = reply.send(Ok(merge(Vec::new(), rejected)));
            return;
        }
        let Some(tiers) = self.children.borrow().tiers.clone() else {
            let _ = reply.send(Err(tiers_unavailable()));
            return;
        };
        let job = TierJob {
            items: valid,
            rejected,
            reply,
        };
        if let Err(MessagingErr::SendErr(TierMsg::Enqueue { job, .. })) =
            tiers.cast(TierMsg::Enqueue { tier, job })
        {
            let _ = job.reply.send(Err(tiers_unavailable()));
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
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = Instant::now();
        let limits = SubmitLimits::new(&args.limits, now)?;
        Ok(IntakeState {
            children: args.children,
            limits,
            last_purge: now,
            store_breaker: args.store_breaker,
            level: args.level,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IntakeMsg::Submit {
                caller,
                items,
                reply,
            } => state.submit(&caller, items, reply),
            IntakeMsg::TrackedUsers { reply } => {
                let _ = reply.send(state.limits.tracked_users());
            }
        }
        Ok(())
    }
}
