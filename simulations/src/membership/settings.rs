//! One run's settings: the scenario's options and the gossip settings the members use.

use std::path::PathBuf;

use chorus_node::cluster::membership::GossipSettings;

use super::events::Micros;
use super::scenario::MIN_NODES;

/// Everything a run depends on; the same settings always give the same report.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Nodes in the run, the joiner included.
    pub nodes: usize,
    /// Fraction of packets lost.
    pub loss: f64,
    /// Seed of every random choice (network and members).
    pub seed: u64,
    /// Shortest run, in simulated minutes (the script may need more).
    pub minutes: u64,
    /// Whether node 2 sends everything 300–800 ms late.
    pub slow_node: bool,
    /// The members' gossip settings (Lifeguard and roster sync included).
    pub gossip: GossipSettings,
    /// Where CSV files and charts go.
    pub out: PathBuf,
}

/// A run the simulation cannot do.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Too few nodes for the script.
    #[error("--nodes must be at least {MIN_NODES}")]
    TooFewNodes,
    /// Loss outside 0..1.
    #[error("--loss must be a fraction in 0..1, got {0}")]
    Loss(f64),
    /// The gossip settings do not validate.
    #[error(transparent)]
    Gossip(#[from] chorus_node::cluster::membership::GossipSettingsError),
}

impl RunSettings {
    /// Checks the settings once, before the run.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.nodes < MIN_NODES {
            return Err(SettingsError::TooFewNodes);
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(SettingsError::Loss(self.loss));
        }
        self.gossip.validate()?;
        Ok(())
    }

    /// The probe period in microseconds.
    pub fn period(&self) -> Micros {
        self.gossip.probe_period().as_micros() as Micros
    }

    /// The suspicion timeout foca runs (the longest one with Lifeguard), in microseconds.
    pub fn suspicion(&self) -> Micros {
        self.gossip.foca_config().suspect_to_down_after.as_micros() as Micros
    }

    /// How long a healed cluster is given to converge, in microseconds: two minutes
    /// (what two rounds of announces to members believed down took when they went out
    /// every minute; kept so that runs stay comparable) plus a suspicion timeout and ten
    /// periods.
    pub fn after_heal(&self) -> Micros {
        const AFTER_HEAL_BASE: Micros = 120 * super::events::SEC;
        AFTER_HEAL_BASE + self.suspicion() + 10 * self.period()
    }

    /// The shortest suspicion timeout, in microseconds.
    pub fn suspicion_min(&self) -> Micros {
        self.gossip.suspect_to_down().as_micros() as Micros
    }
}
