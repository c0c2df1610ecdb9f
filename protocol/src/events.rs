//! Events: what happened to the things feedback is about, recorded in order and held
//! by every member of the cluster.
//!
//! The node that records an event (its *origin*) numbers it: an origin's sequence
//! starts at 1 and has no gaps. A reader's place in the whole cluster's events is then
//! one number per origin, an [`EventCursor`]; any member holds each origin's events as
//! a prefix without gaps, so resuming from a cursor, at any member and after any
//! reconnect, skips nothing and repeats nothing. Listings by time use an
//! [`EventPosition`] (time, origin, sequence) as their page token instead.

use std::fmt;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};

use crate::bounded::{decode_vec, too_many};
use crate::error::ErrorCode;
use crate::item::{FunctionRef, ItemId};
use crate::message::UpdateReasons;
use crate::receipt::NodeId;

/// Most events one page or one follow answer holds.
pub const MAX_EVENTS_PAGE: u32 = 1000;
/// Most origins a cursor names: far above any cluster's count of members.
pub const MAX_EVENT_ORIGINS: usize = 4096;
/// Longest a follow request may wait for a new event, in milliseconds.
pub const MAX_EVENT_WAIT_MS: u32 = 30_000;
/// Longest `by` (the key id or operator that caused an event), in bytes.
pub const MAX_EVENT_ACTOR_BYTES: usize = 64;
/// Most reasons an `item_flagged` event carries.
pub const MAX_EVENT_REASONS: usize = 16;

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct Event {
    /// The node that recorded it.
    pub origin: NodeId,
    /// Its number at the origin, from 1, without gaps.
    pub seq: u64,
    /// When it was recorded, milliseconds since the Unix epoch (the origin's clock).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// Its place in a listing by time.
    pub fn position(&self) -> EventPosition {
        EventPosition {
            at_ms: self.at_ms,
            origin: self.origin.clone(),
            seq: self.seq,
        }
    }

    /// Its type.
    pub fn event_type(&self) -> EventType {
        self.kind.event_type()
    }
}

/// What an event says happened.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum EventKind {
    /// A version's feedback crossed the configured thresholds.
    RequiresUpdate {
        /// The function and version.
        function: FunctionRef,
        /// Which thresholds it crossed.
        reasons: UpdateReasons,
    },
    /// A version that required an update no longer crosses any threshold.
    UpdateCleared {
        /// The function and version.
        function: FunctionRef,
    },
    /// An operator deprecated a version.
    VersionDeprecated {
        /// The function and version.
        function: FunctionRef,
        /// Who did it.
        by: String,
    },
    /// An operator made a deprecated version active again.
    VersionActivated {
        /// The function and version.
        function: FunctionRef,
        /// Who did it.
        by: String,
    },
    /// An operator named a function's current version.
    CurrentVersion {
        /// The function and its new current version.
        function: FunctionRef,
        /// Who did it.
        by: String,
    },
    /// Validation flagged an item for review.
    ItemFlagged {
        /// The item.
        item: ItemId,
        /// Its user.
        user_id: String,
        /// Why it was flagged.
        reasons: Vec<String>,
    },
    /// A reviewer decided on a flagged item.
    ItemReviewed {
        /// The item.
        item: ItemId,
        /// Its user.
        user_id: String,
        /// Approved (accepted) or rejected.
        approved: bool,
        /// Who decided.
        by: String,
    },
    /// Every item of a user was exported.
    UserExported {
        /// The user.
        user_id: String,
        /// How many items the export held.
        items: u64,
        /// Who asked.
        by: String,
    },
    /// Every item of a user was deleted.
    UserDeleted {
        /// The user.
        user_id: String,
        /// How many items were deleted.
        items: u64,
        /// Who asked.
        by: String,
    },
    /// A key spent some of its privacy budget on a differentially private insight.
    PrivacySpent {
        /// The key's id.
        key_id: String,
        /// The ε spent.
        epsilon: f64,
    },
}

impl EventKind {
    /// Its type.
    pub fn event_type(&self) -> EventType {
        match self {
            EventKind::RequiresUpdate { .. } => EventType::RequiresUpdate,
            EventKind::UpdateCleared { .. } => EventType::UpdateCleared,
            EventKind::VersionDeprecated { .. } => EventType::VersionDeprecated,
            EventKind::VersionActivated { .. } => EventType::VersionActivated,
            EventKind::CurrentVersion { .. } => EventType::CurrentVersion,
            EventKind::ItemFlagged { .. } => EventType::ItemFlagged,
            EventKind::ItemReviewed { .. } => EventType::ItemReviewed,
            EventKind::UserExported { .. } => EventType::UserExported,
            EventKind::UserDeleted { .. } => EventType::UserDeleted,
            EventKind::PrivacySpent { .. } => EventType::PrivacySpent,
        }
    }

