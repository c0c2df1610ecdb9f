//! The `overload` scenario: the node's own write-path core from `chorus-actors` — the
//! admission shed check ([`shed_tier`]) and the tier stage ([`TierStage`]: tier queues,
//! degradation policy, in-flight window) — driven the way the intake and tier-queue
//! actors drive them, under a seeded Poisson arrival process at several multiples of a
//! service capacity, in simulated time.
//!
//! The model: submissions arrive with a tier drawn from the mix; intake sheds a tier the
//! degradation level does not admit (`Overloaded`), the tier stage refuses a job that
//! would wait past its tier's budget at the measured service rate, or finds its tier
//! full (`Overloaded`), and hands out expired entries as `Timeout`; `workers` jobs at
//! most are past the queues, each served in an exponential time of mean
//! `workers / capacity`. Every `TICK` the expired entries are answered and the load
//! (how far realtime and priority are into their budgets) is fed to the degradation
//! policy.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chorus_actors::core::admission::shed_tier;
use chorus_actors::core::scheduler::{Step, TierStage};
use chorus_actors::policy::degradation::{DegradationConfig, Level};
use chorus_actors::policy::tier_queue::TierQueueConfig;
use chorus_actors::tier_queues::TICK;
use chorus_protocol::Tier;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::report::{self, LineChart, Series, Table, fixed};

/// Options of the `overload` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Offered load as multiples of the service capacity (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0])]
    pub loads: Vec<f64>,
    /// Service capacity, submissions per second.
    #[arg(long, default_value_t = 10_000.0)]
    pub capacity: f64,
    /// Jobs past the queues at once (the node's `max_in_flight`); each takes an
    /// exponential time of mean `workers / capacity`.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Tier mix in percent: realtime,priority,standard,batch.
    #[arg(long, value_delimiter = ',', default_values_t = [10.0, 20.0, 40.0, 30.0])]
    pub mix: Vec<f64>,
    /// Simulated seconds per load.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Seed of arrivals, tiers and service times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for CSV files and charts.
    #[arg(long, default_value = report::DEFAULT_OUT_DIR)]
    pub out: PathBuf,
    /// Skip the charts (CSV and stdout only).
    #[arg(long)]
    pub no_plots: bool,
}

/// What happens next in simulated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A submission arrives.
    Arrival,
    /// A job past the queues finishes; it arrived at `arrived` (ns).
    Done { tier: usize, arrived: u64 },
    /// The tier queues' timer.
    Tick,
}

/// Per-tier outcomes at one load.
#[derive(Clone, Debug, Default)]
struct TierStats {
    offered: u64,
    shed_by_level: u64,
    shed_by_queue: u64,
    timeouts: u64,
    /// Latencies of served submissions, ns from arrival to completion.
    latencies: Vec<u64>,
    /// When the first `Overloaded` answer went out, ns.
    first_shed: Option<u64>,
}

impl TierStats {
    fn shed(&self) -> u64 {
        self.shed_by_level + self.shed_by_queue
    }

    fn fraction(&self, n: u64) -> f64 {
        if self.offered == 0 {
            0.0
        } else {
            n as f64 / self.offered as f64
        }
    }
}

/// The outcome of one load.
struct LoadResult {
    load: f64,
    tiers: [TierStats; 4],
    /// (time ns, from, to) of every level change.
    changes: Vec<(u64, Level, Level)>,
    /// ns spent at each level (Level::ALL order).
    time_at: [u64; 3],
}

/// The sorted latency at quantile `q`, in ms (NaN when nothing was served).
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

fn level_index(level: Level) -> usize {
    Level::ALL.iter().position(|&l| l == level).unwrap_or(0)
}

fn exponential(rng: &mut ChaCha8Rng, mean_ns: f64) -> u64 {
    // 1 - U is in (0, 1], so the log is finite.
    let u: f64 = 1.0 - rng.random::<f64>();
    (-u.ln() * mean_ns).round() as u64
}

