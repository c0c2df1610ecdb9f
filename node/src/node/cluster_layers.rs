//! A cluster member's layers, brought up in order: its standing among the members, the
//! links to its peers on the node's endpoint, then gossip, which tells the links whom
//! to link to.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chorus_actors::NodeHandle;
use chorus_protocol::NodeId;

use super::{Parts, startup};
use crate::cluster::links::{LinkSettings, Links, link_cookie};
use crate::cluster::runtime::{ClusterRuntime, ClusterSettings, MemberLinks};
use crate::cluster::state::ClusterState;
use crate::config::{ClusterSection, NodeConfig};
use crate::tls::NodeCert;

/// What the layers are made from.
pub struct Inputs<'a> {
    /// The node's configuration.
    pub config: &'a NodeConfig,
    /// Its `[cluster]` section.
    pub section: &'a ClusterSection,
    /// The ring and members, which the layers keep current.
    pub state: &'a ClusterState,
    /// The store, which answers forwards.
    pub node: &'a NodeHandle,
    /// The node's one QUIC endpoint: links are dialed from it and accepted on it.
    pub endpoint: &'a quinn::Endpoint,
    /// The node's certificate, for the links' mutual TLS.
    pub cert: &'a Arc<NodeCert>,
}

/// Starts the links and joins through the seeds; each layer is put in `parts` as it
/// comes up, so a failed start stops it again.
pub async fn start(
    inputs: Inputs<'_>,
    parts: &mut Parts,
) -> anyhow::Result<(ClusterRuntime, Links)> {
    let Inputs {
        config,
        section,
        state,
        node,
        endpoint,
        cert,
    } = inputs;
    // A member with an empty store that joins through others has its partitions to
    // learn. One that founds the cluster (no seed but itself) has nothing to learn, and
    // one that holds data (a restart, an upgrade from a release without standings) was
    // a member already.
    let founder = section.seeds.iter().all(|s| *s == section.gossip_addr());
    let empty = (0..node.partitions()).all(|p| node.partition_state(p).1 == 0);
    let may_learn = section.replication_factor > 1 && !founder;
    startup::keep_standings(state, &config.data_dir, may_learn, empty)?;
    let key = section.load_key()?;
    let mut link_settings = LinkSettings::new(
        NodeId(config.node_id.clone()),
        link_cookie(&key.0),
        config.tls_paths(),
        endpoint.clone(),
    );
    link_settings.call_timeout = Duration::from_millis(section.forward_timeout_ms);
    link_settings.cluster = Some(state.clone());
    link_settings.cert = Some(Arc::clone(cert));
    let links = Links::start(link_settings, node.clone())
        .await
        .context("starting the cluster links")?;
    parts.links = Some(links.clone());
    let settings = ClusterSettings {
        gossip_listen: section.gossip_listen,
        gossip_addr: section.gossip_addr(),
        seeds: section.seeds.clone(),
        key,
        keyring_file: Some(
            config
                .data_dir
                .join(crate::cluster::keyring_file::KEYRING_FILE),
        ),
        gossip: section.gossip.clone(),
    };
    let member_links: Arc<dyn MemberLinks> = Arc::new(links.clone());
    let runtime = ClusterRuntime::start(settings, state.clone(), Some(member_links)).await?;
    parts.cluster = Some(runtime.clone());
    Ok((runtime, links))
}
