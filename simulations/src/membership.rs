//! The `membership` scenario: N members running the node's membership core (foca with
//! Chorus's gossip settings, codec, packet authentication, Lifeguard and roster sync)
//! over a simulated network, through a scripted join, crash, partition and heal.
//!
//! Everything on stdout is a function of the options and the seed; the wall time of the
//! run goes to stderr.

mod cluster;
mod events;
mod member;
mod metrics;
mod network;
mod scenario;
mod settings;

use std::path::{Path, PathBuf};
use std::time::Instant;

use chorus_node::cluster::membership::GossipSettings;

use crate::report::{self, LineChart, Series, Table, fixed};
use cluster::{Outcome, Simulation};
use events::{Micros, SEC};
pub use settings::RunSettings;

/// Simulated minutes a run lasts at least unless `--minutes` says otherwise.
const DEFAULT_MINUTES: u64 = 5;

/// Options of the `membership` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Nodes in the run, the joiner included (at least 6).
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Fraction of packets lost, e.g. 0.05.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shortest run in simulated minutes (stretched if the script needs more).
    #[arg(long, default_value_t = DEFAULT_MINUTES)]
    pub minutes: u64,
    /// Lifeguard (local health, suspicion shortened by confirmations).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub lifeguard: Switch,
    /// Roster sync: a joiner is sent the seed's whole membership table.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub roster_sync: Switch,
    /// Make node 2 slow: everything it sends arrives 300–800 ms late.
    #[arg(long)]
    pub slow_node: bool,
    /// Directory for the CSV files and charts.
    #[arg(long, default_value = report::DEFAULT_OUT_DIR)]
    pub out: PathBuf,
    /// Write the CSV files but no chart.
    #[arg(long)]
    pub no_plots: bool,
}

/// An on/off option.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Args {
    /// The run these options describe.
    pub fn settings(&self) -> RunSettings {
        RunSettings {
            nodes: self.nodes,
            loss: self.loss,
            seed: self.seed,
            minutes: self.minutes,
            slow_node: self.slow_node,
            gossip: GossipSettings {
                expected_cluster_size: self.nodes as u32,
                lifeguard: self.lifeguard == Switch::On,
                roster_sync: self.roster_sync == Switch::On,
                ..GossipSettings::default()
            },
            out: self.out.clone(),
        }
    }
}

/// Runs the scenario, prints its report and writes its CSV files and chart.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let settings = args.settings();
    settings.validate()?;
    let started = Instant::now();
    let outcome = Simulation::new(settings.clone()).run();
    let wall = started.elapsed();
    let (config, results) = tables(&settings, &outcome);
    config.print();
    println!();
    results.print();
    eprintln!(
        "membership: {} nodes, {} simulated s, {} events in {:.1} s wall",
        settings.nodes,
        outcome.script.end / SEC,
        outcome.events,
        wall.as_secs_f64()
    );
    write_files(&settings, &outcome, &results, !args.no_plots)?;
    Ok(())
}

/// The file name stem of a run's outputs.
fn stem(settings: &RunSettings) -> String {
    let mut stem = format!(
        "membership-n{}-loss{}-seed{}",
        settings.nodes,
        fixed(settings.loss * 100.0, 0),
        settings.seed
    );
    if !settings.gossip.lifeguard {
        stem.push_str("-nolifeguard");
    }
    if !settings.gossip.roster_sync {
        stem.push_str("-nosync");
    }
    if settings.slow_node {
        stem.push_str("-slow");
    }
    if settings.minutes != DEFAULT_MINUTES {
        stem.push_str(&format!("-{}min", settings.minutes));
    }
    stem
}

fn write_files(
    settings: &RunSettings,
    outcome: &Outcome,
    results: &Table,
    plots: bool,
) -> anyhow::Result<()> {
    let stem = stem(settings);
    let out: &Path = &settings.out;
    results.write_csv(&out.join(format!("{stem}.csv")))?;
    let rows: Vec<Vec<String>> = outcome
        .samples
        .iter()
        .map(|s| {
            vec![
                fixed(s.at_secs, 0),
                s.wrong_views.to_string(),
                fixed(s.packets_per_node_sec, 2),
            ]
        })
        .collect();
    report::write_csv(
        &out.join(format!("{stem}-timeline.csv")),
        &["seconds", "wrong_views", "packets_per_node_sec"],
        &rows,
    )?;
    if !plots {
        return Ok(());
    }
    let wrong = Series::new(
        "observer-subject pairs with a wrong view",
        outcome
            .samples
            .iter()
            .map(|s| (s.at_secs, s.wrong_views as f64))
            .collect(),
    );
    let title = format!(
        "Wrong views over time, {} nodes, {}% loss",
        settings.nodes,
        fixed(settings.loss * 100.0, 0)
    );
    LineChart::new(&title, "simulated seconds", "wrong views", &[wrong])
        .write_svg(&out.join(format!("{stem}-views.svg")))?;
    Ok(())
}

/// Simulated microseconds as seconds with three decimals.
fn secs(us: Micros) -> String {
    fixed(us as f64 / SEC as f64, 3)
}

/// Probe periods within which a joiner should know every live member, at any size.
const JOINER_ROSTER_GOAL_PERIODS: f64 = 2.0;

