//! `chorus ctl`: the client end of the control socket. Sends one request line, reads one
//! response line, prints it as a table (or, with `--json`, as the response object).
//!
//! Exit codes: 0 done (and, for `audit-verify`, the chain is intact); 1 the node refused
//! the request, could not be reached, or the audit chain is broken.

mod args;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub use args::{BreakerAction, CtlArgs, CtlCommand, DegradeAction, GossipKeysAction};

use crate::config::{NodeConfig, default_control_socket};
use crate::control::protocol::{
    AuditVerification, LogLevelChange, MAX_RESPONSE_BYTES, PeerRow, ReloadReport, Reply, Request,
    Response, SecretHex, SnapshotResult, StatusReport,
};

/// How long the node has to answer (`audit-verify` reads the whole log).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a snapshot may take: it reads the whole partition log (the node logs its
/// progress meanwhile).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Why `chorus ctl` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No socket file: the agent is not running, or uses another data dir or socket.
    #[error("is the agent running? no socket at {0}")]
    NoSocket(PathBuf),
    /// A socket file nobody listens on: the agent stopped without removing it.
    #[error("no agent is listening on {0} (a stale socket: is the agent running?)")]
    Refused(PathBuf),
    /// The socket is not ours to use.
    #[error("permission denied on {0}: run as the agent's user (or root)")]
    PermissionDenied(PathBuf),
    /// Talking to the socket failed.
    #[error("{path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The node did not answer in time.
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not a control response.
    #[error("not a control response: {0}")]
    BadResponse(String),
}

