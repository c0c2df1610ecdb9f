//! The `chorus` command line: subcommands and their flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{DEFAULT_DATA_DIR, LogFormat};

/// Chorus: a clustered runtime that ingests and processes user feedback.
#[derive(Debug, Parser)]
#[command(name = "chorus", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (with no flags: one node on 127.0.0.1:7400, data in ./chorus-data).
    Agent(AgentArgs),
    /// Submit one feedback item.
    Submit(SubmitArgs),
    /// Read one item by id.
    Get(GetArgs),
    /// List a user's items, oldest first.
    List(ListArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Load-test a node and report throughput and latency percentiles.
    Bench(crate::bench::BenchArgs),
    /// Administer a running node over its local control socket.
    Ctl(CtlArgs),
    /// Start a local 3-node cluster, run a workload, kill and restart a node, and
    /// summarise what the cluster did (detection time, partitions moved, items lost).
    Demo(crate::demo::DemoArgs),
    /// Make the cluster CA, the cluster key and node certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Restore a snapshot (`chorus ctl snapshot DIR`) into a fresh data dir, offline:
    /// checks the snapshot, then writes the store; start the agent on it afterwards.
    Restore(RestoreArgs),
}

/// Flags of `chorus restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot directory.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The data dir to restore into; refused unless absent or empty.
    #[arg(long, value_name = "DIR", required_unless_present = "check")]
    pub data_dir: Option<PathBuf>,
    /// Only check the snapshot (manifest and every segment's checksum); write nothing.
    #[arg(long)]
    pub check: bool,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `chorus certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make the cluster CA (`ca.pem`, `ca.key`) and the cluster key (`cluster.key`) in
    /// DIR; refuses to overwrite any of them.
    Init {
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Sign a certificate for a node (`NAME.pem`, `NAME.key`) with the CA in DIR; its
    /// names are the IPs, the DNS names and NAME itself.
    Node {
        /// The node's id (peers check its certificate against this name).
        name: String,
        /// An address the node is reached at (repeatable).
        #[arg(long = "ip", value_name = "IP", required = true)]
        ips: Vec<std::net::IpAddr>,
        /// A DNS name the node is reached at (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Where the CA is and the files go.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Make one host's bundle (a tar file, mode 0600) for `deploy/install.sh --bundle`:
    /// the CA certificate, the cluster key, and NAME's certificate and key (signed now
    /// with the CA in DIR unless NAME.pem and NAME.key are there). The CA key stays out.
    Bundle {
        /// The node's id.
        name: String,
        /// An address the node is reached at (repeatable); the first is the one the
        /// installed config listens on.
        #[arg(long = "ip", value_name = "IP", required = true)]
        ips: Vec<std::net::IpAddr>,
        /// A DNS name the node is reached at (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Where the CA is (and the node's certificate goes).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The bundle to write; refused if it exists.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Flags of `chorus agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// A TOML configuration file; `CHORUS_*` variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format (overrides the configuration).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// How a CLI command reaches a node: by default the local development node.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Node address.
    #[arg(
        long,
        env = "CHORUS_SERVER",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    pub server: SocketAddr,
    /// The cluster CA certificate (default: <data-dir>/tls/ca.pem).
    #[arg(long, env = "CHORUS_CA", value_name = "PEM", global = true)]
    pub ca: Option<PathBuf>,
    /// A file holding the API key (mode 0600; preferred: a key on the command line is
    /// visible to every user in the process list).
    #[arg(
        long,
        env = "CHORUS_API_KEY_FILE",
        value_name = "FILE",
        global = true,
        conflicts_with = "api_key"
    )]
    pub api_key_file: Option<PathBuf>,
    /// API key (prefer --api-key-file or CHORUS_API_KEY; default: the admin key in
    /// <data-dir>/admin.key).
    #[arg(long, env = "CHORUS_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Data directory of the local node, where the defaults above are found. Its
    /// variable is not the agent's `CHORUS_DATA_DIR`, so that a shell set up for the
    /// CLI never moves a restarted agent onto another node's store.
    #[arg(long, env = "CHORUS_CLI_DATA_DIR", default_value = DEFAULT_DATA_DIR, global = true)]
    pub data_dir: PathBuf,
    /// The name the node's certificate is checked against (default: the IP dialed,
    /// which certificates made by `chorus certs node --ip` and the development ones
    /// carry).
    #[arg(long, env = "CHORUS_SERVER_NAME", global = true)]
    pub server_name: Option<String>,
}

impl ConnectArgs {
    /// The name the node's certificate must carry: `--server-name`, else the IP dialed.
    pub fn server_name(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| self.server.ip().to_string())
    }
}

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

/// Flags of `chorus submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The user the feedback comes from.
    #[arg(long)]
    pub user: String,
    /// A rating, 1..=5.
    #[arg(long)]
    pub rating: Option<u8>,
    /// Free text.
    #[arg(long, default_value = "")]
    pub text: String,
    /// rating | text | bug | feature | performance | error | user | system
    /// (default: rating when --rating is given, else text).
    #[arg(long)]
    pub kind: Option<String>,
    /// realtime | priority | standard | batch.
    #[arg(long, default_value = "standard")]
    pub tier: String,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// The item's id (a ULID); a fresh one by default. Resubmitting an id returns its
    /// first receipt.
    #[arg(long)]
    pub id: Option<String>,
    /// Print the receipt as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where to send it.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The item's id (a ULID).
    pub id: String,
    /// Print the item as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Whose items.
    #[arg(long)]
    pub user: String,
    /// Most items to print.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `chorus keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (needs an admin key).
    Create(KeysCreateArgs),
    /// List the cluster's API keys: id, role, name, created, revoked (needs an admin key).
    List(KeysListArgs),
    /// Revoke an API key by its id or a unique prefix of it (needs an admin key); every
    /// member refuses it from then on.
    Revoke(KeysRevokeArgs),
}

/// Flags of `chorus keys list`.
#[derive(Debug, Args)]
pub struct KeysListArgs {
    /// Print one JSON object per key.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus keys revoke`.
#[derive(Debug, Args)]
pub struct KeysRevokeArgs {
    /// The key's id as `chorus keys list` prints it, or a prefix naming one key.
    pub id: String,
    /// Print the revoked key as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where to revoke it.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus keys create`.
#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// submit | read | admin.
    #[arg(long)]
    pub role: String,
    /// A label for operators.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Print `{"key": ..., "role": ...}`.
    #[arg(long)]
    pub json: bool,
    /// Where to create it.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn connect_args(flags: &[&str]) -> ConnectArgs {
        let argv = ["chorus", "submit", "--user", "u"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Submit(args) => args.connect,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_certificate_is_checked_against_the_ip_dialed_unless_a_name_is_given() {
        assert_eq!(
            connect_args(&["--server", "127.0.0.2:7400"]).server_name(),
            "127.0.0.2"
        );
        assert_eq!(
            connect_args(&["--server", "[::1]:7400"]).server_name(),
            "::1"
        );
        assert_eq!(
            connect_args(&["--server", "127.0.0.2:7400", "--server-name", "node-2"]).server_name(),
            "node-2"
        );
    }
}
