//! The feedback item: what a client submits, and the schema limits it must respect.

use std::fmt;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};

use crate::bounded::{decode_bytes, decode_vec, too_many};
use crate::error::ErrorCode;

/// Longest `user_id`, in bytes of UTF-8.
pub const MAX_USER_ID_BYTES: usize = 128;
/// Longest `text`, in bytes of UTF-8 (8 KiB).
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Most tags on one item.
pub const MAX_TAGS: usize = 16;
/// Longest tag, in bytes of UTF-8.
pub const MAX_TAG_BYTES: usize = 64;
/// Longest function name, in bytes.
/// Longest function name an item may give.
pub const MAX_FUNCTION_NAME_BYTES: usize = 128;
/// Longest function version, in bytes.
/// Longest function version an item may give.
pub const MAX_FUNCTION_VERSION_BYTES: usize = 64;

/// Where a partition hint starts in an id: a 16-bit marker and 16 partition bits at the
/// top of the ULID's 80 random bits (48 stay random).
const PARTITION_SHIFT: u32 = 80 - 32;
/// The marker of an id that carries its partition.
const PARTITION_MARKER: u16 = 0xC5A7;
/// The marker and partition bits.
const HINT_MASK: u128 = ((1u128 << 32) - 1) << PARTITION_SHIFT;

/// A client-generated item id: a ULID (128 bits), shown in its 26-character form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct ItemId(pub u128);

impl ItemId {
    /// A fresh ULID, strictly increasing within this process (ids made in the same
    /// millisecond still sort in the order they were made), that never carries a
    /// partition hint.
    pub fn generate() -> Self {
        static GENERATOR: std::sync::Mutex<ulid::Generator> =
            std::sync::Mutex::new(ulid::Generator::new());
        let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        // Overflow needs 2^80 ids in one millisecond; fall back to a random one.
        let raw = generator.generate().unwrap_or_else(|_| ulid::Ulid::new()).0;
        ItemId(raw).without_hint()
    }

    /// This id, with a marker bit flipped if it carries the marker by chance (one
    /// random id in 65,536), so that only `for_partition` makes a hint (a node refuses
    /// a hint that names another partition than its user's).
    fn without_hint(self) -> Self {
        match self.partition_hint() {
            Some(_) => ItemId(self.0 ^ 1u128 << (PARTITION_SHIFT + 16)),
            None => self,
        }
    }

    /// A fresh ULID that names the partition its item belongs to, so that a read by id
    /// goes to that partition's owner instead of asking every member. The partition
    /// sits in the top of the ULID's random part, behind a marker byte; the rest stays
    /// random and the time prefix is untouched, so ids still sort by time.
    pub fn for_partition(partition: crate::PartitionId) -> Self {
        let ItemId(raw) = ItemId::generate();
        let tagged =
            (u128::from(PARTITION_MARKER) << 16 | u128::from(partition)) << PARTITION_SHIFT;
        ItemId(raw & !HINT_MASK | tagged)
    }

    /// The partition this id names, if it was made by [`ItemId::for_partition`]. An id
    /// made elsewhere may carry the marker by chance (1 in 65,536 random ULIDs); a node
    /// refuses to store one that names another partition than its user's, so every
    /// stored item with a hint is in the partition it names.
    pub fn partition_hint(self) -> Option<crate::PartitionId> {
        let hint = (self.0 & HINT_MASK) >> PARTITION_SHIFT;
        ((hint >> 16) as u16 == PARTITION_MARKER).then_some(hint as u16)
    }

    /// The id as 16 big-endian bytes: sorts like the ULID (by time first).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id from 16 big-endian bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        ItemId(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ulid::Ulid(self.0), f)
    }
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemId({self})")
    }
}

impl FromStr for ItemId {
    type Err = ErrorCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(|u| ItemId(u.0))
            .map_err(|e| ErrorCode::invalid("id", format!("not a ULID: {e}")))
    }
}

