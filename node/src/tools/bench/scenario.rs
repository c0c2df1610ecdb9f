//! Runs a scenario: measures S unless given, drives every tier's open loop along the
//! scenario's rate, samples the node's memory, and draws the verdicts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_actors::policy::tier_queue::TierParams;
use chorus_client::{ClientConfig, Tier};
use tokio_util::sync::CancellationToken;

use super::analysis::{
    Break, RECOVERY_FACTOR, RECOVERY_HOLD, StepView, TierSecond, recovery_seconds, stress_verdict,
};
use super::args::{BenchArgs, parse_tier_mix};
use super::generator::{Live, TierLoad, lock, report_progress, run_tier};
use super::load::{Shape, client_config, connect_all};
use super::profile::{Profile, Scenario, ScenarioParams};
use super::report::{
    Calibration, GeneratorLag, LoadShape, Memory, PhaseSummary, ScenarioSummary, SecondRow,
    SecondTier, SoakReport, SpikeReport, StressReport, TierTotals,
};
use super::rss;
use super::steady::{Progress, closed_loop};
use super::timeline::{Timeline, Window};
use crate::tools::error::CliError;

/// The tier mix of a scenario without `--tier-mix`.
pub const DEFAULT_MIX: &str = "realtime=10,priority=20,standard=40,batch=30";

/// The calibration's closed loop, as the `saturation_mix` bench measures S.
const CALIBRATION_WORKERS: usize = 256;
const CALIBRATION_CONNECTIONS: usize = 2;
const CALIBRATION_STREAMS: usize = 8;

