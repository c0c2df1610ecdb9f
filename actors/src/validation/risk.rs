//! Hybrid mode's cheap risk score: a few byte-level signals that say whether an item is
//! worth running the regex rules on. It costs one pass over the text and tags, compares
//! words without allocating, and runs no regex.
//!
//! The risk is the largest of these signals, each in 0.0..=1.0, so one strong signal is
//! enough to run the full check:
//! - **links**: `http://`, `https://` and `www.` occurrences / 3 (spam carries links);
//! - **shouting**: the share of uppercase among ASCII letters, when there are at least
//!   [`SHOUTING_MIN_LETTERS`] of them;
//! - **risk words**: 1.0 if any word of the configured set occurs (case-insensitive);
//! - **length**: text bytes / `MAX_TEXT_BYTES` (long texts hide more).

use chorus_protocol::{Item, MAX_TEXT_BYTES};

/// Links at which the link signal is 1.0.
pub const LINKS_FOR_FULL_RISK: usize = 3;
/// Fewest ASCII letters before the uppercase share counts (`OK` is not shouting).
pub const SHOUTING_MIN_LETTERS: usize = 16;

/// The risk signals of one item, each in 0.0..=1.0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Risk {
    /// Link count / [`LINKS_FOR_FULL_RISK`], capped at 1.0.
    pub links: f32,
    /// Uppercase share of ASCII letters (0.0 below [`SHOUTING_MIN_LETTERS`] letters).
    pub shouting: f32,
    /// 1.0 if a risk word occurs.
    pub words: f32,
    /// Text length / `MAX_TEXT_BYTES`.
    pub length: f32,
}

impl Risk {
    /// The signals of `item`'s text and tags; `risk_words` are single words, compared
    /// ASCII-case-insensitively (the config guarantees their shape).
    pub fn of(item: &Item, risk_words: &[String]) -> Risk {
        let fields =
            || std::iter::once(item.text.as_str()).chain(item.tags.iter().map(String::as_str));
        let links: usize = fields().map(count_links).sum();
        let (mut letters, mut upper) = (0usize, 0usize);
        for b in fields().flat_map(str::bytes) {
            if b.is_ascii_alphabetic() {
                letters += 1;
                upper += usize::from(b.is_ascii_uppercase());
            }
        }
        let has_word = fields().any(|f| {
            f.split(|c: char| !c.is_alphanumeric())
                .any(|w| risk_words.iter().any(|r| r.eq_ignore_ascii_case(w)))
        });
        Risk {
            links: (links as f32 / LINKS_FOR_FULL_RISK as f32).min(1.0),
            shouting: if letters >= SHOUTING_MIN_LETTERS {
                upper as f32 / letters as f32
            } else {
                0.0
            },
            words: if has_word { 1.0 } else { 0.0 },
            length: (item.text.len() as f32 / MAX_TEXT_BYTES as f32).min(1.0),
        }
    }

    /// The risk: the largest signal.
    pub fn score(&self) -> f32 {
        self.links
            .max(self.shouting)
            .max(self.words)
            .max(self.length)
    }
}

fn count_links(s: &str) -> usize {
    s.matches("http://").count() + s.matches("https://").count() + s.matches("www.").count()
}