/// What the feedback is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum Kind {
    /// A rating, usually with `rating` set.
    Rating,
    /// Free text.
    Text,
    /// A bug report.
    Bug,
    /// A feature request.
    Feature,
    /// A performance complaint or measurement.
    Performance,
    /// An error the user saw.
    Error,
    /// Feedback about the user's own account or data.
    User,
    /// Feedback emitted by a system rather than a person.
    System,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 8] = [
        Kind::Rating,
        Kind::Text,
        Kind::Bug,
        Kind::Feature,
        Kind::Performance,
        Kind::Error,
        Kind::User,
        Kind::System,
    ];

    /// The lowercase name used by the CLI and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rating => "rating",
            Kind::Text => "text",
            Kind::Bug => "bug",
            Kind::Feature => "feature",
            Kind::Performance => "performance",
            Kind::Error => "error",
            Kind::User => "user",
            Kind::System => "system",
        }
    }
}

impl FromStr for Kind {
    type Err = ErrorCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ErrorCode::invalid("kind", format!("unknown kind {s:?}")))
    }
}

/// The service tier an item asks for: its latency budget and its priority under load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum Tier {
    /// 100 ms budget; never shed.
    Realtime,
    /// 1 s budget.
    Priority,
    /// 10 s budget; the default.
    #[default]
    Standard,
    /// 60 s budget; shed first.
    Batch,
}

impl Tier {
    /// Every tier, most urgent first.
    pub const ALL: [Tier; 4] = [Tier::Realtime, Tier::Priority, Tier::Standard, Tier::Batch];

    /// The tier a submission is served at: that of its most urgent item, or `None` for
    /// an empty one. The one place that says how a batch's tier is chosen.
    pub fn most_urgent(tiers: impl IntoIterator<Item = Tier>) -> Option<Tier> {
        tiers.into_iter().min()
    }

    /// The lowercase name used by the CLI and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Realtime => "realtime",
            Tier::Priority => "priority",
            Tier::Standard => "standard",
            Tier::Batch => "batch",
        }
    }
}

impl FromStr for Tier {
    type Err = ErrorCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ErrorCode::invalid("tier", format!("unknown tier {s:?}")))
    }
}

/// The versioned function a piece of feedback is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Encode)]
pub struct FunctionRef {
    /// The function's name, 1..=128 bytes.
    pub name: String,
    /// Its version, 1..=64 bytes.
    pub version: String,
}

impl FunctionRef {
    /// Whether the name and version are within their bounds.
    pub fn validate(&self) -> Result<(), ErrorCode> {
        check_len("function.name", &self.name, 1, MAX_FUNCTION_NAME_BYTES)?;
        check_len(
            "function.version",
            &self.version,
            1,
            MAX_FUNCTION_VERSION_BYTES,
        )
    }
}

/// Execution metrics reported with the feedback.
#[derive(Clone, Copy, Debug, PartialEq, Encode, Decode)]
pub struct ExecutionMetrics {
    /// Fraction of successful calls, 0.0..=1.0.
    pub success_rate: f64,
    /// Mean call duration in milliseconds, >= 0.
    pub avg_duration_ms: f64,
    /// Fraction of failed calls, 0.0..=1.0.
    pub error_rate: f64,
}

/// One piece of user feedback as submitted by a client.
#[derive(Clone, Debug, PartialEq, Encode)]
pub struct Item {
    /// Client-generated ULID; resubmitting it returns the first receipt.
    pub id: ItemId,
    /// The user it comes from, 1..=128 bytes of UTF-8; the shard key.
    pub user_id: String,
    /// What it is.
    pub kind: Kind,
    /// Optional rating, 1..=5.
    pub rating: Option<u8>,
    /// Free text, up to 8 KiB of UTF-8.
    pub text: String,
    /// Up to 16 tags of 1..=64 bytes each.
    pub tags: Vec<String>,
    /// Requested service tier.
    pub tier: Tier,
    /// The function the feedback is about, if any.
    pub function: Option<FunctionRef>,
    /// Execution metrics of that function, if reported.
    pub metrics: Option<ExecutionMetrics>,
    /// Client timestamp, milliseconds since the Unix epoch.
    pub client_ts: u64,
}

