//! Differential privacy for aggregate queries ("insights") over stored feedback items,
//! as pure functions and state: the caller passes the RNG in, and nothing here reads a
//! clock or does IO, so every guarantee is tested with seeded generators.
//!
//! Mechanism: each released statistic gets Laplace noise of scale `sensitivity / ε`
//! (the Laplace mechanism), which makes that one release ε-differentially private.
//!
//! Adjacency is item-level: two datasets are neighbours when they differ by one item
//! (one added or removed). A user who submits many items is protected per item, not per
//! user: k items of one user are covered only by k·ε (group privacy).
//!
//! Composition: a query puts every item in exactly one group and releases, per group,
//! k statistics (say a count, a rating sum, a rating count, an error count and a
//! 5-bucket rating histogram, k = 5). The groups are disjoint, so by parallel
//! composition the groups together cost what one group costs; within a group the k
//! releases compose sequentially, so each gets ε / k and the whole answer spends ε once
//! ([`Split`], [`noise_scale`]). This holds only if the set of groups released does
//! not depend on the data (fixed keys or time buckets, empty ones included): a group
//! that appears only when it has items reveals that an item exists.
//!
//! Rounding, clamping at zero and dividing a noisy sum by a noisy count are
//! post-processing of values already private, so they keep the guarantee.
//!
//! [`Budget`] accounts the ε spent per API key and fails closed: a charge past the
//! limit is refused, and a ledger value that cannot be trusted counts as exhausted.
//!
//! The sampler is the textbook `f64` inverse CDF; it is not hardened against the
//! floating-point attacks on the Laplace mechanism (Mironov, CCS 2012).

use rand::Rng;
use thiserror::Error;

/// The largest rating an item can carry (ratings are 1..=5).
pub const MAX_RATING: u8 = 5;
/// The largest ε one query or one key's budget may have: past it the noise protects
/// next to nothing.
pub const MAX_EPSILON: f64 = 10.0;
/// Rounding slack of the accountant, so a budget spent exactly in pieces (10 × 0.1) is
/// not refused its last piece.
pub const BUDGET_TOLERANCE: f64 = 1e-12;

/// Why a privacy parameter or charge was refused.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum PrivacyError {
    /// ε must be finite, above zero and at most [`MAX_EPSILON`].
    #[error("epsilon {epsilon} is not in (0, {MAX_EPSILON}]")]
    InvalidEpsilon {
        /// The value refused.
        epsilon: f64,
    },
    /// The charge would take the budget past its limit.
    #[error("privacy budget exhausted: requested epsilon {requested}, remaining {remaining}")]
    BudgetExhausted {
        /// The ε the query asked for.
        requested: f64,
        /// The ε left in the budget when it was refused.
        remaining: f64,
    },
}

/// A privacy parameter ε, valid by construction.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Epsilon(f64);

impl Epsilon {
    /// Accepts ε in (0, [`MAX_EPSILON`]]; NaN and infinities are refused.
    pub fn new(epsilon: f64) -> Result<Epsilon, PrivacyError> {
        if epsilon.is_finite() && epsilon > 0.0 && epsilon <= MAX_EPSILON {
            Ok(Epsilon(epsilon))
        } else {
            Err(PrivacyError::InvalidEpsilon { epsilon })
        }
    }

    /// The value of ε.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A statistic a query can release per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistic {
    /// Number of items: one item more or less moves it by 1.
    Count,
    /// Sum of ratings: the item added or removed carries at most [`MAX_RATING`].
    RatingSum,
    /// Number of rated items: one item moves it by at most 1.
    RatingCount,
    /// Number of items flagged as errors: one item moves it by at most 1.
    ErrorCount,
    /// Rated items per rating (5 buckets): one item sits in one bucket, so the L1
    /// change over all buckets is at most 1.
    Histogram,
}

impl Statistic {
    /// Every statistic an insight releases per group, in answer order.
    pub const ALL: [Statistic; 5] = [
        Statistic::Count,
        Statistic::RatingSum,
        Statistic::RatingCount,
        Statistic::ErrorCount,
        Statistic::Histogram,
    ];

    /// L1 sensitivity under adding or removing one item.
    pub fn sensitivity(self) -> f64 {
        match self {
            Statistic::RatingSum => f64::from(MAX_RATING),
            Statistic::Count
            | Statistic::RatingCount
            | Statistic::ErrorCount
            | Statistic::Histogram => 1.0,
        }
    }
}

/// How one query's ε is divided among the statistics it releases per group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    epsilon: Epsilon,
    released: usize,
}

impl Split {
    /// A query spending `epsilon` over `released` statistics per group (0 counts as 1).
    pub fn new(epsilon: Epsilon, released: usize) -> Split {
        Split {
            epsilon,
            released: released.max(1),
        }
    }

