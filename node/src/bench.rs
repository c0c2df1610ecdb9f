//! `chorus bench`: a load generator on the SDK with HDR latency histograms.
//!
//! Closed loop (no `--rate`): every worker keeps one request in flight, as pgbench and
//! redis-benchmark do, so numbers compare like for like. Open loop (`--rate R`):
//! requests fall due on a fixed schedule and latency is measured from the due time,
//! so a server that stalls shows its queueing instead of hiding it (no coordinated
//! omission).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientConfig, ClientError, ErrorCode, Item, Kind, Tier};
use clap::Args;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cli::ConnectArgs;
use crate::commands::{CliError, connect};

/// Flags of `chorus bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Requests per second across all workers (open loop); without it, closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to measure, e.g. `10s` or `1m`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Warm-up before measuring (not counted).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Workers, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// QUIC connections the workers share (round-robin).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Items per request: 1 sends `submit`, more sends `submit_batch`.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Distinct users the items come from.
    #[arg(long, default_value_t = 100_000)]
    pub users: u32,
    /// Bytes of text per item (~300-byte items with the default).
    #[arg(long, default_value_t = 200)]
    pub text_bytes: usize,
    /// Tier of the items.
    #[arg(long, default_value = "standard")]
    pub tier: String,
    /// A mix of tiers by weight instead of `--tier`, e.g.
    /// `realtime=10,priority=20,standard=40,batch=30`: in closed loop the workers are
    /// split between tiers by weight; in open loop each tier is its own generator (its
    /// share of `--rate` and of `--concurrency`, its own `--connections`); latency is
    /// reported per tier.
    #[arg(long, value_name = "TIER=WEIGHT,...")]
    pub tier_mix: Option<String>,
    /// Send every request to the node given instead of straight to its owner (the node
    /// forwards what it does not own).
    #[arg(long)]
    pub no_routing: bool,
    /// Pipelined streams per connection in the SDK.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Where to send the load.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

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

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// What one worker measured, for one tier.
struct TierStats {
    histogram: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl TierStats {
    fn new() -> Self {
        TierStats {
            histogram: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn add(&mut self, other: &TierStats) {
        self.histogram
            .add(&other.histogram)
            .expect("same histogram bounds");
        self.ok += other.ok;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_insert(0) += n;
        }
    }

    fn percentiles(&self) -> Percentiles {
        let ms = |v: u64| v as f64 / 1000.0;
        let h = &self.histogram;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// What one worker measured, per tier (indexed like `Tier::ALL`).
struct WorkerResult {
    tiers: [TierStats; 4],
}

/// Live counters for the progress line.
#[derive(Default)]
struct Progress {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Runs the benchmark and prints its summary.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
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
    let mut config = ClientConfig {
        streams_per_connection: std::num::NonZeroUsize::new(args.streams)
            .ok_or_else(|| CliError::Usage("--streams must be at least 1".into()))?,
        // A load generator measures the node: it must not throttle itself or retry, and
        // every refusal is counted as the node answered it.
        load_guard: None,
        max_retries: 0,
        ..ClientConfig::default()
    };
    if args.no_routing {
        config.routing = None;
    }
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(connect(&args.connect, config.clone()).await?);
    }
    let text: String = "Très bien — "
        .chars()
        .chain(std::iter::repeat('x'))
        .take(args.text_bytes)
        .collect();
    let shape = Arc::new(Shape {
        users: args.users.max(1),
        text,
        total_weight: tiers.iter().map(|(_, w)| w).sum(),
        tiers,
        batch: args.batch,
    });

    let progress = Arc::new(Progress::default());
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let reporter = tokio::spawn(report_progress(progress.clone(), measure_from, end));
    let (per_tier, last_done) = match args.rate {
        None => {
            let mut workers = tokio::task::JoinSet::new();
            for w in 0..args.concurrency {
                let tier = shape.tier_of_worker(w, args.concurrency);
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
                let result =
                    result.map_err(|e| CliError::Usage(format!("a bench worker failed: {e}")))?;
                for (total, part) in per_tier.iter_mut().zip(&result.tiers) {
                    total.add(part);
                }
            }
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
                    let mut own = Vec::with_capacity(args.connections);
                    for _ in 0..args.connections {
                        own.push(connect(&args.connect, config.clone()).await?);
                    }
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
    let seconds = args.duration.as_secs_f64().max(
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

/// What the generated items look like.
struct Shape {
    users: u32,
    text: String,
    /// Tiers with their weights.
    tiers: Vec<(Tier, u32)>,
    total_weight: u32,
    batch: usize,
}

impl Shape {
    /// The tier of worker `w` of `workers`: workers are split between tiers in
    /// proportion to their weights, and each sends only its own tier, so that a slow
    /// tier's requests cannot delay (and inflate the latency of) another tier's.
    fn tier_of_worker(&self, w: usize, workers: usize) -> Tier {
        let mut pick = (w as u64 * u64::from(self.total_weight) / workers.max(1) as u64) as u32;
        for (tier, weight) in &self.tiers {
            if pick < *weight {
                return *tier;
            }
            pick -= weight;
        }
        self.tiers[0].0
    }

    fn item(&self, rng: &mut impl Rng, tier: Tier) -> Item {
        let mut item = Item::new(
            format!("user-{:011}", rng.random_range(0..self.users)),
            Kind::Bug,
        );
        item.rating = Some(rng.random_range(1..=5));
        item.text = self.text.clone();
        item.tier = tier;
        item
    }
}

/// `realtime=10,batch=90` → tiers with positive weights.
fn parse_tier_mix(mix: &str) -> Result<Vec<(Tier, u32)>, CliError> {
    let bad = |reason: String| CliError::Usage(format!("--tier-mix {mix:?}: {reason}"));
    let mut tiers = Vec::new();
    for part in mix.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not TIER=WEIGHT")))?;
        let tier: Tier = name
            .trim()
            .parse()
            .map_err(|e: ErrorCode| bad(e.to_string()))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| bad(format!("{weight:?} is not a whole number")))?;
        if weight > 0 {
            tiers.push((tier, weight));
        }
    }
    if tiers.is_empty() {
        return Err(bad("no tier with a positive weight".into()));
    }
    Ok(tiers)
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

/// Sends one request (a submit, or a batch of `shape.batch`) of `tier`.
async fn send(
    client: &Client,
    shape: &Shape,
    tier: Tier,
    rng: &mut impl Rng,
) -> Result<(), ClientError> {
    if shape.batch == 1 {
        return client.submit(shape.item(rng, tier)).await.map(|_| ());
    }
    let items = (0..shape.batch).map(|_| shape.item(rng, tier)).collect();
    match client
        .submit_batch(items)
        .await?
        .into_iter()
        .find_map(Result::err)
    {
        Some(code) => Err(ClientError::Server(code)),
        None => Ok(()),
    }
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

fn new_tier_stats() -> [TierStats; 4] {
    [
        TierStats::new(),
        TierStats::new(),
        TierStats::new(),
        TierStats::new(),
    ]
}

fn error_kind(error: &ClientError) -> String {
    match error {
        ClientError::Server(code) => code.kind().to_string(),
        ClientError::Timeout => "client_timeout".into(),
        ClientError::ConnectionLost { .. } => "connection_lost".into(),
        ClientError::StreamReset { .. } => "stream_reset".into(),
        other => format!("client: {other}"),
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_split_between_tiers_by_weight() {
        let shape = Shape {
            users: 1,
            text: String::new(),
            tiers: parse_tier_mix("realtime=1,batch=3").unwrap(),
            total_weight: 4,
            batch: 1,
        };
        let tiers: Vec<Tier> = (0..8).map(|w| shape.tier_of_worker(w, 8)).collect();
        assert_eq!(tiers.iter().filter(|t| **t == Tier::Realtime).count(), 2);
        assert_eq!(tiers.iter().filter(|t| **t == Tier::Batch).count(), 6);
    }

    #[test]
    fn a_tier_mix_parses_and_refuses_nonsense() {
        assert_eq!(
            parse_tier_mix("realtime=10, batch=90,priority=0").unwrap(),
            vec![(Tier::Realtime, 10), (Tier::Batch, 90)]
        );
        for bad in ["", "realtime", "urgent=1", "batch=x", "batch=0"] {
            assert!(parse_tier_mix(bad).is_err(), "{bad}");
        }
    }
}