/// Builds the run's two tables: the settings and the measurements.
pub fn tables(settings: &RunSettings, outcome: &Outcome) -> (Table, Table) {
    let on = |b: bool| if b { "on" } else { "off" };
    let config = Table::new(["setting", "value"])
        .row(["nodes (joiner included)", &settings.nodes.to_string()])
        .row(["loss", &format!("{}%", fixed(settings.loss * 100.0, 1))])
        .row(["seed", &settings.seed.to_string()])
        .row(["simulated seconds", &(outcome.script.end / SEC).to_string()])
        .row(["lifeguard", on(settings.gossip.lifeguard)])
        .row(["roster sync", on(settings.gossip.roster_sync)])
        .row(["slow node", on(settings.slow_node)])
        .row(["probe period s", &secs(outcome.period)])
        .row([
            "suspicion timeout s (shortest)",
            &secs(outcome.suspicion_min),
        ])
        .row(["suspicion timeout s (longest)", &secs(outcome.suspicion)]);

    let m = &outcome.milestones;
    let period = outcome.period as f64;
    let mut results = Table::new(["measure", "seconds", "periods", "goal", "met"]);
    let mut timed = |name: &str, from: Option<Micros>, to: Option<Micros>, goal: Option<f64>| match (
        from, to,
    ) {
        (Some(from), Some(to)) => {
            let periods = (to - from) as f64 / period;
            let met = goal.map_or("-", |g| if periods <= g { "yes" } else { "no" });
            let goal = goal.map_or("-".to_owned(), |g| format!("<= {}", fixed(g, 1)));
            results.push([
                name.to_owned(),
                secs(to - from),
                fixed(periods, 2),
                goal,
                met.to_owned(),
            ]);
        }
        _ => results.push([name, "never", "-", "-", "no"]),
    };
    timed(
        "join: every member knows the joiner",
        m.join_at,
        m.join_known_at,
        Some(1.5),
    );
    timed(
        "join: the joiner knows every member",
        m.join_at,
        m.joiner_complete_at,
        Some(JOINER_ROSTER_GOAL_PERIODS),
    );
    timed(
        "crash: first suspicion",
        m.crash_at,
        m.crash_suspected_at,
        Some(1.6),
    );
    timed(
        "crash: down at every live member",
        m.crash_at,
        m.crash_down_at,
        Some((outcome.suspicion_min as f64 + 2.0 * period) / period),
    );
    timed(
        "partition: cut-off nodes down at the majority",
        m.partition_at,
        m.partition_detected_at,
        None,
    );
    timed(
        "heal: every view matches the running nodes",
        m.heal_at,
        m.converged_at,
        None,
    );

    let v = &outcome.verdicts;
    let node_hours = outcome.steady_node_seconds / 3_600.0;
    let per_node_sec = |x: u64| x as f64 / outcome.steady_node_seconds;
    let zero = |x: u64| if x == 0 { "yes" } else { "no" };
    let mut counted = |name: &str, value: String, goal: &str, met: &str| {
        results.push([name, &value, "-", goal, met]);
    };
    let roster = m.joiner_roster.unwrap_or_default();
    let reached = m.joiner_roster.is_some();
    let count = |x: u64| {
        if reached {
            x.to_string()
        } else {
            "-".to_owned()
        }
    };
    counted(
        "join: roster packets the joiner applied",
        count(roster.packets),
        "-",
        "-",
    );
    counted(
        "join: roster pulls the joiner sent",
        count(roster.pulls),
        "-",
        "-",
    );
    counted(
        "steady: false down verdicts per node-hour",
        fixed(v.false_down as f64 / node_hours, 3),
        "0",
        zero(v.false_down),
    );
    counted(
        "steady: forced rejoins per node-hour",
        fixed(v.forced_rejoins as f64 / node_hours, 3),
        "0",
        zero(v.forced_rejoins),
    );
    counted(
        "steady: false down verdicts",
        v.false_down.to_string(),
        "0",
        zero(v.false_down),
    );
    counted(
        "steady: forced rejoins",
        v.forced_rejoins.to_string(),
        "0",
        zero(v.forced_rejoins),
    );
    counted(
        "steady: suspicions raised",
        v.suspicions.to_string(),
        "-",
        "-",
    );
    let messages = per_node_sec(outcome.steady_traffic.packets);
    let bytes = per_node_sec(outcome.steady_traffic.bytes);
    counted(
        "steady: messages per node per second",
        fixed(messages, 2),
        "< 20",
        if messages < 20.0 { "yes" } else { "no" },
    );
    counted(
        "steady: bytes per node per second",
        fixed(bytes, 0),
        "< 2048",
        if bytes < 2_048.0 { "yes" } else { "no" },
    );
    counted(
        "partition: down verdicts across the cut",
        v.partition_down.to_string(),
        "-",
        "-",
    );
    counted(
        "partition: other down verdicts on running nodes",
        v.aftermath_down.to_string(),
        "-",
        "-",
    );
    counted(
        "partition: down verdicts on the same side",
        v.same_side_down.to_string(),
        "0",
        zero(v.same_side_down),
    );
    counted(
        "partition: rejoins",
        v.aftermath_rejoins.to_string(),
        "-",
        "-",
    );
    counted(
        "partition: rejoins outside the cut",
        v.rejoins_outside_cut.to_string(),
        "0",
        zero(v.rejoins_outside_cut),
    );
    counted(
        "views match the running nodes at the end",
        if outcome.converged_at_end {
            "yes"
        } else {
            "no"
        }
        .to_owned(),
        "yes",
        if outcome.converged_at_end {
            "yes"
        } else {
            "no"
        },
    );
    (config, results)
}
