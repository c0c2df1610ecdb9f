//! # chorus-actors
//!
//! One Chorus node's write path: a sans-IO core of state machines ([`core`], over the
//! leaf policies in [`policy`]), the store of record ([`store`]: a partition log indexed
//! by sled), and a tree of supervised actors that drive them. The node crate's QUIC
//! server talks to this crate through [`NodeHandle`].
//!
//! ```text
//! NodeHandle ──► NodeSupervisor
//!                ├── Intake      drives core::admission   (checks, shed, rate limits)
//!                ├── TierQueues  drives core::scheduler   (four queues, degradation)
//!                ├── Validators  (ractor factory: PII redaction, status, score)
//!                └── Store       drives core::store_gate  (bulkhead, group commit, breaker)
//!                      └── store::Store (partition log + sled index, on the blocking pool)
//! ```
//!
//! Layers, each importing only those below it (the `layering` test checks it):
//! `policy`, `store`, `validation`, `telemetry`, `caller` ◄ `core` ◄ `messages` ◄ the
//! actors (`intake`, `tier_queues`, `validator_pool`, `enrichment`, `store_actor`) ◄
//! `supervisor` ◄ the handle. The actor modules are public for this crate's own tests
//! and benches; no actor module imports another.
//!
//! ## What the node crate may use
//!
//! The node (`node/src`) uses only these paths of this crate (the `layering` test
//! checks that too): the root re-exports below; `policy` (configs and states),
//! `validation`, `enrichment` and `pipeline` (configs), `restart` (the restart policy),
//! `store` (opening and inspecting a data directory), `published_breaker` (reading a
//! published breaker) and `telemetry` (metric names).
//!
//! <!-- node-may-use: BatchOutcome BreakerCommand Caller DegradeCommand Durability
//! ApiKeyRecord AuditReport AuditEntry KeyHash KeySet KeyStatus NodeHandle PipelineConfig
//! PipelineConfigError
//! QueueStatus STORE_DEPENDENCY Store StoreConfig CommitFuture Replication ReplicationSlot
//! SettledFuture
//! Applied MAX_EPOCH_HISTORY PartitionEpochs Promise ReplicaRecord ShipBatch ShipOutcome
//! enrichment pipeline policy published_breaker request restart store telemetry validation -->
//!
//! This crate knows nothing of QUIC, gossip, the control socket or the CLI, and must
//! never depend on quinn, foca or the node crate.

#![warn(missing_docs)]

pub mod caller;
pub mod core;
pub mod enrichment;
pub mod group_commit;
mod handle;
pub mod intake;
pub mod messages;
pub mod pipeline;
pub mod policy;
pub mod published_breaker;
pub mod published_bulkhead;
pub mod published_door;
pub mod replication;
pub mod request;
pub mod restart;
pub mod store;
pub mod store_actor;
pub mod supervisor;
pub mod telemetry;
pub mod tier_queues;
pub mod validation;
pub mod validator_pool;

pub use crate::core::admission::{BatchOutcome, STORE_DEPENDENCY};
pub use crate::core::scheduler::{DegradeCommand, QueueStatus};
pub use caller::Caller;
pub use handle::{NodeHandle, StartError};
pub use pipeline::{LivePolicy, PipelineConfig, PipelineConfigError};
pub use policy::breaker::BreakerCommand;
pub use replication::{CommitFuture, Replication, ReplicationSlot, SettledFuture};
pub use store::{
    ApiKeyEntry, ApiKeyRecord, Applied, AuditEntry, AuditLog, AuditReport, Durability, KeyHash,
    KeySet, KeyStatus, MAX_EPOCH_HISTORY, PartitionEpochs, Promise, ReplicaRecord, ShipBatch,
    ShipOutcome, Store, StoreConfig, StoreError, Write,
};
