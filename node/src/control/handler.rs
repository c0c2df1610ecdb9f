//! The commands behind the control socket: one method per command, and `handle` to
//! route a request to its method. No socket IO here; the listener moves the bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chorus_actors::BreakerCommand;
use chorus_actors::DegradeCommand;
use chorus_actors::policy::breaker::BreakerState;
use chorus_actors::policy::degradation::Level;
use chorus_actors::published_breaker::state_name;
use chorus_actors::store::SnapshotError;
use chorus_actors::{AuditReport, NodeHandle};
use chorus_protocol::ErrorCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::protocol::{
    AuditVerification, BreakerChange, BreakerRow, BrokenLink, BulkheadRow, ControlError,
    CordonReport, DegradeReport, DrainStarted, GossipKeyRow, GossipKeysReport, LeaveReport,
    LimitsReport, LogLevelChange, MemberRow, PeerRow, QueueRow, QueuesReport, ReloadReport,
    ReplicaRow, ReplicasReport, ReplicationStatus, Reply, Request, RingNodeRow, RingReport,
    SnapshotResult, Speaks, StatusReport, StoreLogStatus, UserOwner,
};
use crate::cluster::drain::{self, Drain};
use crate::cluster::gossip::{KeyOp, KeysError};
use crate::cluster::links::{LinkState, Links};
use crate::cluster::membership::keyring::MAX_KEYS;
use crate::cluster::membership::{GossipKey, KeyId, KeyInfo, KeyringError, MemberState};
use crate::cluster::replication::Replicator;
use crate::cluster::replication::anti_entropy::Found;
use crate::cluster::replication::digest::partition_digest;
use crate::cluster::replication::handoff::{FollowerLag, HandoffReport};
use crate::cluster::routing::Forwarder;
use crate::cluster::runtime::ClusterRuntime;
use crate::cluster::standing::PartitionSet;
use crate::cluster::standing_sync;
use crate::cluster::state::ClusterState;
use crate::config::LimitsSection;
use crate::logging::{LogControl, LogLevelError};
use crate::reload::{ReloadError, Reloader};

/// A `gossip-keys` command with its argument as given.
#[derive(Clone, Copy)]
pub enum GossipKeysCommand<'a> {
    /// List the keys.
    List,
    /// Install this key (hex).
    Install(&'a str),
    /// Use the key with this id.
    Use(&'a str),
    /// Remove the key with this id.
    Remove(&'a str),
}

impl std::fmt::Debug for GossipKeysCommand<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GossipKeysCommand::List => f.write_str("List"),
            GossipKeysCommand::Install(_) => f.write_str("Install(<redacted>)"),
            GossipKeysCommand::Use(id) => write!(f, "Use({id})"),
            GossipKeysCommand::Remove(id) => write!(f, "Remove({id})"),
        }
    }
}

fn key_rows(keys: Vec<KeyInfo>) -> Vec<GossipKeyRow> {
    keys.into_iter()
        .map(|k| GossipKeyRow {
            id: k.id,
            primary: k.primary,
        })
        .collect()
}

/// Who is on the other end of a control connection, from the socket's peer credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The caller's user id.
    pub uid: u32,
    /// The caller's process id, when the kernel reports it.
    pub pid: Option<i32>,
}

impl Peer {
    /// How the audit log names this caller: `ctl uid=N`.
    pub fn audit_actor(&self) -> String {
        format!("ctl uid={}", self.uid)
    }
}

/// Facts about the running node that `status` reports; fixed at start.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The QUIC endpoint's address.
    pub listen: String,
    /// The control socket's path.
    pub socket: PathBuf,
    /// The submit rate limits the node started with (a reloader, if any, knows
    /// those in force).
    pub limits: LimitsSection,
    /// The ring and members as this node sees them.
    pub cluster: ClusterState,
    /// The running cluster layer, if this node is a cluster member.
    pub runtime: Option<ClusterRuntime>,
    /// Replication, if this node is one of several replicas of each partition.
    pub replication: Option<Replicator>,
    /// The links to the other members, if this node is a cluster member.
    pub links: Option<Links>,
    /// Cancelled to stop the node (after `leave`).
    pub shutdown: CancellationToken,
    /// Runs what a request starts and outlives it (a drain); the node waits for these
    /// when it stops.
    pub tasks: TaskTracker,
    /// Reads the config again on `reload` (None: the node cannot reload).
    pub reloader: Option<Arc<Reloader>>,
}

