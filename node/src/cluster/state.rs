//! What this node currently believes about the cluster: the live members with their
//! addresses, the replica sets placed on them (and, with replication, on members down
//! for less than a grace period, so that a down verdict moves leadership at once but
//! data only after the grace), and each partition's leader. Membership writes it; the server, the links
//! and `chorus ctl` read it without waiting (a `watch` channel).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chorus_protocol::{NodeId, PartitionId, RingMember, RingSnapshot, partition_of};
use tokio::sync::watch;
use tracing::info;

use super::ring::{Ring, RingError};

/// Ring changes since start, by the metrics endpoint.
pub const RING_CHANGES: &str = "chorus_ring_changes_total";
/// Partitions whose owner changed, summed over ring changes.
pub const RING_PARTITIONS_MOVED: &str = "chorus_ring_partitions_moved_total";
/// Live members in this node's view.
pub const CLUSTER_MEMBERS: &str = "chorus_cluster_members";

/// The ring at one epoch: the placement of replica sets on the placed members (the
/// live ones and, with replication, those down for less than the grace period), and
/// each partition's leader, the first live member of its replica set.
#[derive(Debug)]
pub struct RingView {
    /// The placement: each partition's replica set is its preference list.
    pub ring: Ring,
    /// Replicas per partition.
    pub factor: usize,
    /// The placed members that are live (this node always is).
    pub live: BTreeSet<NodeId>,
    /// Per partition: its replica set, as indices in the placement's members, owner
    /// first (computed once per placement: a preference list sorts every member).
    replica_sets: Arc<Vec<Box<[u16]>>>,
    /// Per partition: its leader's index in the placement's members.
    leaders: Vec<u16>,
    /// Each live member's QUIC address (clients and links).
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    /// When this node adopted the view.
    pub since: SystemTime,
    /// Partitions whose leader changed from the previous view.
    pub moved: u32,
}

impl RingView {
    /// The view of `ring` with `live` members, `factor` replicas per partition.
    pub fn new(
        ring: Ring,
        factor: usize,
        live: BTreeSet<NodeId>,
        addrs: BTreeMap<NodeId, SocketAddr>,
    ) -> RingView {
        let index = |node: &NodeId| {
            ring.members()
                .binary_search(node)
                .expect("a replica is a member") as u16
        };
        let replica_sets = (0..ring.partitions())
            .map(|p| {
                ring.preference_list(p, factor.max(1))
                    .iter()
                    .map(index)
                    .collect()
            })
            .collect();
        Self::with_sets(ring, Arc::new(replica_sets), factor, live, addrs)
    }

    /// This view's placement with other live members and addresses.
    fn relive(&self, live: BTreeSet<NodeId>, addrs: BTreeMap<NodeId, SocketAddr>) -> RingView {
        Self::with_sets(
            self.ring.clone(),
            Arc::clone(&self.replica_sets),
            self.factor,
            live,
            addrs,
        )
    }

    /// The view of `ring` whose replica sets are `replica_sets`.
    fn with_sets(
        ring: Ring,
        replica_sets: Arc<Vec<Box<[u16]>>>,
        factor: usize,
        live: BTreeSet<NodeId>,
        addrs: BTreeMap<NodeId, SocketAddr>,
    ) -> RingView {
        let members = ring.members();
        let leaders = replica_sets
            .iter()
            .map(|set| {
                // A partition none of whose replicas is live keeps its owner, down: its
                // requests fail as Unavailable until one is back.
                set.iter()
                    .copied()
                    .find(|&i| live.contains(&members[usize::from(i)]))
                    .unwrap_or(set[0])
            })
            .collect();
        RingView {
            ring,
            factor,
            live,
            replica_sets,
            leaders,
            addrs,
            since: SystemTime::now(),
            moved: 0,
        }
    }

    /// The leader of partition `p`.
    ///
    /// # Panics
    /// If `p` is not below the partition count.
    pub fn leader(&self, p: PartitionId) -> &NodeId {
        &self.ring.members()[usize::from(self.leaders[usize::from(p)])]
    }

    /// A user's partition and its leader.
    pub fn leader_of_user(&self, user_id: &str) -> (PartitionId, &NodeId) {
        let p = partition_of(user_id, self.ring.partitions());
        (p, self.leader(p))
    }

    /// Partition `p`'s replica set, owner first.
    ///
    /// # Panics
    /// If `p` is not below the partition count.
    pub fn replicas(&self, p: PartitionId) -> impl Iterator<Item = &NodeId> {
        self.replica_sets[usize::from(p)]
            .iter()
            .map(|&i| &self.ring.members()[usize::from(i)])
    }

