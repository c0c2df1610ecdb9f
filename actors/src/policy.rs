//! The node's resilience policies as plain state machines: each takes the current time
//! as an argument (`now: Instant`), returns its decision as a value, and imports no
//! tokio, ractor or sled, so every one of them is tested with a fake clock. The actors
//! that drive them (later in the pipeline) only move events and publish state.

pub mod admission;
pub mod breaker;
pub mod bulkhead;
pub mod degradation;
pub mod privacy;
pub mod rate_limit;
pub mod tier_queue;