impl Item {
    /// A new item with a fresh id, the standard tier and no optional fields.
    pub fn new(user_id: impl Into<String>, kind: Kind) -> Self {
        Item {
            id: ItemId::generate(),
            user_id: user_id.into(),
            kind,
            rating: None,
            text: String::new(),
            tags: Vec::new(),
            tier: Tier::default(),
            function: None,
            metrics: None,
            client_ts: now_ms(),
        }
    }

    /// Checks the schema limits; the first violation is returned as `Invalid{field, reason}`.
    pub fn validate(&self) -> Result<(), ErrorCode> {
        check_len("user_id", &self.user_id, 1, MAX_USER_ID_BYTES)?;
        if let Some(r) = self.rating
            && !(1..=5).contains(&r)
        {
            return Err(ErrorCode::invalid(
                "rating",
                format!("{r} is outside 1..=5"),
            ));
        }
        check_len("text", &self.text, 0, MAX_TEXT_BYTES)?;
        if self.tags.len() > MAX_TAGS {
            return Err(ErrorCode::invalid(
                "tags",
                format!("{} tags, at most {MAX_TAGS} allowed", self.tags.len()),
            ));
        }
        for tag in &self.tags {
            check_len("tags", tag, 1, MAX_TAG_BYTES)?;
        }
        if let Some(f) = &self.function {
            f.validate()?;
        }
        if let Some(m) = &self.metrics {
            check_fraction("metrics.success_rate", m.success_rate)?;
            check_fraction("metrics.error_rate", m.error_rate)?;
            if !(m.avg_duration_ms.is_finite() && m.avg_duration_ms >= 0.0) {
                return Err(ErrorCode::invalid(
                    "metrics.avg_duration_ms",
                    "must be a finite number >= 0",
                ));
            }
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, by the local clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), ErrorCode> {
    let len = value.len();
    if len < min || len > max {
        return Err(ErrorCode::invalid(
            field,
            format!("{len} bytes, must be {min}..={max}"),
        ));
    }
    Ok(())
}

fn check_fraction(field: &str, value: f64) -> Result<(), ErrorCode> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ErrorCode::invalid(
            field,
            format!("{value} is outside 0.0..=1.0"),
        ))
    }
}

/// Decodes a UTF-8 string; invalid UTF-8 becomes `DecodeError::Other(field)` so that the
/// server can answer `Invalid{field}` instead of a bare decode failure.
fn decode_utf8<D: Decoder>(decoder: &mut D, field: &'static str) -> Result<String, DecodeError> {
    let bytes = Vec::<u8>::decode(decoder)?;
    String::from_utf8(bytes).map_err(|_| DecodeError::Other(field))
}

impl<Context> Decode<Context> for FunctionRef {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(FunctionRef {
            name: decode_utf8(decoder, "function.name")?,
            version: decode_utf8(decoder, "function.version")?,
        })
    }
}
bincode::impl_borrow_decode!(FunctionRef);

