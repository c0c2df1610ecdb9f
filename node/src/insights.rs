//! Insights across the cluster: aggregate questions answered from the counts every
//! partition's leader keeps (never by a scan): the function stats, for rows by
//! function or version (gathered and merged as function pages are), or the facet
//! counts (kind, tier, day stored), for rows by any of those (every live member reports
//! its led partitions; the answer says how many partitions it covers); optionally
//! under differential privacy.
//!
//! With ε, the asking key's budget is charged first, by one member: the leader of the
//! key id's partition (the *keeper* of its ledger), one charge at a time, which holds
//! the key's spend as the sum of its `privacy_spent` events. It refuses a charge past
//! `[insights] epsilon_budget` (the asking node's), and records the charge as an event
//! that a second member holds before the query runs (the asking node merges it from the
//! answer; a keeper asked directly pushes it and needs one peer to take it), so a
//! member that takes the ledger over knows every charge that let a query run; the
//! event reaches every other member by anti-entropy.
//! Then each released number gets Laplace noise ([`chorus_actors::policy::privacy`]):
//! per group the count and the 5-bucket rating histogram, each at ε/2 (sensitivity 1
//! under adding or removing one item); the mean follows from the noisy histogram.
//! Groups whose noisy count is under [`DP_MIN_ITEMS`] are left out: which groups exist
//! is itself data, so this narrows (without closing) what an answer's list of groups
//! reveals.
//!
//! Answers are kept for `[insights] cache_ms` (5 s by default: an insight is at most that
//! stale): a plain answer per question, a private one per question and key, so the same
//! key asking the same question again within the bound gets the same noisy answer and
//! spends nothing (a repeat of a released answer tells nothing new). Hits and misses are
//! counted in `chorus_insights_total{source}`.

use std::collections::BTreeMap;
use std::time::Duration;

use chorus_actors::policy::privacy::{Budget, Epsilon, Split, Statistic, noisy_count};
use chorus_actors::{Caller, NodeHandle};
use chorus_protocol::{
    ErrorCode, Event, EventKind, Facet, FunctionVersion, Grouping, Insight, InsightQuery,
    InsightRow, Kind, MAX_FUNCTIONS_PAGE, MAX_INSIGHT_ROWS, PartitionId, Response, Tally, Tier,
    UpdateRule, partition_of,
};
use tokio::sync::Mutex;

use crate::cluster::event_sync;
use crate::cluster::routing::{Forward, ForwardReply};
use crate::cluster::standing::PartitionSet;
use crate::cluster::state::ClusterState;
use crate::functions::{FunctionQuery, gather};
use crate::server::Backend;
use crate::server::fan_out::{ask_live_members, coverage};

/// Insight answers, by where they came from (`cache` or `members`).
pub const INSIGHTS_TOTAL: &str = "chorus_insights_total";
/// Groups with fewer (noisy) items are left out of a private answer.
pub const DP_MIN_ITEMS: u64 = 5;
/// Statistics a private answer releases per group: the count and the histogram.
const RELEASED: usize = 2;
/// Most answers kept.
const KEPT_ANSWERS: u64 = 4096;

/// What an answer is kept under: the question, and for a private one, the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Kept {
    function: Option<String>,
    group: Grouping,
    days: Option<(u32, u32)>,
    /// ε in millionths and the key id, for a private answer.
    private: Option<(u64, String)>,
}

/// Makes this node's charges one at a time, as the keeper of their ledgers.
static CHARGING: Mutex<()> = Mutex::const_new(());

/// The insights a node answers: each key's budget and the answers kept.
#[derive(Clone)]
pub struct Insights {
    budget: Epsilon,
    kept: moka::future::Cache<Kept, Insight>,
}

impl Default for Insights {
    fn default() -> Self {
        Insights::new(10.0, Duration::from_secs(5))
    }
}

impl Insights {
    /// Insights with each key's lifetime `budget` (clamped into (0, 10]) and answers
    /// kept for `staleness`.
    pub fn new(budget: f64, staleness: Duration) -> Self {
        let budget = Epsilon::new(budget.clamp(f64::MIN_POSITIVE, 10.0))
            .unwrap_or_else(|_| Epsilon::new(10.0).expect("10 is a valid epsilon"));
        Insights {
            budget,
            kept: moka::future::Cache::builder()
                .max_capacity(KEPT_ANSWERS)
                .time_to_live(staleness)
                .build(),
        }
    }

