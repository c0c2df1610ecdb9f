//! Anti-entropy: a leader compares each follower's copy of the partitions it leads
//! with its own and repairs copies that differ. Shipments keep followers in step by
//! sequence and epoch, but they never look at bytes a follower already holds: a copy
//! damaged on disk, or restored from an old snapshot next to a newer epoch history,
//! would stay wrong. Every `anti_entropy_interval` one (partition, follower) pair is
//! checked:
//!
//! - only at rest: the leader's last sequence unchanged since its previous visit and
//!   the follower in step with it (a busy partition's digests would not compare, see
//!   [`super::digest`]);
//! - by bisection: digests of [`WAYS`] ranges on both sides, then of the first range
//!   that differs, until it is at most [`WAYS`] sequences wide;
//! - then the follower drops its records from that range on ([`Forward::Repair`],
//!   fenced by epoch and by the last sequence compared) and the shipper sends the
//!   leader's again.
//!
//! A pair found equal is not checked again until its partition changes, its follower
//! is seen down or restarts (a new run), or [`RECHECK_AFTER`] passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use chorus_actors::store::RepairOutcome;
use chorus_protocol::{NodeId, PartitionId};
use tracing::{debug, info, warn};

use super::digest::{PartitionDigest, range_digests};
use super::{Part, Replicator};
use crate::cluster::routing::{Forward, ForwardReply};

/// Ranges compared per round of the bisection.
pub const WAYS: usize = 16;
/// How long a pair found equal is trusted before it is compared again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(600);

/// Partition copies compared, by outcome (`equal`, `repaired`, `busy`, `failed`).
pub const ANTI_ENTROPY_CHECKS: &str = "chorus_anti_entropy_checks_total";
/// Live records a follower dropped in repairs (shipped again by its leader).
pub const ANTI_ENTROPY_RECORDS_REPAIRED: &str = "chorus_anti_entropy_records_repaired_total";

/// Splits the sequences `(after, up_to]` into at most `ways` contiguous ranges of
/// nearly equal width, ascending.
pub fn split(after: u64, up_to: u64, ways: usize) -> Vec<(u64, u64)> {
    let width = up_to.saturating_sub(after);
    let ways = (ways.max(1) as u64).min(width.max(1));
    let mut ranges = Vec::with_capacity(ways as usize);
    let mut start = after;
    for i in 1..=ways {
        // u128: `width * i` may not fit a u64.
        let end = after + (u128::from(width) * u128::from(i) / u128::from(ways)) as u64;
        if end > start {
            ranges.push((start, end));
            start = end;
        }
    }
    ranges
}

/// The first of `ranges` whose digests differ, if any.
pub fn first_difference(
    ranges: &[(u64, u64)],
    mine: &[PartitionDigest],
    theirs: &[PartitionDigest],
) -> Option<(u64, u64)> {
    ranges
        .iter()
        .zip(mine.iter().zip(theirs))
        .find(|(_, (m, t))| m != t)
        .map(|(&range, _)| range)
}

/// What anti-entropy found on a node since start (`chorus ctl replicas` shows it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// Follower copies found equal to the leader's.
    pub equal: u64,
    /// Follower copies found different and repaired.
    pub repaired: u64,
    /// Live records those repairs dropped (shipped again).
    pub records_repaired: u64,
}

/// [`Found`]'s running counts.
#[derive(Debug, Default)]
pub(super) struct Counts {
    equal: AtomicU64,
    repaired: AtomicU64,
    records_repaired: AtomicU64,
}

impl Counts {
    pub(super) fn read(&self) -> Found {
        Found {
            equal: self.equal.load(Ordering::Relaxed),
            repaired: self.repaired.load(Ordering::Relaxed),
            records_repaired: self.records_repaired.load(Ordering::Relaxed),
        }
    }
}

/// What one check of a pair found.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    /// The copies hold the same records.
    Equal,
    /// The follower's copy differed from `after` on and was cut there.
    Repaired { after: u64, removed: u64 },
    /// Records arrived or went during the check, or leadership changed: try later.
    Busy,
}

/// A pair to check: a partition this node leads and one of its followers.
#[derive(Clone, Debug)]
struct Pair {
    partition: PartitionId,
    follower: NodeId,
    epoch: u64,
    last: u64,
}

