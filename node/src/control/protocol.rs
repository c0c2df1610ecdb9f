//! The control protocol: one JSON request per line in, one JSON response per line out.
//!
//! ```text
//! → {"cmd":"status"}
//! ← {"ok":true,"result":{"kind":"status","node_id":"node-1",...}}
//! → {"cmd":"log-level","level":"debug"}
//! ← {"ok":true,"result":{"kind":"log-level","previous":"info","current":"debug","audit_seq":3}}
//! → {"cmd":"audit-verify"}
//! ← {"ok":true,"result":{"kind":"audit-verify","entries":3,"intact":true,...}}
//! → {"cmd":"reboot"}
//! ← {"ok":false,"error":{"kind":"bad_request","message":"unknown variant `reboot`, ..."}}
//! ```
//!
//! Both ends share these types, so the client decodes exactly what the server encodes.

use serde::{Deserialize, Serialize};

use crate::cluster::replication::anti_entropy::Found;
use crate::cluster::replication::handoff::{FollowerLag, HandoffReport};

/// Longest request line the server reads, newline excluded; a longer one is answered
/// with [`ControlError::TooLong`] and the connection is closed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest response line the client reads.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A request, tagged by `cmd`. Commands for breakers, bulkheads, queues, limits and
/// degradation join this enum when the node has that state to show.
///
/// Unknown fields of a command with arguments are refused (a misspelt argument must not
/// be silently ignored); serde cannot refuse them on argument-less commands, which
/// ignore them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The node's identity, version, uptime and addresses. Read-only.
    Status,
    /// Replace the log filter (audited before it takes effect).
    LogLevel {
        /// A tracing filter, e.g. `debug` or `chorus_node=debug,info`.
        level: String,
    },
    /// Walk the audit log's hash chain. Read-only.
    AuditVerify,
    /// Re-read the config file the node started with (and the environment) and apply
    /// what changed, all of it or nothing (audited either way).
    Reload,
    /// Every circuit breaker and its state. Read-only.
    Breakers,
    /// Close a breaker and forget its history (audited before it takes effect).
    BreakerReset {
        /// The breaker, e.g. `store`.
        name: String,
    },
    /// Open a breaker until it is reset (audited before it takes effect).
    BreakerOpen {
        /// The breaker, e.g. `store`.
        name: String,
    },
    /// The tier queues: depth and capacity per tier, submissions in flight. Read-only.
    Queues,
    /// The submit rate limits and how many users are tracked. Read-only.
    Limits,
    /// Every bulkhead: calls running and waiting against their limits. Read-only.
    Bulkheads,
    /// The degradation level. Read-only.
    Degrade,
    /// Pin the degradation level (`normal`, `shed_optional`, `critical_only`) or hand
    /// it back to the load (`auto`); audited before it takes effect.
    DegradeSet {
        /// The level, or `auto`.
        level: String,
    },
    /// The cluster's members as this node sees them. Read-only.
    Members,
    /// The ring: epoch and partitions per node; with `user`, that user's owner.
    /// Read-only.
    Ring {
        /// A user id whose partition and owner to show.
        #[serde(default)]
        user: Option<String>,
    },
    /// Leave the cluster gracefully and stop the node (audited before it takes effect).
    Leave,
    /// The gossip keyring: each key's id and which is primary. Read-only.
    GossipKeys,
    /// Install a gossip key as accepted (audited, by key id, before it takes effect).
    GossipKeysInstall {
        /// The key, 64 hex digits.
        key: SecretHex,
    },
    /// Seal gossip with an installed key from now on (audited before it takes effect).
    GossipKeysUse {
        /// The key's id (`gossip-keys` lists them).
        key_id: String,
    },
    /// Remove an accepted gossip key, never the primary (audited before it takes
    /// effect).
    GossipKeysRemove {
        /// The key's id.
        key_id: String,
    },
    /// Write a consistent snapshot of the store into `dir` (an absolute path on the
    /// node's host, absent or empty) while writes go on (audited before it starts).
    Snapshot {
        /// Where the snapshot goes.
        dir: String,
    },
    /// Each partition's replica state here: epoch, last sequence, whether this node
    /// leads it, and with `digest` a hash of its records. Read-only.
    Replicas {
        /// Hash every partition's records (reads the whole log).
        #[serde(default)]
        digest: bool,
    },
    /// The streams from this node to followers catching up: partitions and records
    /// done and left, rate, ETA, the bandwidth cap, and this node's drain. Read-only.
    Handoff,
    /// Stops this node's drain; the node stays (audited).
    HandoffAbort,
    /// Streams every partition this node holds to the members that replace it in the
    /// replica sets, then leaves the cluster and stops (audited).
    Drain,
    /// Every peer's link: state, round trip, forwards in flight, breaker, and how far
    /// behind this node's partitions it is as a follower. Read-only.
    Peers,
    /// Cordons this node: it keeps the partitions it holds and takes no new ones; with
    /// `undo`, lifts the cordon (audited).
    Cordon {
        /// Lift the cordon instead.
        #[serde(default)]
        undo: bool,
    },
}

