//! PII detection and redaction: email addresses, phone numbers and payment card numbers
//! are found in free text and replaced by a stable token (`[email]`, `[phone]`,
//! `[card]`) before the item is stored.
//!
//! The patterns are fixed (not config): they describe what personal data looks like,
//! not a policy. Each kind is found by a broad regex and then confirmed in code, because
//! the hard part is what must *not* match:
//! - cards: a run of 13–19 digits, with single spaces or dashes between groups, that
//!   passes the Luhn check (so a random digit run is flagged one time in ten at most,
//!   and an order number of another length never); a run glued to letters (an id) is
//!   not a card;
//! - phones: `+` and a country code followed by 8–15 digits in all, or a national
//!   number of 9–12 digits written with separators (`555-123-4567`, `(555) 123-4567`,
//!   `020 7946 0958`, `01 23 45 67 89`); plain digit runs, years, dates
//!   (`2024-01-15 12:30`), IPv4 addresses, thousands groupings and ids
//!   (`ABC-555-123-4567`) are not phones;
//! - emails: `local@domain.tld` with a letters-only top-level domain.
//!
//! Redaction repeats until a pass finds nothing, so its output never contains anything
//! [`find`] detects, and redacting twice changes nothing (both are property-tested). It
//! terminates because every match holds an `@` or at least 8 digits and no token does.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

use chorus_protocol::{Item, MAX_TAG_BYTES, MAX_TEXT_BYTES};
use regex::Regex;

/// Fewest digits in anything [`find`] reports (an international phone number); texts
/// with fewer digits and no `@` skip the regexes entirely.
const MIN_PII_DIGITS: usize = 8;
/// Digits of a payment card number.
const CARD_DIGITS: Range<usize> = 13..20;
/// Digits of a phone number written with `+` and a country code (E.164 allows 15).
const INTERNATIONAL_DIGITS: Range<usize> = 8..16;
/// Digits of a phone number in a national format.
const NATIONAL_DIGITS: Range<usize> = 9..13;

/// `local@domain.tld`; the top-level domain is letters only so `v1@2.0` is no email.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}\b")
        .expect("the email pattern compiles")
});

/// A run of digit groups joined by single spaces or dashes: where cards are looked for.
static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[0-9]+(?:[ \-][0-9]+)*").expect("the digit-run pattern compiles")
});

/// Phone candidates, most specific first (the regex crate takes the leftmost match and,
/// at one position, the first alternative that matches).
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
          (?P<intl>\+[0-9]{1,3}(?:[\ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6})
        | \([0-9]{2,5}\)[\ .\-]?[0-9]{2,4}(?:[\ .\-][0-9]{2,5}){1,3}
        | [0-9]{2,5}(?:[\ .\-][0-9]{2,8}){1,4}
        ",
    )
    .expect("the phone pattern compiles")
});

/// A kind of personal data that is redacted before storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number (Luhn-valid).
    Card,
}

impl PiiKind {
    /// Every kind, in the order they are looked for.
    pub const ALL: [PiiKind; 3] = [PiiKind::Email, PiiKind::Card, PiiKind::Phone];

    /// The lowercase name used in reasons, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
        }
    }

    /// What a match of this kind is replaced with.
    pub fn token(self) -> &'static str {
        match self {
            PiiKind::Email => "[email]",
            PiiKind::Phone => "[phone]",
            PiiKind::Card => "[card]",
        }
    }
}

/// How many matches of each kind were redacted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PiiCounts {
    /// Email addresses.
    pub email: u32,
    /// Phone numbers.
    pub phone: u32,
    /// Payment card numbers.
    pub card: u32,
}

impl PiiCounts {
    /// The count of one kind.
    pub fn get(self, kind: PiiKind) -> u32 {
        match kind {
            PiiKind::Email => self.email,
            PiiKind::Phone => self.phone,
            PiiKind::Card => self.card,
        }
    }

    /// All matches of every kind.
    pub fn total(self) -> u32 {
        self.email + self.phone + self.card
    }

    /// Whether nothing was found.
    pub fn is_empty(self) -> bool {
        self.total() == 0
    }

    /// The kinds found, with their counts (kinds with none are left out).
    pub fn iter(self) -> impl Iterator<Item = (PiiKind, u32)> {
        PiiKind::ALL
            .into_iter()
            .map(move |k| (k, self.get(k)))
            .filter(|&(_, n)| n > 0)
    }

    /// Adds another count to this one.
    pub fn add(&mut self, other: PiiCounts) {
        self.email += other.email;
        self.phone += other.phone;
        self.card += other.card;
    }

