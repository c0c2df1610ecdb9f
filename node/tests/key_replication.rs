//! API keys replicated to every member: three members in this process, each a real
//! store and a real QUIC endpoint for clients, joined by an in-memory network in place of
//! the cluster links (ractor's process groups are process-global, so real links need a
//! process per node; `links.rs` covers the wire). Every forward still crosses the links'
//! encoders and bounded decoders, and the network counts the key lookups a hello makes,
//! so a test can prove a hello was decided without asking anyone.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_actors::{Durability, KeyStatus, NodeHandle, StoreConfig, store::key_hash};
use chorus_client::{Client, ClientConfig, ClientError, Credentials};
use chorus_node::cluster::key_sync;
use chorus_node::cluster::links::{
    decode_reply, decode_request, encode_reply, encode_request, execute,
};
use chorus_node::cluster::routing::{Forward, ForwardFuture, Forwarder};
use chorus_node::cluster::state::ClusterState;
use chorus_node::server::{Backend, EdgeSettings, ServerSettings, serve_with_edge};
use chorus_node::tls::{self, TlsPaths};
use chorus_protocol::{ErrorCode, FrameLimit, NodeId, Request, Role};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a revocation may take to reach a member whose link works: its push is
/// answered before the revoke is (at most `PUSH_WAIT`); the margin is for a slow CI.
const REVOCATION_BOUND: Duration = Duration::from_secs(3);

/// The members that are up, by id, and what the network carried.
#[derive(Default)]
struct Net {
    up: Mutex<HashMap<NodeId, NodeHandle>>,
    /// `Forward::Authenticate` requests delivered: the hello fallback's fan-out.
    key_lookups: AtomicUsize,
}

impl Net {
    fn node(&self, id: &NodeId) -> Option<NodeHandle> {
        self.up.lock().unwrap().get(id).cloned()
    }

    fn bring_up(&self, id: NodeId, node: NodeHandle) {
        self.up.lock().unwrap().insert(id, node);
    }

    fn take_down(&self, id: &NodeId) {
        self.up.lock().unwrap().remove(id);
    }
}

/// One member's view of the network: its links to every other member that is up.
struct MemLinks {
    me: NodeId,
    net: Arc<Net>,
}

impl Forwarder for MemLinks {
    fn forward<'a>(&'a self, to: &'a NodeId, request: Forward) -> ForwardFuture<'a> {
        Box::pin(async move {
            let unreachable = || ErrorCode::Unavailable {
                reason: format!("{to} is down"),
            };
            if self.net.node(&self.me).is_none() {
                return Err(unreachable());
            }
            let node = self.net.node(to).ok_or_else(unreachable)?;
            let (_, request) = decode_request(&encode_request(request, &[]))?;
            if matches!(request, Forward::Authenticate { .. }) {
                self.net.key_lookups.fetch_add(1, Ordering::SeqCst);
            }
            let reply = execute(&node, request).await;
            decode_reply(&encode_reply(reply)).expect("a reply decodes")
        })
    }

    fn peers(&self) -> Vec<NodeId> {
        let up = self.net.up.lock().unwrap();
        if !up.contains_key(&self.me) {
            return Vec::new();
        }
        up.keys().filter(|id| **id != self.me).cloned().collect()
    }
}

/// A running member: store, client endpoint, key replication.
struct Member {
    id: NodeId,
    addr: SocketAddr,
    ca_pem: Vec<u8>,
    node: NodeHandle,
    links: Arc<dyn Forwarder>,
    /// Never bumped: these tests replicate by pushes, explicit exchanges and the timer
    /// (links coming up are covered in `links.rs`).
    _link_ups: watch::Sender<u64>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Member {
    async fn start(net: &Arc<Net>, dir: &Path, name: &str, interval: Duration) -> Member {
        let id = NodeId(name.into());
        let paths = TlsPaths::dev(dir);
        tls::ensure_dev_certificates(&paths, &TlsPaths::dev_ca_key(dir), name, &[]).unwrap();
        let server_config = tls::client_protocol_server_config(
            tls::NodeCert::load(&paths).unwrap(),
            &tls::TransportLimits::default(),
        )
        .unwrap();
        let node = NodeHandle::start(StoreConfig {
            path: dir.join("store"),
            node: id.clone(),
            partitions: 16,
            durability: Durability::Flush,
            log: chorus_actors::store::LogConfig::default(),
        })
        .await
        .unwrap();
        let endpoint =
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let links: Arc<dyn Forwarder> = Arc::new(MemLinks {
            me: id.clone(),
            net: net.clone(),
        });
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_with_edge(
            endpoint,
            Backend {
                node: node.clone(),
                cluster: ClusterState::new(id.clone(), addr, 16).unwrap(),
                peers: Some(links.clone()),
                replication: None,
                functions: Default::default(),
                insights: Default::default(),
            },
            ServerSettings {
                frame_limit: FrameLimit::default(),
                max_in_flight_per_stream: 64,
                hello_timeout: Duration::from_secs(5),
                shutdown_grace: Duration::from_secs(2),
            },
            EdgeSettings::default(),
            None,
            stop.clone(),
        ));
        let (link_ups, link_ups_seen) = watch::channel(0);
        let sync = tokio::spawn(key_sync::run(
            node.clone(),
            links.clone(),
            link_ups_seen,
            interval,
            stop.clone(),
        ));
        Member {
            id,
            addr,
            ca_pem: std::fs::read(&paths.ca_cert).unwrap(),
            node,
            links,
            _link_ups: link_ups,
            stop,
            tasks: vec![server, sync],
        }
    }