fn simulate(args: &Args, index: usize, load: f64, mix: &[f64; 4]) -> anyhow::Result<LoadResult> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ ((index as u64 + 1) << 40));
    // Each job is (tier index, arrival ns).
    let mut stage: TierStage<(usize, u64)> = TierStage::new(
        TierQueueConfig::default(),
        DegradationConfig::default(),
        args.workers,
    )?;
    // The policies only compare instants; any origin will do.
    let origin = Instant::now();
    let at = |ns: u64| origin + Duration::from_nanos(ns);
    let end = (args.duration * 1e9) as u64;
    let arrival_mean = 1e9 / (load * args.capacity);
    let service_mean = 1e9 * args.workers as f64 / args.capacity;
    let tick = TICK.as_nanos() as u64;

    let mut events: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut schedule = |events: &mut BinaryHeap<_>, t: u64, e: Event| {
        seq += 1;
        events.push(Reverse((t, seq, e)));
    };
    schedule(
        &mut events,
        exponential(&mut rng, arrival_mean),
        Event::Arrival,
    );
    schedule(&mut events, tick, Event::Tick);

    let mut tiers: [TierStats; 4] = Default::default();
    let mut changes = Vec::new();
    let mut time_at = [0u64; 3];
    let mut level_since = 0u64;

    while let Some(Reverse((now, _, event))) = events.pop() {
        if now > end {
            break;
        }
        match event {
            Event::Arrival => {
                let pick = rng.random::<f64>() * 100.0;
                let mut acc = 0.0;
                let tier = (0..4)
                    .find(|&i| {
                        acc += mix[i];
                        pick < acc
                    })
                    .unwrap_or(3);
                let stats = &mut tiers[tier];
                stats.offered += 1;
                if shed_tier(stage.level(), Tier::ALL[tier]).is_err() {
                    stats.shed_by_level += 1;
                    stats.first_shed.get_or_insert(now);
                } else if stage
                    .handle_enqueue(at(now), at(now), Tier::ALL[tier], (tier, now))
                    .is_err()
                {
                    stats.shed_by_queue += 1;
                    stats.first_shed.get_or_insert(now);
                }
                schedule(
                    &mut events,
                    now + exponential(&mut rng, arrival_mean).max(1),
                    Event::Arrival,
                );
            }
            Event::Done { tier, arrived } => {
                stage.handle_done(at(now), 1);
                tiers[tier].latencies.push(now - arrived);
            }
            Event::Tick => {
                // CPU use is reported with a level change, never a signal: none to model.
                let observed = stage.handle_tick(at(now), f64::NAN);
                for (tier, _) in observed.expired {
                    tiers[tier as usize].timeouts += 1;
                }
                if let Some((change, _)) = observed.change {
                    time_at[level_index(change.from)] += now - level_since;
                    level_since = now;
                    changes.push((now, change.from, change.to));
                }
                schedule(&mut events, now + tick, Event::Tick);
            }
        }
        // The tier queues pump after every message: hand out work while slots are free.
        while let Some(step) = stage.poll(at(now)) {
            match step {
                Step::Expired(tier, _) => tiers[tier as usize].timeouts += 1,
                Step::Dispatch(jobs) => {
                    for (tier, arrived) in jobs {
                        let done = now + exponential(&mut rng, service_mean).max(1);
                        schedule(&mut events, done, Event::Done { tier, arrived });
                    }
                }
            }
        }
    }
    time_at[level_index(stage.level())] += end.saturating_sub(level_since);
    for stats in &mut tiers {
        stats.latencies.sort_unstable();
    }
    Ok(LoadResult {
        load,
        tiers,
        changes,
        time_at,
    })
}

fn percent(x: f64) -> String {
    fixed(100.0 * x, 2)
}

