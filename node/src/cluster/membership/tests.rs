//! Several members wired through a deterministic in-memory network: an ordered event
//! queue of datagrams and timers, a fixed one-way latency, crashes and dropped links.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use chorus_protocol::NodeId;

use super::codec::BincodeCodec;
use super::*;

const LATENCY: Duration = Duration::from_millis(1);
const KEY: ClusterKey = ClusterKey([7; KEY_LEN]);

/// Seals `body` as a member of the cluster would at `now` (the members' wall clock
/// starts at the Unix epoch in these tests).
fn seal_as(sealer: &mut Sealer, body: &[u8], now: Duration) -> Vec<u8> {
    sealer.seal(
        &Keyring::from_cluster_key(&KEY),
        now.as_millis() as u64,
        &[body],
    )
}

fn settings() -> GossipSettings {
    GossipSettings {
        expected_cluster_size: 4,
        ..GossipSettings::default()
    }
}

fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 7000 + i as u16))
}

fn identity(i: usize, incarnation: u64) -> MemberIdentity {
    MemberIdentity::new(
        NodeId(format!("node-{i}")),
        gossip_addr(i),
        SocketAddr::from(([10, 0, 0, 1], 9000 + i as u16)),
        incarnation,
    )
}

enum Pending {
    Datagram {
        from: usize,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        run: u64,
        timer: MembershipTimer,
    },
}

/// Members by index; each run of a member has its own number so that a crashed run's
/// timers die with it.
struct Net {
    now: Duration,
    seq: u64,
    queue: BTreeMap<(Duration, u64), Pending>,
    nodes: Vec<Option<(u64, Membership)>>,
    runs: u64,
    events: Vec<(Duration, usize, MembershipEvent)>,
    /// Datagrams to these addresses are lost.
    deaf: BTreeSet<SocketAddr>,
    /// While set, datagrams between this group and the rest are lost.
    partition: Option<BTreeSet<usize>>,
}

impl Net {
    fn new() -> Self {
        Net {
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: Vec::new(),
            runs: 0,
            events: Vec::new(),
            deaf: BTreeSet::new(),
            partition: None,
        }
    }

    /// Starts member `i` (a fresh run) with `settings`, announcing to member `seed`.
    fn start(&mut self, i: usize, incarnation: u64, settings: GossipSettings, seed: Option<usize>) {
        let mut member = Membership::new(identity(i, incarnation), settings, &KEY, i as u64);
        if let Some(seed) = seed {
            member.announce(gossip_addr(seed), self.now);
        }
        self.runs += 1;
        if self.nodes.len() <= i {
            self.nodes.resize_with(i + 1, || None);
        }
        self.nodes[i] = Some((self.runs, member));
        self.pump(i);
    }

    /// Starts `n` members; all but the first join through the first.
    fn cluster(n: usize, settings: GossipSettings) -> Self {
        let mut net = Net::new();
        net.start(0, 1, settings.clone(), None);
        for i in 1..n {
            net.start(i, 1, settings.clone(), Some(0));
        }
        net
    }

    fn member(&self, i: usize) -> &Membership {
        &self.nodes[i].as_ref().expect("running").1
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    fn leave(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].as_mut().expect("running").1.leave(now);
        self.pump(i);
    }

    fn push(&mut self, at: Duration, pending: Pending) {
        self.seq += 1;
        self.queue.insert((at, self.seq), pending);
    }

    fn pump(&mut self, i: usize) {
        let Some((run, member)) = self.nodes[i].as_mut() else {
            return;
        };
        let run = *run;
        let outputs: Vec<Output> = member.drain_outputs().collect();
        for output in outputs {
            match output {
                Output::Send { to, bytes } => {
                    self.push(self.now + LATENCY, Pending::Datagram { from: i, to, bytes });
                }
                Output::Schedule { after, timer } => {
                    self.push(
                        self.now + after,
                        Pending::Timer {
                            node: i,
                            run,
                            timer,
                        },
                    );
                }
                Output::Event(event) => self.events.push((self.now, i, event)),
            }
        }
    }

    fn run_until(&mut self, until: Duration) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((at, _), pending) = entry.remove_entry();
            self.now = at;
            match pending {
                Pending::Datagram { from, to, bytes } => {
                    let i = usize::from(to.port() - 7000);
                    let cut = self
                        .partition
                        .as_ref()
                        .is_some_and(|group| group.contains(&from) != group.contains(&i));
                    if cut || self.deaf.contains(&to) {
                        continue;
                    }
                    if let Some(Some((_, member))) = self.nodes.get_mut(i) {
                        let _ = member.handle_packet(&bytes, at);
                        self.pump(i);
                    }
                }
                Pending::Timer { node, run, timer } => {
                    if let Some(Some((current, member))) = self.nodes.get_mut(node)
                        && *current == run
                    {
                        member.handle_timer(timer, at);
                        self.pump(node);
                    }
                }
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, span: Duration) {
        self.run_until(self.now + span);
    }