/// A secret carried in a request (a gossip key): serialised as the plain string, but
/// never shown by `Debug`, so a logged request does not leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHex(pub String);

impl std::fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Request {
    /// The command's name on the wire, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::LogLevel { .. } => "log-level",
            Request::AuditVerify => "audit-verify",
            Request::Reload => "reload",
            Request::Breakers => "breakers",
            Request::BreakerReset { .. } => "breaker-reset",
            Request::BreakerOpen { .. } => "breaker-open",
            Request::Queues => "queues",
            Request::Limits => "limits",
            Request::Bulkheads => "bulkheads",
            Request::Degrade => "degrade",
            Request::DegradeSet { .. } => "degrade-set",
            Request::Members => "members",
            Request::Ring { .. } => "ring",
            Request::Leave => "leave",
            Request::GossipKeys => "gossip-keys",
            Request::GossipKeysInstall { .. } => "gossip-keys-install",
            Request::GossipKeysUse { .. } => "gossip-keys-use",
            Request::GossipKeysRemove { .. } => "gossip-keys-remove",
            Request::Snapshot { .. } => "snapshot",
            Request::Replicas { .. } => "replicas",
            Request::Handoff => "handoff",
            Request::HandoffAbort => "handoff-abort",
            Request::Drain => "drain",
            Request::Peers => "peers",
            Request::Cordon { undo: false } => "cordon",
            Request::Cordon { undo: true } => "uncordon",
        }
    }
}

/// Parses one request line (a trailing `\n` or `\r\n` is ignored).
pub fn parse_request(line: &[u8]) -> Result<Request, ControlError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_REQUEST_BYTES {
        return Err(ControlError::TooLong {
            limit: MAX_REQUEST_BYTES,
        });
    }
    serde_json::from_slice(line).map_err(|e| ControlError::BadRequest {
        message: e.to_string(),
    })
}

/// Why a request failed. Every variant says whether anything changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlError {
    /// The line is not a request (not JSON, unknown command, missing or extra field).
    /// Nothing changed.
    #[error("bad request: {message}")]
    BadRequest {
        /// What the parser said.
        message: String,
    },
    /// The line is longer than `limit` bytes; the connection is closed. Nothing changed.
    #[error("request longer than {limit} bytes")]
    TooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The caller's uid is neither the node's nor root's. Nothing changed.
    #[error("forbidden: uid {uid} may not administer this node")]
    Forbidden {
        /// The caller's uid.
        uid: u32,
    },
    /// Too many control connections are open; try again. Nothing changed.
    #[error("busy: {limit} control connections are open")]
    Busy {
        /// The connection limit.
        limit: usize,
    },
    /// An argument was refused. Nothing changed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument.
        field: String,
        /// Why.
        reason: String,
    },
    /// The audit log could not record the action, so it was not taken. Nothing changed.
    #[error("not done: the audit log could not record it: {reason}")]
    AuditFailed {
        /// The store's error.
        reason: String,
    },
    /// The node could not answer (e.g. the store failed). Nothing changed.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
    },
}