/// Answers control requests for one node.
#[derive(Debug)]
pub struct Handler {
    node: NodeHandle,
    log: LogControl,
    info: NodeInfo,
    started: Instant,
    started_at_ms: u64,
    /// This node's drain, once one was started.
    drain: std::sync::Mutex<Option<Drain>>,
}

impl Handler {
    /// A handler for `node`, whose log filter `log` changes; the uptime starts now.
    pub fn new(node: NodeHandle, log: LogControl, info: NodeInfo) -> Handler {
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Handler {
            node,
            log,
            info,
            started: Instant::now(),
            started_at_ms,
            drain: std::sync::Mutex::new(None),
        }
    }

    /// Runs one request for `peer`.
    pub async fn handle(&self, peer: &Peer, request: Request) -> Result<Reply, ControlError> {
        match request {
            Request::Status => Ok(Reply::Status(self.status())),
            Request::LogLevel { level } => self.log_level(peer, &level).await.map(Reply::LogLevel),
            Request::AuditVerify => self.audit_verify().await.map(Reply::AuditVerify),
            Request::Reload => self.reload(peer).await.map(Reply::Reload),
            Request::Breakers => Ok(Reply::Breakers {
                breakers: self.breakers(),
            }),
            Request::BreakerReset { name } => self
                .breaker_command(peer, &name, BreakerCommand::Reset)
                .await
                .map(Reply::BreakerChange),
            Request::BreakerOpen { name } => self
                .breaker_command(peer, &name, BreakerCommand::ForceOpen)
                .await
                .map(Reply::BreakerChange),
            Request::Queues => self.queues().await.map(Reply::Queues),
            Request::Limits => self.limits().await.map(Reply::Limits),
            Request::Bulkheads => Ok(Reply::Bulkheads {
                bulkheads: self
                    .node
                    .bulkheads()
                    .into_iter()
                    .map(|b| BulkheadRow {
                        name: b.resource.to_string(),
                        running: b.running,
                        queued: b.queued as usize,
                        max_concurrent: b.max_concurrent,
                        max_queue: b.max_queue,
                    })
                    .collect(),
            }),
            Request::Degrade => self.degrade(peer, None).await.map(Reply::Degrade),
            Request::Members => Ok(Reply::Members {
                members: self.members(),
            }),
            Request::Ring { user } => Ok(Reply::Ring(self.ring(user.as_deref()))),
            Request::Leave => self.leave(peer).await.map(Reply::Leave),
            Request::DegradeSet { level } => {
                self.degrade(peer, Some(&level)).await.map(Reply::Degrade)
            }
            Request::GossipKeys => self
                .gossip_keys(peer, GossipKeysCommand::List)
                .await
                .map(Reply::GossipKeys),
            Request::GossipKeysInstall { key } => self
                .gossip_keys(peer, GossipKeysCommand::Install(&key.0))
                .await
                .map(Reply::GossipKeys),
            Request::GossipKeysUse { key_id } => self
                .gossip_keys(peer, GossipKeysCommand::Use(&key_id))
                .await
                .map(Reply::GossipKeys),
            Request::GossipKeysRemove { key_id } => self
                .gossip_keys(peer, GossipKeysCommand::Remove(&key_id))
                .await
                .map(Reply::GossipKeys),
            Request::Snapshot { dir } => self.snapshot(peer, &dir).await.map(Reply::Snapshot),
            Request::Replicas { digest } => self.replicas(digest).await.map(Reply::Replicas),
            Request::Handoff => Ok(Reply::Handoff(self.handoff())),
            Request::Peers => Ok(Reply::Peers {
                peers: self.peers(),
            }),
            Request::HandoffAbort => self.abort_drain(peer).await.map(Reply::Handoff),
            Request::Drain => self.start_drain(peer).await.map(Reply::Drain),
            Request::Cordon { undo } => self.cordon(peer, !undo).await.map(Reply::Cordon),
        }
    }

