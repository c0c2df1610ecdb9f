//! What the feedback about each function version adds up to, cluster-wide: every
//! member counts the partitions the ring names it the leader of (from the counts its
//! store keeps, no scan), and the node a client asked merges the members' reports into
//! one page, judging each version by the configured [`UpdateRule`].
//!
//! The node asked keeps each merged page for [`PAGE_STALENESS`] ([`FunctionPages`]): a
//! summary is read far more often than it changes much, and a page served again within
//! that second costs no member anything. A page that misses partitions is not kept.
//!
//! A page is cut the same way on every member (name and version order, after the
//! client's cursor, at most its limit), so the first `limit` versions of the merge are
//! whole: a version among them is within every member's own first `limit`. A report
//! says which partitions it counted; the answer says how many of them it covers, which
//! is fewer while a partition changes leader or a member cannot be reached.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chorus_actors::NodeHandle;
use chorus_protocol::{
    ErrorCode, FunctionRef, FunctionVersion, MAX_FUNCTIONS_PAGE, PartitionId, Response,
    UpdateReasons, UpdateRule, VersionStats,
};

use crate::cluster::routing::{Forward, ForwardReply};
use crate::cluster::standing::PartitionSet;
use crate::cluster::state::ClusterState;
use crate::server::Backend;
use crate::server::fan_out::{ask_live_members, coverage};

/// How long a merged page is served again: a summary is at most this stale (on top of
/// the indexer's gathering, 50 ms).
pub const PAGE_STALENESS: Duration = Duration::from_secs(1);

/// Most pages kept.
const KEPT_PAGES: u64 = 1024;

/// Function pages answered, by where they came from (`cache` or `members`).
pub const FUNCTION_PAGES_TOTAL: &str = "chorus_function_pages_total";

/// The function pages a node answers: merged from the members, judged by its rule, and
/// kept for [`PAGE_STALENESS`].
#[derive(Clone)]
pub struct FunctionPages {
    rule: UpdateRule,
    kept: moka::future::Cache<FunctionQuery, Response>,
}

impl Default for FunctionPages {
    fn default() -> Self {
        FunctionPages::new(UpdateRule::default())
    }
}

impl FunctionPages {
    /// Pages judged by `rule`, none kept yet.
    pub fn new(rule: UpdateRule) -> Self {
        Self::with_staleness(rule, PAGE_STALENESS)
    }

    /// Pages judged by `rule`, each kept for `staleness`.
    fn with_staleness(rule: UpdateRule, staleness: Duration) -> Self {
        FunctionPages {
            rule,
            kept: moka::future::Cache::builder()
                .max_capacity(KEPT_PAGES)
                .time_to_live(staleness)
                .build(),
        }
    }

    /// Answers `Request::Functions` for `backend`.
    pub async fn page(
        &self,
        backend: &Backend,
        query: FunctionQuery,
    ) -> Result<Response, ErrorCode> {
        let rule = self.rule;
        self.kept_or(query.clone(), gather(backend, query, &rule))
            .await
    }

    /// The page kept for `query`, or what `merged` makes of it (kept if it covers
    /// every partition).
    async fn kept_or(
        &self,
        query: FunctionQuery,
        merged: impl Future<Output = Result<Response, ErrorCode>>,
    ) -> Result<Response, ErrorCode> {
        if let Some(page) = self.kept.get(&query).await {
            metrics::counter!(FUNCTION_PAGES_TOTAL, "source" => "cache").increment(1);
            return Ok(page);
        }
        let page = merged.await?;
        metrics::counter!(FUNCTION_PAGES_TOTAL, "source" => "members").increment(1);
        if let Response::Functions {
            covered: (counted, of),
            ..
        } = &page
            && counted == of
        {
            self.kept.insert(query, page.clone()).await;
        }
        Ok(page)
    }
}

/// Which function versions a page holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FunctionQuery {
    /// Only the versions of the function of this name.
    pub name: Option<String>,
    /// Only versions after this one.
    pub after: Option<FunctionRef>,
    /// At most this many, 1..=[`MAX_FUNCTIONS_PAGE`].
    pub limit: u32,
}

impl FunctionQuery {
    /// Whether `function` belongs in the page.
    fn selects(&self, function: &FunctionRef) -> bool {
        self.name.as_ref().is_none_or(|name| &function.name == name)
            && self.after.as_ref().is_none_or(|after| function > after)
    }

