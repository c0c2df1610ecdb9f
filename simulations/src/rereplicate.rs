//! The `rereplicate` scenario: after a member is lost for good, how long until every
//! partition has its replication factor again.
//!
//! The placement is the node's own (`Ring::place`, replica sets from
//! `Ring::preference_list`), before and after the loss. Every member of a new replica set
//! that was not in the old one needs a copy of the partition from a surviving old
//! replica; the copies run as a fluid flow model in simulated time, each stream getting
//! its max-min fair share of its sender's and receiver's bandwidth caps. Everything on
//! stdout and in the CSV file is a pure function of the options.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context as _, ensure};
use chorus_node::cluster::ring::Ring;
use chorus_protocol::NodeId;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::report::{self, LineChart, Series, Table, fixed};

const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

/// Options of the `rereplicate` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Member counts to sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 30, 100, 300, 1000])]
    pub nodes: Vec<usize>,
    /// Partitions.
    #[arg(long, default_value_t = 4096)]
    pub partitions: u16,
    /// Replication factor: members holding each partition.
    #[arg(long, default_value_t = 3)]
    pub rf: usize,
    /// Data each member holds (all its replicas), e.g. 100GiB; with N members every
    /// partition holds bytes-per-node × N / (partitions × rf).
    #[arg(long, value_parser = parse_bytes, default_value = "100GiB")]
    pub bytes_per_node: u64,
    /// Bandwidth cap of each member in MiB/s, applied to sending and receiving separately.
    #[arg(long, default_value_t = 100.0)]
    pub cap_mib_s: f64,
    /// Streams a member sends at once, and receives at once; the rest wait (0: no limit).
    #[arg(long, default_value_t = 4)]
    pub max_streams_per_node: usize,
    /// Who sends a new replica its copy (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["leader", "spread"])]
    pub source: Vec<Source>,
    /// Seed of the choice of the lost member.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for the CSV file and the chart.
    #[arg(long, default_value = report::DEFAULT_OUT_DIR)]
    pub out: PathBuf,
    /// Skip the chart (CSV and stdout only).
    #[arg(long)]
    pub no_plots: bool,
}

/// Which surviving old replica streams a partition to a member that needs it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The partition's new leader, as the node's shippers do; a new leader that did not
    /// hold the partition first catches up from the first surviving old replica, which
    /// then also feeds the other new replicas.
    Leader,
    /// Any surviving old replica, the one with the fewest bytes to send so far.
    Spread,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Leader => "leader",
            Source::Spread => "spread",
        })
    }
}

/// Parses a byte size such as `100GiB`, `512MiB` or `4096` (bytes).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("`{text}` is not a size such as 100GiB (units: B, KiB, MiB, GiB, TiB)");
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// One partition's replica sets before and after the loss: member indexes (into the
/// member list before the loss), in preference order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The partition.
    pub partition: u16,
    /// Its replica set before the loss, leader first.
    pub before: Vec<usize>,
    /// Its replica set after the loss, leader first.
    pub after: Vec<usize>,
}

/// Why a partition is streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The lost member held it: it runs short of replicas until the stream completes.
    Lost,
    /// Its replica set moved among the survivors (a side effect of the new placement).
    Moved,
}

/// One copy of a partition from a member that holds it to one that needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    /// The partition copied.
    pub partition: u16,
    /// The sending member's index.
    pub from: usize,
    /// The receiving member's index.
    pub to: usize,
    /// Bytes to copy.
    pub bytes: f64,
    /// Why the copy is needed.
    pub cause: Cause,
}

/// The streams that restore every replica set, and the partitions nothing can restore.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The copies, in partition order.
    pub streams: Vec<Stream>,
    /// Partitions the lost member held that need a stream.
    pub lost_partitions: u32,
    /// Partitions that need a stream although the lost member did not hold them.
    pub moved_partitions: u32,
    /// Partitions whose every replica was on the lost member (data lost, e.g. at rf 1).
    pub unrecoverable: u32,
}

