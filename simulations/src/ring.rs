//! The `ring` scenario: how each placement strategy of `chorus_node::cluster::ring`
//! balances partitions over members, how many partitions move on one join or one leave
//! against the ideal 1/N, and how long a placement takes.
//!
//! Everything on stdout and in `ring.csv` is a pure function of the options; placement
//! times are wall-clock, so they go to stderr and `ring-timings.csv` only.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chorus_node::cluster::ring::{Ring, Strategy};
use chorus_protocol::NodeId;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::report::{self, LineChart, Series, Table, fixed};

/// Options of the `ring` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Member counts to sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [3, 5, 10, 30, 100, 300, 1000])]
    pub nodes: Vec<usize>,
    /// Partition counts to sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1024, 4096])]
    pub partitions: Vec<u16>,
    /// Vnodes per member of the vnode-ring strategies measured (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256, 1000])]
    pub vnodes: Vec<u32>,
    /// Slack percentages of the bounded-load strategies measured (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [2, 5, 10, 25])]
    pub slack: Vec<u32>,
    /// Joins and leaves measured per configuration (each a single change from the base
    /// member set; the joiner's name and the leaver are drawn from the seed).
    #[arg(long, default_value_t = 4)]
    pub changes: u32,
    /// Seed of the joiner names and leaver choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for CSV files and charts.
    #[arg(long, default_value = report::DEFAULT_OUT_DIR)]
    pub out: PathBuf,
    /// Skip the charts (CSV and stdout only).
    #[arg(long)]
    pub no_plots: bool,
}

/// One measured configuration.
struct Row {
    strategy: Strategy,
    nodes: usize,
    partitions: u16,
    balance: f64,
    /// Moved / ideal on each join (ideal: the joiner's share P/(N+1)).
    joins: Vec<f64>,
    /// Moved / ideal on each leave (ideal: the leaver's share P/N... of the old ring).
    leaves: Vec<f64>,
    /// Fastest of the placements timed.
    time: Duration,
}

fn member(i: usize) -> NodeId {
    NodeId(format!("node-{i:04}"))
}

/// The strategies the options ask for, vnode rings first.
fn strategies(args: &Args) -> Vec<Strategy> {
    let mut all: Vec<Strategy> = args
        .vnodes
        .iter()
        .map(|&vnodes| Strategy::VnodeRing { vnodes })
        .collect();
    all.push(Strategy::Rendezvous);
    all.push(Strategy::Maglev);
    all.extend(
        args.slack
            .iter()
            .map(|&slack_percent| Strategy::GreedyBoundedLoad { slack_percent }),
    );
    all.extend(
        args.slack
            .iter()
            .map(|&slack_percent| Strategy::BoundedLoad { slack_percent }),
    );
    all
}

/// Places and keeps the fastest wall-clock time seen.
fn timed_place(
    strategy: &Strategy,
    members: &[NodeId],
    partitions: u16,
    best: &mut Duration,
) -> anyhow::Result<Ring> {
    let start = Instant::now();
    let ring = Ring::place_with(strategy, members.iter().cloned(), partitions)
        .with_context(|| format!("{strategy} on {} members", members.len()))?;
    *best = (*best).min(start.elapsed());
    Ok(ring)
}

fn measure(args: &Args, strategy: Strategy, n: usize, partitions: u16) -> anyhow::Result<Row> {
    // One seed per configuration, so adding a strategy does not change the others' draws.
    let mut rng =
        ChaCha8Rng::seed_from_u64(args.seed ^ (n as u64) << 32 ^ u64::from(partitions) << 16);
    let base: Vec<NodeId> = (1..=n).map(member).collect();
    let mut time = Duration::MAX;
    let before = timed_place(&strategy, &base, partitions, &mut time)?;
    let p = f64::from(partitions);
    let mut joins = Vec::new();
    let mut leaves = Vec::new();
    for _ in 0..args.changes {
        let joiner = member(rng.random_range(n + 1..=n + 9000));
        let mut with = base.clone();
        with.push(joiner);
        let joined = timed_place(&strategy, &with, partitions, &mut time)?;
        joins.push(f64::from(joined.moved_from(&before)) / (p / (n + 1) as f64));
        if n > 1 {
            let mut without = base.clone();
            without.remove(rng.random_range(0..n));
            let left = timed_place(&strategy, &without, partitions, &mut time)?;
            leaves.push(f64::from(left.moved_from(&before)) / (p / n as f64));
        }
    }
    Ok(Row {
        strategy,
        nodes: n,
        partitions,
        balance: before.balance(),
        joins,
        leaves,
        time,
    })
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NAN, f64::max)
}

