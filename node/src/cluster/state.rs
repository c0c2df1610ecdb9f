//! What this node currently believes about the cluster: the live members with their
//! addresses, the replica sets placed on them (and, with replication, on members down
//! for less than a grace period, so that a down verdict moves leadership at once but
//! data only after the grace), and each partition's leader. Membership writes it; the server, the links
//! and `chorus ctl` read it without waiting (a `watch` channel).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use chorus_protocol::{NodeId, PartitionId, RingMember, RingSnapshot, partition_of};
use tokio::sync::watch;
use tracing::info;

use super::placement::{self, ReplicaSets, Sets};
use super::ring::{Ring, RingError};
use super::standing::{Standing, Standings};
use super::standing_file::{self, StandingFileError};

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
    /// Per partition: its voting replicas, as indices in the placement's members,
    /// owner first (computed once per placement: a preference list sorts every member).
    replica_sets: Arc<Sets>,
    /// Per partition: its learners (replicas being streamed it before they vote).
    learners: Arc<Sets>,
    /// What of the members' standings shaped the sets ([`placement::standing_key`]).
    standing_key: u64,
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
    /// The view of `ring` with `live` members, `factor` replicas per partition, every
    /// member warm and uncordoned.
    pub fn new(
        ring: Ring,
        factor: usize,
        live: BTreeSet<NodeId>,
        addrs: BTreeMap<NodeId, SocketAddr>,
    ) -> RingView {
        Self::placed(ring, factor, None, live, addrs)
    }

    /// The view of `ring` under the members' `standings` (see [`placement`]).
    pub fn placed(
        ring: Ring,
        factor: usize,
        standings: Option<&Standings>,
        live: BTreeSet<NodeId>,
        addrs: BTreeMap<NodeId, SocketAddr>,
    ) -> RingView {
        let standing_key = placement::standing_key(ring.members(), factor, standings);
        let ReplicaSets { voters, learners } = placement::replica_sets(&ring, factor, standings);
        let sets = (Arc::new(voters), Arc::new(learners));
        Self::with_sets(ring, sets, standing_key, factor, live, addrs)
    }

    /// This view's placement with other live members and addresses.
    fn relive(&self, live: BTreeSet<NodeId>, addrs: BTreeMap<NodeId, SocketAddr>) -> RingView {
        let sets = (Arc::clone(&self.replica_sets), Arc::clone(&self.learners));
        Self::with_sets(
            self.ring.clone(),
            sets,
            self.standing_key,
            self.factor,
            live,
            addrs,
        )
    }

    /// The view of `ring` whose voters and learners are `sets`.
    fn with_sets(
        ring: Ring,
        (voters, learners): (Arc<Sets>, Arc<Sets>),
        standing_key: u64,
        factor: usize,
        live: BTreeSet<NodeId>,
        addrs: BTreeMap<NodeId, SocketAddr>,
    ) -> RingView {
        let mut view = RingView {
            ring,
            factor,
            live,
            replica_sets: voters,
            learners,
            standing_key,
            leaders: Vec::new(),
            addrs,
            since: SystemTime::now(),
            moved: 0,
        };
        view.leaders = view.elect();
        view
    }

    /// Each partition's leader: its first live voter. A partition none of whose voters
    /// is live keeps its first one, down: its requests fail as Unavailable until one is
    /// back.
    fn elect(&self) -> Vec<u16> {
        let members = self.ring.members();
        self.replica_sets
            .iter()
            .map(|set| {
                set.iter()
                    .copied()
                    .find(|&i| self.live.contains(&members[usize::from(i)]))
                    .unwrap_or(set[0])
            })
            .collect()
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

    /// Partition `p`'s learners: replicas being streamed it before they vote.
    ///
    /// # Panics
    /// If `p` is not below the partition count.
    pub fn learners(&self, p: PartitionId) -> impl Iterator<Item = &NodeId> {
        self.learners[usize::from(p)]
            .iter()
            .map(|&i| &self.ring.members()[usize::from(i)])
    }

    /// Partitions with a learner.
    pub fn learning(&self) -> u32 {
        self.learners.iter().filter(|l| !l.is_empty()).count() as u32
    }

    /// Names the view: changes whenever the placement, the standings that shape it or
    /// the live members do.
    pub fn epoch(&self) -> u64 {
        let mut bytes = self.ring.epoch().0.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.standing_key.to_le_bytes());
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
    /// The members' standings and where they are kept.
    standings: Mutex<StandingsState>,
    /// Each other member's run (incarnation) as membership last reported it.
    runs: Mutex<BTreeMap<NodeId, u64>>,
    /// The view before the last change of placement (a new leader weighs the logs of
    /// the replicas that change dropped).
    previous: Mutex<Option<Arc<RingView>>>,
    /// Told when this node's own standing changes (the standings sync pushes it).
    own_changed: tokio::sync::Notify,
    /// The last members given to [`ClusterState::set_view`]: live ones and how long
    /// each down one has been down.
    inputs: Mutex<(BTreeMap<NodeId, SocketAddr>, BTreeMap<NodeId, Duration>)>,
}

