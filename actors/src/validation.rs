//! The content policy ("constitutional" validation): schema, PII
//! redaction and the weighted alignment score, as a pure [`Validator`] that the
//! validator actors call. No IO, no clock, no randomness: the same item and config
//! always give the same [`Verdict`].
//!
//! ```text
//! check(&mut item) ── schema ──► PII redaction (in place) ──► by mode:
//!     research    rules now, strict thresholds, PII flags  ──► Verdict{status, score}
//!     production  Accepted now + DeferredCheck ──► (after the ack) check_deferred
//!     hybrid      cheap risk score ≥ threshold ? rules now : Accepted, unscored
//! ```
//!
//! - [`pii`]: emails, phones, Luhn-valid card numbers → `[email]`, `[phone]`, `[card]`.
//! - [`alignment`]: principles, weights, rules and the accept / flag / reject rule.
//! - [`risk`]: hybrid mode's cheap risk score.
//! - [`mode`] and [`config`]: when the checks run, and the `[validation]` config table.
//!
//! Cost: an item with no `@`, fewer than 8 digits and no rule match allocates nothing
//! in `check`; the rules cost one regex scan each over the text and tags.

pub mod alignment;
pub mod config;
pub mod mode;
pub mod pii;
pub mod risk;

use chorus_protocol::{ErrorCode, Item, Status};

pub use alignment::{Alignment, Principle};
pub use config::{RuleConfig, ValidationConfig, ValidationConfigError};
pub use mode::Mode;
pub use pii::{PiiCounts, PiiKind};
pub use risk::Risk;

use alignment::{CompiledRule, PrincipleScores, Thresholds};

/// What the content policy says of one item; maps onto the receipt's `status` and
/// `alignment_score`.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The receipt's status (provisional while `deferred` is set).
    pub status: Status,
    /// The weighted alignment score in 0.0..=1.0, when the rules ran.
    pub score: Option<f32>,
    /// The PII that was redacted from the item.
    pub pii: PiiCounts,
    /// The rule evaluation left to run after the ack (production mode only).
    pub deferred: Option<DeferredCheck>,
}

/// The rule evaluation that production mode runs after the ack: hand it back, with the
/// stored (redacted) item, to [`Validator::check_deferred`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferredCheck {
    /// The PII found before redaction, still a PRIVACY finding for the score (the
    /// redacted item no longer shows it).
    pub pii: PiiCounts,
}

/// The content policy built from a [`ValidationConfig`]: rules compiled once, then
/// shared read-only (`check` takes `&self`, so one validator serves a whole pool).
#[derive(Clone, Debug)]
pub struct Validator {
    mode: Mode,
    rules: Vec<CompiledRule>,
    weights: PrincipleScores,
    thresholds: Thresholds,
    risk_threshold: f32,
    risk_words: Vec<String>,
}

impl Validator {
    /// Validates the config and compiles its rules; the error names the field and rule.
    pub fn new(config: ValidationConfig) -> Result<Validator, ValidationConfigError> {
        let rules = config.compile()?;
        Ok(Validator {
            mode: config.mode,
            rules,
            weights: config.weights.as_array(),
            thresholds: Thresholds {
                accept_at: config.accept_at(),
                reject_below: config.reject_below(),
                flag_principle_below: config.flag_principle_below,
                pii_penalty: config.pii_penalty,
                flag_pii: config.mode.flags_pii(),
            },
            risk_threshold: config.hybrid.risk_threshold,
            risk_words: config.hybrid.risk_words,
        })
    }

    /// The mode this validator runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Checks the schema, redacts PII from `item` in place (store the item only after
    /// this), and runs the rules now or defers them, as the mode says. A schema
    /// violation is `Invalid{field, reason}` and leaves the item untouched.
    pub fn check(&self, item: &mut Item) -> Result<Verdict, ErrorCode> {
        item.validate()?;
        let pii = pii::redact_item(item);
        let verdict = match self.mode {
            Mode::Research => self.scored(item, pii),
            Mode::Production => Verdict {
                status: Status::Accepted,
                score: None,
                pii,
                deferred: Some(DeferredCheck { pii }),
            },
            Mode::Hybrid if self.risk(item).score() >= self.risk_threshold => {
                self.scored(item, pii)
            }
            Mode::Hybrid => Verdict {
                status: Status::Accepted,
                score: None,
                pii,
                deferred: None,
            },
        };
        Ok(verdict)
    }

    /// Runs the rules that [`check`](Self::check) deferred, on the item as it was
    /// stored (redacted); the result replaces the provisional status.
    pub fn check_deferred(&self, item: &Item, deferred: &DeferredCheck) -> Verdict {
        self.scored(item, deferred.pii)
    }

    /// Scores an (already redacted) item against every rule, whatever the mode.
    pub fn align(&self, item: &Item, pii: PiiCounts) -> Alignment {
        alignment::score(item, &self.rules, &self.weights, pii, &self.thresholds)
    }

    /// Hybrid mode's cheap risk signals of an item.
    pub fn risk(&self, item: &Item) -> Risk {
        Risk::of(item, &self.risk_words)
    }

    fn scored(&self, item: &Item, pii: PiiCounts) -> Verdict {
        let alignment = self.align(item, pii);
        Verdict {
            status: alignment.status,
            score: Some(alignment.score),
            pii,
            deferred: None,
        }
    }
}

#[cfg(test)]
mod tests;
