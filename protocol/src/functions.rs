//! What the feedback about one version of a function adds up to: how many items, their
//! ratings, the error rate and the execution times they report. A store keeps one
//! [`VersionStats`] per partition, function and version, adds an item's [`ItemFacts`]
//! when the item is first stored and takes them away when a replica loses the item, so
//! a summary is read, never computed by a scan; partitions' stats merge by addition.
//! Every field is an integer count or sum (durations in a log-bucketed histogram), so
//! adding, removing and merging are exact and in any order.
//!
//! An [`UpdateRule`] (thresholds from config) says when a version's feedback marks it
//! `requires_update`.

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};

use crate::bounded::{decode_vec, too_many};
use crate::item::{FunctionRef, Item};

/// Buckets of the duration histogram: values under [`LINEAR_BUCKETS`] µs one each, then
/// 16 per power of two up to `u64::MAX` µs.
pub const DURATION_BUCKETS: u16 = LINEAR_BUCKETS as u16 + (64 - LINEAR_BITS) * SUB_BUCKETS;

/// Sub-buckets per power of two: a bucket spans at most 1/16 of its values (6.25 %).
const SUB_BUCKETS: u16 = 16;
/// log2 of [`SUB_BUCKETS`].
const SUB_BITS: u32 = 4;
/// Values below this many µs have a bucket each.
const LINEAR_BUCKETS: u64 = 32;
/// log2 of [`LINEAR_BUCKETS`].
const LINEAR_BITS: u16 = 5;
/// Parts per million: the unit of a stored error rate.
const PPM: u64 = 1_000_000;

/// What one item tells about the version of the function it names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemFacts {
    /// Its rating, 1..=5.
    pub rating: Option<u8>,
    /// The error rate it reports, in parts per million, and its mean execution time in
    /// µs (both come with the item's execution metrics, or neither).
    pub metrics: Option<(u32, u64)>,
}

impl ItemFacts {
    /// The function version `item` is about and what it tells of it; `None` for an
    /// item that names no function.
    pub fn of(item: &Item) -> Option<(&FunctionRef, ItemFacts)> {
        let function = item.function.as_ref()?;
        let metrics = item.metrics.map(|m| {
            // Validated items hold fractions in 0..=1 and finite durations >= 0; the
            // casts saturate whatever they are given.
            let error_ppm = (m.error_rate.clamp(0.0, 1.0) * PPM as f64).round() as u32;
            let duration_us = (m.avg_duration_ms * 1000.0).round() as u64;
            (error_ppm, duration_us)
        });
        let rating = item.rating.filter(|r| (1..=5).contains(r));
        Some((function, ItemFacts { rating, metrics }))
    }
}

/// Execution times in µs as counts per log bucket (see [`DURATION_BUCKETS`]), only the
/// buckets that hold something, ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode)]
pub struct DurationHistogram {
    buckets: Vec<(u16, u64)>,
}

/// The bucket of `us` microseconds.
fn bucket_of(us: u64) -> u16 {
    if us < LINEAR_BUCKETS {
        return us as u16;
    }
    let exponent = 63 - us.leading_zeros();
    let sub = (us >> (exponent - SUB_BITS)) & u64::from(SUB_BUCKETS - 1);
    (LINEAR_BUCKETS as u32 + (exponent - u32::from(LINEAR_BITS)) * u32::from(SUB_BUCKETS)) as u16
        + sub as u16
}

/// The lowest value and the width of bucket `bucket`.
fn bucket_span(bucket: u16) -> (u64, u64) {
    if u64::from(bucket) < LINEAR_BUCKETS {
        return (u64::from(bucket), 1);
    }
    let above = bucket - LINEAR_BUCKETS as u16;
    let exponent = u32::from(LINEAR_BITS + above / SUB_BUCKETS);
    let sub = u64::from(above % SUB_BUCKETS);
    let width = 1u64 << (exponent - SUB_BITS);
    ((u64::from(SUB_BUCKETS) + sub) * width, width)
}

impl DurationHistogram {
    /// How many values it holds.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Adds `n` values in `bucket`.
    fn add_to(&mut self, bucket: u16, n: u64) {
        match self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => self.buckets[at].1 += n,
            Err(at) => self.buckets.insert(at, (bucket, n)),
        }
    }

    /// Records one value.
    pub fn record(&mut self, us: u64) {
        self.add_to(bucket_of(us), 1);
    }

    /// Takes one value back (one that was recorded; nothing happens otherwise).
    pub fn forget(&mut self, us: u64) {
        let bucket = bucket_of(us);
        if let Ok(at) = self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            self.buckets[at].1 -= 1;
            if self.buckets[at].1 == 0 {
                self.buckets.remove(at);
            }
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &DurationHistogram) {
        for &(bucket, n) in &other.buckets {
            self.add_to(bucket, n);
        }
    }

    /// The value at quantile `q` (0..=1) in µs, as the middle of its bucket (within
    /// 3.2 % of the true value); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for &(bucket, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_span(bucket);
                return Some(low as f64 + (width - 1) as f64 / 2.0);
            }
        }
        None
    }
}

impl<Context> Decode<Context> for DurationHistogram {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let buckets = decode_vec(
            decoder,
            usize::from(DURATION_BUCKETS),
            |n| {
                too_many(
                    "durations",
                    format!("{n} buckets, at most {DURATION_BUCKETS}"),
                )
            },
            |d| Ok((u16::decode(d)?, u64::decode(d)?)),
        )?;
        let ascending = buckets.windows(2).all(|w| w[0].0 < w[1].0);
        let within = buckets.iter().all(|&(b, n)| b < DURATION_BUCKETS && n > 0);
        if !ascending || !within {
            return Err(DecodeError::Other(
                "durations: buckets must ascend, exist and hold something",
            ));
        }
        Ok(DurationHistogram { buckets })
    }
}
bincode::impl_borrow_decode!(DurationHistogram);

