//! A scenario's summary: what goes into the JSON file and the tables printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chorus_client::Tier;
use hdrhistogram::Counter;
use serde::Serialize;

use super::analysis::{Break, StepView};
use super::profile::Scenario;
use super::stats::Percentiles;
use super::timeline::Counts;

/// The result of a scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    /// The scenario.
    pub scenario: Scenario,
    /// The saturation rate S the rates are multiples of, requests/s.
    pub saturation_rate: f64,
    /// Where S came from: `given` (`--saturation-rate`) or `calibrated`.
    pub saturation_from: &'static str,
    /// The calibration run, if S was measured.
    pub calibration: Option<Calibration>,
    /// Tiers and their weights.
    pub tier_mix: Vec<(String, u32)>,
    /// How the load was sent.
    pub load: LoadShape,
    /// The phases that ran (a stopped ramp has fewer than planned).
    pub phases: Vec<PhaseSummary>,
    /// Seconds of load (offered requests).
    pub load_seconds: f64,
    /// Seconds from the end of the load until the last answer.
    pub drain_seconds: f64,
    /// How far the generator fell behind its schedule.
    pub generator: GeneratorLag,
    /// Successful answers within their tier's budget per second of load.
    pub goodput_per_sec: f64,
    /// Per tier, over the whole load window.
    pub tiers: BTreeMap<String, TierTotals>,
    /// The node's memory.
    pub memory: Memory,
    /// Per second of due time.
    pub timeline: Vec<SecondRow>,
    /// The stress ramp's verdict.
    pub stress: Option<StressReport>,
    /// The spike's recovery.
    pub spike: Option<SpikeReport>,
    /// The soak's errors and memory growth.
    pub soak: Option<SoakReport>,
}

/// The closed-loop run that measured S.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// Seconds measured (after the warm-up).
    pub seconds: f64,
    /// Workers, each with one request in flight.
    pub workers: usize,
    /// Connections.
    pub connections: usize,
    /// Streams per connection.
    pub streams: usize,
    /// Successful requests per second: S.
    pub requests_per_sec: f64,
    /// Successful requests per second, per tier.
    pub tiers: BTreeMap<String, f64>,
    /// Failed requests, by kind.
    pub errors: BTreeMap<String, u64>,
}

/// How late requests were sent after they fell due. Latency still runs from the due
/// time, but a generator that falls behind offers less than the schedule says while it
/// lags: the run then measures the machine it runs on as much as the node.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorLag {
    /// The p99 send lag, ms.
    pub p99_ms: f64,
    /// The longest send lag, ms.
    pub max_ms: f64,
    /// When the last request was sent, seconds from the start of the load.
    pub last_sent_s: f64,
}

/// A send lag beyond this, ms, is flagged in the printed summary.
const LAG_WARNING_MS: f64 = 100.0;

/// How a scenario's load was sent.
#[derive(Debug, Clone, Serialize)]
pub struct LoadShape {
    /// Connections of each tier.
    pub connections_per_tier: usize,
    /// Streams per connection.
    pub streams: usize,
    /// Most requests in flight over all tiers.
    pub in_flight: usize,
    /// SDK retries per request.
    pub retries: u32,
    /// Items per request.
    pub batch: usize,
}

/// One tier's counts over some stretch.
#[derive(Debug, Clone, Serialize)]
pub struct TierTotals {
    /// The tier's latency budget, ms.
    pub budget_ms: f64,
    /// Requests that fell due.
    pub offered: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Answered successfully within the budget.
    pub ok_in_budget: u64,
    /// Refused with `Overloaded`.
    pub refused: u64,
    /// Other failures, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Successful answers per second.
    pub ok_per_sec: f64,
    /// Successful answers within the budget per second.
    pub goodput_per_sec: f64,
    /// Latency of the successful answers from their due time, ms.
    pub latency_ms: Percentiles,
}

impl TierTotals {
    /// `counts` over `seconds`, judged against `budget_ms`.
    pub fn of<C: Counter>(counts: &Counts<C>, seconds: f64, budget_ms: f64) -> Self {
        let per_sec = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        TierTotals {
            budget_ms,
            offered: counts.offered,
            ok: counts.ok,
            ok_in_budget: counts.ok_in_budget,
            refused: counts.refused,
            errors: counts.errors.clone(),
            ok_per_sec: per_sec(counts.ok),
            goodput_per_sec: per_sec(counts.ok_in_budget),
            latency_ms: counts.percentiles(),
        }
    }
}

