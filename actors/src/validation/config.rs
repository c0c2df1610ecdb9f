//! The validation config: mode, thresholds, principle weights and the content rules.
//! It is the `[validation]` table of the node's TOML config; every field has a default,
//! so an empty table is the built-in policy in production mode.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::alignment::{CompiledRule, Principle, PrincipleScores};
use super::mode::Mode;

/// Most rules in one config: bounds start time and the per-item cost.
pub const MAX_RULES: usize = 256;
/// Most words in one rule's word list.
pub const MAX_WORDS_PER_RULE: usize = 1024;
/// Longest word or phrase of a word list, in bytes.
pub const MAX_WORD_BYTES: usize = 128;
/// Longest rule pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Most words in the hybrid mode's risk word set (matched by a linear scan per word).
pub const MAX_RISK_WORDS: usize = 64;

/// Default PRIVACY penalty of an item in which PII was found (and redacted).
pub const DEFAULT_PII_PENALTY: f32 = 0.5;
/// Default principle score below which an item is flagged whatever its mean.
pub const DEFAULT_FLAG_PRINCIPLE_BELOW: f32 = 0.5;
/// Default risk score at or above which hybrid mode runs the rules.
pub const DEFAULT_RISK_THRESHOLD: f32 = 0.5;

/// The `[validation]` config table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// When the rules run: `research`, `production` (default) or `hybrid`.
    pub mode: Mode,
    /// Score (0.0..=1.0) at or above which an item is accepted; unset: 0.8 in research
    /// mode, 0.7 otherwise.
    pub accept_at: Option<f32>,
    /// Score (0.0..=1.0, at most `accept_at`) below which an item is rejected; unset:
    /// 0.5 in research mode, 0.4 otherwise.
    pub reject_below: Option<f32>,
    /// Principle score (0.0..=1.0) below which an item is flagged even when its mean is
    /// high enough; default 0.5.
    pub flag_principle_below: f32,
    /// How much (0.0..=1.0) PII found in an item lowers its PRIVACY score; default 0.5.
    pub pii_penalty: f32,
    /// The weight of each principle in the mean.
    pub weights: Weights,
    /// The content rules; giving `rules` replaces the built-in set
    /// ([`default_rules`]), it does not extend it. At most [`MAX_RULES`].
    pub rules: Vec<RuleConfig>,
    /// Hybrid mode's cheap risk score.
    pub hybrid: HybridConfig,
}

impl Default for ValidationConfig {
    /// Production mode, the default weights, the built-in rules.
    fn default() -> Self {
        ValidationConfig {
            mode: Mode::default(),
            accept_at: None,
            reject_below: None,
            flag_principle_below: DEFAULT_FLAG_PRINCIPLE_BELOW,
            pii_penalty: DEFAULT_PII_PENALTY,
            weights: Weights::default(),
            rules: default_rules(),
            hybrid: HybridConfig::default(),
        }
    }
}

impl ValidationConfig {
    /// The research preset: every check synchronous, accept at 0.8.
    pub fn research() -> Self {
        ValidationConfig {
            mode: Mode::Research,
            ..ValidationConfig::default()
        }
    }

    /// The accept threshold in force: the configured one or the mode's default.
    pub fn accept_at(&self) -> f32 {
        self.accept_at
            .unwrap_or_else(|| self.mode.default_accept_at())
    }

    /// The reject threshold in force: the configured one or the mode's default.
    pub fn reject_below(&self) -> f32 {
        self.reject_below
            .unwrap_or_else(|| self.mode.default_reject_below())
    }

    /// Checks every limit and compiles every rule once; run at start. The error names
    /// the field (and the rule) at fault.
    pub fn validate(&self) -> Result<(), ValidationConfigError> {
        self.compile().map(drop)
    }

