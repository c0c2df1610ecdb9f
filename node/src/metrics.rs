//! Observability over HTTP: Prometheus metrics at `/metrics` and the health checks
//! `/health/live` and `/health/ready`, served together on one port.
//!
//! Code anywhere in the node records through the `metrics` facade macros (cheap with
//! static names and labels, and no-ops when no recorder is installed). This module
//! installs the process's one Prometheus recorder, names and describes what the server
//! records, and runs the HTTP endpoint. Readiness is a pair of flags ([`Readiness`])
//! that the agent and, later, the pipeline's circuit breaker flip.

pub mod catalog;
mod endpoint;
mod readiness;
mod recorder;

pub use endpoint::{EndpointLimits, MetricsError, MetricsServer};
pub use readiness::{NotReady, Readiness};
pub use recorder::install_recorder;