    fn names(&self, range: impl IntoIterator<Item = usize>) -> Vec<NodeId> {
        let mut names: Vec<NodeId> = range
            .into_iter()
            .map(|i| identity(i, 0).node().clone())
            .collect();
        names.sort();
        names
    }

    /// No running member has counted a refused packet or a failed timer.
    fn assert_clean(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some((_, member)) = node {
                let stats = member.stats();
                assert_eq!(
                    (
                        stats.bad_tag_dropped,
                        stats.replayed_dropped + stats.stale_dropped,
                        stats.decode_errors,
                        stats.rejected,
                        stats.timer_errors
                    ),
                    (0, 0, 0, 0, 0),
                    "member {i}: {stats:?}"
                );
            }
        }
    }

    /// Events after `since` saying some member other than `except` went down, or that a
    /// member had to rejoin.
    fn false_downs(&self, since: Duration, except: usize) -> usize {
        let except = identity(except, 0).node().clone();
        self.events
            .iter()
            .filter(|(at, _, event)| {
                *at > since
                    && match event {
                        MembershipEvent::MemberDown(member) => member.node() != &except,
                        MembershipEvent::Rejoined { .. } => true,
                        _ => false,
                    }
            })
            .count()
    }

    fn state_of(&self, viewer: usize, subject: usize) -> Option<(MemberState, u64)> {
        self.member(viewer)
            .members()
            .into_iter()
            .find(|view| view.identity.node() == identity(subject, 0).node())
            .map(|view| (view.state, view.incarnation))
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn members_join_through_one_seed_and_all_see_each_other() {
    let mut net = Net::cluster(5, settings());
    net.run_for(secs(5));
    let all = net.names(0..5);
    for i in 0..5 {
        assert_eq!(net.member(i).live_members(), all, "member {i}");
        assert!(net.member(i).is_connected());
    }
    let ups = net
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, MembershipEvent::MemberUp(_)))
        .count();
    assert_eq!(ups, 5 * 4, "every member sees every other come up once");
}

#[test]
fn a_crashed_member_is_declared_down_by_all_others_in_time() {
    for lifeguard in [true, false] {
        let settings = GossipSettings {
            lifeguard,
            ..settings()
        };
        let bound = settings.suspect_to_down() + settings.probe_period() * 6;
        let mut net = Net::cluster(5, settings);
        net.run_for(secs(5));
        let crashed_at = net.now;
        net.crash(4);
        net.run_for(bound);
        for i in 0..4 {
            assert_eq!(
                net.state_of(i, 4).map(|(state, _)| state),
                Some(MemberState::Down),
                "member {i}, lifeguard {lifeguard}"
            );
            assert_eq!(net.member(i).live_members(), net.names(0..4));
            assert_eq!(
                net.member(i).member_state(identity(4, 0).node()),
                Some(MemberState::Down)
            );
        }
        let raised: u64 = (0..4)
            .map(|i| net.member(i).stats().suspicions_started)
            .sum();
        assert!(raised > 0, "some member's own probe raised the suspicion");
        let downs: BTreeSet<usize> = net
            .events
            .iter()
            .filter(|(at, _, e)| {
                *at > crashed_at
                    && matches!(e, MembershipEvent::MemberDown(m) if m.node().0 == "node-4")
            })
            .map(|(_, i, _)| *i)
            .collect();
        assert_eq!(downs, BTreeSet::from([0, 1, 2, 3]), "lifeguard {lifeguard}");
        assert_eq!(net.false_downs(crashed_at, 4), 0);
        net.assert_clean();
        if lifeguard {
            let early: u64 = (0..4)
                .map(|i| net.member(i).stats().lifeguard_declared_down)
                .sum();
            assert!(early > 0, "Lifeguard's own deadline declared the crash");
        }
    }
}

