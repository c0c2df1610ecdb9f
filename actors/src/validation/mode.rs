//! When the expensive checks run: the three validation modes and their thresholds.

use serde::{Deserialize, Serialize};

/// How strictly and when the content policy runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every check synchronous and strict: rules run before the ack, the higher
    /// thresholds apply, and any PII found flags the item.
    Research,
    /// Fast path: schema and PII redaction before the ack; the rule evaluation comes
    /// back as a [`DeferredCheck`](super::DeferredCheck) to run after it.
    #[default]
    Production,
    /// Rules run (synchronously) only when the cheap risk score of the item reaches
    /// `hybrid.risk_threshold`; other items are accepted unscored.
    Hybrid,
}

/// Default accept threshold of research mode.
pub const RESEARCH_ACCEPT_AT: f32 = 0.8;
/// Default accept threshold of production and hybrid mode.
pub const DEFAULT_ACCEPT_AT: f32 = 0.7;
/// Default reject threshold of research mode.
pub const RESEARCH_REJECT_BELOW: f32 = 0.5;
/// Default reject threshold of production and hybrid mode.
pub const DEFAULT_REJECT_BELOW: f32 = 0.4;

impl Mode {
    /// The lowercase name used in config, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Research => "research",
            Mode::Production => "production",
            Mode::Hybrid => "hybrid",
        }
    }

    /// The accept threshold this mode uses when the config does not set one.
    pub fn default_accept_at(self) -> f32 {
        match self {
            Mode::Research => RESEARCH_ACCEPT_AT,
            Mode::Production | Mode::Hybrid => DEFAULT_ACCEPT_AT,
        }
    }

    /// The reject threshold this mode uses when the config does not set one.
    pub fn default_reject_below(self) -> f32 {
        match self {
            Mode::Research => RESEARCH_REJECT_BELOW,
            Mode::Production | Mode::Hybrid => DEFAULT_REJECT_BELOW,
        }
    }

    /// Whether PII found in an item flags it whatever its score (research only: there
    /// every finding is surfaced for review; elsewhere redaction is enough).
    pub fn flags_pii(self) -> bool {
        self == Mode::Research
    }
}