/// A command's result, tagged by `kind` (the command's name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    /// Answer to [`Request::Status`].
    Status(StatusReport),
    /// Answer to [`Request::LogLevel`].
    LogLevel(LogLevelChange),
    /// Answer to [`Request::AuditVerify`].
    AuditVerify(AuditVerification),
    /// Answer to [`Request::Reload`].
    Reload(ReloadReport),
    /// Answer to [`Request::Breakers`].
    Breakers {
        /// Each breaker and its state.
        breakers: Vec<BreakerRow>,
    },
    /// Answer to [`Request::BreakerReset`] and [`Request::BreakerOpen`].
    BreakerChange(BreakerChange),
    /// Answer to [`Request::Queues`].
    Queues(QueuesReport),
    /// Answer to [`Request::Limits`].
    Limits(LimitsReport),
    /// Answer to [`Request::Bulkheads`].
    Bulkheads {
        /// Each bulkhead (none when no external dependency is configured).
        bulkheads: Vec<BulkheadRow>,
    },
    /// Answer to [`Request::Degrade`] and [`Request::DegradeSet`].
    Degrade(DegradeReport),
    /// Answer to [`Request::Members`].
    Members {
        /// Every member this node knows, itself first.
        members: Vec<MemberRow>,
    },
    /// Answer to [`Request::Ring`].
    Ring(RingReport),
    /// Answer to [`Request::Leave`].
    Leave(LeaveReport),
    /// Answer to the `gossip-keys` requests.
    GossipKeys(GossipKeysReport),
    /// Answer to [`Request::Snapshot`].
    Snapshot(SnapshotResult),
    /// Answer to [`Request::Replicas`].
    Replicas(ReplicasReport),
    /// Answer to [`Request::Handoff`] and [`Request::HandoffAbort`].
    Handoff(HandoffReport),
    /// Answer to [`Request::Drain`].
    Drain(DrainStarted),
    /// Answer to [`Request::Cordon`].
    Cordon(CordonReport),
    /// Answer to [`Request::Peers`].
    Peers {
        /// Every peer this node knows, by node id.
        peers: Vec<PeerRow>,
    },
}

/// One peer's link as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRow {
    /// The peer's node id.
    pub id: String,
    /// Where its link is dialed (empty until membership named it).
    pub address: String,
    /// Whether membership lists it as up.
    pub member: bool,
    /// `up`, `connecting` or `down`.
    pub link: String,
    /// When the link entered that state, milliseconds since the Unix epoch.
    pub link_since_ms: u64,
    /// The QUIC path's smoothed round trip in microseconds, while connected.
    pub rtt_us: Option<u64>,
    /// Forwards to it waiting for their answer.
    pub forwards_in_flight: u32,
    /// The most it may have in flight.
    pub forwards_max: u32,
    /// Its circuit breaker: `closed`, `open`, `half-open` or `forced-open`.
    pub breaker: String,
    /// As a follower of the partitions this node leads (absent without replication,
    /// or when it follows none of them).
    pub replication: Option<FollowerLag>,
}

/// This node's replicas of the partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasReport {
    /// Replicas per partition (1: replication is off).
    pub factor: u32,
    /// Replicas that hold a write before it is acknowledged.
    pub write_quorum: u32,
    /// Partitions this node leads.
    pub leading: u32,
    /// What anti-entropy found here since start (as the leader of the copies compared).
    #[serde(default)]
    pub anti_entropy: Found,
    /// Every partition's state here.
    pub partitions: Vec<ReplicaRow>,
}

/// One partition's replica on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRow {
    /// The partition.
    pub partition: u16,
    /// Whether this node leads it now.
    pub leader: bool,
    /// This node's place in the partition's replica set: `voter` (it counts toward
    /// the write quorum; the leader is one), `learner` (being streamed it), or `none`.
    #[serde(default)]
    pub role: String,
    /// The highest epoch this replica promised.
    pub epoch: u64,
    /// Its last sequence here.
    pub last: u64,
    /// Live records, when digests were asked for.
    pub records: Option<u64>,
    /// The hash of its records (16 hex digits), when asked for.
    pub digest: Option<String>,
}

/// What `snapshot` wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResult {
    /// Where the snapshot is.
    pub dir: String,
    /// Segments written and checked.
    pub segments_done: u64,
    /// Segments the snapshot holds.
    pub segments_total: u64,
    /// Bytes written and checked.
    pub bytes_done: u64,
    /// Bytes the snapshot holds.
    pub bytes_total: u64,
    /// Of the segments, those hard-linked rather than copied.
    pub linked_segments: u64,
    /// Log records in it.
    pub records: u64,
    /// API keys in it.
    pub api_keys: u64,
    /// The log's end when it began (segment): everything acknowledged before is in it.
    pub end_segment: u64,
    /// The log's end when it began (offset in that segment).
    pub end_offset: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The audit entry recording it.
    pub audit_seq: u64,
}

/// The gossip keyring after a `gossip-keys` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipKeysReport {
    /// Every installed key, in the order installed.
    pub keys: Vec<GossipKeyRow>,
    /// The audit entry recording the change (none for `list`).
    pub audit_seq: Option<u64>,
}