/// Replica sets of every partition before (`before`) and after (`after`) a change, as
/// indexes into `before.members()`; `after`'s members must be among them.
pub fn changes(before: &Ring, after: &Ring, rf: usize) -> anyhow::Result<Vec<Change>> {
    let members = before.members();
    let index = |node: &NodeId| {
        members
            .binary_search(node)
            .map_err(|_| anyhow::anyhow!("{} is not a member before the change", node.0))
    };
    (0..before.partitions())
        .map(|p| {
            Ok(Change {
                partition: p,
                before: before
                    .preference_list(p, rf)
                    .iter()
                    .map(index)
                    .collect::<Result<_, _>>()?,
                after: after
                    .preference_list(p, rf)
                    .iter()
                    .map(index)
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// The streams that give every new replica of `changes` its copy of `bytes` bytes, with
/// member `lost` gone, the senders chosen by `source` among `nodes` members (every index
/// in `changes` below `nodes`).
pub fn plan(changes: &[Change], lost: usize, bytes: f64, source: Source, nodes: usize) -> Plan {
    let mut plan = Plan::default();
    // Bytes each member is to send so far: what `Spread` balances.
    let mut sending = vec![0.0f64; nodes];
    for change in changes {
        let survivors: Vec<usize> = change
            .before
            .iter()
            .copied()
            .filter(|&m| m != lost)
            .collect();
        let newcomers: Vec<usize> = change
            .after
            .iter()
            .copied()
            .filter(|m| !change.before.contains(m))
            .collect();
        if newcomers.is_empty() {
            continue;
        }
        let Some(&first_survivor) = survivors.first() else {
            plan.unrecoverable += 1;
            continue;
        };
        let cause = if change.before.contains(&lost) {
            plan.lost_partitions += 1;
            Cause::Lost
        } else {
            plan.moved_partitions += 1;
            Cause::Moved
        };
        for to in newcomers {
            let from = match source {
                Source::Leader => match change.after.first() {
                    Some(&leader) if survivors.contains(&leader) => leader,
                    _ => first_survivor,
                },
                Source::Spread => survivors
                    .iter()
                    .copied()
                    // Fewest bytes first; ties to the earlier in preference order.
                    .min_by(|&a, &b| sending[a].total_cmp(&sending[b]))
                    .unwrap_or(first_survivor),
            };
            if let Some(sent) = sending.get_mut(from) {
                *sent += bytes;
            }
            plan.streams.push(Stream {
                partition: change.partition,
                from,
                to,
                bytes,
                cause,
            });
        }
    }
    plan
}

/// Per stream, the simulated second its copy completes: members `0..nodes` each send and
/// receive at most `cap` bytes/s, shared max-min fairly among their running streams; with
/// `max_per_node`, a member runs at most that many sends and that many receives at once,
/// and a waiting stream starts, in plan order, as soon as both its ends have room.
pub fn simulate(
    streams: &[Stream],
    nodes: usize,
    cap: f64,
    max_per_node: Option<usize>,
) -> Vec<f64> {
    let limit = max_per_node.unwrap_or(usize::MAX).max(1);
    let mut finish = vec![f64::NAN; streams.len()];
    let mut remaining: Vec<f64> = streams.iter().map(|s| s.bytes).collect();
    let mut sends = vec![0usize; nodes];
    let mut receives = vec![0usize; nodes];
    let mut waiting: Vec<usize> = (0..streams.len()).collect();
    let mut running: Vec<usize> = Vec::new();
    let mut fair = FairShare::new(nodes);
    let mut now = 0.0f64;
    loop {
        waiting.retain(|&i| {
            let s = &streams[i];
            if sends[s.from] < limit && receives[s.to] < limit {
                sends[s.from] += 1;
                receives[s.to] += 1;
                running.push(i);
                false
            } else {
                true
            }
        });
        if running.is_empty() {
            break;
        }
        let rates = fair.rates(&running, streams, cap);
        // The next completion; every other running stream advances to that instant.
        let Some((next, dt)) = running
            .iter()
            .zip(&rates)
            .map(|(&i, &rate)| (i, remaining[i] / rate))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            break;
        };
        now += dt;
        let mut k = 0;
        running.retain(|&i| {
            let rate = rates[k];
            k += 1;
            remaining[i] -= rate * dt;
            // Float residue of a stream finishing at the same instant is not a new event.
            if i == next || remaining[i] <= 1e-9 * streams[i].bytes.max(1.0) {
                finish[i] = now;
                sends[streams[i].from] -= 1;
                receives[streams[i].to] -= 1;
                false
            } else {
                true
            }
        });
    }
    finish
}

/// Progressive filling over the members' send and receive caps, with its scratch space
/// kept between events (the simulation asks once per completion).
struct FairShare {
    nodes: usize,
    /// Per resource (sends of member i at i, receives at nodes + i): unfrozen streams.
    unfrozen: Vec<usize>,
    /// Per resource: bandwidth given to frozen streams.
    used: Vec<f64>,
    /// Resources some running stream uses.
    touched: Vec<usize>,
}

impl FairShare {
    fn new(nodes: usize) -> Self {
        FairShare {
            nodes,
            unfrozen: vec![0; 2 * nodes],
            used: vec![0.0; 2 * nodes],
            touched: Vec::new(),
        }
    }

    /// The max-min fair rate of each of `running` (same order).
    fn rates(&mut self, running: &[usize], streams: &[Stream], cap: f64) -> Vec<f64> {
        let ends = |s: &Stream| [s.from, self.nodes + s.to];
        self.touched.clear();
        for &i in running {
            for r in ends(&streams[i]) {
                if self.unfrozen[r] == 0 {
                    self.touched.push(r);
                    self.used[r] = 0.0;
                }
                self.unfrozen[r] += 1;
            }
        }
        let mut rates = vec![f64::NAN; running.len()];
        let mut left = running.len();
        while left > 0 {
            // The resource that saturates first fixes the rate of all its streams; every
            // unfrozen stream has risen at the same pace, so that rate is its fair level.
            let Some((bottleneck, level)) = self
                .touched
                .iter()
                .filter(|&&r| self.unfrozen[r] > 0)
                .map(|&r| (r, ((cap - self.used[r]) / self.unfrozen[r] as f64).max(0.0)))
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            else {
                break;
            };
            for (k, &i) in running.iter().enumerate() {
                let e = ends(&streams[i]);
                if rates[k].is_nan() && e.contains(&bottleneck) {
                    rates[k] = level;
                    left -= 1;
                    for r in e {
                        self.unfrozen[r] -= 1;
                        self.used[r] += level;
                    }
                }
            }
        }
        rates
    }
}

/// What one restoration took.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Streams run.
    pub streams: usize,
    /// Bytes copied in all.
    pub bytes: f64,
    /// Seconds until the last stream completed: every replica set complete again.
    pub restored: f64,
    /// Seconds until the last stream of a partition the lost member held completed.
    pub lost_restored: f64,
    /// Seconds no schedule can beat: the busiest member's sent or received bytes / cap.
    pub lower_bound: f64,
    /// Seconds if the bytes were received evenly by every member but the lost one: what
    /// finer partitions could approach.
    pub even: f64,
    /// Most bytes one member sent.
    pub busiest_sender: f64,
    /// Most bytes one member received.
    pub busiest_receiver: f64,
}

/// The most bytes any of `nodes` members sends and the most any receives in `streams`.
pub fn busiest(streams: &[Stream], nodes: usize) -> (f64, f64) {
    let mut sent = vec![0.0f64; nodes];
    let mut received = vec![0.0f64; nodes];
    for s in streams {
        sent[s.from] += s.bytes;
        received[s.to] += s.bytes;
    }
    let max = |v: Vec<f64>| v.into_iter().fold(0.0, f64::max);
    (max(sent), max(received))
}

/// Runs `streams` through [`simulate`] and sums up the restoration.
pub fn outcome(streams: &[Stream], nodes: usize, cap: f64, max_per_node: Option<usize>) -> Outcome {
    let finish = simulate(streams, nodes, cap, max_per_node);
    let last = |lost_only: bool| {
        streams
            .iter()
            .zip(&finish)
            .filter(|(s, _)| !lost_only || s.cause == Cause::Lost)
            .map(|(_, &t)| t)
            .fold(0.0, f64::max)
    };
    let (busiest_sender, busiest_receiver) = busiest(streams, nodes);
    let bytes: f64 = streams.iter().map(|s| s.bytes).sum();
    Outcome {
        streams: streams.len(),
        bytes,
        restored: last(false),
        lost_restored: last(true),
        lower_bound: busiest_sender.max(busiest_receiver) / cap,
        even: bytes / (nodes.saturating_sub(1).max(1) as f64 * cap),
        busiest_sender,
        busiest_receiver,
    }
}

fn member(i: usize) -> NodeId {
    NodeId(format!("node-{i:04}"))
}

/// One measured configuration.
struct Row {
    nodes: usize,
    source: Source,
    lost: NodeId,
    plan: Plan,
    partition_bytes: f64,
    outcome: Outcome,
}

fn measure(args: &Args, n: usize) -> anyhow::Result<Vec<Row>> {
    ensure!(n >= 2, "N = {n}: losing one member needs at least two");
    // One seed per N, so adding a size does not change the others' draws.
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ (n as u64) << 32);
    let base: Vec<NodeId> = (1..=n).map(member).collect();
    let lost = rng.random_range(0..n);
    let before = Ring::place(base.iter().cloned(), args.partitions)
        .with_context(|| format!("placement on {n} members"))?;
    let survivors = base.iter().enumerate().filter(|&(i, _)| i != lost);
    let after = Ring::place(survivors.map(|(_, m)| m.clone()), args.partitions)
        .with_context(|| format!("placement on {} members", n - 1))?;
    let changes = changes(&before, &after, args.rf)?;
    let lost_index = before
        .members()
        .binary_search(&base[lost])
        .map_err(|_| anyhow::anyhow!("the lost member is not placed"))?;
    let partition_bytes =
        args.bytes_per_node as f64 * n as f64 / (f64::from(args.partitions) * args.rf as f64);
    let cap = args.cap_mib_s * MIB;
    let max_per_node = (args.max_streams_per_node > 0).then_some(args.max_streams_per_node);
    Ok(args
        .source
        .iter()
        .map(|&source| {
            let plan = plan(&changes, lost_index, partition_bytes, source, n);
            let outcome = outcome(&plan.streams, n, cap, max_per_node);
            Row {
                nodes: n,
                source,
                lost: base[lost].clone(),
                plan,
                partition_bytes,
                outcome,
            }
        })
        .collect())
}

/// Runs the scenario and prints its report.
pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(args.partitions > 0, "--partitions must be positive");
    ensure!(args.rf > 0, "--rf must be positive");
    ensure!(
        args.cap_mib_s.is_finite() && args.cap_mib_s > 0.0,
        "--cap-mib-s must be a positive number"
    );
    let limit = match args.max_streams_per_node {
        0 => "no limit".to_owned(),
        k => k.to_string(),
    };
    println!(
        "rereplicate: one member lost for good, N = {:?}, P = {}, rf {}, {} GiB per member, \
         cap {} MiB/s per member each way, streams per member each way: {}, seed {}",
        args.nodes,
        args.partitions,
        args.rf,
        fixed(args.bytes_per_node as f64 / GIB, 1),
        fixed(args.cap_mib_s, 1),
        limit,
        args.seed
    );
    println!(
        "partitions: lost = held by the lost member, moved = replica set changed among survivors;"
    );
    println!(
        "restore = last stream done (every replica set complete), lost = last stream of a lost partition;"
    );
    println!("bound = the busiest member's sent or received bytes / cap (no schedule is faster);");
    println!(
        "even = bytes moved / (survivors x cap): the time if every survivor received an equal share."
    );
    let headers = [
        "N",
        "source",
        "lost member",
        "lost",
        "moved",
        "streams",
        "GiB/partition",
        "GiB moved",
        "restore s",
        "lost s",
        "bound s",
        "restore/bound",
        "even s",
        "max sent GiB",
        "max recv GiB",
        "MiB/s",
    ];
    let csv_headers = [
        "nodes",
        "source",
        "lost_member",
        "lost_partitions",
        "moved_partitions",
        "unrecoverable_partitions",
        "streams",
        "partition_bytes",
        "bytes_moved",
        "restore_s",
        "lost_restore_s",
        "lower_bound_s",
        "even_s",
        "busiest_sender_bytes",
        "busiest_receiver_bytes",
        "aggregate_mib_s",
    ];
    let mut table = Table::new(headers);
    let mut csv_rows = Vec::new();
    let mut rows = Vec::new();
    for &n in &args.nodes {
        for row in measure(args, n)? {
            let o = &row.outcome;
            let rate = if o.restored > 0.0 {
                o.bytes / o.restored / MIB
            } else {
                f64::NAN
            };
            let ratio = if o.lower_bound > 0.0 {
                o.restored / o.lower_bound
            } else {
                f64::NAN
            };
            table.push([
                n.to_string(),
                row.source.to_string(),
                row.lost.0.clone(),
                row.plan.lost_partitions.to_string(),
                row.plan.moved_partitions.to_string(),
                o.streams.to_string(),
                fixed(row.partition_bytes / GIB, 3),
                fixed(o.bytes / GIB, 1),
                fixed(o.restored, 1),
                fixed(o.lost_restored, 1),
                fixed(o.lower_bound, 1),
                fixed(ratio, 3),
                fixed(o.even, 1),
                fixed(o.busiest_sender / GIB, 1),
                fixed(o.busiest_receiver / GIB, 1),
                fixed(rate, 0),
            ]);
            csv_rows.push(vec![
                n.to_string(),
                row.source.to_string(),
                row.lost.0.clone(),
                row.plan.lost_partitions.to_string(),
                row.plan.moved_partitions.to_string(),
                row.plan.unrecoverable.to_string(),
                o.streams.to_string(),
                fixed(row.partition_bytes, 0),
                fixed(o.bytes, 0),
                fixed(o.restored, 3),
                fixed(o.lost_restored, 3),
                fixed(o.lower_bound, 3),
                fixed(o.even, 3),
                fixed(o.busiest_sender, 0),
                fixed(o.busiest_receiver, 0),
                fixed(rate, 3),
            ]);
            if row.plan.unrecoverable > 0 {
                println!(
                    "N = {n}: {} partitions had every replica on {} and are lost",
                    row.plan.unrecoverable, row.lost.0
                );
            }
            rows.push(row);
        }
    }
    println!();
    table.print();
    let csv = args.out.join("rereplicate.csv");
    report::write_csv(&csv, &csv_headers, &csv_rows)?;
    if !args.no_plots {
        plot(args, &rows)?;
    }
    println!();
    println!("CSV: {}", csv.display());
    Ok(())
}

fn plot(args: &Args, rows: &[Row]) -> anyhow::Result<()> {
    // The schedule meets its lower bound almost everywhere, so a bound line would hide
    // under the restore line; the even share shows what partition granularity costs.
    let points = |source: Source, value: &dyn Fn(&Outcome) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.source == source)
            .map(|r| (r.nodes as f64, value(&r.outcome)))
            .collect()
    };
    let mut series: Vec<Series> = args
        .source
        .iter()
        .map(|&source| Series::new(format!("{source} sends"), points(source, &|o| o.restored)))
        .collect();
    if let Some(&first) = args.source.first() {
        series.push(Series::new(
            "even share over the survivors",
            points(first, &|o| o.even),
        ));
    }
    let title = format!(
        "Seconds to restore rf {} after losing one member (P = {})",
        args.rf, args.partitions
    );
    LineChart::new(&title, "members (N)", "seconds", &series)
        .log_x()
        .log_y()
        .write_svg(&args.out.join("rereplicate-time.svg"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: f64 = 1000.0;
    const CAP: f64 = 100.0;

    fn stream(from: usize, to: usize) -> Stream {
        Stream {
            partition: 0,
            from,
            to,
            bytes: B,
            cause: Cause::Lost,
        }
    }

    #[test]
    fn one_stream_alone_takes_its_bytes_over_the_cap() {
        assert_eq!(simulate(&[stream(0, 1)], 2, CAP, None), vec![B / CAP]);
    }

    #[test]
    fn two_streams_sharing_a_sender_take_twice_as_long() {
        let finish = simulate(&[stream(0, 1), stream(0, 2)], 3, CAP, None);
        assert_eq!(finish, vec![2.0 * B / CAP; 2]);
        // Disjoint pairs do not slow each other.
        let finish = simulate(&[stream(0, 1), stream(2, 3)], 4, CAP, None);
        assert_eq!(finish, vec![B / CAP; 2]);
    }

    #[test]
    fn a_freed_share_goes_to_the_streams_still_running() {
        // All three start at half a cap (0 sends two, 1 receives two); once the first two
        // end at 20 s, the rest of 2→1 runs at the full cap.
        let mut short = stream(2, 1);
        short.bytes = 2.0 * B;
        let finish = simulate(&[stream(0, 1), stream(0, 3), short], 4, CAP, None);
        assert_eq!(finish, vec![20.0, 20.0, 30.0]);
    }

    #[test]
    fn a_stream_limit_queues_the_rest() {
        let streams = [stream(0, 1), stream(0, 2), stream(0, 3)];
        let finish = simulate(&streams, 4, CAP, Some(1));
        assert_eq!(finish, vec![10.0, 20.0, 30.0]);
        // Same total time as sharing: the sender is the bottleneck either way.
        let shared = simulate(&streams, 4, CAP, None);
        // Thirds of the cap do not add up exactly in binary.
        assert!(shared.iter().all(|t| (t - 30.0).abs() < 1e-9), "{shared:?}");
    }

    #[test]
    fn the_lower_bound_is_never_beaten() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..50 {
            let nodes = rng.random_range(2..12);
            let streams: Vec<Stream> = (0..rng.random_range(1..60))
                .map(|_| {
                    let from = rng.random_range(0..nodes);
                    let to = (from + rng.random_range(1..nodes)) % nodes;
                    let mut s = stream(from, to);
                    s.bytes = rng.random_range(1.0..5000.0);
                    s
                })
                .collect();
            for limit in [None, Some(1), Some(4)] {
                let o = outcome(&streams, nodes, CAP, limit);
                assert!(o.restored >= o.lower_bound * (1.0 - 1e-9), "{o:?}");
                assert!(o.lost_restored <= o.restored);
            }
        }
    }

    fn change(before: &[usize], after: &[usize]) -> Change {
        Change {
            partition: 0,
            before: before.to_vec(),
            after: after.to_vec(),
        }
    }

    #[test]
    fn plans_one_stream_per_new_replica_from_a_survivor() {
        let changes = [
            change(&[0, 1, 2], &[1, 2, 3]), // lost 0: the new leader 1 feeds 3
            change(&[3, 0, 2], &[4, 3, 2]), // lost 0; the new leader 4 needs it too
            change(&[1, 2, 3], &[1, 2, 4]), // moved among survivors
            change(&[1, 2, 3], &[2, 1, 3]), // a new leader is no copy
        ];
        let leader = plan(&changes, 0, B, Source::Leader, 5);
        assert_eq!((leader.lost_partitions, leader.moved_partitions), (2, 1));
        let pairs: Vec<(usize, usize)> = leader.streams.iter().map(|s| (s.from, s.to)).collect();
        assert_eq!(pairs, vec![(1, 3), (3, 4), (1, 4)]);
        let spread = plan(&changes, 0, B, Source::Spread, 5);
        let pairs: Vec<(usize, usize)> = spread.streams.iter().map(|s| (s.from, s.to)).collect();
        assert_eq!(pairs, vec![(1, 3), (3, 4), (2, 4)]);
        // A partition held only by the lost member has no one to copy from.
        let gone = plan(&[change(&[0], &[1])], 0, B, Source::Leader, 2);
        assert_eq!((gone.unrecoverable, gone.streams.len()), (1, 0));
    }

    #[test]
    fn parses_sizes_and_refuses_nonsense() {
        assert_eq!(parse_bytes("100GiB"), Ok(100 << 30));
        assert_eq!(parse_bytes("1.5 KiB"), Ok(1536));
        assert_eq!(parse_bytes("42"), Ok(42));
        assert!(parse_bytes("10GB").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_restoration() {
        let args = |seed| Args {
            nodes: vec![12],
            partitions: 256,
            rf: 3,
            bytes_per_node: 1 << 30,
            cap_mib_s: 100.0,
            max_streams_per_node: 4,
            source: vec![Source::Leader, Source::Spread],
            seed,
            out: PathBuf::new(),
            no_plots: true,
        };
        let summary = |seed| -> Vec<(String, Outcome)> {
            measure(&args(seed), 12)
                .unwrap()
                .into_iter()
                .map(|r| (r.lost.0, r.outcome))
                .collect()
        };
        let a = summary(3);
        assert_eq!(a, summary(3));
        assert!(a.iter().all(|(_, o)| o.streams > 0 && o.restored > 0.0));
    }
}
