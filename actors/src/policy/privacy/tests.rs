use std::collections::HashMap;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::*;

fn eps(value: f64) -> Epsilon {
    Epsilon::new(value).expect("valid epsilon")
}

fn laplace_cdf(x: f64, b: f64) -> f64 {
    if x < 0.0 {
        0.5 * (x / b).exp()
    } else {
        1.0 - 0.5 * (-x / b).exp()
    }
}

/// One-sample Kolmogorov–Smirnov statistic of `samples` against Laplace(0, `b`).
fn ks_statistic(samples: &mut [f64], b: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    samples
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = laplace_cdf(x, b);
            let above = (i as f64 + 1.0) / n - f;
            let below = f - i as f64 / n;
            above.max(below)
        })
        .fold(0.0, f64::max)
}

const KS_SAMPLES: usize = 200_000;

fn laplace_samples(scale: f64, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..KS_SAMPLES).map(|_| laplace(scale, &mut rng)).collect()
}

fn ks_critical() -> f64 {
    // The 0.1 % critical value of the one-sample KS test for large n.
    1.95 / (KS_SAMPLES as f64).sqrt()
}

#[test]
fn laplace_matches_its_distribution() {
    let b = 2.0;
    let mut samples = laplace_samples(b, 7);
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    assert!(mean.abs() < 0.05, "mean {mean}");
    let expected = 2.0 * b * b;
    assert!(
        (variance - expected).abs() < 0.03 * expected,
        "variance {variance}, expected {expected}"
    );
    let d = ks_statistic(&mut samples, b);
    assert!(d < ks_critical(), "KS statistic {d} >= {}", ks_critical());
}

#[test]
fn laplace_with_the_wrong_scale_fails_the_ks_test() {
    let mut samples = laplace_samples(2.0, 7);
    let d = ks_statistic(&mut samples, 2.4);
    assert!(
        d > ks_critical(),
        "KS statistic {d} did not detect scale 2.4"
    );
}

/// Replays fixed `next_u64` values, so the sampler's edge cases are reached on purpose.
struct Script(Vec<u64>);

impl RngCore for Script {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0.remove(0)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[test]
fn laplace_draws_again_instead_of_taking_the_log_of_zero() {
    // 0 maps to u = -0.5 (refused); u64::MAX maps to the largest u below 0.5.
    let mut rng = Script(vec![0, u64::MAX]);
    let x = laplace(1.0, &mut rng);
    assert!(x.is_finite() && x > 30.0, "sample {x}");
    assert!(rng.0.is_empty(), "the refused draw was not replaced");
    // The smallest u above -0.5 gives the mirror image.
    let mut rng = Script(vec![1 << 11]);
    assert_eq!(laplace(1.0, &mut rng), -x);
}

#[test]
fn sensitivities_are_the_item_level_l1_bounds() {
    assert_eq!(Statistic::Count.sensitivity(), 1.0);
    assert_eq!(Statistic::RatingSum.sensitivity(), 5.0);
    assert_eq!(Statistic::RatingCount.sensitivity(), 1.0);
    assert_eq!(Statistic::ErrorCount.sensitivity(), 1.0);
    assert_eq!(Statistic::Histogram.sensitivity(), 1.0);
}

#[test]
fn noise_scale_is_sensitivity_times_released_over_epsilon() {
    assert_eq!(noise_scale(Statistic::RatingSum, eps(1.0), 5), 25.0);
    assert_eq!(noise_scale(Statistic::Count, eps(1.0), 1), 1.0);
    assert_eq!(noise_scale(Statistic::Count, eps(0.5), 5), 10.0);
    assert_eq!(noise_scale(Statistic::Histogram, eps(2.0), 4), 2.0);
    let split = Split::all(eps(1.0));
    assert_eq!(split.per_statistic(), 0.2);
    assert_eq!(split.scale(Statistic::RatingSum), 25.0);
    assert_eq!(split.scale(Statistic::ErrorCount), 5.0);
    assert_eq!(split.epsilon(), eps(1.0));
    // Zero released statistics must not mean zero noise.
    assert_eq!(Split::new(eps(1.0), 0).scale(Statistic::Count), 1.0);
}

#[test]
fn epsilon_outside_its_range_is_refused() {
    for bad in [
        0.0,
        -0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        10.5,
    ] {
        match Epsilon::new(bad) {
            Err(PrivacyError::InvalidEpsilon { epsilon }) => {
                assert!(epsilon.to_bits() == bad.to_bits(), "{epsilon} for {bad}");
            }
            other => panic!("epsilon {bad} gave {other:?}"),
        }
    }
    assert_eq!(Epsilon::new(10.0).map(Epsilon::get), Ok(10.0));
    assert_eq!(Epsilon::new(0.1).map(Epsilon::get), Ok(0.1));
}

#[test]
fn budget_charges_accumulate_and_refuse_past_the_limit() {
    let mut budget = Budget::new(eps(1.0));
    assert_eq!(budget.charge(eps(0.5)), Ok(()));
    assert_eq!(budget.charge(eps(0.25)), Ok(()));
    assert_eq!(budget.spent(), 0.75);
    assert_eq!(budget.remaining(), 0.25);
    assert_eq!(
        budget.charge(eps(0.5)),
        Err(PrivacyError::BudgetExhausted {
            requested: 0.5,
            remaining: 0.25
        })
    );
    assert_eq!(budget.spent(), 0.75, "a refused charge spent something");
    // Exactly to the limit is allowed, and then nothing more.
    assert_eq!(budget.charge(eps(0.25)), Ok(()));
    assert_eq!(budget.remaining(), 0.0);
    assert!(budget.charge(eps(0.01)).is_err());
}

#[test]
fn budget_spent_in_tenths_reaches_its_limit() {
    let mut budget = Budget::new(eps(1.0));
    for _ in 0..10 {
        assert_eq!(budget.charge(eps(0.1)), Ok(()));
    }
    assert!(budget.charge(eps(0.1)).is_err());
}

#[test]
fn budget_from_a_corrupt_ledger_is_exhausted() {
    for corrupt in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut budget = Budget::from_spent(eps(2.0), corrupt);
        assert_eq!(budget.remaining(), 0.0, "ledger {corrupt}");
        assert!(budget.charge(eps(0.1)).is_err(), "ledger {corrupt}");
    }
    assert_eq!(Budget::from_spent(eps(2.0), -1.0).spent(), 0.0);
    assert_eq!(Budget::from_spent(eps(2.0), 1.5).remaining(), 0.5);
    assert_eq!(Budget::from_spent(eps(2.0), 3.0).remaining(), 0.0);
}

