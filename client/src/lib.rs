//! # chorus-client
//!
//! The async Rust SDK of Chorus: what applications (and the `chorus submit/get/list/bench`
//! subcommands) use to talk to a cluster over QUIC.
//!
//! A [`Client`] holds a QUIC connection to a node given at connect, authenticated by the
//! cluster CA and an API key, and multiplexes every caller's requests onto a small pool of
//! long-lived, pipelined bidirectional streams: many requests are in flight per stream and
//! responses, which may come back in any order, are matched to their callers by request
//! id. A lost connection is re-established by the next request; transport failures are
//! retried only where that is safe (see [`ClientError`] and [`Request::is_idempotent`]).
//!
//! The client also keeps a snapshot of the ring ([`RingSnapshot`], fetched at connect and
//! every few seconds) and sends each submit and listing straight to the node that owns
//! its user, over one connection per member, opened on first use. A node that is not the
//! owner answers `NotOwner` without executing the request, so it is resent to the owner
//! of a fresh snapshot; an owner out of reach is bypassed by sending the request unrouted
//! to any node, which forwards it. A client that never learns the ring still works.
//!
//! ```text
//! application tasks ──► Client ──► routing (owner of each request; batches split by owner)
//!                                   └─► Link per server (seed + ring members)
//!                                        └─► Session (QUIC connection, hello done)
//!                                             └─► Pipeline × N (stream: writer + reader task)
//! ```
//!
//! Where it sits: the client speaks only the wire protocol of `chorus-protocol`, over
//! quinn, rustls and tokio. It must never depend on `chorus-actors` or `chorus-node`: an
//! application links the SDK, not the server.
//!
//! Modules, one job each: [`config`] (what the caller sets), `tls` (the rustls/quinn
//! configuration), `error` (what can go wrong), `retry` (when to retry, a pure function),
//! `pending` (the map of requests awaiting a response, pure), `routing` (the owner of a
//! request, batch split and merge, what follows a refused or failed routed attempt, when
//! to fetch the ring: pure), `pipeline` (one pipelined stream), `session` (one
//! connection: hello and the stream pool), `link` (one server and its shared reconnect),
//! `client` (the public handle: routing, retries, typed calls), `events` (the events'
//! calls and the stream that follows them), `review` (the review queue's calls).

#![warn(missing_docs)]

mod client;
pub mod config;
mod error;
mod events;
mod link;
mod load_guard;
mod pending;
mod pipeline;
mod retry;
mod review;
mod routing;
mod session;
mod tls;

pub use chorus_protocol::{
    ApiKeyInfo, Enrichment, ErrorCode, Event, EventCursor, EventKind, EventPosition, EventType,
    EventTypes, FunctionStatus, Item, ItemId, Kind, NodeId, PageToken, Receipt, Request, Response,
    RingMember, RingSnapshot, Role, RoutedRequest, Status, StoredItem, Tier, VersionChange,
    Welcome,
};
pub use client::{Client, FunctionsPage, Page, RoutingStats};
pub use config::{ClientConfig, Credentials, RoutingConfig};
pub use error::ClientError;
pub use events::{EventQuery, EventStream, EventsPage};
pub use load_guard::LoadGuardConfig;
