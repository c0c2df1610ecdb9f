//! The write path's core, without IO: three state machines that decide everything a
//! submission meets between the network and the disk, driven by thin actors.
//!
//! ```text
//! submit ─► Admission ─► TierStage ─► (validators) ─► StoreGate ─► Store (log + index)
//!           checks,      four queues,                 bulkhead,
//!           shed, limits degradation, window          group commit, breaker
//! ```
//!
//! Each takes `now` as an argument and returns what to do (`handle_*` feeds events in,
//! `poll*` takes decisions out), so unit and property tests drive them with a fake
//! clock, and `simulations/ -- overload` runs this same code under simulated load.

pub mod admission;
pub mod scheduler;
pub mod store_gate;
