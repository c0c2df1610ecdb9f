//! The steady modes: closed loop (no `--rate`), where every worker keeps one request in
//! flight as pgbench and redis-benchmark do, so numbers compare like for like; and open
//! loop (`--rate R`), where requests fall due on a fixed schedule and latency is
//! measured from the due time, so a server that stalls shows its queueing instead of
//! hiding it (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientError, Tier};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::args::{BenchArgs, parse_tier_mix};
use super::load::{Shape, client_config, connect_all, error_kind, send};
use super::stats::{Percentiles, TierStats, new_tier_stats};
use crate::tools::error::CliError;

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSummary {
    /// `open` or `closed`.
    pub mode: &'static str,
    /// Target rate (open loop only), requests/s.
    pub target_rate: Option<f64>,
    /// Workers.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Items per request.
    pub batch: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Requests answered successfully.
    pub requests_ok: u64,
    /// Requests that failed, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub requests_per_sec: f64,
    /// Items acknowledged per second.
    pub items_per_sec: f64,
    /// Latency percentiles in milliseconds.
    pub latency_ms: Percentiles,
    /// The same figures per tier sent.
    pub tiers: BTreeMap<String, TierSummary>,
}

/// One tier's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TierSummary {
    /// Requests of this tier answered successfully.
    pub requests_ok: u64,
    /// Requests of this tier that failed, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Successful requests of this tier per second.
    pub requests_per_sec: f64,
    /// Latency percentiles of this tier's successful requests, milliseconds.
    pub latency_ms: Percentiles,
}

/// What one worker measured, per tier (indexed like `Tier::ALL`).
struct WorkerResult {
    tiers: [TierStats; 4],
}

/// The measured window when `--duration` is not given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Live counters for the progress line.
#[derive(Default)]
pub(crate) struct Progress {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Runs a closed- or open-loop benchmark and prints its summary.
pub(crate) async fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.concurrency == 0 || args.connections == 0 || args.batch == 0 || args.streams == 0 {
        return Err(CliError::Usage(
            "--concurrency, --connections, --batch and --streams must be at least 1".into(),
        ));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(CliError::Usage("--rate must be a positive number".into()));
    }
    let tiers = match &args.tier_mix {
        Some(mix) => parse_tier_mix(mix)?,
        None => vec![(args.tier.parse::<Tier>()?, 1)],
    };
    let config = client_config(&args)?;
    let clients = connect_all(&args.connect, &config, args.connections).await?;
    let shape = Arc::new(Shape::new(&args, tiers));

