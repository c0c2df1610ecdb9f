//! The cluster layer of a node: SWIM membership (foca, sans-IO core plus a thin UDP
//! task), the partition ring computed from the live member set, and the links to peers.
//! The pure parts here are also what `chorus-simulations` drives in simulated time.

pub mod certs;
pub mod gossip;
pub mod keyring_file;
pub mod links;
pub mod membership;
pub mod ring;
pub mod routing;
pub mod runtime;
pub mod state;