/// One phase of the load.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    /// Its name.
    pub name: String,
    /// Its rate as a multiple of S.
    pub multiple: f64,
    /// Its rate, requests/s.
    pub rate: f64,
    /// When it started, seconds from the start of the load.
    pub start_s: f64,
    /// How long it ran, seconds.
    pub length_s: f64,
    /// Successful answers within budget per second.
    pub goodput_per_sec: f64,
    /// Per tier.
    pub tiers: BTreeMap<String, TierTotals>,
}

/// One tier in one second.
#[derive(Debug, Clone, Serialize)]
pub struct SecondTier {
    /// Requests that fell due.
    pub offered: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Refused with `Overloaded`.
    pub refused: u64,
    /// Other failures.
    pub errors: u64,
    /// The p99 of the successful answers, ms.
    pub p99_ms: Option<f64>,
}

/// One second of due time.
#[derive(Debug, Clone, Serialize)]
pub struct SecondRow {
    /// Seconds from the start of the load.
    pub second: usize,
    /// The phase it belongs to.
    pub phase: String,
    /// The node's resident memory, KiB, if sampled.
    pub rss_kib: Option<u64>,
    /// The longest send lag of the requests due in this second, ms.
    pub send_lag_max_ms: f64,
    /// Per tier.
    pub tiers: BTreeMap<String, SecondTier>,
}

/// The node's memory over the run.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Whether it was measured (`--node-pid`).
    pub measured: bool,
    /// Resident memory when the load began, KiB.
    pub start_kib: Option<u64>,
    /// Resident memory when the last answer came, KiB.
    pub end_kib: Option<u64>,
    /// The largest resident memory sampled, KiB.
    pub max_sampled_kib: Option<u64>,
    /// The process's peak resident memory (VmHWM) at the end, KiB.
    pub peak_kib: Option<u64>,
}

/// Where a stress ramp held and broke.
#[derive(Debug, Clone, Serialize)]
pub struct StressReport {
    /// Each step that ran, on complete data.
    pub steps: Vec<StepView>,
    /// The multiple of the highest step before the break that served everything within
    /// budget.
    pub knee_multiple: Option<f64>,
    /// The multiple of the first step that broke.
    pub broke_at_multiple: Option<f64>,
    /// Why it broke.
    pub reason: Option<Break>,
    /// The step whose live check stopped the ramp (answers still pending counted as
    /// served), and why; it may differ from the verdict on complete data.
    pub stopped_at_multiple: Option<f64>,
    /// Why the ramp was stopped.
    pub stop_reason: Option<Break>,
}

/// How the node came back from a spike.
#[derive(Debug, Clone, Serialize)]
pub struct SpikeReport {
    /// Each tier's p99 before the spike, ms.
    pub before_p99_ms: BTreeMap<String, f64>,
    /// Seconds after the spike until every tier's per-second p99 was back within
    /// `factor` of its p99 before (and stayed for `hold_seconds`); `None`: not by the
    /// end of the run.
    pub recovery_seconds: Option<usize>,
    /// The factor.
    pub factor: f64,
    /// The seconds in a row it must hold.
    pub hold_seconds: usize,
}

/// What a soak is for: errors and memory growth.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Failures other than `Overloaded`, by kind, over all tiers.
    pub other_errors: BTreeMap<String, u64>,
    /// Resident memory when the load began and at the end, KiB.
    pub rss_start_kib: Option<u64>,
    /// Resident memory at the end, KiB.
    pub rss_end_kib: Option<u64>,
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
    list.join(" ")
}

fn break_text(b: &Break) -> String {
    match b {
        Break::Errors { count } => format!("{count} errors other than overloaded"),
        Break::Latency {
            tier,
            p99_ms,
            budget_ms,
        } => format!("{tier} p99 {p99_ms:.1} ms over its {budget_ms:.0} ms budget"),
        Break::Goodput { goodput, best } => {
            format!("goodput {goodput:.0}/s below 90% of the best step's {best:.0}/s")
        }
    }
}

/// The tiers of `map` (keyed by name) most urgent first.
fn in_tier_order<T>(map: &BTreeMap<String, T>) -> impl Iterator<Item = (&'static str, &T)> {
    Tier::ALL
        .iter()
        .filter_map(|t| map.get(t.as_str()).map(|v| (t.as_str(), v)))
}

