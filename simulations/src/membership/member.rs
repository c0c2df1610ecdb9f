//! One simulated member: the node's membership core ([`Membership`]) under a simulated
//! address, and the translation of its outputs into what the simulation acts on.
//!
//! Node `i` is named `n{i}` and gossips on `10.a.b.c:7946`, where `a.b.c` are the low
//! 24 bits of `i`, so an address or a name maps back to the node without a lookup table.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use chorus_node::cluster::membership::codec::BincodeCodec;
use chorus_node::cluster::membership::seal::derived_run;
use chorus_node::cluster::membership::{
    ClusterKey, IdentityInterner, KEY_LEN, Keyring, MemberIdentity, MemberState, Membership,
    MembershipEvent, MembershipTimer, Output, SEAL_OVERHEAD, Sealer, envelope,
};
use chorus_protocol::NodeId;

use super::events::Micros;
use super::network::NodeIx;
use super::settings::RunSettings;

/// The timer a member hands the simulation to arm.
pub type SimTimer = MembershipTimer;

/// The cluster key every simulated member shares.
const CLUSTER_KEY: ClusterKey = ClusterKey([7; KEY_LEN]);
/// The gossip port of every simulated member.
const GOSSIP_PORT: u16 = 7946;
/// The link port of every simulated member.
const LINK_PORT: u16 = 7947;
/// The incarnation every node starts under (a real node passes its start time).
const FIRST_INCARNATION: u64 = 1;

/// What a member asked for after an input, in the simulation's terms.
pub enum Effect {
    /// Send `packet` to node `to`.
    Send {
        /// The destination.
        to: NodeIx,
        /// The datagram.
        packet: Vec<u8>,
    },
    /// Hand `timer` back after `after` microseconds.
    Schedule {
        /// Delay from now.
        after: Micros,
        /// The timer.
        timer: SimTimer,
    },
    /// The member now sees `subject` up.
    Up(NodeIx),
    /// The member now sees `subject` down.
    Down(NodeIx),
    /// The member started suspecting someone (one of its probes failed).
    SuspicionStarted,
    /// The member was declared down and came back under a new incarnation.
    Rejoin,
}

/// Node `node`'s gossip address.
pub fn gossip_addr(node: NodeIx) -> SocketAddr {
    let [_, a, b, c] = node.to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, a, b, c), GOSSIP_PORT))
}

/// The node behind a gossip address.
fn node_of_addr(addr: SocketAddr) -> NodeIx {
    match addr {
        SocketAddr::V4(v4) => {
            let [_, a, b, c] = v4.ip().octets();
            u32::from_be_bytes([0, a, b, c])
        }
        SocketAddr::V6(_) => unreachable!("simulated members have IPv4 addresses"),
    }
}

/// The node behind an identity.
fn node_of(identity: &MemberIdentity) -> NodeIx {
    node_of_addr(identity.gossip_addr())
}

/// Node `node`'s first identity.
pub fn identity(node: NodeIx) -> MemberIdentity {
    let gossip = gossip_addr(node);
    let link = SocketAddr::new(gossip.ip(), LINK_PORT);
    MemberIdentity::new(NodeId(format!("n{node}")), gossip, link, FIRST_INCARNATION)
}

/// Simulated microseconds as the core's clock.
fn clock(now: Micros) -> Duration {
    Duration::from_micros(now)
}

/// The roster-sync bodies that tell a founder about every founder: the same bodies a
/// seed sends a joiner, built once; each founder gets them sealed when it starts.
pub fn founders_roster(founders: usize, settings: &RunSettings) -> Vec<Vec<u8>> {
    let members: Vec<foca::Member<MemberIdentity>> = (0..founders as NodeIx)
        .map(|node| foca::Member::alive(identity(node)))
        .collect();
    let max_body = settings.gossip.max_packet_size as usize - SEAL_OVERHEAD;
    envelope::encode_roster_sync(&members, &mut BincodeCodec::new(), max_body, usize::MAX)
}

