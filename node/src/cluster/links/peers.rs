//! The link table: what this node knows about each peer's link and breaker, as a plain
//! state machine over an explicit clock. The driver feeds it membership changes and
//! session events and asks it whether a forward may go out; it does no IO.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_actors::policy::breaker::{
    Admission, Breaker, BreakerConfig, BreakerConfigError, BreakerState, Permit, Transition,
};
use chorus_protocol::NodeId;

/// The state of the link to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Dialing the peer, or waiting for it to dial (the lower node id dials).
    Connecting,
    /// A session is up and synchronised: forwards can go out.
    Up,
    /// No session; the dialer retries while the peer is a member.
    Down,
}

impl LinkState {
    /// A short lowercase name for logs and `chorus ctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// One peer as `Links::peers` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// The peer's node id.
    pub node: NodeId,
    /// Where its link is dialed, if membership said.
    pub addr: Option<SocketAddr>,
    /// Whether membership lists it as up.
    pub member: bool,
    /// The link's state.
    pub link: LinkState,
    /// Since when the link is in that state.
    pub since: Instant,
    /// The state of the peer's circuit breaker.
    pub breaker: BreakerState,
}

/// Whether this node dials `peer` (the lower node id dials; the other waits), so that a
/// pair of nodes makes exactly one connection.
pub fn dials(local: &NodeId, peer: &NodeId) -> bool {
    local.0 < peer.0
}

/// Why a forward may not go out; nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Neither a member nor linked.
    Unknown,
    /// The link is not up.
    LinkNot(LinkState),
    /// The peer's breaker is open.
    BreakerOpen {
        /// When asking again may succeed.
        retry_after: Duration,
    },
}

/// What the driver does after [`PeerTable::member_up`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberUp {
    /// This node dials the peer.
    pub dial: bool,
    /// The label of a connection to close: the peer's previous incarnation.
    pub stale: Option<String>,
}

/// Leave to forward one request to a peer over its current session.
#[derive(Debug)]
pub struct Admitted {
    /// The breaker's permit; hand it back with the outcome.
    pub permit: Permit,
    /// The ractor_cluster node id of the session the request goes over.
    pub session_node: u64,
}

#[derive(Debug)]
struct Session {
    label: String,
    session_node: u64,
}

#[derive(Debug)]
struct Peer {
    addr: Option<SocketAddr>,
    member: bool,
    link: LinkState,
    since: Instant,
    breaker: Breaker,
    session: Option<Session>,
}

/// Every peer's link and breaker.
#[derive(Debug)]
pub struct PeerTable {
    local: NodeId,
    breaker: BreakerConfig,
    peers: HashMap<NodeId, Peer>,
}

impl PeerTable {
    /// An empty table for node `local`; every peer gets a breaker with `breaker`.
    pub fn new(local: NodeId, breaker: BreakerConfig) -> Result<Self, BreakerConfigError> {
        breaker.validate()?;
        Ok(PeerTable {
            local,
            breaker,
            peers: HashMap::new(),
        })
    }

    fn peer(&mut self, now: Instant, node: &NodeId) -> &mut Peer {
        let breaker = self.breaker;
        self.peers.entry(node.clone()).or_insert_with(|| Peer {
            addr: None,
            member: false,
            link: LinkState::Down,
            since: now,
            breaker: Breaker::new(breaker, now).expect("validated in PeerTable::new"),
            session: None,
        })
    }

    /// Membership reports `node` up at `addr`. The answer says whether this node must
    /// dial it, and names the connection of a session with it to close: a peer that
    /// moved to another address is a new incarnation, and its old link is dead.
    pub fn member_up(&mut self, now: Instant, node: &NodeId, addr: SocketAddr) -> MemberUp {
        self.up(now, node, addr, false)
    }

    /// Membership reports that `node` restarted (a new run replaced the one this node
    /// knew): as [`member_up`](Self::member_up), and the old run's link is dead even when
    /// the address did not change.
    pub fn member_renewed(&mut self, now: Instant, node: &NodeId, addr: SocketAddr) -> MemberUp {
        self.up(now, node, addr, true)
    }

    fn up(&mut self, now: Instant, node: &NodeId, addr: SocketAddr, renewed: bool) -> MemberUp {
        if *node == self.local {
            return MemberUp::default();
        }
        let dial = dials(&self.local, node);
        let peer = self.peer(now, node);
        let moved = peer.addr.is_some_and(|old| old != addr);
        peer.addr = Some(addr);
        peer.member = true;
        let stale = if moved || renewed {
            peer.session.take().map(|session| session.label)
        } else {
            None
        };
        if peer.session.is_none() && peer.link != LinkState::Connecting {
            set_link(peer, now, LinkState::Connecting);
        }
        MemberUp { dial, stale }
    }

