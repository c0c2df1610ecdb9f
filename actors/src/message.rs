//! Local-only actor messages under ractor's `cluster` feature.
//!
//! Without `cluster`, ractor implements `Message` for every `Send + 'static` type; with
//! it (enabled by this crate's `cluster` feature, which must be on whenever something
//! in the build turns on `ractor/cluster`), each message type needs its own impl. Ours
//! are never sent to another node, so the defaults (not serializable) are right.

#[cfg(feature = "cluster")]
mod impls {
    impl ractor::Message for crate::store_actor::StoreMsg {}
    impl ractor::Message for crate::intake::IntakeMsg {}
    impl ractor::Message for crate::supervisor::SupervisorMsg {}
    impl ractor::Message for crate::validator_pool::ValidateJob {}
    impl ractor::Message for crate::validator_pool::ValidatorArgs {}
    impl ractor::Message for crate::tier_queues::TierMsg {}
}
