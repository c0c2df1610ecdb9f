//! The `ring` scenario.

/// Options of the `ring` scenario.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the scenario and prints its report.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("the ring scenario is not built yet")
}
