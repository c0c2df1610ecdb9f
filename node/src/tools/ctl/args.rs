//! The flags and subcommands of `chorus ctl`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::config::DEFAULT_DATA_DIR;

/// Flags of `chorus ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control socket (default: <data-dir>/chorus.sock).
    #[arg(
        long,
        env = "CHORUS_CONTROL_SOCKET",
        value_name = "PATH",
        global = true
    )]
    pub socket: Option<PathBuf>,
    /// The node's config file: its control socket is found from it (`control.socket`,
    /// or `data_dir`).
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "socket")]
    pub config: Option<PathBuf>,
    /// Data directory of the local node, where the socket is by default (its
    /// variable is not the agent's `CHORUS_DATA_DIR`).
    #[arg(long, env = "CHORUS_CLI_DATA_DIR", default_value = DEFAULT_DATA_DIR, global = true)]
    pub data_dir: PathBuf,
    /// Print the node's response as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `chorus ctl ...`
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// The node's id, version, pid, uptime, addresses and log filter.
    Status,
    /// Replace the log filter while the node runs (audited), e.g. `debug` or
    /// `chorus_node=debug,info`.
    LogLevel {
        /// A tracing filter.
        level: String,
    },
    /// Check the audit log's hash chain; exits 1 and names the first broken entry if
    /// it does not verify.
    AuditVerify,
    /// Re-read the node's config file and environment and apply what can change while
    /// it runs (limits, log level, tiers, degradation, breakers, TLS certificates); a
    /// change to anything else is refused, naming the key, and nothing is applied.
    /// The same as sending the agent SIGHUP. Audited.
    Reload,
    /// The tier queues: depth and capacity per tier, submissions in flight.
    Queues,
    /// The submit rate limits in force and how many users are tracked.
    Limits,
    /// The bulkheads: calls running and waiting against their limits.
    Bulkheads,
    /// Show the degradation level, pin it (`set LEVEL`) or return it to the load (`auto`).
    Degrade {
        /// What to do; without it, show the level.
        #[command(subcommand)]
        action: Option<DegradeAction>,
    },
    /// List the circuit breakers, or reset / force open one (audited).
    Breakers {
        /// What to do; without it, list them.
        #[command(subcommand)]
        action: Option<BreakerAction>,
    },
    /// The cluster's members as this node sees them: id, address, state, incarnation,
    /// since.
    Members,
    /// Every peer's link: state and since when, round trip, forwards in flight, breaker,
    /// and how far behind this node's partitions it is as a follower.
    Peers,
    /// The ring: epoch and partitions per node; `--user U` prints U's owner.
    Ring {
        /// A user id whose partition and owner to print.
        #[arg(long)]
        user: Option<String>,
    },
    /// Leave the cluster gracefully (the others take over its partitions at once) and
    /// stop the node (audited).
    Leave,
    /// Write a consistent snapshot of the node's store into DIR (absent or empty, on the
    /// node's host) while it keeps taking writes (audited); restore it with
    /// `chorus restore`.
    Snapshot {
        /// Where the snapshot goes.
        dir: PathBuf,
    },
    /// Each partition's replica here: the epoch promised, the last sequence, whether
    /// this node leads it; `--digest` adds a hash of its records, to compare replicas.
    Replicas {
        /// Hash every partition's records (reads the whole log).
        #[arg(long)]
        digest: bool,
    },
    /// The streams from this node, as leader, to followers catching up: per follower
    /// the partitions and records behind; in all, what is done and left, the rate, the
    /// ETA and the bandwidth cap (`handoff_bytes_per_sec`); and this node's drain.
    Handoff {
        /// Stop this node's drain; the node stays in the cluster.
        #[arg(long)]
        abort: bool,
    },
    /// Stream every partition this node holds to the members that take its place in
    /// the replica sets, then leave the cluster and stop (`handoff` shows the progress,
    /// `handoff --abort` stops it).
    Drain,
    /// Take no new partitions: this node keeps those it holds, and joins, leaves and
    /// losses place theirs on the other members (kept across restarts).
    Cordon,
    /// Lift the cordon: this node may take partitions again.
    Uncordon,
    /// The gossip keyring: list the keys, or rotate them (audited). To rotate without
    /// a restart, run `install` on every member, then `use` on every member, then
    /// `remove` of the old key on every member.
    GossipKeys {
        /// What to do.
        #[command(subcommand)]
        action: GossipKeysAction,
    },
}

/// `chorus ctl gossip-keys ...`
#[derive(Debug, Clone, Subcommand)]
pub enum GossipKeysAction {
    /// Each key's id and which one seals the packets this node sends.
    List,
    /// Install a key (64 hex digits; `-` reads it from stdin, which keeps it out of
    /// the process list) as accepted: packets sealed with it open here.
    Install {
        /// The key, or `-`.
        key: String,
    },
    /// Seal this node's packets with an installed key from now on.
    Use {
        /// The key's id, as `list` shows it.
        key_id: String,
    },
    /// Remove an accepted key (not the primary one).
    Remove {
        /// The key's id.
        key_id: String,
    },
}

/// `chorus ctl degrade ...`
#[derive(Debug, Clone, Subcommand)]
pub enum DegradeAction {
    /// Pin the level: normal, shed_optional (no batch tier, no optional work) or
    /// critical_only (realtime and priority only).
    Set {
        /// The level.
        level: String,
    },
    /// Let the load decide the level again.
    Auto,
}

/// `chorus ctl breakers ...`
#[derive(Debug, Clone, Subcommand)]
pub enum BreakerAction {
    /// Close a breaker and forget its history.
    Reset {
        /// The breaker, e.g. `store`.
        name: String,
    },
    /// Open a breaker until it is reset: its dependency is not called.
    Open {
        /// The breaker, e.g. `store`.
        name: String,
    },
}
