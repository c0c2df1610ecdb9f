//! `chorus bench`: a load generator on the SDK with HDR latency histograms.
//!
//! Three ways to load a node: closed loop (no `--rate`), open loop at a fixed rate
//! (`--rate R`), and scenarios (`--scenario NAME`): an open loop per tier at a rate that
//! varies over time, in multiples of the node's saturation rate, with a per-second
//! timeline, verdicts (the stress knee, the spike's recovery) and an SVG plot.

mod analysis;
mod args;
mod generator;
mod load;
mod plot;
mod profile;
mod report;
mod rss;
mod scenario;
mod stats;
mod steady;
mod timeline;

pub use args::BenchArgs;
pub use profile::Scenario;
pub use report::ScenarioSummary;
pub use stats::Percentiles;
pub use steady::{BenchSummary, TierSummary};

use crate::tools::error::CliError;

/// Runs the benchmark the flags ask for and prints its summary.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    match args.scenario {
        Some(scenario) => scenario::run(args, scenario).await,
        None => steady::run(args).await,
    }
}