    /// `gossip-keys [install KEY | use ID | remove ID]`: lists the keyring, or checks
    /// the change against it, audits it (by key id: the key itself is never written
    /// anywhere but the keyring file), then applies it, which writes the keyring file
    /// before the key is used. A change that does not check out is not audited.
    pub async fn gossip_keys(
        &self,
        peer: &Peer,
        command: GossipKeysCommand<'_>,
    ) -> Result<GossipKeysReport, ControlError> {
        let Some(runtime) = &self.info.runtime else {
            return Err(ControlError::Unavailable {
                reason: "not a cluster member: no gossip keyring".into(),
            });
        };
        let invalid = |field: &str, reason: String| ControlError::Invalid {
            field: field.into(),
            reason,
        };
        let keys_error = |e: KeysError| match e {
            KeysError::Keyring(e) => invalid("key_id", e.to_string()),
            other => ControlError::Unavailable {
                reason: other.to_string(),
            },
        };
        let current = runtime.gossip_keys(KeyOp::List).await.map_err(keys_error)?;
        let (op, id) = match command {
            GossipKeysCommand::List => {
                return Ok(GossipKeysReport {
                    keys: key_rows(current),
                    audit_seq: None,
                });
            }
            GossipKeysCommand::Install(key) => {
                let key: GossipKey = key
                    .parse()
                    .map_err(|e: KeyringError| invalid("key", e.to_string()))?;
                let id = key.id();
                if current.len() >= MAX_KEYS && !current.iter().any(|k| k.id == id.to_string()) {
                    return Err(invalid("key", KeyringError::Full.to_string()));
                }
                (KeyOp::Install(key), id)
            }
            GossipKeysCommand::Use(id) | GossipKeysCommand::Remove(id) => {
                let parsed: KeyId = id
                    .parse()
                    .map_err(|e: KeyringError| invalid("key_id", e.to_string()))?;
                let Some(row) = current.iter().find(|k| k.id == parsed.to_string()) else {
                    return Err(invalid("key_id", KeyringError::Unknown(parsed).to_string()));
                };
                if matches!(command, GossipKeysCommand::Remove(_)) {
                    if row.primary {
                        return Err(invalid("key_id", KeyringError::Primary(parsed).to_string()));
                    }
                    (KeyOp::Remove(parsed), parsed)
                } else {
                    (KeyOp::Use(parsed), parsed)
                }
            }
        };
        let action = format!("gossip-keys-{}", op.name());
        let entry = self
            .node
            .audit_append(peer.audit_actor(), &action, format!("key_id={id}"))
            .await
            .map_err(audit_failed)?;
        let keys = runtime.gossip_keys(op).await.map_err(keys_error)?;
        info!(uid = peer.uid, %action, key_id = %id, audit_seq = entry.seq, "gossip keyring changed");
        Ok(GossipKeysReport {
            keys: key_rows(keys),
            audit_seq: Some(entry.seq),
        })
    }

    /// `snapshot DIR`: audits it, then writes the store's snapshot on the blocking pool
    /// while writes go on. A relative path is refused: it would resolve against the
    /// agent's working directory, not the caller's.
    pub async fn snapshot(&self, peer: &Peer, dir: &str) -> Result<SnapshotResult, ControlError> {
        let path = PathBuf::from(dir);
        if !path.is_absolute() {
            return Err(ControlError::Invalid {
                field: "dir".into(),
                reason: "must be an absolute path".into(),
            });
        }
        let entry = self
            .node
            .audit_append(peer.audit_actor(), "snapshot", format!("dir={dir:?}"))
            .await
            .map_err(audit_failed)?;
        info!(
            uid = peer.uid,
            dir,
            audit_seq = entry.seq,
            "snapshot requested"
        );
        let report = self.node.snapshot(path).await.map_err(|e| match e {
            SnapshotError::TargetNotEmpty { .. } => ControlError::Invalid {
                field: "dir".into(),
                reason: e.to_string(),
            },
            other => ControlError::Unavailable {
                reason: other.to_string(),
            },
        })?;
        Ok(SnapshotResult {
            dir: dir.to_string(),
            segments_done: report.progress.segments_done as u64,
            segments_total: report.progress.segments_total as u64,
            bytes_done: report.progress.bytes_done,
            bytes_total: report.progress.bytes_total,
            linked_segments: report.linked_segments as u64,
            records: report.records,
            api_keys: report.api_keys as u64,
            end_segment: report.end.segment,
            end_offset: report.end.offset,
            duration_ms: report.duration.as_millis() as u64,
            audit_seq: entry.seq,
        })
    }