/// One gossip key; the key itself is never shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipKeyRow {
    /// The key's id (a hash of the key).
    pub id: String,
    /// Whether it seals the packets this node sends.
    pub primary: bool,
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    /// The node's name.
    pub id: String,
    /// Its QUIC address (clients and links).
    pub address: String,
    /// Its gossip (UDP) address.
    pub gossip_address: String,
    /// `alive`, `suspect`, `down`, or `left` (down after it said it departed: drained or
    /// told to leave).
    pub state: String,
    /// Which run of the node this is (higher after a restart).
    pub incarnation: u64,
    /// When this node last saw it change state, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Whether this row is the node answering.
    pub is_self: bool,
    /// Its standing as known here: `warm`, `warming` (learning its partitions; also a
    /// member not heard from yet), each with `, cordoned` when it takes no new ones.
    #[serde(default)]
    pub standing: String,
}

/// The ring as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingReport {
    /// Changes whenever the member set does.
    pub epoch: u64,
    /// The cluster's partition count.
    pub partitions: u16,
    /// Partitions that changed owner when this placement was adopted.
    pub moved_last_change: u32,
    /// When this placement was adopted, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Max/mean partitions per node.
    pub balance: f64,
    /// Partitions each live node leads, by name.
    pub nodes: Vec<RingNodeRow>,
    /// Partitions none of whose replicas this node sees live.
    #[serde(default)]
    pub leaderless: u32,
    /// The asked-for user's partition and owner.
    pub user: Option<UserOwner>,
}

// `balance` is a finite ratio of counts, never NaN.
impl Eq for RingReport {}

/// One node's share of the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingNodeRow {
    /// The node's name.
    pub node: String,
    /// Its QUIC address.
    pub address: String,
    /// Partitions it owns.
    pub partitions: u32,
}

/// Where one user's data lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserOwner {
    /// The user id.
    pub user: String,
    /// Its partition.
    pub partition: u16,
    /// The node that owns it.
    pub owner: String,
}

/// What `leave` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveReport {
    /// The audit entry recording it.
    pub audit_seq: u64,
    /// Whether this node was a cluster member (a single node just stops).
    pub was_member: bool,
}

/// What `limits` reports (0 = that limit is off).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsReport {
    /// Items per user per minute, sustained.
    pub per_user_per_minute: u32,
    /// Items a user may send at once after being idle.
    pub per_user_burst: u32,
    /// Items per API key per second.
    pub per_api_key_per_second: u32,
    /// Items per second for the whole node.
    pub global_per_second: u32,
    /// Users whose buckets are tracked now (idle ones are forgotten).
    pub tracked_users: usize,
}

/// One bulkhead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkheadRow {
    /// The resource it guards, e.g. `enrichment`.
    pub name: String,
    /// Calls running.
    pub running: u32,
    /// Calls waiting for a slot.
    pub queued: usize,
    /// Most calls running at once.
    pub max_concurrent: u32,
    /// Most calls waiting.
    pub max_queue: u32,
}

/// One tier queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRow {
    /// `realtime`, `priority`, `standard` or `batch`.
    pub tier: String,
    /// Submissions waiting.
    pub depth: usize,
    /// Most that may wait.
    pub capacity: usize,
}

/// What `queues` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuesReport {
    /// Each tier, most urgent first.
    pub tiers: Vec<QueueRow>,
    /// Submissions past the queues (validating or storing).
    pub in_flight: usize,
    /// The most allowed past the queues.
    pub max_in_flight: usize,
}

/// What `degrade` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DegradeReport {
    /// `normal`, `shed_optional` or `critical_only`.
    pub level: String,
    /// Whether an operator pinned it (otherwise the load sets it).
    pub manual: bool,
    /// The audit entry of a change, if this answers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
}

/// One circuit breaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerRow {
    /// The dependency it guards, e.g. `store`.
    pub name: String,
    /// `closed`, `half-open`, `open` or `forced-open`.
    pub state: String,
}

/// What an operator's breaker command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerChange {
    /// The breaker.
    pub name: String,
    /// Its state now.
    pub state: String,
    /// The audit entry recording the command.
    pub audit_seq: u64,
}