    /// Names the view: changes whenever the placement or the live members do.
    pub fn epoch(&self) -> u64 {
        let mut bytes = self.ring.epoch().0.to_le_bytes().to_vec();
        for node in &self.live {
            bytes.extend_from_slice(node.0.as_bytes());
            bytes.push(0);
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// How many partitions each live member leads.
    pub fn leaders_per_node(&self) -> BTreeMap<NodeId, u32> {
        let mut counts: BTreeMap<NodeId, u32> = self.live.iter().map(|n| (n.clone(), 0)).collect();
        for &leader in &self.leaders {
            if let Some(count) = counts.get_mut(&self.ring.members()[usize::from(leader)]) {
                *count += 1;
            }
        }
        counts
    }

    /// Partitions none of whose replicas is live (their requests fail as Unavailable).
    pub fn leaderless(&self) -> u32 {
        self.leaders
            .iter()
            .filter(|&&l| !self.live.contains(&self.ring.members()[usize::from(l)]))
            .count() as u32
    }

    /// The most partitions any live member leads over the mean (1.0 is perfect).
    pub fn balance(&self) -> f64 {
        let counts = self.leaders_per_node();
        let max = counts.values().copied().max().unwrap_or(0);
        let mean = self.leaders.len() as f64 / counts.len().max(1) as f64;
        f64::from(max) / mean
    }

    /// How many partitions have another leader than in `previous`.
    pub fn moved_from(&self, previous: &RingView) -> u32 {
        if previous.ring.partitions() != self.ring.partitions() {
            return u32::from(self.ring.partitions());
        }
        (0..self.ring.partitions())
            .filter(|&p| self.leader(p) != previous.leader(p))
            .count() as u32
    }

    /// The leaders as clients receive them (a client sends each request to its
    /// partition's leader).
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
            epoch: self.epoch(),
            partitions: self.ring.partitions(),
            members,
            owners: self.leaders.clone(),
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
    factor: usize,
    /// How long a member declared down keeps its place in the replica sets.
    grace: Duration,
    ring: watch::Sender<Arc<RingView>>,
    /// Every other member in the member table, down ones included: a node that may
    /// hold items (reads that miss must not say "not found" while one is unreachable).
    known: Mutex<BTreeSet<NodeId>>,
}

impl ClusterState {
    /// A cluster of this node alone (until membership reports others), one replica per
    /// partition: a member's partitions move as soon as it is declared down.
    pub fn new(node: NodeId, addr: SocketAddr, partitions: u16) -> Result<Self, RingError> {
        Self::replicated(node, addr, partitions, 1, Duration::ZERO)
    }

    /// A cluster of this node alone (until membership reports others), `factor`
    /// replicas per partition; a member declared down keeps its place in the replica
    /// sets for `grace` (its partitions are led by the next live replica meanwhile).
    pub fn replicated(
        node: NodeId,
        addr: SocketAddr,
        partitions: u16,
        factor: usize,
        grace: Duration,
    ) -> Result<Self, RingError> {
        let ring = Ring::place([node.clone()], partitions)?;
        // Exported from the start, so that a rate over them has a first sample.
        metrics::counter!(RING_CHANGES).increment(0);
        metrics::counter!(RING_PARTITIONS_MOVED).increment(0);
        metrics::gauge!(CLUSTER_MEMBERS).set(1.0);
        let view = RingView::new(
            ring,
            factor,
            BTreeSet::from([node.clone()]),
            BTreeMap::from([(node.clone(), addr)]),
        );
        Ok(ClusterState {
            inner: Arc::new(Inner {
                node,
                addr,
                partitions,
                factor,
                grace: if factor > 1 { grace } else { Duration::ZERO },
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

    /// The live members (this node included) and their addresses changed, with no
    /// member down: see [`ClusterState::set_view`].
    pub fn set_members(&self, live: BTreeMap<NodeId, SocketAddr>) -> Option<u32> {
        self.set_view(live, &BTreeMap::new()).0
    }

    /// The live members (this node included) with their addresses, and how long each
    /// member declared down has been down. Places the ring again if the placed members
    /// (live, or down for less than the grace period) or the live ones changed.
    /// Returns the partitions whose leader moved, if the view changed, and when the
    /// next down member's grace ends (call again then).
    pub fn set_view(
        &self,
        live: BTreeMap<NodeId, SocketAddr>,
        down_for: &BTreeMap<NodeId, Duration>,
    ) -> (Option<u32>, Option<Duration>) {
        let mut live = live;
        live.insert(self.inner.node.clone(), self.inner.addr);
        let grace = self.inner.grace;
        let within: BTreeMap<&NodeId, Duration> = down_for
            .iter()
            .filter(|(n, d)| !live.contains_key(*n) && **d < grace)
            .map(|(n, d)| (n, grace - *d))
            .collect();
        let next_expiry = within.values().copied().min();
        let placed: BTreeSet<NodeId> = live
            .keys()
            .cloned()
            .chain(within.keys().map(|n| (*n).clone()))
            .collect();
        let live_set: BTreeSet<NodeId> = live.keys().cloned().collect();
        let current = self.ring();
        let same_placement = current.ring.members().iter().eq(placed.iter());
        if same_placement && current.live == live_set {
            if current.addrs != live {
                let mut view = current.relive(live_set, live);
                view.since = current.since;
                view.moved = current.moved;
                self.inner.ring.send_replace(Arc::new(view));
            }
            return (None, next_expiry);
        }
        let mut view = if same_placement {
            current.relive(live_set, live)
        } else {
            let ring = Ring::place(placed, self.inner.partitions)
                .expect("a member set with this node is never empty");
            RingView::new(ring, self.inner.factor, live_set, live)
        };
        let moved = view.moved_from(&current);
        view.moved = moved;
        info!(
            epoch = view.epoch(),
            placed = view.ring.members().len(),
            live = view.live.len(),
            moved,
            balance = view.balance(),
            "ring placed"
        );
        metrics::counter!(RING_CHANGES).increment(1);
        metrics::counter!(RING_PARTITIONS_MOVED).increment(u64::from(moved));
        metrics::gauge!(CLUSTER_MEMBERS).set(view.live.len() as f64);
        self.inner.ring.send_replace(Arc::new(view));
        (Some(moved), next_expiry)
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
        let before = state.ring().epoch();
        let two = BTreeMap::from([(NodeId("b".into()), addr(2))]);
        let moved = state.set_members(two.clone()).expect("the ring moved");
        assert!(moved > 0 && moved < 64, "{moved}");
        assert_ne!(state.ring().epoch(), before);
        assert_eq!(state.set_members(two), None);
        assert_eq!(state.ring().ring.members().len(), 2);
    }

    #[test]
    fn a_member_down_within_the_grace_keeps_its_replicas_and_loses_only_leadership() {
        let names = ["a", "b", "c", "d"].map(|n| NodeId(n.into()));
        let state =
            ClusterState::replicated(names[0].clone(), addr(1), 64, 3, Duration::from_secs(60))
                .unwrap();
        let all: BTreeMap<NodeId, SocketAddr> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), addr(i as u8 + 1)))
            .collect();
        state.set_members(all.clone());
        let before = state.ring();
        let led_by_d = (0..64).filter(|&p| before.leader(p) == &names[3]).count() as u32;
        assert!(led_by_d > 0);

        // d is declared down: the replica sets stay, its partitions' leaders move to
        // their next replica, nothing else moves, and the grace's end is reported.
        let mut live = all.clone();
        live.remove(&names[3]);
        let down = BTreeMap::from([(names[3].clone(), Duration::from_secs(5))]);
        let (moved, expiry) = state.set_view(live.clone(), &down);
        assert_eq!(moved, Some(led_by_d));
        assert_eq!(expiry, Some(Duration::from_secs(55)));
        let during = state.ring();
        assert_eq!(during.ring, before.ring, "the placement is the same");
        for p in 0..64 {
            assert_ne!(during.leader(p), &names[3]);
            assert_eq!(
                during.leader(p),
                during.replicas(p).find(|n| **n != names[3]).unwrap()
            );
        }
        assert!(during.snapshot().validate().is_ok());

        // After the grace the ring is placed without d.
        let down = BTreeMap::from([(names[3].clone(), Duration::from_secs(61))]);
        let (moved, expiry) = state.set_view(live, &down);
        assert!(moved.is_some());
        assert_eq!(expiry, None);
        assert_eq!(state.ring().ring.members().len(), 3);
    }

    #[test]
    fn with_one_replica_a_down_member_is_replaced_at_once() {
        let state = ClusterState::new(NodeId("a".into()), addr(1), 64).unwrap();
        state.set_members(BTreeMap::from([(NodeId("b".into()), addr(2))]));
        let down = BTreeMap::from([(NodeId("b".into()), Duration::from_secs(1))]);
        let (moved, _) = state.set_view(BTreeMap::new(), &down);
        assert!(moved.is_some());
        assert_eq!(state.ring().ring.members().len(), 1);
    }
}