/// The summary as the text printed at the end of a run.
pub fn render(s: &ScenarioSummary) -> String {
    let mut out = String::new();
    let mix: Vec<String> = s.tier_mix.iter().map(|(t, w)| format!("{t}={w}")).collect();
    let _ = writeln!(
        out,
        "scenario={} S={:.0} req/s ({}) mix={}",
        s.scenario.as_str(),
        s.saturation_rate,
        s.saturation_from,
        mix.join(",")
    );
    if let Some(c) = &s.calibration {
        let _ = writeln!(
            out,
            "calibration: closed loop, {} workers, {} connections x {} streams, {:.1}s: {:.0} req/s, errors: {}",
            c.workers,
            c.connections,
            c.streams,
            c.seconds,
            c.requests_per_sec,
            errors_text(&c.errors)
        );
    }
    let _ = writeln!(
        out,
        "load {:.1}s, drain {:.2}s, goodput {:.0} req/s ({:.2} S)",
        s.load_seconds,
        s.drain_seconds,
        s.goodput_per_sec,
        s.goodput_per_sec / s.saturation_rate
    );
    let g = &s.generator;
    let _ = writeln!(
        out,
        "generator: send lag p99 {:.1} ms, max {:.1} ms; last request sent at {:.1}s{}",
        g.p99_ms,
        g.max_ms,
        g.last_sent_s,
        if g.max_ms > LAG_WARNING_MS {
            " (WARNING: the generator fell behind its schedule; it offered less than planned while it lagged, so this run measures the bench machine too)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:<9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
        "tier",
        "budget",
        "offered",
        "ok",
        "in budget",
        "refused",
        "p50 ms",
        "p90",
        "p99",
        "p99.9",
        "max"
    );
    for (tier, t) in in_tier_order(&s.tiers) {
        let l = &t.latency_ms;
        let _ = writeln!(
            out,
            "{tier:<9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
            format!("{}ms", t.budget_ms),
            t.offered,
            t.ok,
            t.ok_in_budget,
            t.refused,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            errors_text(&t.errors)
        );
    }
    if s.phases.len() > 1 {
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>6} {:>10} {:>10} {:>10} {:>7} {:>10}  p99 ms per tier",
            "phase", "x S", "secs", "offered/s", "ok/s", "refused/s", "errors", "goodput/s"
        );
        for p in &s.phases {
            let sum = |f: fn(&TierTotals) -> u64| p.tiers.values().map(f).sum::<u64>() as f64;
            let per = |n: f64| {
                if p.length_s > 0.0 {
                    n / p.length_s
                } else {
                    0.0
                }
            };
            let p99: Vec<String> = in_tier_order(&p.tiers)
                .map(|(tier, t)| {
                    if t.ok > 0 {
                        format!("{tier} {:.1}", t.latency_ms.p99)
                    } else {
                        format!("{tier} -")
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "{:<8} {:>5} {:>6.1} {:>10.0} {:>10.0} {:>10.0} {:>7} {:>10.0}  {}",
                p.name,
                p.multiple,
                p.length_s,
                per(sum(|t| t.offered)),
                per(sum(|t| t.ok)),
                per(sum(|t| t.refused)),
                sum(|t| t.errors.values().sum()),
                p.goodput_per_sec,
                p99.join("  ")
            );
        }
    }
    if let Some(r) = &s.stress {
        let knee = r.knee_multiple.map_or_else(
            || "none".into(),
            |m| format!("{m}x ({:.0} req/s)", m * s.saturation_rate),
        );
        let broke = match (r.broke_at_multiple, &r.reason) {
            (Some(m), Some(why)) => format!("{m}x: {}", break_text(why)),
            _ => "did not break".into(),
        };
        let _ = writeln!(out, "stress: knee {knee}; broke at {broke}");
        if let (Some(m), Some(why)) = (r.stopped_at_multiple, &r.stop_reason) {
            let _ = writeln!(
                out,
                "stress: ramp stopped after the {m}x step ({})",
                break_text(why)
            );
        }
    }
    if let Some(r) = &s.spike {
        let before: Vec<String> = in_tier_order(&r.before_p99_ms)
            .map(|(t, p)| format!("{t} {p:.1}"))
            .collect();
        let back = r.recovery_seconds.map_or_else(
            || "not by the end of the run".into(),
            |secs| format!("{secs}s after the spike"),
        );
        let _ = writeln!(
            out,
            "spike: p99 ms before: {}; every tier back within {}x: {back}",
            before.join("  "),
            r.factor
        );
    }
    if let Some(r) = &s.soak {
        let _ = writeln!(
            out,
            "soak: errors other than overloaded: {}; RSS start {}, end {}",
            errors_text(&r.other_errors),
            mib(r.rss_start_kib),
            mib(r.rss_end_kib)
        );
    }
    let m = &s.memory;
    if m.measured {
        let _ = writeln!(
            out,
            "node memory: RSS start {}, end {}, max sampled {}, peak (VmHWM) {}",
            mib(m.start_kib),
            mib(m.end_kib),
            mib(m.max_sampled_kib),
            mib(m.peak_kib)
        );
    } else {
        let _ = writeln!(out, "node memory: not measured (no --node-pid)");
    }
    out
}