/// Runs `scenario` as `args` ask and prints (and writes) its summary.
pub async fn run(args: BenchArgs, scenario: Scenario) -> Result<(), CliError> {
    check(&args)?;
    let tiers = parse_tier_mix(args.tier_mix.as_deref().unwrap_or(DEFAULT_MIX))?;
    let shape = Arc::new(Shape::new(&args, tiers.clone()));
    let (saturation, calibration) = match args.saturation_rate {
        Some(rate) => (rate, None),
        None => {
            let c = calibrate(&args, &shape).await?;
            if c.requests_per_sec <= 0.0 {
                return Err(CliError::Usage(
                    "the calibration run had no successful request; give --saturation-rate".into(),
                ));
            }
            (c.requests_per_sec, Some(c))
        }
    };
    eprintln!(
        "S = {saturation:.0} req/s ({})",
        if calibration.is_some() {
            "calibrated"
        } else {
            "given"
        }
    );
    let profile = Profile::of(scenario, &params(&args, scenario));
    let budgets = Tier::ALL.map(|t| TierParams::default_for(t).latency_budget);
    let mut config = client_config(&args)?;
    config.max_retries = args.retries;
    // The SDK must not give up before the node does: a request may be held up to its
    // tier's timeout.
    config.request_timeout = tiers
        .iter()
        .map(|(t, _)| TierParams::default_for(*t).timeout)
        .max()
        .unwrap_or(config.request_timeout)
        .max(config.request_timeout);
    let loads = tier_loads(&args, &config, &shape, &profile, saturation).await?;
    let clients: Vec<_> = loads.iter().flat_map(|l| l.clients.clone()).collect();

    let timeline = Arc::new(Mutex::new(Timeline::new(budgets, profile.starts())));
    let live = Arc::new(Live::default());
    let stop = CancellationToken::new();
    let done = CancellationToken::new();
    let rss_start = args.node_pid.and_then(|pid| rss::read_kib(pid, "VmRSS"));
    let start = Instant::now() + Duration::from_millis(100);
    let mut generators = tokio::task::JoinSet::new();
    for load in loads {
        generators.spawn(run_tier(
            load,
            shape.clone(),
            start,
            timeline.clone(),
            stop.clone(),
            live.clone(),
        ));
    }
    let progress = tokio::spawn(report_progress(live.clone(), start, done.clone()));
    let sampler = args
        .node_pid
        .map(|pid| tokio::spawn(sample_rss(pid, start, timeline.clone(), done.clone())));
    let ramp = (scenario == Scenario::Stress).then(|| {
        tokio::spawn(watch_ramp(
            profile.clone(),
            start,
            timeline.clone(),
            stop.clone(),
        ))
    });
    while let Some(joined) = generators.join_next().await {
        joined.map_err(|e| CliError::Usage(format!("a bench generator failed: {e}")))?;
    }
    // Ends the ramp's watch too, which is otherwise waiting for a step that will not run.
    stop.cancel();
    let stopped = match ramp {
        Some(task) => task
            .await
            .map_err(|e| CliError::Usage(format!("the stress ramp's watch failed: {e}")))?,
        None => None,
    };
    done.cancel();
    progress.abort();
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    let peak = args.node_pid.and_then(|pid| rss::read_kib(pid, "VmHWM"));
    let rss_end = args.node_pid.and_then(|pid| rss::read_kib(pid, "VmRSS"));
    for client in clients {
        client.close().await;
    }

    let load_end = stopped
        .as_ref()
        .map_or(profile.length(), |s| s.at.min(profile.length()));
    let timeline = lock(&timeline);
    let summary = summarise(Inputs {
        args: &args,
        scenario,
        saturation,
        calibration,
        tiers: &tiers,
        profile: &profile,
        timeline: &timeline,
        load_end,
        stopped,
        memory: Memory {
            measured: args.node_pid.is_some(),
            start_kib: rss_start,
            end_kib: rss_end,
            max_sampled_kib: timeline.rss_kib.iter().flatten().copied().max(),
            peak_kib: peak,
        },
    });
    drop(timeline);
    print!("{}", super::report::render(&summary));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary).expect("summary serialises");
        std::fs::write(path, text + "\n")
            .map_err(|e| CliError::Usage(format!("writing {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.plot {
        super::plot::write_svg(&summary, path)
            .map_err(|e| CliError::Usage(format!("plotting {}: {e}", path.display())))?;
    }
    Ok(())
}

fn check(args: &BenchArgs) -> Result<(), CliError> {
    if args.connections == 0 || args.batch == 0 || args.streams == 0 || args.in_flight == 0 {
        return Err(CliError::Usage(
            "--connections, --batch, --streams and --in-flight must be at least 1".into(),
        ));
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if args.saturation_rate.is_some_and(|r| !positive(r)) {
        return Err(CliError::Usage(
            "--saturation-rate must be a positive number".into(),
        ));
    }
    if !positive(args.multiple) || !positive(args.spike_multiple) {
        return Err(CliError::Usage(
            "--multiple and --spike-multiple must be positive numbers".into(),
        ));
    }
    if args.rate.is_some() {
        return Err(CliError::Usage(
            "--rate does not apply to a scenario: its rates are multiples of S".into(),
        ));
    }
    let lengths = [
        args.step,
        args.spike_before,
        args.spike_length,
        args.spike_after,
        args.calibrate,
    ];
    if lengths.iter().chain(&args.duration).any(Duration::is_zero) {
        return Err(CliError::Usage(
            "scenario durations must be positive".into(),
        ));
    }
    Ok(())
}

fn params(args: &BenchArgs, scenario: Scenario) -> ScenarioParams {
    let default = match scenario {
        Scenario::Soak => Duration::from_secs(600),
        _ => Duration::from_secs(60),
    };
    ScenarioParams {
        duration: args.duration.unwrap_or(default),
        multiple: args.multiple,
        step: args.step,
        spike: [args.spike_before, args.spike_length, args.spike_after],
        spike_multiple: args.spike_multiple,
    }
}

/// Measures S: the closed loop of the `saturation_mix` bench over the scenario's mix.
async fn calibrate(args: &BenchArgs, shape: &Arc<Shape>) -> Result<Calibration, CliError> {
    let mut config = client_config(args)?;
    config.streams_per_connection =
        std::num::NonZeroUsize::new(CALIBRATION_STREAMS).expect("non-zero");
    let clients = connect_all(&args.connect, &config, CALIBRATION_CONNECTIONS).await?;
    eprintln!(
        "calibrating S: closed loop, {CALIBRATION_WORKERS} workers, {}s after {}s of warm-up",
        args.calibrate.as_secs_f64(),
        args.warmup.as_secs_f64()
    );
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let end = measure_from + args.calibrate;
    let progress = Arc::new(Progress::default());
    let per_tier = closed_loop(
        &clients,
        shape,
        CALIBRATION_WORKERS,
        measure_from,
        end,
        &progress,
    )
    .await?;
    for client in clients {
        client.close().await;
    }
    let seconds = args.calibrate.as_secs_f64();
    let mut tiers = BTreeMap::new();
    let mut errors = BTreeMap::new();
    let mut ok = 0;
    for (tier, stats) in Tier::ALL.iter().zip(&per_tier) {
        ok += stats.ok;
        if stats.ok > 0 {
            tiers.insert(tier.as_str().to_string(), stats.ok as f64 / seconds);
        }
        for (kind, n) in &stats.errors {
            *errors.entry(kind.clone()).or_insert(0) += n;
        }
    }
    // Let what the closed loop left behind settle before the scenario starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Calibration {
        seconds,
        workers: CALIBRATION_WORKERS,
        connections: CALIBRATION_CONNECTIONS,
        streams: CALIBRATION_STREAMS,
        requests_per_sec: ok as f64 / seconds,
        tiers,
        errors,
    })
}

