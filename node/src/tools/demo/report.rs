//! The demo's summary: one JSON object (`--json`) or a table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::workload::{ListBack, ReadBack, WorkloadReport};

/// One tier's share of the workload.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TierRow {
    /// Requests answered successfully.
    pub requests_ok: u64,
    /// Items acknowledged.
    pub acked: u64,
    /// Median latency of successful requests, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Largest latency, milliseconds.
    pub max_ms: f64,
    /// Failures, by error kind.
    pub errors: BTreeMap<String, u64>,
}

/// Everything the demo measured. Figures of steps that did not run are `null`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DemoSummary {
    /// Members of the cluster.
    pub nodes: usize,
    /// Seconds the workload ran.
    pub duration_s: f64,
    /// Items acknowledged.
    pub acked: u64,
    /// Items acknowledged per second.
    pub throughput_per_s: f64,
    /// Per tier: requests, items, latency percentiles, errors.
    pub tiers: BTreeMap<String, TierRow>,
    /// Failed requests (or batch items) of every tier, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// The same failures by phase (steady, crash, rejoin, recovered), then by kind.
    pub errors_by_phase: BTreeMap<String, BTreeMap<String, u64>>,
    /// The member that was killed.
    pub killed: Option<String>,
    /// From the SIGKILL until the last survivor declared it down, milliseconds (from the
    /// time each survivor stamps on the state change, not from when it was polled).
    pub detected_down_ms: Option<u64>,
    /// The same, per survivor.
    pub detected_down_by: BTreeMap<String, u64>,
    /// From the SIGKILL until the last survivor adopted a ring without it, milliseconds.
    pub ring_changed_ms: Option<u64>,
    /// Partitions that changed owner when the member went down.
    pub partitions_moved: Option<u32>,
    /// Whether the restarted member came back alive, under a new incarnation, in every
    /// member's view, and the ring took it back.
    pub rejoined: bool,
    /// From the restart (process start included) until the last member saw it alive
    /// again, milliseconds.
    pub rejoin_ms: Option<u64>,
    /// Its incarnation before the kill.
    pub incarnation_before: Option<u64>,
    /// Its incarnation after the restart, as the members see it.
    pub incarnation_after: Option<u64>,
    /// Partitions that changed owner in the survivors' rings when it rejoined.
    pub partitions_moved_back: Option<u32>,
    /// Whether the survivors' ring after the rejoin is the ring from before the kill
    /// (placement is a function of the member set alone).
    pub ring_restored: bool,
    /// Acknowledged items read back by id with the user and text acknowledged.
    pub read_back: u64,
    /// Acknowledged items not readable at the end.
    pub lost: u64,
    /// Acknowledged items read back with another user or text.
    pub mismatched: u64,
    /// A few ids of lost or mismatched items.
    pub lost_examples: Vec<String>,
    /// Users whose listings were checked against what they were acknowledged.
    pub users_listed: u64,
    /// Acknowledged items missing from their user's listing at the end.
    pub unlisted: u64,
    /// Items listed more than once.
    pub listed_twice: u64,
    /// Requests the SDK sent straight to the owner, and those it had to send unrouted.
    pub routing: BTreeMap<String, u64>,
    /// Whether every step ran and every acknowledged item was read back.
    pub ok: bool,
    /// The step that failed, if one did.
    pub error: Option<String>,
    /// The cluster's directory, when kept (`--keep`).
    pub kept_dir: Option<String>,
}

