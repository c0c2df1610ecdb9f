//! Typed units for config values. A duration key takes an integer in the unit its name
//! ends with (`_ms`, `_secs`) or a string with a unit (`"30s"`, `"250ms"`, `"5m"`,
//! `"1h 30m"`); a size key takes an integer in its unit (`_bytes`, `_mib`) or a string
//! with a unit (`"64KiB"`, `"256MiB"`, `"1GiB"`, `"4096"`). Either way the value is kept
//! in the key's unit, so configs written before units existed load unchanged.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// The unit a key's integer is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds (`*_ms`).
    Millis,
    /// Seconds (`*_secs`).
    Secs,
    /// Bytes (`*_bytes`, `*_bytes_per_sec`).
    Bytes,
    /// Mebibytes (`*_mib`).
    Mib,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Secs => "seconds",
            Unit::Bytes => "bytes",
            Unit::Mib => "MiB",
        }
    }

    fn is_duration(self) -> bool {
        matches!(self, Unit::Millis | Unit::Secs)
    }
}

/// Why a value with a unit was refused; the deserializer adds the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a number with a unit of the right kind.
    #[error("{text:?} is not a {kind}: {reason}")]
    Malformed {
        /// The text as written.
        text: String,
        /// `duration` or `size`.
        kind: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The value is not a whole number of the key's unit (e.g. `"1500ms"` for a key in
    /// seconds).
    #[error("{text:?} is not a whole number of {unit}")]
    NotWhole {
        /// The text as written.
        text: String,
        /// The key's unit.
        unit: &'static str,
    },
    /// The value does not fit the key's integer type.
    #[error("{text:?} is too large")]
    TooLarge {
        /// The text as written.
        text: String,
    },
}

/// Size units, in bytes; binary (`KiB`) and decimal (`KB`), matched without case.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Parses a duration with a unit: `"30s"`, `"250ms"`, `"5m"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(text.trim()).map_err(|e| UnitError::Malformed {
        text: text.into(),
        kind: "duration",
        reason: e.to_string(),
    })
}

/// Parses a size: a whole number of bytes, or one with a unit (`"64KiB"`, `"256 MiB"`,
/// `"1GB"`).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let malformed = |reason: &str| UnitError::Malformed {
        text: text.into(),
        kind: "size",
        reason: reason.into(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(malformed("expected a whole number, e.g. 64KiB"));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| UnitError::TooLarge { text: text.into() })?;
    let unit = unit.trim();
    let factor = if unit.is_empty() {
        1
    } else {
        SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|&(_, factor)| factor)
            .ok_or_else(|| malformed("unknown unit; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"))?
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| UnitError::TooLarge { text: text.into() })
}

/// The value of `text` in `unit`, exactly.
pub fn parse_in(text: &str, unit: Unit) -> Result<u64, UnitError> {
    let not_whole = || UnitError::NotWhole {
        text: text.into(),
        unit: unit.name(),
    };
    let (amount, per_unit): (u128, u128) = match unit {
        Unit::Millis => (parse_duration(text)?.as_nanos(), 1_000_000),
        Unit::Secs => (parse_duration(text)?.as_nanos(), 1_000_000_000),
        Unit::Bytes => (parse_size(text)?.into(), 1),
        Unit::Mib => (parse_size(text)?.into(), 1 << 20),
    };
    if amount % per_unit != 0 {
        return Err(not_whole());
    }
    u64::try_from(amount / per_unit).map_err(|_| UnitError::TooLarge { text: text.into() })
}

/// Reads an integer in `unit`, or a string with a unit converted to it.
struct InUnit<T> {
    unit: Unit,
    target: PhantomData<T>,
}

impl<T: TryFrom<u64>> InUnit<T> {
    fn fit<E: de::Error>(&self, value: u64, text: impl FnOnce() -> String) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::custom(UnitError::TooLarge { text: text() }))
    }
}

impl<T: TryFrom<u64>> Visitor<'_> for InUnit<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.unit.is_duration() {
            write!(
                f,
                "an integer in {} or a duration such as \"30s\" or \"250ms\"",
                self.unit.name()
            )
        } else {
            write!(
                f,
                "an integer in {} or a size such as \"64KiB\" or \"256MiB\"",
                self.unit.name()
            )
        }
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        self.fit(value, || value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        let positive = u64::try_from(value)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(value), &self))?;
        self.visit_u64(positive)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        let value = parse_in(text, self.unit).map_err(E::custom)?;
        self.fit(value, || text.to_string())
    }
}