/// The standings this node knows and the file they are saved to.
#[derive(Debug, Default)]
struct StandingsState {
    standings: Standings,
    file: Option<PathBuf>,
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
                standings: Mutex::new(StandingsState::default()),
                own_changed: tokio::sync::Notify::new(),
                previous: Mutex::new(None),
                runs: Mutex::new(BTreeMap::new()),
                inputs: Mutex::new((BTreeMap::new(), BTreeMap::new())),
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

    /// The view before the last change of placement, if the placement changed since
    /// start.
    pub fn previous_ring(&self) -> Option<Arc<RingView>> {
        lock(&self.inner.previous).clone()
    }

    /// Follows ring changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RingView>> {
        self.inner.ring.subscribe()
    }

    /// Every other member this node knows of, down ones included.
    pub fn known_peers(&self) -> Vec<NodeId> {
        lock(&self.inner.known).iter().cloned().collect()
    }

    /// The runs (incarnations) of the other live members, as membership reports them.
    pub fn set_runs(&self, runs: BTreeMap<NodeId, u64>) {
        *lock(&self.inner.runs) = runs;
    }

    /// `node`'s current run, if it is a live member: a restart changes it.
    pub fn run_of(&self, node: &NodeId) -> Option<u64> {
        lock(&self.inner.runs).get(node).copied()
    }

    /// The member table changed: remembers every other member in it.
    pub fn set_known(&self, members: impl IntoIterator<Item = NodeId>) {
        let mut known = lock(&self.inner.known);
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
        *lock(&self.inner.inputs) = (live.clone(), down_for.clone());
        self.place(live, down_for)
    }

    /// Places the ring for `live` and `down_for` under the standings known now.
    fn place(
        &self,
        live: BTreeMap<NodeId, SocketAddr>,
        down_for: &BTreeMap<NodeId, Duration>,
    ) -> (Option<u32>, Option<Duration>) {
        let grace = self.inner.grace;
        let state = lock(&self.inner.standings);
        // A drained member is gone for good: no grace.
        let within: BTreeMap<&NodeId, Duration> = down_for
            .iter()
            .filter(|(n, d)| !live.contains_key(*n) && **d < grace && !state.standings.departed(n))
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
        let standings = Some(&state.standings);
        let placed_list: Vec<NodeId> = placed.iter().cloned().collect();
        let same_placement = current.ring.members() == placed_list.as_slice()
            && current.standing_key
                == placement::standing_key(&placed_list, self.inner.factor, standings);
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
            *lock(&self.inner.previous) = Some(Arc::clone(&current));
            let ring = Ring::place(placed, self.inner.partitions)
                .expect("a member set with this node is never empty");
            RingView::placed(ring, self.inner.factor, standings, live_set, live)
        };
        drop(state);
        let moved = view.moved_from(&current);
        view.moved = moved;
        info!(
            epoch = view.epoch(),
            placed = view.ring.members().len(),
            live = view.live.len(),
            learning = view.learning(),
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

    /// Places the ring again with the last members given, after the standings changed.
    fn place_again(&self) {
        let (live, down_for) = lock(&self.inner.inputs).clone();
        let live = if live.is_empty() {
            BTreeMap::from([(self.inner.node.clone(), self.inner.addr)])
        } else {
            live
        };
        self.place(live, &down_for);
    }

    /// Loads the standings saved in `file` (if any) and saves every change there from
    /// now on; returns this node's own standing as saved, if it was.
    pub fn keep_standings_in(&self, file: PathBuf) -> Result<Option<Standing>, StandingFileError> {
        let loaded = standing_file::load(&file)?.unwrap_or_default();
        let own = loaded.get(&self.inner.node).cloned();
        {
            let mut state = lock(&self.inner.standings);
            state.standings.merge(loaded);
            state.file = Some(file);
        }
        self.place_again();
        Ok(own)
    }

    /// Every member's standing as known here.
    pub fn standings(&self) -> Standings {
        lock(&self.inner.standings).standings.clone()
    }

    /// This node's own standing, once set.
    pub fn own_standing(&self) -> Option<Standing> {
        lock(&self.inner.standings)
            .standings
            .get(&self.inner.node)
            .cloned()
    }

    /// Whether this node is still warming up (it learns its partitions and leads none);
    /// a node that never set its standing is not.
    pub fn warming(&self) -> bool {
        self.inner.factor > 1 && self.own_standing().is_some_and(|s| s.warming)
    }

    /// Takes the entries of `incoming` newer than those known (never one about this
    /// node: it alone writes its own), saves and places the ring again if any was;
    /// returns how many were.
    pub fn merge_standings(&self, incoming: Standings) -> usize {
        let me = &self.inner.node;
        let others =
            Standings::from_entries(incoming.into_entries().into_iter().filter(|(n, _)| n != me));
        let merged = {
            let mut state = lock(&self.inner.standings);
            let merged = state.standings.merge(others);
            if merged > 0
                && let Err(error) = save(&state)
            {
                tracing::warn!(%error, "saving the members' standings failed");
            }
            merged
        };
        if merged > 0 {
            self.place_again();
        }
        merged
    }

    /// Sets this node's own standing to `standing` (saved before it is used), and
    /// places the ring again.
    pub fn set_own_standing(&self, standing: Standing) -> Result<(), StandingFileError> {
        {
            let mut state = lock(&self.inner.standings);
            let mut next = state.standings.clone();
            next.set(self.inner.node.clone(), standing);
            let previous = std::mem::replace(&mut state.standings, next);
            if let Err(error) = save(&state) {
                state.standings = previous;
                return Err(error);
            }
        }
        self.place_again();
        self.inner.own_changed.notify_one();
        Ok(())
    }

    /// Waits until this node's own standing changes (from the last time this returned).
    pub async fn own_standing_changed(&self) {
        self.inner.own_changed.notified().await;
    }
}

