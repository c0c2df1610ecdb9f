//! The messages of the client protocol: the hello that opens a connection, then
//! requests and responses carried in frames tagged with a request id.

use std::fmt;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::bounded::{decode_bytes, decode_vec, too_many};
use crate::error::ErrorCode;
use crate::events::{
    Event, EventCursor, EventPosition, EventTypes, FunctionStatus, MAX_EVENT_WAIT_MS,
    VersionChange, check_events_limit, decode_events,
};
use crate::functions::{UpdateReason, VersionStats};
use crate::insights::{Grouping, Insight, InsightQuery};
use crate::item::{FunctionRef, Item, ItemId, MAX_FUNCTION_NAME_BYTES, MAX_USER_ID_BYTES, Tier};
use crate::receipt::{NodeId, Receipt, StoredItem};
use crate::ring::RingSnapshot;

/// Most items in one `SubmitBatch`.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Most items in one page of `ListByUser`.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// Longest page token, in bytes.
pub const MAX_PAGE_TOKEN_BYTES: usize = 512;
/// Most API keys a cluster holds (and revocations it remembers): a creation past it is
/// refused, and so is a peer's key set that would take a node past it.
pub const MAX_API_KEYS: usize = 10_000;
/// Longest API key name, in bytes.
pub const MAX_API_KEY_NAME_BYTES: usize = 128;
/// Longest key id a request may name: the whole SHA-256 of a key in hex.
pub const MAX_KEY_ID_HEX: usize = 64;
/// Hex characters of the SHA-256 of a key shown as its id (the id `keys list` prints).
pub const KEY_ID_HEX_LEN: usize = 16;

/// What an API key may do. `Admin` may do everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Role {
    /// Submit items.
    Submit,
    /// Read items (`get`, `list`).
    Read,
    /// Everything, including creating keys.
    Admin,
    /// Review flagged items (list the queue, approve, reject) and read items.
    Review,
}

impl Role {
    /// Whether a key with this role may make a request that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed || (self == Role::Review && needed == Role::Read)
    }

    /// The lowercase name used by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submit => "submit",
            Role::Read => "read",
            Role::Admin => "admin",
            Role::Review => "review",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ErrorCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "submit" => Ok(Role::Submit),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            "review" => Ok(Role::Review),
            _ => Err(ErrorCode::invalid(
                "role",
                format!("unknown role {s:?} (submit, read, review or admin)"),
            )),
        }
    }
}

/// The first frame a client sends on a connection. `version` is encoded first so that a
/// server can refuse a version whose hello it cannot otherwise decode.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub version: u16,
    /// The API key the connection acts with.
    pub api_key: String,
    /// A free-form client name for the server's logs.
    pub client: String,
}

/// Never shows the API key: a hello may be logged with `?hello`.
impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("api_key", &REDACTED)
            .field("client", &self.client)
            .finish()
    }
}

/// What a `Debug` output shows in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// The server's answer to a successful hello.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Welcome {
    /// The protocol version the connection will use.
    pub version: u16,
    /// The node answering.
    pub node: NodeId,
    /// The role of the presented API key.
    pub role: Role,
    /// The largest frame, in bytes, the server accepts.
    pub max_frame: u32,
}

/// An opaque position in a paginated listing, at most [`MAX_PAGE_TOKEN_BYTES`] long.
#[derive(Clone, Debug, PartialEq, Eq, Encode)]
pub struct PageToken(pub Vec<u8>);

impl<Context> Decode<Context> for PageToken {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        decode_bytes(decoder, MAX_PAGE_TOKEN_BYTES, |_| {
            too_many("after", "page token too long".to_string())
        })
        .map(PageToken)
    }
}
bincode::impl_borrow_decode!(PageToken);

