//! The `chorus` command line: subcommands and their flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogFormat;
use crate::tools::connect::ConnectArgs;

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
    /// What the feedback about each function version adds up to, cluster-wide, and
    /// each version's status.
    #[command(subcommand)]
    Functions(FunctionsCommand),
    /// The cluster's events (requires_update, version changes, flagged items, users
    /// exported or deleted), by time range and type, or followed as they come.
    Events(EventsArgs),
    /// The items validation flagged: list them, approve or reject one (needs a review
    /// or admin key).
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Users' rights: export everything stored about a user, or delete it everywhere
    /// (needs an admin key).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Aggregate questions about the feedback: items and ratings per function (or per
    /// version), optionally under differential privacy.
    Insights(InsightsArgs),
    /// Load-test a node and report throughput and latency percentiles.
    Bench(crate::tools::bench::BenchArgs),
    /// Administer a running node over its local control socket.
    Ctl(crate::tools::ctl::CtlArgs),
    /// Start a local 3-node cluster, run a workload, kill and restart a node, and
    /// summarise what the cluster did (detection time, partitions moved, items lost).
    Demo(crate::tools::demo::DemoArgs),
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
    /// The function the feedback is about, as NAME@VERSION.
    #[arg(long)]
    pub function: Option<String>,
    /// With --function: the error rate of the calls it reports, 0.0..=1.0.
    #[arg(long, requires = "function", requires = "duration_ms")]
    pub error_rate: Option<f64>,
    /// With --function: their mean execution time in milliseconds.
    #[arg(long, requires = "function", requires = "error_rate")]
    pub duration_ms: Option<f64>,
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

/// `chorus functions ...` (needs a read key).
#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// Every function: its versions, items, mean rating, and the versions whose
    /// feedback says they require an update.
    List(FunctionsArgs),
    /// One function: its totals over every version, and each version's counts.
    Show(FunctionArgs),
    /// One function's versions: items, mean rating, error rate, p50 and p95 of the
    /// reported execution time, status, and whether each requires an update.
    Versions(FunctionArgs),
    /// Mark a version deprecated (needs an admin key); recorded as an event.
    Deprecate(VersionArgs),
    /// Mark a deprecated version active again (needs an admin key).
    Activate(VersionArgs),
    /// Make a version its function's current version (needs an admin key).
    Current(VersionArgs),
}

/// Flags of `chorus functions deprecate|activate|current`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The version, as NAME@VERSION.
    pub function: String,
    /// Print the recorded event as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus insights`.
#[derive(Debug, Args)]
pub struct InsightsArgs {
    /// Only this function (grouping by function or version).
    #[arg(long)]
    pub function: Option<String>,
    /// What rows group by (repeatable): function or version, or any of kind, tier and
    /// day (default: function).
    #[arg(long = "by", value_name = "DIMENSION")]
    pub by: Vec<String>,
    /// Only the items stored in the last N days, today included (grouping by kind,
    /// tier or day).
    #[arg(long, value_name = "N")]
    pub last_days: Option<u32>,
    /// Answer under differential privacy at this epsilon (0 < EPS <= 10), charged to
    /// the key's privacy budget.
    #[arg(long, value_name = "EPS")]
    pub dp: Option<f64>,
    /// Print one JSON object per row, then a summary object.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `chorus users ...`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Every item of the user, oldest first, as JSON lines (progress on stderr).
    Export(UsersExportArgs),
    /// Delete every item of the user on every replica: each becomes a tombstone and
    /// its bytes are reclaimed by compaction. Answers once a write quorum holds them.
    Delete(UsersDeleteArgs),
}

/// Flags of `chorus users export`.
#[derive(Debug, Args)]
pub struct UsersExportArgs {
    /// The user.
    pub user: String,
    /// Write the JSON lines to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Items per request, 1..=1000.
    #[arg(long, default_value_t = 1000)]
    pub page: u32,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus users delete`.
#[derive(Debug, Args)]
pub struct UsersDeleteArgs {
    /// The user.
    pub user: String,
    /// Print `{"user_id": ..., "deleted": N}`.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `chorus review ...`
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// The items waiting for review, cluster-wide, in partition and user order.
    List(ReviewListArgs),
    /// Approve a flagged item: it becomes `accepted`.
    Approve(ReviewDecisionArgs),
    /// Reject a flagged item: it becomes `rejected`, for the reasons it was flagged.
    Reject(ReviewDecisionArgs),
}

/// Flags of `chorus review list`.
#[derive(Debug, Args)]
pub struct ReviewListArgs {
    /// Most items to print (default: all).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Print one JSON object per item.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus review approve|reject`.
#[derive(Debug, Args)]
pub struct ReviewDecisionArgs {
    /// The item's id.
    pub id: String,
    /// The item's user.
    #[arg(long)]
    pub user: String,
    /// Print the item as now stored, as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of this type (repeatable): requires_update, update_cleared,
    /// version_deprecated, version_activated, current_version, item_flagged,
    /// item_reviewed, user_exported, user_deleted, privacy_spent.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Only events recorded at or after this time: milliseconds since the Unix epoch,
    /// or a duration ago (`15m`, `2h`, `7d`).
    #[arg(long, conflicts_with_all = ["follow", "cursor"])]
    pub since: Option<String>,
    /// Only events recorded before this time (as `--since`).
    #[arg(long, conflicts_with_all = ["follow", "cursor"])]
    pub until: Option<String>,
    /// Most events to print (without `--follow`; default: all in the range).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Keep printing events as they are recorded, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// With `--follow`: start after this cursor (as printed with each event under
    /// `--json`) instead of from the first event.
    #[arg(long, requires = "follow")]
    pub cursor: Option<String>,
    /// Print one JSON object per event; under `--follow` each carries the `cursor` to
    /// resume after it.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus functions list`.
#[derive(Debug, Args)]
pub struct FunctionsArgs {
    /// Print one JSON object per function.
    #[arg(long)]
    pub json: bool,
    /// Where to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Flags of `chorus functions show` and `versions`.
#[derive(Debug, Args)]
pub struct FunctionArgs {
    /// The function's name.
    pub name: String,
    /// Print JSON (`show`: one object; `versions`: one object per version).
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
    /// submit | read | review | admin.
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
