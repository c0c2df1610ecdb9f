//! Who a member is: its name, its addresses and the incarnation that tells one run of a
//! node from the next.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use chorus_protocol::NodeId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One run of a cluster member, as SWIM knows it.
///
/// foca's address for an identity is the node's name (as a [`NameKey`]), so a node that
/// restarts under the same name with a higher [`incarnation`](Self::incarnation)
/// replaces its old self in every member's table instead of waiting for the old one to
/// be forgotten.
///
/// Every member holds an identity for every other member, so an identity is a small
/// handle: the name's key, computed once (foca asks for it at every entry of its table
/// scans), and a shared pointer to the run's immutable data. Identities decoded through
/// one [`IdentityInterner`] share that data. Equality and hashing are by value (name,
/// addresses, incarnation), whether or not two handles share their data; on the wire an
/// identity is the name, the two addresses and the incarnation (the key is recomputed
/// when decoded).
#[derive(Clone)]
pub struct MemberIdentity {
    key: NameKey,
    run: Arc<Run>,
}

/// The immutable data of one run.
#[derive(PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(in crate::cluster::membership) struct Run {
    #[serde(with = "node_id")]
    node: NodeId,
    gossip_addr: SocketAddr,
    link_addr: SocketAddr,
    incarnation: u64,
}

impl MemberIdentity {
    /// An identity for one run of `node`.
    pub fn new(
        node: NodeId,
        gossip_addr: SocketAddr,
        link_addr: SocketAddr,
        incarnation: u64,
    ) -> Self {
        Self::from_run(Run {
            node,
            gossip_addr,
            link_addr,
            incarnation,
        })
    }

    fn from_run(run: Run) -> Self {
        MemberIdentity {
            key: NameKey::of(&run.node),
            run: Arc::new(run),
        }
    }

    /// The node's name, unique within the cluster.
    pub fn node(&self) -> &NodeId {
        &self.run.node
    }

    /// Where the node receives gossip (UDP).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.run.gossip_addr
    }

    /// The node's QUIC address, for cluster links and clients.
    pub fn link_addr(&self) -> SocketAddr {
        self.run.link_addr
    }

    /// Which run of the node this is; a restart must start from a value above any earlier
    /// run's (the caller passes wall-clock milliseconds), a rejoin adds one.
    pub fn incarnation(&self) -> u64 {
        self.run.incarnation
    }

    /// The key of the node's name (what foca keys members by).
    pub fn key(&self) -> NameKey {
        self.key
    }

    /// The shared run data, for tables that key by [`NameKey`] and keep only the run.
    pub(in crate::cluster::membership) fn run(&self) -> &Arc<Run> {
        &self.run
    }

    /// Whether `run` is this identity's run (by value).
    pub(in crate::cluster::membership) fn is_run(&self, run: &Arc<Run>) -> bool {
        Arc::ptr_eq(&self.run, run) || *self.run == **run
    }

    /// Orders two identities sharing a name: the higher incarnation wins; equal
    /// incarnations (a misconfiguration: two processes claiming one run) are broken by the
    /// addresses so that every member picks the same winner.
    fn precedence(&self, other: &Self) -> Ordering {
        self.incarnation()
            .cmp(&other.incarnation())
            .then_with(|| self.gossip_addr().cmp(&other.gossip_addr()))
            .then_with(|| self.link_addr().cmp(&other.link_addr()))
    }
}

impl PartialEq for MemberIdentity {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.run, &other.run) || (self.key == other.key && self.run == other.run)
    }
}

impl Eq for MemberIdentity {}

impl Hash for MemberIdentity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.run.hash(state);
    }
}

impl Serialize for MemberIdentity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.run.serialize(s)
    }
}

impl<'de> Deserialize<'de> for MemberIdentity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Run::deserialize(d).map(Self::from_run)
    }
}

/// Shares the run data of identities decoded many times (every member gossips about
/// every other), so that a roster of N members holds N small handles and one copy of
/// each run. Cloning gives another handle to the same table; the node keeps one per
/// membership core, a process simulating many members may share one between them.
///
/// It holds weak references only: a run nobody holds any more is dropped, and its
/// entry is pruned once dead entries outnumber live ones, so the table stays within
/// twice the runs alive in the process.
#[derive(Clone, Default)]
pub struct IdentityInterner {
    table: Arc<Mutex<InternTable>>,
}

#[derive(Default)]
struct InternTable {
    runs: HashMap<(NameKey, u64), Weak<Run>>,
    /// Size at which dead entries are pruned next.
    prune_at: usize,
}

/// Entries an interner holds before it first prunes dead ones.
const MIN_PRUNE_AT: usize = 1_024;

impl IdentityInterner {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// `identity`, sharing the run data of an equal identity interned before if one is
    /// still alive.
    pub fn intern(&self, identity: MemberIdentity) -> MemberIdentity {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = (identity.key, identity.incarnation());
        if let Some(shared) = table.runs.get(&slot).and_then(Weak::upgrade)
            && identity.is_run(&shared)
        {
            return MemberIdentity {
                key: identity.key,
                run: shared,
            };
        }
        // New, dead, or another run claiming the same incarnation (a misconfiguration):
        // the latest one decoded is shared from now on.
        table.runs.insert(slot, Arc::downgrade(&identity.run));
        if table.runs.len() > table.prune_at {
            table.runs.retain(|_, run| run.strong_count() > 0);
            table.prune_at = (table.runs.len() * 2).max(MIN_PRUNE_AT);
        }
        identity
    }

    /// Runs in the table, dead ones not yet pruned included.
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .runs
            .len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for IdentityInterner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityInterner")
            .field("runs", &self.len())
            .finish()
    }
}

