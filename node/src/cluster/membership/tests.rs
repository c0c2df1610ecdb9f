//! Several members wired through an in-memory network.