/// Runs `chorus ctl` and returns its exit code.
pub async fn run(args: CtlArgs) -> ExitCode {
    let socket = match (&args.socket, &args.config) {
        (Some(socket), _) => socket.clone(),
        (None, Some(file)) => match NodeConfig::load(Some(file), std::env::vars()) {
            Ok(config) => config.control_socket(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(64);
            }
        },
        (None, None) => default_control_socket(&args.data_dir),
    };
    let mut request = request_for(&args.command);
    if let Request::GossipKeysInstall { key } = &mut request
        && key.0 == "-"
    {
        // The key from stdin rather than the command line, which `ps` shows.
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("error: reading the key from stdin: {e}");
            return ExitCode::FAILURE;
        }
        key.0 = line.trim().to_string();
    }
    match exchange(&socket, &request).await {
        Ok(response) => {
            if args.json {
                println!(
                    "{}",
                    String::from_utf8_lossy(&response.to_line()).trim_end()
                );
            }
            match response.into_result() {
                Ok(reply) => {
                    if !args.json {
                        print_reply(&reply);
                    }
                    match reply {
                        Reply::AuditVerify(v) if !v.intact => ExitCode::FAILURE,
                        _ => ExitCode::SUCCESS,
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            if args.json {
                println!(
                    "{}",
                    json!({"ok": false, "error": {"kind": "unreachable", "message": e.to_string()}})
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// The request a command line stands for.
pub fn request_for(command: &CtlCommand) -> Request {
    match command {
        CtlCommand::Status => Request::Status,
        CtlCommand::LogLevel { level } => Request::LogLevel {
            level: level.clone(),
        },
        CtlCommand::AuditVerify => Request::AuditVerify,
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Queues => Request::Queues,
        CtlCommand::Limits => Request::Limits,
        CtlCommand::Bulkheads => Request::Bulkheads,
        CtlCommand::Degrade { action: None } => Request::Degrade,
        CtlCommand::Degrade {
            action: Some(DegradeAction::Set { level }),
        } => Request::DegradeSet {
            level: level.clone(),
        },
        CtlCommand::Degrade {
            action: Some(DegradeAction::Auto),
        } => Request::DegradeSet {
            level: "auto".into(),
        },
        CtlCommand::Breakers { action: None } => Request::Breakers,
        CtlCommand::Breakers {
            action: Some(BreakerAction::Reset { name }),
        } => Request::BreakerReset { name: name.clone() },
        CtlCommand::Breakers {
            action: Some(BreakerAction::Open { name }),
        } => Request::BreakerOpen { name: name.clone() },
        CtlCommand::Members => Request::Members,
        CtlCommand::Peers => Request::Peers,
        CtlCommand::Ring { user } => Request::Ring { user: user.clone() },
        CtlCommand::Leave => Request::Leave,
        CtlCommand::Replicas { digest } => Request::Replicas { digest: *digest },
        CtlCommand::Handoff { abort: false } => Request::Handoff,
        CtlCommand::Handoff { abort: true } => Request::HandoffAbort,
        CtlCommand::Drain => Request::Drain,
        CtlCommand::Cordon => Request::Cordon { undo: false },
        CtlCommand::Uncordon => Request::Cordon { undo: true },
        CtlCommand::Snapshot { dir } => Request::Snapshot {
            // The agent resolves paths against its own directory: send an absolute one.
            dir: std::path::absolute(dir)
                .unwrap_or_else(|_| dir.clone())
                .display()
                .to_string(),
        },
        CtlCommand::GossipKeys { action } => match action {
            GossipKeysAction::List => Request::GossipKeys,
            GossipKeysAction::Install { key } => Request::GossipKeysInstall {
                key: SecretHex(key.clone()),
            },
            GossipKeysAction::Use { key_id } => Request::GossipKeysUse {
                key_id: key_id.clone(),
            },
            GossipKeysAction::Remove { key_id } => Request::GossipKeysRemove {
                key_id: key_id.clone(),
            },
        },
    }
}

/// Sends one request and reads its response.
pub async fn exchange(socket: &Path, request: &Request) -> Result<Response, CtlError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => CtlError::NoSocket(socket.to_path_buf()),
        io::ErrorKind::ConnectionRefused => CtlError::Refused(socket.to_path_buf()),
        io::ErrorKind::PermissionDenied => CtlError::PermissionDenied(socket.to_path_buf()),
        _ => CtlError::Io {
            path: socket.to_path_buf(),
            source,
        },
    };
    let exchange = async {
        let stream = UnixStream::connect(socket).await.map_err(io_err)?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(request).expect("requests always serialise");
        line.push(b'\n');
        write.write_all(&line).await.map_err(io_err)?;
        let mut reader = BufReader::new(read).take(MAX_RESPONSE_BYTES as u64 + 1);
        let mut answer = Vec::new();
        reader
            .read_until(b'\n', &mut answer)
            .await
            .map_err(io_err)?;
        if answer.is_empty() {
            return Err(CtlError::BadResponse(
                "the node closed the connection without answering".into(),
            ));
        }
        if answer.len() > MAX_RESPONSE_BYTES {
            return Err(CtlError::BadResponse(format!(
                "longer than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        serde_json::from_slice::<Response>(&answer)
            .map_err(|e| CtlError::BadResponse(e.to_string()))
    };
    let limit = match request {
        Request::Snapshot { .. } | Request::Replicas { digest: true } => SNAPSHOT_TIMEOUT,
        _ => RESPONSE_TIMEOUT,
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| CtlError::Timeout(limit))?
}

fn print_reply(reply: &Reply) {
    match reply {
        Reply::Status(s) => print_table(&status_rows(s)),
        Reply::LogLevel(change) => println!("{}", log_level_line(change)),
        Reply::Reload(report) => println!("{}", reload_line(report)),
        Reply::AuditVerify(v) => println!("{}", audit_lines(v)),
        Reply::Breakers { breakers } => {
            let rows: Vec<(&str, String)> = breakers
                .iter()
                .map(|b| (b.name.as_str(), b.state.clone()))
                .collect();
            print_table(&rows);
        }
        Reply::Queues(q) => {
            let mut rows: Vec<(&str, String)> = q
                .tiers
                .iter()
                .map(|t| (t.tier.as_str(), format!("{} / {}", t.depth, t.capacity)))
                .collect();
            rows.push((
                "in flight",
                format!("{} / {}", q.in_flight, q.max_in_flight),
            ));
            print_table(&rows);
        }
        Reply::Members { members } => {
            println!(
                "{:<16} {:<22} {:<8} {:>16}  {:<17} since",
                "id", "address", "state", "incarnation", "standing"
            );
            for m in members {
                let me = if m.is_self { " (this node)" } else { "" };
                println!(
                    "{:<16} {:<22} {:<8} {:>16}  {:<17} {}{me}",
                    m.id,
                    m.address,
                    m.state,
                    m.incarnation,
                    m.standing,
                    format_ms(m.since_ms)
                );
            }
        }
        Reply::Peers { peers } => print_peers(peers),
        Reply::Ring(r) => {
            println!(
                "epoch {:016x}, {} partitions on {} nodes (max/mean {:.3}); {} moved at the last change, {}",
                r.epoch,
                r.partitions,
                r.nodes.len(),
                r.balance,
                r.moved_last_change,
                format_ms(r.since_ms)
            );
            for n in &r.nodes {
                println!(
                    "  {:<16} {:<22} {:>6} partitions led",
                    n.node, n.address, n.partitions
                );
            }
            if r.leaderless > 0 {
                println!("  {} partitions have no live replica", r.leaderless);
            }
            if let Some(u) = &r.user {
                println!(
                    "user {:?}: partition {}, owner {}",
                    u.user, u.partition, u.owner
                );
            }
        }
        Reply::GossipKeys(report) => {
            for key in &report.keys {
                let primary = if key.primary { "  primary" } else { "" };
                println!("{}{primary}", key.id);
            }
            if let Some(seq) = report.audit_seq {
                println!("keyring changed (audit entry {seq})");
            }
        }
        Reply::Leave(l) => {
            if l.was_member {
                println!(
                    "left the cluster; the node is stopping (audit entry {})",
                    l.audit_seq
                );
            } else {
                println!(
                    "not a cluster member; the node is stopping (audit entry {})",
                    l.audit_seq
                );
            }
        }
        Reply::Bulkheads { bulkheads } => {
            if bulkheads.is_empty() {
                println!("no bulkheads (no external dependency is configured)");
            }
            let rows: Vec<(&str, String)> = bulkheads
                .iter()
                .map(|b| {
                    (
                        b.name.as_str(),
                        format!(
                            "running {}/{}, waiting {}/{}",
                            b.running, b.max_concurrent, b.queued, b.max_queue
                        ),
                    )
                })
                .collect();
            print_table(&rows);
        }
        Reply::Limits(l) => {
            let show = |n: u32, unit: &str| {
                if n == 0 {
                    "off".to_string()
                } else {
                    format!("{n} {unit}")
                }
            };
            print_table(&[
                ("per user", show(l.per_user_per_minute, "per minute")),
                ("user burst", l.per_user_burst.to_string()),
                ("per API key", show(l.per_api_key_per_second, "per second")),
                ("global", show(l.global_per_second, "per second")),
                ("users tracked", l.tracked_users.to_string()),
            ]);
        }
        Reply::Degrade(d) => println!(
            "degradation level {} ({}){}",
            d.level,
            if d.manual { "pinned" } else { "set by load" },
            d.audit_seq
                .map(|seq| format!(", audit entry {seq}"))
                .unwrap_or_default()
        ),
        Reply::BreakerChange(change) => println!(
            "breaker {} is now {} (audit entry {})",
            change.name, change.state, change.audit_seq
        ),
        Reply::Snapshot(s) => print_table(&snapshot_rows(s)),
        Reply::Drain(d) => println!(
            "draining: {} streams (audit entry {}); chorus ctl handoff shows the progress, the node leaves when done",
            d.streams, d.audit_seq
        ),
        Reply::Cordon(c) if c.cordoned => println!(
            "cordoned: keeps {} partitions and takes no new ones (audit entry {})",
            c.partitions_kept, c.audit_seq
        ),
        Reply::Cordon(c) => println!("cordon lifted (audit entry {})", c.audit_seq),
        Reply::Handoff(h) => {
            println!(
                "partition copies in step {}, behind {}; records left {} (about {} bytes)",
                h.pairs_done, h.pairs_left, h.records_left, h.bytes_left
            );
            println!(
                "catch-up shipped {} bytes; rate {} bytes/s; ETA {}; cap {}; throttled {} times",
                h.bytes_done,
                h.rate_bytes_per_sec,
                h.eta_secs.map_or("-".into(), |s| format!("{s} s")),
                h.limit_bytes_per_sec
                    .map_or("none".into(), |c| format!("{c} bytes/s")),
                h.throttled
            );
            if let Some(d) = &h.drain {
                println!(
                    "drain {}: {} of {} streams done ({} left to their leaders), {} records, {} bytes, {} s{}",
                    d.state,
                    d.streams_done,
                    d.streams,
                    d.streams_fenced,
                    d.records,
                    d.bytes,
                    d.elapsed_secs,
                    d.error
                        .as_deref()
                        .map(|e| format!("; {e}"))
                        .unwrap_or_default()
                );
            }
            println!("follower partitions behind records_behind");
            for f in &h.followers {
                println!(
                    "{:<8} {:>10} {:>6} {:>14}",
                    f.follower, f.partitions, f.behind, f.records_behind
                );
            }
        }
        Reply::Replicas(r) => {
            println!(
                "{} replicas per partition, write quorum {}; this node leads {} of {}",
                r.factor,
                r.write_quorum,
                r.leading,
                r.partitions.len()
            );
            println!(
                "anti-entropy: {} follower copies found equal, {} repaired ({} records shipped again)",
                r.anti_entropy.equal, r.anti_entropy.repaired, r.anti_entropy.records_repaired
            );
            println!("partition leader epoch last records digest");
            for p in &r.partitions {
                println!(
                    "{:>9} {:>6} {:>5} {:>4} {:>7} {}",
                    p.partition,
                    if p.leader { "yes" } else { "" },
                    p.epoch,
                    p.last,
                    p.records.map(|n| n.to_string()).unwrap_or_default(),
                    p.digest.as_deref().unwrap_or("")
                );
            }
        }
    }
}

fn snapshot_rows(s: &SnapshotResult) -> Vec<(&'static str, String)> {
    vec![
        ("snapshot", s.dir.clone()),
        (
            "segments",
            format!(
                "{} / {} ({} hard-linked)",
                s.segments_done, s.segments_total, s.linked_segments
            ),
        ),
        ("bytes", format!("{} / {}", s.bytes_done, s.bytes_total)),
        ("records", s.records.to_string()),
        ("api keys", s.api_keys.to_string()),
        (
            "log end",
            format!("segment {}, offset {}", s.end_segment, s.end_offset),
        ),
        ("took", format!("{} ms", s.duration_ms)),
        ("audit entry", s.audit_seq.to_string()),
    ]
}

fn status_rows(s: &StatusReport) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("node", s.node_id.clone()),
        ("version", s.version.clone()),
        ("pid", s.pid.to_string()),
        (
            "uptime",
            humantime::format_duration(Duration::from_secs(s.uptime_secs)).to_string(),
        ),
        ("listen", s.listen.clone()),
        ("data dir", s.data_dir.clone()),
        ("control", s.control_socket.clone()),
        ("log level", s.log_level.clone()),
    ];
    if let Some(log) = &s.store_log {
        rows.push((
            "store log",
            format!(
                "{} segments, {} bytes ({} live, {} dead); {} retired ({} compacted)",
                log.segments,
                log.bytes,
                log.live_bytes,
                log.dead_bytes,
                log.retired_segments,
                log.compacted_segments
            ),
        ));
    }
    if let Some(v) = &s.speaks {
        rows.push((
            "speaks",
            format!(
                "client protocol {:?} ({}), links {} messages v{}, gossip envelope v{} seal v{}, log segments v{}, snapshots v{}",
                v.client_protocol,
                v.client_alpn,
                if v.link_alpns.is_empty() {
                    v.link_alpn.clone()
                } else {
                    v.link_alpns.join(" or ")
                },
                v.link_messages,
                v.gossip_envelope,
                v.gossip_seal,
                v.log_segments,
                v.snapshot_manifest
            ),
        ));
    }
    if let Some(r) = &s.replication {
        rows.push((
            "replication",
            format!(
                "{} replicas, write quorum {}; leads {} partitions; {} follower copies behind ({} records); {}{}; {} partitions with a learner",
                r.factor,
                r.write_quorum,
                r.leading,
                r.copies_behind,
                r.records_behind,
                if r.warming { "warming" } else { "warm" },
                if r.cordoned { ", cordoned" } else { "" },
                r.learning
            ),
        ));
    }
    rows
}

/// A Unix-epoch millisecond time as UTC, `YYYY-MM-DD HH:MM:SS.mmm`.
fn format_ms(ms: u64) -> String {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

fn print_table(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
}

fn reload_line(report: &ReloadReport) -> String {
    if report.applied.is_empty() {
        format!(
            "reloaded: nothing changed (audit entry {})",
            report.audit_seq
        )
    } else {
        format!(
            "reloaded: {} (audit entry {})",
            report.applied.join(", "),
            report.audit_seq
        )
    }
}

fn log_level_line(change: &LogLevelChange) -> String {
    format!(
        "log level: {} -> {} (audit entry {})",
        change.previous, change.current, change.audit_seq
    )
}

fn audit_lines(v: &AuditVerification) -> String {
    let head = match (&v.head_seq, &v.head_hash) {
        (Some(seq), Some(hash)) => format!("head: entry {seq}, hash {hash}"),
        _ => "head: none (empty log)".into(),
    };
    match &v.first_broken {
        None => format!("audit log intact: {} entries\n{head}", v.entries),
        Some(broken) => format!(
            "audit log BROKEN at entry {}: {}\n{} entries read; {head}",
            broken.seq, broken.reason, v.entries
        ),
    }
}

/// `ctl peers` as a table: one line per peer.
fn print_peers(peers: &[PeerRow]) {
    if peers.is_empty() {
        println!("no peers: this node runs alone");
        return;
    }
    println!(
        "{:<16} {:<22} {:<6} {:<11} {:>9} {:>9}  {:<11} {:>10} {:>14}  since",
        "id",
        "address",
        "member",
        "link",
        "rtt ms",
        "forwards",
        "breaker",
        "lagging",
        "records behind"
    );
    for p in peers {
        let rtt = p
            .rtt_us
            .map_or("-".into(), |us| format!("{:.2}", us as f64 / 1000.0));
        let (lagging, behind) = p
            .replication
            .as_ref()
            .map_or(("-".into(), "-".into()), |r| {
                (
                    format!("{} / {}", r.behind, r.partitions),
                    r.records_behind.to_string(),
                )
            });
        println!(
            "{:<16} {:<22} {:<6} {:<11} {:>9} {:>9}  {:<11} {:>10} {:>14}  {}",
            p.id,
            p.address,
            if p.member { "yes" } else { "no" },
            p.link,
            rtt,
            format!("{} / {}", p.forwards_in_flight, p.forwards_max),
            p.breaker,
            lagging,
            behind,
            format_ms(p.link_since_ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::BrokenLink;

    #[tokio::test]
    async fn a_missing_socket_says_the_agent_may_not_be_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.sock");
        let err = exchange(&path, &Request::Status).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("is the agent running? no socket at"),
            "{text}"
        );
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[tokio::test]
    async fn a_stale_socket_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = exchange(&path, &Request::Status).await.unwrap_err();
        assert!(matches!(err, CtlError::Refused(_)), "{err}");
    }

    #[test]
    fn commands_map_to_requests() {
        assert_eq!(request_for(&CtlCommand::Status), Request::Status);
        assert_eq!(request_for(&CtlCommand::AuditVerify), Request::AuditVerify);
        assert_eq!(
            request_for(&CtlCommand::LogLevel {
                level: "debug".into()
            }),
            Request::LogLevel {
                level: "debug".into()
            }
        );
    }

    #[test]
    fn a_broken_chain_names_its_first_broken_entry() {
        let text = audit_lines(&AuditVerification {
            entries: 5,
            intact: false,
            head_seq: Some(5),
            head_hash: Some("ab".into()),
            first_broken: Some(BrokenLink {
                seq: 3,
                reason: "hash mismatch".into(),
            }),
        });
        assert!(
            text.starts_with("audit log BROKEN at entry 3: hash mismatch"),
            "{text}"
        );
    }
}
