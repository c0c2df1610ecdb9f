//! Three members' cluster layers (gossip over real UDP on loopback, the ring following
//! membership) in one test process: they find each other through one seed, a member
//! that stops without a word is declared down by the others within the detection bound
//! and the ring moves, and its restart rejoins under a new incarnation.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use chorus_node::cluster::membership::{ClusterKey, GossipSettings, MemberState};
use chorus_node::cluster::runtime::{ClusterRuntime, ClusterSettings};
use chorus_node::cluster::state::ClusterState;
use chorus_protocol::NodeId;

const PARTITIONS: u16 = 256;

fn free_udp_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn gossip() -> GossipSettings {
    GossipSettings {
        expected_cluster_size: 3,
        probe_period_ms: 200,
        probe_rtt_ms: 80,
        ..GossipSettings::default()
    }
}

async fn member(name: &str, gossip_addr: SocketAddr, seeds: Vec<SocketAddr>) -> ClusterRuntime {
    let quic: SocketAddr = format!("127.0.0.1:{}", 20_000 + gossip_addr.port() % 10_000)
        .parse()
        .unwrap();
    let state = ClusterState::new(NodeId(name.into()), quic, PARTITIONS).unwrap();
    let settings = ClusterSettings {
        gossip_listen: gossip_addr,
        gossip_addr,
        seeds,
        key: ClusterKey([7; 32]),
        keyring_file: None,
        gossip: gossip(),
    };
    ClusterRuntime::start(settings, state, None).await.unwrap()
}

/// Waits until `check` holds, up to `limit`; returns how long it took.
async fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn states(runtime: &ClusterRuntime) -> BTreeMap<String, (MemberState, u64)> {
    runtime
        .members()
        .members
        .iter()
        .map(|m| (m.identity.node().to_string(), (m.state, m.incarnation)))
        .collect()
}

fn ring_size(runtime: &ClusterRuntime) -> usize {
    runtime.state().ring().ring.members().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_detect_a_crash_move_the_ring_and_take_a_restart_back() {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_udp_addr()).collect();
    let seed = vec![addrs[0]];
    let a = member("node-a", addrs[0], Vec::new()).await;
    let b = member("node-b", addrs[1], seed.clone()).await;
    let c = member("node-c", addrs[2], seed.clone()).await;

    within(Duration::from_secs(10), "all three see three", || {
        [&a, &b, &c].iter().all(|m| ring_size(m) == 3)
    })
    .await;
    let epoch = a.state().ring().ring.epoch();
    assert!(
        [&b, &c]
            .iter()
            .all(|m| m.state().ring().ring.epoch() == epoch)
    );
    let incarnation = states(&a)["node-c"].1;

    // node-c stops answering: no leave, as a crash.
    c.abort();
    let settings = gossip();
    let bound = settings.suspect_to_down_max() + settings.probe_period() * 4;
    let detected = within(bound, "node-c declared down by both", || {
        [&a, &b]
            .iter()
            .all(|m| states(m)["node-c"].0 == MemberState::Down && ring_size(m) == 2)
    })
    .await;
    eprintln!("crash detected by every member in {detected:?} (bound {bound:?})");
    let after = a.state().ring();
    assert_ne!(after.ring.epoch(), epoch, "the ring moved");
    assert!(after.moved > 0);
    assert_eq!(b.state().ring().ring.epoch(), after.ring.epoch());

    // node-c restarts under the same name: a new incarnation, back in the ring.
    let c2 = member("node-c", addrs[2], seed).await;
    within(Duration::from_secs(10), "node-c back everywhere", || {
        [&a, &b, &c2].iter().all(|m| ring_size(m) == 3)
            && [&a, &b].iter().all(|m| {
                let (state, run) = states(m)["node-c"];
                state == MemberState::Alive && run > incarnation
            })
    })
    .await;
    assert_eq!(
        a.state().ring().ring.epoch(),
        epoch,
        "same members, same ring"
    );

    // A graceful leave is seen at once, without a suspicion.
    b.leave().await;
    let left = within(Duration::from_secs(3), "node-b seen gone", || {
        states(&a)["node-b"].0 == MemberState::Down && ring_size(&a) == 2
    })
    .await;
    eprintln!("graceful leave seen in {left:?}");
    a.abort();
    c2.abort();
}