/// The best max/mean integers allow: ceil(P/N) / (P/N).
fn ideal_balance(n: usize, partitions: u16) -> f64 {
    let mean = f64::from(partitions) / n as f64;
    mean.ceil() / mean
}

/// Runs the scenario and prints its report.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let strategies = strategies(args);
    println!(
        "ring placement: {} strategies, N = {:?}, P = {:?}, {} joins and {} leaves each, seed {}",
        strategies.len(),
        args.nodes,
        args.partitions,
        args.changes,
        args.changes,
        args.seed
    );
    println!("balance = max/mean partitions per node (ideal: ceil(P/N)/(P/N));");
    println!("join/leave = partitions moved / ideal (P/(N+1) on a join, P/N on a leave).");
    let headers = [
        "P",
        "strategy",
        "N",
        "ideal",
        "balance",
        "join mean",
        "join max",
        "leave mean",
        "leave max",
    ];
    let mut csv_rows = Vec::new();
    let mut timing_rows = Vec::new();
    let mut rows = Vec::new();
    for &partitions in &args.partitions {
        let mut table = Table::new(headers);
        for strategy in &strategies {
            for &n in &args.nodes {
                let row = measure(args, *strategy, n, partitions)?;
                let cells = vec![
                    partitions.to_string(),
                    strategy.to_string(),
                    n.to_string(),
                    fixed(ideal_balance(n, partitions), 3),
                    fixed(row.balance, 3),
                    fixed(mean(&row.joins), 2),
                    fixed(max(&row.joins), 2),
                    fixed(mean(&row.leaves), 2),
                    fixed(max(&row.leaves), 2),
                ];
                table.push(cells.clone());
                csv_rows.push(cells);
                let ms = fixed(row.time.as_secs_f64() * 1e3, 3);
                eprintln!("placement time {strategy} N={n} P={partitions}: {ms} ms");
                timing_rows.push(vec![
                    partitions.to_string(),
                    strategy.to_string(),
                    n.to_string(),
                    ms,
                ]);
                rows.push(row);
            }
        }
        println!();
        table.print();
    }
    let csv = args.out.join("ring.csv");
    report::write_csv(&csv, &headers, &csv_rows)?;
    report::write_csv(
        &args.out.join("ring-timings.csv"),
        &["P", "strategy", "N", "placement ms (fastest)"],
        &timing_rows,
    )?;
    if !args.no_plots {
        plot(args, &strategies, &rows)?;
    }
    println!();
    println!("CSV: {}", csv.display());
    Ok(())
}

/// The strategies worth a line on a chart (every one stays in the CSV and the table): the
/// fewest and the most vnodes, rendezvous, Maglev, the greedy bounded load at the node's
/// slack (the direct comparison) and the node's bounded load at every slack.
fn charted(args: &Args, strategies: &[Strategy]) -> Vec<Strategy> {
    let (fewest, most) = (args.vnodes.iter().min(), args.vnodes.iter().max());
    let chosen_slack = match Ring::STRATEGY {
        Strategy::BoundedLoad { slack_percent } => Some(slack_percent),
        _ => None,
    };
    strategies
        .iter()
        .copied()
        .filter(|s| match s {
            Strategy::VnodeRing { vnodes } => Some(vnodes) == fewest || Some(vnodes) == most,
            Strategy::GreedyBoundedLoad { slack_percent } => Some(*slack_percent) == chosen_slack,
            _ => true,
        })
        .collect()
}

fn plot(args: &Args, strategies: &[Strategy], rows: &[Row]) -> anyhow::Result<()> {
    let strategies = charted(args, strategies);
    for &partitions in &args.partitions {
        let series = |value: &dyn Fn(&Row) -> f64| -> Vec<Series> {
            strategies
                .iter()
                .map(|s| {
                    let points = rows
                        .iter()
                        .filter(|r| r.strategy == *s && r.partitions == partitions)
                        .map(|r| (r.nodes as f64, value(r)))
                        .collect();
                    Series::new(s.to_string(), points)
                })
                .collect()
        };
        let balance = series(&|r| r.balance);
        let title = format!("Balance: max/mean partitions per node (P = {partitions})");
        LineChart::new(&title, "members (N)", "max / mean", &balance)
            .log_x()
            .log_y()
            .reference("perfect", 1.0)
            .write_svg(&args.out.join(format!("ring-balance-p{partitions}.svg")))?;
        let moved = series(&|r| mean(&[mean(&r.joins), mean(&r.leaves)]));
        let title = format!("Partitions moved per join or leave / ideal 1/N (P = {partitions})");
        LineChart::new(&title, "members (N)", "moved / ideal", &moved)
            .log_x()
            .reference("ideal", 1.0)
            .write_svg(&args.out.join(format!("ring-moved-p{partitions}.svg")))?;
    }
    Ok(())
}
