//! A cluster of `chorus agent` processes, on loopback or each in its own network
//! namespace, with certificates from `chorus certs`, and the helpers the process-level
//! cluster tests share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientConfig, ClientError, Credentials};
use serde_json::Value;

use super::netns::{Host, command_in};
use super::{chorus_bin, ctl_json, free_udp_port};

pub const PROBE_MS: u64 = 300;

pub struct Node {
    pub name: String,
    pub config: PathBuf,
    pub data: PathBuf,
    pub addr: String,
    /// The network namespace the agent runs in, if not the test's own.
    netns: Option<String>,
    child: Option<Child>,
}

impl Node {
    pub fn start(&mut self) {
        let log = std::fs::File::create(self.data.with_extension("log")).unwrap();
        let mut command = match &self.netns {
            Some(netns) => command_in(netns, chorus_bin()),
            None => Command::new(chorus_bin()),
        };
        let child = command
            .args(["agent", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a service manager's stop); the agent shuts down gracefully.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-s", "TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill -s TERM failed");
        }
    }

    /// Whether the process has exited (and with what), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn ctl(&self, args: &[&str]) -> Value {
        ctl_json(&self.config, args)
    }

    /// `(state, incarnation)` of `member` as this node sees it: of its newest run, as a
    /// node also lists the earlier runs of a member it saw renew (as down), and its own
    /// row is authoritative for itself.
    pub fn sees(&self, member: &str) -> Option<(String, u64)> {
        let reply = self.ctl(&["members"]);
        reply["result"]["members"]
            .as_array()?
            .iter()
            .filter(|m| m["id"] == member)
            .max_by_key(|m| {
                (
                    m["is_self"].as_bool().unwrap_or(false),
                    m["incarnation"].as_u64().unwrap_or(0),
                )
            })
            .map(|m| {
                (
                    m["state"].as_str().unwrap_or("").to_string(),
                    m["incarnation"].as_u64().unwrap_or(0),
                )
            })
    }

    pub fn ring(&self) -> Value {
        self.ctl(&["ring"])["result"].clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn certs(dir: &Path, args: &[&str]) {
    let status = Command::new(chorus_bin())
        .arg("certs")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "chorus certs {args:?}");
}

pub fn cluster(dir: &Path) -> Vec<Node> {
    cluster_with(dir, "")
}

/// [`cluster`] with `extra` lines in every node's `[cluster]` section.
pub fn cluster_with(dir: &Path, extra: &str) -> Vec<Node> {
    cluster_of(dir, 3, extra)
}

/// `count` nodes, `extra` lines in every node's `[cluster]` section.
pub fn cluster_of(dir: &Path, count: usize, extra: &str) -> Vec<Node> {
    let certs_dir = dir.join("certs");
    certs(&certs_dir, &["init"]);
    let gossip: Vec<u16> = (0..count).map(|_| free_udp_port()).collect();
    let seeds = [format!("127.0.0.1:{}", gossip[0])];
    (0..count)
        .map(|i| {
            let place = Placement {
                ip: "127.0.0.1".into(),
                port: free_udp_port(),
                gossip_port: gossip[i],
                netns: None,
            };
            node(dir, i, place, &seeds, extra)
        })
        .collect()
}

/// One node in each of `hosts`' namespaces (fixed ports: each host has its own), every
/// node seeded with all the others.
pub fn cluster_in(dir: &Path, hosts: &[&Host]) -> Vec<Node> {
    certs(&dir.join("certs"), &["init"]);
    let seeds: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}:{NETNS_GOSSIP_PORT}", h.ip))
        .collect();
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let place = Placement {
                ip: host.ip.to_string(),
                port: NETNS_PORT,
                gossip_port: NETNS_GOSSIP_PORT,
                netns: Some(host.netns.clone()),
            };
            node(dir, i, place, &seeds, "")
        })
        .collect()
}

/// The client port of a node in its own namespace.
const NETNS_PORT: u16 = 7400;
/// The gossip port of a node in its own namespace.
const NETNS_GOSSIP_PORT: u16 = 7401;

/// Where a node listens.
struct Placement {
    ip: String,
    port: u16,
    gossip_port: u16,
    netns: Option<String>,
}