/// What foca keys members by: a 64-bit hash of the node's name.
///
/// foca asks for an identity's address at every entry of its table scans, so it is
/// computed once, when the identity is built or decoded, and kept in it. The key never
/// leaves this process. Two names sharing a key would be taken for one member; with
/// 64 bits that takes about four billion names before it becomes likely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(pub u64);

impl NameKey {
    /// The key of `node`.
    pub fn of(node: &NodeId) -> Self {
        NameKey(xxhash_rust::xxh3::xxh3_64(node.0.as_bytes()))
    }
}

impl foca::Identity for MemberIdentity {
    type Addr = NameKey;

    /// A node declared down comes back as the next incarnation of itself.
    fn renew(&self) -> Option<Self> {
        let incarnation = self.incarnation().checked_add(1)?;
        Some(MemberIdentity {
            key: self.key,
            run: Arc::new(Run {
                node: self.run.node.clone(),
                incarnation,
                ..*self.run
            }),
        })
    }

    fn addr(&self) -> NameKey {
        self.key
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.precedence(adversary) == Ordering::Greater
    }
}

impl fmt::Debug for MemberIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}#{}@{}",
            self.node(),
            self.incarnation(),
            self.gossip_addr()
        )
    }
}

impl fmt::Display for MemberIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `NodeId` carries no serde impls; on the wire it is its string.
pub(in crate::cluster::membership) mod node_id {
    use chorus_protocol::NodeId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(in crate::cluster::membership) fn serialize<S: Serializer>(
        id: &NodeId,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.0)
    }

    pub(in crate::cluster::membership) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<NodeId, D::Error> {
        String::deserialize(d).map(NodeId)
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn id(incarnation: u64, port: u16) -> MemberIdentity {
        MemberIdentity::new(
            NodeId("n1".into()),
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 1], port + 1)),
            incarnation,
        )
    }

    #[test]
    fn renewed_identity_wins_over_the_old_one() {
        let old = id(7, 7000);
        let new = old.renew().expect("renewable");
        assert_eq!(new.incarnation(), 8);
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn restart_with_a_later_incarnation_wins_even_on_a_new_address() {
        let old = id(1_000, 7000);
        let restarted = id(2_000, 6000);
        assert!(restarted.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&restarted));
    }

    #[test]
    fn equal_incarnations_have_exactly_one_winner() {
        let a = id(5, 7000);
        let b = id(5, 7100);
        assert_ne!(a.win_addr_conflict(&b), b.win_addr_conflict(&a));
    }

    #[test]
    fn the_address_is_the_name() {
        assert_eq!(id(1, 7000).addr(), id(2, 7100).addr());
        let one = id(1, 7000);
        let other = MemberIdentity::new(
            NodeId("n2".into()),
            one.gossip_addr(),
            one.link_addr(),
            one.incarnation(),
        );
        assert_ne!(other.addr(), one.addr());
        assert_eq!(one.addr(), NameKey::of(one.node()), "the key is the name's");
    }

    #[test]
    fn equality_and_hash_are_by_value_not_by_handle() {
        let hash = |identity: &MemberIdentity| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            identity.hash(&mut hasher);
            hasher.finish()
        };
        let (a, b) = (id(3, 7000), id(3, 7000));
        assert!(!Arc::ptr_eq(a.run(), b.run()));
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, id(4, 7000));
        assert_ne!(a, id(3, 7100));
    }

    #[test]
    fn the_wire_form_is_the_name_the_addresses_and_the_incarnation() {
        #[derive(Serialize)]
        struct Before<'a> {
            #[serde(with = "node_id")]
            node: &'a NodeId,
            gossip_addr: SocketAddr,
            link_addr: SocketAddr,
            incarnation: u64,
        }
        let identity = id(9, 7000);
        let config = bincode::config::standard();
        let before = Before {
            node: identity.node(),
            gossip_addr: identity.gossip_addr(),
            link_addr: identity.link_addr(),
            incarnation: identity.incarnation(),
        };
        let bytes = bincode::serde::encode_to_vec(&identity, config).expect("encode");
        assert_eq!(
            bytes,
            bincode::serde::encode_to_vec(&before, config).expect("encode")
        );
        let (decoded, _): (MemberIdentity, usize) =
            bincode::serde::decode_from_slice(&bytes, config).expect("decode");
        assert_eq!(decoded, identity);
        assert_eq!(decoded.key(), identity.key(), "the key is recomputed");
    }

    #[test]
    fn interned_identities_share_one_run() {
        let interner = IdentityInterner::new();
        let first = interner.intern(id(3, 7000));
        let again = interner.intern(id(3, 7000));
        assert!(Arc::ptr_eq(first.run(), again.run()));
        let other_run = interner.intern(id(4, 7000));
        assert!(!Arc::ptr_eq(first.run(), other_run.run()));
        // Same name and incarnation, other addresses: equal by value only, never merged.
        let impostor = interner.intern(id(3, 7100));
        assert_ne!(impostor, first);
    }

    #[test]
    fn an_interner_forgets_runs_nobody_holds() {
        let interner = IdentityInterner::new();
        let kept: Vec<MemberIdentity> = (0..10).map(|i| interner.intern(id(i, 7000))).collect();
        for round in 0..10 {
            for i in 0..MIN_PRUNE_AT as u64 {
                drop(interner.intern(id(1_000 + round * 10_000 + i, 7000)));
            }
        }
        assert!(interner.len() <= MIN_PRUNE_AT + 1, "{}", interner.len());
        for (i, identity) in (0..).zip(&kept) {
            let fresh = interner.intern(id(i, 7000));
            assert!(Arc::ptr_eq(identity.run(), fresh.run()), "still shared");
        }
    }

    #[test]
    fn the_last_incarnation_cannot_renew() {
        assert!(id(u64::MAX, 7000).renew().is_none());
    }
}
