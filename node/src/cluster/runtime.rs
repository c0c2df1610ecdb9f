//! A node's cluster layer, running: gossip on its UDP socket, the ring following the
//! live members, and the links told whom to connect to. Built by the agent from
//! `[cluster]`; a node without that section has only its [`ClusterState`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chorus_protocol::NodeId;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::info;

use super::gossip::{Gossip, GossipKeys, KeyOp, KeysError, MembersView};
use super::keyring_file::{self, KeyringFileError};
use super::membership::{
    ClusterKey, GossipSettings, KeyInfo, Keyring, MemberIdentity, MemberState,
};
use super::state::ClusterState;

/// Why the cluster layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStartError {
    /// The gossip socket could not be bound.
    #[error("binding the gossip socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gossip keyring file could not be read.
    #[error("gossip keyring: {0}")]
    Keyring(#[from] KeyringFileError),
}

/// What the cluster layer reports of a member joining or leaving the ring.
pub trait MemberLinks: Send + Sync + 'static {
    /// `node` is live at `link_addr`: link to it.
    fn member_up(&self, node: NodeId, link_addr: SocketAddr);
    /// `node` is down or gone: drop its link.
    fn member_down(&self, node: &NodeId);
    /// `node` restarted (a new incarnation) at `link_addr`: its old link is stale.
    fn member_renewed(&self, node: NodeId, link_addr: SocketAddr);
}

impl MemberLinks for super::links::Links {
    fn member_up(&self, node: NodeId, link_addr: SocketAddr) {
        super::links::Links::member_up(self, node, link_addr);
    }

    fn member_down(&self, node: &NodeId) {
        super::links::Links::member_down(self, node);
    }

    fn member_renewed(&self, node: NodeId, link_addr: SocketAddr) {
        super::links::Links::member_renewed(self, node, link_addr);
    }
}

/// Settings of the cluster layer.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// Where gossip listens.
    pub gossip_listen: SocketAddr,
    /// The gossip address members send to.
    pub gossip_addr: SocketAddr,
    /// Members to join through.
    pub seeds: Vec<SocketAddr>,
    /// The cluster key: the gossip keyring starts from it when there is no keyring file.
    pub key: ClusterKey,
    /// The gossip keyring's file (in the data dir): loaded at start if present, and
    /// written on every change. None: the keyring lives in memory only.
    pub keyring_file: Option<std::path::PathBuf>,
    /// How gossip runs.
    pub gossip: GossipSettings,
}

/// The running cluster layer; cheap to clone.
#[derive(Clone, Debug)]
pub struct ClusterRuntime {
    state: ClusterState,
    gossip: Gossip,
    /// Taken (and ended) by the first `abort` or `leave`.
    follower: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl ClusterRuntime {
    /// Binds gossip, joins through the seeds and keeps `state` (and `links`, if any)
    /// following the live members.
    pub async fn start(
        settings: ClusterSettings,
        state: ClusterState,
        links: Option<Arc<dyn MemberLinks>>,
    ) -> Result<ClusterRuntime, ClusterStartError> {
        let keyring = match &settings.keyring_file {
            Some(path) => keyring_file::load(path)?,
            None => None,
        };
        let keyring = keyring.unwrap_or_else(|| Keyring::from_cluster_key(&settings.key));
        let socket = UdpSocket::bind(settings.gossip_listen)
            .await
            .map_err(|source| ClusterStartError::Bind {
                addr: settings.gossip_listen,
                source,
            })?;
        // A restart must outrank every earlier run of this node: wall-clock milliseconds.
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let identity = MemberIdentity::new(
            state.node().clone(),
            settings.gossip_addr,
            state.addr(),
            incarnation,
        );
        info!(
            gossip = %settings.gossip_addr,
            seeds = ?settings.seeds,
            incarnation,
            "joining the cluster"
        );
        let gossip = Gossip::start(
            socket,
            identity,
            settings.gossip,
            GossipKeys {
                keyring,
                file: settings.keyring_file.clone(),
            },
            settings.seeds,
            incarnation,
        )
        .map_err(|source| ClusterStartError::Bind {
            addr: settings.gossip_listen,
            source,
        })?;
        let follower = tokio::spawn(follow(gossip.clone(), state.clone(), links));
        Ok(ClusterRuntime {
            state,
            gossip,
            follower: Arc::new(std::sync::Mutex::new(Some(follower))),
        })
    }

    /// The ring and members as this node sees them.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The member table (for `chorus ctl members`).
    pub fn members(&self) -> Arc<MembersView> {
        self.gossip.members().borrow().clone()
    }

    /// Runs a gossip keyring operation (`chorus ctl gossip-keys`); a change is written
    /// to the keyring file before it is used.
    pub async fn gossip_keys(&self, op: KeyOp) -> Result<Vec<KeyInfo>, KeysError> {
        self.gossip.keys(op).await
    }

    /// The gossip address bound.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip.local_addr()
    }