    /// `status`: identity, version, uptime, addresses, log filter.
    pub fn status(&self) -> StatusReport {
        StatusReport {
            node_id: self.info.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            started_at_ms: self.started_at_ms,
            data_dir: self.info.data_dir.display().to_string(),
            listen: self.info.listen.clone(),
            control_socket: self.info.socket.display().to_string(),
            log_level: self.log.current(),
            store_log: Some(store_log_status(self.node.store_log_usage())),
            speaks: Some(speaks()),
            replication: self.info.replication.as_ref().map(|replication| {
                let settings = replication.settings();
                let lag = replication.handoff();
                ReplicationStatus {
                    factor: settings.factor as u32,
                    write_quorum: settings.write_quorum as u32,
                    leading: replication.leading().len() as u32,
                    copies_behind: lag.pairs_left,
                    records_behind: lag.records_left,
                    warming: self.info.cluster.warming(),
                    cordoned: self
                        .info
                        .cluster
                        .own_standing()
                        .is_some_and(|s| s.cordoned.is_some()),
                    learning: self.info.cluster.ring().learning(),
                }
            }),
        }
    }

    /// `reload`: reads the config file and the environment again and applies what
    /// changed, all or nothing; audited whether applied or refused.
    pub async fn reload(&self, peer: &Peer) -> Result<ReloadReport, ControlError> {
        let Some(reloader) = &self.info.reloader else {
            return Err(ControlError::Unavailable {
                reason: "this node cannot reload its configuration".into(),
            });
        };
        let reloaded = reloader
            .reload(&peer.audit_actor(), std::env::vars().collect())
            .await
            .map_err(|e| match e {
                ReloadError::Audit(reason) => ControlError::AuditFailed { reason },
                ReloadError::LogLevel(LogLevelError::Unavailable(reason)) => {
                    ControlError::Unavailable { reason }
                }
                other => ControlError::Invalid {
                    field: other.key(),
                    reason: other.to_string(),
                },
            })?;
        Ok(ReloadReport {
            applied: reloaded.applied,
            audit_seq: reloaded.audit_seq,
        })
    }

    /// `log-level`: validates the filter, audits the change, then applies it. A filter
    /// that does not parse changes nothing and is not audited.
    pub async fn log_level(
        &self,
        peer: &Peer,
        level: &str,
    ) -> Result<LogLevelChange, ControlError> {
        let filter = LogControl::parse(level).map_err(|e| ControlError::Invalid {
            field: "level".into(),
            reason: e.to_string(),
        })?;
        let previous = self.log.current();
        let entry = self
            .node
            .audit_append(
                peer.audit_actor(),
                "log-level",
                format!("from={previous:?} to={level:?}"),
            )
            .await
            .map_err(audit_failed)?;
        // Audited first: should the reload fail now, the log says it was attempted.
        self.log.set(filter).map_err(|e| match e {
            LogLevelError::Invalid(reason) => ControlError::Invalid {
                field: "level".into(),
                reason,
            },
            LogLevelError::Unavailable(reason) => ControlError::Unavailable { reason },
        })?;
        let current = self.log.current();
        info!(uid = peer.uid, %previous, %current, audit_seq = entry.seq, "log level changed");
        Ok(LogLevelChange {
            previous,
            current,
            audit_seq: entry.seq,
        })
    }

    /// `breakers`: every breaker and its state, as last published.
    pub fn breakers(&self) -> Vec<BreakerRow> {
        self.node
            .breakers()
            .into_iter()
            .map(|(name, state)| BreakerRow {
                name: name.to_string(),
                state: state_name(state).to_string(),
            })
            .collect()
    }

    /// `breakers reset|open NAME`: audits the command, then applies it.
    pub async fn breaker_command(
        &self,
        peer: &Peer,
        name: &str,
        command: BreakerCommand,
    ) -> Result<BreakerChange, ControlError> {
        if !self.node.breakers().iter().any(|(known, _)| *known == name) {
            return Err(ControlError::Invalid {
                field: "name".into(),
                reason: format!("no breaker named {name:?}"),
            });
        }
        let action = match command {
            BreakerCommand::ForceOpen => "breaker.open",
            BreakerCommand::Reset => "breaker.reset",
        };
        let entry = self
            .node
            .audit_append(peer.audit_actor(), action, format!("name={name:?}"))
            .await
            .map_err(audit_failed)?;
        let state = self
            .node
            .breaker_command(name, command)
            .await
            .map_err(unavailable)?;
        info!(
            uid = peer.uid,
            breaker = name,
            action,
            state = state_name(state),
            "breaker command"
        );
        Ok(BreakerChange {
            name: name.to_string(),
            state: state_name(state).to_string(),
            audit_seq: entry.seq,
        })
    }