#[test]
fn a_restarted_member_rejoins_under_its_new_incarnation() {
    let settings = settings();
    let mut net = Net::cluster(4, settings.clone());
    net.run_for(secs(5));
    net.crash(3);
    net.run_for(settings.suspect_to_down() + settings.probe_period() * 6);
    assert_eq!(net.state_of(0, 3).map(|(s, _)| s), Some(MemberState::Down));

    net.start(3, 2_000, settings, Some(0));
    net.run_for(secs(3));
    for i in 0..4 {
        assert_eq!(net.member(i).live_members(), net.names(0..4), "member {i}");
    }
    for i in 0..3 {
        assert_eq!(
            net.state_of(i, 3),
            Some((MemberState::Alive, 2_000)),
            "member {i}"
        );
    }
}

#[test]
fn a_member_restarted_before_it_was_missed_replaces_its_old_run() {
    let settings = settings();
    let mut net = Net::cluster(4, settings.clone());
    net.run_for(secs(5));
    net.crash(3);
    net.start(3, 2_000, settings, Some(0));
    net.run_for(secs(3));
    for i in 0..3 {
        assert_eq!(
            net.state_of(i, 3),
            Some((MemberState::Alive, 2_000)),
            "member {i}"
        );
        assert_eq!(net.member(i).live_members(), net.names(0..4));
    }
    assert!(net.events.iter().any(|(_, i, e)| *i == 0
        && matches!(e, MembershipEvent::MemberRenewed { old, new }
            if old.incarnation() == 1 && new.incarnation() == 2_000)));
}

#[test]
fn a_graceful_leave_is_seen_as_down_within_a_probe_period() {
    let settings = settings();
    let mut net = Net::cluster(5, settings.clone());
    net.run_for(secs(5));
    net.leave(4);
    assert_eq!(net.member(4).live_members(), net.names(0..4));
    net.run_for(settings.probe_period());
    for i in 0..4 {
        assert_eq!(
            net.state_of(i, 4).map(|(s, _)| s),
            Some(MemberState::Down),
            "member {i}"
        );
    }
}

#[test]
fn a_healed_partition_merges_back_into_one_cluster() {
    // Each side declares the other down. Afterwards the periodic announce to down
    // members reaches across; the side holding the sender down answers with a down
    // notice, one side renews its identity and is taken back.
    let settings = settings();
    let heal_within = Duration::from_millis(settings.periodic_announce_down_ms) * 4;
    let mut net = Net::cluster(4, settings.clone());
    net.run_for(secs(5));
    net.partition = Some(BTreeSet::from([0, 1]));
    net.run_for(settings.suspect_to_down_max() + secs(10));
    assert_eq!(net.member(0).live_members(), net.names(0..2));
    assert_eq!(net.member(3).live_members(), net.names(2..4));
    net.partition = None;
    net.run_for(heal_within);
    for i in 0..4 {
        assert_eq!(net.member(i).live_members(), net.names(0..4), "member {i}");
    }
}

/// The member index behind an identity (see [`gossip_addr`]).
fn index_of(member: &MemberIdentity) -> usize {
    usize::from(member.gossip_addr().port() - 7000)
}

/// Rejoins after `since`, by member.
fn rejoined_after(net: &Net, since: Duration) -> BTreeSet<usize> {
    net.events
        .iter()
        .filter(|(at, _, e)| *at > since && matches!(e, MembershipEvent::Rejoined { .. }))
        .map(|(_, i, _)| *i)
        .collect()
}

