//! SWIM membership around foca, as a sans-IO state machine.
//!
//! [`Membership`] owns one foca instance and everything Chorus adds around it: packets
//! sealed with ChaCha20-Poly1305 under a keyring ([`seal`], [`keyring`]) and accepted
//! once and only while fresh ([`replay`]), our envelope ([`envelope`]), a join
//! handshake that needs only a seed's address, Lifeguard ([`lifeguard`]), a roster
//! sync that hands a joiner the whole membership table at once, and down notices that
//! bring members back together after a partition heals. It opens no socket, reads
//! no clock and spawns nothing: time is passed in, and what it wants done comes back as
//! [`Output`]s.
//!
//! Driving it (the node's UDP task, or a simulation):
//!
//! 1. Construct with [`Membership::new`], then [`Membership::announce`] to each seed
//!    address (none for the first node).
//! 2. Feed every datagram to [`Membership::handle_packet`] and every fired timer to
//!    [`Membership::handle_timer`], with the current time since any fixed origin.
//! 3. After each call, [`Membership::drain_outputs`]: send each [`Output::Send`] as one
//!    datagram (the bytes are already sealed), arm each [`Output::Schedule`] to
//!    come back through `handle_timer` after its delay (a timer that has become stale
//!    does nothing, so timers are never cancelled), and act on each [`Output::Event`].
//! 4. To stop, [`Membership::leave`], drain and send, then drop it.

pub mod auth;
pub mod codec;
pub mod config;
pub mod envelope;
pub mod identity;
pub mod keyring;
pub mod lifeguard;
pub mod replay;
pub mod seal;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::NodeId;
use foca::{Foca, Header, Incarnation, Member, Message, OwnedNotification};
use foca_rand::SeedableRng;
use foca_rand::rngs::SmallRng;
use tracing::debug;

pub use self::auth::{ClusterKey, KEY_LEN};
pub use self::config::{GossipSettings, GossipSettingsError};
pub use self::envelope::EnvelopeError;
pub use self::identity::{IdentityInterner, MemberIdentity, NameKey};
pub use self::keyring::{GossipKey, KeyId, KeyInfo, Keyring, KeyringError};
pub use self::replay::Replay;
pub use self::seal::{SEAL_OVERHEAD, SealError, Sealer};

use self::codec::BincodeCodec;
use self::envelope::{
    DownNotice, Envelope, GOSSIP_HEADER, KeyRange, MAX_PULL_RANGES, RosterPull, RosterRange,
};
use self::identity::Run;
use self::lifeguard::{
    LocalHealth, SuspicionBounds, SuspicionReport, SuspicionReports, Suspicions,
};
use self::replay::ReplayGuard;

/// The most seed addresses remembered for join retries.
pub const MAX_SEEDS: usize = 64;

/// The longest wait between two join attempts while no seed answers.
pub const MAX_JOIN_RETRY: Duration = Duration::from_secs(30);

/// How many members' roster-sync times are remembered before old ones are pruned.
const ROSTER_SENT_CAPACITY: usize = 4_096;

/// Probe periods before the same member is sent another down notice: a member that
/// keeps talking to us while we hold it down is told again only after a lost notice
/// could have been noticed, and a flood of its packets costs one notice per interval.
const DOWN_NOTICE_INTERVAL_PERIODS: u32 = 3;

/// The shortest time a joiner waits for an answer to a pull before it takes the packets
/// still missing as lost and asks again, as a fraction of the probe timeout: far above a
/// LAN round trip, so a slow answer is not asked for twice. A complete answer is asked
/// past at once; this only paces recovery from loss.
const ROSTER_PULL_DIVISOR: u32 = 4;

/// Pulls in a row that bring nothing new before a joiner leaves the rest of a roster to
/// gossip: its source has gone, or refuses. A roster that keeps arriving is pulled to
/// its end, whatever its size.
const MAX_IDLE_ROSTER_PULLS: u32 = 16;

/// How many members' down-notice times are remembered before old ones are pruned.
const NOTICES_SENT_CAPACITY: usize = 4_096;

/// Outputs the queue keeps room for between calls. Applying a roster of thousands of
/// members at once queues an event per member; kept, that room would cost every member
/// of a large cluster a buffer the size of the roster.
const OUTPUTS_RETAINED: usize = 64;

type Swim = Foca<MemberIdentity, BincodeCodec, SmallRng, SuspicionReports>;

/// A timer the driver arms and hands back to [`Membership::handle_timer`] when it fires.
/// Opaque: a timer that has become stale (its probe finished, its suspect refuted) is
/// simply ignored, so drivers never cancel one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipTimer(TimerKind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum TimerKind {
    /// One of foca's own timers, from the foca instance of `generation` (a renewal
    /// starts a new one, whose timers must not be confused with its predecessor's).
    Swim {
        timer: foca::Timer<MemberIdentity>,
        generation: u32,
    },
    /// A Lifeguard suspicion may have run out.
    SuspicionDeadline { node: NodeId, token: u64 },
    /// Try the seeds again if nobody has answered yet.
    JoinRetry { attempt: u32 },
    /// Ask for the parts of a roster that have not arrived.
    RosterPull { token: u64 },
}

/// Something the driver must do after a call into [`Membership`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `bytes` (a sealed packet) as one datagram to `to`.
    Send {
        /// The destination's gossip address.
        to: SocketAddr,
        /// The whole datagram.
        bytes: Vec<u8>,
    },
    /// Call [`Membership::handle_timer`] with `timer` after `after`.
    Schedule {
        /// Delay from the time of the call that produced this output.
        after: Duration,
        /// What to hand back.
        timer: MembershipTimer,
    },
    /// The cluster changed as this node sees it.
    Event(MembershipEvent),
}

/// A change in membership as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member became live (joined, or came back under a new incarnation after being
    /// declared down).
    MemberUp(MemberIdentity),
    /// A member was declared down or left.
    MemberDown(MemberIdentity),
    /// A member restarted: its new run replaced the old one, which was still live here
    /// (no `MemberUp`/`MemberDown` pair follows; links to `old` should be redialled).
    MemberRenewed {
        /// The run that was replaced.
        old: MemberIdentity,
        /// The run now live.
        new: MemberIdentity,
    },
    /// This node learnt of its first live peer.
    Joined,
    /// This node has no live peer left.
    Isolated,
    /// This node was declared down and came back under a new incarnation.
    Rejoined {
        /// The incarnation it now runs under.
        new_incarnation: u64,
    },
    /// This node left, or was declared down and cannot renew: it no longer takes part.
    Defunct,
}

/// A member's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared down unless it refutes in time.
    Suspect,
    /// Declared down, or left.
    Down,
}

impl MemberState {
    /// The lowercase name used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }
}

impl From<foca::State> for MemberState {
    fn from(state: foca::State) -> Self {
        match state {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down => MemberState::Down,
        }
    }
}

/// One row of `chorus ctl members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Who: name, addresses and run incarnation.
    pub identity: MemberIdentity,
    /// Alive, suspect or down.
    pub state: MemberState,
    /// The run's incarnation (see [`MemberIdentity::incarnation`]).
    pub incarnation: u64,
    /// SWIM's refutation counter within the run (bumped each time it refutes a
    /// suspicion); 0 in this node's own row, as foca does not expose its own.
    pub swim_incarnation: Incarnation,
    /// When this node last saw the member change state (the caller's clock).
    pub since: Duration,
    /// Whether this row is the local node.
    pub is_self: bool,
}