/// Saves `state`'s standings to its file, if it has one.
fn save(state: &StandingsState) -> Result<(), StandingFileError> {
    match &state.file {
        Some(file) => standing_file::save(file, &state.standings),
        None => Ok(()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 7400))
    }

    /// Each of `names` at its own address, in order.
    fn addressed(names: &[NodeId]) -> BTreeMap<NodeId, SocketAddr> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), addr(i as u8 + 1)))
            .collect()
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
        let all = addressed(&names);
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

    fn standing(warming: bool, departed: bool) -> Standing {
        Standing {
            version: 1,
            warming,
            departed,
            cordoned: None,
        }
    }

    #[test]
    fn standings_shape_the_ring_a_joiner_learns_and_a_departed_member_has_no_grace() {
        let names = ["a", "b", "c", "d"].map(|n| NodeId(n.into()));
        let state =
            ClusterState::replicated(names[0].clone(), addr(1), 64, 3, Duration::from_secs(60))
                .unwrap();
        let warm = Standings::from_entries(
            names[..3]
                .iter()
                .map(|n| (n.clone(), standing(false, false))),
        );
        state.merge_standings(warm);
        state
            .set_own_standing(standing(false, false))
            .expect("no file to save to");
        let all = addressed(&names);
        state.set_members(all.clone());
        // d has said nothing: it learns, and neither votes nor leads.
        let view = state.ring();
        assert!(view.learning() > 0);
        for p in 0..64 {
            assert!(view.replicas(p).all(|r| *r != names[3]));
            assert_ne!(view.leader(p), &names[3]);
        }
        // Warm, it votes where the full placement puts it.
        let epoch = view.epoch();
        let merged = state.merge_standings(Standings::from_entries([(
            names[3].clone(),
            standing(false, false),
        )]));
        assert_eq!(merged, 1);
        let view = state.ring();
        assert_ne!(view.epoch(), epoch);
        assert_eq!(view.learning(), 0);
        assert!((0..64).any(|p| view.replicas(p).any(|r| *r == names[3])));
        // Down, it keeps its place for the grace; departed, it has none.
        let mut live = all.clone();
        live.remove(&names[3]);
        let down = BTreeMap::from([(names[3].clone(), Duration::from_secs(1))]);
        state.set_view(live.clone(), &down);
        assert_eq!(state.ring().ring.members().len(), 4);
        let departed = Standing {
            version: 2,
            ..standing(false, true)
        };
        state.merge_standings(Standings::from_entries([(names[3].clone(), departed)]));
        assert_eq!(state.ring().ring.members().len(), 3);
        // Nobody writes this node's standing but itself.
        let forged = Standing {
            version: u64::MAX,
            ..standing(true, false)
        };
        assert_eq!(
            state.merge_standings(Standings::from_entries([(names[0].clone(), forged)])),
            0
        );
        assert!(!state.warming());
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
