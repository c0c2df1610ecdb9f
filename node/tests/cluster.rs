//! A three-node cluster as three `chorus agent` processes on loopback, with certificates
//! from `chorus certs`: members find each other, a request sent to a node that does not
//! own its user is forwarded to the owner, a SIGKILLed owner's users get `Unavailable`
//! quickly while other users are served, the survivors declare it down within the
//! detection bound and the ring moves, and its restart rejoins under a new incarnation.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientConfig, ClientError, Credentials};
use chorus_protocol::{ErrorCode, Item, Kind, Role};
use serde_json::Value;
use support::{chorus_bin, free_udp_port};

const PROBE_MS: u64 = 300;

struct Node {
    name: String,
    config: PathBuf,
    data: PathBuf,
    addr: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::File::create(self.data.with_extension("log")).unwrap();
        let child = Command::new(chorus_bin())
            .args(["agent", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn ctl(&self, args: &[&str]) -> Value {
        let out = Command::new(chorus_bin())
            .args(["ctl", "--json", "--config"])
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// `(state, incarnation)` of `member` as this node sees it.
    fn sees(&self, member: &str) -> Option<(String, u64)> {
        let reply = self.ctl(&["members"]);
        reply["result"]["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == member)
            .map(|m| {
                (
                    m["state"].as_str().unwrap_or("").to_string(),
                    m["incarnation"].as_u64().unwrap_or(0),
                )
            })
    }

    fn ring(&self) -> Value {
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

fn cluster(dir: &Path) -> Vec<Node> {
    let certs_dir = dir.join("certs");
    certs(&certs_dir, &["init"]);
    let gossip: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    (0..3)
        .map(|i| {
            let name = format!("node-{}", i + 1);
            certs(&certs_dir, &["node", &name, "--ip", "127.0.0.1"]);
            let data = dir.join(&name);
            let addr = format!("127.0.0.1:{}", free_udp_port());
            let config = dir.join(format!("{name}.toml"));
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
gossip_listen = "127.0.0.1:{port}"
seeds = ["127.0.0.1:{seed}"]
key_file = "{certs}/cluster.key"
forward_timeout_ms = 1000
[cluster.gossip]
expected_cluster_size = 3
probe_period_ms = {PROBE_MS}
probe_rtt_ms = 100
"#,
                    data = data.display(),
                    certs = certs_dir.display(),
                    port = gossip[i],
                    seed = gossip[0],
                ),
            )
            .unwrap();
            Node {
                name,
                config,
                data,
                addr,
                child: None,
            }
        })
        .collect()
}

async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// A client of `node` that sends everything to it (no ring routing), so that what it
/// does not own is forwarded.
async fn plain_client(node: &Node, dir: &Path) -> Client {
    let key = std::fs::read_to_string(node.data.join("admin.key")).unwrap();
    let credentials = Credentials::from_ca_file(dir.join("certs/ca.pem"), key.trim())
        .unwrap()
        .with_server_name(node.name.clone());
    let config = ClientConfig {
        routing: None,
        ..ClientConfig::default()
    };
    Client::connect(&[node.addr.parse().unwrap()], credentials, config)
        .await
        .unwrap()
}

/// A user that `owner` owns, per `ring` (`ctl ring --user` asked of node `asker`).
fn user_owned_by(asker: &Node, owner: &str, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|u| asker.ctl(&["ring", "--user", u])["result"]["user"]["owner"] == owner)
        .expect("some user lands on every node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_owner_down_detection_ring_move_and_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    until(
        Duration::from_secs(30),
        "three alive members everywhere",
        || {
            nodes.iter().all(|n| {
                nodes
                    .iter()
                    .all(|m| n.sees(&m.name).is_some_and(|(s, _)| s == "alive"))
            })
        },
    )
    .await;
    let epoch = nodes[0].ring()["epoch"].as_u64().unwrap();
    until(Duration::from_secs(10), "one ring everywhere", || {
        nodes
            .iter()
            .all(|n| n.ring()["epoch"].as_u64() == Some(epoch))
    })
    .await;

    // A submit sent to node-1 for a user node-3 owns is stored by node-3.
    let client = plain_client(&nodes[0], dir.path()).await;
    let far_user = user_owned_by(&nodes[0], "node-3", "far");
    let near_user = user_owned_by(&nodes[0], "node-1", "near");
    let far = Item::new(far_user.clone(), Kind::Text);
    let receipt = tokio::time::timeout(Duration::from_secs(10), client.submit(far.clone()))
        .await
        .expect("forwarded in time")
        .unwrap();
    assert_eq!(receipt.owner.0, "node-3");
    let page = client.list_by_user(&far_user, None, 10).await.unwrap();
    assert_eq!(page.items.len(), 1, "listed at the owner through node-1");
    let found = client
        .get(far.id)
        .await
        .unwrap()
        .expect("read back through node-1");
    assert_eq!(found.item.user_id, far_user);

    // API keys are the cluster's: each member's first admin key reaches the others
    // over the links, and a key created on node-1 is pushed to node-2 (whose listing
    // reads its own copy only).
    let on_node_2 = plain_client(&nodes[1], dir.path()).await;
    let listed = |keys: &[chorus_protocol::ApiKeyInfo], name: &str| {
        keys.iter().filter(|k| k.name == name).count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let keys = on_node_2.list_api_keys().await.unwrap();
        if listed(&keys, "bootstrap-admin") == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "node-2 holds {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.create_api_key(Role::Read, "pushed").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(&on_node_2.list_api_keys().await.unwrap(), "pushed") == 0 {
        assert!(
            Instant::now() < deadline,
            "the key created on node-1 never reached node-2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    on_node_2.close().await;

    // node-3 dies: its users get Unavailable quickly, node-1's users are unaffected.
    let incarnation = nodes[0].sees("node-3").unwrap().1;
    nodes[2].kill();
    let killed = Instant::now();
    let started = Instant::now();
    let refused = client.submit(Item::new(far_user.clone(), Kind::Text)).await;
    let took = started.elapsed();
    match refused {
        // Refused before the ring moved; or, if detection was already done, stored by
        // the new owner: never a hang, never a wrong receipt.
        Err(ClientError::Server(ErrorCode::Unavailable { .. })) => {}
        Ok(receipt) => assert_ne!(receipt.owner.0, "node-3"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    let near = client
        .submit(Item::new(near_user, Kind::Text))
        .await
        .unwrap();
    assert_eq!(near.owner.0, "node-1");

    // Both survivors declare it down within the detection bound; the ring moves.
    let settings = chorus_node::cluster::membership::GossipSettings {
        expected_cluster_size: 3,
        probe_period_ms: PROBE_MS,
        probe_rtt_ms: 100,
        ..Default::default()
    };
    let bound = settings.suspect_to_down_max() + settings.probe_period() * 6;
    until(bound, "node-3 down on both survivors", || {
        nodes[..2]
            .iter()
            .all(|n| n.sees("node-3").is_some_and(|(s, _)| s == "down"))
    })
    .await;
    eprintln!(
        "node-3 declared down everywhere {:?} after SIGKILL",
        killed.elapsed()
    );
    let moved = nodes[0].ring();
    assert_ne!(moved["epoch"].as_u64(), Some(epoch));
    assert_eq!(moved["nodes"].as_array().unwrap().len(), 2);
    assert!(moved["moved_last_change"].as_u64().unwrap() > 0);
    // node-3's users are served by their new owner now.
    let receipt = client
        .submit(Item::new(far_user.clone(), Kind::Text))
        .await
        .unwrap();
    assert_ne!(receipt.owner.0, "node-3");
    // The item stored on node-3 cannot be read while node-3 is down: not "not found".
    match client.get(far.id).await {
        Err(ClientError::Server(ErrorCode::Unavailable { .. })) => {}
        other => panic!("a read that may miss a down node must say so, got {other:?}"),
    }

    // node-3 restarts: rejoins under a new incarnation; the ring is whole again.
    nodes[2].start();
    until(
        Duration::from_secs(30),
        "node-3 alive again everywhere",
        || {
            nodes[..2].iter().all(|n| {
                n.sees("node-3")
                    .is_some_and(|(s, run)| s == "alive" && run > incarnation)
            })
        },
    )
    .await;
    until(Duration::from_secs(10), "the first ring again", || {
        nodes
            .iter()
            .all(|n| n.ring()["epoch"].as_u64() == Some(epoch))
    })
    .await;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Some(found)) = client.get(far.id).await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the item written before the crash is readable again");
    assert_eq!(found.item.id, far.id);
    client.close().await;
}
