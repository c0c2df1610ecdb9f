//! The replay guard: an opened gossip packet is accepted once, and only while fresh.
//!
//! Every sealed packet carries its sender's run (a random 64-bit number drawn when the
//! sender started), a counter that the run increments per packet, and the sender's
//! wall-clock time. A packet is refused when its time is further than `max_age` from
//! ours (either way: a replay of an old capture, or a clock that is badly off), when
//! its counter is more than [`WINDOW`] behind the highest seen from its run, or when
//! its counter was already seen. Memory is bounded: one small window per run heard
//! within `max_age`, at most `max_senders` of them. Plain state machine over an explicit
//! clock, like the rest of the membership core.

use std::collections::HashMap;
use std::time::Duration;

/// Counters behind the highest one seen from a run that are still accepted (once):
/// room for packets reordered on the way.
pub const WINDOW: u32 = 128;

/// How far a packet's time may be from ours by default: a minute, well above the clock
/// skew of NTP-synchronised hosts and below the time a captured packet stays useful.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);

/// The most runs tracked at once by default (each about 50 bytes).
pub const DEFAULT_MAX_SENDERS: usize = 4_096;

/// Why a packet was refused as a replay; nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// The packet's time is more than `max_age` from ours.
    #[error("sent {skew_ms} ms away from now, outside the {max_age_ms} ms window")]
    Stale {
        /// Milliseconds between its time and ours.
        skew_ms: u64,
        /// The window.
        max_age_ms: u64,
    },
    /// Its counter is more than [`WINDOW`] behind the highest seen from its run.
    #[error("counter {WINDOW}+ behind the highest seen from its sender")]
    BehindWindow,
    /// Its counter was seen already.
    #[error("a duplicate of a packet already accepted")]
    Duplicate,
}

/// The counters seen from one run.
#[derive(Debug, Clone, Copy)]
struct Window {
    highest: u32,
    /// Bit `i` set: counter `highest - i` was seen.
    seen: u128,
    /// When a packet of this run was last accepted (our clock, ms).
    last_ms: u64,
}

/// Counters kept by the guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Runs forgotten while still fresh because `max_senders` were tracked.
    pub evicted_fresh: u64,
}

/// Decides whether an opened packet is fresh; see the module doc.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    max_age_ms: u64,
    max_senders: usize,
    runs: HashMap<u64, Window>,
    stats: ReplayStats,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_MAX_AGE, DEFAULT_MAX_SENDERS)
    }
}

impl ReplayGuard {
    /// A guard accepting packets within `max_age` of now, tracking at most
    /// `max_senders` runs (at least one).
    pub fn new(max_age: Duration, max_senders: usize) -> Self {
        ReplayGuard {
            max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
            max_senders: max_senders.max(1),
            runs: HashMap::new(),
            stats: ReplayStats::default(),
        }
    }

    /// Checks the packet `counter` of run `run`, sent at `sent_ms` (the sender's wall
    /// clock, ms since the Unix epoch), at our time `now_ms`, and records it if fresh.
    /// Call it only for packets that authenticated: a forgery must not move a window.
    pub fn check(
        &mut self,
        now_ms: u64,
        run: u64,
        counter: u32,
        sent_ms: u64,
    ) -> Result<(), Replay> {
        let skew_ms = now_ms.abs_diff(sent_ms);
        if skew_ms > self.max_age_ms {
            return Err(Replay::Stale {
                skew_ms,
                max_age_ms: self.max_age_ms,
            });
        }
        if let Some(window) = self.runs.get_mut(&run) {
            if counter > window.highest {
                let shift = counter - window.highest;
                window.seen = if shift >= u128::BITS {
                    0
                } else {
                    window.seen << shift
                };
                window.seen |= 1;
                window.highest = counter;
            } else {
                let behind = window.highest - counter;
                if behind >= WINDOW {
                    return Err(Replay::BehindWindow);
                }
                let bit = 1u128 << behind;
                if window.seen & bit != 0 {
                    return Err(Replay::Duplicate);
                }
                window.seen |= bit;
            }
            window.last_ms = window.last_ms.max(now_ms);
            return Ok(());
        }
        if self.runs.len() >= self.max_senders {
            self.make_room(now_ms);
        }
        self.runs.insert(
            run,
            Window {
                highest: counter,
                seen: 1,
                last_ms: now_ms,
            },
        );
        Ok(())
    }

