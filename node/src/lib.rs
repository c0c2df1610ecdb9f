//! # chorus-node
//!
//! The Chorus daemon and the `chorus` binary. A node is the actor tree of
//! `chorus-actors` behind a QUIC endpoint: this crate owns everything that touches the
//! outside world — configuration, certificates, the QUIC server of the client
//! protocol, signals and the command line (including the CLI commands built on
//! `chorus-client`). Policies and storage stay in `chorus-actors`; wire types stay in
//! `chorus-protocol`.

#![warn(missing_docs)]

pub mod agent;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod control;
pub mod data_dir_lock;
pub mod demo;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod secrets;
pub mod server;
pub mod tls;