impl DemoSummary {
    /// Takes in what the workload measured.
    pub fn add_workload(&mut self, report: &WorkloadReport) {
        let ms = |v: u64| v as f64 / 1000.0;
        self.duration_s = report.elapsed.as_secs_f64();
        self.acked = report.acked.len() as u64;
        self.throughput_per_s = self.acked as f64 / self.duration_s.max(1e-3);
        self.errors = report.errors();
        self.errors_by_phase = report.errors_by_phase();
        for (tier, stats) in &report.tiers {
            let h = &stats.histogram;
            self.tiers.insert(
                tier.as_str().to_string(),
                TierRow {
                    requests_ok: stats.requests_ok,
                    acked: stats.items_acked,
                    p50_ms: ms(h.value_at_quantile(0.50)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    max_ms: ms(h.max()),
                    errors: stats.errors.clone(),
                },
            );
        }
    }

    /// Takes in what listing every user found.
    pub fn add_list_back(&mut self, list: &ListBack) {
        self.users_listed = list.users;
        self.unlisted = list.unlisted;
        self.listed_twice = list.duplicated;
    }

    /// Takes in what reading back found.
    pub fn add_read_back(&mut self, read: &ReadBack) {
        self.read_back = read.matched;
        self.lost = read.lost;
        self.mismatched = read.mismatched;
        self.lost_examples = read.examples.clone();
    }

    /// The summary as a table.
    pub fn table(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let opt32 = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
        let kinds = |errors: &BTreeMap<String, u64>| {
            if errors.is_empty() {
                "none".to_string()
            } else {
                let parts: Vec<String> = errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
                parts.join(" ")
            }
        };
        let mut rows: Vec<(String, String)> = vec![
            ("nodes".into(), self.nodes.to_string()),
            ("duration".into(), format!("{:.1} s", self.duration_s)),
            ("items acked".into(), self.acked.to_string()),
            (
                "throughput".into(),
                format!("{:.0} items/s", self.throughput_per_s),
            ),
        ];
        for (tier, row) in &self.tiers {
            rows.push((
                format!("  {tier}"),
                format!(
                    "{} acked  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms  errors: {}",
                    row.acked,
                    row.p50_ms,
                    row.p99_ms,
                    row.max_ms,
                    kinds(&row.errors)
                ),
            ));
        }
        rows.push(("errors".into(), kinds(&self.errors)));
        for (phase, errors) in &self.errors_by_phase {
            rows.push((format!("  during {phase}"), kinds(errors)));
        }
        rows.extend([
            (
                "killed".into(),
                self.killed.clone().unwrap_or_else(|| "-".into()),
            ),
            (
                "detected down".into(),
                format!("{} ms", opt(self.detected_down_ms)),
            ),
            (
                "ring changed".into(),
                format!("{} ms", opt(self.ring_changed_ms)),
            ),
            (
                "partitions moved".into(),
                format!(
                    "{} on the kill, {} back on the rejoin{}",
                    opt32(self.partitions_moved),
                    opt32(self.partitions_moved_back),
                    if self.ring_restored {
                        " (same ring as before the kill)"
                    } else {
                        ""
                    }
                ),
            ),
            (
                "rejoined".into(),
                match (
                    self.rejoined,
                    self.rejoin_ms,
                    self.incarnation_before.zip(self.incarnation_after),
                ) {
                    (true, Some(ms), Some((before, after))) => {
                        format!("yes, after {ms} ms (incarnation {before} -> {after})")
                    }
                    (true, _, _) => "yes".into(),
                    (false, _, _) => "no".into(),
                },
            ),
            ("routing".into(), kinds(&self.routing)),
            (
                "acked vs read back".into(),
                format!("{} / {}", self.acked, self.read_back),
            ),
            ("lost".into(), self.lost.to_string()),
            (
                "users listed".into(),
                format!(
                    "{}: {} acked items missing, {} listed twice",
                    self.users_listed, self.unlisted, self.listed_twice
                ),
            ),
        ]);
        if self.mismatched > 0 {
            rows.push(("mismatched".into(), self.mismatched.to_string()));
        }
        if !self.lost_examples.is_empty() {
            rows.push(("e.g.".into(), self.lost_examples.join(" ")));
        }
        if let Some(error) = &self.error {
            rows.push(("FAILED".into(), error.clone()));
        }
        if let Some(dir) = &self.kept_dir {
            rows.push(("kept".into(), dir.clone()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_carries_the_keys_scripts_read() {
        let summary = DemoSummary {
            nodes: 3,
            detected_down_ms: Some(1200),
            ..DemoSummary::default()
        };
        let json = serde_json::to_value(&summary).unwrap();
        for key in [
            "nodes",
            "acked",
            "lost",
            "detected_down_ms",
            "partitions_moved",
            "rejoined",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(json["detected_down_ms"], 1200);
        assert!(summary.table().contains("detected down       1200 ms"));
    }
}