/// A request from a client.
///
/// Decoded by hand (below) so that every count is bounded while decoding and a routed
/// request cannot nest another: the wire type is not recursive.
#[derive(Clone, Debug, PartialEq, Encode)]
pub enum Request {
    /// Store one item.
    Submit(Item),
    /// Store up to [`MAX_BATCH_ITEMS`] items; each gets its own outcome.
    SubmitBatch(Vec<Item>),
    /// Read one item by id.
    Get(ItemId),
    /// A user's items, oldest first, one page at a time.
    ListByUser {
        /// Whose items.
        user_id: String,
        /// Where the previous page ended; `None` for the first page.
        after: Option<PageToken>,
        /// Most items to return, 1..=[`MAX_PAGE_LIMIT`].
        limit: u32,
    },
    /// Create an API key with the given role (admin only).
    CreateApiKey {
        /// The new key's role.
        role: Role,
        /// A label for operators.
        name: String,
    },
    /// The ring: which node owns each partition and where to reach it (any role).
    RingSnapshot,
    /// A request the client sent straight to the owner its ring snapshot of `epoch`
    /// names. A node that does not own it answers `NotOwner` (the client refreshes its
    /// snapshot and resends) instead of forwarding it.
    Routed {
        /// The epoch of the client's snapshot.
        epoch: u64,
        /// The request (a submit, a batch of one owner's users, or a listing).
        request: RoutedRequest,
    },
    /// Every API key of the cluster known to the node asked, revoked ones included
    /// (admin only; never the keys themselves).
    ListApiKeys,
    /// Revoke the API key whose id starts with `id` (admin only); revoking a revoked
    /// key again answers its first revocation.
    RevokeApiKey {
        /// A hex prefix of the key's SHA-256 (at least as long as needed to name one key).
        id: String,
    },
    /// What the feedback about each function version adds up to, cluster-wide, one page
    /// at a time in name and version order (read role).
    Functions {
        /// Only the versions of the function of this name; every function's if `None`.
        name: Option<String>,
        /// Where the previous page ended; `None` for the first page.
        after: Option<FunctionRef>,
        /// Most versions to return, 1..=[`MAX_FUNCTIONS_PAGE`].
        limit: u32,
    },
    /// The cluster's events of the given types recorded in a time range, oldest first,
    /// one page at a time (read role).
    Events {
        /// Which types.
        types: EventTypes,
        /// Only events recorded at or after this time (ms since the Unix epoch).
        since_ms: Option<u64>,
        /// Only events recorded before this time.
        until_ms: Option<u64>,
        /// Where the previous page ended; `None` for the first page.
        after: Option<EventPosition>,
        /// Most events to return, 1..=[`MAX_EVENTS_PAGE`].
        limit: u32,
    },
    /// The events recorded past `cursor`, waiting up to `wait_ms` for one when there is
    /// none yet (read role). The answer's cursor is where the next follow starts.
    FollowEvents {
        /// Which types; the cursor moves past events of other types too.
        types: EventTypes,
        /// Where the previous answer ended; empty to start from the beginning.
        cursor: EventCursor,
        /// Most events to return, 1..=[`MAX_EVENTS_PAGE`].
        limit: u32,
        /// Longest wait for a first event, at most [`MAX_EVENT_WAIT_MS`].
        wait_ms: u32,
    },
    /// Deprecates, reactivates or makes current one version of a function (admin only);
    /// answered with the event that records it.
    ChangeVersion {
        /// The function and version.
        function: FunctionRef,
        /// What changes.
        change: VersionChange,
    },
    /// The status of the named functions: current version, deprecated versions and
    /// versions requiring an update (read role).
    FunctionStatus {
        /// The functions, at most [`MAX_FUNCTIONS_PAGE`].
        names: Vec<String>,
    },
    /// The items waiting for review (flagged by validation), one page at a time in
    /// partition and user order (review role); answered with a `Page`.
    ReviewQueue {
        /// Where the previous page ended; `None` for the first page.
        after: Option<PageToken>,
        /// Most items to return, 1..=[`MAX_PAGE_LIMIT`].
        limit: u32,
    },
    /// Approves (the item becomes `accepted`) or rejects a flagged item (review role);
    /// answered with the item as now stored. Audited and recorded as an event.
    Review {
        /// The item's user (which names its partition).
        user_id: String,
        /// The item.
        id: ItemId,
        /// Approve, or reject.
        approve: bool,
    },
    /// Deletes every item of a user (admin only): each becomes a tombstone on every
    /// replica, its bytes reclaimed by compaction; answered once a write quorum holds
    /// the tombstones. Audited and recorded as an event.
    DeleteUser {
        /// The user.
        user_id: String,
    },
    /// A page of everything stored about a user, oldest first, for an export (admin
    /// only); answered with a `Page`. The last page records a `user_exported` event.
    ExportUser {
        /// The user.
        user_id: String,
        /// Where the previous page ended; `None` for the first page.
        after: Option<PageToken>,
        /// Most items to return, 1..=[`MAX_PAGE_LIMIT`].
        limit: u32,
    },
    /// An aggregate question about the feedback, cluster-wide (read role); with ε, under
    /// differential privacy, charged to the key's budget.
    Insights(InsightQuery),
}

/// Most function versions one [`Request::Functions`] page holds.
pub const MAX_FUNCTIONS_PAGE: u32 = 1000;

/// What a client may send straight to an owner: a submit, a batch of one owner's users,
/// or a listing. A type of its own, so that a routed request cannot contain another.
///
/// On the wire each variant carries the tag of the [`Request`] variant it mirrors, so
/// `Routed` encodes exactly as it did when it wrapped a whole `Request`.
#[derive(Clone, Debug, PartialEq)]
pub enum RoutedRequest {
    /// As [`Request::Submit`].
    Submit(Item),
    /// As [`Request::SubmitBatch`].
    SubmitBatch(Vec<Item>),
    /// As [`Request::ListByUser`].
    ListByUser {
        /// Whose items.
        user_id: String,
        /// Where the previous page ended; `None` for the first page.
        after: Option<PageToken>,
        /// Most items to return, 1..=[`MAX_PAGE_LIMIT`].
        limit: u32,
    },
}