    /// `limits`: the submit rate limits in force and how many users are tracked.
    pub async fn limits(&self) -> Result<LimitsReport, ControlError> {
        let l = match &self.info.reloader {
            Some(reloader) => reloader.limits().await,
            None => self.info.limits.clone(),
        };
        Ok(LimitsReport {
            per_user_per_minute: l.per_user_per_minute,
            per_user_burst: l.per_user_burst,
            per_api_key_per_second: l.per_api_key_per_second,
            global_per_second: l.global_per_second,
            tracked_users: self.node.tracked_users().await.map_err(unavailable)?,
        })
    }

    /// `queues`: the tier queues as their actor sees them now.
    pub async fn queues(&self) -> Result<QueuesReport, ControlError> {
        let status = self.node.queues().await.map_err(unavailable)?;
        Ok(QueuesReport {
            tiers: status
                .tiers
                .iter()
                .map(|(tier, depth, capacity)| QueueRow {
                    tier: tier.as_str().to_string(),
                    depth: *depth,
                    capacity: *capacity,
                })
                .collect(),
            in_flight: status.in_flight,
            max_in_flight: status.max_in_flight,
        })
    }

    /// `members`: every member this node knows, itself first.
    pub fn members(&self) -> Vec<MemberRow> {
        let Some(runtime) = &self.info.runtime else {
            let me = &self.info.cluster;
            return vec![MemberRow {
                id: me.node().to_string(),
                address: me.addr().to_string(),
                gossip_address: String::new(),
                state: MemberState::Alive.as_str().into(),
                incarnation: 0,
                since_ms: self.started_at_ms,
                is_self: true,
                standing: "warm".into(),
            }];
        };
        let standings = self.info.cluster.standings();
        let standing = |node: &chorus_protocol::NodeId| {
            let warmth = if standings.is_warming(node) {
                "warming"
            } else {
                "warm"
            };
            match standings.cordon(node) {
                Some(_) => format!("{warmth}, cordoned"),
                None => warmth.to_string(),
            }
        };
        let view = runtime.members();
        view.members
            .iter()
            .map(|m| MemberRow {
                id: m.identity.node().to_string(),
                address: m.identity.link_addr().to_string(),
                gossip_address: m.identity.gossip_addr().to_string(),
                // SWIM sees a leave as a down verdict; a departed standing tells them apart.
                state: if m.state == MemberState::Down && standings.departed(m.identity.node()) {
                    "left".into()
                } else {
                    m.state.as_str().into()
                },
                incarnation: m.incarnation,
                since_ms: unix_ms(view.origin + m.since),
                is_self: m.is_self,
                standing: standing(m.identity.node()),
            })
            .collect()
    }

    /// `replicas`: each partition's epoch and last sequence here, whether this node
    /// leads it, and with `digest` the hash of its records.
    pub async fn replicas(&self, digest: bool) -> Result<ReplicasReport, ControlError> {
        let (factor, write_quorum, leading, anti_entropy) = match &self.info.replication {
            Some(replication) => (
                replication.settings().factor,
                replication.settings().write_quorum,
                replication.leading(),
                replication.anti_entropy(),
            ),
            None => (1, 1, BTreeMap::new(), Found::default()),
        };
        let mut partitions = Vec::with_capacity(usize::from(self.node.partitions()));
        let view = self.info.cluster.ring();
        let me = self.info.cluster.node();
        for partition in 0..self.node.partitions() {
            let (epochs, last) = self.node.partition_state(partition);
            let placed = partition < view.ring.partitions();
            let role = if placed && view.replicas(partition).any(|r| r == me) {
                "voter"
            } else if placed && view.learners(partition).any(|r| r == me) {
                "learner"
            } else {
                "none"
            };
            let (records, digest) = if digest {
                let d = partition_digest(&self.node, partition)
                    .await
                    .map_err(unavailable)?;
                (Some(d.records), Some(format!("{:016x}", d.hash)))
            } else {
                (None, None)
            };
            partitions.push(ReplicaRow {
                partition,
                leader: leading.contains_key(&partition),
                role: role.into(),
                epoch: epochs.promised,
                last,
                records,
                digest,
            });
        }
        Ok(ReplicasReport {
            factor: factor as u32,
            write_quorum: write_quorum as u32,
            leading: leading.len() as u32,
            anti_entropy,
            partitions,
        })
    }