    /// Membership reports `node` down: forget it; returns the label of its session's
    /// connection, which the driver must close (ractor_cluster never drops a dead peer).
    pub fn member_down(&mut self, node: &NodeId) -> Option<String> {
        self.peers
            .remove(node)
            .and_then(|peer| peer.session)
            .map(|s| s.label)
    }

    /// The dialer starts an attempt to reach `node`.
    pub fn dialing(&mut self, now: Instant, node: &NodeId) {
        if let Some(peer) = self.peers.get_mut(node)
            && peer.session.is_none()
        {
            set_link(peer, now, LinkState::Connecting);
        }
    }

    /// A session with `node` over connection `label` is authenticated and synchronised;
    /// returns the label of the session it replaces, if any.
    pub fn session_up(
        &mut self,
        now: Instant,
        node: &NodeId,
        label: String,
        session_node: u64,
    ) -> Option<String> {
        let peer = self.peer(now, node);
        let previous = peer.session.replace(Session {
            label,
            session_node,
        });
        set_link(peer, now, LinkState::Up);
        previous.map(|s| s.label)
    }

    /// The session over connection `label` ended; returns the peer it linked, if it was
    /// that peer's current session.
    pub fn session_down(&mut self, now: Instant, label: &str) -> Option<NodeId> {
        let (node, peer) = self
            .peers
            .iter_mut()
            .find(|(_, p)| p.session.as_ref().is_some_and(|s| s.label == label))?;
        peer.session = None;
        set_link(peer, now, LinkState::Down);
        let node = node.clone();
        if !self.peers[&node].member {
            self.peers.remove(&node);
        }
        Some(node)
    }

    /// May a forward to `node` go out now?
    pub fn admit(&mut self, now: Instant, node: &NodeId) -> Result<Admitted, Refusal> {
        let peer = self.peers.get_mut(node).ok_or(Refusal::Unknown)?;
        let session_node = match (&peer.session, peer.link) {
            (Some(session), LinkState::Up) => session.session_node,
            (_, state) => return Err(Refusal::LinkNot(state)),
        };
        match peer.breaker.try_acquire(now) {
            Admission::Allowed(permit) => Ok(Admitted {
                permit,
                session_node,
            }),
            Admission::Rejected { retry_after } => Err(Refusal::BreakerOpen { retry_after }),
        }
    }

    /// The forward admitted with `permit` was answered after `took`.
    pub fn on_success(&mut self, now: Instant, node: &NodeId, permit: Permit, took: Duration) {
        if let Some(peer) = self.peers.get_mut(node) {
            peer.breaker.on_success(now, permit, took);
        }
    }

    /// The forward admitted with `permit` failed: timed out or the link broke.
    pub fn on_failure(&mut self, now: Instant, node: &NodeId, permit: Permit) {
        if let Some(peer) = self.peers.get_mut(node) {
            peer.breaker.on_failure(now, permit);
        }
    }

    /// The forward admitted with `permit` never went out.
    pub fn on_cancel(&mut self, node: &NodeId, permit: Permit) {
        if let Some(peer) = self.peers.get_mut(node) {
            peer.breaker.on_cancel(permit);
        }
    }

    /// The next breaker transition not yet reported, with its peer.
    pub fn poll_transition(&mut self) -> Option<(NodeId, Transition)> {
        self.peers.iter_mut().find_map(|(node, peer)| {
            peer.breaker
                .poll_transition()
                .map(|transition| (node.clone(), transition))
        })
    }

    /// Whether `node` is a member this node dials.
    pub fn should_dial(&self, node: &NodeId) -> Option<SocketAddr> {
        let peer = self.peers.get(node)?;
        (peer.member && dials(&self.local, node))
            .then_some(peer.addr)
            .flatten()
    }

    /// The label of the connection `node`'s session runs over, while one is up.
    pub fn session_label(&self, node: &NodeId) -> Option<&str> {
        self.peers
            .get(node)?
            .session
            .as_ref()
            .map(|s| s.label.as_str())
    }