/// Checks one pair every `interval` until replication stops.
pub(super) async fn run(replicator: Replicator, interval: Duration) {
    for outcome in ["equal", "repaired", "busy", "failed"] {
        metrics::counter!(ANTI_ENTROPY_CHECKS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(ANTI_ENTROPY_RECORDS_REPAIRED).increment(0);
    let mut rounds = Rounds::default();
    let counts = &replicator.inner.anti_entropy;
    loop {
        tokio::select! {
            _ = replicator.inner.stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(pair) = rounds.next(&replicator) else {
            continue;
        };
        // The follower's run before the check: a restart during it voids the verdict.
        let run = replicator.inner.cluster.run_of(&pair.follower);
        let outcome = match replicator.check(&pair).await {
            Ok(Checked::Equal) => {
                rounds.verified(&pair, run);
                counts.equal.fetch_add(1, Ordering::Relaxed);
                "equal"
            }
            Ok(Checked::Repaired { after, removed }) => {
                info!(
                    partition = pair.partition,
                    follower = %pair.follower,
                    after,
                    removed,
                    "anti-entropy repaired a follower's copy"
                );
                metrics::counter!(ANTI_ENTROPY_RECORDS_REPAIRED).increment(removed);
                counts.repaired.fetch_add(1, Ordering::Relaxed);
                counts
                    .records_repaired
                    .fetch_add(removed, Ordering::Relaxed);
                "repaired"
            }
            Ok(Checked::Busy) => "busy",
            Err(error) => {
                debug!(partition = pair.partition, follower = %pair.follower, %error, "anti-entropy check failed");
                "failed"
            }
        };
        metrics::counter!(ANTI_ENTROPY_CHECKS, "outcome" => outcome).increment(1);
    }
}

/// A pair found equal: at (epoch, last), when, and the follower's run (incarnation)
/// then.
type Verified = (u64, u64, Instant, Option<u64>);

/// Which pair comes next: round robin over the partitions led, skipping busy ones and
/// pairs verified at their current (epoch, last).
#[derive(Default)]
struct Rounds {
    /// Where the previous visit stopped.
    cursor: usize,
    /// Each partition's (epoch, last) at the previous visit.
    seen: HashMap<PartitionId, (u64, u64)>,
    /// Pairs found equal.
    equal: HashMap<(PartitionId, NodeId), Verified>,
}

impl Rounds {
    fn next(&mut self, replicator: &Replicator) -> Option<Pair> {
        // A follower that was down, or restarted (a new run, even one too quick to be
        // seen down), may have come back with another copy.
        let cluster = &replicator.inner.cluster;
        let view = cluster.ring();
        self.equal.retain(|(_, follower), (.., run)| {
            view.live.contains(follower) && cluster.run_of(follower) == *run
        });
        let parts = replicator.parts();
        let count = parts.len();
        for step in 0..count {
            let p = (self.cursor + step) % count;
            let Part::Leading(leading) = &parts[p] else {
                continue;
            };
            let partition = p as PartitionId;
            let now = (leading.epoch, leading.quorum.last());
            let at_rest = self.seen.insert(partition, now) == Some(now);
            if !at_rest || now.1 == 0 {
                continue;
            }
            let due = leading.followers.iter().find(|follower| {
                let in_step = leading.quorum.follower_last(follower) == Some(now.1);
                let trusted = self
                    .equal
                    .get(&(partition, (*follower).clone()))
                    .is_some_and(|&(epoch, last, at, _)| {
                        (epoch, last) == now && at.elapsed() < RECHECK_AFTER
                    });
                in_step && !trusted
            });
            if let Some(follower) = due {
                self.cursor = p + 1;
                return Some(Pair {
                    partition,
                    follower: follower.clone(),
                    epoch: now.0,
                    last: now.1,
                });
            }
        }
        self.cursor = 0;
        None
    }

    fn verified(&mut self, pair: &Pair, run: Option<u64>) {
        self.equal.insert(
            (pair.partition, pair.follower.clone()),
            (pair.epoch, pair.last, Instant::now(), run),
        );
    }
}

impl Replicator {
    /// Compares `pair`'s copies by bisection and repairs the follower's if they differ.
    async fn check(&self, pair: &Pair) -> Result<Checked, chorus_protocol::ErrorCode> {
        let (mut after, mut up_to) = (0, pair.last);
        loop {
            let ranges = split(after, up_to, WAYS);
            let Some(mine) =
                range_digests(&self.inner.node, pair.partition, pair.last, &ranges).await?
            else {
                return Ok(Checked::Busy);
            };
            let reply = self
                .inner
                .peers
                .forward(
                    &pair.follower,
                    Forward::Digests {
                        partition: pair.partition,
                        expect_last: pair.last,
                        ranges: ranges.clone(),
                    },
                )
                .await?;
            let theirs = match reply {
                ForwardReply::Digests(Some(theirs)) if theirs.len() == ranges.len() => theirs,
                ForwardReply::Digests(_) => return Ok(Checked::Busy),
                other => {
                    warn!(follower = %pair.follower, reply = ?other, "unexpected answer to a digest request");
                    return Ok(Checked::Busy);
                }
            };
            match first_difference(&ranges, &mine, &theirs) {
                // Later rounds narrow a range that differed: equal now means it moved.
                None if (after, up_to) == (0, pair.last) => return Ok(Checked::Equal),
                None => return Ok(Checked::Busy),
                Some((from, to)) if to - from <= WAYS as u64 => {
                    return self.repair(pair, from).await;
                }
                Some((from, to)) => (after, up_to) = (from, to),
            }
        }
    }

    /// Has the follower drop its copy after `after`, then ships it the leader's. The
    /// call takes the follower's shipper's turn: the answer to a shipment sent before
    /// the repair must not count the dropped records as held afterwards.
    async fn repair(&self, pair: &Pair, after: u64) -> Result<Checked, chorus_protocol::ErrorCode> {
        let Some(shipper) = self.shipper(&pair.follower) else {
            return Ok(Checked::Busy);
        };
        let turn = shipper.turn.write().await;
        if !self.still_leads(pair) {
            return Ok(Checked::Busy);
        }
        let reply = self
            .inner
            .peers
            .forward(
                &pair.follower,
                Forward::Repair {
                    partition: pair.partition,
                    epoch: pair.epoch,
                    expect_last: pair.last,
                    after,
                },
            )
            .await?;
        match reply {
            ForwardReply::Repaired(RepairOutcome::Truncated { removed }) => {
                {
                    let mut parts = self.parts();
                    if let Some(Part::Leading(leading)) = parts.get_mut(usize::from(pair.partition))
                        && leading.epoch == pair.epoch
                    {
                        // Nothing waits on these sequences (they were committed).
                        let _ = leading.quorum.acked(&pair.follower, after);
                    }
                }
                drop(turn);
                shipper.rescan();
                Ok(Checked::Repaired { after, removed })
            }
            ForwardReply::Repaired(RepairOutcome::Fenced { promised }) => {
                drop(turn);
                self.step_down(pair.partition, promised, "a replica promised a newer epoch");
                Ok(Checked::Busy)
            }
            ForwardReply::Repaired(RepairOutcome::Moved { .. }) => Ok(Checked::Busy),
            other => {
                warn!(follower = %pair.follower, reply = ?other, "unexpected answer to a repair");
                Ok(Checked::Busy)
            }
        }
    }

    /// Whether this node still leads `pair`'s partition in its epoch, at its last.
    fn still_leads(&self, pair: &Pair) -> bool {
        matches!(
            self.parts().get(usize::from(pair.partition)),
            Some(Part::Leading(leading))
                if leading.epoch == pair.epoch && leading.quorum.last() == pair.last
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_the_range_contiguously_without_empty_parts() {
        for (after, up_to, ways) in [(0, 100, 16), (5, 9, 16), (0, 1, 16), (7, 1000, 3)] {
            let ranges = split(after, up_to, ways);
            assert!(ranges.len() <= ways);
            assert_eq!(ranges.first().unwrap().0, after);
            assert_eq!(ranges.last().unwrap().1, up_to);
            assert!(ranges.iter().all(|&(a, b)| a < b));
            assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
        }
        assert_eq!(split(0, 4, 16).len(), 4);
        let huge = split(0, u64::MAX, 16);
        assert_eq!(huge.len(), 16);
        assert_eq!(huge.last().unwrap().1, u64::MAX);
    }

    #[test]
    fn the_first_differing_range_is_named() {
        let d = |hash| PartitionDigest { records: 1, hash };
        let ranges = [(0, 10), (10, 20), (20, 30)];
        assert_eq!(
            first_difference(&ranges, &[d(1), d(2), d(3)], &[d(1), d(2), d(3)]),
            None
        );
        assert_eq!(
            first_difference(&ranges, &[d(1), d(2), d(3)], &[d(1), d(9), d(8)]),
            Some((10, 20))
        );
    }

    /// Bisection over two logs that differ from one sequence on always ends at a
    /// range holding that sequence, within WAYS sequences of it.
    #[test]
    fn bisection_finds_the_first_difference() {
        for (last, differs_at) in [
            (1u64, 1u64),
            (100, 1),
            (100, 100),
            (5_000, 1_234),
            (1 << 40, 77),
        ] {
            let digest = |a: u64, b: u64| PartitionDigest {
                records: b - a,
                hash: u64::from(b >= differs_at && a < b),
            };
            let theirs = |a: u64, b: u64| PartitionDigest {
                records: b - a,
                hash: 0,
            };
            let (mut after, mut up_to) = (0, last);
            let found = loop {
                let ranges = split(after, up_to, WAYS);
                let mine: Vec<_> = ranges.iter().map(|&(a, b)| digest(a, b)).collect();
                let other: Vec<_> = ranges.iter().map(|&(a, b)| theirs(a, b)).collect();
                let (from, to) = first_difference(&ranges, &mine, &other).expect("they differ");
                if to - from <= WAYS as u64 {
                    break from;
                }
                (after, up_to) = (from, to);
            };
            assert!(
                found < differs_at && differs_at - found <= WAYS as u64,
                "{last} {differs_at}: {found}"
            );
        }
    }
}