/// The wire tags of [`Request`]'s variants, in declaration order.
pub(crate) mod tag {
    pub const SUBMIT: u32 = 0;
    pub const SUBMIT_BATCH: u32 = 1;
    pub const GET: u32 = 2;
    pub const LIST_BY_USER: u32 = 3;
    pub const CREATE_API_KEY: u32 = 4;
    pub const RING_SNAPSHOT: u32 = 5;
    pub const ROUTED: u32 = 6;
    pub const LIST_API_KEYS: u32 = 7;
    pub const REVOKE_API_KEY: u32 = 8;
    pub const FUNCTIONS: u32 = 9;
    pub const EVENTS: u32 = 10;
    pub const FOLLOW_EVENTS: u32 = 11;
    pub const CHANGE_VERSION: u32 = 12;
    pub const FUNCTION_STATUS: u32 = 13;
    pub const REVIEW_QUEUE: u32 = 14;
    pub const REVIEW: u32 = 15;
    pub const DELETE_USER: u32 = 16;
    pub const EXPORT_USER: u32 = 17;
    pub const INSIGHTS: u32 = 18;
}

impl From<RoutedRequest> for Request {
    fn from(routed: RoutedRequest) -> Self {
        match routed {
            RoutedRequest::Submit(item) => Request::Submit(item),
            RoutedRequest::SubmitBatch(items) => Request::SubmitBatch(items),
            RoutedRequest::ListByUser {
                user_id,
                after,
                limit,
            } => Request::ListByUser {
                user_id,
                after,
                limit,
            },
        }
    }
}

impl TryFrom<Request> for RoutedRequest {
    type Error = ErrorCode;

    /// Only submits, batches and listings can be routed; anything else is `Invalid`.
    fn try_from(request: Request) -> Result<Self, ErrorCode> {
        match request {
            Request::Submit(item) => Ok(RoutedRequest::Submit(item)),
            Request::SubmitBatch(items) => Ok(RoutedRequest::SubmitBatch(items)),
            Request::ListByUser {
                user_id,
                after,
                limit,
            } => Ok(RoutedRequest::ListByUser {
                user_id,
                after,
                limit,
            }),
            other => Err(cannot_be_routed(other.kind())),
        }
    }
}

fn cannot_be_routed(kind: &str) -> ErrorCode {
    ErrorCode::invalid("request", format!("{kind} cannot be routed"))
}

impl RoutedRequest {
    /// A short stable name for the variant, as [`Request::kind`] gives it.
    pub fn kind(&self) -> &'static str {
        match self {
            RoutedRequest::Submit(_) => "submit",
            RoutedRequest::SubmitBatch(_) => "submit_batch",
            RoutedRequest::ListByUser { .. } => "list_by_user",
        }
    }

    /// The role a key needs to make this request.
    pub fn required_role(&self) -> Role {
        match self {
            RoutedRequest::Submit(_) | RoutedRequest::SubmitBatch(_) => Role::Submit,
            RoutedRequest::ListByUser { .. } => Role::Read,
        }
    }
}

impl Encode for RoutedRequest {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        match self {
            RoutedRequest::Submit(item) => {
                tag::SUBMIT.encode(encoder)?;
                item.encode(encoder)
            }
            RoutedRequest::SubmitBatch(items) => {
                tag::SUBMIT_BATCH.encode(encoder)?;
                items.encode(encoder)
            }
            RoutedRequest::ListByUser {
                user_id,
                after,
                limit,
            } => {
                tag::LIST_BY_USER.encode(encoder)?;
                user_id.encode(encoder)?;
                after.encode(encoder)?;
                limit.encode(encoder)
            }
        }
    }
}

impl<Context> Decode<Context> for RoutedRequest {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        match u32::decode(decoder)? {
            tag::SUBMIT => Ok(RoutedRequest::Submit(Item::decode(decoder)?)),
            tag::SUBMIT_BATCH => Ok(RoutedRequest::SubmitBatch(decode_batch(decoder)?)),
            tag::LIST_BY_USER => {
                let (user_id, after, limit) = decode_listing(decoder)?;
                Ok(RoutedRequest::ListByUser {
                    user_id,
                    after,
                    limit,
                })
            }
            tag::GET => Err(not_routable("get")),
            tag::CREATE_API_KEY => Err(not_routable("create_api_key")),
            tag::RING_SNAPSHOT => Err(not_routable("ring_snapshot")),
            tag::ROUTED => Err(not_routable("routed")),
            tag::LIST_API_KEYS => Err(not_routable("list_api_keys")),
            tag::REVOKE_API_KEY => Err(not_routable("revoke_api_key")),
            tag::FUNCTIONS => Err(not_routable("functions")),
            tag::EVENTS => Err(not_routable("events")),
            tag::FOLLOW_EVENTS => Err(not_routable("follow_events")),
            tag::CHANGE_VERSION => Err(not_routable("change_version")),
            tag::FUNCTION_STATUS => Err(not_routable("function_status")),
            tag::REVIEW_QUEUE => Err(not_routable("review_queue")),
            tag::REVIEW => Err(not_routable("review")),
            tag::DELETE_USER => Err(not_routable("delete_user")),
            tag::EXPORT_USER => Err(not_routable("export_user")),
            tag::INSIGHTS => Err(not_routable("insights")),
            found => Err(unknown_request(found)),
        }
    }
}
bincode::impl_borrow_decode!(RoutedRequest);

