//! The messages of the client protocol: the hello that opens a connection, then
//! requests and responses carried in frames tagged with a request id.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};

use crate::error::ErrorCode;
use crate::item::{Item, ItemId};
use crate::receipt::{NodeId, Receipt, StoredItem};
use crate::ring::RingSnapshot;

/// Most items in one `SubmitBatch`.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Most items in one page of `ListByUser`.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// Longest page token, in bytes.
pub const MAX_PAGE_TOKEN_BYTES: usize = 512;

/// What an API key may do. `Admin` may do everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Role {
    /// Submit items.
    Submit,
    /// Read items (`get`, `list`).
    Read,
    /// Everything, including creating keys.
    Admin,
}

impl Role {
    /// Whether a key with this role may make a request that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    /// The lowercase name used by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submit => "submit",
            Role::Read => "read",
            Role::Admin => "admin",
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
            _ => Err(ErrorCode::invalid(
                "role",
                format!("unknown role {s:?} (submit, read or admin)"),
            )),
        }
    }
}

/// The first frame a client sends on a connection. `version` is encoded first so that a
/// server can refuse a version whose hello it cannot otherwise decode.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub version: u16,
    /// The API key the connection acts with.
    pub api_key: String,
    /// A free-form client name for the server's logs.
    pub client: String,
}

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

/// An opaque position in a paginated listing.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PageToken(pub Vec<u8>);

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
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
        request: Box<Request>,
    },
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
        }
    }

    /// The role a key needs to make this request; `None`: any authenticated key.
    pub fn required_role(&self) -> Option<Role> {
        match self {
            Request::Submit(_) | Request::SubmitBatch(_) => Some(Role::Submit),
            Request::Get(_) | Request::ListByUser { .. } => Some(Role::Read),
            Request::CreateApiKey { .. } => Some(Role::Admin),
            Request::RingSnapshot => None,
            Request::Routed { request, .. } => request.required_role(),
        }
    }

    /// Whether sending this request twice has the same effect as sending it once, so a
    /// client may retry it after a lost connection.
    pub fn is_idempotent(&self) -> bool {
        match self {
            Request::CreateApiKey { .. } => false,
            Request::Routed { request, .. } => request.is_idempotent(),
            _ => true,
        }
    }

    /// Checks the request's own limits (not those of the items inside).
    pub fn validate_shape(&self) -> Result<(), ErrorCode> {
        match self {
            Request::SubmitBatch(items) => check_batch_len(items.len()),
            Request::ListByUser { limit, .. } if *limit == 0 || *limit > MAX_PAGE_LIMIT => Err(
                ErrorCode::invalid("limit", format!("{limit}, must be 1..={MAX_PAGE_LIMIT}")),
            ),
            Request::ListByUser {
                after: Some(token), ..
            } if token.0.len() > MAX_PAGE_TOKEN_BYTES => {
                Err(ErrorCode::invalid("after", "page token too long"))
            }
            Request::CreateApiKey { name, .. } if name.len() > 128 => {
                Err(ErrorCode::invalid("name", "longer than 128 bytes"))
            }
            Request::Routed { request, .. } => match **request {
                Request::Submit(_) | Request::SubmitBatch(_) | Request::ListByUser { .. } => {
                    request.validate_shape()
                }
                _ => Err(ErrorCode::invalid(
                    "request",
                    format!("{} cannot be routed", request.kind()),
                )),
            },
            _ => Ok(()),
        }
    }
}

/// Checks the number of items in one submission: 1..=[`MAX_BATCH_ITEMS`].
pub fn check_batch_len(len: usize) -> Result<(), ErrorCode> {
    if len == 0 || len > MAX_BATCH_ITEMS {
        return Err(ErrorCode::invalid(
            "items",
            format!("{len} items, must be 1..={MAX_BATCH_ITEMS}"),
        ));
    }
    Ok(())
}

/// A successful answer to a request.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
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