/// What `status` reports. Everything here is O(1) to gather.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node's id.
    pub node_id: String,
    /// The agent's version.
    pub version: String,
    /// The agent's process id.
    pub pid: u32,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// When the agent started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The data directory.
    pub data_dir: String,
    /// The QUIC endpoint's address.
    pub listen: String,
    /// This socket's path.
    pub control_socket: String,
    /// The log filter in force.
    pub log_level: String,
    /// The store's partition log on disk (absent from agents that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_log: Option<StoreLogStatus>,
    /// Replication as this node sees it (absent on a node that does not replicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationStatus>,
    /// The protocols and formats this agent speaks and reads (absent from agents that
    /// predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaks: Option<Speaks>,
}

/// The versions of every surface a node shares with clients, peers or its own disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speaks {
    /// Client protocol versions a hello may ask for.
    pub client_protocol: Vec<u16>,
    /// The client protocol's ALPN token.
    pub client_alpn: String,
    /// The cluster links' ALPN token this agent prefers.
    pub link_alpn: String,
    /// Every link ALPN token it accepts, the preferred first (absent from agents that
    /// spoke only `link_alpn`).
    #[serde(default)]
    pub link_alpns: Vec<String>,
    /// The layout of link messages (kept as fixtures it must keep decoding).
    pub link_messages: u32,
    /// The gossip envelope's version.
    pub gossip_envelope: u8,
    /// The gossip seal's (authentication) version.
    pub gossip_seal: u8,
    /// The partition log's segment format.
    pub log_segments: u8,
    /// The snapshot manifest's format.
    pub snapshot_manifest: u32,
}

/// What `drain` started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStarted {
    /// The audit entry recording it.
    pub audit_seq: u64,
    /// Streams planned (a partition to a member that joins its replica set).
    pub streams: u32,
}

/// What `cordon` or `uncordon` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CordonReport {
    /// The audit entry recording it.
    pub audit_seq: u64,
    /// Whether the node is cordoned now.
    pub cordoned: bool,
    /// Partitions it keeps while cordoned (0 when not cordoned).
    pub partitions_kept: u32,
}

/// Replication on this node, as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// Replicas per partition.
    pub factor: u32,
    /// Replicas that hold a write before it is acknowledged.
    pub write_quorum: u32,
    /// Partitions this node leads.
    pub leading: u32,
    /// Follower copies of those partitions behind this node.
    pub copies_behind: u32,
    /// Records those followers lack.
    pub records_behind: u64,
    /// This node is still learning its partitions (it votes and leads once warm).
    #[serde(default)]
    pub warming: bool,
    /// This node is cordoned: it takes no new partitions.
    #[serde(default)]
    pub cordoned: bool,
    /// Partitions with a replica being streamed them before it votes.
    #[serde(default)]
    pub learning: u32,
}

/// The partition log's disk use, as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreLogStatus {
    /// Segment files on disk.
    pub segments: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes not known dead.
    pub live_bytes: u64,
    /// Bytes of superseded records, reclaimable.
    pub dead_bytes: u64,
    /// Segments retired since the agent started.
    pub retired_segments: u64,
    /// Of those, segments compacted (live records copied forward first).
    pub compacted_segments: u64,
}

/// What `log-level` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelChange {
    /// The filter before.
    pub previous: String,
    /// The filter now.
    pub current: String,
    /// The audit entry recording the change.
    pub audit_seq: u64,
}

/// What `reload` applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The keys whose new values are in force, in key order; empty when nothing
    /// changed. `tls.cert` is listed when the certificate files were rotated.
    pub applied: Vec<String>,
    /// The audit entry recording the reload.
    pub audit_seq: u64,
}

/// What `audit-verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Entries read.
    pub entries: u64,
    /// Whether the whole chain verified.
    pub intact: bool,
    /// The last entry's seq.
    pub head_seq: Option<u64>,
    /// The last entry's hash (hex): record it elsewhere to detect a rewrite later.
    pub head_hash: Option<String>,
    /// The first entry that does not verify.
    pub first_broken: Option<BrokenLink>,
}

/// Where the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    /// The entry's seq.
    pub seq: u64,
    /// Why it does not verify.
    pub reason: String,
}

/// One response line: `{"ok":true,"result":{...}}` or `{"ok":false,"error":{...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the command succeeded.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Reply>,
    /// The error, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ControlError>,
}

impl From<Result<Reply, ControlError>> for Response {
    fn from(outcome: Result<Reply, ControlError>) -> Self {
        match outcome {
            Ok(reply) => Response {
                ok: true,
                result: Some(reply),
                error: None,
            },
            Err(error) => Response {
                ok: false,
                result: None,
                error: Some(error),
            },
        }
    }
}

