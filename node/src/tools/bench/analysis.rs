//! Verdicts drawn from what a scenario measured: where a stress ramp broke and how long
//! a spike took to wear off.

use chorus_client::Tier;
use serde::Serialize;

use super::timeline::{Counts, Timeline, Window};

/// One phase (a stress step) in the terms the verdicts use.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepView {
    /// The rate as a multiple of the saturation rate.
    pub multiple: f64,
    /// Requests that fell due.
    pub offered: u64,
    /// Requests refused with `Overloaded`.
    pub refused: u64,
    /// Failures other than `Overloaded`.
    pub other_errors: u64,
    /// Requests without an answer yet.
    pub pending: u64,
    /// Successful answers within their tier's budget, per second of the phase.
    pub goodput: f64,
    /// The first tier (most urgent first) whose p99 over its successful answers
    /// exceeds its budget: tier, p99 ms, budget ms.
    pub late_tier: Option<(&'static str, f64, f64)>,
}

impl StepView {
    /// Summarises `window`, a phase of `seconds` length, against `timeline`'s budgets.
    /// `pending_is_good` counts requests still unanswered as served in time (while the
    /// run goes on, so that a queue the node is still working through does not read as
    /// lost goodput).
    pub fn of(
        window: &Window,
        multiple: f64,
        seconds: f64,
        timeline: &Timeline,
        pending_is_good: bool,
    ) -> Self {
        let sum = |f: fn(&Counts<u64>) -> u64| window.iter().map(f).sum::<u64>();
        let pending = sum(Counts::pending);
        let good = sum(|c| c.ok_in_budget) + if pending_is_good { pending } else { 0 };
        let late_tier = Tier::ALL.iter().find_map(|&tier| {
            let budget_ms = timeline.budget(tier).as_secs_f64() * 1000.0;
            let p99 = window[tier as usize].p99_ms()?;
            (p99 > budget_ms).then_some((tier.as_str(), p99, budget_ms))
        });
        StepView {
            multiple,
            offered: sum(|c| c.offered),
            refused: sum(|c| c.refused),
            other_errors: sum(Counts::other_errors),
            pending,
            goodput: if seconds > 0.0 {
                good as f64 / seconds
            } else {
                0.0
            },
            late_tier,
        }
    }

    /// Everything offered was answered successfully, with every tier's p99 within its
    /// budget (the budget is a p99 promise, so single outliers do not disqualify).
    pub fn served_in_budget(&self) -> bool {
        self.offered > 0
            && self.refused == 0
            && self.other_errors == 0
            && self.pending == 0
            && self.late_tier.is_none()
    }
}

/// Why a stress ramp stopped.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Break {
    /// Failures other than `Overloaded` appeared.
    Errors {
        /// How many.
        count: u64,
    },
    /// A tier's p99 over its successful answers exceeded its budget.
    Latency {
        /// The tier.
        tier: &'static str,
        /// Its p99, ms.
        p99_ms: f64,
        /// Its budget, ms.
        budget_ms: f64,
    },
    /// Goodput fell below 90 % of the best earlier step's.
    Goodput {
        /// This step's goodput, requests/s.
        goodput: f64,
        /// The best earlier step's goodput, requests/s.
        best: f64,
    },
}

/// Goodput below this share of the best step's ends the ramp.
pub const GOODPUT_FLOOR: f64 = 0.9;

/// Where a stress ramp held and where it broke.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StressVerdict {
    /// The highest step before the break where everything offered was served within
    /// budget.
    pub knee: Option<usize>,
    /// The first step that broke, and why.
    pub broke: Option<(usize, Break)>,
}

/// Why `step` breaks the ramp, given the best goodput of the steps before it.
fn breaks(step: &StepView, best_before: f64) -> Option<Break> {
    if step.other_errors > 0 {
        return Some(Break::Errors {
            count: step.other_errors,
        });
    }
    if let Some((tier, p99_ms, budget_ms)) = step.late_tier {
        return Some(Break::Latency {
            tier,
            p99_ms,
            budget_ms,
        });
    }
    (step.goodput < GOODPUT_FLOOR * best_before).then_some(Break::Goodput {
        goodput: step.goodput,
        best: best_before,
    })
}

/// The knee and the break of a ramp of `steps`, in order.
pub fn stress_verdict(steps: &[StepView]) -> StressVerdict {
    let mut best = 0.0f64;
    let mut broke = None;
    for (i, step) in steps.iter().enumerate() {
        if let Some(why) = breaks(step, best) {
            broke = Some((i, why));
            break;
        }
        best = best.max(step.goodput);
    }
    let held = broke.as_ref().map_or(steps.len(), |(i, _)| *i);
    let knee = steps[..held].iter().rposition(StepView::served_in_budget);
    StressVerdict { knee, broke }
}

/// One tier in one second, for the spike's recovery.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TierSecond {
    /// Requests that fell due.
    pub offered: u64,
    /// The p99 of the successful ones, ms.
    pub p99_ms: Option<f64>,
}

/// A tier is back when its p99 is within this factor of its pre-spike p99.
pub const RECOVERY_FACTOR: f64 = 1.5;
/// Seconds in a row that must all be back, so that one quiet second is not taken for
/// the end of the backlog.
pub const RECOVERY_HOLD: usize = 3;