    fn bump(&mut self, kind: PiiKind) {
        match kind {
            PiiKind::Email => self.email += 1,
            PiiKind::Phone => self.phone += 1,
            PiiKind::Card => self.card += 1,
        }
    }
}

impl fmt::Display for PiiCounts {
    /// `1 email, 2 phone`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, (kind, n)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n} {}", kind.as_str())?;
        }
        Ok(())
    }
}

/// One piece of personal data found in a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PiiMatch {
    /// What it is.
    pub kind: PiiKind,
    /// Where it is, in bytes of the text.
    pub range: Range<usize>,
}

/// A text with its personal data replaced by tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted<'a> {
    /// The redacted text; borrowed (no allocation) when nothing was found.
    pub text: Cow<'a, str>,
    /// What was replaced.
    pub found: PiiCounts,
}

/// Every piece of personal data in `text`, in order, without overlaps (an email wins
/// over a card, a card over a phone). Costs one scan of the bytes and no allocation when
/// the text has no `@` and fewer than 8 digits.
pub fn find(text: &str) -> Vec<PiiMatch> {
    let mut found = Vec::new();
    if text.contains('@') {
        found.extend(EMAIL.find_iter(text).map(|m| PiiMatch {
            kind: PiiKind::Email,
            range: m.range(),
        }));
    }
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if digits >= CARD_DIGITS.start {
        find_cards(text, &mut found);
    }
    if digits >= MIN_PII_DIGITS {
        find_phones(text, &mut found);
    }
    found.sort_by_key(|m| m.range.start);
    found
}

/// `text` with every email, phone and card number replaced by its token.
pub fn redact(text: &str) -> Redacted<'_> {
    let mut found = PiiCounts::default();
    let matches = find(text);
    if matches.is_empty() {
        return Redacted {
            text: Cow::Borrowed(text),
            found,
        };
    }
    let mut current = replace(text, &matches, &mut found);
    // A replacement can complete a pattern that a neighbour had broken (a phone
    // rejected for touching an email, say); scan again until nothing is left.
    loop {
        let matches = find(&current);
        if matches.is_empty() {
            break;
        }
        current = replace(&current, &matches, &mut found);
    }
    Redacted {
        text: Cow::Owned(current),
        found,
    }
}

/// Redacts an item's `text` and `tags` in place and says what it replaced. A field
/// that the tokens made longer than its schema limit (only `[email]` can be longer than
/// what it replaces, by one byte) is cut at that limit, then scanned again.
pub fn redact_item(item: &mut Item) -> PiiCounts {
    let mut found = PiiCounts::default();
    redact_field(&mut item.text, MAX_TEXT_BYTES, &mut found);
    for tag in &mut item.tags {
        redact_field(tag, MAX_TAG_BYTES, &mut found);
    }
    found
}

fn redact_field(field: &mut String, limit: usize, found: &mut PiiCounts) {
    loop {
        let Redacted { text, found: more } = redact(field);
        let replaced = match text {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        };
        found.add(more);
        if let Some(s) = replaced {
            *field = s;
        }
        if field.len() <= limit {
            return;
        }
        let mut cut = limit;
        while !field.is_char_boundary(cut) {
            cut -= 1;
        }
        field.truncate(cut);
    }
}

fn replace(text: &str, matches: &[PiiMatch], found: &mut PiiCounts) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for m in matches {
        out.push_str(&text[at..m.range.start]);
        out.push_str(m.kind.token());
        at = m.range.end;
        found.bump(m.kind);
    }
    out.push_str(&text[at..]);
    out
}

fn overlaps(found: &[PiiMatch], range: &Range<usize>) -> bool {
    found
        .iter()
        .any(|m| m.range.start < range.end && range.start < m.range.end)
}

fn char_before(text: &str, at: usize) -> Option<char> {
    text[..at].chars().next_back()
}

fn char_after(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether the number starting at `start` is part of a longer token before it: a word
/// character, a `+`, or a `.`/`-` that itself follows a word character (`ABC-555…`,
/// `2024-01-…`, `1.5…`).
fn glued_before(text: &str, start: usize) -> bool {
    match char_before(text, start) {
        None => false,
        Some(c) if is_word(c) || c == '+' => true,
        Some(c @ ('.' | '-')) => char_before(text, start - c.len_utf8()).is_some_and(is_word),
        Some(_) => false,
    }
}

/// Whether the number ending at `end` goes on after it: a word character, or a
/// `.`/`-` followed by a digit (`…4567-89`, `…0.5`).
fn glued_after(text: &str, end: usize) -> bool {
    match char_after(text, end) {
        None => false,
        Some(c) if is_word(c) => true,
        Some(c @ ('.' | '-')) => {
            char_after(text, end + c.len_utf8()).is_some_and(|d| d.is_ascii_digit())
        }
        Some(_) => false,
    }
}

/// The byte ranges of the maximal ASCII digit runs in `s`, offset by `base`.
fn digit_groups(s: &str, base: usize) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = None;
    for (i, b) in s.bytes().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s0)) => {
                groups.push(base + s0..base + i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s0) = start {
        groups.push(base + s0..base + s.len());
    }
    groups
}