/// Node `i` (`node-<i+1>`): its certificate under `dir/certs`, its config in `dir`.
fn node(dir: &Path, i: usize, place: Placement, seeds: &[String], extra: &str) -> Node {
    let certs_dir = dir.join("certs");
    let name = format!("node-{}", i + 1);
    certs(&certs_dir, &["node", &name, "--ip", &place.ip]);
    let data = dir.join(&name);
    let addr = format!("{}:{}", place.ip, place.port);
    let config = dir.join(format!("{name}.toml"));
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    std::fs::write(
        &config,
        format!(
            r#"node_id = "{name}"
data_dir = "{data}"
listen = "{addr}"
partitions = 128
[tls]
ca_cert = "{certs}/ca.pem"
cert = "{certs}/{name}.pem"
key = "{certs}/{name}.key"
[metrics]
listen = "127.0.0.1:0"
[cluster]
gossip_listen = "{ip}:{port}"
seeds = [{seeds}]
key_file = "{certs}/cluster.key"
forward_timeout_ms = 1000
{extra}
[cluster.gossip]
expected_cluster_size = 3
probe_period_ms = {PROBE_MS}
probe_rtt_ms = 100
"#,
            data = data.display(),
            certs = certs_dir.display(),
            ip = place.ip,
            port = place.gossip_port,
            seeds = seeds.join(", "),
        ),
    )
    .unwrap();
    Node {
        name,
        config,
        data,
        addr,
        netns: place.netns,
        child: None,
    }
}

pub async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Submits `item` until it is not refused as `Unavailable` (a just-formed cluster's
/// leaders take their partitions over first), for at most 20 s.
pub async fn submit_once_led(
    client: &Client,
    item: chorus_protocol::Item,
) -> Result<chorus_protocol::Receipt, ClientError> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match client.submit(item.clone()).await {
                Err(ClientError::Server(chorus_protocol::ErrorCode::Unavailable { .. })) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => return other,
            }
        }
    })
    .await
    .expect("the partition's leader took over in time")
}

/// A client of `node` that sends everything to it (no ring routing), so that what it
/// does not own is forwarded.
pub async fn plain_client(node: &Node, dir: &Path) -> Client {
    try_plain_client(node, dir).await.unwrap()
}

/// [`plain_client`], or why it could not connect.
pub async fn try_plain_client(node: &Node, dir: &Path) -> Result<Client, ClientError> {
    let config = ClientConfig {
        routing: None,
        ..ClientConfig::default()
    };
    client_of(node, dir, config).await
}

/// A client of `node` (its admin key, the cluster's CA) with `config`.
pub async fn client_of(
    node: &Node,
    dir: &Path,
    config: ClientConfig,
) -> Result<Client, ClientError> {
    let key = std::fs::read_to_string(node.data.join("admin.key")).unwrap();
    let credentials = Credentials::from_ca_file(dir.join("certs/ca.pem"), key.trim())
        .unwrap()
        .with_server_name(node.name.clone());
    Client::connect(&[node.addr.parse().unwrap()], credentials, config).await
}

/// `partition`'s `(records, digest)` on `node`, per `ctl replicas --digest`.
pub fn digest_of(node: &Node, partition: u64) -> Option<(u64, String)> {
    let reply = node.ctl(&["replicas", "--digest"]);
    let row = reply["result"]["partitions"]
        .as_array()?
        .iter()
        .find(|row| row["partition"].as_u64() == Some(partition))?
        .clone();
    Some((
        row["records"].as_u64()?,
        row["digest"].as_str()?.to_string(),
    ))
}

/// A user that `owner` owns, per `ring` (`ctl ring --user` asked of node `asker`).
pub fn user_owned_by(asker: &Node, owner: &str, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|u| asker.ctl(&["ring", "--user", u])["result"]["user"]["owner"] == owner)
        .expect("some user lands on every node")
}

/// Waits until every node sees every other alive and all place the same ring; returns
/// the ring's epoch.
pub async fn formed(nodes: &[Node]) -> u64 {
    until(
        Duration::from_secs(30),
        "every member alive everywhere",
        || {
            nodes.iter().all(|n| {
                nodes
                    .iter()
                    .all(|m| n.sees(&m.name).is_some_and(|(s, _)| s == "alive"))
            })
        },
    )
    .await;
    until(Duration::from_secs(30), "every member warm", || {
        nodes.iter().all(|n| {
            let status = n.ctl(&["status"]);
            status["result"]["replication"]["warming"] != true
        })
    })
    .await;
    let mut epoch = 0;
    until(Duration::from_secs(10), "one ring everywhere", || {
        epoch = nodes[0].ring()["epoch"].as_u64().unwrap_or(0);
        nodes
            .iter()
            .all(|n| n.ring()["epoch"].as_u64() == Some(epoch))
    })
    .await;
    epoch
}