    /// Validates and compiles the rules, in config order.
    pub(super) fn compile(&self) -> Result<Vec<CompiledRule>, ValidationConfigError> {
        let fraction = |field: &'static str, value: f32| {
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(ValidationConfigError::Fraction { field, value })
            }
        };
        fraction("validation.accept_at", self.accept_at())?;
        fraction("validation.reject_below", self.reject_below())?;
        if self.reject_below() > self.accept_at() {
            return Err(ValidationConfigError::Thresholds {
                reject_below: self.reject_below(),
                accept_at: self.accept_at(),
            });
        }
        fraction("validation.flag_principle_below", self.flag_principle_below)?;
        fraction("validation.pii_penalty", self.pii_penalty)?;
        fraction(
            "validation.hybrid.risk_threshold",
            self.hybrid.risk_threshold,
        )?;
        self.weights.validate()?;
        if self.rules.len() > MAX_RULES {
            return Err(ValidationConfigError::TooManyRules {
                count: self.rules.len(),
            });
        }
        if self.hybrid.risk_words.len() > MAX_RISK_WORDS {
            return Err(ValidationConfigError::TooManyRiskWords {
                count: self.hybrid.risk_words.len(),
            });
        }
        if let Some(w) = self.hybrid.risk_words.iter().find(|w| !is_plain_word(w)) {
            return Err(ValidationConfigError::RiskWord { word: w.clone() });
        }
        let mut compiled = Vec::with_capacity(self.rules.len());
        for (index, rule) in self.rules.iter().enumerate() {
            if self.rules[..index].iter().any(|r| r.name == rule.name) {
                return Err(rule_error(rule, "name", "is used by an earlier rule"));
            }
            compiled.push(rule.compile()?);
        }
        Ok(compiled)
    }
}

fn is_plain_word(w: &str) -> bool {
    !w.is_empty() && w.len() <= MAX_WORD_BYTES && w.chars().all(char::is_alphanumeric)
}

/// The weight of each principle in the weighted mean (each finite, >= 0, not all 0).
/// Defaults are the research-mode weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// HELPFUL; default 1.0.
    pub helpful: f32,
    /// HARMLESS; default 3.0.
    pub harmless: f32,
    /// HONEST; default 2.0.
    pub honest: f32,
    /// PRIVACY; default 2.5.
    pub privacy: f32,
    /// TRANSPARENT; default 2.0.
    pub transparent: f32,
    /// FAIR; default 1.5.
    pub fair: f32,
    /// ALIGNED; default 2.5.
    pub aligned: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            helpful: 1.0,
            harmless: 3.0,
            honest: 2.0,
            privacy: 2.5,
            transparent: 2.0,
            fair: 1.5,
            aligned: 2.5,
        }
    }
}

impl Weights {
    /// The weights indexed by [`Principle`].
    pub fn as_array(&self) -> PrincipleScores {
        [
            self.helpful,
            self.harmless,
            self.honest,
            self.privacy,
            self.transparent,
            self.fair,
            self.aligned,
        ]
    }

    fn validate(&self) -> Result<(), ValidationConfigError> {
        let weights = self.as_array();
        for (principle, &value) in Principle::ALL.iter().zip(&weights) {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ValidationConfigError::Weight {
                    principle: *principle,
                    value,
                });
            }
        }
        if weights.iter().sum::<f32>() <= 0.0 {
            return Err(ValidationConfigError::ZeroWeights);
        }
        Ok(())
    }
}

/// One content rule: a word list or a pattern, the principle it bears on, and by how
/// much a match lowers that principle's score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, used in errors and logs.
    pub name: String,
    /// The principle whose score the rule changes.
    pub principle: Principle,
    /// Words or phrases matched case-insensitively as whole words; exactly one of
    /// `words` and `pattern` is set. At most [`MAX_WORDS_PER_RULE`], each at most
    /// [`MAX_WORD_BYTES`].
    #[serde(default)]
    pub words: Vec<String>,
    /// A regex (Rust `regex` syntax, linear time; add `(?i)` for case-insensitivity),
    /// at most [`MAX_PATTERN_BYTES`]. A `\b` next to a character class without a
    /// literal (`\b[A-Z]`) is several times slower on non-ASCII text than `(?-u:\b)`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Matches needed (over text and tags together) before the rule applies; default 1.
    #[serde(default = "one")]
    pub min_matches: u32,
    /// Subtracted once from the principle's score when the rule applies, -1.0..=1.0; a
    /// negative penalty is a bonus.
    pub penalty: f32,
    /// Why, as shown in a flagged or rejected receipt.
    pub reason: String,
}

fn one() -> u32 {
    1
}

impl RuleConfig {
    /// A word-list rule (for presets and tests).
    pub fn words(
        name: &str,
        principle: Principle,
        words: &[&str],
        penalty: f32,
        reason: &str,
    ) -> Self {
        RuleConfig {
            name: name.into(),
            principle,
            words: words.iter().map(|w| (*w).into()).collect(),
            pattern: None,
            min_matches: 1,
            penalty,
            reason: reason.into(),
        }
    }

