//! The `membership` scenario.

/// Options of the `membership` scenario.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the scenario and prints its report.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("the membership scenario is not built yet")
}
