//! Deterministic simulations of Chorus: membership at scale, partition placement,
//! re-replication after a loss and overload, driven on the node's own modules in simulated time (no sockets, no sleeps;
//! a seed makes every run reproducible).

use clap::{Parser, Subcommand};

mod membership;
mod overload;
mod report;
mod rereplicate;
mod ring;

/// Command line of the simulations.
#[derive(Parser)]
#[command(
    name = "chorus-simulations",
    about = "Deterministic simulations of Chorus"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// One simulation scenario.
#[derive(Subcommand)]
enum Scenario {
    /// SWIM membership (foca with Chorus's config and codec) over a simulated network.
    Membership(membership::Args),
    /// Partition placement strategies: balance, movement, compute time.
    Ring(ring::Args),
    /// Re-replication after losing a member: streams and time to restore every replica.
    Rereplicate(rereplicate::Args),
    /// The tier scheduler and degradation policy under a simulated arrival process.
    Overload(overload::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Membership(args) => membership::run(&args),
        Scenario::Ring(args) => ring::run(&args),
        Scenario::Rereplicate(args) => rereplicate::run(&args),
        Scenario::Overload(args) => overload::run(&args),
    }
}