impl<Context> Decode<Context> for Item {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let id = ItemId::decode(decoder)?;
        let user_id = decode_utf8(decoder, "user_id")?;
        let kind = Kind::decode(decoder)?;
        let rating = Option::<u8>::decode(decoder)?;
        let text = decode_utf8(decoder, "text")?;
        let tags = decode_vec(
            decoder,
            MAX_TAGS,
            |n| too_many("tags", format!("{n} tags, at most {MAX_TAGS} allowed")),
            |d| {
                let tag = decode_bytes(d, MAX_TAG_BYTES, |n| {
                    too_many("tags", format!("{n} bytes, at most {MAX_TAG_BYTES}"))
                })?;
                String::from_utf8(tag).map_err(|_| DecodeError::Other("tags"))
            },
        )?;
        Ok(Item {
            id,
            user_id,
            kind,
            rating,
            text,
            tags,
            tier: Tier::decode(decoder)?,
            function: Option::<FunctionRef>::decode(decoder)?,
            metrics: Option::<ExecutionMetrics>::decode(decoder)?,
            client_ts: u64::decode(decoder)?,
        })
    }
}
bincode::impl_borrow_decode!(Item);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_partition_and_keeps_its_time() {
        for partition in [0u16, 1, 688, 1023, u16::MAX] {
            let before = ItemId::generate();
            let id = ItemId::for_partition(partition);
            assert_eq!(id.partition_hint(), Some(partition));
            // The 48-bit time prefix is the generator's.
            assert!(id.0 >> 80 >= before.0 >> 80);
        }
        let a = ItemId::for_partition(5);
        let b = ItemId::for_partition(5);
        assert_ne!(a, b, "the rest of the random part stays random");
    }

    #[test]
    fn an_id_without_the_marker_has_no_hint() {
        let plain = ItemId(0x0190_0000_0000_1234_5678_9abc_def0_1234);
        assert_eq!(plain.partition_hint(), None);
        let marked = ItemId(plain.0 & !HINT_MASK | (0xC5A7u128 << 16 | 7) << PARTITION_SHIFT);
        assert_eq!(marked.partition_hint(), Some(7));
    }

    #[test]
    fn a_random_id_that_carries_the_marker_by_chance_loses_it() {
        let marked = ItemId::for_partition(9);
        let plain = marked.without_hint();
        assert_eq!(plain.partition_hint(), None);
        assert_eq!(plain.0 >> 80, marked.0 >> 80, "the time is kept");
        assert_eq!(ItemId::generate().without_hint().partition_hint(), None);
    }

    fn valid() -> Item {
        Item::new("user-1", Kind::Text)
    }

    #[test]
    fn a_plain_item_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn each_limit_names_its_field() {
        type Mutation = Box<dyn Fn(&mut Item)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("user_id", Box::new(|i| i.user_id.clear())),
            ("user_id", Box::new(|i| i.user_id = "u".repeat(129))),
            ("rating", Box::new(|i| i.rating = Some(9))),
            ("rating", Box::new(|i| i.rating = Some(0))),
            (
                "text",
                Box::new(|i| i.text = "x".repeat(MAX_TEXT_BYTES + 1)),
            ),
            ("tags", Box::new(|i| i.tags = vec!["t".into(); 17])),
            ("tags", Box::new(|i| i.tags = vec![String::new()])),
            (
                "function.name",
                Box::new(|i| {
                    i.function = Some(FunctionRef {
                        name: String::new(),
                        version: "1".into(),
                    })
                }),
            ),
            (
                "metrics.error_rate",
                Box::new(|i| {
                    i.metrics = Some(ExecutionMetrics {
                        success_rate: 0.5,
                        avg_duration_ms: 1.0,
                        error_rate: f64::NAN,
                    })
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut item = valid();
            mutate(&mut item);
            match item.validate() {
                Err(ErrorCode::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected Invalid{{{field}}}, got {other:?}"),
            }
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let mut item = valid();
        item.user_id = "u".repeat(MAX_USER_ID_BYTES);
        item.text = "x".repeat(MAX_TEXT_BYTES);
        item.tags = vec!["t".repeat(MAX_TAG_BYTES); MAX_TAGS];
        item.rating = Some(5);
        assert_eq!(item.validate(), Ok(()));
    }

    #[test]
    fn ids_print_and_parse_as_ulids() {
        let id = ItemId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<ItemId>(), Ok(id));
        assert!("not-a-ulid".parse::<ItemId>().is_err());
    }

    #[test]
    fn generated_ids_increase() {
        let ids: Vec<ItemId> = (0..1000).map(|_| ItemId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