    /// Forgets runs silent for longer than `max_age` (any packet of theirs we could
    /// still receive is stale by its time); if none is, the longest silent one.
    fn make_room(&mut self, now_ms: u64) {
        let max_age_ms = self.max_age_ms;
        self.runs
            .retain(|_, w| now_ms.saturating_sub(w.last_ms) <= max_age_ms);
        if self.runs.len() >= self.max_senders
            && let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, w)| w.last_ms)
                .map(|(run, _)| *run)
        {
            self.runs.remove(&oldest);
            self.stats.evicted_fresh += 1;
        }
    }

    /// Runs tracked now.
    pub fn tracked(&self) -> usize {
        self.runs.len()
    }

    /// The guard's counters.
    pub fn stats(&self) -> ReplayStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_000_000;

    fn guard() -> ReplayGuard {
        ReplayGuard::new(Duration::from_secs(60), 4)
    }

    #[test]
    fn a_packet_is_accepted_once() {
        let mut g = guard();
        assert_eq!(g.check(NOW, 1, 10, NOW), Ok(()));
        assert_eq!(g.check(NOW, 1, 10, NOW), Err(Replay::Duplicate));
        assert_eq!(g.check(NOW, 2, 10, NOW), Ok(()), "another run");
    }

    #[test]
    fn reordered_packets_within_the_window_are_accepted_once() {
        let mut g = guard();
        for counter in [5, 3, 9, 4, 8] {
            assert_eq!(g.check(NOW, 1, counter, NOW), Ok(()), "counter {counter}");
        }
        for counter in [5, 3, 9, 4, 8] {
            assert_eq!(g.check(NOW, 1, counter, NOW), Err(Replay::Duplicate));
        }
        let high = 9 + WINDOW;
        assert_eq!(g.check(NOW, 1, high, NOW), Ok(()));
        assert_eq!(g.check(NOW, 1, 10, NOW), Ok(()), "just inside the window");
        assert_eq!(g.check(NOW, 1, 9, NOW), Err(Replay::BehindWindow));
    }

    #[test]
    fn packets_too_far_from_now_are_stale_either_way() {
        let mut g = guard();
        let minute = 60_000;
        assert_eq!(g.check(NOW, 1, 1, NOW - minute), Ok(()), "at the edge");
        assert!(matches!(
            g.check(NOW, 1, 2, NOW - minute - 1),
            Err(Replay::Stale {
                skew_ms: 60_001,
                ..
            })
        ));
        assert!(matches!(
            g.check(NOW, 1, 3, NOW + minute + 1),
            Err(Replay::Stale { .. })
        ));
    }

    #[test]
    fn memory_is_bounded_and_silent_runs_go_first() {
        let mut g = guard();
        for run in 0..4 {
            g.check(NOW, run, 1, NOW).unwrap();
        }
        g.check(NOW + 1, 0, 2, NOW + 1).unwrap();
        // Full: the newcomer evicts the longest-silent run (1), counted as fresh.
        g.check(NOW + 2, 9, 1, NOW + 2).unwrap();
        assert_eq!(g.tracked(), 4);
        assert_eq!(g.stats().evicted_fresh, 1);
        // A minute later every old run is stale by time: they go without counting.
        let later = NOW + 61_000;
        g.check(later, 10, 1, later).unwrap();
        assert_eq!(g.tracked(), 1);
        assert_eq!(g.stats().evicted_fresh, 1);
    }

    proptest! {
        /// Whatever the order, each (run, counter) is accepted at most once, and a
        /// sequence without repeats delivered in order is accepted in full.
        #[test]
        fn each_packet_is_accepted_at_most_once(
            packets in proptest::collection::vec((0u64..3, 0u32..300), 0..400),
        ) {
            let mut g = ReplayGuard::new(Duration::from_secs(60), 8);
            let mut accepted = std::collections::HashSet::new();
            for (run, counter) in packets {
                if g.check(NOW, run, counter, NOW).is_ok() {
                    prop_assert!(accepted.insert((run, counter)), "accepted twice: {run}/{counter}");
                }
            }
        }

        #[test]
        fn in_order_packets_are_all_accepted(start in 0u32..1_000, gaps in proptest::collection::vec(1u32..500, 0..100)) {
            let mut g = ReplayGuard::new(Duration::from_secs(60), 8);
            let mut counter = start;
            prop_assert!(g.check(NOW, 7, counter, NOW).is_ok());
            for gap in gaps {
                counter += gap;
                prop_assert!(g.check(NOW, 7, counter, NOW).is_ok());
            }
        }
    }
}
