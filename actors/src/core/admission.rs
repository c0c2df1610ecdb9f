//! Admission: every check a submission passes before it may queue, in one place and in
//! a fixed order — batch length, the store's breaker, the degradation level's shed,
//! each item's shape, then the rate limits (per user, per API key, global).
//!
//! The order is chosen so that the cheapest whole-batch refusals come first and an
//! item refused for its shape spends no rate-limit token. The intake actor drives it;
//! [`shed_check`] is also what the node handle runs before any message is sent, so a
//! shed submission costs no mailbox hop (intake runs it again through
//! [`Admission::handle_submit`], for a level that moved meanwhile).

use std::time::{Duration, Instant};

use chorus_protocol::{ErrorCode, Item, Receipt, Tier, check_batch_len};

use crate::policy::admission::{LimitScope, SubmitLimits};
use crate::policy::breaker::BreakerState;
use crate::policy::degradation::Level;
use crate::policy::rate_limit::{RateLimitConfig, RateLimitConfigError};

/// How often idle rate-limit keys are forgotten (they hold no information).
pub const PURGE_EVERY: Duration = Duration::from_secs(10);

/// The retry hint for a submission shed by the degradation level or a full stage.
pub const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The name of the store's dependency in `CircuitOpen` errors, metrics and `chorus ctl`.
pub const STORE_DEPENDENCY: &str = "store";

/// One outcome per submitted item, in order, or one error for the whole batch (the
/// store is unavailable and nothing of the batch was acknowledged).
pub type BatchOutcome = Result<Vec<Result<Receipt, ErrorCode>>, ErrorCode>;

/// A submission is as urgent as its most urgent item (the one rule every stage uses).
pub fn urgency<'a>(items: impl IntoIterator<Item = &'a Item>) -> Tier {
    Tier::most_urgent(items.into_iter().map(|i| i.tier)).unwrap_or_default()
}

/// The answer to a submission of `tier` shed before it was queued (by the level, or a
/// full store-writes bulkhead).
pub fn shed(tier: Tier) -> ErrorCode {
    ErrorCode::Overloaded {
        tier,
        retry_after_ms: SHED_RETRY_AFTER.as_millis() as u64,
    }
}

/// Whether `level` takes a submission of `items`: its tier if so, the refusal if not.
pub fn shed_check(level: Level, items: &[Item]) -> Result<Tier, ErrorCode> {
    let tier = urgency(items);
    shed_tier(level, tier).map(|()| tier)
}

/// Whether `level` takes a submission of `tier` (the shed rule itself).
pub fn shed_tier(level: Level, tier: Tier) -> Result<(), ErrorCode> {
    if level.admits(tier) {
        Ok(())
    } else {
        Err(shed(tier))
    }
}

/// The state of the rest of the write path that admission reads (published by the
/// stages that own it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gates {
    /// The store's circuit breaker.
    pub store_breaker: BreakerState,
    /// The degradation level.
    pub level: Level,
}

/// A submission that may queue: its tier, the items admitted and the outcomes already
/// decided for the other positions of the caller's batch.
#[derive(Debug, PartialEq)]
pub struct Admitted {
    /// The most urgent tier among the caller's items.
    pub tier: Tier,
    /// The items that passed, in batch order.
    pub items: Vec<Item>,
    /// `(index in the caller's batch, outcome)`, sorted by index.
    pub rejected: Vec<(usize, ErrorCode)>,
}

/// What admission decided about a submission.
#[derive(Debug, PartialEq)]
pub enum Admit {
    /// Refused as a whole (nothing spent).
    Refused(ErrorCode),
    /// Every item was refused on its own: the caller's answer, one outcome per item.
    Answered(Vec<Result<Receipt, ErrorCode>>),
    /// Some items go on.
    Queue(Admitted),
}

/// Why an item was refused by a rate limit, for the driver's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The item's position in the caller's batch.
    pub index: usize,
    /// The limit that refused it.
    pub scope: LimitScope,
}

/// The admission state machine: the rate limits and when they were last purged.
pub struct Admission {
    limits: SubmitLimits,
    last_purge: Instant,
}

impl Admission {
    /// Admission with full buckets at `now`.
    pub fn new(limits: &RateLimitConfig, now: Instant) -> Result<Self, RateLimitConfigError> {
        Ok(Admission {
            limits: SubmitLimits::new(limits, now)?,
            last_purge: now,
        })
    }

