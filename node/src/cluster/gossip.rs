//! The thin IO task around [`Membership`]: one UDP socket, a timer queue and a command
//! channel. Every datagram and fired timer goes into the sans-IO core; its outputs are
//! sent, armed or published. The task owns the core alone, so nothing else locks it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::time::DelayQueue;
use tracing::{debug, info, warn};

use super::membership::{
    ClusterKey, GossipSettings, MemberIdentity, MemberView, Membership, MembershipEvent,
    MembershipStats, MembershipTimer, Output, PacketError,
};

/// Gossip packets dropped for a bad or missing authentication tag.
pub const GOSSIP_BAD_TAG: &str = "chorus_gossip_bad_tag_total";
/// Gossip packets dropped as oversized or undecodable.
pub const GOSSIP_DECODE_ERRORS: &str = "chorus_gossip_decode_errors_total";
/// Gossip datagrams received.
pub const GOSSIP_PACKETS_IN: &str = "chorus_gossip_packets_received_total";
/// Gossip datagrams sent.
pub const GOSSIP_PACKETS_OUT: &str = "chorus_gossip_packets_sent_total";

/// How often the published member table is refreshed when no event changed it (a
/// suspect's state moves without an event).
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The member table as last published, with the wall-clock time its `since` values
/// count from.
#[derive(Clone, Debug)]
pub struct MembersView {
    /// Every member this node knows, itself first.
    pub members: Vec<MemberView>,
    /// Wall-clock time of the core's time zero.
    pub origin: SystemTime,
    /// The core's counters.
    pub stats: MembershipStats,
}

enum Command {
    Leave { done: oneshot::Sender<()> },
}

/// A running gossip task.
#[derive(Clone)]
pub struct Gossip {
    commands: mpsc::Sender<Command>,
    members: watch::Receiver<Arc<MembersView>>,
    events: broadcast::Sender<MembershipEvent>,
    local_addr: SocketAddr,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Gossip {
    /// Starts gossiping on `socket` as `identity`, joining through `seeds` (none for a
    /// cluster's first node). `seed` seeds the core's random choices.
    pub fn start(
        socket: UdpSocket,
        identity: MemberIdentity,
        settings: GossipSettings,
        key: &ClusterKey,
        seeds: Vec<SocketAddr>,
        seed: u64,
    ) -> std::io::Result<Gossip> {
        let local_addr = socket.local_addr()?;
        let membership = Membership::new(identity, settings, key, seed);
        let origin = SystemTime::now();
        let initial = Arc::new(MembersView {
            members: membership.members(),
            origin,
            stats: membership.stats(),
        });
        let (members_tx, members) = watch::channel(initial);
        let (events, _) = broadcast::channel(1024);
        let (commands, rx) = mpsc::channel(8);
        let driver = Driver {
            socket,
            membership,
            timers: DelayQueue::new(),
            started: Instant::now(),
            origin,
            members: members_tx,
            events: events.clone(),
        };
        let task = tokio::spawn(driver.run(rx, seeds));
        Ok(Gossip {
            commands,
            members,
            events,
            local_addr,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        })
    }

    /// The UDP address gossip is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The member table, kept current.
    pub fn members(&self) -> watch::Receiver<Arc<MembersView>> {
        self.members.clone()
    }

    /// Membership events from now on.
    pub fn events(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    /// Leaves the cluster gracefully (the others learn it at once) and stops the task.
    pub async fn leave(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Leave { done }).await.is_ok() {
            let _ = wait.await;
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Stops the task without telling anyone (as a crash would look to the others).
    pub fn abort(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

struct Driver {
    socket: UdpSocket,
    membership: Membership,
    timers: DelayQueue<MembershipTimer>,
    started: Instant,
    origin: SystemTime,
    members: watch::Sender<Arc<MembersView>>,
    events: broadcast::Sender<MembershipEvent>,
}

impl Driver {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, seeds: Vec<SocketAddr>) {
        let now = self.now();
        for seed in seeds {
            self.membership.announce(seed, now);
        }
        self.flush().await;
        let mut buf = vec![0u8; self.membership.max_packet_size() + 1];
        let mut publish = tokio::time::interval(PUBLISH_EVERY);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        metrics::counter!(GOSSIP_PACKETS_IN).increment(1);
                        let now = self.now();
                        if let Err(error) = self.membership.handle_packet(&buf[..len], now) {
                            count_dropped(&error);
                            debug!(%from, %error, "gossip packet dropped");
                        }
                    }
                    Err(error) => warn!(%error, "gossip socket receive failed"),
                },
                Some(expired) = self.timers.next() => {
                    let now = self.now();
                    self.membership.handle_timer(expired.into_inner(), now);
                }
                _ = publish.tick() => self.publish(),
                command = commands.recv() => match command {
                    Some(Command::Leave { done }) => {
                        let now = self.now();
                        self.membership.leave(now);
                        self.flush().await;
                        self.publish();
                        info!("left the cluster");
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
            self.flush().await;
        }
    }

    /// Carries out what the core asked for.
    async fn flush(&mut self) {
        let outputs: Vec<Output> = self.membership.drain_outputs().collect();
        let mut changed = false;
        for output in outputs {
            match output {
                Output::Send { to, bytes } => {
                    metrics::counter!(GOSSIP_PACKETS_OUT).increment(1);
                    if let Err(error) = self.socket.send_to(&bytes, to).await {
                        debug!(%to, %error, "gossip send failed");
                    }
                }
                Output::Schedule { after, timer } => {
                    self.timers.insert(timer, after);
                }
                Output::Event(event) => {
                    log_event(&event);
                    changed = true;
                    // No receiver yet is fine: the table is published below as well.
                    let _ = self.events.send(event);
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    fn publish(&self) {
        self.members.send_replace(Arc::new(MembersView {
            members: self.membership.members(),
            origin: self.origin,
            stats: self.membership.stats(),
        }));
    }
}

fn count_dropped(error: &PacketError) {
    match error {
        PacketError::Auth(_) => metrics::counter!(GOSSIP_BAD_TAG).increment(1),
        _ => metrics::counter!(GOSSIP_DECODE_ERRORS).increment(1),
    }
}

fn log_event(event: &MembershipEvent) {
    match event {
        MembershipEvent::MemberUp(id) => {
            info!(member = %id.node(), incarnation = id.incarnation(), "member up");
        }
        MembershipEvent::MemberDown(id) => {
            warn!(member = %id.node(), incarnation = id.incarnation(), "member down");
        }
        MembershipEvent::MemberRenewed { old, new } => info!(
            member = %new.node(),
            old = old.incarnation(),
            new = new.incarnation(),
            "member restarted"
        ),
        MembershipEvent::Joined => info!("joined the cluster"),
        MembershipEvent::Isolated => warn!("no live peer left"),
        MembershipEvent::Rejoined { new_incarnation } => {
            warn!(new_incarnation, "declared down by the others; rejoined");
        }
        MembershipEvent::Defunct => warn!("no longer a member"),
    }
}