/// Counters and gauges the node exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Datagrams handed to [`Membership::handle_packet`].
    pub packets_in: u64,
    /// Bytes handed to [`Membership::handle_packet`].
    pub bytes_in: u64,
    /// Datagrams produced as [`Output::Send`].
    pub packets_out: u64,
    /// Bytes produced as [`Output::Send`].
    pub bytes_out: u64,
    /// Packets dropped because they did not open: forged, tampered with, truncated, or
    /// sealed under a key not in the keyring.
    pub bad_tag_dropped: u64,
    /// Authentic packets dropped as a duplicate of one already accepted, or as too far
    /// behind the newest packet of their sender.
    pub replayed_dropped: u64,
    /// Authentic packets dropped because their send time is outside the replay window.
    pub stale_dropped: u64,
    /// Senders the replay guard forgot while still fresh, to stay within its bound.
    pub replay_evicted: u64,
    /// Packets dropped as oversized, or authenticated but undecodable.
    pub decode_errors: u64,
    /// Decoded packets foca refused (from ourselves, malformed SWIM).
    pub rejected: u64,
    /// Timers foca reported an error for.
    pub timer_errors: u64,
    /// Roster syncs sent to joiners (each may take several packets).
    pub roster_syncs_sent: u64,
    /// Roster syncs not sent because the budget per interval was spent.
    pub roster_syncs_skipped: u64,
    /// Roster-sync packets applied.
    pub roster_packets_applied: u64,
    /// Requests this node sent for parts of a roster it had not received.
    pub roster_pulls_sent: u64,
    /// Roster pulls this node answered.
    pub roster_pulls_answered: u64,
    /// Roster pulls refused: from a member not live here, or after leaving.
    pub roster_pulls_refused: u64,
    /// Suspicions this node raised itself (one of its probes failed).
    pub suspicions_started: u64,
    /// Suspects Lifeguard declared down before foca's longest timeout.
    pub lifeguard_declared_down: u64,
    /// Down notices sent to members that talked to us while we held them down.
    pub down_notices_sent: u64,
    /// Down notices not sent because that member had been told within the interval.
    pub down_notices_skipped: u64,
    /// Down notices about our current run that made this node renew its identity.
    pub down_notices_obeyed: u64,
    /// Down notices about our current run answered with a notice instead: the notifier
    /// is held down here too and sees fewer live members (the smaller side renews).
    pub down_notices_returned: u64,
    /// Down notices ignored: about an earlier run of ours, or received after leaving.
    pub down_notices_stale: u64,
    /// The local health multiplier now.
    pub lhm: u8,
    /// Live members besides this node.
    pub live_members: u64,
    /// Suspicions being timed by Lifeguard.
    pub suspicions: u64,
}

