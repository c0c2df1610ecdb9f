//! A network partition between real `chorus agent` processes.
//!
//! Six hosts, each a Linux network namespace with one veth into a bridge that lives in
//! a seventh namespace (the host's own network is never touched). One agent runs in
//! each host; the test reads every node's view through its control socket, which is a
//! path in the shared filesystem and so reachable from outside the namespaces. Cutting
//! two hosts off moves their ports to a second bridge: frames between the two sides are
//! dropped silently in both directions while both ends keep their carrier, as when the
//! link between two racks fails, and each side still talks within itself (the network
//! is [`support::netns::Lab`]).
//!
//! The cut lasts until both sides have declared the other down (longer than the
//! suspicion timeout): the four survivors drop the cut-off nodes from their ring, and
//! the two cut-off nodes drop the survivors from theirs. No member may be declared down
//! by its own side: a survivor keeps its incarnation throughout (a member declared down
//! renews under a new one). After the heal every node must see all six members alive
//! and the original ring epoch again, and keep seeing them for longer than a suspicion
//! timeout. Each side then holds the other's identities as down, so the heal needs one
//! side to find out and renew: foca alone never tells a member it is held down.
//!
//! Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2. Where namespaces cannot
//! be made the test prints why and passes without running, unless
//! `CHORUS_REQUIRE_NETNS=1` is set, which turns that skip into a failure.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::netns::{Lab, command_in, run_bounded};

/// The hosts, by the suffix of their namespace and their node name.
const HOSTS: [(&str, &str); 6] = [
    ("a", "node-a"),
    ("b", "node-b"),
    ("c", "node-c"),
    ("d", "node-d"),
    ("e", "node-e"),
    ("f", "node-f"),
];

/// The hosts that are cut off together (indices into [`HOSTS`]).
const CUT: [usize; 2] = [4, 5];

const QUIC_PORT: u16 = 7400;
const GOSSIP_PORT: u16 = 7401;
const PARTITIONS: u16 = 64;

/// Gossip timings: a probe every 500 ms and a 200 ms direct-ack wait, as the loopback
/// cluster config uses; the suspicion timeout is the default (4 probe periods, 2 s).
const PROBE_PERIOD_MS: u64 = 500;
const PROBE_RTT_MS: u64 = 200;

/// How long the six nodes may take to find each other after they start.
const FORM_WITHIN: Duration = Duration::from_secs(15);
/// How long after the cut both sides may take to declare the other side down. The
/// suspicion timeout is 2 s; probing, Lifeguard's local-health slowdown on the isolated
/// side and a loaded machine account for the rest.
const DETECT_WITHIN: Duration = Duration::from_secs(15);
/// How long after the heal all views may take to agree again. By then each side holds
/// the other's identities as down, so a member must cross the cut (an announce to a
/// member believed down: every 5 s from each member, by default), be told it is held
/// down, renew under a new incarnation and be gossiped about.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// How long the healed views must then stay in agreement: longer than the suspicion
/// timeout plus a probe period, so a member that answers nobody's probes would be
/// declared down again within it.
const STABLE_FOR: Duration = Duration::from_secs(4);
/// The longest one `chorus` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two polls of the nodes' views.
const POLL_EVERY: Duration = Duration::from_millis(200);

