//! # chorus-node
//!
//! The Chorus daemon and the `chorus` binary. A node is the actor tree of
//! `chorus-actors` behind a QUIC endpoint: this crate owns everything that touches the
//! outside world — configuration, certificates, the QUIC server of the client
//! protocol, the cluster layers, the control socket, metrics and signals. [`node::Node`]
//! is one running node and owns every task it starts; `chorus agent` ([`agent`]) runs
//! one until a signal. The CLI tools built on `chorus-client` (`submit`, `ctl`,
//! `bench`, `demo`, …) live apart, in [`tools`], which no daemon module uses. Policies
//! and storage stay in `chorus-actors`; wire types stay in `chorus-protocol`.

#![warn(missing_docs)]

pub mod agent;
pub mod cluster;
pub mod config;
pub mod control;
pub mod data_dir_lock;
pub mod events;
pub mod functions;
pub mod insights;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod reload;
pub mod request_id;
pub mod retention;
pub mod review;
pub mod secrets;
pub mod server;
pub mod tls;
pub mod tools;
pub mod users;
pub mod version_watch;
