//! # chorus-protocol
//!
//! The wire protocol of Chorus: what a feedback item, a receipt, a request, a response
//! and a typed error are, how they are framed on a QUIC stream (a `u32` big-endian
//! length followed by a bincode 2 payload) and which protocol versions exist.
//!
//! Every other crate speaks through these types: the client SDK encodes them, the node
//! decodes them, the actors store them. This crate therefore depends on no IO crate
//! (no tokio, quinn, sled or ractor) and never will: it is pure data and pure functions,
//! so every decoder here can be property-tested and fuzzed in isolation.

#![warn(missing_docs)]

mod batch;
mod bounded;
mod codec;
mod error;
mod events;
mod frame;
mod functions;
mod insights;
mod item;
mod message;
mod partition;
mod peek;
mod receipt;
mod ring;

pub use batch::{BatchGroup, GroupOutcome, ItemOutcome, merge_outcomes, split_by};
pub use codec::{
    ClientFrameError, decode_client_frame, decode_hello, decode_hello_answer, decode_server_frame,
    decode_value, decode_value_within, encode_payload, encode_value,
};
pub use error::ErrorCode;
pub use events::{
    Event, EventCursor, EventKind, EventPosition, EventType, EventTypes, FunctionStatus,
    MAX_EVENT_ACTOR_BYTES, MAX_EVENT_ORIGINS, MAX_EVENT_REASONS, MAX_EVENT_WAIT_MS,
    MAX_EVENTS_PAGE, VersionChange, check_events_limit,
};
pub use frame::{
    DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, FrameError, FrameLimit, HELLO_MAX_BYTES,
    MAX_FRAME_CEILING, ResetCode, read_frame_len,
};
pub use functions::{
    DURATION_BUCKETS, DurationHistogram, ItemFacts, UpdateReason, UpdateRule, VersionStats,
};
pub use insights::{
    DAY_MS, Facet, Grouping, Insight, InsightQuery, InsightRow, MAX_INSIGHT_ROWS, Tally,
};
pub use item::{
    ExecutionMetrics, FunctionRef, Item, ItemId, Kind, MAX_FUNCTION_NAME_BYTES,
    MAX_FUNCTION_VERSION_BYTES, MAX_TAG_BYTES, MAX_TAGS, MAX_TEXT_BYTES, MAX_USER_ID_BYTES, Tier,
};
pub use message::{
    ApiKeyInfo, ClientFrame, FunctionVersion, Hello, KEY_ID_HEX_LEN, MAX_API_KEY_NAME_BYTES,
    MAX_API_KEYS, MAX_BATCH_ITEMS, MAX_FUNCTIONS_PAGE, MAX_KEY_ID_HEX, MAX_PAGE_LIMIT,
    MAX_PAGE_TOKEN_BYTES, PageToken, Request, Response, Role, RoutedRequest, ServerFrame,
    UpdateReasons, Welcome, check_batch_len, check_functions_page, check_key_id,
};
pub use partition::{PartitionId, partition_of};
pub use peek::{SubmitHead, peek_submit};
pub use receipt::{Enrichment, NodeId, Receipt, Status, StoredItem};
pub use ring::{MAX_RING_MEMBERS, RingMember, RingSnapshot};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Every protocol version this build can serve, oldest first.
pub const SUPPORTED_VERSIONS: &[u16] = &[PROTOCOL_VERSION];

/// The ALPN token that selects the client protocol on a Chorus QUIC endpoint.
pub const ALPN_CLIENT: &[u8] = b"chorus/1";

/// The ALPN token that selects a cluster link (node to node, mutual TLS) whose
/// forwards carry the id of the request they serve.
pub const ALPN_LINK: &[u8] = b"chorus-link/2";

/// The previous release's link ALPN (forwards without a request id): spoken with a
/// peer that offers only it, as during a rolling upgrade.
pub const ALPN_LINK_V1: &[u8] = b"chorus-link/1";

/// Every link ALPN this build speaks, the preferred first.
pub const ALPN_LINKS: [&[u8]; 2] = [ALPN_LINK, ALPN_LINK_V1];