/// Each tier's generator: its share of the rate and of the in-flight bound, and its own
/// connections (as the application behind each tier would have).
async fn tier_loads(
    args: &BenchArgs,
    config: &ClientConfig,
    shape: &Shape,
    profile: &Profile,
    saturation: f64,
) -> Result<Vec<TierLoad>, CliError> {
    let mut loads = Vec::with_capacity(shape.tiers.len());
    for &(tier, weight) in &shape.tiers {
        let share = f64::from(weight) / f64::from(shape.total_weight);
        loads.push(TierLoad {
            tier,
            schedule: profile.schedule(saturation * share),
            in_flight: ((args.in_flight as f64 * share).round() as usize).max(1),
            clients: connect_all(&args.connect, config, args.connections).await?,
        });
    }
    Ok(loads)
}

/// Reads the node's resident memory once a second into the timeline.
async fn sample_rss(
    pid: u32,
    start: Instant,
    timeline: Arc<Mutex<Timeline>>,
    done: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(start.into(), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = done.cancelled() => return,
        }
        let Some(kib) = rss::read_kib(pid, "VmRSS") else {
            return;
        };
        let second = start.elapsed().as_secs() as usize;
        lock(&timeline).rss(second, kib);
    }
}

/// Where and why a stress ramp was stopped while it ran.
#[derive(Debug)]
struct Stopped {
    step: usize,
    why: Break,
    at: Duration,
}

/// After each step (and a second for its answers), checks the steps so far; stops the
/// load at the first break. Answers still pending count as served: the verdict on
/// complete data comes after the drain.
async fn watch_ramp(
    profile: Profile,
    start: Instant,
    timeline: Arc<Mutex<Timeline>>,
    stop: CancellationToken,
) -> Option<Stopped> {
    let starts = profile.starts();
    // After the last step there is nothing left to stop; the verdict on complete data
    // judges it.
    let last = profile.phases.len().saturating_sub(1);
    for (i, phase) in profile.phases.iter().enumerate().take(last) {
        let grace = phase.length.min(Duration::from_secs(1));
        let check_at = start + starts[i] + phase.length + grace;
        tokio::select! {
            () = tokio::time::sleep_until(check_at.into()) => {}
            () = stop.cancelled() => return None,
        }
        let views: Vec<StepView> = {
            let t = lock(&timeline);
            profile.phases[..=i]
                .iter()
                .zip(&t.phases)
                .map(|(p, w)| StepView::of(w, p.multiple, p.length.as_secs_f64(), &t, true))
                .collect()
        };
        if let Some((step, why)) = stress_verdict(&views).broke {
            stop.cancel();
            return Some(Stopped {
                step,
                why,
                at: start.elapsed(),
            });
        }
    }
    None
}

/// What [`summarise`] draws on.
struct Inputs<'a> {
    args: &'a BenchArgs,
    scenario: Scenario,
    saturation: f64,
    calibration: Option<Calibration>,
    tiers: &'a [(Tier, u32)],
    profile: &'a Profile,
    timeline: &'a Timeline,
    load_end: Duration,
    stopped: Option<Stopped>,
    memory: Memory,
}

fn tier_map(window: &Window, seconds: f64, timeline: &Timeline) -> BTreeMap<String, TierTotals> {
    Tier::ALL
        .iter()
        .filter(|t| window[**t as usize].offered > 0)
        .map(|&t| {
            let budget_ms = timeline.budget(t).as_secs_f64() * 1000.0;
            (
                t.as_str().to_string(),
                TierTotals::of(&window[t as usize], seconds, budget_ms),
            )
        })
        .collect()
}