    /// Takes new limits at `now`, every bucket starting full; invalid limits change
    /// nothing.
    pub fn reconfigure(
        &mut self,
        limits: &RateLimitConfig,
        now: Instant,
    ) -> Result<(), RateLimitConfigError> {
        self.limits = SubmitLimits::new(limits, now)?;
        self.last_purge = now;
        Ok(())
    }

    /// Decides about a submission of `items` sent with the API key `key_id` at `now`.
    pub fn handle_submit(
        &mut self,
        now: Instant,
        key_id: &str,
        items: Vec<Item>,
        gates: Gates,
    ) -> Admit {
        if let Err(e) = check_batch_len(items.len()) {
            return Admit::Refused(e);
        }
        // With the store's breaker open nothing can be stored: say so at once, before
        // any limit is spent, rather than queue behind a failing disk.
        if gates.store_breaker.rejects() {
            return Admit::Refused(ErrorCode::CircuitOpen {
                dependency: STORE_DEPENDENCY.into(),
            });
        }
        let tier = match shed_check(gates.level, &items) {
            Ok(tier) => tier,
            Err(e) => return Admit::Refused(e),
        };
        let mut valid = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            if let Err(e) = item.validate() {
                rejected.push((index, e));
                continue;
            }
            match self.limits.admit(now, &item.user_id, key_id) {
                Ok(_) => valid.push(item),
                Err(refusal) => rejected.push((
                    index,
                    ErrorCode::RateLimited {
                        // Rounded up: retrying a millisecond early would fail again.
                        retry_after_ms: refusal.retry_after.as_micros().div_ceil(1000) as u64,
                    },
                )),
            }
        }
        self.purge(now);
        if valid.is_empty() {
            return Admit::Answered(merge_rejected(Vec::new(), rejected));
        }
        Admit::Queue(Admitted {
            tier,
            items: valid,
            rejected,
        })
    }

    /// Forgets idle rate-limit keys at most every [`PURGE_EVERY`]; returns how many.
    fn purge(&mut self, now: Instant) -> usize {
        if now.duration_since(self.last_purge) < PURGE_EVERY {
            return 0;
        }
        self.last_purge = now;
        self.limits.purge_idle(now)
    }

    /// How many users the rate limiter tracks now.
    pub fn tracked_users(&self) -> usize {
        self.limits.tracked_users()
    }
}

