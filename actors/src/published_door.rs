//! The tier stage's door as the rest of the node reads it: per tier, whether a
//! submission arriving now would be refused, and its retry hint.
//!
//! The tier queues actor publishes [`TierStage::door`] after every step it takes; the
//! handle and the QUIC server read it without a message. Under overload most requests
//! are refused, and reading a board lets the server answer them before it decodes their
//! bodies, spawns a task or sends an actor a message. The stage still decides for what
//! gets through, so a stale board costs a late refusal or one admission more, never a
//! wrong one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chorus_protocol::{ErrorCode, Tier};

use crate::core::scheduler::TierStage;

/// Where the door is published; shared by every incarnation of the tier queues.
#[derive(Debug, Default)]
pub struct DoorBoard {
    /// Per tier (indexed like `Tier::ALL`), the retry hint in milliseconds of a
    /// refusal, or 0 while the tier takes submissions.
    refusing: [AtomicU64; 4],
}

impl DoorBoard {
    /// A board with every tier open.
    pub fn new() -> Arc<Self> {
        Arc::new(DoorBoard::default())
    }

    /// Publishes what `stage`'s door says for each tier now.
    pub fn publish<J>(&self, stage: &TierStage<J>) {
        for tier in Tier::ALL {
            let hint = match stage.door(tier) {
                Some(ErrorCode::Overloaded { retry_after_ms, .. }) => retry_after_ms.max(1),
                _ => 0,
            };
            self.refusing[tier as usize].store(hint, Ordering::Relaxed);
        }
    }

    /// Opens every tier (the stage is gone; whoever replaces it decides afresh).
    pub fn open_all(&self) {
        for slot in &self.refusing {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// `Overloaded` when a submission of `tier` would be refused now.
    pub fn check(&self, tier: Tier) -> Result<(), ErrorCode> {
        match self.refusing[tier as usize].load(Ordering::Relaxed) {
            0 => Ok(()),
            retry_after_ms => Err(ErrorCode::Overloaded {
                tier,
                retry_after_ms,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::time::Instant;

    use super::*;
    use crate::policy::degradation::DegradationConfig;
    use crate::policy::tier_queue::TierQueueConfig;

    #[test]
    fn the_board_follows_the_stage_door_and_reopens() {
        let board = DoorBoard::new();
        let mut tiers = TierQueueConfig::default();
        tiers.batch.capacity = NonZeroUsize::new(1).unwrap();
        let mut stage: TierStage<u32> =
            TierStage::new(tiers, DegradationConfig::default(), 1).unwrap();
        let now = Instant::now();
        board.publish(&stage);
        assert!(Tier::ALL.into_iter().all(|t| board.check(t).is_ok()));

        // One job takes the only slot; the next batch job fills its tier.
        stage.handle_enqueue(now, now, Tier::Batch, 1).unwrap();
        while stage.poll(now).is_some() {}
        stage.handle_enqueue(now, now, Tier::Batch, 2).unwrap();
        board.publish(&stage);
        assert!(matches!(
            board.check(Tier::Batch),
            Err(ErrorCode::Overloaded {
                tier: Tier::Batch,
                retry_after_ms
            }) if retry_after_ms > 0
        ));
        for tier in [Tier::Realtime, Tier::Priority, Tier::Standard] {
            assert!(board.check(tier).is_ok(), "{tier:?}");
        }
        // The stage refuses what the board refuses.
        assert!(stage.handle_enqueue(now, now, Tier::Batch, 3).is_err());

        board.open_all();
        assert!(Tier::ALL.into_iter().all(|t| board.check(t).is_ok()));
    }
}