fn summarise(i: Inputs<'_>) -> ScenarioSummary {
    let t = i.timeline;
    let load_s = i.load_end.as_secs_f64();
    let starts = i.profile.starts();
    // How long each phase ran: a stopped ramp cuts its last step short.
    let ran: Vec<f64> = i
        .profile
        .phases
        .iter()
        .zip(&starts)
        .map(|(p, s)| (i.load_end.saturating_sub(*s)).min(p.length).as_secs_f64())
        .collect();
    let mut phases = Vec::new();
    for (k, p) in i.profile.phases.iter().enumerate() {
        if ran[k] <= 0.0 {
            continue;
        }
        let view = StepView::of(&t.phases[k], p.multiple, ran[k], t, false);
        phases.push(PhaseSummary {
            name: p.name.clone(),
            multiple: p.multiple,
            rate: p.multiple * i.saturation,
            start_s: starts[k].as_secs_f64(),
            length_s: ran[k],
            goodput_per_sec: view.goodput,
            tiers: tier_map(&t.phases[k], ran[k], t),
        });
    }
    let good: u64 = t.total.iter().map(|c| c.ok_in_budget).sum();
    let timeline: Vec<SecondRow> = t
        .seconds
        .iter()
        .enumerate()
        .map(|(s, second)| SecondRow {
            second: s,
            phase: i.profile.phases[i.profile.phase_at(Duration::from_secs(s as u64))]
                .name
                .clone(),
            rss_kib: t.rss_kib.get(s).copied().flatten(),
            send_lag_max_ms: t
                .send_lag_max
                .get(s)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            tiers: Tier::ALL
                .iter()
                .filter(|tier| i.tiers.iter().any(|(m, _)| m == *tier))
                .map(|&tier| {
                    let c = &second[tier as usize];
                    (
                        tier.as_str().to_string(),
                        SecondTier {
                            offered: c.offered,
                            ok: c.ok,
                            refused: c.refused,
                            errors: c.other_errors(),
                            p99_ms: c.p99_ms(),
                        },
                    )
                })
                .collect(),
        })
        .collect();

    let stress = (i.scenario == Scenario::Stress).then(|| {
        let steps: Vec<StepView> = i
            .profile
            .phases
            .iter()
            .enumerate()
            .filter(|(k, _)| ran[*k] > 0.0)
            .map(|(k, p)| StepView::of(&t.phases[k], p.multiple, ran[k], t, false))
            .collect();
        let verdict = stress_verdict(&steps);
        let multiple = |k: usize| i.profile.phases[k].multiple;
        StressReport {
            knee_multiple: verdict.knee.map(multiple),
            broke_at_multiple: verdict.broke.as_ref().map(|(k, _)| multiple(*k)),
            reason: verdict.broke.map(|(_, why)| why),
            stopped_at_multiple: i.stopped.as_ref().map(|s| multiple(s.step)),
            stop_reason: i.stopped.as_ref().map(|s| s.why.clone()),
            steps,
        }
    });
    let spike = (i.scenario == Scenario::Spike).then(|| {
        let before: [Option<f64>; 4] = std::array::from_fn(|k| t.phases[0][k].p99_ms());
        let spike_end = starts[2].as_secs_f64().ceil() as usize;
        let last = (load_s.ceil() as usize).min(t.seconds.len());
        let after: Vec<[TierSecond; 4]> = t.seconds[spike_end.min(last)..last]
            .iter()
            .map(|second| {
                std::array::from_fn(|k| TierSecond {
                    offered: second[k].offered,
                    p99_ms: second[k].p99_ms(),
                })
            })
            .collect();
        SpikeReport {
            before_p99_ms: Tier::ALL
                .iter()
                .filter_map(|tier| Some((tier.as_str().to_string(), before[*tier as usize]?)))
                .collect(),
            recovery_seconds: recovery_seconds(&before, &after),
            factor: RECOVERY_FACTOR,
            hold_seconds: RECOVERY_HOLD,
        }
    });
    let soak = (i.scenario == Scenario::Soak).then(|| {
        let mut other_errors = BTreeMap::new();
        for c in &t.total {
            for (kind, n) in &c.errors {
                *other_errors.entry(kind.clone()).or_insert(0) += n;
            }
        }
        SoakReport {
            other_errors,
            rss_start_kib: i.memory.start_kib,
            rss_end_kib: i.memory.end_kib,
        }
    });
    ScenarioSummary {
        scenario: i.scenario,
        saturation_rate: i.saturation,
        saturation_from: if i.calibration.is_some() {
            "calibrated"
        } else {
            "given"
        },
        calibration: i.calibration,
        tier_mix: i
            .tiers
            .iter()
            .map(|(t, w)| (t.as_str().to_string(), *w))
            .collect(),
        load: LoadShape {
            connections_per_tier: i.args.connections,
            streams: i.args.streams,
            in_flight: i.args.in_flight,
            retries: i.args.retries,
            batch: i.args.batch,
        },
        phases,
        load_seconds: load_s,
        drain_seconds: t.last_answer.saturating_sub(i.load_end).as_secs_f64(),
        generator: GeneratorLag {
            p99_ms: t.send_lag.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: t.send_lag.max() as f64 / 1000.0,
            last_sent_s: t.last_sent.as_secs_f64(),
        },
        goodput_per_sec: if load_s > 0.0 {
            good as f64 / load_s
        } else {
            0.0
        },
        tiers: tier_map(&t.total, load_s, t),
        memory: i.memory,
        timeline,
        stress,
        spike,
        soak,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::tools::bench::timeline::Outcome;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn args(flags: &[&str]) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))
            .expect("flags parse")
            .args
    }

    /// A spike of 2 s each side where realtime answers in 1 ms, except during the spike
    /// and the first second after it (50 ms).
    fn spike_run() -> (BenchArgs, Profile, Timeline) {
        let args = args(&[
            "--scenario",
            "spike",
            "--saturation-rate",
            "100",
            "--spike-before",
            "2s",
            "--spike-length",
            "2s",
            "--spike-after",
            "5s",
        ]);
        let profile = Profile::of(Scenario::Spike, &params(&args, Scenario::Spike));
        let budgets = Tier::ALL.map(|t| TierParams::default_for(t).latency_budget);
        let mut timeline = Timeline::new(budgets, profile.starts());
        for due in profile.schedule(100.0) {
            let slow = (2..5).contains(&due.as_secs());
            let latency = Duration::from_millis(if slow { 50 } else { 1 });
            timeline.offered(Tier::Realtime, due, due);
            timeline.answered(Tier::Realtime, due, due + latency, &Outcome::Ok);
        }
        (args, profile, timeline)
    }

    fn summary_of(args: &BenchArgs, profile: &Profile, timeline: &Timeline) -> ScenarioSummary {
        summarise(Inputs {
            args,
            scenario: args.scenario.expect("a scenario"),
            saturation: 100.0,
            calibration: None,
            tiers: &[(Tier::Realtime, 1)],
            profile,
            timeline,
            load_end: profile.length(),
            stopped: None,
            memory: Memory {
                measured: false,
                start_kib: None,
                end_kib: None,
                max_sampled_kib: None,
                peak_kib: None,
            },
        })
    }

    #[test]
    fn a_spike_run_is_summarised_with_its_recovery() {
        let (args, profile, timeline) = spike_run();
        let s = summary_of(&args, &profile, &timeline);
        // The spike ends at 4 s; second 4 is still slow, 5.. are back.
        assert_eq!(s.spike.as_ref().unwrap().recovery_seconds, Some(1));
        assert_eq!(s.phases.len(), 3);
        assert_eq!(s.timeline.len(), 9);
        assert_eq!(s.timeline[3].phase, "spike");
        let realtime = &s.tiers["realtime"];
        assert_eq!(realtime.offered, 100 * 2 + 500 * 2 + 100 * 5);
        assert_eq!(realtime.ok_in_budget, realtime.offered);
        assert!((s.goodput_per_sec - 1_700.0 / 9.0).abs() < 1e-9);
        let text = crate::tools::bench::report::render(&s);
        assert!(
            text.contains("back within 1.5x: 1s after the spike"),
            "{text}"
        );
        assert!(text.contains("not measured"), "{text}");
    }

    #[test]
    fn the_plot_marks_every_phase() {
        let (args, profile, timeline) = spike_run();
        let s = summary_of(&args, &profile, &timeline);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spike.svg");
        crate::tools::bench::plot::write_svg(&s, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        for label in ["before (1x)", "spike (5x)", "after (1x)", "realtime"] {
            assert!(svg.contains(label), "{label}");
        }
    }

    #[test]
    fn a_stress_ramp_is_judged_on_complete_data() {
        let args = args(&["--scenario", "stress", "--step", "1s"]);
        let profile = Profile::of(Scenario::Stress, &params(&args, Scenario::Stress));
        let budgets = Tier::ALL.map(|t| TierParams::default_for(t).latency_budget);
        let mut timeline = Timeline::new(budgets, profile.starts());
        // Served in 1 ms up to 150/s, refused beyond; late from 4x.
        let mut served = (0, 0);
        for due in profile.schedule(100.0) {
            let step = profile.phase_at(due);
            timeline.offered(Tier::Realtime, due, due);
            if served.0 != due.as_secs() {
                served = (due.as_secs(), 0);
            }
            let outcome = if served.1 >= 150 {
                Outcome::Refused
            } else {
                served.1 += 1;
                Outcome::Ok
            };
            let latency = Duration::from_millis(if step >= 5 { 500 } else { 1 });
            timeline.answered(Tier::Realtime, due, due + latency, &outcome);
        }
        let s = summary_of(&args, &profile, &timeline);
        let r = s.stress.unwrap();
        assert_eq!(r.knee_multiple, Some(1.5));
        assert_eq!(r.broke_at_multiple, Some(4.0));
        assert!(matches!(r.reason, Some(Break::Latency { .. })));
    }
}