/// Splices outcomes decided before the store back into their positions of the caller's
/// batch: `stored` fills the positions `rejected` does not name, in order.
pub fn merge_rejected(
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
            // The store returns one outcome per item; a shortfall would be a bug.
            None => stored
                .next()
                .unwrap_or(Err(ErrorCode::Internal { request_id: 0 })),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{ItemId, Kind, MAX_BATCH_ITEMS};
    use proptest::prelude::*;

    use super::*;
    use crate::policy::rate_limit::{BucketConfig, KeyedLimiterConfig, Rate};

    fn item(user: &str, tier: Tier) -> Item {
        let mut item = Item::new(user, Kind::Text);
        item.text = "fine".into();
        item.tier = tier;
        item
    }

    fn open() -> Gates {
        Gates {
            store_breaker: BreakerState::Closed,
            level: Level::Normal,
        }
    }

    fn admission(per_user_capacity: u32) -> Admission {
        let mut config = RateLimitConfig::default();
        config.per_user = KeyedLimiterConfig {
            bucket: BucketConfig {
                capacity: per_user_capacity,
                refill: Rate::per_minute(1),
            },
            ..config.per_user
        };
        Admission::new(&config, Instant::now()).unwrap()
    }

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
    fn whole_batch_refusals_come_first_and_spend_nothing() {
        let mut a = admission(1);
        let now = Instant::now();
        let too_many = vec![item("u", Tier::Standard); MAX_BATCH_ITEMS + 1];
        assert!(matches!(
            a.handle_submit(now, "k", too_many, open()),
            Admit::Refused(ErrorCode::Invalid { .. })
        ));
        let broken = Gates {
            store_breaker: BreakerState::Open,
            ..open()
        };
        assert!(matches!(
            a.handle_submit(now, "k", vec![item("u", Tier::Standard)], broken),
            Admit::Refused(ErrorCode::CircuitOpen { .. })
        ));
        let critical = Gates {
            level: Level::CriticalOnly,
            ..open()
        };
        assert_eq!(
            a.handle_submit(now, "k", vec![item("u", Tier::Batch)], critical),
            Admit::Refused(shed(Tier::Batch))
        );
        // None of that spent the user's single token.
        assert!(matches!(
            a.handle_submit(now, "k", vec![item("u", Tier::Standard)], open()),
            Admit::Queue(_)
        ));
    }

    #[test]
    fn a_batch_is_as_urgent_as_its_most_urgent_item() {
        let items = [item("u", Tier::Batch), item("u", Tier::Priority)];
        assert_eq!(urgency(&items), Tier::Priority);
        assert_eq!(urgency(&[]), Tier::default());
        // Shedding batch work keeps a batch that holds one realtime item.
        let mixed = [item("u", Tier::Batch), item("u", Tier::Realtime)];
        assert_eq!(shed_check(Level::CriticalOnly, &mixed), Ok(Tier::Realtime));
    }

    #[test]
    fn invalid_and_limited_items_are_answered_in_place() {
        let mut a = admission(1);
        let mut bad = item("v", Tier::Standard);
        bad.user_id = String::new();
        let items = vec![item("u", Tier::Standard), bad, item("u", Tier::Standard)];
        let Admit::Queue(admitted) = a.handle_submit(Instant::now(), "k", items, open()) else {
            panic!("the first item goes on");
        };
        assert_eq!(admitted.items.len(), 1);
        let at: Vec<usize> = admitted.rejected.iter().map(|(at, _)| *at).collect();
        assert_eq!(at, vec![1, 2]);
        assert!(matches!(
            admitted.rejected[1].1,
            ErrorCode::RateLimited { retry_after_ms } if retry_after_ms > 0
        ));
        // Nothing left for this user: the caller is answered without queueing.
        let answered =
            a.handle_submit(Instant::now(), "k", vec![item("u", Tier::Standard)], open());
        assert!(matches!(answered, Admit::Answered(o) if o.len() == 1 && o[0].is_err()));
    }

    #[test]
    fn merge_puts_rejections_back_in_place() {
        let bad = ErrorCode::invalid("text", "too long");
        let merged = merge_rejected(
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

    proptest! {
        /// Whatever the batch, the caller gets exactly one outcome per item in the
        /// end: the admitted items plus the rejected positions cover the batch once.
        #[test]
        fn every_position_is_accounted_for_once(
            spec in proptest::collection::vec((0u8..4, any::<bool>(), 0u8..3), 1..40),
            capacity in 1u32..20,
        ) {
            let mut a = admission(capacity);
            let items: Vec<Item> = spec
                .iter()
                .map(|&(tier, valid, user)| {
                    let mut i = item(&format!("user-{user}"), Tier::ALL[usize::from(tier)]);
                    if !valid {
                        i.text = String::new();
                    }
                    i
                })
                .collect();
            let total = items.len();
            match a.handle_submit(Instant::now(), "k", items, open()) {
                Admit::Refused(e) => prop_assert!(false, "refused as a whole: {e:?}"),
                Admit::Answered(outcomes) => {
                    prop_assert_eq!(outcomes.len(), total);
                    prop_assert!(outcomes.iter().all(Result::is_err));
                }
                Admit::Queue(admitted) => {
                    prop_assert_eq!(admitted.items.len() + admitted.rejected.len(), total);
                    prop_assert!(admitted.rejected.windows(2).all(|w| w[0].0 < w[1].0));
                    let stored = admitted.items.iter().map(|i| {
                        let mut r = receipt(0);
                        if let Ok(r) = &mut r { r.id = i.id; }
                        r
                    }).collect();
                    let merged = merge_rejected(stored, admitted.rejected);
                    prop_assert_eq!(merged.len(), total);
                    let internal = merged.iter().any(|o| matches!(o, Err(ErrorCode::Internal { .. })));
                    prop_assert!(!internal, "a position was left without an outcome");
                }
            }
        }
    }

    #[test]
    fn reconfigured_limits_apply_to_the_next_submission_with_full_buckets() {
        let mut a = admission(1);
        let now = Instant::now();
        let first = a.handle_submit(now, "k", vec![item("u", Tier::Standard)], open());
        assert!(matches!(first, Admit::Queue(_)));
        let second = a.handle_submit(now, "k", vec![item("u", Tier::Standard)], open());
        assert!(matches!(second, Admit::Answered(_)), "{second:?}");
        let mut wider = RateLimitConfig::default();
        wider.per_user.bucket = BucketConfig {
            capacity: 3,
            refill: Rate::per_minute(1),
        };
        a.reconfigure(&wider, now).unwrap();
        let items = (0..4).map(|_| item("u", Tier::Standard)).collect();
        match a.handle_submit(now, "k", items, open()) {
            Admit::Queue(admitted) => {
                assert_eq!(admitted.items.len(), 3);
                assert_eq!(admitted.rejected.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }
}
