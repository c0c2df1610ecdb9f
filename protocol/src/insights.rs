//! Insights: aggregate questions about the feedback, answered from the counts every
//! partition's leader keeps (never by a scan), optionally with differential privacy.
//!
//! A query groups the items about functions by function (or by function and version)
//! and releases, per group, the item count and the histogram of ratings 1–5 (the mean
//! rating follows from the histogram). With `epsilon` set, each released number gets
//! Laplace noise and the asking key's privacy budget is charged `epsilon`.

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};

use crate::bounded::{decode_vec, too_many};
use crate::error::ErrorCode;
use crate::item::MAX_FUNCTION_NAME_BYTES;

/// Most rows one insight answers.
pub const MAX_INSIGHT_ROWS: usize = 10_000;

/// What an insight asks.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct InsightQuery {
    /// Only the function of this name; every function if `None`.
    pub function: Option<String>,
    /// One row per version (else one per function).
    pub by_version: bool,
    /// With differential privacy at this ε (0 < ε ≤ 10), charged to the key's budget.
    pub epsilon: Option<f64>,
}

impl InsightQuery {
    /// Whether the name and ε are within their bounds.
    pub fn validate(&self) -> Result<(), ErrorCode> {
        if let Some(name) = &self.function
            && (name.is_empty() || name.len() > MAX_FUNCTION_NAME_BYTES)
        {
            return Err(ErrorCode::invalid(
                "function",
                format!(
                    "{} bytes, must be 1..={MAX_FUNCTION_NAME_BYTES}",
                    name.len()
                ),
            ));
        }
        if let Some(epsilon) = self.epsilon
            && !(epsilon.is_finite() && epsilon > 0.0 && epsilon <= 10.0)
        {
            return Err(ErrorCode::invalid(
                "epsilon",
                format!("{epsilon} is not in (0, 10]"),
            ));
        }
        Ok(())
    }
}

/// One group of an insight.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct InsightRow {
    /// The function.
    pub function: String,
    /// The version, when grouped by version.
    pub version: Option<String>,
    /// Items in the group.
    pub items: u64,
    /// How many rated 1, 2, 3, 4 and 5.
    pub ratings: [u64; 5],
}

impl InsightRow {
    /// The mean rating, from the histogram; `None` when nothing was rated.
    pub fn mean_rating(&self) -> Option<f64> {
        let rated: u64 = self.ratings.iter().sum();
        let sum: u64 = self
            .ratings
            .iter()
            .zip(1u64..)
            .map(|(count, rating)| count * rating)
            .sum();
        (rated > 0).then(|| sum as f64 / rated as f64)
    }
}

/// The answer to an insight.
#[derive(Clone, Debug, PartialEq, Encode)]
pub struct Insight {
    /// The groups, in name (and version) order, at most [`MAX_INSIGHT_ROWS`].
    pub rows: Vec<InsightRow>,
    /// How many partitions the counts cover, of how many.
    pub covered: (u32, u32),
    /// The ε spent on this answer (with differential privacy).
    pub epsilon: Option<f64>,
    /// What is left of the key's budget after it (with differential privacy).
    pub budget_remaining: Option<f64>,
}

impl<Context> Decode<Context> for Insight {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(Insight {
            rows: decode_vec(
                decoder,
                MAX_INSIGHT_ROWS,
                |n| too_many("rows", format!("{n} rows, at most {MAX_INSIGHT_ROWS}")),
                InsightRow::decode,
            )?,
            covered: <(u32, u32)>::decode(decoder)?,
            epsilon: Option::<f64>::decode(decoder)?,
            budget_remaining: Option::<f64>::decode(decoder)?,
        })
    }
}
bincode::impl_borrow_decode!(Insight);