/// Runs the scenario and prints its report.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let mix: [f64; 4] = args
        .mix
        .as_slice()
        .try_into()
        .context("--mix takes four percentages: realtime,priority,standard,batch")?;
    if mix.iter().any(|m| !(m.is_finite() && *m >= 0.0))
        || (mix.iter().sum::<f64>() - 100.0).abs() > 1e-6
    {
        bail!("--mix must be four non-negative percentages adding up to 100");
    }
    if args.loads.iter().any(|l| !(l.is_finite() && *l > 0.0))
        || !(args.capacity.is_finite() && args.capacity > 0.0)
        || !(args.duration.is_finite() && args.duration > 0.0)
        || args.workers == 0
    {
        bail!("loads, capacity, duration and workers must be positive");
    }
    println!(
        "overload: capacity {} submissions/s, {} workers, mix {:?} % (realtime, priority, standard, batch), {} s per load, seed {}",
        args.capacity, args.workers, mix, args.duration, args.seed
    );
    println!(
        "shed = answered Overloaded (by the degradation level, or by the tier queue: too long an expected wait, or a full tier); timeout = expired in the queue."
    );
    let results: Vec<LoadResult> = args
        .loads
        .iter()
        .enumerate()
        .map(|(i, &load)| simulate(args, i, load, &mix))
        .collect::<anyhow::Result<_>>()?;

    let headers = [
        "load",
        "tier",
        "offered",
        "served %",
        "shed %",
        "by level %",
        "by queue %",
        "timeout %",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "first shed s",
    ];
    let mut table = Table::new(headers);
    let mut levels = Table::new([
        "load",
        "level changes",
        "normal %",
        "shed_optional %",
        "critical_only %",
    ]);
    let mut change_rows = Vec::new();
    for r in &results {
        for (i, s) in r.tiers.iter().enumerate() {
            let served = s.latencies.len() as u64;
            table.push([
                fixed(r.load, 2),
                Tier::ALL[i].as_str().to_owned(),
                s.offered.to_string(),
                percent(s.fraction(served)),
                percent(s.fraction(s.shed())),
                percent(s.fraction(s.shed_by_level)),
                percent(s.fraction(s.shed_by_queue)),
                percent(s.fraction(s.timeouts)),
                fixed(quantile_ms(&s.latencies, 0.5), 2),
                fixed(quantile_ms(&s.latencies, 0.99), 2),
                fixed(quantile_ms(&s.latencies, 0.999), 2),
                s.first_shed
                    .map_or("-".to_owned(), |ns| fixed(ns as f64 / 1e9, 3)),
            ]);
        }
        let total: u64 = r.time_at.iter().sum::<u64>().max(1);
        levels.push([
            fixed(r.load, 2),
            r.changes.len().to_string(),
            percent(r.time_at[0] as f64 / total as f64),
            percent(r.time_at[1] as f64 / total as f64),
            percent(r.time_at[2] as f64 / total as f64),
        ]);
        for &(ns, from, to) in &r.changes {
            change_rows.push(vec![
                fixed(r.load, 2),
                fixed(ns as f64 / 1e9, 3),
                from.as_str().to_owned(),
                to.as_str().to_owned(),
            ]);
        }
    }
    println!();
    table.print();
    println!();
    println!("degradation level (time share per level, number of changes):");
    levels.print();
    table.write_csv(&args.out.join("overload.csv"))?;
    levels.write_csv(&args.out.join("overload-levels.csv"))?;
    report::write_csv(
        &args.out.join("overload-level-changes.csv"),
        &["load", "time s", "from", "to"],
        &change_rows,
    )?;
    if !args.no_plots {
        plot(args, &results)?;
    }
    println!();
    println!("CSV: {}", args.out.join("overload.csv").display());
    Ok(())
}

fn plot(args: &Args, results: &[LoadResult]) -> anyhow::Result<()> {
    let per_tier = |value: &dyn Fn(&TierStats) -> f64| -> Vec<Series> {
        Tier::ALL
            .iter()
            .enumerate()
            .map(|(i, tier)| {
                let points = results
                    .iter()
                    .map(|r| (r.load, value(&r.tiers[i])))
                    .collect();
                Series::new(tier.as_str(), points)
            })
            .collect()
    };
    let p99 = per_tier(&|s| quantile_ms(&s.latencies, 0.99));
    LineChart::new(
        "p99 latency of served submissions per tier",
        "offered load / capacity",
        "p99 latency (ms)",
        &p99,
    )
    .log_y()
    .write_svg(&args.out.join("overload-p99.svg"))?;
    let shed = per_tier(&|s| 100.0 * s.fraction(s.shed()));
    LineChart::new(
        "Shed (Overloaded) per tier",
        "offered load / capacity",
        "shed (% of offered)",
        &shed,
    )
    .write_svg(&args.out.join("overload-shed.svg"))?;
    let timeouts = per_tier(&|s| 100.0 * s.fraction(s.timeouts));
    LineChart::new(
        "Timed out in the queue per tier",
        "offered load / capacity",
        "timeout (% of offered)",
        &timeouts,
    )
    .write_svg(&args.out.join("overload-timeout.svg"))?;
    Ok(())
}
