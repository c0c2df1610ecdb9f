//! The simulation loop: members (the node's own membership core), the network between
//! them and the script, driven event by event in simulated time.
//!
//! Every input to a member is followed by draining its outputs, as the node's driver
//! does: packets go to the network model, timers to the event queue, membership changes
//! to the views that the metrics watch.

use chorus_node::cluster::membership::IdentityInterner;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::events::{EventQueue, Micros, SEC};
use super::member::{self, Effect, SimMember, SimTimer};
use super::metrics::{JoinerRoster, Milestones, Verdicts, Views};
use super::network::{Network, NetworkModel, NodeIx, Traffic};
use super::scenario::{CRASHED, SLOW, Script, Step};
use super::settings::RunSettings;

/// Something due at an instant of simulated time.
enum Event {
    /// A packet arrives at `to`.
    Deliver { to: NodeIx, packet: Vec<u8> },
    /// One of `node`'s timers fires.
    Timer { node: NodeIx, timer: SimTimer },
    /// A founder starts with the full roster.
    Start(NodeIx),
    /// The script's step at this index runs.
    Step(usize),
    /// The views are sampled for the time series.
    Sample,
}

/// Whether a node runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not started yet (the joiner before its join, founders before their start).
    Idle,
    /// Running.
    Up,
    /// Crashed: it does nothing and what is sent to it is lost.
    Crashed,
}

/// One point of the time series: simulated seconds, observer-subject pairs whose view
/// is wrong, packets sent in the last sample interval.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Simulated seconds since the start.
    pub at_secs: f64,
    /// Observer-subject pairs whose view differs from the truth.
    pub wrong_views: i64,
    /// Packets sent per live node per second over the interval.
    pub packets_per_node_sec: f64,
}

/// What a finished run measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The script it followed.
    pub script: Script,
    /// Probe period in microseconds.
    pub period: Micros,
    /// Suspicion timeout in force (the longest one with Lifeguard), microseconds.
    pub suspicion: Micros,
    /// Shortest suspicion timeout (equal to `suspicion` without Lifeguard), microseconds.
    pub suspicion_min: Micros,
    /// When the scripted events happened and completed.
    pub milestones: Milestones,
    /// Verdicts counted.
    pub verdicts: Verdicts,
    /// Packets and bytes sent in the steady state (before the partition).
    pub steady_traffic: Traffic,
    /// Node-seconds of running members in the steady state (for per-node rates).
    pub steady_node_seconds: f64,
    /// Time series sampled once a second.
    pub samples: Vec<Sample>,
    /// Whether every live view equalled the truth at the end of the run.
    pub converged_at_end: bool,
    /// Events processed.
    pub events: u64,
}

/// A run in progress.
pub struct Simulation {
    settings: RunSettings,
    script: Script,
    queue: EventQueue<Event>,
    net: Network,
    members: Vec<Option<SimMember>>,
    status: Vec<Status>,
    views: Views,
    milestones: Milestones,
    verdicts: Verdicts,
    /// Nodes the partition cut off.
    cut: Vec<bool>,
    /// Traffic when the steady state ended.
    steady_traffic: Option<Traffic>,
    effects: Vec<Effect>,
    /// The roster-sync packets every founder starts from.
    roster: Vec<Vec<u8>>,
    samples: Vec<Sample>,
    last_sample_packets: u64,
    events: u64,
}

/// Interval between two samples of the time series.
const SAMPLE_EVERY: Micros = SEC;

