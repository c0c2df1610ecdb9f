//! Gossip under attack, over real sockets on loopback: packets a test sends to a node's
//! gossip port from a plain UDP socket. A packet sealed under the cluster's key is
//! answered once; the same bytes again (a replay), a forged copy and a packet sealed
//! too long ago are dropped and counted. And the keyring rotates across three `chorus
//! agent` processes through `chorus ctl gossip-keys`, without a restart, audited, and
//! kept by a node that restarts afterwards.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_node::cluster::membership::codec::BincodeCodec;
use chorus_node::cluster::membership::envelope;
use chorus_node::cluster::membership::{
    ClusterKey, GossipSettings, Keyring, MemberIdentity, MembershipStats, Sealer,
};
use chorus_node::cluster::runtime::{ClusterRuntime, ClusterSettings};
use chorus_node::cluster::state::ClusterState;
use chorus_protocol::NodeId;
use support::cluster::{Node, cluster, until};

const KEY: ClusterKey = ClusterKey([7; 32]);
/// How long a test waits for something that takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long the agents get to form, rotate and rejoin.
const PATIENCE_PROCESSES: Duration = Duration::from_secs(30);

async fn node(name: &str) -> ClusterRuntime {
    let gossip_addr: SocketAddr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let state = ClusterState::new(NodeId(name.into()), "127.0.0.1:1".parse().unwrap(), 16).unwrap();
    let settings = ClusterSettings {
        gossip_listen: gossip_addr,
        gossip_addr,
        seeds: Vec::new(),
        key: KEY,
        keyring_file: None,
        gossip: GossipSettings {
            expected_cluster_size: 3,
            ..GossipSettings::default()
        },
    };
    ClusterRuntime::start(settings, state, None).await.unwrap()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A join request from `name`, whose gossip address is `socket`'s, sealed under the
/// cluster's key as sent at `sent_ms`: the node answers it with a welcome to `socket`.
fn join(sealer: &mut Sealer, name: &str, socket: &UdpSocket, sent_ms: u64) -> Vec<u8> {
    let me = MemberIdentity::new(
        NodeId(name.into()),
        socket.local_addr().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
        1,
    );
    let body = envelope::encode_join(&me, &mut BincodeCodec::new()).unwrap();
    sealer.seal(&Keyring::from_cluster_key(&KEY), sent_ms, &[&body])
}

/// The next datagram on `socket` (blocking, bounded).
fn answer(socket: &UdpSocket) -> Vec<u8> {
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = socket.recv_from(&mut buf).expect("an answer");
    buf[..len].to_vec()
}

fn nothing_pending(socket: &UdpSocket) -> bool {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let none =
        matches!(socket.recv_from(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    socket.set_nonblocking(false).unwrap();
    none
}

async fn stats_until(
    node: &ClusterRuntime,
    what: &str,
    check: impl Fn(&MembershipStats) -> bool,
) -> MembershipStats {
    let started = Instant::now();
    loop {
        let stats = node.members().stats;
        if check(&stats) {
            return stats;
        }
        assert!(started.elapsed() < PATIENCE, "{what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_a_forged_and_a_stale_gossip_packet_are_dropped_and_counted() {
    let node = node("node-a").await;
    let to = node.gossip_addr();
    let first = UdpSocket::bind("127.0.0.1:0").unwrap();
    let second = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sealer = Sealer::new(0x5eed);

    // A genuine join is answered.
    let packet = join(&mut sealer, "probe-1", &first, unix_ms());
    first.send_to(&packet, to).unwrap();
    answer(&first);

    // The same bytes again, a forged copy (one bit of the ciphertext flipped) and a
    // genuine packet sealed two minutes ago; then a genuine join from another address.
    first.send_to(&packet, to).unwrap();
    let mut forged = packet.clone();
    let last = forged.len() - 20;
    forged[last] ^= 0x01;
    first.send_to(&forged, to).unwrap();
    let stale = join(&mut sealer, "probe-1", &first, unix_ms() - 120_000);
    first.send_to(&stale, to).unwrap();
    let fresh = join(&mut sealer, "probe-2", &second, unix_ms());
    second.send_to(&fresh, to).unwrap();
    // The node handles datagrams in order: once the last is answered, the three before
    // it were handled, and none of them was answered.
    answer(&second);
    assert!(
        nothing_pending(&first),
        "a replayed, forged or stale join was answered"
    );
    let stats = stats_until(&node, "the drops counted", |s| {
        s.replayed_dropped >= 1 && s.bad_tag_dropped >= 1 && s.stale_dropped >= 1
    })
    .await;
    assert_eq!(
        (
            stats.replayed_dropped,
            stats.bad_tag_dropped,
            stats.stale_dropped
        ),
        (1, 1, 1),
        "{stats:?}"
    );
    node.abort();
}

// ---- Rotation across agent processes -----------------------------------------------

/// Live members (itself included) as `node` sees them.
fn alive(node: &Node) -> usize {
    node.ctl(&["members"])["result"]["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count())
}

/// `(id, primary)` of each gossip key of `node`.
fn keys(node: &Node) -> Vec<(String, bool)> {
    node.ctl(&["gossip-keys", "list"])["result"]["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| {
                    (
                        k["id"].as_str().unwrap_or_default().to_string(),
                        k["primary"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_keys_rotate_across_members_without_a_restart_and_survive_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    until(PATIENCE_PROCESSES, "three alive everywhere", || {
        nodes.iter().all(|n| alive(n) == 3)
    })
    .await;
    let old = keys(&nodes[0]);
    assert_eq!(old.len(), 1, "{old:?}");
    let old_id = old[0].0.clone();
    assert!(
        nodes.iter().all(|n| keys(n) == old),
        "one initial key everywhere"
    );

    // Serf's rotation: install everywhere, use everywhere, remove everywhere.
    let new_key = "42".repeat(32);
    for node in &nodes {
        let reply = node.ctl(&["gossip-keys", "install", &new_key]);
        assert_eq!(reply["ok"], true, "{reply}");
        assert!(reply["result"]["audit_seq"].is_u64(), "{reply}");
        assert!(
            !reply.to_string().contains(&new_key),
            "the key is never echoed: {reply}"
        );
    }
    let new_id = keys(&nodes[0])
        .into_iter()
        .find(|(id, _)| *id != old_id)
        .unwrap()
        .0;
    for node in &nodes {
        let reply = node.ctl(&["gossip-keys", "use", &new_id]);
        assert_eq!(reply["ok"], true, "{reply}");
    }
    // Removing the primary is refused, and changes nothing.
    let refused = nodes[0].ctl(&["gossip-keys", "remove", &new_id]);
    assert_eq!(refused["ok"], false, "{refused}");
    for node in &nodes {
        let reply = node.ctl(&["gossip-keys", "remove", &old_id]);
        assert_eq!(reply["ok"], true, "{reply}");
    }
    for node in &nodes {
        assert_eq!(keys(node), vec![(new_id.clone(), true)]);
    }
    // Gossip under the new key alone keeps everyone alive (probes every 300 ms).
    until(
        PATIENCE_PROCESSES,
        "three alive everywhere under the new key",
        || nodes.iter().all(|n| alive(n) == 3),
    )
    .await;

    // Every change is in the audit log, and the chain holds.
    let audit = nodes[0].ctl(&["audit-verify"]);
    assert_eq!(audit["result"]["intact"], true, "{audit}");

    // The keyring file is private, and a restarted node comes back with the new key
    // (the cluster key alone would no longer let it in).
    let file = nodes[2].data.join("gossip-keyring.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(&old_id),
        "the removed key is gone from the file"
    );
    nodes[2].kill();
    nodes[2].start();
    until(
        PATIENCE_PROCESSES,
        "the restarted node keeps the new key",
        || keys(&nodes[2]) == vec![(new_id.clone(), true)],
    )
    .await;
    until(
        PATIENCE_PROCESSES,
        "three alive everywhere after the restart",
        || nodes.iter().all(|n| alive(n) == 3),
    )
    .await;
}