    /// Whether every field is within its bound (the store checks before it records).
    pub fn validate(&self) -> Result<(), ErrorCode> {
        let actor = |by: &str| check_len("by", by, MAX_EVENT_ACTOR_BYTES);
        let user = |user_id: &str| check_len("user_id", user_id, crate::MAX_USER_ID_BYTES);
        match self {
            EventKind::RequiresUpdate { function, .. } | EventKind::UpdateCleared { function } => {
                function.validate()
            }
            EventKind::VersionDeprecated { function, by }
            | EventKind::VersionActivated { function, by }
            | EventKind::CurrentVersion { function, by } => {
                function.validate()?;
                actor(by)
            }
            EventKind::ItemFlagged {
                user_id, reasons, ..
            } => {
                user(user_id)?;
                if reasons.len() > MAX_EVENT_REASONS {
                    return Err(ErrorCode::invalid(
                        "reasons",
                        format!("{} reasons, at most {MAX_EVENT_REASONS}", reasons.len()),
                    ));
                }
                Ok(())
            }
            EventKind::ItemReviewed { user_id, by, .. }
            | EventKind::UserExported { user_id, by, .. }
            | EventKind::UserDeleted { user_id, by, .. } => {
                user(user_id)?;
                actor(by)
            }
            EventKind::PrivacySpent { key_id, epsilon } => {
                actor(key_id)?;
                if !(epsilon.is_finite() && *epsilon > 0.0) {
                    return Err(ErrorCode::invalid(
                        "epsilon",
                        format!("{epsilon} is not a positive number"),
                    ));
                }
                Ok(())
            }
        }
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), ErrorCode> {
    if value.len() > max {
        return Err(ErrorCode::invalid(
            field,
            format!("{} bytes, at most {max}", value.len()),
        ));
    }
    Ok(())
}

/// The types of event, as filters name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// [`EventKind::RequiresUpdate`].
    RequiresUpdate,
    /// [`EventKind::UpdateCleared`].
    UpdateCleared,
    /// [`EventKind::VersionDeprecated`].
    VersionDeprecated,
    /// [`EventKind::VersionActivated`].
    VersionActivated,
    /// [`EventKind::CurrentVersion`].
    CurrentVersion,
    /// [`EventKind::ItemFlagged`].
    ItemFlagged,
    /// [`EventKind::ItemReviewed`].
    ItemReviewed,
    /// [`EventKind::UserExported`].
    UserExported,
    /// [`EventKind::UserDeleted`].
    UserDeleted,
    /// [`EventKind::PrivacySpent`].
    PrivacySpent,
}

impl EventType {
    /// Every type, in declaration order.
    pub const ALL: [EventType; 10] = [
        EventType::RequiresUpdate,
        EventType::UpdateCleared,
        EventType::VersionDeprecated,
        EventType::VersionActivated,
        EventType::CurrentVersion,
        EventType::ItemFlagged,
        EventType::ItemReviewed,
        EventType::UserExported,
        EventType::UserDeleted,
        EventType::PrivacySpent,
    ];

    /// The snake_case name the CLI and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RequiresUpdate => "requires_update",
            EventType::UpdateCleared => "update_cleared",
            EventType::VersionDeprecated => "version_deprecated",
            EventType::VersionActivated => "version_activated",
            EventType::CurrentVersion => "current_version",
            EventType::ItemFlagged => "item_flagged",
            EventType::ItemReviewed => "item_reviewed",
            EventType::UserExported => "user_exported",
            EventType::UserDeleted => "user_deleted",
            EventType::PrivacySpent => "privacy_spent",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = ErrorCode;
    fn from_str(s: &str) -> Result<Self, ErrorCode> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                ErrorCode::invalid(
                    "type",
                    format!("unknown event type {s:?} ({})", names.join(", ")),
                )
            })
    }
}

/// A set of event types: which a listing or a follow wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct EventTypes(u32);

impl EventTypes {
    /// Every type.
    pub fn all() -> Self {
        EventType::ALL.into_iter().collect()
    }

    /// Whether `event_type` is in the set.
    pub fn contains(self, event_type: EventType) -> bool {
        self.0 & event_type.bit() != 0
    }

    /// Whether the set names no type, or a type this version does not know.
    pub fn validate(self) -> Result<(), ErrorCode> {
        let known = EventTypes::all().0;
        if self.0 == 0 || self.0 & !known != 0 {
            return Err(ErrorCode::invalid(
                "types",
                format!("{:#x} names no known event type", self.0),
            ));
        }
        Ok(())
    }
}