proptest! {
    #[test]
    fn budget_never_spends_past_its_limit(
        limit in 0.01f64..=10.0,
        requests in proptest::collection::vec(0.01f64..=10.0, 0..40),
    ) {
        let mut budget = Budget::new(eps(limit));
        let mut accepted = 0.0;
        for request in requests {
            let remaining = budget.remaining();
            match budget.charge(eps(request)) {
                Ok(()) => accepted += request,
                Err(PrivacyError::BudgetExhausted { requested, remaining: reported }) => {
                    prop_assert_eq!(requested, request);
                    prop_assert_eq!(reported, remaining);
                    prop_assert!(remaining < request, "refused {request} with {remaining} left");
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
            prop_assert!(accepted <= limit + BUDGET_TOLERANCE, "spent {accepted} of {limit}");
            prop_assert_eq!(budget.spent(), accepted);
        }
    }
}

#[test]
fn noisy_count_clamps_at_zero() {
    let mut rng = StdRng::seed_from_u64(3);
    let draws: Vec<u64> = (0..10_000)
        .map(|_| noisy_count(0, 10.0, &mut rng))
        .collect();
    let zeros = draws.iter().filter(|&&c| c == 0).count();
    // Half the noise is negative and lands on 0; the rest is spread above it.
    assert!((4_500..6_000).contains(&zeros), "{zeros} zeros");
    assert!(draws.iter().any(|&c| c > 10));
    for _ in 0..10_000 {
        assert!(noisy_sum(0.0, 25.0, &mut rng) >= 0.0);
    }
}

#[test]
fn noisy_mean_is_none_on_zero_count_and_clamped() {
    assert_eq!(noisy_mean(12.0, 0, 1.0, 5.0), None);
    assert_eq!(noisy_mean(7.0, 2, 1.0, 5.0), Some(3.5));
    assert_eq!(noisy_mean(100.0, 2, 1.0, 5.0), Some(5.0));
    assert_eq!(noisy_mean(0.0, 3, 1.0, 5.0), Some(1.0));
    assert_eq!(noisy_mean(f64::NAN, 3, 1.0, 5.0), Some(1.0));
}

fn count_histogram(true_count: u64, seed: u64, draws: usize) -> HashMap<u64, u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hits = HashMap::new();
    for _ in 0..draws {
        *hits
            .entry(noisy_count(true_count, 1.0, &mut rng))
            .or_insert(0) += 1;
    }
    hits
}

#[test]
fn neighbouring_counts_are_within_e_to_the_epsilon() {
    // Counts 100 and 101 are neighbours; at ε = 1 the scale is 1, and every output's
    // probability may differ by at most e¹ between them.
    let draws = 100_000;
    let scale = noise_scale(Statistic::Count, eps(1.0), 1);
    assert_eq!(scale, 1.0);
    let a = count_histogram(100, 11, draws);
    let b = count_histogram(101, 12, draws);
    let bound = 1f64.exp() * 1.15;
    let mut checked = 0;
    for bucket in 95..=106 {
        let (ha, hb) = (a.get(&bucket).copied(), b.get(&bucket).copied());
        let (ha, hb) = (ha.unwrap_or(0), hb.unwrap_or(0));
        // Rare buckets are too noisy for a ratio to mean anything.
        if ha.min(hb) < 2_000 {
            continue;
        }
        let ratio = f64::from(ha.max(hb)) / f64::from(ha.min(hb));
        assert!(
            ratio < bound,
            "bucket {bucket}: {ha} vs {hb}, ratio {ratio}"
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} buckets had enough hits");
}