/// Seconds after the spike until every tier's per-second p99 is back within
/// [`RECOVERY_FACTOR`] of its pre-spike p99 and stays so for [`RECOVERY_HOLD`] seconds
/// (or to the end). `after[s][t]` is tier `t` in second `s` after the spike;
/// `before[t]` is its p99 before the spike (`None`: a tier not in the load). A tier
/// with requests but no successful answer in a second is not back; one with no
/// requests that second does not count either way. `None`: not back by the end.
pub fn recovery_seconds(before: &[Option<f64>; 4], after: &[[TierSecond; 4]]) -> Option<usize> {
    let back = |second: &[TierSecond; 4]| {
        before.iter().zip(second).all(|(pre, now)| match pre {
            None => true,
            Some(pre) => now.offered == 0 || now.p99_ms.is_some_and(|p| p <= RECOVERY_FACTOR * pre),
        })
    };
    (0..after.len()).find(|&s| {
        after[s..(s + RECOVERY_HOLD).min(after.len())]
            .iter()
            .all(back)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn step(goodput: f64) -> StepView {
        StepView {
            multiple: 1.0,
            offered: 100,
            refused: 0,
            other_errors: 0,
            pending: 0,
            goodput,
            late_tier: None,
        }
    }

    #[test]
    fn the_ramp_breaks_on_errors_latency_or_lost_goodput() {
        let mut s = vec![step(50.0), step(100.0), step(150.0)];
        s[2].refused = 10;
        s.push(step(140.0));
        s.push(step(130.0));
        let v = stress_verdict(&s);
        // 130 < 0.9 × 150.
        assert_eq!(
            v.broke,
            Some((
                4,
                Break::Goodput {
                    goodput: 130.0,
                    best: 150.0
                }
            ))
        );
        // The step with refusals held but did not serve everything offered; the knee is
        // the highest step before the break that did.
        assert_eq!(v.knee, Some(3));
        s[3].refused = 1;
        assert_eq!(stress_verdict(&s).knee, Some(1));

        let mut s = vec![step(50.0), step(100.0)];
        s[1].other_errors = 3;
        assert_eq!(
            stress_verdict(&s),
            StressVerdict {
                knee: Some(0),
                broke: Some((1, Break::Errors { count: 3 }))
            }
        );

        let mut s = vec![step(50.0)];
        s[0].late_tier = Some(("realtime", 150.0, 100.0));
        let v = stress_verdict(&s);
        assert_eq!(v.knee, None);
        assert!(matches!(v.broke, Some((0, Break::Latency { .. }))));
    }

    #[test]
    fn a_ramp_that_never_breaks_has_its_last_clean_step_as_knee() {
        let s = vec![step(1.0), step(2.0), step(3.0)];
        assert_eq!(
            stress_verdict(&s),
            StressVerdict {
                knee: Some(2),
                broke: None
            }
        );
        assert_eq!(
            stress_verdict(&[]),
            StressVerdict {
                knee: None,
                broke: None
            }
        );
    }

    fn second(p99: [Option<f64>; 4]) -> [TierSecond; 4] {
        p99.map(|p99_ms| TierSecond {
            offered: 10,
            p99_ms,
        })
    }

    #[test]
    fn recovery_waits_for_every_tier_to_hold() {
        let before = [Some(10.0), Some(20.0), None, None];
        let fine = second([Some(15.0), Some(30.0), None, None]);
        let slow = second([Some(15.0), Some(31.0), None, None]);
        let unanswered = second([None, Some(1.0), None, None]);
        let after = [slow, unanswered, fine, slow, fine, fine, fine, slow];
        // Second 2 is back but second 3 is not: the first run of three is 4..=6.
        assert_eq!(recovery_seconds(&before, &after), Some(4));
        assert_eq!(recovery_seconds(&before, &[slow, slow]), None);
        // Near the end, what is left need only be back throughout.
        assert_eq!(recovery_seconds(&before, &[slow, fine]), Some(1));
        // A second where a tier sent nothing does not hold it back.
        let idle = [
            TierSecond {
                offered: 0,
                p99_ms: None,
            },
            fine[1],
            fine[2],
            fine[3],
        ];
        assert_eq!(recovery_seconds(&before, &[idle, fine, fine]), Some(0));
    }

    proptest! {
        #[test]
        fn the_knee_is_clean_and_below_the_break(
            raw in prop::collection::vec((0.0f64..100.0, 0u64..3, 0u64..2, any::<bool>()), 0..10)
        ) {
            let steps: Vec<StepView> = raw
                .iter()
                .map(|&(goodput, refused, errors, late)| StepView {
                    refused,
                    other_errors: errors,
                    late_tier: late.then_some(("batch", 2.0, 1.0)),
                    ..step(goodput)
                })
                .collect();
            let v = stress_verdict(&steps);
            let held = v.broke.as_ref().map_or(steps.len(), |(i, _)| *i);
            if let Some(k) = v.knee {
                prop_assert!(k < held);
                prop_assert!(steps[k].served_in_budget());
                prop_assert!(steps[k + 1..held].iter().all(|s| !s.served_in_budget()));
            }
            for s in &steps[..held] {
                prop_assert!(s.other_errors == 0 && s.late_tier.is_none());
            }
        }
    }
}