    /// A pattern rule (for presets and tests).
    pub fn pattern(
        name: &str,
        principle: Principle,
        pattern: &str,
        penalty: f32,
        reason: &str,
    ) -> Self {
        RuleConfig {
            name: name.into(),
            principle,
            words: Vec::new(),
            pattern: Some(pattern.into()),
            min_matches: 1,
            penalty,
            reason: reason.into(),
        }
    }

    /// The same rule, applying only from `n` matches on.
    pub fn at_least(mut self, n: u32) -> Self {
        self.min_matches = n;
        self
    }

    fn compile(&self) -> Result<CompiledRule, ValidationConfigError> {
        if self.name.trim().is_empty() {
            return Err(rule_error(self, "name", "is empty"));
        }
        if self.reason.trim().is_empty() {
            return Err(rule_error(self, "reason", "is empty"));
        }
        if !(self.penalty.is_finite() && (-1.0..=1.0).contains(&self.penalty)) {
            return Err(rule_error(self, "penalty", "must be in -1.0..=1.0"));
        }
        if self.min_matches == 0 {
            return Err(rule_error(self, "min_matches", "must be at least 1"));
        }
        let (field, compiled) = match (&self.pattern, self.words.is_empty()) {
            (Some(_), false) | (None, true) => {
                return Err(rule_error(
                    self,
                    "words",
                    "exactly one of `words` and `pattern` must be set",
                ));
            }
            (None, false) => {
                if self.words.len() > MAX_WORDS_PER_RULE {
                    return Err(rule_error(self, "words", "has too many entries"));
                }
                if let Some(w) = self
                    .words
                    .iter()
                    .find(|w| w.trim().is_empty() || w.len() > MAX_WORD_BYTES)
                {
                    return Err(rule_error(
                        self,
                        "words",
                        &format!("entry {w:?} is empty or too long"),
                    ));
                }
                ("words", CompiledRule::words_regex(&self.words))
            }
            (Some(pattern), true) => {
                if pattern.len() > MAX_PATTERN_BYTES {
                    return Err(rule_error(self, "pattern", "is too long"));
                }
                ("pattern", CompiledRule::pattern_regex(pattern))
            }
        };
        let matcher = compiled.map_err(|e| rule_error(self, field, &e.to_string()))?;
        Ok(CompiledRule {
            name: self.name.clone(),
            principle: self.principle,
            matcher,
            min_matches: self.min_matches as usize,
            penalty: self.penalty,
            reason: self.reason.clone(),
        })
    }
}

fn rule_error(rule: &RuleConfig, field: &'static str, reason: &str) -> ValidationConfigError {
    ValidationConfigError::Rule {
        rule: rule.name.clone(),
        field,
        reason: reason.into(),
    }
}

/// Hybrid mode's cheap risk score (see [`risk`](super::risk)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HybridConfig {
    /// Risk (0.0..=1.0) at or above which the rules run; default 0.5.
    pub risk_threshold: f32,
    /// Single words (letters and digits only) whose presence makes the risk 1.0;
    /// compared case-insensitively, at most [`MAX_RISK_WORDS`].
    pub risk_words: Vec<String>,
}