    /// `ring`: the partitions each live member leads and, for `user`, its leader.
    pub fn ring(&self, user: Option<&str>) -> RingReport {
        let view = self.info.cluster.ring();
        RingReport {
            epoch: view.epoch(),
            partitions: view.ring.partitions(),
            moved_last_change: view.moved,
            since_ms: unix_ms(view.since),
            balance: view.balance(),
            leaderless: view.leaderless(),
            nodes: view
                .leaders_per_node()
                .into_iter()
                .map(|(node, partitions)| RingNodeRow {
                    address: view
                        .addrs
                        .get(&node)
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    node: node.to_string(),
                    partitions,
                })
                .collect(),
            user: user.map(|user| {
                let (partition, owner) = view.leader_of_user(user);
                UserOwner {
                    user: user.to_string(),
                    partition,
                    owner: owner.to_string(),
                }
            }),
        }
    }

    /// `leave`: audited, then leave the cluster (the others place the ring without this
    /// node at once) and stop the node gracefully.
    pub async fn leave(&self, peer: &Peer) -> Result<LeaveReport, ControlError> {
        let entry = self
            .node
            .audit_append(peer.audit_actor(), "leave", String::new())
            .await
            .map_err(audit_failed)?;
        info!(
            uid = peer.uid,
            audit_seq = entry.seq,
            "leaving the cluster and stopping"
        );
        let was_member = self.info.runtime.is_some();
        if let Some(replication) = &self.info.replication {
            // Gone for good: the others re-place its partitions now, not after the grace.
            depart(&self.info.cluster, &*replication.peers()).await;
        }
        if let Some(runtime) = &self.info.runtime {
            runtime.leave().await;
        }
        self.info.shutdown.cancel();
        Ok(LeaveReport {
            audit_seq: entry.seq,
            was_member,
        })
    }

    /// `handoff`: the streams from this node and its drain.
    fn handoff(&self) -> HandoffReport {
        let mut report = self
            .info
            .replication
            .as_ref()
            .map(|r| r.handoff())
            .unwrap_or_default();
        report.drain = self.current_drain().map(|d| d.progress());
        report
    }

    /// `peers`: every peer's link, with its lag as a follower of this node's partitions.
    pub fn peers(&self) -> Vec<PeerRow> {
        let Some(links) = &self.info.links else {
            return Vec::new();
        };
        let mut lags: BTreeMap<String, FollowerLag> = self
            .info
            .replication
            .as_ref()
            .map(|r| r.handoff().followers)
            .unwrap_or_default()
            .into_iter()
            .map(|lag| (lag.follower.clone(), lag))
            .collect();
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut rows: Vec<PeerRow> = links
            .peer_links()
            .into_iter()
            .map(|peer| PeerRow {
                id: peer.view.node.to_string(),
                address: peer.view.addr.map(|a| a.to_string()).unwrap_or_default(),
                member: peer.view.member,
                link: peer.view.link.as_str().into(),
                link_since_ms: unix_ms(wall - now.saturating_duration_since(peer.view.since)),
                rtt_us: peer.rtt.map(|rtt| rtt.as_micros() as u64),
                forwards_in_flight: peer.forwards_in_flight as u32,
                forwards_max: peer.forwards_max as u32,
                breaker: state_name(peer.view.breaker).into(),
                replication: lags.remove(&peer.view.node.0),
            })
            .collect();
        // The links forget a member once it is declared down; the member table keeps it.
        if let Some(runtime) = &self.info.runtime {
            let view = runtime.members();
            for m in view.members.iter().filter(|m| !m.is_self) {
                let id = m.identity.node().to_string();
                if rows.iter().any(|row| row.id == id) {
                    continue;
                }
                rows.push(PeerRow {
                    address: m.identity.link_addr().to_string(),
                    member: m.state != MemberState::Down,
                    link: LinkState::Down.as_str().into(),
                    link_since_ms: unix_ms(view.origin + m.since),
                    rtt_us: None,
                    forwards_in_flight: 0,
                    forwards_max: links.forwards_max() as u32,
                    // Its breaker went with it; a returning peer starts with a new one.
                    breaker: state_name(BreakerState::Closed).into(),
                    replication: lags.remove(&id),
                    id,
                });
            }
            rows.sort_by(|a, b| a.id.cmp(&b.id));
        }
        rows
    }