    let progress = Arc::new(Progress::default());
    let start = Instant::now() + Duration::from_millis(50);
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let measure_from = start + args.warmup;
    let end = measure_from + duration;
    let reporter = tokio::spawn(report_progress(progress.clone(), measure_from, end));
    let (per_tier, last_done) = match args.rate {
        None => {
            let per_tier = closed_loop(
                &clients,
                &shape,
                args.concurrency,
                measure_from,
                end,
                &progress,
            )
            .await?;
            (per_tier, end)
        }
        Some(rate) => {
            let mut generators = Vec::with_capacity(shape.tiers.len());
            let mut extra = Vec::new();
            for &(tier, weight) in &shape.tiers {
                let share = f64::from(weight) / f64::from(shape.total_weight);
                let own = if shape.tiers.len() == 1 {
                    clients.clone()
                } else {
                    // Each tier's application has its own connections.
                    let own = connect_all(&args.connect, &config, args.connections).await?;
                    extra.extend(own.iter().cloned());
                    own
                };
                generators.push(Generator {
                    tier,
                    rate: rate * share,
                    concurrency: ((args.concurrency as f64 * share).round() as usize).max(1),
                    clients: own,
                });
            }
            let outcome = open_loop(
                generators,
                shape.clone(),
                start,
                measure_from,
                end,
                progress.clone(),
            )
            .await;
            for client in extra {
                client.close().await;
            }
            outcome
        }
    };
    reporter.abort();
    for client in clients {
        client.close().await;
    }
    // Open loop: requests due in the window may be answered after it; the rate is what
    // was answered over the time it took, not over the nominal window.
    let seconds = duration.as_secs_f64().max(
        last_done
            .saturating_duration_since(measure_from)
            .as_secs_f64(),
    );
    let mut all = TierStats::new();
    let mut tiers = BTreeMap::new();
    for (tier, stats) in Tier::ALL.iter().zip(&per_tier) {
        all.add(stats);
        if stats.ok > 0 || !stats.errors.is_empty() {
            tiers.insert(
                tier.as_str().to_string(),
                TierSummary {
                    requests_ok: stats.ok,
                    errors: stats.errors.clone(),
                    requests_per_sec: stats.ok as f64 / seconds,
                    latency_ms: stats.percentiles(),
                },
            );
        }
    }
    let summary = BenchSummary {
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        target_rate: args.rate,
        concurrency: args.concurrency,
        connections: args.connections,
        batch: args.batch,
        seconds,
        requests_ok: all.ok,
        requests_per_sec: all.ok as f64 / seconds,
        items_per_sec: (all.ok * args.batch as u64) as f64 / seconds,
        latency_ms: all.percentiles(),
        errors: all.errors,
        tiers,
    };
    print_summary(&summary);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary).expect("summary serialises");
        std::fs::write(path, text + "\n")
            .map_err(|e| CliError::Usage(format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Runs `concurrency` closed-loop workers over `clients` (split between tiers by weight)
/// and adds up what they measured between `measure_from` and `end`.
pub(crate) async fn closed_loop(
    clients: &[Client],
    shape: &Arc<Shape>,
    concurrency: usize,
    measure_from: Instant,
    end: Instant,
    progress: &Arc<Progress>,
) -> Result<[TierStats; 4], CliError> {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let tier = shape.tier_of_worker(w, concurrency);
        workers.spawn(worker(
            tier,
            clients[w % clients.len()].clone(),
            shape.clone(),
            measure_from,
            end,
            progress.clone(),
        ));
    }
    let mut per_tier = new_tier_stats();
    while let Some(result) = workers.join_next().await {
        let result = result.map_err(|e| CliError::Usage(format!("a bench worker failed: {e}")))?;
        for (total, part) in per_tier.iter_mut().zip(&result.tiers) {
            total.add(part);
        }
    }
    Ok(per_tier)
}

/// Closed loop: one request in flight, the next as soon as it is answered.
async fn worker(
    tier: Tier,
    client: Client,
    shape: Arc<Shape>,
    measure_from: Instant,
    end: Instant,
    progress: Arc<Progress>,
) -> WorkerResult {
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut result = WorkerResult {
        tiers: new_tier_stats(),
    };
    loop {
        let due = Instant::now();
        if due >= end {
            break;
        }
        let outcome = send(&client, &shape, tier, &mut rng).await;
        if due >= measure_from {
            record(&mut result.tiers[tier as usize], due, outcome, &progress);
        }
    }
    result
}

/// One open-loop generator: a tier's own requests at its own rate, over its own
/// connections, with its own bound on requests in flight.
struct Generator {
    tier: Tier,
    rate: f64,
    concurrency: usize,
    clients: Vec<Client>,
}

/// A true open loop per tier: request `k` of a tier falls due at `start + k/rate`
/// whatever is in flight; a request that finds all of its tier's slots taken waits, and
/// that wait counts in its latency. The tiers are independent generators (as the
/// applications behind them are): one tier's backlog never delays another's requests.
/// Returns the statistics and when the last answer came.
async fn open_loop(
    generators: Vec<Generator>,
    shape: Arc<Shape>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    progress: Arc<Progress>,
) -> ([TierStats; 4], Instant) {
    let stats = Arc::new(std::sync::Mutex::new((new_tier_stats(), measure_from)));
    let mut tasks = tokio::task::JoinSet::new();
    for generator in generators {
        tasks.spawn(generate(
            generator,
            shape.clone(),
            start,
            measure_from,
            end,
            stats.clone(),
            progress.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
    let guard = stats.lock().unwrap_or_else(|p| p.into_inner());
    let (tiers, last) = &*guard;
    let mut out = new_tier_stats();
    for (o, t) in out.iter_mut().zip(tiers) {
        o.add(t);
    }
    (out, *last)
}

/// Runs one tier's generator until `end`, then waits for its answers.
async fn generate(
    generator: Generator,
    shape: Arc<Shape>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    stats: Arc<std::sync::Mutex<([TierStats; 4], Instant)>>,
    progress: Arc<Progress>,
) {
    let Generator {
        tier,
        rate,
        concurrency,
        clients,
    } = generator;
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut requests = tokio::task::JoinSet::new();
    for k in 0u64.. {
        let due = start + interval.mul_f64(k as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let client = clients[k as usize % clients.len()].clone();
        let (shape, stats, progress) = (shape.clone(), stats.clone(), progress.clone());
        let mut request_rng = rand::rngs::SmallRng::seed_from_u64(rng.random());
        requests.spawn(async move {
            let outcome = send(&client, &shape, tier, &mut request_rng).await;
            drop(permit);
            if due >= measure_from {
                let mut guard = stats.lock().unwrap_or_else(|p| p.into_inner());
                let (tiers, last) = &mut *guard;
                record(&mut tiers[tier as usize], due, outcome, &progress);
                *last = (*last).max(Instant::now());
            }
        });
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

/// Counts one answered request; latency is measured from when it fell due.
fn record(
    stats: &mut TierStats,
    due: Instant,
    outcome: Result<(), ClientError>,
    progress: &Progress,
) {
    match outcome {
        Ok(()) => {
            stats.ok += 1;
            progress.ok.fetch_add(1, Ordering::Relaxed);
            let micros = due.elapsed().as_micros() as u64;
            stats.histogram.saturating_record(micros.max(1));
        }
        Err(e) => {
            progress.failed.fetch_add(1, Ordering::Relaxed);
            *stats.errors.entry(error_kind(&e)).or_insert(0) += 1;
        }
    }
}

async fn report_progress(progress: Arc<Progress>, measure_from: Instant, end: Instant) {
    tokio::time::sleep_until(measure_from.into()).await;
    let mut last = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while Instant::now() < end {
        ticker.tick().await;
        let ok = progress.ok.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0}s] {:>9} ok  {:>8}/s  {} errors",
            measure_from.elapsed().as_secs_f64(),
            ok,
            ok - last,
            progress.failed.load(Ordering::Relaxed)
        );
        last = ok;
    }
}

fn print_summary(s: &BenchSummary) {
    println!(
        "mode={} concurrency={} connections={} batch={} target_rate={}",
        s.mode,
        s.concurrency,
        s.connections,
        s.batch,
        s.target_rate
            .map(|r| format!("{r:.0}/s"))
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "requests: {} ok in {:.1}s = {:.0} req/s, {:.0} items/s",
        s.requests_ok, s.seconds, s.requests_per_sec, s.items_per_sec
    );
    if s.errors.is_empty() {
        println!("errors: none");
    } else {
        let list: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
        println!("errors: {}", list.join(" "));
    }
    let l = &s.latency_ms;
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    if s.tiers.len() > 1 {
        for (tier, t) in &s.tiers {
            let errors: Vec<String> = t.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
            println!(
                "  {tier:<9} {:>9.0} ok/s  p50 {:.3}  p99 {:.3}  max {:.3} ms  errors: {}",
                t.requests_per_sec,
                t.latency_ms.p50,
                t.latency_ms.p99,
                t.latency_ms.max,
                if errors.is_empty() {
                    "none".to_string()
                } else {
                    errors.join(" ")
                }
            );
        }
    }
}