    /// Every known peer, sorted by node id.
    pub fn views(&mut self, now: Instant) -> Vec<PeerView> {
        let mut views: Vec<PeerView> = self
            .peers
            .iter_mut()
            .map(|(node, peer)| {
                peer.breaker.tick(now);
                PeerView {
                    node: node.clone(),
                    addr: peer.addr,
                    member: peer.member,
                    link: peer.link,
                    since: peer.since,
                    breaker: peer.breaker.state(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.node.0.cmp(&b.node.0));
        views
    }
}

fn set_link(peer: &mut Peer, now: Instant, link: LinkState) {
    if peer.link != link {
        peer.link = link;
        peer.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:7400".parse().unwrap()
    }

    fn table(local: &str) -> PeerTable {
        PeerTable::new(
            id(local),
            BreakerConfig {
                open_timeout: Duration::from_secs(2),
                ..BreakerConfig::store()
            },
        )
        .unwrap()
    }

    #[test]
    fn exactly_one_side_of_a_pair_dials() {
        for (a, b) in [("node-1", "node-2"), ("b", "a"), ("x", "xy")] {
            assert_ne!(dials(&id(a), &id(b)), dials(&id(b), &id(a)));
        }
        let mut t = table("node-1");
        let now = Instant::now();
        assert!(t.member_up(now, &id("node-2"), addr()).dial);
        assert!(!t.member_up(now, &id("node-0"), addr()).dial);
        assert!(
            !t.member_up(now, &id("node-1"), addr()).dial,
            "never itself"
        );
        assert_eq!(t.should_dial(&id("node-2")), Some(addr()));
        assert_eq!(t.should_dial(&id("node-0")), None);
    }

    #[test]
    fn forwards_go_out_only_over_an_up_session() {
        let mut t = table("a");
        let now = Instant::now();
        let b = id("b");
        assert_eq!(t.admit(now, &b).unwrap_err(), Refusal::Unknown);
        t.member_up(now, &b, addr());
        assert_eq!(
            t.admit(now, &b).unwrap_err(),
            Refusal::LinkNot(LinkState::Connecting)
        );
        assert_eq!(t.session_up(now, &b, "conn-1".into(), 7), None);
        let admitted = t.admit(now, &b).unwrap();
        assert_eq!(admitted.session_node, 7);
        t.on_success(now, &b, admitted.permit, Duration::from_millis(1));
        assert_eq!(t.session_down(now, "conn-2"), None, "not its session");
        assert_eq!(t.session_down(now, "conn-1"), Some(b.clone()));
        assert_eq!(
            t.admit(now, &b).unwrap_err(),
            Refusal::LinkNot(LinkState::Down)
        );
        assert_eq!(t.views(now)[0].link, LinkState::Down);
    }

    #[test]
    fn a_peer_at_a_new_address_is_a_new_incarnation_whose_old_link_is_dropped() {
        let mut t = table("a");
        let now = Instant::now();
        let b = id("b");
        t.member_up(now, &b, addr());
        t.session_up(now, &b, "old".into(), 1);
        assert_eq!(t.member_up(now, &b, addr()).stale, None, "same address");
        let moved: SocketAddr = "127.0.0.1:7401".parse().unwrap();
        let up = t.member_up(now, &b, moved);
        assert_eq!(up.stale, Some("old".into()));
        assert_eq!(t.should_dial(&b), Some(moved));
        assert_eq!(
            t.admit(now, &b).unwrap_err(),
            Refusal::LinkNot(LinkState::Connecting)
        );
        assert_eq!(t.session_down(now, "old"), None, "already forgotten");
    }

    #[test]
    fn a_renewed_peer_at_the_same_address_also_drops_its_old_link() {
        let mut t = table("a");
        let now = Instant::now();
        let b = id("b");
        t.member_up(now, &b, addr());
        t.session_up(now, &b, "old".into(), 1);
        let up = t.member_renewed(now, &b, addr());
        assert_eq!(
            up,
            MemberUp {
                dial: true,
                stale: Some("old".into())
            }
        );
        assert_eq!(t.views(now)[0].link, LinkState::Connecting);
    }

    #[test]
    fn member_down_forgets_the_peer_and_names_the_connection_to_close() {
        let mut t = table("a");
        let now = Instant::now();
        let b = id("b");
        t.member_up(now, &b, addr());
        t.session_up(now, &b, "conn-1".into(), 1);
        assert_eq!(t.member_down(&b), Some("conn-1".into()));
        assert_eq!(t.admit(now, &b).unwrap_err(), Refusal::Unknown);
        assert!(t.views(now).is_empty());
    }

    #[test]
    fn a_session_from_a_peer_not_yet_a_member_is_usable_and_forgotten_when_it_ends() {
        let mut t = table("b");
        let now = Instant::now();
        let a = id("a");
        t.session_up(now, &a, "in-1".into(), 3);
        assert!(t.admit(now, &a).is_ok());
        t.session_down(now, "in-1");
        assert!(t.views(now).is_empty());
    }

    #[test]
    fn failures_open_the_peer_breaker_and_it_recovers_after_the_open_timeout() {
        let mut t = table("a");
        let start = Instant::now();
        let b = id("b");
        t.member_up(start, &b, addr());
        t.session_up(start, &b, "c".into(), 1);
        for _ in 0..5 {
            let admitted = t.admit(start, &b).unwrap();
            t.on_failure(start, &b, admitted.permit);
        }
        let (node, transition) = t.poll_transition().unwrap();
        assert_eq!(node, b);
        assert_eq!(transition.to, BreakerState::Open);
        assert!(matches!(
            t.admit(start, &b),
            Err(Refusal::BreakerOpen { .. })
        ));
        let later = start + Duration::from_secs(2);
        assert!(t.admit(later, &b).is_ok(), "a half-open trial goes out");
    }
}