impl Response {
    /// The response as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("control types always serialise");
        line.push(b'\n');
        line
    }

    /// Back to a `Result`; a response with neither field is a protocol violation.
    pub fn into_result(self) -> Result<Reply, ControlError> {
        match (self.ok, self.result, self.error) {
            (true, Some(reply), _) => Ok(reply),
            (false, _, Some(error)) => Err(error),
            _ => Err(ControlError::BadRequest {
                message: "the node sent a response with neither result nor error".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gossip_key_in_a_request_parses_and_never_shows_in_debug() {
        let key = "ab".repeat(32);
        let line = format!(r#"{{"cmd":"gossip-keys-install","key":"{key}"}}"#);
        let request = parse_request(line.as_bytes()).unwrap();
        assert_eq!(
            request,
            Request::GossipKeysInstall {
                key: SecretHex(key.clone())
            }
        );
        assert!(!format!("{request:?}").contains(&key));
        assert_eq!(
            parse_request(br#"{"cmd":"gossip-keys-use","key_id":"0011223344556677"}"#).unwrap(),
            Request::GossipKeysUse {
                key_id: "0011223344556677".into()
            }
        );
    }

    #[test]
    fn requests_parse_from_their_wire_form() {
        let cases: &[(&str, Request)] = &[
            (r#"{"cmd":"status"}"#, Request::Status),
            (r#"{"cmd":"status"}\n"#, Request::Status),
            ("{\"cmd\":\"audit-verify\"}\r\n", Request::AuditVerify),
            (r#"{"cmd":"reload"}"#, Request::Reload),
            (
                r#"{"cmd":"log-level","level":"chorus_node=debug,info"}"#,
                Request::LogLevel {
                    level: "chorus_node=debug,info".into(),
                },
            ),
        ];
        for (line, expected) in cases {
            let line = line.replace("\\n", "\n");
            assert_eq!(&parse_request(line.as_bytes()).unwrap(), expected, "{line}");
        }
    }

    #[test]
    fn malformed_requests_are_typed_bad_requests() {
        for line in [
            "",
            "status",
            "{}",
            r#"{"cmd":"reboot"}"#,
            r#"{"cmd":"log-level"}"#,
            r#"{"cmd":"log-level","level":3}"#,
            r#"{"cmd":"log-level","level":"debug","levle":"info"}"#,
            "[1,2,3]",
            "\u{0}\u{1}",
        ] {
            match parse_request(line.as_bytes()) {
                Err(ControlError::BadRequest { message }) => assert!(!message.is_empty()),
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_over_long_line_is_refused_unparsed() {
        let line = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            parse_request(&line),
            Err(ControlError::TooLong {
                limit: MAX_REQUEST_BYTES
            })
        );
    }

    #[test]
    fn every_request_and_response_round_trips_through_json() {
        for request in [
            Request::Status,
            Request::AuditVerify,
            Request::Reload,
            Request::LogLevel {
                level: "warn".into(),
            },
        ] {
            let line = serde_json::to_vec(&request).unwrap();
            assert_eq!(parse_request(&line).unwrap(), request);
        }
        let responses: Vec<Response> = vec![
            Ok(Reply::Reload(ReloadReport {
                applied: vec!["limits.per_user_burst".into(), "log.level".into()],
                audit_seq: 7,
            }))
            .into(),
            Ok(Reply::LogLevel(LogLevelChange {
                previous: "info".into(),
                current: "debug".into(),
                audit_seq: 2,
            }))
            .into(),
            Ok(Reply::AuditVerify(AuditVerification {
                entries: 3,
                intact: false,
                head_seq: Some(3),
                head_hash: Some("00".into()),
                first_broken: Some(BrokenLink {
                    seq: 2,
                    reason: "edited".into(),
                }),
            }))
            .into(),
            Err(ControlError::Invalid {
                field: "level".into(),
                reason: "no".into(),
            })
            .into(),
        ];
        for response in responses {
            let line = response.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            let back: Response = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, response);
        }
    }

    #[test]
    fn the_wire_form_is_what_scripts_see() {
        let line = Response::from(Err(ControlError::TooLong { limit: 5 })).to_line();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"ok\":false,\"error\":{\"kind\":\"too_long\",\"limit\":5}}\n"
        );
    }
}
