//! # chorus-client
//!
//! The async Rust SDK of Chorus: what applications (and the `chorus submit/get/list/bench`
//! subcommands) use to talk to a cluster over QUIC.
//!
//! A [`Client`] holds one QUIC connection to one node, authenticated by the cluster CA and
//! an API key, and multiplexes every caller's requests onto a small pool of long-lived,
//! pipelined bidirectional streams: many requests are in flight per stream and responses,
//! which may come back in any order, are matched to their callers by request id. A lost
//! connection is re-established by the next request; transport failures are retried only
//! where that is safe (see [`ClientError`] and [`Request::is_idempotent`]).
//!
//! ```text
//! application tasks ──► Client ──► Session (QUIC connection, hello done)
//!                                   └─► Pipeline × N (stream: writer task + reader task)
//! ```
//!
//! Where it sits: the client speaks only the wire protocol of `chorus-protocol`, over
//! quinn, rustls and tokio. It must never depend on `chorus-actors` or `chorus-node`: an
//! application links the SDK, not the server.
//!
//! Modules, one job each: [`config`] (what the caller sets), `tls` (the rustls/quinn
//! configuration), `error` (what can go wrong), `retry` (when to retry, a pure function),
//! `pending` (the map of requests awaiting a response, pure), `pipeline` (one pipelined
//! stream), `session` (one connection: hello and the stream pool), `client` (the public
//! handle: reconnect, retries, typed calls).

#![warn(missing_docs)]

mod client;
pub mod config;
mod error;
mod pending;
mod pipeline;
mod retry;
mod session;
mod tls;

pub use chorus_protocol::{
    Enrichment, ErrorCode, Item, ItemId, Kind, NodeId, PageToken, Receipt, Request, Response, Role,
    Status, StoredItem, Tier, Welcome,
};
pub use client::{Client, Page};
pub use config::{ClientConfig, Credentials};
pub use error::ClientError;
