//! The flags of `chorus bench` and the parsing of a tier mix.

use std::path::PathBuf;
use std::time::Duration;

use chorus_client::{ErrorCode, Tier};
use clap::Args;

use super::profile::Scenario;
use crate::tools::connect::ConnectArgs;
use crate::tools::error::CliError;

/// Flags of `chorus bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Requests per second across all workers (open loop); without it, closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to measure, e.g. `10s` or `1m` (default 10s; in scenarios 60s, and 10m
    /// for `soak`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before measuring (not counted); in scenarios, before the calibration.
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
    /// Items name one of this many functions (three versions each), with execution
    /// metrics, so the stores count function stats; 0 (the default): none.
    #[arg(long, default_value_t = 0)]
    pub functions: u32,
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
    /// Run the SDK's adaptive throttle as an application's client does (its default load
    /// guard, still without retries): requests it refuses locally count as refused.
    #[arg(long)]
    pub client_throttle: bool,
    /// Pipelined streams per connection in the SDK.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run a scenario: open loop per tier at a rate that varies over time in multiples
    /// of the saturation rate (the tier mix defaults to
    /// `realtime=10,priority=20,standard=40,batch=30`).
    #[arg(long, value_enum, value_name = "NAME")]
    pub scenario: Option<Scenario>,
    /// The saturation rate S, requests/s, that scenario rates are multiples of; without
    /// it, S is measured first by a closed-loop calibration run.
    #[arg(long, value_name = "R")]
    pub saturation_rate: Option<f64>,
    /// How long the calibration run measures (256 workers over 2 connections of 8
    /// streams, the tier mix of the scenario).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub calibrate: Duration,
    /// The multiple of S the `overload` scenario offers.
    #[arg(long, value_name = "X", default_value_t = 3.0)]
    pub multiple: f64,
    /// The length of one `stress` step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub step: Duration,
    /// The `spike` scenario's time at 1× before the spike.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub spike_before: Duration,
    /// The length of the spike.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub spike_length: Duration,
    /// The `spike` scenario's time at 1× after the spike.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub spike_after: Duration,
    /// The multiple of S during the spike.
    #[arg(long, value_name = "X", default_value_t = 5.0)]
    pub spike_multiple: f64,
    /// Most requests in flight in a scenario, split between tiers by weight; a request
    /// that waits for a slot counts the wait in its latency.
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    pub in_flight: usize,
    /// Retries of the SDK per request (default none: each refusal is counted as the
    /// node gave it; 3 is what an application's SDK does by default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// The node's process id on this machine, to sample its memory (VmRSS each second,
    /// VmHWM at the end); without it, memory is not measured.
    #[arg(long, value_name = "PID")]
    pub node_pid: Option<u32>,
    /// Draw a scenario's timeline as SVG to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Where to send the load.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `realtime=10,batch=90` → tiers with positive weights.
pub(crate) fn parse_tier_mix(mix: &str) -> Result<Vec<(Tier, u32)>, CliError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