impl<Context> Decode<Context> for Request {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        match u32::decode(decoder)? {
            tag::SUBMIT => Ok(Request::Submit(Item::decode(decoder)?)),
            tag::SUBMIT_BATCH => Ok(Request::SubmitBatch(decode_batch(decoder)?)),
            tag::GET => Ok(Request::Get(ItemId::decode(decoder)?)),
            tag::LIST_BY_USER => {
                let (user_id, after, limit) = decode_listing(decoder)?;
                Ok(Request::ListByUser {
                    user_id,
                    after,
                    limit,
                })
            }
            tag::CREATE_API_KEY => Ok(Request::CreateApiKey {
                role: Role::decode(decoder)?,
                name: String::decode(decoder)?,
            }),
            tag::RING_SNAPSHOT => Ok(Request::RingSnapshot),
            tag::ROUTED => Ok(Request::Routed {
                epoch: u64::decode(decoder)?,
                request: RoutedRequest::decode(decoder)?,
            }),
            tag::LIST_API_KEYS => Ok(Request::ListApiKeys),
            tag::REVOKE_API_KEY => Ok(Request::RevokeApiKey {
                id: decode_string(decoder, MAX_KEY_ID_HEX, "id")?,
            }),
            tag::FUNCTIONS => Ok(Request::Functions {
                name: match u8::decode(decoder)? {
                    0 => None,
                    1 => Some(decode_string(decoder, MAX_FUNCTION_NAME_BYTES, "name")?),
                    found => {
                        return Err(DecodeError::UnexpectedVariant {
                            type_name: "Option<String>",
                            allowed: &bincode::error::AllowedEnumVariants::Range { min: 0, max: 1 },
                            found: u32::from(found),
                        });
                    }
                },
                after: Option::<FunctionRef>::decode(decoder)?,
                limit: u32::decode(decoder)?,
            }),
            tag::EVENTS => Ok(Request::Events {
                types: EventTypes::decode(decoder)?,
                since_ms: Option::<u64>::decode(decoder)?,
                until_ms: Option::<u64>::decode(decoder)?,
                after: Option::<EventPosition>::decode(decoder)?,
                limit: u32::decode(decoder)?,
            }),
            tag::FOLLOW_EVENTS => Ok(Request::FollowEvents {
                types: EventTypes::decode(decoder)?,
                cursor: EventCursor::decode(decoder)?,
                limit: u32::decode(decoder)?,
                wait_ms: u32::decode(decoder)?,
            }),
            tag::CHANGE_VERSION => Ok(Request::ChangeVersion {
                function: FunctionRef::decode(decoder)?,
                change: VersionChange::decode(decoder)?,
            }),
            tag::FUNCTION_STATUS => Ok(Request::FunctionStatus {
                names: decode_vec(
                    decoder,
                    MAX_FUNCTIONS_PAGE as usize,
                    |n| too_many("names", format!("{n} names, at most {MAX_FUNCTIONS_PAGE}")),
                    |d| decode_string(d, MAX_FUNCTION_NAME_BYTES, "names"),
                )?,
            }),
            tag::REVIEW_QUEUE => Ok(Request::ReviewQueue {
                after: Option::<PageToken>::decode(decoder)?,
                limit: u32::decode(decoder)?,
            }),
            tag::REVIEW => Ok(Request::Review {
                user_id: decode_string(decoder, MAX_USER_ID_BYTES, "user_id")?,
                id: ItemId::decode(decoder)?,
                approve: bool::decode(decoder)?,
            }),
            tag::DELETE_USER => Ok(Request::DeleteUser {
                user_id: decode_string(decoder, MAX_USER_ID_BYTES, "user_id")?,
            }),
            tag::EXPORT_USER => {
                let (user_id, after, limit) = decode_listing(decoder)?;
                Ok(Request::ExportUser {
                    user_id,
                    after,
                    limit,
                })
            }
            tag::INSIGHTS => Ok(Request::Insights(InsightQuery {
                function: match u8::decode(decoder)? {
                    0 => None,
                    1 => Some(decode_string(decoder, MAX_FUNCTION_NAME_BYTES, "function")?),
                    found => {
                        return Err(DecodeError::UnexpectedVariant {
                            type_name: "Option<String>",
                            allowed: &bincode::error::AllowedEnumVariants::Range { min: 0, max: 1 },
                            found: u32::from(found),
                        });
                    }
                },
                group: Grouping::decode(decoder)?,
                days: Option::<(u32, u32)>::decode(decoder)?,
                epsilon: Option::<f64>::decode(decoder)?,
            })),
            found => Err(unknown_request(found)),
        }
    }
}
bincode::impl_borrow_decode!(Request);

