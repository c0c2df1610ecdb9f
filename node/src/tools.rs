//! The CLI tools: what a person or a script runs against a node — `submit`, `get`,
//! `list`, `keys` (the SDK, as an application uses it), `ctl` (the control socket's
//! client), `bench`, `demo`, `certs` and the offline `restore` — and the command line
//! that names them. They reach a node only as its clients do, through the SDK and the
//! control protocol; from the daemon they take shared definitions (its config's
//! defaults, the control protocol, certificates, private files). No daemon module uses
//! them: `node/tests/layering.rs` checks both, and that their modules form no cycle.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod connect;
pub mod ctl;
pub mod demo;
pub mod error;