impl Default for HybridConfig {
    fn default() -> Self {
        HybridConfig {
            risk_threshold: DEFAULT_RISK_THRESHOLD,
            risk_words: [
                "kill", "die", "bomb", "shoot", "idiot", "moron", "scum", "password", "free",
                "winner", "casino", "crypto", "ignore",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

/// The built-in rule set: threats, insults, spam, fake reviews, credentials, prompt
/// injection, generalisations about groups, and a bonus for reproduction steps.
pub fn default_rules() -> Vec<RuleConfig> {
    use Principle::*;
    vec![
        // A full penalty zeroes HARMLESS, which rejects the item (see `alignment`).
        RuleConfig::words(
            "threats",
            Harmless,
            &[
                "i will kill you",
                "kill you",
                "kill yourself",
                "i will hurt you",
                "hurt you",
                "shoot you",
                "bomb your",
                "you deserve to die",
            ],
            1.0,
            "threat of violence",
        ),
        RuleConfig::words(
            "insults",
            Harmless,
            &[
                "idiot", "idiots", "moron", "morons", "imbecile", "scumbag", "scum", "retard",
            ],
            0.6,
            "abusive language",
        ),
        RuleConfig::words(
            "mild-profanity",
            Harmless,
            &["damn", "crap", "sucks", "wtf"],
            0.2,
            "profanity",
        ),
        RuleConfig::pattern(
            "many-links",
            Aligned,
            r"(?i)\bhttps?://|\bwww\.",
            0.6,
            "spam: three or more links",
        )
        .at_least(3),
        RuleConfig::words(
            "spam-phrases",
            Aligned,
            &[
                "buy now",
                "click here",
                "free money",
                "limited offer",
                "act now",
                "100% free",
                "work from home",
                "crypto giveaway",
                "casino bonus",
            ],
            0.5,
            "spam or advertising",
        ),
        // ASCII word boundaries, as the letters are: a Unicode `\b` stops the regex's DFA
        // at the first non-ASCII byte of a text and made this one rule cost 8x more
        // (about 4 µs an item) on any text with an accent or a dash.
        RuleConfig::pattern(
            "shouting",
            Helpful,
            r"(?-u:\b)[A-Z]{3,}(?:\s+[A-Z]{3,}){5,}(?-u:\b)",
            0.3,
            "shouting (a long run of capitals)",
        ),
        RuleConfig::words(
            "inauthentic",
            Honest,
            &[
                "fake review",
                "paid review",
                "paid to write this",
                "paid to leave this",
                "review for a refund",
            ],
            0.6,
            "declared inauthentic review",
        ),
        RuleConfig::pattern(
            "credentials",
            Privacy,
            r"(?i)\b(?:password|passwd|pwd|api[_\-]?key|secret|token)\s*[:=]\s*\S{4,}",
            0.8,
            "contains a credential",
        ),
        RuleConfig::words(
            "prompt-injection",
            Transparent,
            &[
                "ignore previous instructions",
                "ignore all previous instructions",
                "disregard previous instructions",
                "reveal your system prompt",
            ],
            0.6,
            "prompt-injection phrase",
        ),
        RuleConfig::pattern(
            "group-generalisation",
            Fair,
            r"(?i)\ball (?:women|men|immigrants|foreigners|old people|young people) are\b",
            0.6,
            "generalisation about a group of people",
        ),
        RuleConfig::words(
            "reproduction-steps",
            Helpful,
            &[
                "steps to reproduce",
                "expected behaviour",
                "expected behavior",
            ],
            -0.2,
            "gives reproduction steps",
        ),
    ]
}

/// A validation config that must not be used; no validator was built from it.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ValidationConfigError {
    /// A threshold or penalty outside 0.0..=1.0 (or NaN).
    #[error("{field} is {value}; it must be in 0.0..=1.0")]
    Fraction {
        /// The config field.
        field: &'static str,
        /// Its value.
        value: f32,
    },
    /// `reject_below` above `accept_at`.
    #[error("validation.reject_below ({reject_below}) is above validation.accept_at ({accept_at})")]
    Thresholds {
        /// The reject threshold in force.
        reject_below: f32,
        /// The accept threshold in force.
        accept_at: f32,
    },
    /// A negative or non-finite weight.
    #[error("validation.weights.{} is {value}; it must be a finite number >= 0", principle.as_str().to_lowercase())]
    Weight {
        /// Whose weight.
        principle: Principle,
        /// Its value.
        value: f32,
    },
    /// Every weight is 0: the mean is undefined.
    #[error("validation.weights are all 0; at least one must be positive")]
    ZeroWeights,
    /// More than [`MAX_RULES`] rules.
    #[error("validation.rules has {count} rules; at most {MAX_RULES} allowed")]
    TooManyRules {
        /// How many were given.
        count: usize,
    },
    /// More than [`MAX_RISK_WORDS`] risk words.
    #[error("validation.hybrid.risk_words has {count} words; at most {MAX_RISK_WORDS} allowed")]
    TooManyRiskWords {
        /// How many were given.
        count: usize,
    },
    /// A risk word that is not a single word of letters and digits.
    #[error("validation.hybrid.risk_words entry {word:?} must be one word of letters and digits")]
    RiskWord {
        /// The entry.
        word: String,
    },
    /// One field of one rule is wrong (a pattern that does not compile included).
    #[error("validation.rules[{rule:?}].{field} {reason}")]
    Rule {
        /// The rule's name.
        rule: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