    fn current_drain(&self) -> Option<Drain> {
        self.drain.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `drain`: plans the streams, audits, and runs them in a task that leaves the
    /// cluster and stops the node when they are done.
    pub async fn start_drain(&self, peer: &Peer) -> Result<DrainStarted, ControlError> {
        let (Some(replication), Some(runtime)) = (&self.info.replication, &self.info.runtime)
        else {
            return Err(ControlError::Invalid {
                field: "drain".into(),
                reason: "this node does not replicate its partitions: use leave".into(),
            });
        };
        if self.current_drain().is_some_and(|d| d.running()) {
            return Err(ControlError::Invalid {
                field: "drain".into(),
                reason: "a drain is running: see chorus ctl handoff".into(),
            });
        }
        let view = self.info.cluster.ring();
        let standings = self.info.cluster.standings();
        let streams =
            drain::plan(&view, self.info.cluster.node(), Some(&standings)).map_err(|e| {
                ControlError::Invalid {
                    field: "drain".into(),
                    reason: e.to_string(),
                }
            })?;
        let entry = self
            .node
            .audit_append(
                peer.audit_actor(),
                "drain",
                format!("{} streams", streams.len()),
            )
            .await
            .map_err(audit_failed)?;
        info!(
            uid = peer.uid,
            audit_seq = entry.seq,
            streams = streams.len(),
            "draining"
        );
        let started = DrainStarted {
            audit_seq: entry.seq,
            streams: streams.len() as u32,
        };
        let handle = Drain::new(streams.len());
        *self.drain.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.clone());
        let node = self.node.clone();
        let peers = replication.peers();
        let cap = replication.settings().handoff_bytes_per_sec;
        let runtime = runtime.clone();
        let shutdown = self.info.shutdown.clone();
        let cluster = self.info.cluster.clone();
        self.info.tasks.spawn(async move {
            // A node stopped mid-drain keeps what it has not moved yet.
            let drained = tokio::select! {
                _ = shutdown.cancelled() => false,
                drained = drain::run(handle, streams, node, Arc::clone(&peers), cap) => drained,
            };
            if drained {
                depart(&cluster, &*peers).await;
                runtime.leave().await;
                shutdown.cancel();
            }
        });
        Ok(started)
    }

    /// `cordon` / `uncordon`: audits, then sets this node's standing (saved before it
    /// is used; the standings sync pushes it to every member). A cordoned node keeps
    /// the partitions it replicates now, voting or learning.
    pub async fn cordon(&self, peer: &Peer, cordon: bool) -> Result<CordonReport, ControlError> {
        let cluster = &self.info.cluster;
        let (Some(own), Some(_)) = (cluster.own_standing(), &self.info.runtime) else {
            return Err(ControlError::Invalid {
                field: "cordon".into(),
                reason: "this node is not a cluster member".into(),
            });
        };
        let view = cluster.ring();
        let me = cluster.node();
        let held = PartitionSet::of(
            (0..view.ring.partitions())
                .filter(|&p| view.replicas(p).chain(view.learners(p)).any(|r| r == me)),
        );
        let kept = if cordon { held.len() as u32 } else { 0 };
        let what = if cordon { "cordon" } else { "uncordon" };
        let entry = self
            .node
            .audit_append(peer.audit_actor(), what, format!("{kept} partitions kept"))
            .await
            .map_err(audit_failed)?;
        let next = own.changed(|s| s.cordoned = cordon.then_some(held));
        cluster
            .set_own_standing(next)
            .map_err(|e| ControlError::Invalid {
                field: "cordon".into(),
                reason: e.to_string(),
            })?;
        info!(uid = peer.uid, audit_seq = entry.seq, kept, "{what}");
        Ok(CordonReport {
            audit_seq: entry.seq,
            cordoned: cordon,
            partitions_kept: kept,
        })
    }

    /// `handoff --abort`: stops a running drain (audited); the node stays.
    pub async fn abort_drain(&self, peer: &Peer) -> Result<HandoffReport, ControlError> {
        let Some(drain) = self.current_drain().filter(|d| d.running()) else {
            return Err(ControlError::Invalid {
                field: "abort".into(),
                reason: "no drain is running".into(),
            });
        };
        let entry = self
            .node
            .audit_append(peer.audit_actor(), "handoff-abort", String::new())
            .await
            .map_err(audit_failed)?;
        info!(uid = peer.uid, audit_seq = entry.seq, "aborting the drain");
        drain.abort();
        Ok(self.handoff())
    }