impl FromIterator<EventType> for EventTypes {
    fn from_iter<I: IntoIterator<Item = EventType>>(types: I) -> Self {
        EventTypes(types.into_iter().fold(0, |mask, t| mask | t.bit()))
    }
}

/// An event's place in a listing by time: ordered by time, then origin, then sequence.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct EventPosition {
    /// When it was recorded.
    pub at_ms: u64,
    /// Its origin.
    pub origin: NodeId,
    /// Its number at the origin.
    pub seq: u64,
}

/// How far a follower has read: the last sequence seen of each origin, sorted by
/// origin, at most [`MAX_EVENT_ORIGINS`]. An origin not named is read from its start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode)]
pub struct EventCursor(pub Vec<(NodeId, u64)>);

impl EventCursor {
    /// The last sequence read of `origin` (0 when none).
    pub fn seen(&self, origin: &NodeId) -> u64 {
        self.0
            .binary_search_by(|(o, _)| o.cmp(origin))
            .map(|i| self.0[i].1)
            .unwrap_or(0)
    }

    /// Moves `origin` past `seq` (never back).
    pub fn advance(&mut self, origin: &NodeId, seq: u64) {
        match self.0.binary_search_by(|(o, _)| o.cmp(origin)) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(seq),
            Err(i) => self.0.insert(i, (origin.clone(), seq)),
        }
    }

    /// The cursor as text (the hex of its encoding), for a flag or a file.
    pub fn to_token(&self) -> String {
        crate::codec::encode_payload(self)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Reads a cursor [`EventCursor::to_token`] wrote; anything else is `Invalid`.
    pub fn from_token(token: &str) -> Result<EventCursor, ErrorCode> {
        let bad = |reason: &str| ErrorCode::invalid("cursor", reason.to_string());
        if !token.len().is_multiple_of(2) || !token.is_ascii() {
            return Err(bad("not a cursor token (hex digits in pairs)"));
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad("not a cursor token (hex digits in pairs)"))?;
        let cursor: EventCursor = crate::codec::decode_value(&bytes)
            .map_err(|e| bad(&format!("not a cursor token: {e}")))?;
        cursor.validate()?;
        Ok(cursor)
    }

    /// Whether the origins are sorted, unique and within the bound.
    pub fn validate(&self) -> Result<(), ErrorCode> {
        if self.0.len() > MAX_EVENT_ORIGINS {
            return Err(ErrorCode::invalid(
                "cursor",
                format!("{} origins, at most {MAX_EVENT_ORIGINS}", self.0.len()),
            ));
        }
        if self.0.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(ErrorCode::invalid(
                "cursor",
                "origins must be sorted and unique".to_string(),
            ));
        }
        Ok(())
    }
}

impl<Context> Decode<Context> for EventCursor {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        decode_vec(
            decoder,
            MAX_EVENT_ORIGINS,
            |n| {
                too_many(
                    "cursor",
                    format!("{n} origins, at most {MAX_EVENT_ORIGINS}"),
                )
            },
            <(NodeId, u64)>::decode,
        )
        .map(EventCursor)
    }
}
bincode::impl_borrow_decode!(EventCursor);

/// A list of events bounded by [`MAX_EVENTS_PAGE`] while decoding.
pub(crate) fn decode_events<D: Decoder>(decoder: &mut D) -> Result<Vec<Event>, DecodeError> {
    decode_vec(
        decoder,
        MAX_EVENTS_PAGE as usize,
        |n| too_many("events", format!("{n} events, at most {MAX_EVENTS_PAGE}")),
        Event::decode,
    )
}

/// Checks a page or follow limit: 1..=[`MAX_EVENTS_PAGE`].
pub fn check_events_limit(limit: u32) -> Result<(), ErrorCode> {
    if limit == 0 || limit > MAX_EVENTS_PAGE {
        return Err(ErrorCode::invalid(
            "limit",
            format!("{limit}, must be 1..={MAX_EVENTS_PAGE}"),
        ));
    }
    Ok(())
}

/// What an operator changes about a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum VersionChange {
    /// Mark it deprecated.
    Deprecate,
    /// Mark it active again.
    Activate,
    /// Make it the function's current version.
    MakeCurrent,
}

/// A function's status as the cluster's events set it.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct FunctionStatus {
    /// The function.
    pub name: String,
    /// Its current version, once an operator named one.
    pub current: Option<String>,
    /// Its deprecated versions, sorted.
    pub deprecated: Vec<String>,
    /// Its versions that require an update (by the last `requires_update` or
    /// `update_cleared` event of each), sorted.
    pub requires_update: Vec<String>,
}

#[cfg(test)]
mod tests;