#[test]
fn a_partition_longer_than_the_suspicion_timeout_heals_and_the_cut_off_side_renews() {
    const MEMBERS: usize = 24;
    let settings = GossipSettings {
        expected_cluster_size: MEMBERS as u32,
        ..GossipSettings::default()
    };
    // Announces to members believed down go out every periodic_announce_down_ms, to one
    // of them: the first crosses the cut well within one such round, then the notices
    // and the rejoin take a few round trips and the news a few gossip rounds.
    let heal_within = Duration::from_millis(settings.periodic_announce_down_ms) * 4;
    let cut = BTreeSet::from([20, 21, 22, 23]);
    let mut net = Net::cluster(MEMBERS, settings.clone());
    net.run_for(secs(10));
    for i in 0..MEMBERS {
        assert_eq!(
            net.member(i).live_members(),
            net.names(0..MEMBERS),
            "member {i}"
        );
    }
    net.partition = Some(cut.clone());
    // The cut-off side probes slowly (its local health drops as every probe across the
    // cut fails), so its longest suspicions take a while longer.
    net.run_for(settings.suspect_to_down_max() * 3);
    assert_eq!(net.member(0).live_members(), net.names(0..20));
    assert_eq!(net.member(23).live_members(), net.names(20..24));
    let healed = net.now;
    net.partition = None;
    let mut converged = None;
    let step = settings.probe_period();
    while net.now < healed + heal_within {
        net.run_for(step);
        if (0..MEMBERS).all(|i| net.member(i).live_members() == net.names(0..MEMBERS)) {
            converged = Some(net.now - healed);
            break;
        }
    }
    let converged = converged.unwrap_or_else(|| {
        let views: Vec<usize> = (0..MEMBERS)
            .map(|i| net.member(i).live_members().len())
            .collect();
        panic!("no convergence within {heal_within:?} of the heal: {views:?}")
    });
    // Stays converged: no member is told down again, nobody else rejoins.
    net.run_for(settings.suspect_to_down_max() * 2);
    for i in 0..MEMBERS {
        assert_eq!(
            net.member(i).live_members(),
            net.names(0..MEMBERS),
            "member {i}"
        );
        for j in 0..MEMBERS {
            if i != j {
                assert_eq!(
                    net.state_of(i, j).map(|(state, _)| state),
                    Some(MemberState::Alive),
                    "{i} sees {j}"
                );
            }
        }
    }
    // The cut-off members renew and nobody else: what the cut-off side concluded
    // about the larger side (its suspicions, their deadlines, its queued verdicts) does
    // not outlive the renewal, so no member of the larger side is declared down after
    // the heal nor forced to rejoin.
    let rejoined = rejoined_after(&net, healed);
    assert_eq!(
        rejoined, cut,
        "only the cut-off members renew (converged after {converged:?})"
    );
    let same_side_downs: Vec<_> = net
        .events
        .iter()
        .filter(|(at, viewer, event)| {
            *at > healed
                && matches!(event, MembershipEvent::MemberDown(member)
                    if cut.contains(viewer) == cut.contains(&index_of(member)))
        })
        .collect();
    assert!(
        same_side_downs.is_empty(),
        "down verdicts within a side after the heal: {same_side_downs:?}"
    );
    let notices: u64 = (0..MEMBERS)
        .map(|i| net.member(i).stats().down_notices_sent)
        .sum();
    assert!(notices > 0, "down notices brought the sides together");
    net.assert_clean();
}

#[test]
fn a_down_notice_about_an_earlier_run_is_ignored() {
    let mut net = Net::cluster(3, settings());
    net.run_for(secs(5));
    let mut codec = BincodeCodec::new();
    let mut sealer = Sealer::new(0xd0);
    let now = net.now;
    let mut notice = |subject: MemberIdentity, codec: &mut BincodeCodec| {
        let body = envelope::encode_down_notice(
            &DownNotice {
                notifier: identity(1, 1),
                subject,
                live_members: 1_000,
            },
            codec,
        )
        .expect("encode");
        seal_as(&mut sealer, &body, now)
    };
    let stale = notice(identity(0, 0), &mut codec);
    let member = &mut net.nodes[0].as_mut().expect("running").1;
    member.handle_packet(&stale, net.now).expect("accepted");
    assert_eq!(member.identity().incarnation(), 1);
    assert_eq!(member.stats().down_notices_stale, 1);
    // About the current run, from a member it holds live: it renews once.
    let current = notice(identity(0, 1), &mut codec);
    member.handle_packet(&current, net.now).expect("accepted");
    assert_eq!(member.identity().incarnation(), 2);
    // A replay of it is dropped as such.
    assert!(matches!(
        member.handle_packet(&current, net.now),
        Err(PacketError::Replayed(Replay::Duplicate))
    ));
    // The same notice sent again now names an earlier run: no second renewal.
    let again = notice(identity(0, 1), &mut codec);
    let member = &mut net.nodes[0].as_mut().expect("running").1;
    member.handle_packet(&again, net.now).expect("accepted");
    assert_eq!(member.identity().incarnation(), 2);
    assert_eq!(member.stats().down_notices_obeyed, 1);
    net.pump(0);
    net.run_for(secs(5));
    for i in 0..3 {
        assert_eq!(net.member(i).live_members(), net.names(0..3), "member {i}");
    }
}

/// Makes `member` hold member `n`'s first run down (as a verdict from before a heal
/// would), and drops what that makes it send.
fn hold_down(member: &mut Membership, n: usize, now: Duration) {
    let down = Member::new(identity(n, 1), 0, foca::State::Down);
    member
        .swim
        .apply_many(std::iter::once(down), false, &mut member.io)
        .expect("applied");
    member.absorb(now);
    let _: Vec<Output> = member.drain_outputs().collect();
}