    /// `degrade [set LEVEL | auto]`: shows the level, or audits and applies a change.
    pub async fn degrade(
        &self,
        peer: &Peer,
        level: Option<&str>,
    ) -> Result<DegradeReport, ControlError> {
        let mut audit_seq = None;
        if let Some(level) = level {
            let command = match level {
                "auto" => DegradeCommand::Auto,
                name => DegradeCommand::Set(
                    Level::ALL
                        .into_iter()
                        .find(|l| l.as_str() == name)
                        .ok_or_else(|| ControlError::Invalid {
                            field: "level".into(),
                            reason: format!(
                                "{name:?} is not normal, shed_optional, critical_only or auto"
                            ),
                        })?,
                ),
            };
            let entry = self
                .node
                .audit_append(peer.audit_actor(), "degrade", format!("level={level:?}"))
                .await
                .map_err(audit_failed)?;
            self.node.degrade(command).await.map_err(unavailable)?;
            info!(
                uid = peer.uid,
                level,
                audit_seq = entry.seq,
                "degradation level set"
            );
            audit_seq = Some(entry.seq);
        }
        let status = self.node.queues().await.map_err(unavailable)?;
        Ok(DegradeReport {
            level: status.level.as_str().to_string(),
            manual: status.manual,
            audit_seq,
        })
    }

    /// `audit-verify`: walks the chain (O(entries)).
    pub async fn audit_verify(&self) -> Result<AuditVerification, ControlError> {
        let report = self.node.audit_verify().await.map_err(unavailable)?;
        Ok(verification(report))
    }
}

/// The wire form of an audit report.
pub fn verification(report: AuditReport) -> AuditVerification {
    AuditVerification {
        entries: report.entries,
        intact: report.is_intact(),
        head_seq: report.head.map(|(seq, _)| seq),
        head_hash: report.head.map(|(_, hash)| hex::encode(hash)),
        first_broken: report
            .first_broken
            .map(|(seq, reason)| BrokenLink { seq, reason }),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn audit_failed(code: ErrorCode) -> ControlError {
    ControlError::AuditFailed {
        reason: code.to_string(),
    }
}

fn unavailable(code: ErrorCode) -> ControlError {
    ControlError::Unavailable {
        reason: code.to_string(),
    }
}

/// The store's log usage in the control protocol's terms.
fn store_log_status(usage: chorus_actors::store::LogUsage) -> StoreLogStatus {
    StoreLogStatus {
        segments: usage.segments as u64,
        bytes: usage.bytes,
        live_bytes: usage.live_bytes,
        dead_bytes: usage.dead_bytes,
        retired_segments: usage.retired_segments,
        compacted_segments: usage.compacted_segments,
    }
}

/// The versions of every surface this agent shares with clients, peers and its disk.
fn speaks() -> Speaks {
    use chorus_actors::store::log::record::SEGMENT_MAGIC;
    Speaks {
        client_protocol: chorus_protocol::SUPPORTED_VERSIONS.to_vec(),
        client_alpn: String::from_utf8_lossy(chorus_protocol::ALPN_CLIENT).into(),
        link_alpn: String::from_utf8_lossy(chorus_protocol::ALPN_LINK).into(),
        link_alpns: chorus_protocol::ALPN_LINKS
            .iter()
            .map(|alpn| String::from_utf8_lossy(alpn).into())
            .collect(),
        link_messages: crate::cluster::links::LINK_FORMAT,
        gossip_envelope: crate::cluster::membership::envelope::VERSION,
        gossip_seal: crate::cluster::membership::seal::SEAL_VERSION,
        log_segments: SEGMENT_MAGIC[SEGMENT_MAGIC.len() - 1],
        snapshot_manifest: chorus_actors::store::snapshot::manifest::FORMAT_VERSION,
    }
}

/// Marks this node departed (drained, or told to leave) and tells every linked member
/// before it leaves,
/// so that they place the ring without it at once rather than after the down grace.
async fn depart(cluster: &ClusterState, peers: &dyn Forwarder) {
    let Some(own) = cluster.own_standing() else {
        return;
    };
    if let Err(error) = cluster.set_own_standing(own.changed(|s| s.departed = true)) {
        warn!(%error, "saving this node's departure failed");
    }
    let told = standing_sync::push_own(cluster, peers).await;
    info!(told, "departure told");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_actor_names_the_uid() {
        let peer = Peer {
            uid: 1000,
            pid: Some(42),
        };
        assert_eq!(peer.audit_actor(), "ctl uid=1000");
    }

    #[test]
    fn a_broken_report_keeps_its_seq_and_reason() {
        let v = verification(AuditReport {
            entries: 4,
            head: Some((4, [0xab; 32])),
            first_broken: Some((2, "edited".into())),
        });
        assert!(!v.intact);
        assert_eq!(v.head_seq, Some(4));
        assert_eq!(v.head_hash.as_deref(), Some(&*"ab".repeat(32)));
        assert_eq!(
            v.first_broken,
            Some(BrokenLink {
                seq: 2,
                reason: "edited".into()
            })
        );
    }
}