impl Simulation {
    /// A run of `settings`, nothing started yet.
    pub fn new(settings: RunSettings) -> Self {
        let period = settings.period();
        let script = Script::new(
            settings.nodes,
            period,
            settings.suspicion(),
            settings.after_heal(),
            settings.minutes * 60 * SEC,
        );
        let n = settings.nodes;
        let mut master = ChaCha8Rng::seed_from_u64(settings.seed);
        let net_rng = ChaCha8Rng::seed_from_u64(master.random());
        let mut net = Network::new(NetworkModel::lan(settings.loss), n, net_rng);
        if settings.slow_node {
            net.set_slow(Some(SLOW));
        }
        let mut queue = EventQueue::new();
        // Founders start at random instants within the first period, so that their probes
        // do not run in lockstep.
        for node in 0..script.founders as NodeIx {
            queue.schedule_at(master.random_range(0..period), Event::Start(node));
        }
        for (index, (at, _)) in script.steps.iter().enumerate() {
            queue.schedule_at(*at, Event::Step(index));
        }
        queue.schedule_at(SAMPLE_EVERY, Event::Sample);
        let interner = IdentityInterner::new();
        let members = (0..n as NodeIx)
            .map(|node| Some(SimMember::new(node, &settings, master.random(), &interner)))
            .collect();
        Simulation {
            views: Views::new(n),
            members,
            status: vec![Status::Idle; n],
            cut: vec![false; n],
            steady_traffic: None,
            milestones: Milestones::default(),
            verdicts: Verdicts::default(),
            effects: Vec::new(),
            roster: member::founders_roster(script.founders, &settings),
            samples: Vec::new(),
            last_sample_packets: 0,
            events: 0,
            settings,
            script,
            queue,
            net,
        }
    }

    /// Runs the script to its end and returns what was measured.
    pub fn run(mut self) -> Outcome {
        let end = self.script.end;
        while let Some((now, event)) = self.queue.pop_until(end) {
            self.events += 1;
            match event {
                Event::Deliver { to, packet } => {
                    if self.status[to as usize] == Status::Up {
                        self.member(to).handle_packet(now, &packet);
                        self.drain(to, now);
                    }
                }
                Event::Timer { node, timer } => {
                    if self.status[node as usize] == Status::Up {
                        self.member(node).handle_timer(now, timer);
                        self.drain(node, now);
                    }
                }
                Event::Start(node) => self.start_founder(node, now),
                Event::Step(index) => self.step(index, now),
                Event::Sample => self.sample(now),
            }
        }
        let period = self.settings.period();
        let s = &self.script;
        let steady_secs = s.partition_at() as f64 / SEC as f64;
        let secs = |at: Option<Micros>| at.map_or(steady_secs, |at| at as f64 / SEC as f64);
        let joiner_secs = steady_secs - secs(self.milestones.join_at);
        let crashed_secs = steady_secs - secs(self.milestones.crash_at);
        // Founders start within the first period; counting them from zero is close enough.
        let steady_node_seconds = s.founders as f64 * steady_secs + joiner_secs - crashed_secs;
        Outcome {
            period,
            suspicion: self.settings.suspicion(),
            suspicion_min: self.settings.suspicion_min(),
            milestones: self.milestones,
            verdicts: self.verdicts,
            steady_traffic: self.steady_traffic.unwrap_or_else(|| self.net.traffic()),
            steady_node_seconds,
            samples: self.samples,
            converged_at_end: self.views.converged(),
            events: self.events,
            script: self.script,
        }
    }

    fn member(&mut self, node: NodeIx) -> &mut SimMember {
        self.members[node as usize]
            .as_mut()
            .expect("members are only dropped when they crash")
    }

    /// A founder starts knowing every other founder.
    fn start_founder(&mut self, node: NodeIx, now: Micros) {
        self.status[node as usize] = Status::Up;
        self.views.start(node);
        let roster = std::mem::take(&mut self.roster);
        self.member(node).start_with_roster(now, &roster);
        self.roster = roster;
        self.drain(node, now);
    }

    fn step(&mut self, index: usize, now: Micros) {
        match self.script.steps[index].1.clone() {
            Step::Join { node, seed } => {
                self.milestones.join_at = Some(now);
                self.status[node as usize] = Status::Up;
                self.views.start(node);
                self.member(node).announce(now, seed);
                self.drain(node, now);
            }
            Step::Crash(node) => {
                self.milestones.crash_at = Some(now);
                self.status[node as usize] = Status::Crashed;
                // A crashed member's memory goes with it.
                self.members[node as usize] = None;
                self.views.crash(node);
            }
            Step::Partition(nodes) => {
                self.milestones.partition_at = Some(now);
                self.net.partition(&nodes);
                self.views.partition(&nodes);
                for &node in &nodes {
                    self.cut[node as usize] = true;
                }
                self.steady_traffic = Some(self.net.traffic());
            }
            Step::Heal => {
                self.milestones.heal_at = Some(now);
                self.net.heal();
                self.views.heal();
            }
        }
        self.check_milestones(now);
    }