/// One member of the simulated cluster.
pub struct SimMember {
    core: Membership,
    /// The core's count of suspicions it raised, as of the last drain.
    suspicions_started: u64,
}

impl SimMember {
    /// Node `node` with the run's gossip settings, its RNG seeded with `seed`. Every
    /// member of a run shares `interner`, so each run is held once in the process.
    pub fn new(
        node: NodeIx,
        settings: &RunSettings,
        seed: u64,
        interner: &IdentityInterner,
    ) -> Self {
        SimMember {
            core: Membership::with_interner(
                identity(node),
                settings.gossip.clone(),
                &CLUSTER_KEY,
                seed,
                interner.clone(),
            ),
            suspicions_started: 0,
        }
    }

    /// Starts as a founder: applies the roster packets as a roster sync from a seed.
    pub fn start_with_roster(&mut self, now: Micros, roster: &[Vec<u8>]) {
        // Sealed now, by a sender run of their own, so the replay guard sees fresh
        // packets whenever the founder starts.
        let keyring = Keyring::from_cluster_key(&CLUSTER_KEY);
        let mut sealer = Sealer::new(derived_run(u64::MAX ^ now));
        let sent_ms = clock(now).as_millis() as u64;
        for body in roster {
            let packet = &sealer.seal(&keyring, sent_ms, &[body]);
            // The packets are built by the simulation; a refusal would be a bug there.
            self.core
                .handle_packet(packet, clock(now))
                .expect("the founders' roster applies");
        }
    }

    /// Joins through `seed`.
    pub fn announce(&mut self, now: Micros, seed: NodeIx) {
        self.core.announce(gossip_addr(seed), clock(now));
    }

    /// Feeds a datagram (a refused one is counted by the core and otherwise ignored).
    pub fn handle_packet(&mut self, now: Micros, packet: &[u8]) {
        let _refused = self.core.handle_packet(packet, clock(now));
    }

    /// Fires a timer.
    pub fn handle_timer(&mut self, now: Micros, timer: SimTimer) {
        self.core.handle_timer(timer, clock(now));
    }

    /// Roster packets this member has applied and roster pulls it has sent.
    pub fn roster_counts(&self) -> (u64, u64) {
        let stats = self.core.stats();
        (stats.roster_packets_applied, stats.roster_pulls_sent)
    }

    /// Whether this member currently holds `subject` suspect.
    pub fn suspects(&self, subject: NodeIx) -> bool {
        self.core.member_state(identity(subject).node()) == Some(MemberState::Suspect)
    }

    /// Moves the core's outputs into `effects`.
    pub fn drain(&mut self, effects: &mut Vec<Effect>) {
        let started = self.core.stats().suspicions_started;
        for _ in self.suspicions_started..started {
            effects.push(Effect::SuspicionStarted);
        }
        self.suspicions_started = started;
        for output in self.core.drain_outputs() {
            match output {
                Output::Send { to, bytes } => effects.push(Effect::Send {
                    to: node_of_addr(to),
                    packet: bytes,
                }),
                Output::Schedule { after, timer } => effects.push(Effect::Schedule {
                    after: after.as_micros() as Micros,
                    timer,
                }),
                Output::Event(event) => match event {
                    MembershipEvent::MemberUp(member) => effects.push(Effect::Up(node_of(&member))),
                    MembershipEvent::MemberDown(member) => {
                        effects.push(Effect::Down(node_of(&member)));
                    }
                    MembershipEvent::MemberRenewed { new, .. } => {
                        effects.push(Effect::Up(node_of(&new)));
                    }
                    MembershipEvent::Rejoined { .. } => effects.push(Effect::Rejoin),
                    MembershipEvent::Joined
                    | MembershipEvent::Isolated
                    | MembershipEvent::Defunct => {}
                },
            }
        }
    }
}