/// The Luhn check of a card number's digits (ASCII digits and separators; separators
/// are skipped).
pub fn luhn_valid(number: &str) -> bool {
    let mut sum = 0;
    let mut count = 0;
    for b in number.bytes().rev().filter(u8::is_ascii_digit) {
        let mut d = u32::from(b - b'0');
        if count % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        count += 1;
    }
    count > 0 && sum % 10 == 0
}

/// Whether digit groups are laid out as card numbers are printed: one block, 4-4-4-4
/// (with a shorter last group for 13–19 digits), or Amex/Diners 4-6-5 / 4-6-4.
fn card_layout(lens: &[usize]) -> bool {
    match lens {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [init @ .., last] => init.iter().all(|&l| l == 4) && (1..=4).contains(last),
        [] => false,
    }
}

fn find_cards(text: &str, found: &mut Vec<PiiMatch>) {
    for run in DIGIT_RUN.find_iter(text) {
        let digits = run.as_str().bytes().filter(u8::is_ascii_digit).count();
        if digits < CARD_DIGITS.start {
            continue;
        }
        let groups = digit_groups(run.as_str(), run.start());
        let first_usable = usize::from(glued_before(text, run.start()));
        let last_usable = groups.len() - usize::from(glued_after(text, run.end()));
        // Every window of whole groups with a card's length that passes Luhn, best
        // first: printed like a card, then longest, then leftmost.
        let mut windows: Vec<(bool, usize, usize, usize)> = Vec::new();
        for i in first_usable..last_usable {
            let mut len = 0;
            for j in i..last_usable {
                len += groups[j].len();
                if len >= CARD_DIGITS.end {
                    break;
                }
                let range = groups[i].start..groups[j].end;
                if CARD_DIGITS.contains(&len) && luhn_valid(&text[range]) {
                    let lens: Vec<usize> = groups[i..=j].iter().map(|g| g.len()).collect();
                    windows.push((card_layout(&lens), len, i, j));
                }
            }
        }
        windows.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut taken: Vec<(usize, usize)> = Vec::new();
        for (_, _, i, j) in windows {
            let range = groups[i].start..groups[j].end;
            if taken.iter().any(|&(a, b)| a <= j && i <= b) || overlaps(found, &range) {
                continue;
            }
            taken.push((i, j));
            found.push(PiiMatch {
                kind: PiiKind::Card,
                range,
            });
        }
    }
}