/// The feedback about one version of a function, added up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode)]
pub struct VersionStats {
    /// Items about it.
    pub items: u64,
    /// How many of them rated it 1, 2, 3, 4 and 5.
    pub ratings: [u64; 5],
    /// How many reported execution metrics.
    pub reported: u64,
    /// The sum of their error rates, in parts per million.
    pub error_ppm: u64,
    /// Their mean execution times.
    pub durations: DurationHistogram,
}

impl VersionStats {
    /// The count of `rating` (1..=5; any other rating counts nowhere).
    fn rating_count(&mut self, rating: Option<u8>) -> Option<&mut u64> {
        let at = usize::from(rating?).checked_sub(1)?;
        self.ratings.get_mut(at)
    }

    /// Counts one more item.
    pub fn add(&mut self, facts: &ItemFacts) {
        self.items += 1;
        if let Some(count) = self.rating_count(facts.rating) {
            *count += 1;
        }
        if let Some((error_ppm, duration_us)) = facts.metrics {
            self.reported += 1;
            self.error_ppm += u64::from(error_ppm);
            self.durations.record(duration_us);
        }
    }

    /// Counts one item fewer: one that was added with the same facts.
    pub fn remove(&mut self, facts: &ItemFacts) {
        self.items = self.items.saturating_sub(1);
        if let Some(count) = self.rating_count(facts.rating) {
            *count = count.saturating_sub(1);
        }
        if let Some((error_ppm, duration_us)) = facts.metrics {
            self.reported = self.reported.saturating_sub(1);
            self.error_ppm = self.error_ppm.saturating_sub(u64::from(error_ppm));
            self.durations.forget(duration_us);
        }
    }

    /// Adds everything `other` counts (another partition's, another node's).
    pub fn merge(&mut self, other: &VersionStats) {
        self.items += other.items;
        for (mine, theirs) in self.ratings.iter_mut().zip(other.ratings) {
            *mine += theirs;
        }
        self.reported += other.reported;
        self.error_ppm += other.error_ppm;
        self.durations.merge(&other.durations);
    }

    /// Whether it counts nothing.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// How many items gave a rating.
    pub fn rated(&self) -> u64 {
        self.ratings.iter().sum()
    }

    /// The mean rating, if any item gave one.
    pub fn mean_rating(&self) -> Option<f64> {
        let rated = self.rated();
        let sum: u64 = (1..=5).zip(self.ratings).map(|(r, n)| r * n).sum();
        (rated > 0).then(|| sum as f64 / rated as f64)
    }

    /// The mean reported error rate (0..=1), if any item reported metrics.
    pub fn error_rate(&self) -> Option<f64> {
        (self.reported > 0).then(|| self.error_ppm as f64 / (self.reported * PPM) as f64)
    }

    /// The reported execution time at quantile `q`, in ms.
    pub fn duration_ms(&self, q: f64) -> Option<f64> {
        self.durations.quantile(q).map(|us| us / 1000.0)
    }
}

impl<Context> Decode<Context> for VersionStats {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let stats = VersionStats {
            items: u64::decode(decoder)?,
            ratings: <[u64; 5]>::decode(decoder)?,
            reported: u64::decode(decoder)?,
            error_ppm: u64::decode(decoder)?,
            durations: DurationHistogram::decode(decoder)?,
        };
        // Counts that cannot come from adding items are refused, not believed.
        let consistent = stats.rated() <= stats.items
            && stats.reported <= stats.items
            && stats.error_ppm / PPM <= stats.reported
            && stats.durations.count() == stats.reported;
        if !consistent {
            return Err(DecodeError::Other(
                "version stats: counts no set of items adds up to",
            ));
        }
        Ok(stats)
    }
}
bincode::impl_borrow_decode!(VersionStats);

/// When a version's feedback says it needs an update (thresholds from config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateRule {
    /// Judge a version only once this many items rated it (for the rating) or reported
    /// metrics (for the error rate).
    pub min_items: u64,
    /// A mean rating under this marks it.
    pub min_mean_rating: f64,
    /// A mean error rate over this marks it.
    pub max_error_rate: f64,
}

impl Default for UpdateRule {
    fn default() -> Self {
        UpdateRule {
            min_items: 50,
            min_mean_rating: 3.0,
            max_error_rate: 0.05,
        }
    }
}

/// Why a version requires an update.
#[derive(Clone, Copy, Debug, PartialEq, Encode, Decode)]
pub enum UpdateReason {
    /// Its mean rating is under the rule's.
    LowRating {
        /// The mean rating.
        mean: f64,
        /// Over how many ratings.
        over: u64,
    },
    /// Its mean error rate is over the rule's.
    HighErrorRate {
        /// The mean error rate, 0..=1.
        rate: f64,
        /// Over how many reports.
        over: u64,
    },
}

impl UpdateRule {
    /// Why `stats` require an update under this rule: nothing when they do not.
    pub fn judge(&self, stats: &VersionStats) -> Vec<UpdateReason> {
        let mut reasons = Vec::new();
        let rated = stats.rated();
        if let Some(mean) = stats.mean_rating()
            && rated >= self.min_items
            && mean < self.min_mean_rating
        {
            reasons.push(UpdateReason::LowRating { mean, over: rated });
        }
        if let Some(rate) = stats.error_rate()
            && stats.reported >= self.min_items
            && rate > self.max_error_rate
        {
            reasons.push(UpdateReason::HighErrorRate {
                rate,
                over: stats.reported,
            });
        }
        reasons
    }
}

#[cfg(test)]
mod tests;