    async fn client(&self, key: &str) -> Result<Client, ClientError> {
        Client::connect(
            &[self.addr],
            Credentials::new(self.ca_pem.clone(), key),
            ClientConfig::default(),
        )
        .await
    }

    async fn stop(self, net: &Net) {
        net.take_down(&self.id);
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
        self.node.shutdown().await.unwrap();
    }
}

/// Three members a, b, c, all up; a holds the first admin key.
struct Cluster {
    net: Arc<Net>,
    dirs: Vec<tempfile::TempDir>,
    members: Vec<Option<Member>>,
    admin: String,
}

impl Cluster {
    async fn start(interval: Duration) -> Cluster {
        let net = Arc::new(Net::default());
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut members = Vec::new();
        for (dir, name) in dirs.iter().zip(["a", "b", "c"]) {
            let member = Member::start(&net, dir.path(), name, interval).await;
            members.push(member);
        }
        let admin = members[0].node.ensure_admin_key().await.unwrap().unwrap();
        for member in &members {
            net.bring_up(member.id.clone(), member.node.clone());
        }
        // The admin key reaches b and c by one anti-entropy exchange each.
        let a = &members[0];
        for other in &members[1..] {
            let learned = key_sync::exchange(&a.node, &*a.links, &other.id)
                .await
                .unwrap();
            assert_eq!(learned, 0, "{} had nothing a lacked", other.id);
            let status = other.node.key_status(key_hash(&admin)).await.unwrap();
            assert_eq!(status, KeyStatus::Active(Role::Admin));
        }
        Cluster {
            net,
            dirs,
            members: members.into_iter().map(Some).collect(),
            admin,
        }
    }

    fn member(&self, i: usize) -> &Member {
        self.members[i].as_ref().expect("the member is up")
    }