fn in_unit<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D, unit: Unit) -> Result<T, D::Error> {
    d.deserialize_any(InUnit {
        unit,
        target: PhantomData,
    })
}

/// `deserialize_with` for a key in milliseconds.
pub fn millis<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    in_unit(d, Unit::Millis)
}

/// `deserialize_with` for a key in seconds.
pub fn secs<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    in_unit(d, Unit::Secs)
}

/// `deserialize_with` for a key in bytes.
pub fn bytes<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    in_unit(d, Unit::Bytes)
}

/// `deserialize_with` for a key in MiB.
pub fn mib<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    in_unit(d, Unit::Mib)
}

/// `deserialize_with` for an optional key in milliseconds.
pub fn opt_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    millis(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_into_the_keys_unit() {
        let cases: &[(&str, Unit, u64)] = &[
            ("30s", Unit::Secs, 30),
            ("5m", Unit::Secs, 300),
            ("1h 30m", Unit::Secs, 5_400),
            ("250ms", Unit::Millis, 250),
            ("2s", Unit::Millis, 2_000),
            ("5m", Unit::Millis, 300_000),
            (" 10s ", Unit::Millis, 10_000),
        ];
        for &(text, unit, want) in cases {
            assert_eq!(parse_in(text, unit), Ok(want), "{text}");
        }
    }

    #[test]
    fn sizes_convert_into_the_keys_unit() {
        let cases: &[(&str, Unit, u64)] = &[
            ("4096", Unit::Bytes, 4_096),
            ("64KiB", Unit::Bytes, 65_536),
            ("256MiB", Unit::Bytes, 256 << 20),
            ("1 GiB", Unit::Bytes, 1 << 30),
            ("2kb", Unit::Bytes, 2_000),
            ("1MB", Unit::Bytes, 1_000_000),
            ("512B", Unit::Bytes, 512),
            ("256MiB", Unit::Mib, 256),
            ("1GiB", Unit::Mib, 1_024),
        ];
        for &(text, unit, want) in cases {
            assert_eq!(parse_in(text, unit), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_units_are_refused_with_the_reason() {
        let malformed: &[(&str, Unit)] = &[
            ("30 parsecs", Unit::Secs),
            ("fast", Unit::Millis),
            ("", Unit::Millis),
            ("64KiBs", Unit::Bytes),
            ("MiB", Unit::Bytes),
            ("1.5GiB", Unit::Bytes),
            ("-1KiB", Unit::Bytes),
            ("30s", Unit::Bytes),
        ];
        for &(text, unit) in malformed {
            let err = parse_in(text, unit).unwrap_err();
            assert!(matches!(err, UnitError::Malformed { .. }), "{text}: {err}");
        }
        assert!(matches!(
            parse_in("1500ms", Unit::Secs),
            Err(UnitError::NotWhole { .. })
        ));
        assert!(matches!(
            parse_in("1KiB", Unit::Mib),
            Err(UnitError::NotWhole { .. })
        ));
        assert!(matches!(
            parse_in("99999999999TiB", Unit::Bytes),
            Err(UnitError::TooLarge { .. })
        ));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        #[serde(deserialize_with = "millis")]
        timeout_ms: u64,
        #[serde(deserialize_with = "bytes")]
        window_bytes: u32,
    }

    fn sample(text: &str) -> Result<Sample, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn a_key_takes_an_integer_in_its_unit_or_a_string_with_a_unit() {
        let plain = sample("timeout_ms = 1500\nwindow_bytes = 4096").unwrap();
        assert_eq!((plain.timeout_ms, plain.window_bytes), (1_500, 4_096));
        let typed = sample("timeout_ms = \"1s 500ms\"\nwindow_bytes = \"4KiB\"").unwrap();
        assert_eq!((typed.timeout_ms, typed.window_bytes), (1_500, 4_096));
        let err = sample("timeout_ms = \"soon\"\nwindow_bytes = 1").unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
        let err = sample("timeout_ms = 1\nwindow_bytes = \"8GiB\"").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = sample("timeout_ms = -5\nwindow_bytes = 1").unwrap_err();
        assert!(err.contains("an integer in milliseconds"), "{err}");
    }
}