    fn sample(&mut self, now: Micros) {
        let packets = self.net.traffic().packets;
        let live = self.views.live_count().max(1) as f64;
        let interval = SAMPLE_EVERY as f64 / SEC as f64;
        self.samples.push(Sample {
            at_secs: now as f64 / SEC as f64,
            wrong_views: self.views.mismatches(),
            packets_per_node_sec: (packets - self.last_sample_packets) as f64 / live / interval,
        });
        self.last_sample_packets = packets;
        self.queue.schedule_in(SAMPLE_EVERY, Event::Sample);
    }

    /// Moves `node`'s outputs into the network, the queue and the views.
    fn drain(&mut self, node: NodeIx, now: Micros) {
        let mut effects = std::mem::take(&mut self.effects);
        if let Some(member) = self.members[node as usize].as_mut() {
            member.drain(&mut effects);
        }
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, packet } => {
                    if let Some(latency) = self.net.send(node, to, packet.len()) {
                        self.queue
                            .schedule_in(latency, Event::Deliver { to, packet });
                    }
                }
                Effect::Schedule { after, timer } => {
                    self.queue.schedule_in(after, Event::Timer { node, timer });
                }
                Effect::Up(subject) => {
                    if self.views.set(node, subject, true) {
                        self.check_milestones(now);
                    }
                }
                Effect::Down(subject) => {
                    if self.views.set(node, subject, false) {
                        self.classify_down(node, subject);
                        self.check_milestones(now);
                    }
                }
                Effect::SuspicionStarted => {
                    if !self.after_partition() {
                        self.verdicts.suspicions += 1;
                    }
                    if self.status[CRASHED as usize] == Status::Crashed
                        && self.milestones.crash_suspected_at.is_none()
                        && self.members[node as usize]
                            .as_ref()
                            .is_some_and(|member| member.suspects(CRASHED))
                    {
                        self.milestones.crash_suspected_at = Some(now);
                    }
                }
                Effect::Rejoin => {
                    if self.after_partition() {
                        self.verdicts.aftermath_rejoins += 1;
                        if !self.cut[node as usize] {
                            self.verdicts.rejoins_outside_cut += 1;
                        }
                    } else {
                        self.verdicts.forced_rejoins += 1;
                    }
                }
            }
        }
        self.effects = effects;
    }

    /// Whether the steady state is over (the partition has started).
    fn after_partition(&self) -> bool {
        self.milestones.partition_at.is_some()
    }

    fn classify_down(&mut self, observer: NodeIx, subject: NodeIx) {
        let after_partition = self.after_partition();
        let v = &mut self.verdicts;
        if self.status[subject as usize] != Status::Up {
            v.crash_down += 1;
        } else if !after_partition {
            v.false_down += 1;
        } else if self.milestones.heal_at.is_none()
            && self.cut[observer as usize] != self.cut[subject as usize]
        {
            v.partition_down += 1;
        } else {
            v.aftermath_down += 1;
            if self.cut[observer as usize] == self.cut[subject as usize] {
                v.same_side_down += 1;
            }
        }
    }

    fn check_milestones(&mut self, now: Micros) {
        let m = &mut self.milestones;
        let views = &self.views;
        let joiner = self.script.joiner();
        if m.join_at.is_some() {
            if m.join_known_at.is_none() && views.known_by(joiner) + 1 >= views.live_count() {
                m.join_known_at = Some(now);
            }
            if m.joiner_complete_at.is_none() && views.view_complete(joiner) {
                m.joiner_complete_at = Some(now);
                m.joiner_roster = self.members[joiner as usize].as_ref().map(|member| {
                    let (packets, pulls) = member.roster_counts();
                    JoinerRoster { packets, pulls }
                });
            }
        }
        if m.crash_at.is_some() && m.crash_down_at.is_none() && views.known_by(CRASHED) == 0 {
            m.crash_down_at = Some(now);
        }
        if m.partition_at.is_some()
            && m.heal_at.is_none()
            && m.partition_detected_at.is_none()
            && views.partition_detected()
        {
            m.partition_detected_at = Some(now);
        }
        if m.heal_at.is_some() && m.converged_at.is_none() && views.converged() {
            m.converged_at = Some(now);
        }
    }
}
