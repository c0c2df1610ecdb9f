//! Who a member is: its name, its addresses and the incarnation that tells one run of a
//! node from the next.

use std::cmp::Ordering;
use std::fmt;
use std::net::SocketAddr;

use chorus_protocol::NodeId;
use serde::{Deserialize, Serialize};

/// One run of a cluster member, as SWIM knows it.
///
/// foca's address for an identity is the node's name (as a [`NameKey`]), so a node that
/// restarts under the same name with a higher [`incarnation`](Self::incarnation)
/// replaces its old self in every member's table instead of waiting for the old one to
/// be forgotten.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberIdentity {
    /// The node's name, unique within the cluster.
    #[serde(with = "node_id")]
    pub node: NodeId,
    /// Where the node receives gossip (UDP).
    pub gossip_addr: SocketAddr,
    /// The node's QUIC address, for cluster links and clients.
    pub link_addr: SocketAddr,
    /// Which run of the node this is; a restart must start from a value above any earlier
    /// run's (the caller passes wall-clock milliseconds), a rejoin adds one.
    pub incarnation: u64,
}

impl MemberIdentity {
    /// An identity for one run of `node`.
    pub fn new(
        node: NodeId,
        gossip_addr: SocketAddr,
        link_addr: SocketAddr,
        incarnation: u64,
    ) -> Self {
        MemberIdentity {
            node,
            gossip_addr,
            link_addr,
            incarnation,
        }
    }

    /// Orders two identities sharing a name: the higher incarnation wins; equal
    /// incarnations (a misconfiguration: two processes claiming one run) are broken by the
    /// addresses so that every member picks the same winner.
    fn precedence(&self, other: &Self) -> Ordering {
        self.incarnation
            .cmp(&other.incarnation)
            .then_with(|| self.gossip_addr.cmp(&other.gossip_addr))
            .then_with(|| self.link_addr.cmp(&other.link_addr))
    }
}

/// What foca keys members by: a 64-bit hash of the node's name.
///
/// foca asks for an identity's address on every table lookup, so it must be cheap to
/// produce; cloning the name would allocate once per member per update. The key never
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
        let incarnation = self.incarnation.checked_add(1)?;
        Some(MemberIdentity {
            incarnation,
            ..self.clone()
        })
    }

    fn addr(&self) -> NameKey {
        NameKey::of(&self.node)
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.precedence(adversary) == Ordering::Greater
    }
}

impl fmt::Debug for MemberIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.node, self.incarnation, self.gossip_addr)
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
        assert_eq!(new.incarnation, 8);
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
        let other = MemberIdentity {
            node: NodeId("n2".into()),
            ..id(1, 7000)
        };
        assert_ne!(other.addr(), id(1, 7000).addr());
    }

    #[test]
    fn the_last_incarnation_cannot_renew() {
        assert!(id(u64::MAX, 7000).renew().is_none());
    }
}
