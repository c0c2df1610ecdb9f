//! What the actor-tree tests share: a caller, a store in a temporary directory, and a
//! node started on it with a given pipeline.

#![allow(dead_code)]

use std::path::Path;

use chorus_actors::{Caller, Durability, NodeHandle, PipelineConfig, StoreConfig};
use chorus_protocol::{NodeId, Role};

/// An admin caller.
pub fn caller() -> Caller {
    Caller::for_key("chorus_test", Role::Admin)
}

/// A 16-partition store under `dir` with the given durability.
pub fn store_config(dir: &Path, durability: Durability) -> StoreConfig {
    StoreConfig {
        path: dir.join("store"),
        node: NodeId("node-a".into()),
        partitions: 16,
        durability,
        log: chorus_actors::store::LogConfig::default(),
    }
}

/// A node on a fresh store under `dir` (flush durability: these tests are about the
/// actors, not the disk) with `pipeline`.
pub async fn start(dir: &Path, pipeline: PipelineConfig) -> NodeHandle {
    NodeHandle::start_with(store_config(dir, Durability::Flush), pipeline)
        .await
        .unwrap()
}
