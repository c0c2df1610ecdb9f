//! What this node currently believes about the cluster: the live members with their
//! addresses and the ring placed on them. Membership writes it; the server, the links
//! and `chorus ctl` read it without waiting (a `watch` channel).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chorus_protocol::{NodeId, RingMember, RingSnapshot};
use tokio::sync::watch;
use tracing::info;

use super::ring::{Ring, RingError};

/// Ring changes since start, by the metrics endpoint.
pub const RING_CHANGES: &str = "chorus_ring_changes_total";
/// Partitions whose owner changed, summed over ring changes.
pub const RING_PARTITIONS_MOVED: &str = "chorus_ring_partitions_moved_total";
/// Live members in this node's view.
pub const CLUSTER_MEMBERS: &str = "chorus_cluster_members";

/// The ring at one epoch, with the addresses of its members.
#[derive(Debug)]
pub struct RingView {
    /// The placement.
    pub ring: Ring,
    /// Each member's QUIC address (clients and links).
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    /// When this node adopted the placement.
    pub since: SystemTime,
    /// Partitions whose owner changed from the previous placement.
    pub moved: u32,
}

impl RingView {
    /// The placement as clients receive it.
    pub fn snapshot(&self) -> RingSnapshot {
        let members = self
            .ring
            .members()
            .iter()
            .map(|node| RingMember {
                node: node.clone(),
                addr: self
                    .addrs
                    .get(node)
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            })
            .collect();
        RingSnapshot {
            epoch: self.ring.epoch().0,
            partitions: self.ring.partitions(),
            members,
            owners: self.ring.owner_table(),
        }
    }
}

/// This node's view of the cluster; cheap to clone.
#[derive(Clone, Debug)]
pub struct ClusterState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: NodeId,
    addr: SocketAddr,
    partitions: u16,
    ring: watch::Sender<Arc<RingView>>,
    /// Every other member in the member table, down ones included: a node that may
    /// hold items (reads that miss must not say "not found" while one is unreachable).
    known: Mutex<BTreeSet<NodeId>>,
}

impl ClusterState {
    /// A cluster of this node alone (until membership reports others).
    pub fn new(node: NodeId, addr: SocketAddr, partitions: u16) -> Result<Self, RingError> {
        let ring = Ring::place([node.clone()], partitions)?;
        // Exported from the start, so that a rate over them has a first sample.
        metrics::counter!(RING_CHANGES).increment(0);
        metrics::counter!(RING_PARTITIONS_MOVED).increment(0);
        metrics::gauge!(CLUSTER_MEMBERS).set(1.0);
        let view = RingView {
            ring,
            addrs: BTreeMap::from([(node.clone(), addr)]),
            since: SystemTime::now(),
            moved: 0,
        };
        Ok(ClusterState {
            inner: Arc::new(Inner {
                node,
                addr,
                partitions,
                ring: watch::channel(Arc::new(view)).0,
                known: Mutex::new(BTreeSet::new()),
            }),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// This node's QUIC address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<RingView> {
        self.inner.ring.borrow().clone()
    }

    /// Follows ring changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RingView>> {
        self.inner.ring.subscribe()
    }

    /// Every other member this node knows of, down ones included.
    pub fn known_peers(&self) -> Vec<NodeId> {
        let known = self.inner.known.lock().unwrap_or_else(|p| p.into_inner());
        known.iter().cloned().collect()
    }

    /// The member table changed: remembers every other member in it.
    pub fn set_known(&self, members: impl IntoIterator<Item = NodeId>) {
        let mut known = self.inner.known.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(members.into_iter().filter(|n| n != &self.inner.node));
    }

    /// The live members (this node included) and their addresses changed: places the
    /// ring again if the member set differs. Returns the partitions moved, if it did.
    pub fn set_members(&self, live: BTreeMap<NodeId, SocketAddr>) -> Option<u32> {
        let mut live = live;
        live.insert(self.inner.node.clone(), self.inner.addr);
        let current = self.ring();
        let same_members = current.ring.members().iter().eq(live.keys());
        if same_members {
            if current.addrs != live {
                let view = RingView {
                    ring: current.ring.clone(),
                    addrs: live,
                    since: current.since,
                    moved: current.moved,
                };
                self.inner.ring.send_replace(Arc::new(view));
            }
            return None;
        }
        let ring = Ring::place(live.keys().cloned(), self.inner.partitions)
            .expect("a member set with this node is never empty");
        let moved = ring.moved_from(&current.ring);
        info!(
            epoch = ring.epoch().0,
            members = ring.members().len(),
            moved,
            balance = ring.balance(),
            "ring placed"
        );
        metrics::counter!(RING_CHANGES).increment(1);
        metrics::counter!(RING_PARTITIONS_MOVED).increment(u64::from(moved));
        metrics::gauge!(CLUSTER_MEMBERS).set(ring.members().len() as f64);
        self.inner.ring.send_replace(Arc::new(RingView {
            ring,
            addrs: live,
            since: SystemTime::now(),
            moved,
        }));
        Some(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 7400))
    }

    #[test]
    fn alone_it_owns_every_partition() {
        let state = ClusterState::new(NodeId("a".into()), addr(1), 64).unwrap();
        let snapshot = state.ring().snapshot();
        snapshot.validate().unwrap();
        assert_eq!(snapshot.members.len(), 1);
        assert!(snapshot.owners.iter().all(|&o| o == 0));
    }

    #[test]
    fn a_new_member_set_moves_partitions_and_the_same_set_does_not() {
        let state = ClusterState::new(NodeId("a".into()), addr(1), 64).unwrap();
        let before = state.ring().ring.epoch();
        let two = BTreeMap::from([(NodeId("b".into()), addr(2))]);
        let moved = state.set_members(two.clone()).expect("the ring moved");
        assert!(moved > 0 && moved < 64, "{moved}");
        assert_ne!(state.ring().ring.epoch(), before);
        assert_eq!(state.set_members(two), None);
        assert_eq!(state.ring().ring.members().len(), 2);
    }
}