    /// Stops gossiping without a word to the others, as a crash would look to them
    /// (they suspect this node, then declare it down).
    pub fn abort(&self) {
        self.gossip.abort();
        if let Some(follower) = self.take_follower() {
            follower.abort();
        }
    }

    /// Leaves the cluster gracefully: the others learn it at once and place the ring
    /// without this node.
    pub async fn leave(&self) {
        self.gossip.leave().await;
        if let Some(follower) = self.take_follower() {
            follower.abort();
            // Ended (aborted) before this returns: nothing of this layer outlives it.
            let _ = follower.await;
        }
    }

    fn take_follower(&self) -> Option<JoinHandle<()>> {
        self.follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Past a down member's grace before the ring is placed again (the clocks that measure
/// it are not the same one).
const GRACE_SLACK: std::time::Duration = std::time::Duration::from_millis(50);

/// Keeps the ring and the links following the member table.
async fn follow(gossip: Gossip, state: ClusterState, links: Option<Arc<dyn MemberLinks>>) {
    let mut members = gossip.members();
    // The peers linked, with the address and run (incarnation) they were linked at.
    let mut linked: BTreeMap<NodeId, (SocketAddr, u64)> = BTreeMap::new();
    loop {
        let view = members.borrow_and_update().clone();
        let runs: BTreeMap<NodeId, (SocketAddr, u64)> = view
            .members
            .iter()
            .filter(|m| m.state != MemberState::Down && !m.is_self)
            .map(|m| {
                (
                    m.identity.node().clone(),
                    (m.identity.link_addr(), m.incarnation),
                )
            })
            .collect();
        if let Some(links) = &links {
            for (node, &(addr, run)) in &runs {
                match linked.get(node) {
                    None => links.member_up(node.clone(), addr),
                    Some(&(old_addr, old_run)) if old_addr != addr || old_run != run => {
                        links.member_renewed(node.clone(), addr)
                    }
                    Some(_) => {}
                }
            }
            for node in linked.keys() {
                if !runs.contains_key(node) {
                    links.member_down(node);
                }
            }
        }
        state.set_known(view.members.iter().map(|m| m.identity.node().clone()));
        state.set_runs(runs.iter().map(|(n, &(_, run))| (n.clone(), run)).collect());
        let live = runs
            .iter()
            .map(|(n, &(addr, _))| (n.clone(), addr))
            .collect();
        linked = runs;
        let now = SystemTime::now();
        let down_for = view
            .members
            .iter()
            .filter(|m| m.state == MemberState::Down && !m.is_self)
            .map(|m| {
                let since = view.origin + m.since;
                let down = now.duration_since(since).unwrap_or_default();
                (m.identity.node().clone(), down)
            })
            .collect();
        let (_, grace_ends) = state.set_view(live, &down_for);
        // Placed again when a down member's grace ends, even if nothing else changes.
        let wait_grace = async {
            match grace_ends {
                Some(after) => tokio::time::sleep(after + GRACE_SLACK).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = members.changed() => if changed.is_err() { return },
            _ = wait_grace => {}
        }
    }
}