    /// The page's size, within bounds whatever a peer asked.
    fn limit(&self) -> usize {
        self.limit.clamp(1, MAX_FUNCTIONS_PAGE) as usize
    }
}

/// What one member counted: its page of versions, and the partitions it counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionReport {
    /// The versions, ascending, at most the query's limit.
    pub versions: Vec<(FunctionRef, VersionStats)>,
    /// The partitions counted.
    pub partitions: PartitionSet,
}

/// This member's report: the partitions the ring names it the leader of.
pub fn report(node: &NodeHandle, cluster: &ClusterState, query: &FunctionQuery) -> FunctionReport {
    let ring = cluster.ring();
    let me = cluster.node();
    let partitions = ring.ring.partitions();
    let leads = |p: PartitionId| p < partitions && ring.leader(p) == me;
    let page = node.function_stats(leads, |function| query.selects(function), query.limit());
    FunctionReport {
        versions: page.into_iter().collect(),
        partitions: PartitionSet::of((0..partitions).filter(|&p| leads(p))),
    }
}

/// [`report`] on the blocking pool: the first report after a change of leader sums the
/// node's led partitions afresh (partitions × versions), which must not hold a runtime
/// worker.
pub async fn report_blocking(
    node: NodeHandle,
    cluster: ClusterState,
    query: FunctionQuery,
) -> Result<FunctionReport, ErrorCode> {
    tokio::task::spawn_blocking(move || report(&node, &cluster, &query))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "counting function stats failed");
            ErrorCode::Internal { request_id: 0 }
        })
}

/// Merges the members' reports into the page the client gets.
pub fn merge(
    reports: Vec<FunctionReport>,
    query: &FunctionQuery,
    partitions: u16,
    rule: &UpdateRule,
) -> Response {
    let limit = query.limit();
    let full = reports.iter().any(|r| r.versions.len() >= limit);
    let covered = coverage(reports.iter().map(|r| &r.partitions), partitions);
    let mut merged: BTreeMap<FunctionRef, VersionStats> = BTreeMap::new();
    for report in reports {
        for (function, stats) in report.versions {
            merged.entry(function).or_default().merge(&stats);
        }
    }
    let more = merged.len() > limit || full;
    let versions: Vec<FunctionVersion> = merged
        .into_iter()
        .filter(|(function, _)| query.selects(function))
        .take(limit)
        .map(|(function, stats)| FunctionVersion {
            requires_update: UpdateReasons(rule.judge(&stats)),
            function,
            stats,
        })
        .collect();
    let next = (more && versions.len() == limit)
        .then(|| versions.last().map(|v| v.function.clone()))
        .flatten();
    Response::Functions {
        versions,
        next,
        covered,
    }
}

/// Answers `Request::Functions`: this member's report and every other live member's,
/// asked at once, merged. A member that cannot answer leaves its partitions uncovered.
pub async fn gather(
    backend: &Backend,
    query: FunctionQuery,
    rule: &UpdateRule,
) -> Result<Response, ErrorCode> {
    let cluster = &backend.cluster;
    let ring = cluster.ring();
    let partitions = ring.ring.partitions();
    let mut reports =
        vec![report_blocking(backend.node.clone(), cluster.clone(), query.clone()).await?];
    let request = Forward::FunctionStats {
        query: query.clone(),
    };
    reports.extend(
        ask_live_members(backend, request, |reply| match reply {
            ForwardReply::FunctionStats(report) => Some(report),
            _ => None,
        })
        .await,
    );
    Ok(merge(reports, &query, partitions, rule))
}

#[cfg(test)]
mod tests {
    use chorus_protocol::ItemFacts;

    use super::*;

    fn version(name: &str, version: &str) -> FunctionRef {
        FunctionRef {
            name: name.into(),
            version: version.into(),
        }
    }

    fn stats(items: usize, rating: u8) -> VersionStats {
        let mut stats = VersionStats::default();
        for _ in 0..items {
            stats.add(&ItemFacts {
                rating: Some(rating),
                metrics: None,
            });
        }
        stats
    }

    fn query(name: Option<&str>, after: Option<FunctionRef>, limit: u32) -> FunctionQuery {
        FunctionQuery {
            name: name.map(str::to_owned),
            after,
            limit,
        }
    }