/// A UTF-8 string of at most `max` bytes, refused over it before it is allocated.
fn decode_string<D: Decoder>(
    decoder: &mut D,
    max: usize,
    field: &'static str,
) -> Result<String, DecodeError> {
    let bytes = decode_bytes(decoder, max, |n| {
        too_many(field, format!("{n} bytes, at most {max}"))
    })?;
    String::from_utf8(bytes).map_err(|e| DecodeError::Utf8 {
        inner: e.utf8_error(),
    })
}

/// A batch's items, their count bounded before any is decoded.
fn decode_batch<D: Decoder>(decoder: &mut D) -> Result<Vec<Item>, DecodeError> {
    decode_vec(
        decoder,
        MAX_BATCH_ITEMS,
        |n| too_many("items", batch_len_reason(n)),
        Item::decode,
    )
}

/// The fields of a listing: user, page token, limit.
fn decode_listing<D: Decoder>(
    decoder: &mut D,
) -> Result<(String, Option<PageToken>, u32), DecodeError> {
    Ok((
        String::decode(decoder)?,
        Option::<PageToken>::decode(decoder)?,
        u32::decode(decoder)?,
    ))
}

fn not_routable(kind: &str) -> DecodeError {
    too_many("request", format!("{kind} cannot be routed"))
}

fn unknown_request(found: u32) -> DecodeError {
    DecodeError::UnexpectedVariant {
        type_name: "Request",
        allowed: &bincode::error::AllowedEnumVariants::Range {
            min: tag::SUBMIT,
            max: tag::INSIGHTS,
        },
        found,
    }
}

fn batch_len_reason(len: u64) -> String {
    format!("{len} items, must be 1..={MAX_BATCH_ITEMS}")
}