#[test]
fn a_member_flooding_one_held_down_is_told_once_per_interval() {
    let settings = settings();
    let mut net = Net::cluster(3, settings.clone());
    net.run_for(secs(5));
    // Member 0 holds member 2's run down (say, a verdict from before a heal).
    hold_down(&mut net.nodes[0].as_mut().expect("running").1, 2, net.now);
    // Twenty packets from member 2 within one interval: one notice.
    // Another seed than the running member 2: another run, as after a restart.
    let mut sender = Membership::new(identity(2, 1), settings.clone(), &KEY, 200);
    let mut announce = |at: Duration| {
        sender.at(at);
        sender
            .swim
            .announce(identity(0, 1), &mut sender.io)
            .expect("announce");
        sender
            .drain_outputs()
            .find_map(|output| match output {
                Output::Send { bytes, .. } => Some(bytes),
                _ => None,
            })
            .expect("an announce")
    };
    let packets: Vec<Vec<u8>> = (0..20).map(|_| announce(net.now)).collect();
    let member = &mut net.nodes[0].as_mut().expect("running").1;
    for packet in &packets {
        member.handle_packet(packet, net.now).expect("accepted");
    }
    let stats = member.stats();
    assert_eq!(
        (stats.down_notices_sent, stats.down_notices_skipped),
        (1, 19)
    );
    let later = net.now + settings.probe_period() * DOWN_NOTICE_INTERVAL_PERIODS;
    let packet = announce(later);
    let member = &mut net.nodes[0].as_mut().expect("running").1;
    member.handle_packet(&packet, later).expect("accepted");
    assert_eq!(member.stats().down_notices_sent, 2);
}

/// A suspicion reported in a packet from a run this member holds down is the sender's
/// stale view (after a partition, the cut-off side's): foca discards the payload, so
/// nothing would ever refute it, and Lifeguard must not start a suspicion from it.
#[test]
fn a_suspicion_reported_by_a_member_held_down_is_ignored() {
    let settings = settings();
    for held_down in [false, true] {
        let mut net = Net::cluster(3, settings.clone());
        net.run_for(secs(5));
        let member = &mut net.nodes[0].as_mut().expect("running").1;
        if held_down {
            hold_down(member, 2, net.now);
        }
        // Member 2's run as another process would send it (another seed), suspecting
        // member 1.
        let mut sender = Membership::new(identity(2, 1), settings.clone(), &KEY, 200);
        sender.at(net.now);
        sender
            .swim
            .apply_many(
                std::iter::once(Member::alive(identity(0, 1))),
                false,
                &mut sender.io,
            )
            .expect("applied");
        let report = SuspicionReport {
            suspect: identity(1, 1),
            incarnation: 0,
            reporter: identity(2, 1).node().clone(),
        };
        let bytes = report.encode(&mut sender.codec).expect("encode");
        sender.swim.add_broadcast(&bytes).expect("queued");
        sender.swim.gossip(&mut sender.io).expect("gossip");
        let packet = sender
            .drain_outputs()
            .find_map(|output| match output {
                Output::Send { to, bytes } if to == gossip_addr(0) => Some(bytes),
                _ => None,
            })
            .expect("a gossip packet to member 0");
        let member = &mut net.nodes[0].as_mut().expect("running").1;
        member.handle_packet(&packet, net.now).expect("accepted");
        assert_eq!(
            member.stats().suspicions,
            u64::from(!held_down),
            "sender held down: {held_down}"
        );
    }
}

