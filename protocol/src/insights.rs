//! Insights: aggregate questions about the feedback, answered from the counts every
//! partition's leader keeps (never by a scan), optionally with differential privacy.
//!
//! A query groups either the items about functions by function (or by function and
//! version), from the function stats, or every item by any of its kind, its tier and
//! the day it was stored ([`Facet`]), from the facet counts every partition keeps
//! beside them. Per group it releases the item count and the histogram of ratings 1–5
//! (the mean rating follows from the histogram). With `epsilon` set, each released
//! number gets Laplace noise and the asking key's privacy budget is charged `epsilon`.

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};

use crate::bounded::{decode_vec, too_many};
use crate::error::ErrorCode;
use crate::item::{Item, Kind, MAX_FUNCTION_NAME_BYTES, Tier};

/// Milliseconds in a day: the width of a time bucket.
pub const DAY_MS: u64 = 86_400_000;

/// Where an item falls among the facets: its kind, its tier, and the day (since the
/// Unix epoch, UTC) it was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct Facet {
    /// The item's kind.
    pub kind: Kind,
    /// The tier it asked for.
    pub tier: Tier,
    /// The day it was stored.
    pub day: u32,
}

impl Facet {
    /// The facet of `item`, stored at `stored_at` (ms since the Unix epoch).
    pub fn of(item: &Item, stored_at: u64) -> Facet {
        Facet {
            kind: item.kind,
            tier: item.tier,
            day: u32::try_from(stored_at / DAY_MS).unwrap_or(u32::MAX),
        }
    }
}

/// Items counted and their ratings: what a facet adds up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Tally {
    /// Items.
    pub items: u64,
    /// How many rated 1, 2, 3, 4 and 5.
    pub ratings: [u64; 5],
}

impl Tally {
    /// Counts one more item, with its rating (1..=5; any other counts in no bucket).
    pub fn add(&mut self, rating: Option<u8>) {
        self.items += 1;
        if let Some(count) = rating_bucket(&mut self.ratings, rating) {
            *count += 1;
        }
    }

    /// Takes one item away (saturating: a count never goes below zero).
    pub fn remove(&mut self, rating: Option<u8>) {
        self.items = self.items.saturating_sub(1);
        if let Some(count) = rating_bucket(&mut self.ratings, rating) {
            *count = count.saturating_sub(1);
        }
    }

    /// Adds `other` to this.
    pub fn merge(&mut self, other: &Tally) {
        self.items += other.items;
        for (sum, count) in self.ratings.iter_mut().zip(other.ratings) {
            *sum += count;
        }
    }

    /// Whether it counts nothing.
    pub fn is_empty(&self) -> bool {
        self.items == 0 && self.ratings.iter().all(|&c| c == 0)
    }
}

fn rating_bucket(ratings: &mut [u64; 5], rating: Option<u8>) -> Option<&mut u64> {
    let at = usize::from(rating?).checked_sub(1)?;
    ratings.get_mut(at)
}

/// What an insight groups its items by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Grouping {
    /// By function (the items about functions only).
    pub function: bool,
    /// By function and version (the items about functions only).
    pub version: bool,
    /// By kind.
    pub kind: bool,
    /// By tier.
    pub tier: bool,
    /// By the day the item was stored.
    pub day: bool,
}

impl Grouping {
    /// Whether it groups by function (or version): the function stats answer it.
    pub fn by_function(&self) -> bool {
        self.function || self.version
    }
}

/// Most rows one insight answers.
pub const MAX_INSIGHT_ROWS: usize = 10_000;

/// What an insight asks.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct InsightQuery {
    /// Only the function of this name (grouping by function); every function if `None`.
    pub function: Option<String>,
    /// What the rows group by: function or version, or any of kind, tier and day.
    pub group: Grouping,
    /// Only items stored on these days (grouping by facets), inclusive.
    pub days: Option<(u32, u32)>,
    /// With differential privacy at this ε (0 < ε ≤ 10), charged to the key's budget.
    pub epsilon: Option<f64>,
}

impl InsightQuery {
    /// Whether the grouping, name, days and ε are usable together and in bounds.
    pub fn validate(&self) -> Result<(), ErrorCode> {
        let by_facets = self.group.kind || self.group.tier || self.group.day;
        if self.group.by_function() && by_facets {
            return Err(ErrorCode::invalid(
                "group",
                "group by function or version, or by kind, tier and day, not both".to_string(),
            ));
        }
        if !self.group.by_function() && self.function.is_some() {
            return Err(ErrorCode::invalid(
                "function",
                "a function filter needs a grouping by function or version".to_string(),
            ));
        }
        if self.group.by_function() && self.days.is_some() {
            return Err(ErrorCode::invalid(
                "days",
                "a day range needs a grouping by kind, tier or day".to_string(),
            ));
        }
        if let Some((from, to)) = self.days
            && from > to
        {
            return Err(ErrorCode::invalid("days", format!("{from} is after {to}")));
        }
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

/// One group of an insight: the dimensions grouped by are set, the others `None`.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct InsightRow {
    /// The function, when grouped by function or version.
    pub function: Option<String>,
    /// The version, when grouped by version.
    pub version: Option<String>,
    /// The kind, when grouped by kind.
    pub kind: Option<Kind>,
    /// The tier, when grouped by tier.
    pub tier: Option<Tier>,
    /// The day (since the Unix epoch), when grouped by day.
    pub day: Option<u32>,
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
