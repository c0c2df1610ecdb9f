//! `chorus demo`: a local three-node cluster, a workload, a crash, a summary.
//!
//! The demo starts three `chorus agent` processes (this executable) on 127.0.0.1, .2
//! and .3 in a temporary directory, with certificates made on the fly, and waits until
//! each sees all three alive. Then, while a mixed workload of four tiers runs through
//! the SDK:
//!
//! 1. steady: the workload alone;
//! 2. crash: one member (not the one the SDK connected to) is SIGKILLed; the demo
//!    measures when every survivor declares it down and adopts a ring without it;
//! 3. rejoin: it is restarted with the same data and config; the demo measures when
//!    every member sees it alive again under a new incarnation and the ring takes it
//!    back;
//! 4. verify: the workload stops, every acknowledged item is read back by id, and every
//!    user's listing holds each of its acknowledged items once.
//!
//! Modules: `cluster` (the child processes and their control sockets), `workload`
//! (workers, ledger of acknowledged items, read-back, progress line), `watch` (what
//! is awaited in a member's view, pure), `report` (the summary).

mod cluster;
mod report;
mod watch;
mod workload;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_client::{Client, ClientConfig};
use clap::Args;

use cluster::{ClusterError, LocalCluster, POLL_INTERVAL};
use report::DemoSummary;
use watch::Convergence;
use workload::{Progress, Shape, Workload, say};

/// Members of the demo cluster.
const NODES: usize = 3;

/// The member the SDK connects to (index); never the one killed.
const ENTRY: usize = 0;

/// The member killed and restarted (index).
const VICTIM: usize = 1;

/// Longest wait for the cluster to form at start.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for the survivors to declare the killed member down.
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the restarted member to be seen alive by every member.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Shares of `--duration` given to the steady, crash and rejoin phases.
const PHASE_SHARES: [f64; 3] = [0.3, 0.35, 0.35];