    /// Answers `Request::Insights` for `caller` (its shape checked by the caller).
    pub async fn answer(
        &self,
        backend: &Backend,
        caller: &Caller,
        query: InsightQuery,
    ) -> Result<Response, ErrorCode> {
        let epsilon = query
            .epsilon
            .map(Epsilon::new)
            .transpose()
            .map_err(|e| ErrorCode::invalid("epsilon", e.to_string()))?;
        let kept = Kept {
            function: query.function.clone(),
            group: query.group,
            days: query.days,
            private: epsilon.map(|e| ((e.get() * 1e6).round() as u64, caller.key_id.to_string())),
        };
        if let Some(answer) = self.kept.get(&kept).await {
            metrics::counter!(INSIGHTS_TOTAL, "source" => "cache").increment(1);
            return Ok(Response::Insights(answer));
        }
        let remaining = match epsilon {
            Some(epsilon) => Some(charge(backend, &caller.key_id, epsilon, self.budget).await?),
            None => None,
        };
        let (mut rows, covered) = if query.group.by_function() {
            let (versions, covered) = all_versions(backend, query.function.clone()).await?;
            (group(&versions, query.group.version), covered)
        } else {
            let (facets, covered) = all_facets(backend, query.days).await?;
            (group_facets(&facets, query.group), covered)
        };
        if let Some(epsilon) = epsilon {
            rows = privatize(rows, epsilon, &mut rand::rng());
        }
        let answer = Insight {
            rows,
            covered,
            epsilon: epsilon.map(Epsilon::get),
            budget_remaining: remaining,
        };
        metrics::counter!(INSIGHTS_TOTAL, "source" => "members").increment(1);
        if covered.0 == covered.1 {
            self.kept.insert(kept, answer.clone()).await;
        }
        Ok(Response::Insights(answer))
    }
}

/// Charges `epsilon` to `key_id` as the keeper of its ledger, against `budget`: refused
/// past it, else recorded here as an event. Returns what is left and the event.
pub async fn charge_locally(
    node: &NodeHandle,
    key_id: &str,
    epsilon: Epsilon,
    budget: Epsilon,
) -> Result<(f64, Event), ErrorCode> {
    let _one_at_a_time = CHARGING.lock().await;
    let spent = node.privacy_spent(key_id.to_string()).await?;
    let mut ledger = Budget::from_spent(budget, spent);
    ledger
        .charge(epsilon)
        .map_err(|e| ErrorCode::invalid("epsilon", e.to_string()))?;
    let event = EventKind::PrivacySpent {
        key_id: key_id.to_string(),
        epsilon: epsilon.get(),
    };
    let event = node
        .record_events(vec![event])
        .await?
        .pop()
        .ok_or_else(|| ErrorCode::Unavailable {
            reason: "the store recorded no event".into(),
        })?;
    Ok((ledger.remaining(), event))
}

/// Charges `epsilon` to `key_id` at the keeper of its ledger (this node or over a
/// link); answers once a second member holds the charge.
async fn charge(
    backend: &Backend,
    key_id: &str,
    epsilon: Epsilon,
    budget: Epsilon,
) -> Result<f64, ErrorCode> {
    let ring = backend.cluster.ring();
    let keeper = ring
        .leader(partition_of(key_id, ring.ring.partitions()))
        .clone();
    if &keeper == backend.cluster.node() {
        let (remaining, event) = charge_locally(&backend.node, key_id, epsilon, budget).await?;
        if let Some(peers) = &backend.peers
            && !peers.peers().is_empty()
            && event_sync::push(peers.as_ref(), &[event]).await == 0
        {
            return Err(ErrorCode::Unavailable {
                reason: "the privacy charge could not be replicated; nothing was answered".into(),
            });
        }
        return Ok(remaining);
    }
    let Some(peers) = &backend.peers else {
        return Err(ErrorCode::Unavailable {
            reason: format!("{keeper} keeps the key's budget and this node has no links"),
        });
    };
    let request = Forward::ChargePrivacy {
        key_id: key_id.to_string(),
        epsilon: epsilon.get(),
        budget: budget.get(),
    };
    match peers.forward(&keeper, request).await? {
        ForwardReply::Charged(remaining, event) => {
            backend.node.merge_events(vec![event]).await?;
            Ok(remaining)
        }
        _ => Err(ErrorCode::Unavailable {
            reason: format!("{keeper} answered a privacy charge with something else"),
        }),
    }
}

/// Every version of every function (or of `function`), merged from the members, and
/// the partitions covered (the fewest any page covered).
async fn all_versions(
    backend: &Backend,
    function: Option<String>,
) -> Result<(Vec<FunctionVersion>, (u32, u32)), ErrorCode> {
    let rule = UpdateRule::default();
    let mut versions = Vec::new();
    let mut covered = (u32::MAX, 0);
    let mut after = None;
    loop {
        let query = FunctionQuery {
            name: function.clone(),
            after,
            limit: MAX_FUNCTIONS_PAGE,
        };
        let Response::Functions {
            versions: page,
            next,
            covered: (counted, of),
        } = gather(backend, query, &rule).await?
        else {
            return Err(ErrorCode::Internal { request_id: 0 });
        };
        covered = (covered.0.min(counted), of);
        versions.extend(page);
        if versions.len() > MAX_INSIGHT_ROWS * 10 {
            return Err(ErrorCode::invalid(
                "function",
                "too many versions for one insight; name a function".to_string(),
            ));
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok((versions, covered)),
        }
    }
}