    /// A query releasing every statistic of [`Statistic::ALL`].
    pub fn all(epsilon: Epsilon) -> Split {
        Split::new(epsilon, Statistic::ALL.len())
    }

    /// The ε the whole query spends, the amount to charge the [`Budget`].
    pub fn epsilon(self) -> Epsilon {
        self.epsilon
    }

    /// The ε each released statistic gets (sequential composition).
    pub fn per_statistic(self) -> f64 {
        self.epsilon.get() / self.released as f64
    }

    /// The Laplace scale for `statistic` under this split.
    pub fn scale(self, statistic: Statistic) -> f64 {
        noise_scale(statistic, self.epsilon, self.released)
    }
}

/// The Laplace scale `sensitivity × released / ε` for one of `released` statistics.
pub fn noise_scale(statistic: Statistic, epsilon: Epsilon, released: usize) -> f64 {
    debug_assert!(released >= 1, "a query releases at least one statistic");
    // Zero would mean a scale of 0, no noise at all: a caller's slip must not turn
    // the protection off, so it counts as one.
    let released = released.max(1) as f64;
    statistic.sensitivity() * released / epsilon.get()
}

/// One sample of Laplace(0, `scale`) by inverse CDF; `scale` must be finite and > 0.
pub fn laplace<R: Rng + ?Sized>(scale: f64, rng: &mut R) -> f64 {
    debug_assert!(scale.is_finite() && scale > 0.0, "laplace scale {scale}");
    // random::<f64>() is in [0, 1); u = -0.5 would put ln(0) below, so it is drawn
    // again, which leaves u on a grid symmetric around 0.
    let u = loop {
        let u = rng.random::<f64>() - 0.5;
        if u > -0.5 {
            break u;
        }
    };
    // ln_1p(-2|u|) is ln(1 - 2|u|) without the cancellation for small |u|.
    -scale * u.signum() * (-2.0 * u.abs()).ln_1p()
}

/// `true_count` plus Laplace noise, rounded to the nearest integer and clamped at 0.
pub fn noisy_count<R: Rng + ?Sized>(true_count: u64, scale: f64, rng: &mut R) -> u64 {
    // Rounding and clamping are post-processing: the release stays private, and a
    // negative count would only tell the reader the noise was large.
    let noisy = (true_count as f64 + laplace(scale, rng)).round();
    // `as` saturates, so a huge value cannot wrap.
    noisy.max(0.0) as u64
}

/// `true_sum` plus Laplace noise, clamped at 0 (post-processing).
pub fn noisy_sum<R: Rng + ?Sized>(true_sum: f64, scale: f64, rng: &mut R) -> f64 {
    (true_sum + laplace(scale, rng)).max(0.0)
}

/// The mean of a noisy sum over a noisy count, clamped into `lo..=hi`; None for 0.
pub fn noisy_mean(noisy_sum: f64, noisy_count: u64, lo: f64, hi: f64) -> Option<f64> {
    debug_assert!(lo <= hi, "mean bounds {lo} > {hi}");
    if noisy_count == 0 {
        return None;
    }
    // max/min rather than clamp: clamp panics on bad bounds, and a NaN lands on lo.
    Some((noisy_sum / noisy_count as f64).max(lo).min(hi))
}

/// The ε one API key has spent against its limit; callers keep one per key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    limit: f64,
    spent: f64,
}

impl Budget {
    /// A fresh budget with nothing spent.
    pub fn new(limit: Epsilon) -> Budget {
        Budget {
            limit: limit.get(),
            spent: 0.0,
        }
    }

    /// Rebuilds a budget from a replicated ledger, failing closed on a corrupt value.
    pub fn from_spent(limit: Epsilon, spent: f64) -> Budget {
        // A NaN or infinite ledger entry says nothing about what was spent: treating it
        // as the whole limit refuses queries rather than releasing past the budget.
        let spent = if spent.is_finite() {
            spent.max(0.0)
        } else {
            limit.get()
        };
        Budget {
            limit: limit.get(),
            spent,
        }
    }

    /// The ε still available (never negative).
    pub fn remaining(&self) -> f64 {
        (self.limit - self.spent).max(0.0)
    }

    /// The ε spent so far.
    pub fn spent(&self) -> f64 {
        self.spent
    }

    /// Spends `epsilon`, or refuses (spending nothing) when it would pass the limit.
    pub fn charge(&mut self, epsilon: Epsilon) -> Result<(), PrivacyError> {
        let requested = epsilon.get();
        if self.spent + requested > self.limit + BUDGET_TOLERANCE {
            return Err(PrivacyError::BudgetExhausted {
                requested,
                remaining: self.remaining(),
            });
        }
        self.spent += requested;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