    /// A page's versions with their item counts, where the next starts, what it covers.
    type Page = (Vec<(FunctionRef, u64)>, Option<FunctionRef>, (u32, u32));

    fn page(response: Response) -> Page {
        let Response::Functions {
            versions,
            next,
            covered,
        } = response
        else {
            panic!("a functions page");
        };
        let versions = versions
            .into_iter()
            .map(|v| (v.function, v.stats.items))
            .collect();
        (versions, next, covered)
    }

    #[test]
    fn members_reports_add_up_and_say_what_they_cover() {
        let a = FunctionReport {
            versions: vec![
                (version("crop", "1"), stats(2, 4)),
                (version("resize", "1"), stats(1, 5)),
            ],
            partitions: PartitionSet::of([0, 1]),
        };
        let b = FunctionReport {
            versions: vec![(version("resize", "1"), stats(3, 5))],
            partitions: PartitionSet::of([2]),
        };
        let (versions, next, covered) = page(merge(
            vec![a, b],
            &query(None, None, 10),
            4,
            &UpdateRule::default(),
        ));
        assert_eq!(
            versions,
            [(version("crop", "1"), 2), (version("resize", "1"), 4)]
        );
        assert_eq!(next, None);
        assert_eq!(covered, (3, 4), "partition 3's leader did not answer");
    }

    #[test]
    fn a_page_is_cut_after_the_cursor_and_names_where_the_next_starts() {
        let all: Vec<(FunctionRef, VersionStats)> = (0..5)
            .map(|v| (version("f", &v.to_string()), stats(1, 3)))
            .collect();
        let member = |q: &FunctionQuery| FunctionReport {
            versions: all
                .iter()
                .filter(|(f, _)| q.selects(f))
                .take(q.limit())
                .cloned()
                .collect(),
            partitions: PartitionSet::of([0]),
        };
        let rule = UpdateRule::default();
        let first = query(Some("f"), None, 2);
        let (versions, next, _) = page(merge(vec![member(&first)], &first, 1, &rule));
        assert_eq!(versions.len(), 2);
        assert_eq!(next, Some(version("f", "1")));
        let rest = query(Some("f"), next, 10);
        let (versions, next, _) = page(merge(vec![member(&rest)], &rest, 1, &rule));
        let names: Vec<String> = versions.into_iter().map(|(f, _)| f.version).collect();
        assert_eq!(names, ["2", "3", "4"]);
        assert_eq!(next, None);
        let other = query(Some("g"), None, 10);
        assert!(
            page(merge(vec![member(&other)], &other, 1, &rule))
                .0
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_whole_page_is_served_again_until_stale_and_a_partial_one_never() {
        let pages = FunctionPages::with_staleness(UpdateRule::default(), Duration::from_millis(50));
        let merged = std::sync::atomic::AtomicUsize::new(0);
        let merged = &merged;
        let merge = |covered| async move {
            merged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Response::Functions {
                versions: Vec::new(),
                next: None,
                covered,
            })
        };
        let count = || merged.load(std::sync::atomic::Ordering::Relaxed);
        let whole = query(Some("f"), None, 10);
        pages.kept_or(whole.clone(), merge((4, 4))).await.unwrap();
        pages.kept_or(whole.clone(), merge((4, 4))).await.unwrap();
        assert_eq!(count(), 1, "served again");
        let partial = query(Some("g"), None, 10);
        pages.kept_or(partial.clone(), merge((3, 4))).await.unwrap();
        pages.kept_or(partial, merge((3, 4))).await.unwrap();
        assert_eq!(count(), 3, "a page missing partitions is merged again");
        tokio::time::sleep(Duration::from_millis(120)).await;
        pages.kept_or(whole, merge((4, 4))).await.unwrap();
        assert_eq!(count(), 4, "a stale page is merged again");
    }

    #[test]
    fn each_version_is_judged_by_the_rule() {
        let report = FunctionReport {
            versions: vec![
                (version("f", "1"), stats(60, 1)),
                (version("f", "2"), stats(60, 5)),
            ],
            partitions: PartitionSet::of([0]),
        };
        let Response::Functions { versions, .. } = merge(
            vec![report],
            &query(None, None, 10),
            1,
            &UpdateRule::default(),
        ) else {
            panic!("a functions page");
        };
        assert_eq!(versions[0].requires_update.0.len(), 1);
        assert!(versions[1].requires_update.0.is_empty());
    }
}
