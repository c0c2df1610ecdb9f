//! The `overload` scenario.

/// Options of the `overload` scenario.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the scenario and prints its report.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("the overload scenario is not built yet")
}