/// Time for one attempt of a request: short, so that a request stuck on the dead
/// member gives way to the SDK's fallback quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Exit code of a demo stopped by Ctrl-C or SIGTERM (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Flags of `chorus demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Total time of the workload, split between the steady, crash and rejoin phases
    /// (each lasts at least as long as what it waits for).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub duration: Duration,
    /// Workers, each with one request in flight, split between the tiers
    /// realtime 10 / priority 20 / standard 40 / batch 30 (batch workers send batches).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Distinct users the items come from.
    #[arg(long, default_value_t = 5_000)]
    pub users: u32,
    /// QUIC port of every member (gossip on the next one), on 127.0.0.1, .2 and .3;
    /// default: ports free at start.
    #[arg(long, value_name = "PORT")]
    pub base_port: Option<u16>,
    /// Keep the temporary directory (configs, certificates, data, logs).
    #[arg(long)]
    pub keep: bool,
    /// Print the summary as one JSON object on stdout (everything else goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Why the demo stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The cluster could not be set up or asked.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Something awaited did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// A member exited on its own.
    #[error("{node} exited ({status}); its log ends with:\n{log}")]
    Exited {
        /// The member.
        node: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

/// Runs the demo, prints its summary and returns the exit code: 0 when every step ran
/// and nothing acknowledged was lost.
pub async fn run(args: DemoArgs) -> ExitCode {
    let mut summary = DemoSummary {
        nodes: NODES,
        ..DemoSummary::default()
    };
    let outcome = match LocalCluster::create(NODES, args.base_port, args.keep) {
        Err(e) => Err(DemoError::from(e)),
        Ok(mut cluster) => {
            say(&format!(
                "chorus demo: cluster in {}",
                cluster.dir.display()
            ));
            let outcome = tokio::select! {
                outcome = scenario(&mut cluster, &args, &mut summary) => outcome,
                _ = interrupted() => Err(DemoError::Interrupted),
            };
            summary.kept_dir = cluster.shut_down().map(|d| d.display().to_string());
            outcome
        }
    };
    let code = match &outcome {
        Ok(())
            if summary.lost == 0
                && summary.mismatched == 0
                && summary.unlisted == 0
                && summary.listed_twice == 0 =>
        {
            ExitCode::SUCCESS
        }
        Err(DemoError::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        _ => ExitCode::FAILURE,
    };
    summary.error = outcome.err().map(|e| e.to_string());
    summary.ok = code == ExitCode::SUCCESS;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("the summary serialises")
        );
    } else {
        print!("{}", summary.table());
    }
    code
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// Milliseconds since the Unix epoch, the clock members stamp their views with.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every step, filling `summary` as it goes. Once the workload runs, a failed step
/// still stops it and reads back what was acknowledged.
async fn scenario(
    cluster: &mut LocalCluster,
    args: &DemoArgs,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    let phases = PHASE_SHARES.map(|share| args.duration.mul_f64(share));
    for index in 0..NODES {
        cluster.start(index)?;
    }
    let started = Instant::now();
    wait_formed(cluster).await?;
    say(&format!(
        "{NODES} members alive in every view after {} ms",
        started.elapsed().as_millis()
    ));
    let client = connect(cluster).await?;
    let workload = Workload::start(&client, Shape { users: args.users }, args.concurrency);
    let steps = fault_steps(cluster, &workload.progress, phases, summary).await;
    workload.progress.set_phase("stopping");
    let report = workload.stop().await;
    summary.add_workload(&report);
    let stats = client.routing_stats();
    summary.routing = [
        ("routed".to_string(), stats.routed),
        ("redirected".to_string(), stats.redirected),
        ("fallbacks".to_string(), stats.fallbacks),
    ]
    .into();
    say(&format!(
        "reading back {} acknowledged items",
        report.acked.len()
    ));
    let read = workload::read_back(&client, &report.acked).await;
    summary.add_read_back(&read);
    say("listing the items of every user");
    let listed = workload::list_back(&client, &report.acked).await;
    summary.add_list_back(&listed);
    client.close().await;
    steps
}

/// Steady, crash, rejoin and recovered phases, while the workload runs.
async fn fault_steps(
    cluster: &mut LocalCluster,
    progress: &Progress,
    phases: [Duration; 3],
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    progress.set_phase("steady");
    tokio::time::sleep(phases[0]).await;
    check_running(cluster)?;

    let victim = cluster.members[VICTIM].name.clone();
    let survivors: Vec<usize> = (0..NODES).filter(|&i| i != VICTIM).collect();
    let ring_before = cluster.ring_seen_by(ENTRY).await?.epoch;
    let incarnation_before = watch::incarnation_of(&cluster.members_seen_by(ENTRY).await?, &victim)
        .ok_or_else(|| DemoError::Timeout(format!("{victim} is not a member")))?;

    progress.set_phase("crash");
    let killed_ms = now_ms();
    let killed_at = Instant::now();
    cluster.kill(VICTIM);
    summary.killed = Some(victim.clone());
    say(&format!("SIGKILLed {victim}"));

    let mut down = Convergence::new(NODES);
    let mut ring = Convergence::new(NODES);
    loop {
        for &i in &survivors {
            if let Ok(rows) = cluster.members_seen_by(i).await {
                down.observe(i, watch::seen_down(&rows, &victim));
            }
            if let Ok(report) = cluster.ring_seen_by(i).await {
                ring.observe(i, watch::ring_changed(&report, ring_before, NODES - 1));
            }
        }
        if down.done_among(&survivors) && ring.done_among(&survivors) {
            break;
        }
        if killed_at.elapsed() > DETECT_TIMEOUT {
            return Err(DemoError::Timeout(format!(
                "the survivors did not all declare {victim} down within {DETECT_TIMEOUT:?}"
            )));
        }
        check_running(cluster)?;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    for (i, since) in down.sightings() {
        summary.detected_down_by.insert(
            cluster.members[i].name.clone(),
            watch::elapsed_ms(killed_ms, *since),
        );
    }
    summary.detected_down_ms = summary.detected_down_by.values().copied().max();
    summary.ring_changed_ms = ring
        .sightings()
        .map(|(_, (since, _))| watch::elapsed_ms(killed_ms, *since))
        .max();
    summary.partitions_moved = ring.sightings().map(|(_, (_, moved))| *moved).max();
    let ring_degraded = cluster.ring_seen_by(ENTRY).await?.epoch;
    say(&format!(
        "{victim} down in every survivor's view after {} ms; ring changed after {} ms, {} partitions moved",
        summary.detected_down_ms.unwrap_or_default(),
        summary.ring_changed_ms.unwrap_or_default(),
        summary.partitions_moved.unwrap_or_default()
    ));
    tokio::time::sleep(phases[1].saturating_sub(killed_at.elapsed())).await;

    progress.set_phase("rejoin");
    let restarted_ms = now_ms();
    let restarted_at = Instant::now();
    cluster.start(VICTIM)?;
    say(&format!("restarted {victim}"));
    let mut alive = Convergence::new(NODES);
    let mut ring = Convergence::new(NODES);
    loop {
        for i in 0..NODES {
            if let Ok(rows) = cluster.members_seen_by(i).await {
                alive.observe(
                    i,
                    watch::seen_rejoined(&rows, &victim, incarnation_before)
                        .zip(watch::incarnation_of(&rows, &victim)),
                );
            }
            if let Ok(report) = cluster.ring_seen_by(i).await {
                ring.observe(i, watch::ring_changed(&report, ring_degraded, NODES));
            }
        }
        if alive.done() && ring.done() {
            break;
        }
        if restarted_at.elapsed() > REJOIN_TIMEOUT {
            return Err(DemoError::Timeout(format!(
                "{victim} was not seen alive again by every member within {REJOIN_TIMEOUT:?}"
            )));
        }
        check_running(cluster)?;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    summary.rejoined = true;
    summary.rejoin_ms = alive
        .sightings()
        .map(|(_, (since, _))| watch::elapsed_ms(restarted_ms, *since))
        .max();
    summary.incarnation_before = Some(incarnation_before);
    summary.incarnation_after = alive.sightings().map(|(_, (_, after))| *after).max();
    // The restarted member's own first ring (itself alone) says nothing about the move.
    summary.partitions_moved_back = ring
        .sightings()
        .filter(|(i, _)| *i != VICTIM)
        .map(|(_, (_, moved))| *moved)
        .max();
    summary.ring_restored = cluster.ring_seen_by(ENTRY).await?.epoch == ring_before;
    say(&format!(
        "{victim} alive again in every view after {} ms (incarnation {incarnation_before} -> {}); {} partitions moved back",
        summary.rejoin_ms.unwrap_or_default(),
        summary.incarnation_after.unwrap_or_default(),
        summary.partitions_moved_back.unwrap_or_default()
    ));
    progress.set_phase("recovered");
    tokio::time::sleep(phases[2].saturating_sub(restarted_at.elapsed())).await;
    check_running(cluster)
}

/// Waits until every member sees all of them alive.
async fn wait_formed(cluster: &mut LocalCluster) -> Result<(), DemoError> {
    let started = Instant::now();
    loop {
        let mut formed = true;
        for i in 0..NODES {
            match cluster.members_seen_by(i).await {
                Ok(rows) if watch::all_alive(&rows, NODES) => {}
                _ => formed = false,
            }
        }
        if formed && cluster.admin_key(ENTRY).is_some() {
            return Ok(());
        }
        check_running(cluster)?;
        if started.elapsed() > FORM_TIMEOUT {
            return Err(DemoError::Timeout(format!(
                "the cluster did not form within {FORM_TIMEOUT:?} (logs in {})",
                cluster.dir.display()
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Fails if a member that should be running has exited.
fn check_running(cluster: &mut LocalCluster) -> Result<(), DemoError> {
    for i in cluster.running() {
        if let Some(status) = cluster.exited(i) {
            return Err(DemoError::Exited {
                node: cluster.members[i].name.clone(),
                status,
                log: cluster.log_tail(i, 20),
            });
        }
    }
    Ok(())
}

/// The SDK client of the workload, connected to the entry member with its admin key,
/// once its ring snapshot spans every member.
async fn connect(cluster: &LocalCluster) -> Result<Client, DemoError> {
    let key = cluster
        .admin_key(ENTRY)
        .ok_or_else(|| DemoError::Timeout("no admin key".into()))?;
    let config = ClientConfig {
        request_timeout: REQUEST_TIMEOUT,
        ..ClientConfig::default()
    };
    let client = cluster.client(ENTRY, &key, config).await?;
    let started = Instant::now();
    while client.ring().is_none_or(|r| r.members.len() < NODES) {
        if started.elapsed() > FORM_TIMEOUT {
            return Err(DemoError::Timeout(
                "the client's ring never listed every member".into(),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        client.refresh_ring().await;
    }
    Ok(client)
}