#[test]
fn a_cut_off_pair_is_declared_down_by_the_others_only_and_rejoins_after_the_heal() {
    let suffixes = HOSTS.map(|(suffix, _)| suffix);
    let Some(lab) = Lab::create_or_skip(&suffixes, "the partition test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(lab, dir.path());
    let names: BTreeSet<String> = HOSTS.iter().map(|(_, n)| n.to_string()).collect();
    let cut: BTreeSet<String> = CUT.iter().map(|&i| HOSTS[i].1.to_string()).collect();
    let survivors: BTreeSet<String> = names.difference(&cut).cloned().collect();
    let is_cut = |i: usize| CUT.contains(&i);

    // 1. The cluster forms: every node sees six live members and the same ring.
    let started = Instant::now();
    let formed = cluster.wait_until("the six nodes to form a cluster", FORM_WITHIN, |views| {
        agreed_on(views, &names)
    });
    eprintln!("formed in {:?}", started.elapsed());
    let incarnations: Vec<u64> = cluster
        .views()
        .unwrap()
        .iter()
        .map(|v| v.incarnation)
        .collect();

    // 2. Cut two hosts off from the other four, in both directions. Neither side may
    // declare one of its own down: every poll checks that each node sees its own side
    // alive or suspect, never down.
    for &i in &CUT {
        cluster.lab.cut(i);
    }
    let cut_at = Instant::now();
    let mut same_side_downs = BTreeSet::new();
    let mut watch_sides = |views: &[View]| {
        for (i, view) in views.iter().enumerate() {
            let side = if is_cut(i) { &cut } else { &survivors };
            for down in view.in_state("down").intersection(side) {
                same_side_downs.insert(format!("{} holds {down} down", view.node));
            }
        }
    };
    let split = cluster.wait_until(
        "both sides to declare the other down",
        DETECT_WITHIN,
        |views| {
            watch_sides(views);
            let survivors_view = agreed_on(
                views
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !is_cut(*i))
                    .map(|(_, v)| v),
                &survivors,
            )
            .map_err(|e| format!("survivors: {e}"))?;
            let cut_view = agreed_on(
                views
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| is_cut(*i))
                    .map(|(_, v)| v),
                &cut,
            )
            .map_err(|e| format!("cut-off nodes: {e}"))?;
            Ok((survivors_view, cut_view))
        },
    );
    eprintln!("partition detected after {:?}", cut_at.elapsed());
    let (survivors_epoch, cut_epoch) = split;
    assert_ne!(
        survivors_epoch, formed,
        "the survivors' ring kept the cut-off nodes"
    );
    assert_ne!(cut_epoch, formed, "the cut-off ring kept the others");
    assert_ne!(survivors_epoch, cut_epoch);

    // 3. Heal: every view converges on six live members and the original ring, whose
    // epoch depends only on the member set.
    for &i in &CUT {
        cluster.lab.heal(i);
    }
    let healed_at = Instant::now();
    let epoch = cluster.wait_until(
        "the views to converge after the heal",
        CONVERGE_WITHIN,
        |views| {
            watch_sides(views);
            agreed_on(views, &names)
        },
    );
    eprintln!("converged {:?} after the heal", healed_at.elapsed());
    assert_eq!(
        epoch, formed,
        "the same member set must give the same ring epoch"
    );
    cluster.hold(
        "the healed views to stay in agreement",
        STABLE_FOR,
        |views| {
            let now = agreed_on(views, &names)?;
            if now != epoch {
                return Err(format!("the ring moved to epoch {now:x}"));
            }
            Ok(())
        },
    );
    assert!(
        same_side_downs.is_empty(),
        "members declared down by their own side: {same_side_downs:?}"
    );
    // No survivor was declared down (and renewed): only the cut-off side renews.
    let now: Vec<u64> = cluster
        .views()
        .unwrap()
        .iter()
        .map(|v| v.incarnation)
        .collect();
    for (i, (before, after)) in incarnations.iter().zip(&now).enumerate() {
        if !is_cut(i) {
            assert_eq!(before, after, "{} renewed", HOSTS[i].1);
        }
    }
}

/// Checks that every view sees exactly `members` alive (and no other member as anything
/// but down) and that all rings hold exactly `members` at one epoch; returns the epoch.
fn agreed_on<'a>(
    views: impl IntoIterator<Item = &'a View>,
    members: &BTreeSet<String>,
) -> Result<u64, String> {
    let mut epochs = BTreeSet::new();
    for view in views {
        let alive = view.in_state("alive");
        if &alive != members {
            return Err(format!("{} sees alive {alive:?}", view.node));
        }
        let others: BTreeMap<_, _> = view
            .members
            .iter()
            .filter(|(id, state)| !members.contains(*id) && state.as_str() != "down")
            .collect();
        if !others.is_empty() {
            return Err(format!("{} still sees {others:?}", view.node));
        }
        if &view.ring_nodes != members {
            return Err(format!("{}'s ring holds {:?}", view.node, view.ring_nodes));
        }
        epochs.insert(view.epoch);
    }
    match epochs.len() {
        1 => Ok(epochs.into_iter().next().unwrap()),
        _ => Err(format!("ring epochs differ: {epochs:x?}")),
    }
}

