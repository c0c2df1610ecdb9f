//! The thin IO task around [`Membership`]: one UDP socket, a timer queue and a command
//! channel. Every datagram and fired timer goes into the sans-IO core; its outputs are
//! sent, armed or published. The task owns the core alone, so nothing else locks it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::time::DelayQueue;
use tracing::{debug, info, warn};

use super::keyring_file;
use super::membership::{
    GossipKey, GossipSettings, IdentityInterner, KeyId, KeyInfo, Keyring, KeyringError,
    MemberIdentity, MemberView, Membership, MembershipEvent, MembershipStats, MembershipTimer,
    Output, PacketError, Replay,
};

/// Gossip packets dropped because they did not open (forged, tampered with, or sealed
/// under a key not in the keyring).
pub const GOSSIP_BAD_TAG: &str = "chorus_gossip_bad_tag_total";
/// Authentic gossip packets dropped as replays (a duplicate, or too far behind).
pub const GOSSIP_REPLAYED: &str = "chorus_gossip_replayed_total";
/// Authentic gossip packets dropped because their send time is outside the window.
pub const GOSSIP_STALE: &str = "chorus_gossip_stale_total";
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
    Leave {
        done: oneshot::Sender<()>,
    },
    Keys {
        op: KeyOp,
        reply: oneshot::Sender<Result<Vec<KeyInfo>, KeysError>>,
    },
}

/// One operation on the gossip keyring (`chorus ctl gossip-keys`).
#[derive(Debug, Clone)]
pub enum KeyOp {
    /// List the keys.
    List,
    /// Install a key as accepted.
    Install(GossipKey),
    /// Make an installed key the primary key.
    Use(KeyId),
    /// Remove an accepted key.
    Remove(KeyId),
}

impl KeyOp {
    /// The operation's name as `chorus ctl gossip-keys` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            KeyOp::List => "list",
            KeyOp::Install(_) => "install",
            KeyOp::Use(_) => "use",
            KeyOp::Remove(_) => "remove",
        }
    }
}

/// Why a keyring operation failed. In every case the keyring in use is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The keyring refused the operation.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The changed keyring could not be written to its file, so it was not applied.
    #[error("writing the keyring: {0}")]
    Persist(#[from] keyring_file::KeyringFileError),
    /// The task writing the keyring file did not finish (the runtime is shutting down),
    /// so the change was not applied.
    #[error("writing the keyring was aborted")]
    PersistAborted,
    /// The gossip task has stopped.
    #[error("gossip is not running")]
    Stopped,
}

/// What gossip seals and opens packets with, and where changes to it are kept.
#[derive(Debug, Clone)]
pub struct GossipKeys {
    /// The keyring to start with.
    pub keyring: Keyring,
    /// The file every change is written to before it is applied (none: changes last
    /// until the process ends).
    pub file: Option<PathBuf>,
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
        keys: GossipKeys,
        seeds: Vec<SocketAddr>,
        seed: u64,
    ) -> std::io::Result<Gossip> {
        let local_addr = socket.local_addr()?;
        // Exported from the start: an alert on the rate of rejected packets needs the
        // counters before the first rejection.
        for counter in [
            GOSSIP_BAD_TAG,
            GOSSIP_REPLAYED,
            GOSSIP_STALE,
            GOSSIP_DECODE_ERRORS,
            GOSSIP_PACKETS_IN,
            GOSSIP_PACKETS_OUT,
        ] {
            metrics::counter!(counter).increment(0);
        }
        // The run names this process's packets in the nonce: drawn from the OS's
        // randomness so that no two senders share one.
        let run: u64 = rand::random();
        let mut membership = Membership::with_keyring(
            identity,
            settings,
            keys.keyring,
            seed,
            run,
            IdentityInterner::new(),
        );
        let origin = SystemTime::now();
        membership.set_wall_origin(
            origin
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        );
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
            keyring_file: keys.file,
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

    /// Runs one keyring operation; a change is written to the keyring file before it is
    /// applied. Returns the keys afterwards.
    pub async fn keys(&self, op: KeyOp) -> Result<Vec<KeyInfo>, KeysError> {
        let (reply, wait) = oneshot::channel();
        self.commands
            .send(Command::Keys { op, reply })
            .await
            .map_err(|_| KeysError::Stopped)?;
        wait.await.map_err(|_| KeysError::Stopped)?
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
    keyring_file: Option<PathBuf>,
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
                    Some(Command::Keys { op, reply }) => {
                        let _ = reply.send(self.apply_keys(op).await);
                    }
                    None => return,
                },
            }
            self.flush().await;
        }
    }

    /// Applies a keyring operation: persist first, then use (a restart never finds an
    /// older keyring than the one packets were sealed with).
    async fn apply_keys(&mut self, op: KeyOp) -> Result<Vec<KeyInfo>, KeysError> {
        let mut keyring = self.membership.keyring().clone();
        match &op {
            KeyOp::List => return Ok(keyring.list()),
            KeyOp::Install(key) => {
                keyring.install(key.clone())?;
            }
            KeyOp::Use(id) => keyring.use_key(*id)?,
            KeyOp::Remove(id) => keyring.remove(*id)?,
        }
        if let Some(path) = self.keyring_file.clone() {
            let file = keyring.to_file();
            tokio::task::spawn_blocking(move || keyring_file::save(&path, &file))
                .await
                .map_err(|_| KeysError::PersistAborted)??;
        }
        let list = keyring.list();
        info!(op = op.name(), primary = %keyring.primary(), keys = list.len(), "gossip keyring changed");
        self.membership.set_keyring(keyring);
        Ok(list)
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
        PacketError::Sealed(_) => metrics::counter!(GOSSIP_BAD_TAG).increment(1),
        PacketError::Replayed(Replay::Stale { .. }) => {
            metrics::counter!(GOSSIP_STALE).increment(1);
        }
        PacketError::Replayed(_) => metrics::counter!(GOSSIP_REPLAYED).increment(1),
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