    /// Polls member `i`'s store until the key's status satisfies `check`.
    async fn wait_for_status(
        &self,
        i: usize,
        key: &str,
        check: impl Fn(KeyStatus) -> bool,
    ) -> Duration {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        loop {
            let status = self.member(i).node.key_status(key_hash(key)).await.unwrap();
            if check(status) {
                return started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "member {i}: key still {status:?} after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        for member in self.members.iter_mut().filter_map(Option::take) {
            member.stop(&self.net).await;
        }
    }
}

fn lookups(net: &Net) -> usize {
    net.key_lookups.load(Ordering::SeqCst)
}

/// Long enough that only pushes and explicit exchanges replicate within a test.
const NO_TIMER: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_on_one_member_authenticates_on_the_others_without_asking_anyone() {
    let cluster = Cluster::start(NO_TIMER).await;
    let admin = cluster.member(0).client(&cluster.admin).await.unwrap();
    let key = admin.create_api_key(Role::Read, "dashboard").await.unwrap();
    admin.close().await;
    // The push is answered before the creation is: b and c hold the key already.
    for i in 1..3 {
        let status = cluster
            .member(i)
            .node
            .key_status(key_hash(&key))
            .await
            .unwrap();
        assert_eq!(status, KeyStatus::Active(Role::Read), "member {i}");
    }
    let before = lookups(&cluster.net);
    for i in 1..3 {
        let client = cluster.member(i).client(&key).await.unwrap();
        client.request(Request::RingSnapshot).await.unwrap();
        client.close().await;
    }
    assert_eq!(lookups(&cluster.net), before, "a hello asked the peers");
    // Nobody else is even reachable: b decides alone.
    cluster.net.take_down(&cluster.member(0).id);
    cluster.net.take_down(&cluster.member(2).id);
    let welcome = support::raw_hello(
        &support::raw_connection(cluster.member(1).addr, &cluster.member(1).ca_pem).await,
        &key,
    )
    .await
    .unwrap();
    assert_eq!(welcome.role, Role::Read);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_member_is_refused_on_every_member_within_the_bound() {
    let cluster = Cluster::start(NO_TIMER).await;
    let admin_a = cluster.member(0).client(&cluster.admin).await.unwrap();
    let key = admin_a
        .create_api_key(Role::Read, "to-revoke")
        .await
        .unwrap();
    admin_a.close().await;
    // A connection on c opened before the revocation.
    let open_on_c = cluster.member(2).client(&key).await.unwrap();
    open_on_c.request(Request::RingSnapshot).await.unwrap();

    // Revoked on b, with a's admin key (which b learned from a).
    let admin_b = cluster.member(1).client(&cluster.admin).await.unwrap();
    let listed = admin_b.list_api_keys().await.unwrap();
    let id = &listed
        .iter()
        .find(|k| k.name == "to-revoke")
        .expect("b lists the key created on a")
        .id;
    let revoked = admin_b.revoke_api_key(&id[..10]).await.unwrap();
    assert_eq!(&revoked.id, id);
    assert!(revoked.revoked_at.is_some());
    admin_b.close().await;
    let before = lookups(&cluster.net);
    for i in [0, 2] {
        let took = cluster
            .wait_for_status(i, &key, |s| s == KeyStatus::Revoked)
            .await;
        assert!(took < REVOCATION_BOUND, "member {i} took {took:?}");
        match cluster.member(i).client(&key).await {
            Err(ClientError::Server(ErrorCode::Unauthorized)) => {}
            other => panic!("member {i} let a revoked key in: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(lookups(&cluster.net), before, "a refusal asked the peers");
    // The connection opened before is no longer served.
    match open_on_c.request(Request::RingSnapshot).await {
        Err(ClientError::Server(ErrorCode::Unauthorized)) => {}
        other => panic!("an open connection was served after revocation: {other:?}"),
    }
    open_on_c.close().await;
    // Every member lists it revoked.
    for i in 0..3 {
        let admin = cluster.member(i).client(&cluster.admin).await.unwrap();
        let keys = admin.list_api_keys().await.unwrap();
        let entry = keys.iter().find(|k| &k.id == id).unwrap();
        assert_eq!(entry.revoked_at, revoked.revoked_at, "member {i}");
        admin.close().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_during_a_create_learns_the_key_by_anti_entropy_when_it_returns() {
    let interval = Duration::from_millis(200);
    let mut cluster = Cluster::start(interval).await;
    let c = cluster.members[2].take().unwrap();
    c.stop(&cluster.net).await;

    let admin = cluster.member(0).client(&cluster.admin).await.unwrap();
    let key = admin
        .create_api_key(Role::Submit, "while-c-was-down")
        .await
        .unwrap();
    admin.close().await;

    // c returns on its old data, unannounced: only the periodic rounds can tell it.
    let c = Member::start(&cluster.net, cluster.dirs[2].path(), "c", interval).await;
    assert_eq!(
        c.node.key_status(key_hash(&key)).await.unwrap(),
        KeyStatus::Unknown
    );
    cluster.net.bring_up(c.id.clone(), c.node.clone());
    cluster.members[2] = Some(c);
    cluster
        .wait_for_status(2, &key, |s| s == KeyStatus::Active(Role::Submit))
        .await;
    let before = lookups(&cluster.net);
    let client = cluster.member(2).client(&key).await.unwrap();
    client.close().await;
    assert_eq!(lookups(&cluster.net), before, "a hello asked the peers");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_not_replicated_yet_is_asked_for_and_a_peer_knowing_it_revoked_refuses_it() {
    let cluster = Cluster::start(NO_TIMER).await;
    // Made straight in a's store: no push, and no timer to carry it.
    let store = cluster.member(0).node.store_for_tests();
    let key = store
        .create_api_key(Role::Read, "unreplicated".into())
        .unwrap();
    let before = lookups(&cluster.net);
    let client = cluster.member(1).client(&key).await.unwrap();
    client.close().await;
    assert!(lookups(&cluster.net) > before, "the fallback asked nobody");
    store.revoke_api_key(&key_hash(&key)).unwrap();
    match cluster.member(1).client(&key).await {
        Err(ClientError::Server(ErrorCode::Unauthorized)) => {}
        other => panic!(
            "a key revoked on a peer was let in: {:?}",
            other.map(|_| ())
        ),
    }
    drop(store);
    cluster.stop().await;
}