#[test]
fn a_packet_under_another_key_is_dropped_and_counted() {
    let mut net = Net::cluster(2, settings());
    net.run_for(secs(2));
    let mut outsider = Membership::new(identity(9, 1), settings(), &ClusterKey([8; KEY_LEN]), 9);
    outsider.announce(gossip_addr(0), net.now);
    let join = outsider
        .drain_outputs()
        .find_map(|output| match output {
            Output::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .expect("a join packet");
    let seed = &mut net.nodes[0].as_mut().expect("running").1;
    let before = seed.stats();
    let err = seed.handle_packet(&join, net.now).expect_err("refused");
    assert!(
        matches!(err, PacketError::Sealed(SealError::UnknownKey(_))),
        "{err}"
    );
    assert!(matches!(
        seed.handle_packet(&join[..3], net.now),
        Err(PacketError::Sealed(SealError::Truncated { len: 3 }))
    ));
    let after = seed.stats();
    assert_eq!(after.bad_tag_dropped, before.bad_tag_dropped + 2);
    assert_eq!(
        after.packets_out, before.packets_out,
        "no answer to an outsider"
    );
    assert_eq!(seed.live_members(), net.names(0..2));
}

#[test]
fn roster_sync_shows_a_joiner_the_whole_roster_at_once() {
    // Small packets: foca's own join reply then carries only part of the table.
    const MEMBERS: usize = 24;
    let small = |roster_sync| GossipSettings {
        max_packet_size: config::MIN_PACKET_SIZE,
        roster_sync,
        ..settings()
    };
    let mut seen_by_joiner = Vec::new();
    for roster_sync in [true, false] {
        let mut net = Net::cluster(MEMBERS, small(roster_sync));
        net.run_for(secs(8));
        assert_eq!(net.member(0).live_members().len(), MEMBERS);
        net.start(MEMBERS, 1, small(roster_sync), Some(0));
        // Join, welcome, announce, reply: four one-way trips.
        net.run_for(LATENCY * 5);
        seen_by_joiner.push(net.member(MEMBERS).live_members().len());
        if roster_sync {
            assert!(net.member(0).stats().roster_syncs_sent >= 1);
        }
    }
    assert_eq!(seen_by_joiner[0], MEMBERS + 1, "with roster sync");
    assert!(
        seen_by_joiner[1] < MEMBERS + 1,
        "without: {}",
        seen_by_joiner[1]
    );
}

#[test]
fn a_mass_join_spends_only_the_seeds_roster_budget() {
    let settings = GossipSettings {
        roster_sync_max_per_interval: 4,
        ..settings()
    };
    let mut net = Net::cluster(10, settings);
    net.run_for(LATENCY * 5);
    let seed = net.member(0).stats();
    assert_eq!((seed.roster_syncs_sent, seed.roster_syncs_skipped), (4, 5));
    net.run_for(secs(5));
    for i in 0..10 {
        assert_eq!(net.member(i).live_members(), net.names(0..10), "member {i}");
    }
}

#[test]
fn a_member_that_hears_no_acks_raises_its_local_health_multiplier() {
    let mut net = Net::cluster(4, settings());
    net.run_for(secs(5));
    assert_eq!(net.member(0).stats().lhm, 0);
    net.deaf.insert(gossip_addr(0));
    net.run_for(secs(8));
    let deaf = net.member(0).stats().lhm;
    let others: Vec<u8> = (1..4).map(|i| net.member(i).stats().lhm).collect();
    assert!(
        deaf >= 2 && others.iter().all(|lhm| *lhm < deaf),
        "deaf {deaf}, others {others:?}"
    );
}

#[test]
fn lifeguard_keeps_a_deaf_member_from_accusing_healthy_ones() {
    // A member that can send but not receive misses every ack and suspects everyone.
    // Plain SWIM lets it declare them down after one suspicion timeout, forcing healthy
    // members to rejoin; with Lifeguard nobody confirms its suspicions and its own
    // probing slows down, so within the longest timeout it accuses nobody.
    let mut false_downs = Vec::new();
    for lifeguard in [true, false] {
        let settings = GossipSettings {
            lifeguard,
            expected_cluster_size: 8,
            ..GossipSettings::default()
        };
        let window = settings.suspect_to_down_max() - settings.probe_period();
        let mut net = Net::cluster(8, settings);
        net.run_for(secs(5));
        let deafened = net.now;
        net.deaf.insert(gossip_addr(0));
        net.run_for(window);
        false_downs.push(net.false_downs(deafened, 0));
    }
    assert_eq!(false_downs[0], 0, "with Lifeguard");
    assert!(false_downs[1] > 0, "without Lifeguard");
}

#[test]
fn equal_seeds_and_inputs_give_equal_runs() {
    let trace = || {
        let mut net = Net::cluster(4, settings());
        net.run_for(secs(3));
        net.crash(3);
        net.run_for(secs(10));
        net.events
            .iter()
            .map(|(at, i, e)| format!("{at:?} {i} {e:?}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(trace(), trace());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever an insider (someone holding the key) sends, the core refuses or applies
    /// it without panicking.
    #[test]
    fn authenticated_garbage_never_panics(
        kind in 0u8..6,
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
    ) {
        let mut net = Net::cluster(2, settings());
        net.run_for(secs(2));
        let mut packet = vec![envelope::VERSION, kind];
        packet.extend_from_slice(&body);
        let sealed = seal_as(&mut Sealer::new(0xf0), &packet, net.now);
        let member = &mut net.nodes[0].as_mut().expect("running").1;
        let _ = member.handle_packet(&sealed, net.now);
        let _ = member.handle_packet(&body, net.now);
        net.pump(0);
        net.run_for(secs(2));
    }
}

#[test]
fn a_seen_entry_keeps_the_state_and_the_instant_it_packs() {
    let member = identity(1, 1);
    for state in [MemberState::Alive, MemberState::Suspect, MemberState::Down] {
        for since in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(86_400 * 365 * 100) + Duration::from_nanos(7),
        ] {
            let seen = Seen::new(&member, state, since);
            assert_eq!((seen.state(), seen.since()), (state, since));
            assert!(seen.is(&member));
        }
    }
    assert!(!Seen::new(&member, MemberState::Alive, Duration::ZERO).is(&identity(1, 2)));
    assert_eq!(
        std::mem::size_of::<Seen>(),
        16,
        "two words per known member"
    );
}

/// The first packet `sender` sends after announcing to member 0 at `at`.
fn join_packet(sender: &mut Membership, at: Duration) -> Vec<u8> {
    sender.announce(gossip_addr(0), at);
    sender
        .drain_outputs()
        .find_map(|output| match output {
            Output::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .expect("a join packet")
}

#[test]
fn a_replayed_packet_and_a_stale_one_are_dropped_and_counted() {
    let mut net = Net::cluster(2, settings());
    net.run_for(secs(2));
    let mut sender = Membership::new(identity(9, 1), settings(), &KEY, 900);
    let join = join_packet(&mut sender, net.now);
    let seed = &mut net.nodes[0].as_mut().expect("running").1;
    seed.handle_packet(&join, net.now)
        .expect("the first copy is accepted");
    let out = seed.stats().packets_out;
    assert!(matches!(
        seed.handle_packet(&join, net.now),
        Err(PacketError::Replayed(Replay::Duplicate))
    ));
    assert_eq!(seed.stats().replayed_dropped, 1);
    assert_eq!(seed.stats().packets_out, out, "a replay is not answered");
    // Sealed more than the replay window before it arrives.
    let old = join_packet(&mut sender, net.now);
    let late = net.now + replay::DEFAULT_MAX_AGE + Duration::from_millis(1);
    let seed = &mut net.nodes[0].as_mut().expect("running").1;
    assert!(matches!(
        seed.handle_packet(&old, late),
        Err(PacketError::Replayed(Replay::Stale { .. }))
    ));
    assert_eq!(seed.stats().stale_dropped, 1);
}

#[test]
fn keys_rotated_on_every_member_keep_the_cluster_whole() {
    let mut net = Net::cluster(3, settings());
    net.run_for(secs(3));
    let old = Keyring::from_cluster_key(&KEY).primary();
    let new = GossipKey::from_bytes([42; keyring::GOSSIP_KEY_LEN]);
    let each = |net: &mut Net, step: &dyn Fn(&mut Keyring)| {
        for node in net.nodes.iter_mut() {
            let member = &mut node.as_mut().expect("running").1;
            let mut ring = member.keyring().clone();
            step(&mut ring);
            member.set_keyring(ring);
        }
    };
    each(&mut net, &|ring| {
        ring.install(new.clone()).expect("install");
    });
    net.run_for(secs(2));
    each(&mut net, &|ring| ring.use_key(new.id()).expect("use"));
    net.run_for(secs(2));
    each(&mut net, &|ring| ring.remove(old).expect("remove"));
    net.run_for(secs(5));
    net.assert_clean();
    for i in 0..3 {
        assert_eq!(net.member(i).live_members(), net.names(0..3), "member {i}");
        assert_eq!(net.member(i).keyring().primary(), new.id());
    }
    // A member still on the old key alone is now outside: its packets do not open.
    let mut stale = Membership::new(identity(9, 1), settings(), &KEY, 900);
    let join = join_packet(&mut stale, net.now);
    let seed = &mut net.nodes[0].as_mut().expect("running").1;
    assert!(matches!(
        seed.handle_packet(&join, net.now),
        Err(PacketError::Sealed(SealError::UnknownKey(id))) if id == old
    ));
}

#[test]
fn a_roster_larger_than_one_burst_is_pulled_in_full_and_lost_parts_are_asked_again() {
    // One packet per burst, 40 members of small packets: the seed's first burst holds
    // a fraction of the table, and the joiner pulls the rest range by range.
    const MEMBERS: usize = 40;
    let settings = GossipSettings {
        max_packet_size: config::MIN_PACKET_SIZE,
        roster_sync_max_packets: 1,
        ..settings()
    };
    let mut net = Net::cluster(MEMBERS, settings.clone());
    net.run_for(secs(8));
    assert_eq!(net.member(0).live_members().len(), MEMBERS);
    net.start(MEMBERS, 1, settings.clone(), Some(0));
    // Lose the seed's first burst: the joiner then holds nothing of the roster but
    // whatever foca's own reply carried, and must ask for all of it.
    let joiner = gossip_addr(MEMBERS);
    let mut lost = 0;
    while lost == 0 {
        net.run_for(LATENCY);
        let before = net.queue.len();
        net.queue.retain(|_, pending| {
            !matches!(pending, Pending::Datagram { from: 0, to, bytes }
                if *to == joiner && bytes.len() > 300)
        });
        lost = before - net.queue.len();
    }
    net.run_for(settings.probe_period() * 2);
    assert_eq!(
        net.member(MEMBERS).live_members(),
        net.names(0..=MEMBERS),
        "the joiner knows everyone within two probe periods"
    );
    let stats = net.member(MEMBERS).stats();
    assert!(stats.roster_pulls_sent >= 2, "{stats:?}");
    assert!(net.member(0).stats().roster_pulls_answered >= 2);
    net.assert_clean();
}

/// Member 0 running alone but holding `members` more rows (members 1..=members) in its
/// table, as a roster sync would leave them: a table of any size without running a
/// cluster that size (packets to those members are lost).
fn seed_knowing(members: usize, settings: GossipSettings) -> Net {
    let mut net = Net::new();
    net.start(0, 1, settings.clone(), None);
    let rows: Vec<Member<MemberIdentity>> = (1..=members)
        .map(|i| Member::alive(identity(i, 1)))
        .collect();
    let max_body = settings.max_packet_size as usize - SEAL_OVERHEAD;
    let bodies =
        envelope::encode_roster_sync(&rows, &mut BincodeCodec::new(), max_body, usize::MAX);
    let mut sealer = Sealer::new(seal::derived_run(4_242));
    let now = net.now;
    let seed = &mut net.nodes[0].as_mut().expect("running").1;
    for body in bodies {
        seed.handle_packet(&seal_as(&mut sealer, &body, now), now)
            .expect("the roster applies");
    }
    net.pump(0);
    assert_eq!(net.member(0).live_members().len(), members + 1);
    net
}

#[test]
fn a_roster_of_more_packets_than_any_burst_or_pull_count_arrives_in_full_a_window_per_round_trip() {
    // One packet per window and small packets: about a hundred windows, more than a
    // fixed number of pulls would fetch, and far more than one period would allow if
    // the pulls went on a timer instead of on the arrival of the previous window.
    const MEMBERS: usize = 1_200;
    let settings = GossipSettings {
        max_packet_size: config::MIN_PACKET_SIZE,
        roster_sync_max_packets: 1,
        ..settings()
    };
    let mut net = seed_knowing(MEMBERS, settings.clone());
    net.start(MEMBERS + 1, 1, settings.clone(), Some(0));
    net.run_for(settings.probe_period());
    assert_eq!(
        net.member(MEMBERS + 1).live_members().len(),
        MEMBERS + 2,
        "the joiner knows everyone within a probe period"
    );
    let joiner = net.member(MEMBERS + 1).stats();
    let seed = net.member(0).stats();
    assert!(joiner.roster_pulls_sent > 64, "{joiner:?}");
    // Nothing was lost, so nothing was asked for twice: the unasked first window and
    // one window per pull, each applied once.
    assert_eq!(seed.roster_pulls_answered, joiner.roster_pulls_sent);
    assert_eq!(joiner.roster_packets_applied, joiner.roster_pulls_sent + 1);
}

#[test]
#[cfg_attr(debug_assertions, ignore = "ten thousand members: run with --release")]
fn a_joiner_of_ten_thousand_members_knows_them_all_within_a_fraction_of_a_period() {
    const MEMBERS: usize = 10_000;
    let settings = GossipSettings {
        expected_cluster_size: MEMBERS as u32,
        ..GossipSettings::default()
    };
    let mut net = seed_knowing(MEMBERS, settings.clone());
    net.start(MEMBERS + 1, 1, settings.clone(), Some(0));
    let start = net.now;
    let mut known = 0;
    while known < MEMBERS + 2 && net.now < start + settings.probe_period() * 2 {
        net.run_for(Duration::from_millis(1));
        known = net.member(MEMBERS + 1).live_members().len();
    }
    let took = net.now - start;
    let joiner = net.member(MEMBERS + 1).stats();
    assert_eq!(known, MEMBERS + 2, "{joiner:?}");
    assert!(took < settings.probe_period() / 10, "{took:?} {joiner:?}");
}