impl Request {
    /// A short stable name for the variant, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Submit(_) => "submit",
            Request::SubmitBatch(_) => "submit_batch",
            Request::Get(_) => "get",
            Request::ListByUser { .. } => "list_by_user",
            Request::CreateApiKey { .. } => "create_api_key",
            Request::RingSnapshot => "ring_snapshot",
            Request::Routed { request, .. } => request.kind(),
            Request::ListApiKeys => "list_api_keys",
            Request::RevokeApiKey { .. } => "revoke_api_key",
            Request::Functions { .. } => "functions",
            Request::Events { .. } => "events",
            Request::FollowEvents { .. } => "follow_events",
            Request::ChangeVersion { .. } => "change_version",
            Request::FunctionStatus { .. } => "function_status",
            Request::ReviewQueue { .. } => "review_queue",
            Request::Review { .. } => "review",
            Request::DeleteUser { .. } => "delete_user",
            Request::ExportUser { .. } => "export_user",
            Request::Insights(_) => "insights",
        }
    }

    /// The tier the request's items ask for (a batch: its first item's); requests
    /// without items are `standard`. What an `Overloaded` answer names.
    pub fn tier(&self) -> Tier {
        let items: &[Item] = match self {
            Request::Submit(item)
            | Request::Routed {
                request: RoutedRequest::Submit(item),
                ..
            } => std::slice::from_ref(item),
            Request::SubmitBatch(items)
            | Request::Routed {
                request: RoutedRequest::SubmitBatch(items),
                ..
            } => items,
            _ => &[],
        };
        items.first().map_or(Tier::Standard, |item| item.tier)
    }

    /// The role a key needs to make this request; `None`: any authenticated key.
    pub fn required_role(&self) -> Option<Role> {
        match self {
            Request::Submit(_) | Request::SubmitBatch(_) => Some(Role::Submit),
            Request::Get(_)
            | Request::ListByUser { .. }
            | Request::Functions { .. }
            | Request::Events { .. }
            | Request::FollowEvents { .. }
            | Request::FunctionStatus { .. }
            | Request::Insights(_) => Some(Role::Read),
            Request::CreateApiKey { .. }
            | Request::ListApiKeys
            | Request::RevokeApiKey { .. }
            | Request::ChangeVersion { .. }
            | Request::DeleteUser { .. }
            | Request::ExportUser { .. } => Some(Role::Admin),
            Request::ReviewQueue { .. } | Request::Review { .. } => Some(Role::Review),
            Request::RingSnapshot => None,
            Request::Routed { request, .. } => Some(request.required_role()),
        }
    }

    /// Whether sending this request twice has the same effect as sending it once, so a
    /// client may retry it after a lost connection.
    pub fn is_idempotent(&self) -> bool {
        !matches!(self, Request::CreateApiKey { .. })
    }

    /// Checks the request's own limits (not those of the items inside).
    pub fn validate_shape(&self) -> Result<(), ErrorCode> {
        match self {
            Request::SubmitBatch(items) => check_batch_len(items.len()),
            Request::ListByUser { limit, after, .. } => check_listing(*limit, after.as_ref()),
            Request::CreateApiKey { name, .. } if name.len() > MAX_API_KEY_NAME_BYTES => {
                Err(ErrorCode::invalid(
                    "name",
                    format!("longer than {MAX_API_KEY_NAME_BYTES} bytes"),
                ))
            }
            Request::RevokeApiKey { id } => check_key_id(id),
            Request::Functions { name, limit, .. } => check_functions_page(name.as_deref(), *limit),
            Request::Events { types, limit, .. } => {
                types.validate()?;
                check_events_limit(*limit)
            }
            Request::FollowEvents {
                types,
                cursor,
                limit,
                wait_ms,
            } => {
                types.validate()?;
                cursor.validate()?;
                check_events_limit(*limit)?;
                if *wait_ms > MAX_EVENT_WAIT_MS {
                    return Err(ErrorCode::invalid(
                        "wait_ms",
                        format!("{wait_ms}, at most {MAX_EVENT_WAIT_MS}"),
                    ));
                }
                Ok(())
            }
            Request::ChangeVersion { function, .. } => function.validate(),
            Request::FunctionStatus { names } => {
                if names.len() > MAX_FUNCTIONS_PAGE as usize {
                    return Err(ErrorCode::invalid(
                        "names",
                        format!("{} names, at most {MAX_FUNCTIONS_PAGE}", names.len()),
                    ));
                }
                names
                    .iter()
                    .try_for_each(|name| check_functions_page(Some(name), 1))
            }
            Request::ReviewQueue { after, limit } => check_listing(*limit, after.as_ref()),
            Request::ExportUser { limit, after, .. } => check_listing(*limit, after.as_ref()),
            Request::Insights(query) => query.validate(),
            Request::DeleteUser { user_id } if user_id.is_empty() => Err(ErrorCode::invalid(
                "user_id",
                "must not be empty".to_string(),
            )),
            Request::Review { user_id, .. } if user_id.is_empty() => Err(ErrorCode::invalid(
                "user_id",
                "must not be empty".to_string(),
            )),
            Request::Routed { request, .. } => match request {
                RoutedRequest::SubmitBatch(items) => check_batch_len(items.len()),
                RoutedRequest::ListByUser { limit, after, .. } => {
                    check_listing(*limit, after.as_ref())
                }
                RoutedRequest::Submit(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// Checks the number of items in one submission: 1..=[`MAX_BATCH_ITEMS`].
pub fn check_batch_len(len: usize) -> Result<(), ErrorCode> {
    if len == 0 || len > MAX_BATCH_ITEMS {
        return Err(ErrorCode::invalid("items", batch_len_reason(len as u64)));
    }
    Ok(())
}

/// Checks a function page's name (1..=[`MAX_FUNCTION_NAME_BYTES`] bytes, if given) and
/// limit (1..=[`MAX_FUNCTIONS_PAGE`]).
pub fn check_functions_page(name: Option<&str>, limit: u32) -> Result<(), ErrorCode> {
    if limit == 0 || limit > MAX_FUNCTIONS_PAGE {
        return Err(ErrorCode::invalid(
            "limit",
            format!("{limit}, must be 1..={MAX_FUNCTIONS_PAGE}"),
        ));
    }
    match name {
        Some(name) if name.is_empty() || name.len() > MAX_FUNCTION_NAME_BYTES => {
            Err(ErrorCode::invalid(
                "name",
                format!(
                    "{} bytes, must be 1..={MAX_FUNCTION_NAME_BYTES}",
                    name.len()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Checks a key id prefix: 1..=[`MAX_KEY_ID_HEX`] lowercase hex digits.
pub fn check_key_id(id: &str) -> Result<(), ErrorCode> {
    if id.is_empty() || id.len() > MAX_KEY_ID_HEX {
        return Err(ErrorCode::invalid(
            "id",
            format!("{} characters, must be 1..={MAX_KEY_ID_HEX}", id.len()),
        ));
    }
    if !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ErrorCode::invalid("id", "must be lowercase hex digits"));
    }
    Ok(())
}

/// Checks a listing's page limit and token.
fn check_listing(limit: u32, after: Option<&PageToken>) -> Result<(), ErrorCode> {
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ErrorCode::invalid(
            "limit",
            format!("{limit}, must be 1..={MAX_PAGE_LIMIT}"),
        ));
    }
    if after.is_some_and(|token| token.0.len() > MAX_PAGE_TOKEN_BYTES) {
        return Err(ErrorCode::invalid("after", "page token too long"));
    }
    Ok(())
}

/// A successful answer to a request.
///
/// Decoded by hand (below) so that a batch's outcomes and a page's items are bounded
/// while decoding: the SDK reads what a server sends, and a server may be hostile.
#[derive(Clone, PartialEq, Encode)]
pub enum Response {
    /// The receipt of a `Submit`.
    Receipt(Receipt),
    /// One outcome per item of a `SubmitBatch`, in order.
    Batch(Vec<Result<Receipt, ErrorCode>>),
    /// The item of a `Get`, or `None` if no item has that id.
    Item(Option<Box<StoredItem>>),
    /// A page of a `ListByUser`.
    Page {
        /// The items, oldest first.
        items: Vec<StoredItem>,
        /// Where the next page starts; `None` when this is the last page.
        next: Option<PageToken>,
    },
    /// The key made by `CreateApiKey`, shown only this once.
    ApiKeyCreated {
        /// The secret key.
        key: String,
        /// Its role.
        role: Role,
    },
    /// The answer to `RingSnapshot`.
    Ring(RingSnapshot),
    /// The answer to `ListApiKeys`: at most [`MAX_API_KEYS`], ordered by id.
    ApiKeys(Vec<ApiKeyInfo>),
    /// The answer to `RevokeApiKey`: the key, now revoked.
    ApiKeyRevoked(ApiKeyInfo),
    /// A page of `Functions`.
    Functions {
        /// The versions, in name and version order, at most [`MAX_FUNCTIONS_PAGE`].
        versions: Vec<FunctionVersion>,
        /// Where the next page starts; `None` when this is the last page.
        next: Option<FunctionRef>,
        /// How many partitions the counts cover, of how many: fewer while a partition
        /// changes leader or its leader cannot be reached.
        covered: (u32, u32),
    },
    /// A page of `Events`.
    Events {
        /// The events, oldest first, at most [`MAX_EVENTS_PAGE`].
        events: Vec<Event>,
        /// Where the next page starts; `None` when this is the last page.
        next: Option<EventPosition>,
    },
    /// The answer to `FollowEvents`.
    Followed {
        /// The new events of the wanted types, each origin's in order.
        events: Vec<Event>,
        /// Where the next follow starts.
        cursor: EventCursor,
    },
    /// The event a `ChangeVersion` recorded.
    Event(Event),
    /// The answer to `FunctionStatus`, one per name asked, in order.
    FunctionStatus(Vec<FunctionStatus>),
    /// The answer to `DeleteUser`: how many items became tombstones.
    UserDeleted {
        /// Items deleted (those already deleted are not counted again).
        items: u64,
    },
    /// The answer to `Insights`.
    Insights(Insight),
}

/// What the feedback about one version of a function adds up to, cluster-wide.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct FunctionVersion {
    /// The function and version.
    pub function: FunctionRef,
    /// Its counts.
    pub stats: VersionStats,
    /// Why its feedback says it needs an update, by the node's thresholds; empty when
    /// it does not.
    pub requires_update: UpdateReasons,
}

/// At most two reasons (one per rule), bounded when decoded.
#[derive(Clone, Debug, Default, PartialEq, Encode)]
pub struct UpdateReasons(pub Vec<UpdateReason>);

impl<Context> Decode<Context> for UpdateReasons {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        decode_vec(
            decoder,
            2,
            |n| too_many("requires_update", format!("{n} reasons, at most 2")),
            UpdateReason::decode,
        )
        .map(UpdateReasons)
    }
}
bincode::impl_borrow_decode!(UpdateReasons);

/// One API key as an admin sees it: never the key, only the start of its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Encode)]
pub struct ApiKeyInfo {
    /// The first [`KEY_ID_HEX_LEN`] hex digits of the key's SHA-256.
    pub id: String,
    /// What the key may do.
    pub role: Role,
    /// The operator's label.
    pub name: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When it was revoked (milliseconds since the Unix epoch); `None` while it is valid.
    pub revoked_at: Option<u64>,
}

impl<Context> Decode<Context> for ApiKeyInfo {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(ApiKeyInfo {
            id: decode_string(decoder, MAX_KEY_ID_HEX, "id")?,
            role: Role::decode(decoder)?,
            name: decode_string(decoder, MAX_API_KEY_NAME_BYTES, "name")?,
            created_at: u64::decode(decoder)?,
            revoked_at: Option::<u64>::decode(decoder)?,
        })
    }
}
bincode::impl_borrow_decode!(ApiKeyInfo);

/// The wire tags of [`Response`]'s variants, in declaration order.
mod response_tag {
    pub const RECEIPT: u32 = 0;
    pub const BATCH: u32 = 1;
    pub const ITEM: u32 = 2;
    pub const PAGE: u32 = 3;
    pub const API_KEY_CREATED: u32 = 4;
    pub const RING: u32 = 5;
    pub const API_KEYS: u32 = 6;
    pub const API_KEY_REVOKED: u32 = 7;
    pub const FUNCTIONS: u32 = 8;
    pub const EVENTS: u32 = 9;
    pub const FOLLOWED: u32 = 10;
    pub const EVENT: u32 = 11;
    pub const FUNCTION_STATUS: u32 = 12;
    pub const USER_DELETED: u32 = 13;
    pub const INSIGHTS: u32 = 14;
}

impl<Context> Decode<Context> for Response {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        use response_tag::*;
        match u32::decode(decoder)? {
            RECEIPT => Ok(Response::Receipt(Receipt::decode(decoder)?)),
            BATCH => Ok(Response::Batch(decode_vec(
                decoder,
                MAX_BATCH_ITEMS,
                |n| too_many("outcomes", batch_len_reason(n)),
                Result::<Receipt, ErrorCode>::decode,
            )?)),
            ITEM => Ok(Response::Item(Option::<Box<StoredItem>>::decode(decoder)?)),
            PAGE => Ok(Response::Page {
                items: decode_vec(
                    decoder,
                    MAX_PAGE_LIMIT as usize,
                    |n| {
                        too_many(
                            "items",
                            format!("{n} items, a page holds at most {MAX_PAGE_LIMIT}"),
                        )
                    },
                    StoredItem::decode,
                )?,
                next: Option::<PageToken>::decode(decoder)?,
            }),
            API_KEY_CREATED => Ok(Response::ApiKeyCreated {
                key: String::decode(decoder)?,
                role: Role::decode(decoder)?,
            }),
            RING => Ok(Response::Ring(RingSnapshot::decode(decoder)?)),
            API_KEYS => Ok(Response::ApiKeys(decode_vec(
                decoder,
                MAX_API_KEYS,
                |n| too_many("keys", format!("{n} keys, at most {MAX_API_KEYS}")),
                ApiKeyInfo::decode,
            )?)),
            API_KEY_REVOKED => Ok(Response::ApiKeyRevoked(ApiKeyInfo::decode(decoder)?)),
            FUNCTIONS => Ok(Response::Functions {
                versions: decode_vec(
                    decoder,
                    MAX_FUNCTIONS_PAGE as usize,
                    |n| {
                        too_many(
                            "versions",
                            format!("{n} versions, a page holds at most {MAX_FUNCTIONS_PAGE}"),
                        )
                    },
                    FunctionVersion::decode,
                )?,
                next: Option::<FunctionRef>::decode(decoder)?,
                covered: <(u32, u32)>::decode(decoder)?,
            }),
            EVENTS => Ok(Response::Events {
                events: decode_events(decoder)?,
                next: Option::<EventPosition>::decode(decoder)?,
            }),
            FOLLOWED => Ok(Response::Followed {
                events: decode_events(decoder)?,
                cursor: EventCursor::decode(decoder)?,
            }),
            EVENT => Ok(Response::Event(Event::decode(decoder)?)),
            FUNCTION_STATUS => Ok(Response::FunctionStatus(decode_vec(
                decoder,
                MAX_FUNCTIONS_PAGE as usize,
                |n| {
                    too_many(
                        "functions",
                        format!("{n} functions, at most {MAX_FUNCTIONS_PAGE}"),
                    )
                },
                FunctionStatus::decode,
            )?)),
            USER_DELETED => Ok(Response::UserDeleted {
                items: u64::decode(decoder)?,
            }),
            INSIGHTS => Ok(Response::Insights(Insight::decode(decoder)?)),
            found => Err(DecodeError::UnexpectedVariant {
                type_name: "Response",
                allowed: &bincode::error::AllowedEnumVariants::Range {
                    min: 0,
                    max: INSIGHTS,
                },
                found,
            }),
        }
    }
}
bincode::impl_borrow_decode!(Response);

/// Never shows a created key: responses may be logged with `?response`.
impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Receipt(receipt) => f.debug_tuple("Receipt").field(receipt).finish(),
            Response::Batch(outcomes) => f.debug_tuple("Batch").field(outcomes).finish(),
            Response::Item(item) => f.debug_tuple("Item").field(item).finish(),
            Response::Page { items, next } => f
                .debug_struct("Page")
                .field("items", items)
                .field("next", next)
                .finish(),
            Response::ApiKeyCreated { key: _, role } => f
                .debug_struct("ApiKeyCreated")
                .field("key", &REDACTED)
                .field("role", role)
                .finish(),
            Response::Ring(ring) => f.debug_tuple("Ring").field(ring).finish(),
            Response::ApiKeys(keys) => f.debug_tuple("ApiKeys").field(keys).finish(),
            Response::ApiKeyRevoked(key) => f.debug_tuple("ApiKeyRevoked").field(key).finish(),
            Response::Functions {
                versions,
                next,
                covered,
            } => f
                .debug_struct("Functions")
                .field("versions", versions)
                .field("next", next)
                .field("covered", covered)
                .finish(),
            Response::Events { events, next } => f
                .debug_struct("Events")
                .field("events", events)
                .field("next", next)
                .finish(),
            Response::Followed { events, cursor } => f
                .debug_struct("Followed")
                .field("events", events)
                .field("cursor", cursor)
                .finish(),
            Response::Event(event) => f.debug_tuple("Event").field(event).finish(),
            Response::FunctionStatus(status) => {
                f.debug_tuple("FunctionStatus").field(status).finish()
            }
            Response::UserDeleted { items } => {
                f.debug_struct("UserDeleted").field("items", items).finish()
            }
            Response::Insights(insight) => f.debug_tuple("Insights").field(insight).finish(),
        }
    }
}

/// A request with the id its response will carry.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct ClientFrame {
    /// Chosen by the client, unique among its requests in flight on the stream.
    pub request_id: u64,
    /// The request.
    pub request: Request,
}

/// A response, tagged with the id of the request it answers.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct ServerFrame {
    /// The id of the answered request.
    pub request_id: u64,
    /// Its outcome.
    pub result: Result<Response, ErrorCode>,
}