/// Why a packet was dropped. In every case it changed nothing and was counted.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The datagram is larger than `max_packet_size`.
    #[error("packet of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The packet did not open (counted in `bad_tag_dropped`).
    #[error(transparent)]
    Sealed(#[from] SealError),
    /// The packet is authentic but a replay or stale (counted in `replayed_dropped` or
    /// `stale_dropped`).
    #[error(transparent)]
    Replayed(#[from] Replay),
    /// The body is not a valid envelope.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// foca refused the gossip (undecodable, from ourselves, malformed). foca may have
    /// applied the updates it decoded before the fault.
    #[error("gossip refused: {0}")]
    Swim(#[from] foca::Error),
}

/// What foca asked of its runtime during one call, plus the outputs so far.
struct Io {
    keyring: Keyring,
    sealer: Sealer,
    /// The wall-clock time of the call in progress (ms since the Unix epoch): the send
    /// time sealed into its packets.
    now_ms: u64,
    outputs: VecDeque<Output>,
    /// Which of `outputs` foca sent (indices), until the next drain.
    foca_sends: Vec<usize>,
    timers: Vec<(foca::Timer<MemberIdentity>, Duration)>,
    notes: Vec<OwnedNotification<MemberIdentity>>,
    packets_out: u64,
    bytes_out: u64,
}

impl Io {
    fn send(&mut self, to: SocketAddr, parts: &[&[u8]]) {
        let bytes = self.sealer.seal(&self.keyring, self.now_ms, parts);
        self.packets_out += 1;
        self.bytes_out += bytes.len() as u64;
        self.outputs.push_back(Output::Send { to, bytes });
    }

    fn schedule(&mut self, after: Duration, timer: TimerKind) {
        self.outputs.push_back(Output::Schedule {
            after,
            timer: MembershipTimer(timer),
        });
    }

    fn event(&mut self, event: MembershipEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

impl foca::Runtime<MemberIdentity> for Io {
    fn notify(&mut self, notification: foca::Notification<'_, MemberIdentity>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: MemberIdentity, data: &[u8]) {
        self.foca_sends.push(self.outputs.len());
        self.send(to.gossip_addr(), &[&GOSSIP_HEADER, data]);
    }

    fn submit_after(&mut self, event: foca::Timer<MemberIdentity>, after: Duration) {
        self.timers.push((event, after));
    }
}

/// A roster being received: which name keys have arrived, whom to ask for the rest,
/// and the one request in flight. The joiner asks for at most a window of packets and
/// asks for the next window only once those have arrived (or are overdue), so the
/// transfer is paced by its own round trips and never floods the joiner.
#[derive(Debug, Clone)]
struct Pull {
    /// The member sending the roster.
    source: MemberIdentity,
    /// The key ranges received so far, sorted and merged.
    covered: Vec<KeyRange>,
    /// Tags the pending timer (each request arms a new one; the older ones go stale).
    token: u64,
    /// The ranges the request in flight asked for.
    asked: Vec<KeyRange>,
    /// When it was asked.
    asked_at: Duration,
    /// Packets it may bring.
    window: u32,
    /// Packets of it that have arrived.
    arrived: u32,
    /// Whether anything not held before arrived since it was asked.
    progressed: bool,
    /// Requests in a row that brought nothing new.
    idle: u32,
    /// Smoothed time from a request to the last packet of its answer.
    srtt: Option<Duration>,
}

impl Pull {
    /// Whether the keys of `range` have all arrived already.
    fn holds(&self, (from, to): KeyRange) -> bool {
        self.covered
            .iter()
            .any(|&(start, end)| start <= from && to <= end)
    }

    /// Whether the request in flight has brought all it can: its window of packets, or
    /// every range it asked for.
    fn answered(&self) -> bool {
        self.arrived >= self.window || self.asked.iter().all(|&range| self.holds(range))
    }

    fn cover(&mut self, (from, to): KeyRange) {
        self.covered.push((from, to));
        self.covered.sort_unstable();
        let mut merged: Vec<KeyRange> = Vec::with_capacity(self.covered.len());
        for &(from, to) in &self.covered {
            match merged.last_mut() {
                Some(last) if from <= last.1.saturating_add(1) => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        self.covered = merged;
    }

    /// The ranges not received yet, the first `max` of them.
    fn gaps(&self, max: usize) -> Vec<KeyRange> {
        let mut gaps = Vec::new();
        let mut next = Some(0u64);
        for &(from, to) in &self.covered {
            if let Some(start) = next
                && from > start
            {
                gaps.push((start, from - 1));
            }
            next = to.checked_add(1);
        }
        if let Some(start) = next {
            gaps.push((start, u64::MAX));
        }
        gaps.truncate(max);
        gaps
    }

    fn complete(&self) -> bool {
        self.covered.first() == Some(&(0, u64::MAX))
    }
}

/// The probe this node has in flight, to learn whether it succeeded.
#[derive(Debug, Clone)]
struct Probe {
    target: MemberIdentity,
    acked: bool,
}

/// When this node last saw a member change state. There is one per known member, so
/// it is kept to two words: the run's shared data (the name's key is the table's key)
/// and the state packed with the instant.
#[derive(Clone)]
struct Seen {
    run: Arc<Run>,
    /// The instant in nanoseconds of the caller's clock, shifted left by
    /// [`Seen::STATE_BITS`], the state in the low bits.
    state_since: u64,
}

impl Seen {
    const STATE_BITS: u32 = 2;

    fn new(member: &MemberIdentity, state: MemberState, since: Duration) -> Self {
        // Saturates after 146 years of the caller's clock.
        let nanos = u64::try_from(since.as_nanos())
            .unwrap_or(u64::MAX)
            .min(u64::MAX >> Self::STATE_BITS);
        let state = match state {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Down => 2,
        };
        Seen {
            run: member.run().clone(),
            state_since: nanos << Self::STATE_BITS | state,
        }
    }

    fn state(&self) -> MemberState {
        match self.state_since & ((1 << Self::STATE_BITS) - 1) {
            0 => MemberState::Alive,
            1 => MemberState::Suspect,
            _ => MemberState::Down,
        }
    }

    fn since(&self) -> Duration {
        Duration::from_nanos(self.state_since >> Self::STATE_BITS)
    }

    /// Whether this is `member`'s run.
    fn is(&self, member: &MemberIdentity) -> bool {
        member.is_run(&self.run)
    }
}

/// What one gossip packet says, read before foca sees it.
struct Inspected {
    header: Header<MemberIdentity>,
    updates: Vec<Member<MemberIdentity>>,
    reports: Vec<SuspicionReport>,
}

/// One node's SWIM membership: foca plus authentication, the join handshake, Lifeguard
/// and roster sync. Sans-IO and deterministic given its seed and the order of calls.
pub struct Membership {
    swim: Swim,
    io: Io,
    replay: ReplayGuard,
    /// Wall-clock time of the caller's time zero (ms since the Unix epoch).
    wall_origin_ms: u64,
    settings: GossipSettings,
    codec: BincodeCodec,
    health: LocalHealth,
    suspicions: Suspicions,
    probe: Option<Probe>,
    seeds: Vec<SocketAddr>,
    join_retry_armed: bool,
    seen: BTreeMap<NameKey, Seen>,
    roster_sent: BTreeMap<NodeId, Duration>,
    /// When the latest roster syncs went out, at most `roster_sync_max_per_interval`.
    roster_budget: VecDeque<Duration>,
    /// The roster this node is receiving, while parts of it are missing.
    pull: Option<Pull>,
    /// Whether this node has received a whole roster (after which rosters only add rows).
    roster_complete: bool,
    /// Tags the next roster pull timer.
    next_pull_token: u64,
    /// When each member was last sent a down notice.
    notices_sent: BTreeMap<NodeId, Duration>,
    /// This node renewed its identity: start SWIM afresh (see
    /// [`Membership::restart_swim`]), then announce to `rejoin_via` if set.
    restart: bool,
    /// The seed this member was built with: a restarted foca draws from it too.
    seed: u64,
    /// How many times foca was restarted; tags its timers.
    generation: u32,
    /// The member whose down notice made this node renew; it is announced to next.
    rejoin_via: Option<MemberIdentity>,
    self_suspected_at: Option<Incarnation>,
    self_since: Duration,
    left: bool,
    defunct: bool,
    stats: MembershipStats,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", self.swim.identity())
            .field("live_members", &self.swim.num_members())
            .field("lhm", &self.health.score())
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// A member that knows nobody yet. `settings` must have passed
    /// [`GossipSettings::validate`]; `seed` seeds foca's random choices (probe order,
    /// gossip targets), so equal seeds and equal calls give equal outputs.
    pub fn new(
        identity: MemberIdentity,
        settings: GossipSettings,
        cluster_key: &ClusterKey,
        seed: u64,
    ) -> Self {
        Self::with_interner(
            identity,
            settings,
            cluster_key,
            seed,
            IdentityInterner::new(),
        )
    }

    /// Like [`Membership::new`], interning the identities it decodes in `interner`: a
    /// process that runs many members (a simulation) lets them share one table, so that
    /// each run is held once in the process rather than once per member.
    pub fn with_interner(
        identity: MemberIdentity,
        settings: GossipSettings,
        cluster_key: &ClusterKey,
        seed: u64,
        interner: IdentityInterner,
    ) -> Self {
        // A deterministic run, distinct for each seed and each incarnation (a restarted
        // member must not reuse its earlier run's counters).
        let run = seal::derived_run(seed ^ seal::derived_run(identity.incarnation()));
        Self::with_keyring(
            identity,
            settings,
            Keyring::from_cluster_key(cluster_key),
            seed,
            run,
            interner,
        )
    }

    /// The general constructor: packets are sealed and opened with `keyring`, and sent
    /// under run `run` (draw it from the OS's randomness: two senders sharing a run
    /// under one key would repeat nonces). The wall clock starts at the Unix epoch
    /// until [`Membership::set_wall_origin`] says otherwise.
    pub fn with_keyring(
        identity: MemberIdentity,
        settings: GossipSettings,
        keyring: Keyring,
        seed: u64,
        run: u64,
        interner: IdentityInterner,
    ) -> Self {
        let swim = Foca::with_custom_broadcast(
            identity,
            settings.foca_config(),
            SmallRng::seed_from_u64(seed),
            BincodeCodec::with_interner(interner.clone()),
            SuspicionReports::new(settings.lifeguard),
        );
        let bounds = suspicion_bounds(&settings);
        Membership {
            swim,
            replay: ReplayGuard::default(),
            wall_origin_ms: 0,
            io: Io {
                keyring,
                sealer: Sealer::new(run),
                now_ms: 0,
                outputs: VecDeque::new(),
                foca_sends: Vec::new(),
                timers: Vec::new(),
                notes: Vec::new(),
                packets_out: 0,
                bytes_out: 0,
            },
            health: LocalHealth::new(settings.lhm_max),
            suspicions: Suspicions::new(bounds),
            settings,
            codec: BincodeCodec::with_interner(interner),
            probe: None,
            seeds: Vec::new(),
            join_retry_armed: false,
            seen: BTreeMap::new(),
            roster_sent: BTreeMap::new(),
            roster_budget: VecDeque::new(),
            pull: None,
            roster_complete: false,
            next_pull_token: 0,
            notices_sent: BTreeMap::new(),
            restart: false,
            seed,
            generation: 0,
            rejoin_via: None,
            self_suspected_at: None,
            self_since: Duration::ZERO,
            left: false,
            defunct: false,
            stats: MembershipStats::default(),
        }
    }

    /// Says what wall-clock time (ms since the Unix epoch) the caller's time zero is:
    /// packets carry their send time by the wall clock, and the replay window compares
    /// it with ours.
    pub fn set_wall_origin(&mut self, unix_ms: u64) {
        self.wall_origin_ms = unix_ms;
    }

    /// The keys packets are sealed and opened with.
    pub fn keyring(&self) -> &Keyring {
        &self.io.keyring
    }

    /// Replaces the keyring (a rotation step); packets sent from now on are sealed
    /// under its primary key.
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.io.keyring = keyring;
    }

    /// Sets the wall-clock time of the call in progress.
    fn at(&mut self, now: Duration) {
        let since = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        self.io.now_ms = self.wall_origin_ms.saturating_add(since);
    }

    /// This node's identity now (a rejoin renews its incarnation).
    pub fn identity(&self) -> &MemberIdentity {
        self.swim.identity()
    }

    /// The settings this member runs with.
    pub fn settings(&self) -> &GossipSettings {
        &self.settings
    }

    /// Whether this node knows at least one live peer.
    pub fn is_connected(&self) -> bool {
        self.swim.num_members() > 0
    }

    /// The largest datagram this member sends or accepts.
    pub fn max_packet_size(&self) -> usize {
        self.settings.max_packet_size as usize
    }

    /// Asks the member listening for gossip at `seed` to let this node in, and keeps
    /// asking every seed given so far (backing off to [`MAX_JOIN_RETRY`]) until some
    /// member answers, and again whenever this node finds itself without live peers.
    /// The first node of a cluster has no seed and does not call it.
    pub fn announce(&mut self, seed: SocketAddr, now: Duration) {
        self.at(now);
        if self.seen.is_empty() && !self.is_connected() {
            self.self_since = now;
        }
        if seed == self.identity().gossip_addr() {
            return;
        }
        if !self.seeds.contains(&seed) && self.seeds.len() < MAX_SEEDS {
            self.seeds.push(seed);
        }
        self.send_join(seed);
        self.arm_join_retry();
    }

    /// Leaves the cluster gracefully: tells a few members this node is down so the
    /// cluster learns it at once instead of after a suspicion timeout. Afterwards the
    /// member takes no part (drain and send the outputs, then drop it).
    pub fn leave(&mut self, now: Duration) {
        self.at(now);
        if let Err(error) = self.swim.leave_cluster(&mut self.io) {
            debug!(%error, "leave");
        }
        self.left = true;
        self.self_since = now;
        self.absorb(now);
    }

    /// Handles one received datagram. A packet that fails authentication or decoding
    /// is dropped, counted and reported; it changes nothing.
    pub fn handle_packet(&mut self, bytes: &[u8], now: Duration) -> Result<(), PacketError> {
        self.stats.packets_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        if bytes.len() > self.max_packet_size() {
            self.stats.decode_errors += 1;
            return Err(PacketError::Oversized {
                len: bytes.len(),
                max: self.max_packet_size(),
            });
        }
        self.at(now);
        let opened = match seal::open(&self.io.keyring, bytes) {
            Ok(opened) => opened,
            Err(error) => {
                self.stats.bad_tag_dropped += 1;
                return Err(error.into());
            }
        };
        if let Err(replay) =
            self.replay
                .check(self.io.now_ms, opened.run, opened.counter, opened.sent_ms)
        {
            match replay {
                Replay::Stale { .. } => self.stats.stale_dropped += 1,
                Replay::Duplicate | Replay::BehindWindow => self.stats.replayed_dropped += 1,
            }
            return Err(replay.into());
        }
        let body = &opened.body[..];
        let envelope = match envelope::decode(body, &self.codec) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.stats.decode_errors += 1;
                return Err(error.into());
            }
        };
        match envelope {
            Envelope::Gossip(payload) => self.handle_gossip(payload, now),
            Envelope::RosterSync(_) if self.left => Ok(()),
            Envelope::RosterSync(members) => self.apply_roster(members, now),
            Envelope::Join(joiner) => {
                if joiner.node() != self.identity().node() && !self.left {
                    self.send_welcome(joiner.gossip_addr());
                }
                Ok(())
            }
            Envelope::Welcome(seed) => {
                if seed.node() == self.identity().node() || self.left {
                    return Ok(());
                }
                if self.settings.roster_sync && !self.roster_complete && self.pull.is_none() {
                    // Expect the seed's roster; if none of it arrives, ask for all of it.
                    self.start_pull(seed.clone(), None, now);
                }
                let result = self.swim.announce(seed, &mut self.io);
                self.absorb(now);
                result.map_err(|error| self.refused(error))
            }
            Envelope::DownNotice(notice) => {
                self.handle_down_notice(notice, now);
                Ok(())
            }
            Envelope::RosterRange(_) if self.left => Ok(()),
            Envelope::RosterRange(range) => self.handle_roster_range(range, now),
            Envelope::RosterPull(pull) => {
                self.handle_roster_pull(pull, now);
                Ok(())
            }
        }
    }

    /// Handles a timer from an earlier [`Output::Schedule`].
    pub fn handle_timer(&mut self, timer: MembershipTimer, now: Duration) {
        self.at(now);
        match timer.0 {
            TimerKind::Swim { timer, generation } => {
                if generation == self.generation {
                    self.handle_swim_timer(timer, now);
                }
            }
            TimerKind::SuspicionDeadline { node, token } => {
                self.handle_suspicion_deadline(&node, token, now);
            }
            TimerKind::RosterPull { token } => self.pull_overdue(token, now),
            TimerKind::JoinRetry { attempt } => {
                if self.is_connected() || self.left || self.seeds.is_empty() {
                    self.join_retry_armed = false;
                    return;
                }
                for seed in self.seeds.clone() {
                    self.send_join(seed);
                }
                let backoff = self
                    .settings
                    .probe_period()
                    .saturating_mul(2u32.saturating_pow(attempt.saturating_add(1)))
                    .min(MAX_JOIN_RETRY);
                self.io.schedule(
                    backoff,
                    TimerKind::JoinRetry {
                        attempt: attempt.saturating_add(1),
                    },
                );
            }
        }
    }

    /// Everything the calls so far want done, in order.
    pub fn drain_outputs(&mut self) -> impl Iterator<Item = Output> + '_ {
        // The room a burst took is given back at the next drain, once it is empty.
        self.io.outputs.shrink_to(OUTPUTS_RETAINED);
        self.io.foca_sends.clear();
        self.io.outputs.drain(..)
    }

    /// Every member this node knows, itself first, then by name.
    pub fn members(&self) -> Vec<MemberView> {
        let me = self.identity();
        let mut views = Vec::with_capacity(self.swim.iter_membership_state().len() + 1);
        views.push(MemberView {
            identity: me.clone(),
            state: if self.left || self.defunct {
                MemberState::Down
            } else {
                MemberState::Alive
            },
            incarnation: me.incarnation(),
            swim_incarnation: 0,
            since: self.self_since,
            is_self: true,
        });
        let mut others: Vec<MemberView> = self
            .swim
            .iter_membership_state()
            .map(|member| MemberView {
                identity: member.id().clone(),
                state: member.state().into(),
                incarnation: member.id().incarnation(),
                swim_incarnation: member.incarnation(),
                since: self
                    .seen
                    .get(&member.id().key())
                    .map_or(Duration::ZERO, Seen::since),
                is_self: false,
            })
            .collect();
        others.sort_by(|a, b| a.identity.node().cmp(b.identity.node()));
        views.extend(others);
        views
    }

    /// How this node sees the member named `node` (not itself), without building the
    /// whole table; `None` if it does not know it.
    pub fn member_state(&self, node: &NodeId) -> Option<MemberState> {
        self.swim
            .iter_membership_state()
            .find(|member| member.id().node() == node)
            .map(|member| member.state().into())
    }

    /// The names of the live members (alive or suspect), this node included unless it
    /// left or is defunct; sorted. The ring is computed from this set.
    pub fn live_members(&self) -> Vec<NodeId> {
        let mut live: Vec<NodeId> = self
            .swim
            .iter_members()
            .map(|m| m.id().node().clone())
            .collect();
        if !self.left && !self.defunct {
            live.push(self.identity().node().clone());
        }
        live.sort();
        live.dedup();
        live
    }

    /// The counters and gauges now.
    pub fn stats(&self) -> MembershipStats {
        MembershipStats {
            packets_out: self.io.packets_out,
            bytes_out: self.io.bytes_out,
            lhm: self.health.score(),
            live_members: self.swim.num_members() as u64,
            suspicions: self.suspicions.len() as u64,
            replay_evicted: self.replay.stats().evicted_fresh,
            ..self.stats
        }
    }

    fn handle_gossip(&mut self, payload: &[u8], now: Duration) -> Result<(), PacketError> {
        let inspected = inspect(payload, &self.codec, self.settings.lifeguard);
        let joiner = inspected.as_ref().and_then(|seen| {
            (seen.header.message == Message::Announce && self.is_news(&seen.header.src))
                .then(|| seen.header.src.clone())
        });
        // foca ignores a run it holds down without telling it; we tell it.
        let held_down = inspected
            .as_ref()
            .filter(|seen| !self.left && !self.defunct && self.holds_down(&seen.header.src))
            .map(|seen| seen.header.src.clone());
        // Judged before foca sees the packet, which may renew this node or the sender.
        let trusted = inspected
            .as_ref()
            .is_some_and(|seen| self.swim_trusts(&seen.header));
        let result = self.swim.handle_data(payload, &mut self.io);
        self.absorb(now);
        if let Some(sender) = held_down {
            self.send_down_notice(&sender, now);
        }
        if let Err(error) = result {
            return Err(self.refused(error));
        }
        if let Some(inspected) = inspected
            && trusted
            && self.settings.lifeguard
        {
            self.observe(inspected, now);
        }
        if let Some(joiner) = joiner
            && self.settings.roster_sync
        {
            self.send_roster(&joiner, now);
        }
        Ok(())
    }

    fn handle_swim_timer(&mut self, timer: foca::Timer<MemberIdentity>, now: Duration) {
        if let foca::Timer::RemoveDown(member) = &timer {
            // foca forgets a long-down member now; so do we.
            if self
                .seen
                .get(&member.key())
                .is_some_and(|seen| seen.is(member) && seen.state() == MemberState::Down)
            {
                self.seen.remove(&member.key());
                self.roster_sent.remove(member.node());
            }
        }
        let starts_probe = matches!(timer, foca::Timer::ProbeRandomMember(_));
        let previous = if starts_probe {
            self.probe.take()
        } else {
            None
        };
        let result = self.swim.handle_timer(timer, &mut self.io);
        let probe_ran = self.absorb(now);
        if starts_probe {
            if probe_ran {
                // The probe cycle ended: judge the probe it replaced.
                if self.settings.lifeguard
                    && let Some(previous) = previous
                    && !previous.acked
                {
                    self.health.probe_failed();
                }
            } else if self.probe.is_none() {
                self.probe = previous;
            }
        }
        if let Err(error) = result {
            self.stats.timer_errors += 1;
            debug!(%error, "membership timer");
        }
    }

    fn handle_suspicion_deadline(&mut self, node: &NodeId, token: u64, now: Duration) {
        let Some((suspect, incarnation)) = self.suspicions.on_deadline(node, token, now) else {
            return;
        };
        let still_suspect = self.swim.iter_membership_state().any(|member| {
            member.id() == &suspect
                && member.state() == foca::State::Suspect
                && member.incarnation() == incarnation
        });
        if !still_suspect {
            return;
        }
        debug!(member = %suspect, "lifeguard: suspicion confirmed, declaring down");
        self.stats.lifeguard_declared_down += 1;
        let down = Member::new(suspect, incarnation, foca::State::Down);
        let result = self
            .swim
            .apply_many(std::iter::once(down), true, &mut self.io);
        self.absorb(now);
        if let Err(error) = result {
            self.stats.timer_errors += 1;
            debug!(%error, "lifeguard declaring down");
        }
    }

    /// Turns what foca asked for during the last call into outputs. Returns whether foca
    /// started a new probe cycle.
    fn absorb(&mut self, now: Duration) -> bool {
        let mut probe_ran = false;
        let timers = std::mem::take(&mut self.io.timers);
        for (timer, mut after) in timers {
            match &timer {
                // Local health stretches the probe cycle here, in the delays, because
                // foca refuses a new probe period or probe timeout at runtime.
                foca::Timer::ProbeRandomMember(_) => {
                    probe_ran = true;
                    if self.settings.lifeguard {
                        after = self.health.scale(after);
                    }
                }
                foca::Timer::SendIndirectProbe { probed_id, .. } => {
                    self.probe = Some(Probe {
                        target: probed_id.clone(),
                        acked: false,
                    });
                    if self.settings.lifeguard {
                        after = self.health.scale(after);
                    }
                }
                foca::Timer::ChangeSuspectToDown {
                    member_id,
                    incarnation,
                    ..
                } => {
                    self.stats.suspicions_started += 1;
                    self.mark(member_id, MemberState::Suspect, now);
                    if self.settings.lifeguard {
                        // Our own probe failed: an independent suspicion, ours to spread.
                        let report = SuspicionReport {
                            suspect: member_id.clone(),
                            incarnation: *incarnation,
                            reporter: self.identity().node().clone(),
                        };
                        match report.encode(&mut self.codec) {
                            Ok(bytes) => {
                                if let Err(error) = self.swim.add_broadcast(&bytes) {
                                    debug!(%error, "queueing suspicion report");
                                }
                            }
                            Err(error) => debug!(%error, "encoding suspicion report"),
                        }
                        self.report_suspicion(&report, now);
                    }
                }
                _ => {}
            }
            self.io.schedule(
                after,
                TimerKind::Swim {
                    timer,
                    generation: self.generation,
                },
            );
        }
        let notes = std::mem::take(&mut self.io.notes);
        for note in notes {
            let event = match note {
                OwnedNotification::MemberUp(member) => {
                    debug!(member = %member, "member up");
                    self.suspicions.refuted(&member, 0);
                    self.mark(&member, MemberState::Alive, now);
                    MembershipEvent::MemberUp(member)
                }
                OwnedNotification::MemberDown(member) => {
                    debug!(member = %member, "member down");
                    self.suspicions.forget(member.node());
                    self.mark(&member, MemberState::Down, now);
                    MembershipEvent::MemberDown(member)
                }
                OwnedNotification::Rename(old, new) => {
                    debug!(old = %old, new = %new, "member renewed");
                    self.suspicions.refuted(&new, 0);
                    // A down run can replace a down run without a MemberDown.
                    let state =
                        if self.swim.iter_membership_state().any(|member| {
                            member.id() == &new && member.state() == foca::State::Down
                        }) {
                            MemberState::Down
                        } else {
                            MemberState::Alive
                        };
                    self.mark(&new, state, now);
                    MembershipEvent::MemberRenewed { old, new }
                }
                OwnedNotification::Active => MembershipEvent::Joined,
                OwnedNotification::Idle => MembershipEvent::Isolated,
                OwnedNotification::Defunct => {
                    self.defunct = true;
                    self.self_since = now;
                    MembershipEvent::Defunct
                }
                OwnedNotification::Rejoin(me) => {
                    debug!(identity = %me, "declared down, rejoining");
                    self.restart = true;
                    self.defunct = false;
                    self.self_suspected_at = None;
                    self.self_since = now;
                    MembershipEvent::Rejoined {
                        new_incarnation: me.incarnation(),
                    }
                }
            };
            self.io.event(event);
        }
        if std::mem::take(&mut self.restart) {
            self.drop_foca_sends();
            self.restart_swim(now);
            if let Some(via) = self.rejoin_via.take()
                && let Err(error) = self.swim.announce(via, &mut self.io)
            {
                debug!(%error, "announcing after a rejoin");
            }
            // The new instance's timers and notifications.
            probe_ran |= self.absorb(now);
        }
        if !self.is_connected() {
            // foca sends nothing while it knows no live member (after its last peer went
            // down, or after renewing its identity); only the seeds can bring it back,
            // say when members on both sides of a healed partition renewed at once.
            self.arm_join_retry();
        }
        probe_ran
    }

    /// Acts on what an accepted gossip packet said: probe outcomes, suspicions and
    /// refutations (Lifeguard only).
    fn observe(&mut self, inspected: Inspected, now: Duration) {
        let Inspected {
            header,
            updates,
            reports,
        } = inspected;
        let src = &header.src;
        if let Some(probe) = &mut self.probe
            && !probe.acked
        {
            match &header.message {
                Message::Ack(_) if &probe.target == src => {
                    probe.acked = true;
                    self.health.probe_succeeded();
                }
                Message::ForwardedAck { origin, .. } if &probe.target == origin => {
                    // Reached only through others: neither our fault nor proof of health.
                    probe.acked = true;
                }
                _ => {}
            }
        }
        self.suspicions.refuted(src, header.src_incarnation);
        self.unmark_suspect(src, now);
        let me = self.identity().clone();
        for update in updates {
            let member = update.id();
            if member.node() == me.node() {
                if member == &me
                    && update.state() == foca::State::Suspect
                    && self.self_suspected_at != Some(update.incarnation())
                {
                    self.self_suspected_at = Some(update.incarnation());
                    self.health.suspected();
                }
                continue;
            }
            match update.state() {
                foca::State::Suspect => self.mark(member, MemberState::Suspect, now),
                foca::State::Alive => {
                    self.suspicions.refuted(member, update.incarnation());
                }
                foca::State::Down => self.suspicions.forget(member.node()),
            }
        }
        for report in reports {
            if report.suspect.node() != me.node() {
                self.report_suspicion(&report, now);
            }
        }
    }

    fn report_suspicion(&mut self, report: &SuspicionReport, now: Duration) {
        let live_others = self.swim.num_members();
        if let Some(deadline) = self.suspicions.report(
            &report.suspect,
            report.incarnation,
            &report.reporter,
            live_others,
            now,
        ) {
            self.io.schedule(
                deadline.after,
                TimerKind::SuspicionDeadline {
                    node: deadline.node,
                    token: deadline.token,
                },
            );
        }
    }

    /// Whether `member` is a run this node does not know: a joiner. (A run held down
    /// here is not news: it is sent a down notice instead, and comes back renewed.)
    fn is_news(&self, member: &MemberIdentity) -> bool {
        self.seen
            .get(&member.key())
            .is_none_or(|seen| !seen.is(member))
    }

    /// Whether foca holds exactly this run (name and incarnation) down. Cheap for a
    /// member known live, which is every sender in the steady state.
    fn holds_down(&self, member: &MemberIdentity) -> bool {
        if self.holds_live(member) {
            return false;
        }
        self.swim
            .iter_membership_state()
            .any(|known| known.id() == member && known.state() == foca::State::Down)
    }

    /// Whether foca acts on the updates a packet with this header carries. It discards
    /// those of a run it holds down (after a partition, the other side's stale view:
    /// a suspicion a cut-off member raised just before its renewal, taken up here,
    /// would wait unrefuted, since foca never passed it on, until an unrelated probe
    /// failure confirmed it and declared a healthy member down) and those addressed to
    /// another run than this one. Lifeguard must not act on what foca refused.
    fn swim_trusts(&self, header: &Header<MemberIdentity>) -> bool {
        let me = self.identity();
        let addressed = header.dst == *me
            || (header.message == Message::Announce
                && foca::Identity::addr(&header.dst) == foca::Identity::addr(me));
        addressed && !self.holds_down(&header.src)
    }

    /// Whether this run is alive or suspect here, as foca last told us.
    fn holds_live(&self, member: &MemberIdentity) -> bool {
        self.seen
            .get(&member.key())
            .is_some_and(|seen| seen.is(member) && seen.state() != MemberState::Down)
    }

    /// Live members as a down notice counts them: the others plus this node.
    fn live_count(&self) -> u32 {
        u32::try_from(self.swim.num_members().saturating_add(1)).unwrap_or(u32::MAX)
    }

    /// Tells `subject`, which this node holds down, that it is down here; at most once
    /// per [`DOWN_NOTICE_INTERVAL_PERIODS`] probe periods per member.
    fn send_down_notice(&mut self, subject: &MemberIdentity, now: Duration) {
        let interval = self
            .settings
            .probe_period()
            .saturating_mul(DOWN_NOTICE_INTERVAL_PERIODS);
        if let Some(last) = self.notices_sent.get(subject.node())
            && now.saturating_sub(*last) < interval
        {
            self.stats.down_notices_skipped += 1;
            return;
        }
        if self.notices_sent.len() >= NOTICES_SENT_CAPACITY {
            self.notices_sent
                .retain(|_, last| now.saturating_sub(*last) < interval);
        }
        self.notices_sent.insert(subject.node().clone(), now);
        let notice = DownNotice {
            notifier: self.identity().clone(),
            subject: subject.clone(),
            live_members: self.live_count(),
        };
        match envelope::encode_down_notice(&notice, &mut self.codec) {
            Ok(body) => {
                self.stats.down_notices_sent += 1;
                debug!(member = %subject, "telling a member it is down here");
                self.io.send(subject.gossip_addr(), &[&body]);
            }
            Err(error) => debug!(%error, "encoding down notice"),
        }
    }

    /// A member holds this node's current run down. Usually that is the cluster's
    /// verdict and the node renews (foca's rejoin path: incarnation + 1, the old run
    /// declared down), forgets its own down verdicts and announces to the notifier.
    ///
    /// After a partition both sides hold each other down and both would be told; only
    /// one should renew, or every member of the larger side would be forced to rejoin.
    /// So when the notifier is held down here too, the side that sees fewer live
    /// members renews (ties broken by name, so exactly one of the two does), and the
    /// other answers with a notice of its own.
    fn handle_down_notice(&mut self, notice: DownNotice, now: Duration) {
        if self.left || self.defunct || notice.subject != *self.identity() {
            self.stats.down_notices_stale += 1;
            return;
        }
        if notice.notifier.node() == self.identity().node() {
            return;
        }
        if self.holds_down(&notice.notifier) {
            let ours = (self.live_count(), self.identity().node());
            if ours > (notice.live_members, notice.notifier.node()) {
                self.stats.down_notices_returned += 1;
                self.send_down_notice(&notice.notifier, now);
                return;
            }
        }
        debug!(notifier = %notice.notifier, "held down by a member, renewing");
        self.stats.down_notices_obeyed += 1;
        self.rejoin_via = Some(notice.notifier);
        let me = Member::new(self.identity().clone(), 0, foca::State::Down);
        let result = self
            .swim
            .apply_many(std::iter::once(me), false, &mut self.io);
        self.absorb(now);
        self.rejoin_via = None;
        if let Err(error) = result {
            self.stats.timer_errors += 1;
            debug!(%error, "renewing after a down notice");
        }
    }

    /// Drops what foca sent during the call in progress. On renewing, foca gossips its
    /// queue of updates at once, to the members it holds alive or suspect; after a
    /// partition that queue holds the cut-off side's verdicts about the other side,
    /// and those members are reachable again.
    fn drop_foca_sends(&mut self) {
        let sent = std::mem::take(&mut self.io.foca_sends);
        let mut index = 0;
        let mut sent = sent.into_iter().peekable();
        let (mut packets, mut bytes) = (0u64, 0u64);
        self.io.outputs.retain(|output| {
            let drop = sent.next_if_eq(&index).is_some();
            index += 1;
            if drop && let Output::Send { bytes: sealed, .. } = output {
                packets += 1;
                bytes += sealed.len() as u64;
            }
            !drop
        });
        self.io.packets_out -= packets;
        self.io.bytes_out -= bytes;
    }

    /// Starts SWIM afresh under the renewed identity, keeping only who is live.
    ///
    /// A member renews because it was declared down, so it was cut off, and everything
    /// its SWIM state learnt since was learnt from the cut-off side. foca keeps that
    /// state across a renewal: its down verdicts, which would make this node ignore
    /// healthy members and tell them they are down; its suspicions; and above all its
    /// queue of updates still to piggyback, which holds "down" verdicts about the
    /// current runs of members on the other side. Sent after the heal, each such update
    /// is final wherever it lands, the cluster agrees on it and a healthy member is
    /// forced to rejoin. A new foca instance has none of it. Live rows are carried
    /// over as alive (suspicions formed from the cut-off view are dropped; a member
    /// really gone fails its next probes), without broadcasting them; down rows are
    /// forgotten, and roster syncs and gossip teach this node the verdicts that are
    /// real. The old run needs no "down" of its own: the new run replaces it wherever
    /// it is heard of.
    fn restart_swim(&mut self, now: Duration) {
        let identity = self.identity().clone();
        let mut live = Vec::new();
        let mut down = Vec::new();
        for member in self.swim.iter_membership_state() {
            if member.state() == foca::State::Down {
                down.push(member.id().clone());
            } else {
                live.push(Member::new(
                    member.id().clone(),
                    member.incarnation(),
                    foca::State::Alive,
                ));
            }
        }
        for member in down {
            if self
                .seen
                .get(&member.key())
                .is_some_and(|seen| seen.is(&member))
            {
                self.seen.remove(&member.key());
            }
            self.roster_sent.remove(member.node());
            self.notices_sent.remove(member.node());
        }
        for member in &live {
            self.unmark_suspect(member.id(), now);
        }
        self.generation = self.generation.wrapping_add(1);
        // Distinct per generation, and still a function of the member's seed.
        let rng_seed = self.seed ^ seal::derived_run(u64::from(self.generation));
        self.swim = Foca::with_custom_broadcast(
            identity,
            self.settings.foca_config(),
            SmallRng::seed_from_u64(rng_seed),
            BincodeCodec::with_interner(self.codec.interner().clone()),
            SuspicionReports::new(self.settings.lifeguard),
        );
        self.suspicions = Suspicions::new(suspicion_bounds(&self.settings));
        self.probe = None;
        // Its table lacks what it forgot: the next roster it is sent is pulled in full.
        self.pull = None;
        self.roster_complete = false;
        let result = self.swim.apply_many(live.into_iter(), false, &mut self.io);
        // The carried-over members were live before and were reported so.
        self.io
            .notes
            .retain(|note| !matches!(note, OwnedNotification::MemberUp(_)));
        if let Err(error) = result {
            self.stats.timer_errors += 1;
            debug!(%error, "restarting swim after a renewal");
        }
    }

    fn mark(&mut self, member: &MemberIdentity, state: MemberState, now: Duration) {
        match self.seen.get_mut(&member.key()) {
            Some(seen) if seen.is(member) && seen.state() == state => {}
            Some(seen) => *seen = Seen::new(member, state, now),
            None => {
                self.seen
                    .insert(member.key(), Seen::new(member, state, now));
            }
        }
    }

    fn unmark_suspect(&mut self, member: &MemberIdentity, now: Duration) {
        if let Some(seen) = self.seen.get_mut(&member.key())
            && seen.is(member)
            && seen.state() == MemberState::Suspect
        {
            *seen = Seen::new(member, MemberState::Alive, now);
        }
    }

    fn arm_join_retry(&mut self) {
        if !self.join_retry_armed && !self.seeds.is_empty() && !self.left {
            self.join_retry_armed = true;
            self.io.schedule(
                self.settings.probe_period(),
                TimerKind::JoinRetry { attempt: 0 },
            );
        }
    }

    fn send_join(&mut self, seed: SocketAddr) {
        match envelope::encode_join(self.swim.identity(), &mut self.codec) {
            Ok(body) => self.io.send(seed, &[&body]),
            Err(error) => debug!(%error, "encoding join"),
        }
    }

    fn send_welcome(&mut self, to: SocketAddr) {
        match envelope::encode_welcome(self.swim.identity(), &mut self.codec) {
            Ok(body) => self.io.send(to, &[&body]),
            Err(error) => debug!(%error, "encoding welcome"),
        }
    }

    /// Applies roster rows from another member.
    fn apply_roster(
        &mut self,
        members: Vec<Member<MemberIdentity>>,
        now: Duration,
    ) -> Result<(), PacketError> {
        self.stats.roster_packets_applied += 1;
        // A roster is one member's opinion, possibly from the other side of a
        // partition: it teaches who exists, but its "down" rows may not overrule a run
        // we hold live, nor make us renew (a down notice does that, with the rule that
        // picks which side renews).
        let me = self.identity().node().clone();
        let members: Vec<_> = members
            .into_iter()
            .filter(|member| {
                member.state() != foca::State::Down
                    || (member.id().node() != &me && !self.holds_live(member.id()))
            })
            .collect();
        let result = self
            .swim
            .apply_many(members.into_iter(), false, &mut self.io);
        self.absorb(now);
        result.map_err(|error| self.refused(error))
    }

    /// A part of a roster arrived: apply it, and if it is the first part of a roster
    /// from its sender, start receiving the rest. Once the request in flight has
    /// brought all it can, the next one goes at once.
    fn handle_roster_range(
        &mut self,
        range: RosterRange,
        now: Duration,
    ) -> Result<(), PacketError> {
        let RosterRange {
            sender,
            range,
            members,
        } = range;
        let mut ask = false;
        match &mut self.pull {
            Some(pull) if pull.source == sender => {
                if pull
                    .asked
                    .iter()
                    .any(|&(from, to)| from <= range.1 && range.0 <= to)
                {
                    pull.arrived += 1;
                }
                if !pull.holds(range) {
                    pull.progressed = true;
                    pull.cover(range);
                }
                ask = !pull.complete() && pull.answered();
                if ask {
                    let sample = now.saturating_sub(pull.asked_at);
                    pull.srtt = Some(pull.srtt.map_or(sample, |srtt| (srtt * 7 + sample) / 8));
                }
            }
            // The first roster is the one completed; later ones (a seed answering a
            // periodic announce) only add rows.
            Some(_) => {}
            None if self.roster_complete => {}
            None => self.start_pull(sender, Some(range), now),
        }
        if self.pull.as_ref().is_some_and(Pull::complete) {
            self.pull = None;
            self.roster_complete = true;
        }
        if ask {
            self.ask_roster(now);
        }
        self.apply_roster(members, now)
    }

    /// Starts receiving a roster from `source`, `first` being its part already here:
    /// the first window is the one the source sends unasked to a member that announces
    /// itself.
    fn start_pull(&mut self, source: MemberIdentity, first: Option<KeyRange>, now: Duration) {
        let mut pull = Pull {
            source,
            covered: Vec::new(),
            token: 0,
            asked: vec![(0, u64::MAX)],
            asked_at: now,
            window: self.roster_window(),
            arrived: 0,
            progressed: false,
            idle: 0,
            srtt: None,
        };
        if let Some(range) = first {
            pull.cover(range);
            pull.arrived = 1;
            pull.progressed = true;
        }
        self.pull = Some(pull);
        self.arm_pull_timer();
    }

    /// Packets a joiner takes per request: the burst a seed sends unasked, and no more
    /// than the replay guard keeps room for when they arrive out of order.
    fn roster_window(&self) -> u32 {
        self.settings
            .roster_sync_max_packets
            .clamp(1, replay::WINDOW)
    }

    /// How long the request in flight may take before what it has not brought counts
    /// as lost: twice the round trips measured so far, never less than a fraction of
    /// the probe timeout (a slow source is not asked twice for the same packets).
    fn roster_pull_timeout(&self) -> Duration {
        let floor = self.settings.probe_rtt() / ROSTER_PULL_DIVISOR;
        let measured = self.pull.as_ref().and_then(|pull| pull.srtt);
        measured.map_or(floor, |srtt| floor.max(srtt * 2))
    }

    /// Arms a fresh timer for the request in flight; the previous one goes stale.
    fn arm_pull_timer(&mut self) {
        let token = self.next_pull_token;
        self.next_pull_token += 1;
        let timeout = self.roster_pull_timeout();
        if let Some(pull) = self.pull.as_mut() {
            pull.token = token;
            self.io.schedule(timeout, TimerKind::RosterPull { token });
        }
    }

    /// The request in flight is overdue: what it has not brought is lost; ask again.
    fn pull_overdue(&mut self, token: u64, now: Duration) {
        if self.pull.as_ref().is_some_and(|pull| pull.token == token) {
            self.ask_roster(now);
        }
    }

    /// Asks the roster's sender for a window of the key ranges still missing, unless
    /// the roster is complete or its sender has stopped answering.
    fn ask_roster(&mut self, now: Duration) {
        let window = self.roster_window();
        let Some(pull) = self.pull.as_mut() else {
            return;
        };
        pull.idle = if pull.progressed { 0 } else { pull.idle + 1 };
        if pull.complete() || pull.idle >= MAX_IDLE_ROSTER_PULLS || self.left {
            self.pull = None;
            return;
        }
        pull.asked = pull.gaps(usize::from(MAX_PULL_RANGES));
        pull.asked_at = now;
        pull.window = window;
        pull.arrived = 0;
        pull.progressed = false;
        let request = RosterPull {
            puller: self.swim.identity().clone(),
            ranges: pull.asked.clone(),
            window: u16::try_from(window).unwrap_or(u16::MAX),
        };
        let to = pull.source.gossip_addr();
        self.arm_pull_timer();
        self.stats.roster_pulls_sent += 1;
        match envelope::encode_roster_pull(&request, &mut self.codec) {
            Ok(body) => self.io.send(to, &[&body]),
            Err(error) => debug!(%error, "encoding roster pull"),
        }
    }

    /// A joiner asks for parts of this node's roster. Answered with at most the
    /// joiner's window and `roster_sync_max_packets` packets per pull, and only to a
    /// member this node holds live (one that announced itself, and so was sent the
    /// roster's first part).
    fn handle_roster_pull(&mut self, request: RosterPull, _now: Duration) {
        if self.left || self.defunct || !self.holds_live(&request.puller) {
            self.stats.roster_pulls_refused += 1;
            return;
        }
        self.stats.roster_pulls_answered += 1;
        let window = u32::from(request.window).min(self.settings.roster_sync_max_packets);
        self.send_roster_ranges(&request.puller, &request.ranges, window);
    }

    /// Sends `to` the members of this node's table in `ranges`, in key order, in at
    /// most `max_packets` packets all told: a larger table is pulled by the receiver a
    /// window at a time, each window asked for once the previous one has arrived.
    fn send_roster_ranges(&mut self, to: &MemberIdentity, ranges: &[KeyRange], max_packets: u32) {
        // The sender itself is part of the roster: a joiner that lost every other
        // packet from it must still learn it.
        let me = Member::new(self.swim.identity().clone(), 0, foca::State::Alive);
        let mut sorted: Vec<&Member<MemberIdentity>> = self
            .swim
            .iter_membership_state()
            .chain(std::iter::once(&me))
            .collect();
        sorted.sort_unstable_by_key(|member| member.id().key());
        let max_body = self.max_packet_size().saturating_sub(SEAL_OVERHEAD);
        let mut budget = max_packets as usize;
        let mut bodies = Vec::new();
        for &range in ranges {
            if budget == 0 {
                break;
            }
            match envelope::encode_roster_range(
                self.swim.identity(),
                &sorted,
                range,
                &mut self.codec,
                max_body,
                budget,
            ) {
                Ok(part) => {
                    budget -= part.len().min(budget);
                    bodies.extend(part);
                }
                Err(error) => debug!(%error, "encoding roster range"),
            }
        }
        for body in bodies {
            self.io.send(to.gossip_addr(), &[&body]);
        }
    }

    /// Sends `joiner` this node's whole membership table, at most once per
    /// `roster_sync_interval_ms` to the same member and at most
    /// `roster_sync_max_per_interval` times per interval in all (a mass join through one
    /// seed must not turn it into a firehose; joiners beyond the budget learn the roster
    /// from gossip). The first `roster_sync_max_packets` packets go at once; the joiner
    /// pulls the rest, and whatever was lost, from this node a window at a time.
    fn send_roster(&mut self, joiner: &MemberIdentity, now: Duration) {
        let interval = Duration::from_millis(self.settings.roster_sync_interval_ms);
        if let Some(last) = self.roster_sent.get(joiner.node())
            && now.saturating_sub(*last) < interval
        {
            return;
        }
        while self
            .roster_budget
            .front()
            .is_some_and(|sent| now.saturating_sub(*sent) >= interval)
        {
            self.roster_budget.pop_front();
        }
        if self.roster_budget.len() >= self.settings.roster_sync_max_per_interval as usize {
            self.stats.roster_syncs_skipped += 1;
            return;
        }
        self.roster_budget.push_back(now);
        if self.roster_sent.len() >= ROSTER_SENT_CAPACITY {
            self.roster_sent
                .retain(|_, last| now.saturating_sub(*last) < interval);
        }
        self.roster_sent.insert(joiner.node().clone(), now);
        self.stats.roster_syncs_sent += 1;
        self.send_roster_ranges(
            joiner,
            &[(0, u64::MAX)],
            self.settings.roster_sync_max_packets,
        );
    }

    fn refused(&mut self, error: foca::Error) -> PacketError {
        match error {
            foca::Error::Decode(_) | foca::Error::MalformedPacket | foca::Error::DataTooBig => {
                self.stats.decode_errors += 1;
            }
            _ => self.stats.rejected += 1,
        }
        PacketError::Swim(error)
    }
}

/// The Lifeguard suspicion bounds `settings` describe.
fn suspicion_bounds(settings: &GossipSettings) -> SuspicionBounds {
    SuspicionBounds {
        min: settings.suspect_to_down(),
        max: settings.suspect_to_down_max(),
        confirmations: settings.suspicion_confirmations,
    }
}

/// Reads the header (and, when `with_details`, the member updates and suspicion
/// reports) of foca's gossip bytes, following foca's layout: header; then, unless the
/// message is a bare broadcast, a big-endian `u16` count and that many members; then
/// custom broadcasts, each a big-endian `u16` length and its bytes. `None` if the header
/// does not decode; foca then refuses the packet itself. Undecodable details are skipped.
fn inspect(payload: &[u8], codec: &BincodeCodec, with_details: bool) -> Option<Inspected> {
    let mut rest = payload;
    let header = codec.decode_header_from(&mut rest).ok()?;
    let mut inspected = Inspected {
        header,
        updates: Vec::new(),
        reports: Vec::new(),
    };
    if !with_details {
        return Some(inspected);
    }
    if inspected.header.message != Message::Broadcast {
        let Some((count, after)) = split_u16(rest) else {
            return Some(inspected);
        };
        rest = after;
        for _ in 0..count {
            match codec.decode_member_from(&mut rest) {
                Ok(member) => inspected.updates.push(member),
                Err(_) => return Some(inspected),
            }
        }
    }
    while let Some((len, after)) = split_u16(rest) {
        let Some((item, after)) = after.split_at_checked(usize::from(len)) else {
            break;
        };
        if let Ok(report) = SuspicionReport::decode(item) {
            inspected.reports.push(report);
        }
        rest = after;
    }
    Some(inspected)
}

fn split_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*head), rest))
}

#[cfg(test)]
mod tests;