/// The rows of an answer by function: one per version, or one per function (its
/// versions summed).
pub fn group(versions: &[FunctionVersion], by_version: bool) -> Vec<InsightRow> {
    let mut rows: BTreeMap<(String, Option<String>), InsightRow> = BTreeMap::new();
    for version in versions {
        let key = (
            version.function.name.clone(),
            by_version.then(|| version.function.version.clone()),
        );
        let row = rows.entry(key.clone()).or_insert_with(|| InsightRow {
            function: Some(key.0),
            version: key.1,
            kind: None,
            tier: None,
            day: None,
            items: 0,
            ratings: [0; 5],
        });
        row.items += version.stats.items;
        for (sum, count) in row.ratings.iter_mut().zip(version.stats.ratings) {
            *sum += count;
        }
    }
    rows.into_values().take(MAX_INSIGHT_ROWS).collect()
}

/// The rows of an answer by facets: one per combination of the dimensions `group`
/// names (kind, tier, day), the others summed over.
pub fn group_facets(facets: &BTreeMap<Facet, Tally>, group: Grouping) -> Vec<InsightRow> {
    type Key = (Option<Kind>, Option<Tier>, Option<u32>);
    let mut rows: BTreeMap<Key, Tally> = BTreeMap::new();
    for (facet, tally) in facets {
        let key = (
            group.kind.then_some(facet.kind),
            group.tier.then_some(facet.tier),
            group.day.then_some(facet.day),
        );
        rows.entry(key).or_default().merge(tally);
    }
    rows.into_iter()
        .take(MAX_INSIGHT_ROWS)
        .map(|((kind, tier, day), tally)| InsightRow {
            function: None,
            version: None,
            kind,
            tier,
            day,
            items: tally.items,
            ratings: tally.ratings,
        })
        .collect()
}

/// What one member counted of the facets: over the partitions it leads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FacetReport {
    /// Each facet's items and ratings.
    pub facets: Vec<(Facet, Tally)>,
    /// The partitions counted.
    pub partitions: PartitionSet,
}

/// This member's facet report: the partitions the ring names it the leader of, on the
/// days `days` names; summed on the blocking pool (partitions × facets at first).
pub async fn facet_report(
    node: &NodeHandle,
    cluster: &ClusterState,
    days: Option<(u32, u32)>,
) -> Result<FacetReport, ErrorCode> {
    let (node, cluster) = (node.clone(), cluster.clone());
    tokio::task::spawn_blocking(move || {
        let ring = cluster.ring();
        let me = cluster.node();
        let partitions = ring.ring.partitions();
        let leads = |p: PartitionId| p < partitions && ring.leader(p) == me;
        FacetReport {
            facets: node.facet_stats(leads, days).into_iter().collect(),
            partitions: PartitionSet::of((0..partitions).filter(|&p| leads(p))),
        }
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "counting facets failed");
        ErrorCode::Internal { request_id: 0 }
    })
}

/// Every live member's facet report, merged, and the partitions they cover.
async fn all_facets(
    backend: &Backend,
    days: Option<(u32, u32)>,
) -> Result<(BTreeMap<Facet, Tally>, (u32, u32)), ErrorCode> {
    let cluster = &backend.cluster;
    let ring = cluster.ring();
    let partitions = ring.ring.partitions();
    let mut reports = vec![facet_report(&backend.node, cluster, days).await?];
    reports.extend(
        ask_live_members(backend, Forward::FacetStats { days }, |reply| match reply {
            ForwardReply::FacetStats(report) => Some(report),
            _ => None,
        })
        .await,
    );
    let covered = coverage(reports.iter().map(|r| &r.partitions), partitions);
    let mut merged: BTreeMap<Facet, Tally> = BTreeMap::new();
    for report in reports {
        for (facet, tally) in report.facets {
            merged.entry(facet).or_default().merge(&tally);
        }
    }
    Ok((merged, covered))
}

/// The rows with Laplace noise on every released number (each statistic at ε/2), and
/// those whose noisy count is under [`DP_MIN_ITEMS`] left out.
pub fn privatize<R: rand::Rng + ?Sized>(
    rows: Vec<InsightRow>,
    epsilon: Epsilon,
    rng: &mut R,
) -> Vec<InsightRow> {
    let split = Split::new(epsilon, RELEASED);
    let count_scale = split.scale(Statistic::Count);
    let bucket_scale = split.scale(Statistic::Histogram);
    rows.into_iter()
        .filter_map(|row| {
            let items = noisy_count(row.items, count_scale, rng);
            let ratings = row
                .ratings
                .map(|count| noisy_count(count, bucket_scale, rng));
            (items >= DP_MIN_ITEMS).then_some(InsightRow {
                items,
                ratings,
                ..row
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