fn find_phones(text: &str, found: &mut Vec<PiiMatch>) {
    let mut at = 0;
    while let Some(caps) = PHONE.captures_at(text, at) {
        let m = caps.get(0).expect("group 0 always matches");
        let international = caps.name("intl").is_some();
        if is_phone(text, m.range(), international) && !overlaps(found, &m.range()) {
            found.push(PiiMatch {
                kind: PiiKind::Phone,
                range: m.range(),
            });
            at = m.end();
        } else {
            // A shorter phone may start at a later group of a rejected candidate
            // (`2024-01-15 555-123-4567`): resume after this candidate's first group.
            let first_digit = m.as_str().find(|c: char| c.is_ascii_digit()).unwrap_or(0);
            let first_group_end = m.as_str()[first_digit..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(m.end(), |e| m.start() + first_digit + e);
            at = first_group_end.max(m.start() + 1);
        }
        if at >= text.len() {
            break;
        }
    }
}

fn is_phone(text: &str, range: Range<usize>, international: bool) -> bool {
    let candidate = &text[range.clone()];
    let groups = digit_groups(candidate, 0);
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let digits: usize = lens.iter().sum();
    if glued_before(text, range.start) || glued_after(text, range.end) {
        return false;
    }
    if international {
        return INTERNATIONAL_DIGITS.contains(&digits);
    }
    let numbering_of_another_kind = date_like(&lens)
        || thousands_like(&lens)
        || (ipv4_like(&lens) && candidate.contains('.'))
        || inside_card_like_run(text, range);
    NATIONAL_DIGITS.contains(&digits) && !numbering_of_another_kind
}

/// `2024-01-15 …`, `15.01.2024 …`: year, month and day first.
fn date_like(lens: &[usize]) -> bool {
    let short = |l: usize| (1..=2).contains(&l);
    match lens {
        [4, m, d, ..] => short(*m) && short(*d),
        [d, m, 4, ..] => short(*d) && short(*m),
        _ => false,
    }
}

/// `100 200 300`, `1 000 000 000`: every group after the first has three digits.
fn thousands_like(lens: &[usize]) -> bool {
    lens.len() >= 3 && lens[0] <= 3 && lens[1..].iter().all(|&l| l == 3)
}

/// `172.16.254.10`: four groups of at most three digits.
fn ipv4_like(lens: &[usize]) -> bool {
    lens.len() == 4 && lens.iter().all(|&l| l <= 3)
}

/// Part of a longer run printed like a card that failed Luhn (`4111 1111 1111 1112`):
/// a random number, not a phone.
fn inside_card_like_run(text: &str, range: Range<usize>) -> bool {
    let bytes = text.as_bytes();
    let (mut start, mut end) = (range.start, range.end);
    while start >= 2 && matches!(bytes[start - 1], b' ' | b'-') && bytes[start - 2].is_ascii_digit()
    {
        start -= 1;
        while start > 0 && bytes[start - 1].is_ascii_digit() {
            start -= 1;
        }
    }
    while end + 1 < bytes.len()
        && matches!(bytes[end], b' ' | b'-')
        && bytes[end + 1].is_ascii_digit()
    {
        end += 1;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
    }
    if (start, end) == (range.start, range.end) {
        return false;
    }
    let lens: Vec<usize> = digit_groups(&text[start..end], 0)
        .iter()
        .map(|g| g.len())
        .collect();
    let digits: usize = lens.iter().sum();
    CARD_DIGITS.contains(&digits) && lens.len() > 1 && card_layout(&lens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds(text: &str) -> Vec<PiiKind> {
        find(text).into_iter().map(|m| m.kind).collect()
    }

    #[test]
    fn finds_what_is_personal_data() {
        use PiiKind::*;
        let cases: &[(&str, &[PiiKind])] = &[
            ("write to john.doe@example.com.", &[Email]),
            ("(jane+tag@mail.example.co.uk), thanks", &[Email]),
            ("<a@b.io>", &[Email]),
            ("card 4111 1111 1111 1111 thanks", &[Card]),
            ("4111-1111-1111-1111", &[Card]),
            ("4111111111111111", &[Card]),
            ("amex 3782 822463 10005.", &[Card]),
            ("qty 2 4111 1111 1111 1111", &[Card]),
            ("+44 20 7946 0958", &[Phone]),
            ("+1 (555) 123-4567", &[Phone]),
            ("+14155552671", &[Phone]),
            ("call (555) 123-4567 today", &[Phone]),
            ("555-123-4567", &[Phone]),
            ("555.123.4567", &[Phone]),
            ("020 7946 0958", &[Phone]),
            ("01 23 45 67 89", &[Phone]),
            ("on 2024-01-15 555-123-4567 called", &[Phone]),
            (
                "me@x.org, 555-123-4567 or 4111 1111 1111 1111",
                &[Email, Phone, Card],
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&kinds(text), expected, "in {text:?}");
        }
    }

    #[test]
    fn leaves_numbers_that_are_not_personal_data() {
        let cases = [
            "in 2024 I rated it 5 of 5",
            "order 123456789 arrived",
            "id 4111111111111112 fails Luhn",
            "4111 1111 1111 1112",
            "released 2024-01-15",
            "on 15.01.2024 at noon",
            "at 2024-01-15 12:30",
            "version 1.2.3 and 10.0.19045",
            "ip 192.168.100.200 and 172.16.254.10",
            "it cost 100 200 300 in total",
            "user@localhost is no address",
            "rated 5 5 5 5 5 5 5 5 5",
            "ticket ABC-555-123-4567",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
            "build 20240115123456789012 is long",
        ];
        for text in cases {
            assert_eq!(kinds(text), vec![], "in {text:?}");
            assert_eq!(redact(text).text, Cow::Borrowed(text));
        }
    }

    #[test]
    fn luhn_check_matches_known_numbers() {
        assert!(luhn_valid("4111 1111 1111 1111"));
        assert!(luhn_valid("378282246310005"));
        assert!(luhn_valid("5555-5555-5555-4444"));
        assert!(!luhn_valid("4111 1111 1111 1112"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn redaction_replaces_each_match_with_its_token_and_counts_it() {
        let r = redact("mail a@b.co or c@d.io, call +44 20 7946 0958, pay 4111111111111111");
        assert_eq!(r.text, "mail [email] or [email], call [phone], pay [card]");
        assert_eq!(
            r.found,
            PiiCounts {
                email: 2,
                phone: 1,
                card: 1
            }
        );
        assert_eq!(r.found.to_string(), "2 email, 1 card, 1 phone");
    }

    #[test]
    fn item_text_and_tags_are_redacted_in_place() {
        let mut item = Item::new("u", chorus_protocol::Kind::Bug);
        item.text = "reach me at bob@example.com".into();
        item.tags = vec!["555-123-4567".into(), "ui".into()];
        let found = redact_item(&mut item);
        assert_eq!(item.text, "reach me at [email]");
        assert_eq!(item.tags, vec!["[phone]".to_string(), "ui".into()]);
        assert_eq!((found.email, found.phone, found.card), (1, 1, 0));
    }

    #[test]
    fn a_tag_that_grows_past_its_limit_is_cut_and_stays_clean() {
        let mut item = Item::new("u", chorus_protocol::Kind::Bug);
        // Nine 6-byte emails and separators: 62 bytes; each token adds one byte.
        item.tags = vec![["a@b.co"; 9].join(" ")];
        assert!(item.tags[0].len() <= MAX_TAG_BYTES);
        let found = redact_item(&mut item);
        assert_eq!(found.email, 9);
        assert!(item.tags[0].len() <= MAX_TAG_BYTES);
        assert!(find(&item.tags[0]).is_empty());
        assert_eq!(item.validate(), Ok(()));
    }

    fn luhn_card() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(0u8..10, 14),
            prop_oneof![Just(""), Just(" "), Just("-")],
        )
            .prop_map(|(body, sep)| {
                let mut digits: Vec<u8> = std::iter::once(4).chain(body).collect();
                digits.push(0);
                let s: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
                // Fix the check digit so the whole number passes Luhn.
                let check = (0..10u8)
                    .find(|c| luhn_valid(&format!("{}{}", &s[..15], c)))
                    .expect("one check digit fits");
                digits[15] = check;
                digits
                    .chunks(4)
                    .map(|c| c.iter().map(|d| char::from(b'0' + d)).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(sep)
            })
    }

    fn phone() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\+[1-9][0-9]{0,2} [0-9]{3} [0-9]{3} [0-9]{4}",
            "\\([2-9][0-9]{2}\\) [0-9]{3}-[0-9]{4}",
            "[2-9][0-9]{2}-[0-9]{3}-[0-9]{4}",
        ]
    }

    fn email() -> impl Strategy<Value = String> {
        "[a-z]{1,8}(\\.[a-z]{1,5})?@[a-z]{1,8}\\.(com|org|io)"
    }

    /// Text that by construction holds no PII: digit runs of at most 6, always with a
    /// letter between two of them, and no `@` or `+`.
    fn benign() -> impl Strategy<Value = String> {
        "([a-zA-Zé]{1,8}[ ,.!?-]{0,2}[0-9]{0,6}[ ,.!?]{0,2}){0,30}"
    }

    proptest! {
        #[test]
        fn text_without_pii_is_unchanged(text in benign()) {
            let r = redact(&text);
            prop_assert!(r.found.is_empty());
            prop_assert_eq!(r.text, Cow::Borrowed(text.as_str()));
        }

        #[test]
        fn redacted_text_has_no_detectable_pii_and_redaction_is_idempotent(
            text in "[a-z0-9 .()+@-]{0,120}"
        ) {
            let once = redact(&text);
            prop_assert!(find(&once.text).is_empty(), "left PII in {:?}", once.text);
            let twice = redact(&once.text);
            prop_assert!(twice.found.is_empty());
            prop_assert_eq!(twice.text.as_ref(), once.text.as_ref());
        }

        #[test]
        fn planted_pii_is_removed_and_counted(
            words in proptest::collection::vec("[a-z]{1,8}", 1..6),
            cards in proptest::collection::vec(luhn_card(), 0..3),
            phones in proptest::collection::vec(phone(), 0..3),
            emails in proptest::collection::vec(email(), 0..3),
        ) {
            let planted: Vec<&String> = cards.iter().chain(&phones).chain(&emails).collect();
            let mut text = words.join(" ");
            for p in &planted {
                text.push_str(" and ");
                text.push_str(p);
            }
            let r = redact(&text);
            for p in &planted {
                prop_assert!(!r.text.contains(p.as_str()), "{p:?} left in {:?}", r.text);
            }
            prop_assert_eq!(r.found.card as usize, cards.len());
            prop_assert_eq!(r.found.phone as usize, phones.len());
            prop_assert_eq!(r.found.email as usize, emails.len());
        }
    }
}