/// One node's view, read through `chorus ctl`.
#[derive(Debug)]
struct View {
    node: String,
    /// Member id → `alive`, `suspect` or `down`.
    members: BTreeMap<String, String>,
    epoch: u64,
    ring_nodes: BTreeSet<String>,
    /// The incarnation this node runs under (it changes when the node renews).
    incarnation: u64,
}

impl View {
    fn in_state(&self, state: &str) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|(_, s)| s.as_str() == state)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// The agents and the network they run in. Fields drop in order: the agents are
/// killed before their namespaces are deleted.
struct Cluster {
    agents: Vec<Agent>,
    lab: Lab,
}

impl Cluster {
    /// Makes the certificates and configs under `dir` and starts one agent per host.
    fn start(lab: Lab, dir: &Path) -> Cluster {
        let certs = dir.join("certs");
        let certs_arg = certs.to_str().unwrap();
        run_chorus(&["certs", "init", "--dir", certs_arg]);
        for (host, (_, name)) in lab.hosts().iter().zip(HOSTS) {
            let ip = host.ip.to_string();
            run_chorus(&["certs", "node", name, "--ip", &ip, "--dir", certs_arg]);
        }
        let seeds: Vec<String> = lab
            .hosts()
            .iter()
            .map(|h| format!("\"{}:{GOSSIP_PORT}\"", h.ip))
            .collect();
        let mut cluster = Cluster {
            agents: Vec::new(),
            lab,
        };
        for (i, (_, name)) in HOSTS.iter().enumerate() {
            let host = &cluster.lab.hosts()[i];
            let data_dir = dir.join(name);
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                agent_config(name, host.ip, &data_dir, &certs, &seeds.join(", ")),
            )
            .unwrap();
            let log = dir.join(format!("{name}.log"));
            let agent = Agent::spawn(name, &host.netns, &config, &log);
            cluster.agents.push(agent);
        }
        cluster
    }

    /// Polls every node's view until `check` accepts them all, and returns what it
    /// returned; panics with the last objection once `within` has passed.
    fn wait_until<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&[View]) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            for agent in &mut self.agents {
                agent.assert_running();
            }
            let last = match self.views() {
                Ok(views) => match check(&views) {
                    Ok(value) => return value,
                    Err(objection) => objection,
                },
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                panic!("timed out after {within:?} waiting for {what}: {last}");
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Polls every node's view for `period` and panics on the first that `check`
    /// rejects.
    fn hold(
        &mut self,
        what: &str,
        period: Duration,
        check: impl Fn(&[View]) -> Result<(), String>,
    ) {
        let started = Instant::now();
        while started.elapsed() < period {
            for agent in &mut self.agents {
                agent.assert_running();
            }
            let verdict = self.views().and_then(|views| check(&views));
            if let Err(objection) = verdict {
                panic!("{what}: broken after {:?}: {objection}", started.elapsed());
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    fn views(&self) -> Result<Vec<View>, String> {
        self.agents.iter().map(Agent::view).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for agent in &self.agents {
                agent.print_log_tail();
            }
        }
    }
}

fn agent_config(name: &str, ip: Ipv4Addr, data_dir: &Path, certs: &Path, seeds: &str) -> String {
    let certs = certs.display();
    format!(
        r#"node_id = "{name}"
data_dir = "{data_dir}"
listen = "{ip}:{QUIC_PORT}"
partitions = {PARTITIONS}

[tls]
ca_cert = "{certs}/ca.pem"
cert = "{certs}/{name}.pem"
key = "{certs}/{name}.key"

[metrics]
listen = "127.0.0.1:0"

[log]
level = "info"

[cluster]
gossip_listen = "{ip}:{GOSSIP_PORT}"
seeds = [{seeds}]
key_file = "{certs}/cluster.key"

[cluster.gossip]
expected_cluster_size = {size}
probe_period_ms = {PROBE_PERIOD_MS}
probe_rtt_ms = {PROBE_RTT_MS}
"#,
        data_dir = data_dir.display(),
        size = HOSTS.len(),
    )
}

/// One `chorus agent` running inside a host's namespace.
struct Agent {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Agent {
    fn spawn(name: &str, netns: &str, config: &Path, log: &Path) -> Agent {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let mut command = command_in(netns, env!("CARGO_BIN_EXE_chorus"));
        command
            .args(["agent", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        without_chorus_env(&mut command);
        Agent {
            name: name.to_string(),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            child: command.spawn().unwrap(),
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited early with {status}", self.name);
        }
    }

    /// This node's members and ring, or why they could not be read.
    fn view(&self) -> Result<View, String> {
        let members = self.ctl("members")?;
        let ring = self.ctl("ring")?;
        // A node also lists the earlier runs (incarnations) of a member it has seen
        // renew, as down; a member's state is that of its newest run, and a node's own
        // row is authoritative for itself.
        let mut newest: BTreeMap<String, (bool, u64, String)> = BTreeMap::new();
        let mut incarnation = 0;
        for m in members["members"].as_array().ok_or("members: no list")? {
            let id = m["id"].as_str().ok_or("members: no id")?.to_string();
            let row = (
                m["is_self"].as_bool().unwrap_or(false),
                m["incarnation"].as_u64().unwrap_or(0),
                m["state"].as_str().unwrap_or_default().to_string(),
            );
            if row.0 {
                incarnation = row.1;
            }
            let entry = newest.entry(id).or_insert_with(|| row.clone());
            if (row.0, row.1) > (entry.0, entry.1) {
                *entry = row;
            }
        }
        let members = newest
            .into_iter()
            .map(|(id, (_, _, state))| (id, state))
            .collect();
        let epoch = ring["epoch"].as_u64().ok_or("ring: no epoch")?;
        let ring_nodes = ring["nodes"]
            .as_array()
            .ok_or("ring: no nodes")?
            .iter()
            .filter(|n| n["partitions"].as_u64().unwrap_or(0) > 0)
            .map(|n| n["node"].as_str().unwrap_or_default().to_string())
            .collect();
        Ok(View {
            node: self.name.clone(),
            members,
            epoch,
            ring_nodes,
            incarnation,
        })
    }

    /// `chorus ctl --config <config> <command> --json`, run from outside the namespace;
    /// the `result` object, or why there is none.
    fn ctl(&self, command: &str) -> Result<Value, String> {
        let mut ctl = Command::new(env!("CARGO_BIN_EXE_chorus"));
        ctl.arg("ctl")
            .arg("--config")
            .arg(&self.config)
            .args([command, "--json"]);
        without_chorus_env(&mut ctl);
        let out = run_bounded(ctl, COMMAND_TIMEOUT)
            .map_err(|e| format!("{}: ctl {command}: {e}", self.name))?;
        let reply: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{}: ctl {command}: not JSON ({e}): {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        if reply["ok"] != true {
            return Err(format!("{}: ctl {command}: {reply}", self.name));
        }
        Ok(reply["result"].clone())
    }

    fn print_log_tail(&self) {
        const TAIL_LINES: usize = 40;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        eprintln!("--- last lines of {}'s log ---", self.name);
        for line in tail {
            eprintln!("{line}");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `chorus ARGS` to completion and asserts it succeeded.
fn run_chorus(args: &[&str]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command.args(args);
    without_chorus_env(&mut command);
    let out = run_bounded(command, COMMAND_TIMEOUT).unwrap();
    assert!(out.status.success(), "chorus {}: {out:?}", args.join(" "));
}

/// Keeps the test's own `CHORUS_*` environment from overriding the configs it writes.
fn without_chorus_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CHORUS_") {
            command.env_remove(key);
        }
    }
}
