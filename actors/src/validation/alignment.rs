//! The weighted alignment score: config rules (word lists and regex patterns), each
//! attached to one principle, lower that principle's score; the score is the weighted
//! mean of the principle scores, and thresholds turn it into a [`Status`].
//!
//! Each principle starts at 1.0; every rule that matches subtracts its `penalty` once
//! (a negative penalty is a bonus that offsets penalties of the same principle); the
//! result is clamped to 0.0..=1.0. The decision rule, in order:
//! 1. **reject** if the score is below `reject_below`, or some principle is at 0.0 (one
//!    principle entirely violated, e.g. a threat, is enough whatever the mean);
//! 2. **flag** if the score is below `accept_at`, or some principle is below
//!    `flag_principle_below`, or PII was found and the mode flags PII (research);
//! 3. **accept** otherwise.
//!
//! The reasons are those of the matched penalty rules, in config order, then the PII
//! finding.

use chorus_protocol::{Item, Status};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::pii::PiiCounts;

/// Most compiled size of one rule's regex, in bytes: bounds memory and start time.
pub const MAX_RULE_REGEX_BYTES: usize = 1 << 20;

/// One principle of the constitutional content policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Principle {
    /// The feedback helps someone (is about something, is actionable).
    Helpful,
    /// It does not threaten, abuse or endanger anyone.
    Harmless,
    /// It is what it claims to be (not a paid or fake review).
    Honest,
    /// It exposes no one's personal data or credentials.
    Privacy,
    /// It does not try to hide or smuggle instructions (prompt injection).
    Transparent,
    /// It does not disparage people as a group.
    Fair,
    /// It serves the purpose of feedback (not spam or advertising).
    Aligned,
}

impl Principle {
    /// Every principle, in the order of [`PrincipleScores`].
    pub const ALL: [Principle; 7] = [
        Principle::Helpful,
        Principle::Harmless,
        Principle::Honest,
        Principle::Privacy,
        Principle::Transparent,
        Principle::Fair,
        Principle::Aligned,
    ];

    /// The uppercase name used in reasons and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Principle::Helpful => "HELPFUL",
            Principle::Harmless => "HARMLESS",
            Principle::Honest => "HONEST",
            Principle::Privacy => "PRIVACY",
            Principle::Transparent => "TRANSPARENT",
            Principle::Fair => "FAIR",
            Principle::Aligned => "ALIGNED",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One value per principle, indexed by [`Principle`].
pub type PrincipleScores = [f32; 7];

/// A config rule made ready to run: its regex compiled once.
#[derive(Clone, Debug)]
pub(super) struct CompiledRule {
    pub(super) name: String,
    pub(super) principle: Principle,
    pub(super) matcher: Regex,
    pub(super) min_matches: usize,
    pub(super) penalty: f32,
    pub(super) reason: String,
}

impl CompiledRule {
    /// Compiles a word list into one case-insensitive whole-word alternation.
    pub(super) fn words_regex(words: &[String]) -> Result<Regex, regex::Error> {
        let alternation: Vec<String> = words.iter().map(|w| regex::escape(w.trim())).collect();
        build(&format!(r"\b(?:{})\b", alternation.join("|")), true)
    }

    /// Compiles a pattern as written (add `(?i)` for case-insensitivity).
    pub(super) fn pattern_regex(pattern: &str) -> Result<Regex, regex::Error> {
        build(pattern, false)
    }

    /// Whether the rule matches at least `min_matches` times over the item's text and
    /// tags; stops counting as soon as it does.
    fn matches(&self, item: &Item) -> bool {
        let mut needed = self.min_matches;
        for field in std::iter::once(&item.text).chain(&item.tags) {
            let hits = self.matcher.find_iter(field).take(needed).count();
            needed -= hits;
            if needed == 0 {
                return true;
            }
        }
        false
    }
}

fn build(pattern: &str, case_insensitive: bool) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(MAX_RULE_REGEX_BYTES)
        .build()
}

/// The thresholds that turn a score into a decision, resolved for one mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Thresholds {
    pub(super) accept_at: f32,
    pub(super) reject_below: f32,
    pub(super) flag_principle_below: f32,
    pub(super) pii_penalty: f32,
    pub(super) flag_pii: bool,
}

/// The outcome of scoring one item against the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Alignment {
    /// The weighted mean of `principles`, 0.0..=1.0.
    pub score: f32,
    /// Each principle's score, 0.0..=1.0, indexed by [`Principle`].
    pub principles: PrincipleScores,
    /// The names of the rules that matched (bonuses included), in config order.
    pub matched: Vec<String>,
    /// The reasons of the matched penalty rules (and the PII finding), in config order.
    pub reasons: Vec<String>,
    /// The decision the thresholds make of it.
    pub status: Status,
}

/// Scores `item` with `rules`, counting `pii` (already redacted) as a PRIVACY finding.
/// No allocation when no rule matches and no PII was found.
pub(super) fn score(
    item: &Item,
    rules: &[CompiledRule],
    weights: &PrincipleScores,
    pii: PiiCounts,
    thresholds: &Thresholds,
) -> Alignment {
    let mut principles: PrincipleScores = [1.0; 7];
    let mut matched = Vec::new();
    let mut reasons = Vec::new();
    for rule in rules {
        if rule.matches(item) {
            matched.push(rule.name.clone());
            principles[rule.principle.index()] -= rule.penalty;
            if rule.penalty > 0.0 {
                reasons.push(format!("{}: {}", rule.principle.as_str(), rule.reason));
            }
        }
    }
    if !pii.is_empty() {
        principles[Principle::Privacy.index()] -= thresholds.pii_penalty;
        reasons.push(format!("PRIVACY: personal data redacted ({pii})"));
    }
    for p in &mut principles {
        *p = p.clamp(0.0, 1.0);
    }
    let total: f32 = weights.iter().sum();
    let weighted: f32 = principles.iter().zip(weights).map(|(s, w)| s * w).sum();
    // Rounding can put an untouched item a hair off 1.0; keep the range exact.
    let score = (weighted / total).clamp(0.0, 1.0);
    let status = decide(score, &principles, &pii, thresholds, reasons.clone());
    Alignment {
        score,
        principles,
        matched,
        reasons,
        status,
    }
}

fn decide(
    score: f32,
    principles: &PrincipleScores,
    pii: &PiiCounts,
    t: &Thresholds,
    reasons: Vec<String>,
) -> Status {
    if score < t.reject_below || principles.contains(&0.0) {
        Status::Rejected { reasons }
    } else if score < t.accept_at
        || principles.iter().any(|&p| p < t.flag_principle_below)
        || (t.flag_pii && !pii.is_empty())
    {
        Status::Flagged { reasons }
    } else {
        Status::Accepted
    }
}
