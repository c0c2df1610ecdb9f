//! A node started in-process owns every task it starts: after `Node::shutdown` returns,
//! nothing of it runs on the runtime, its address, control socket and data dir are
//! free, and a node started again on them serves what the first one acknowledged.

use std::path::Path;
use std::time::Duration;

use chorus_client::{Client, ClientConfig, Credentials};
use chorus_node::config::{NodeConfig, admin_key_path};
use chorus_node::node::Node;
use chorus_node::reload::ConfigSource;
use chorus_protocol::{Item, Kind};
use tokio_util::sync::CancellationToken;

fn config(dir: &Path, port: u16) -> NodeConfig {
    let toml = format!(
        r#"
node_id = "node-1"
data_dir = "{data}"
listen = "127.0.0.1:{port}"
partitions = 16
durability = "flush"
[metrics]
listen = "127.0.0.1:0"
"#,
        data = dir.join("data").display(),
    );
    NodeConfig::from_file_bytes(toml.as_bytes()).expect("a valid config")
}

async fn start(config: NodeConfig) -> Node {
    let log = chorus_node::logging::init(Default::default(), "warn");
    Node::start(
        config,
        ConfigSource::default(),
        log,
        CancellationToken::new(),
    )
    .await
    .expect("the node starts")
}

async fn connect(node: &Node, config: &NodeConfig) -> Client {
    let key = std::fs::read_to_string(admin_key_path(&config.data_dir)).unwrap();
    let credentials = Credentials::from_ca_file(config.tls_paths().ca_cert, key.trim())
        .unwrap()
        .with_server_name("node-1");
    let config = ClientConfig {
        routing: None,
        ..ClientConfig::default()
    };
    Client::connect(&[node.local_addr()], credentials, config)
        .await
        .expect("the client connects")
}

/// Tasks alive on this runtime.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Bound on the last task's end after a shutdown: ractor's factory (the validators)
/// leaves a 10 s ping timer behind it, which ends when it fires.
const LAST_TASK_BOUND: Duration = Duration::from_secs(15);

/// Waits until no more than `count` tasks are alive, up to [`LAST_TASK_BOUND`].
async fn tasks_fall_to(count: usize) {
    let started = std::time::Instant::now();
    while alive_tasks() > count {
        assert!(
            started.elapsed() < LAST_TASK_BOUND,
            "{} tasks alive {LAST_TASK_BOUND:?} after the shutdown, {count} before the start",
            alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_no_task_and_frees_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let before = alive_tasks();

    let first = config(dir.path(), 0);
    let node = start(first.clone()).await;
    let port = node.local_addr().port();
    let socket = first.control_socket();
    assert!(socket.exists(), "the control socket is bound");
    let client = connect(&node, &first).await;
    let item = Item::new("alice", Kind::Text);
    let receipt = client.submit(item.clone()).await.expect("acknowledged");
    client.close().await;
    drop(client);
    assert!(alive_tasks() > before, "a running node has tasks");

    node.shutdown().await.expect("a clean shutdown");
    tasks_fall_to(before).await;
    assert!(!socket.exists(), "the control socket is removed");

    // Same port, same data dir, same socket: all released.
    let again = config(dir.path(), port);
    let node = start(again.clone()).await;
    let client = connect(&node, &again).await;
    let stored = client.get(item.id).await.unwrap().expect("read back");
    assert_eq!(stored.receipt, receipt);
    client.close().await;
    drop(client);
    node.shutdown().await.expect("a clean shutdown");
    tasks_fall_to(before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_stops_what_it_had_brought_up() {
    let dir = tempfile::tempdir().unwrap();
    let before = alive_tasks();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The control socket is the last thing a start binds: under a path whose directory
    // is a file, it fails after the store, the endpoint and the metrics are up.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let mut bad = config(dir.path(), port);
    bad.control.socket = Some(blocker.join("chorus.sock"));
    let log = chorus_node::logging::init(Default::default(), "warn");
    let refused = Node::start(bad, ConfigSource::default(), log, CancellationToken::new())
        .await
        .expect_err("the control socket cannot be bound");
    assert!(
        format!("{refused:#}").contains("control socket"),
        "{refused:#}"
    );
    tasks_fall_to(before).await;

    // Its port and its data dir were given back: a start on them serves.
    let good = config(dir.path(), port);
    let node = start(good.clone()).await;
    let client = connect(&node, &good).await;
    client
        .submit(Item::new("bob", Kind::Text))
        .await
        .expect("acknowledged");
    client.close().await;
    drop(client);
    node.shutdown().await.expect("a clean shutdown");
    tasks_fall_to(before).await;
}
