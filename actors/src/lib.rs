//! # chorus-actors
//!
//! One Chorus node's write path as a tree of supervised actors, and the pure state
//! machines those actors drive. The node crate's QUIC server talks to this crate only
//! through [`NodeHandle`]; everything below it is an implementation detail.
//!
//! ```text
//! NodeHandle ──► NodeSupervisor
//!                ├── Intake      (shape + schema checks, limits; forwards to the pool)
//!                ├── Validators  (ractor factory: PII redaction, status, score)
//!                └── Store       (group commit; receipts only after the flush)
//!                      └── store::Store (sled, blocking, on the blocking pool)
//! ```
//!
//! Policies are plain state machines without IO ([`group_commit`], [`restart`]); the
//! actors around them only move messages and run blocking work off the reactor.
//!
//! This crate knows nothing of QUIC, gossip, the control socket or the CLI, and must
//! never depend on quinn, foca or the node crate.

#![warn(missing_docs)]

pub mod caller;
pub mod enrichment;
pub mod group_commit;
mod handle;
pub mod intake;
mod message;
pub mod pipeline;
pub mod policy;
pub mod published_breaker;
pub mod published_bulkhead;
pub mod restart;
pub mod store;
pub mod store_actor;
pub mod supervisor;
pub mod telemetry;
pub mod tier_queues;
pub mod validation;
pub mod validator_pool;

pub use caller::Caller;
pub use handle::{NodeHandle, StartError};
pub use pipeline::{PipelineConfig, PipelineConfigError};
pub use store::{
    ApiKeyRecord, AuditEntry, AuditLog, AuditReport, Durability, Store, StoreConfig, StoreError,
    Write,
};
