//! Cluster links over real QUIC on loopback: mutual TLS under the cluster CA, a second
//! node in a child process (ractor's process groups are process-global, so one process
//! holds one node's links), forwards over the link, and quick refusals when a peer is
//! unknown, unreachable or gone.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_actors::{Caller, Durability, NodeHandle, StoreConfig};
use chorus_client::{Client, ClientConfig, Credentials};
use chorus_node::cluster::certs;
use chorus_node::cluster::key_sync;
use chorus_node::cluster::links::{
    Forward, ForwardReply, LinkSettings, LinkState, LinkTiming, Links, link_client_config,
    link_cookie, link_server_config,
};
use chorus_node::cluster::state::ClusterState;
use chorus_node::server::{Backend, ServerSettings, serve_with_links};
use chorus_node::tls::TlsPaths;
use chorus_protocol::{ErrorCode, FrameLimit, Item, Kind, NodeId, Role};
use tokio_util::sync::CancellationToken;

/// Set in a child process to the certificate directory: run the second node.
const CHILD_DIR_ENV: &str = "CHORUS_LINKS_TEST_CHILD_DIR";
/// Set in a child process to `NAME=ADDR`: a peer the child links to (it dials when its
/// name is the lower one).
const CHILD_PEER_ENV: &str = "CHORUS_LINKS_TEST_CHILD_PEER";
/// Set in a child process to `NAME:CERT`: the child calls itself NAME but presents the
/// certificate issued to CERT.
const CHILD_IDENTITY_ENV: &str = "CHORUS_LINKS_TEST_CHILD_IDENTITY";
/// The line the child prints with its link address.
const ADDR_LINE: &str = "LINK_ADDR=";

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// A cluster CA with certificates for `names` (each also valid for `localhost`).
fn cluster(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path()).unwrap();
    for name in names {
        certs::issue_node(dir.path(), name, &[loopback()], &["localhost".into()]).unwrap();
    }
    dir
}

fn paths(dir: &Path, name: &str) -> TlsPaths {
    TlsPaths {
        ca_cert: dir.join(certs::CA_CERT_FILE),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}

fn cookie(dir: &Path) -> String {
    link_cookie(&certs::read_cluster_key(&dir.join(certs::CLUSTER_KEY_FILE)).unwrap())
}

fn server_endpoint(paths: &TlsPaths) -> quinn::Endpoint {
    let cert = chorus_node::tls::NodeCert::load(paths).unwrap();
    let config = link_server_config(paths, cert, 100, Duration::from_secs(30)).unwrap();
    quinn::Endpoint::server(config, SocketAddr::new(loopback(), 0)).unwrap()
}

/// How a node with the certificates in `paths` dials a link.
fn dial_config(paths: &TlsPaths) -> quinn::ClientConfig {
    let cert = chorus_node::tls::NodeCert::load(paths).unwrap();
    link_client_config(paths, cert, LinkTiming::default()).unwrap()
}

fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client(SocketAddr::new(loopback(), 0)).unwrap()
}

/// One node: a store, the endpoint serving clients and links, and its links.
struct TestNode {
    id: NodeId,
    addr: SocketAddr,
    node: NodeHandle,
    links: Links,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl TestNode {
    async fn start(cert_dir: &Path, name: &str) -> TestNode {
        Self::start_as(cert_dir, name, name).await
    }

    /// A node called `name` that presents the certificate issued to `cert`.
    async fn start_as(cert_dir: &Path, name: &str, cert: &str) -> TestNode {
        Self::start_with(cert_dir, name, cert, |_| {}).await
    }

    /// A node as [`TestNode::start_as`] makes it, with its link settings adjusted.
    async fn start_with(
        cert_dir: &Path,
        name: &str,
        cert: &str,
        adjust: impl FnOnce(&mut LinkSettings),
    ) -> TestNode {
        let data = tempfile::tempdir().unwrap();
        let id = NodeId(name.into());
        let node = NodeHandle::start(StoreConfig {
            path: data.path().join("store"),
            node: id.clone(),
            partitions: 16,
            durability: Durability::Flush,
            log: chorus_actors::store::LogConfig::default(),
        })
        .await
        .unwrap();
        let tls = paths(cert_dir, cert);
        let endpoint = server_endpoint(&tls);
        let addr = endpoint.local_addr().unwrap();
        let mut settings = LinkSettings::new(id.clone(), cookie(cert_dir), tls, endpoint.clone());
        settings.call_timeout = Duration::from_secs(2);
        adjust(&mut settings);
        let links = Links::start(settings, node.clone()).await.unwrap();
        let shutdown = CancellationToken::new();
        let cluster = ClusterState::new(id.clone(), addr, 16).unwrap();
        let server = tokio::spawn(serve_with_links(
            endpoint,
            Backend::single(node.clone(), cluster),
            ServerSettings {
                frame_limit: FrameLimit::default(),
                max_in_flight_per_stream: 64,
                hello_timeout: Duration::from_secs(5),
                shutdown_grace: Duration::from_secs(2),
            },
            Some(links.clone()),
            shutdown.clone(),
        ));
        TestNode {
            id,
            addr,
            node,
            links,
            shutdown,
            server,
            _data: data,
        }
    }

    async fn stop(self) {
        self.links.shutdown().await;
        self.shutdown.cancel();
        self.server.await.unwrap();
        self.node.shutdown().await.unwrap();
    }
}

/// The second node, run by this test binary in a child process.
struct ChildNode {
    child: Child,
    addr: SocketAddr,
    /// The child's temporary files: removed here, since a killed child cannot.
    _tmp: tempfile::TempDir,
}

impl ChildNode {
    fn spawn(cert_dir: &Path) -> ChildNode {
        Self::spawn_with_peer(cert_dir, None)
    }

    /// A child that also links to `peer` (as membership would tell it).
    fn spawn_with_peer(cert_dir: &Path, peer: Option<(&NodeId, SocketAddr)>) -> ChildNode {
        Self::spawn_as(cert_dir, peer, "node-b", "node-b")
    }

    /// A child called `name` presenting the certificate of `cert`.
    fn spawn_as(
        cert_dir: &Path,
        peer: Option<(&NodeId, SocketAddr)>,
        name: &str,
        cert: &str,
    ) -> ChildNode {
        let tmp = tempfile::tempdir().unwrap();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env(CHILD_IDENTITY_ENV, format!("{name}:{cert}"))
            .env("TMPDIR", tmp.path());
        if let Some((name, addr)) = peer {
            command.env(CHILD_PEER_ENV, format!("{name}={addr}"));
        }
        let mut child = command
            .args(["child_node", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, cert_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // libtest prints "test child_node ... " before the test's own output, on the
        // same line; read in a thread so a silent child fails the test, not hangs it.
        let stdout = child.stdout.take().unwrap();
        let (found, addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find(ADDR_LINE) {
                    let _ = found.send(line[at + ADDR_LINE.len()..].trim().to_string());
                }
            }
        });
        let addr = addr
            .recv_timeout(Duration::from_secs(30))
            .expect("the child printed no address")
            .parse()
            .unwrap();
        ChildNode {
            child,
            addr,
            _tmp: tmp,
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: node `node-b`, serving until its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_node() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let identity = std::env::var(CHILD_IDENTITY_ENV).unwrap_or_else(|_| "node-b:node-b".into());
    let (name, cert) = identity.split_once(':').unwrap();
    let node = TestNode::start_as(&dir, name, cert).await;
    if let Some(peer) = std::env::var_os(CHILD_PEER_ENV) {
        let peer = peer.into_string().unwrap();
        let (name, addr) = peer.split_once('=').unwrap();
        node.links
            .member_up(NodeId(name.into()), addr.parse().unwrap());
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ADDR_LINE}{}", node.addr).unwrap();
        out.flush().unwrap();
    }
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await
    .unwrap();
    node.stop().await;
}

async fn wait_until_up(links: &Links, peer: &NodeId) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = links
            .peers()
            .iter()
            .any(|p| p.node == *peer && p.link == LinkState::Up);
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no link to {peer}: {:?}",
            links.peers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries a forward while the peer's receiver is still being synchronised.
async fn forward_when_ready(
    links: &Links,
    to: &NodeId,
    request: Forward,
) -> Result<ForwardReply, ErrorCode> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match links.forward(to, request.clone()).await {
            Err(ErrorCode::Unavailable { reason })
                if reason.contains("not known yet") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_forwarded_over_the_link_is_stored_by_the_peer() {
    let dir = cluster(&["node-a", "node-b"]);
    let child = ChildNode::spawn(dir.path());
    let a = TestNode::start(dir.path(), "node-a").await;
    let b = NodeId("node-b".into());
    a.links.member_up(b.clone(), child.addr);
    wait_until_up(&a.links, &b).await;

    let item = Item::new("user-1".to_string(), Kind::Text);
    let caller = Caller::for_key("chorus_test_key", Role::Submit);
    let reply = forward_when_ready(
        &a.links,
        &b,
        Forward::Submit {
            caller,
            items: vec![item.clone()],
        },
    )
    .await
    .unwrap();
    let ForwardReply::Submit(outcomes) = reply else {
        panic!("a submit answered with {reply:?}");
    };
    let receipt = outcomes.into_iter().next().unwrap().unwrap();
    assert_eq!(receipt.id, item.id);
    assert_eq!(receipt.owner, b, "the peer stored it");

    let got = a
        .links
        .forward(&b, Forward::Get { id: item.id })
        .await
        .unwrap();
    let ForwardReply::Get(Some(stored)) = got else {
        panic!("the item is not on the peer: {got:?}");
    };
    assert_eq!(stored.item.id, item.id);
    assert!(
        a.node.get(item.id).await.unwrap().is_none(),
        "a forward runs on the peer only"
    );

    // The peer dies: forwards fail fast, and the link goes down within the idle timeout.
    child.kill();
    let started = Instant::now();
    let outcome = a.links.forward(&b, Forward::Get { id: item.id }).await;
    assert!(
        matches!(outcome, Err(ErrorCode::Unavailable { .. })),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the call timeout"
    );
    let deadline = Instant::now() + LinkTiming::default().idle_timeout * 3;
    while a.links.peers().iter().any(|p| p.link == LinkState::Up) {
        assert!(Instant::now() < deadline, "the dead peer's link stayed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.links.member_down(&b);
    assert!(a.links.peers().is_empty());
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_revocations_cross_a_real_link_and_the_peer_decides_with_them() {
    let dir = cluster(&["node-a", "node-b"]);
    let child = ChildNode::spawn(dir.path());
    let a = TestNode::start(dir.path(), "node-a").await;
    let b = NodeId("node-b".into());
    let link_ups = a.links.link_ups();
    a.links.member_up(b.clone(), child.addr);
    wait_until_up(&a.links, &b).await;
    assert!(*link_ups.borrow() >= 1, "a link coming up is announced");

    let key = a.node.ensure_admin_key().await.unwrap().unwrap();
    let hash = chorus_actors::store::key_hash(&key);
    let theirs = forward_when_ready(&a.links, &b, Forward::KeyDigest).await;
    let ours = a.node.api_key_digest().await.unwrap();
    assert!(
        matches!(theirs, Ok(ForwardReply::KeyDigest(d)) if d != ours),
        "{theirs:?}"
    );
    // One exchange: b takes a's key; it has nothing a lacks.
    assert_eq!(key_sync::exchange(&a.node, &a.links, &b).await, Ok(0));
    let asked = a
        .links
        .forward(&b, Forward::Authenticate { key_hash: hash })
        .await;
    assert_eq!(asked, Ok(ForwardReply::Role(Some(Role::Admin))));
    assert_eq!(
        a.links.forward(&b, Forward::KeyDigest).await,
        Ok(ForwardReply::KeyDigest(ours)),
        "equal sets, equal digests"
    );

    let revoked = a
        .node
        .revoke_api_key(chorus_actors::store::key_id(&hash))
        .await
        .unwrap();
    let delta = a.node.api_key_delta(revoked.hash).await.unwrap();
    assert_eq!(key_sync::push(&a.links, delta).await, 1);
    let asked = a
        .links
        .forward(&b, Forward::Authenticate { key_hash: hash })
        .await;
    assert_eq!(asked, Ok(ForwardReply::Revoked));
    drop(child);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_down_closes_the_link_and_forwards_are_refused_at_once() {
    let dir = cluster(&["node-a", "node-b"]);
    let child = ChildNode::spawn(dir.path());
    let a = TestNode::start(dir.path(), "node-a").await;
    let b = NodeId("node-b".into());
    a.links.member_up(b.clone(), child.addr);
    wait_until_up(&a.links, &b).await;
    forward_when_ready(
        &a.links,
        &b,
        Forward::Get {
            id: chorus_protocol::ItemId(1),
        },
    )
    .await
    .unwrap();

    a.links.member_down(&b);
    let started = Instant::now();
    let outcome = a
        .links
        .forward(
            &b,
            Forward::Get {
                id: chorus_protocol::ItemId(1),
            },
        )
        .await;
    assert!(
        matches!(outcome, Err(ErrorCode::Unavailable { .. })),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(a.links.peers().is_empty());
    a.stop().await;
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_unknown_or_unreachable_peers_are_refused_at_once() {
    let dir = cluster(&["node-a"]);
    let a = TestNode::start(dir.path(), "node-a").await;
    let get = Forward::Get {
        id: chorus_protocol::ItemId(1),
    };

    let started = Instant::now();
    let unknown = a.links.forward(&NodeId("node-x".into()), get.clone()).await;
    assert!(
        matches!(unknown, Err(ErrorCode::Unavailable { .. })),
        "{unknown:?}"
    );

    // A member nobody answers for: the link stays connecting, forwards do not wait.
    let silent = std::net::UdpSocket::bind((loopback(), 0)).unwrap();
    let z = NodeId("node-z".into());
    a.links.member_up(z.clone(), silent.local_addr().unwrap());
    let unreachable = a.links.forward(&z, get).await;
    assert!(
        matches!(unreachable, Err(ErrorCode::Unavailable { .. })),
        "{unreachable:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    let view = a.links.peers();
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].node, z);
    assert_ne!(view[0].link, LinkState::Up);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_with_a_certificate_of_another_ca_is_refused() {
    let ours = cluster(&["node-a", "node-b"]);
    let theirs = cluster(&["node-b"]);
    let server = server_endpoint(&paths(ours.path(), "node-a"));
    let addr = server.local_addr().unwrap();
    let accepting = tokio::spawn({
        let server = server.clone();
        async move {
            let mut outcomes = Vec::new();
            for _ in 0..3 {
                let incoming = server.accept().await.unwrap();
                outcomes.push(incoming.await.is_ok());
            }
            outcomes
        }
    });

    // A client certificate of another CA (trusting our CA for the server's).
    let mut foreign = paths(theirs.path(), "node-b");
    foreign.ca_cert = ours.path().join(certs::CA_CERT_FILE);
    let config = dial_config(&foreign);
    let client = client_endpoint();
    let refused = match client.connect_with(config, addr, "node-a").unwrap().await {
        Err(_) => true,
        Ok(connection) => tokio::time::timeout(Duration::from_secs(5), async {
            // TLS 1.3: the server judges the client certificate after the client's
            // handshake completes, then closes the connection.
            let _ = connection.open_bi().await;
            connection.closed().await
        })
        .await
        .is_ok(),
    };
    assert!(refused, "a foreign certificate was accepted");

    // The cluster's own certificate is accepted.
    let config = dial_config(&paths(ours.path(), "node-b"));
    let connection = client
        .connect_with(config, addr, "node-a")
        .unwrap()
        .await
        .expect("a cluster certificate is accepted");
    connection.close(0u32.into(), b"done");

    // And the server is checked too: a peer that is not node-c fails as node-c.
    let config = dial_config(&paths(ours.path(), "node-b"));
    assert!(
        client
            .connect_with(config, addr, "node-c")
            .unwrap()
            .await
            .is_err()
    );
    assert_eq!(
        accepting.await.unwrap(),
        vec![false, true, false],
        "the server refused the foreign certificate and took ours"
    );
}

/// The link ALPN a dialer presenting node-b's certificate and offering `alpns` agrees
/// on with `node`.
async fn negotiated_with(dir: &Path, node: &TestNode, alpns: &[&[u8]]) -> Option<Vec<u8>> {
    let tls_paths = paths(dir, "node-b");
    let mut roots = rustls::RootCertStore::empty();
    for ca in chorus_node::tls::load_certs(&tls_paths.ca_cert).unwrap() {
        roots.add(ca).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(chorus_node::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(Arc::new(roots))
        .with_client_cert_resolver(chorus_node::tls::NodeCert::load(&tls_paths).unwrap());
    tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let connection = client_endpoint()
        .connect_with(config, node.addr, "node-a")
        .unwrap()
        .await
        .unwrap();
    let alpn = chorus_node::cluster::links::negotiated_alpn(&connection);
    // Taken as a link (not refused as another protocol): it waits for the session.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(connection.close_reason().is_none(), "the link was refused");
    connection.close(0u32.into(), b"done");
    alpn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_the_previous_release_links_with_the_previous_link_version() {
    let dir = cluster(&["node-a", "node-b"]);
    let a = TestNode::start(dir.path(), "node-a").await;
    // This release's dialer offers both and gets the newer; the previous release's
    // offered only `chorus-link/1`, and is served with it.
    assert_eq!(
        negotiated_with(dir.path(), &a, &chorus_protocol::ALPN_LINKS).await,
        Some(chorus_protocol::ALPN_LINK.to_vec())
    );
    assert_eq!(
        negotiated_with(dir.path(), &a, &[chorus_protocol::ALPN_LINK_V1]).await,
        Some(chorus_protocol::ALPN_LINK_V1.to_vec())
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_without_a_client_certificate_is_closed_and_clients_are_served() {
    let dir = cluster(&["node-a"]);
    let a = TestNode::start(dir.path(), "node-a").await;

    // The link ALPN without a client certificate: the TLS layer lets it through (clients
    // present none), the links close it.
    let mut roots = rustls::RootCertStore::empty();
    for ca in chorus_node::tls::load_certs(&dir.path().join(certs::CA_CERT_FILE)).unwrap() {
        roots.add(ca).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(chorus_node::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    tls.alpn_protocols = vec![chorus_protocol::ALPN_LINK.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let client = client_endpoint();
    let connection = client
        .connect_with(config, a.addr, "node-a")
        .unwrap()
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .expect("the link without a certificate stayed open");
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(ref close)
            if close.error_code == chorus_node::cluster::links::close_code::REFUSED.into()),
        "{reason:?}"
    );

    // The client protocol on the same endpoint is unaffected.
    let admin = a.node.ensure_admin_key().await.unwrap().unwrap();
    let ca = std::fs::read(dir.path().join(certs::CA_CERT_FILE)).unwrap();
    let sdk = Client::connect(
        &[a.addr],
        Credentials::new(ca, admin),
        ClientConfig::default(),
    )
    .await
    .unwrap();
    let receipt = sdk
        .submit(Item::new("user-1".to_string(), Kind::Text))
        .await
        .unwrap();
    assert_eq!(receipt.owner, a.id);
    sdk.close().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_linked_again() {
    let dir = cluster(&["node-a", "node-b"]);
    let a = TestNode::start(dir.path(), "node-a").await;
    let b = NodeId("node-b".into());
    let first = ChildNode::spawn(dir.path());
    a.links.member_up(b.clone(), first.addr);
    wait_until_up(&a.links, &b).await;
    first.kill();

    // The peer comes back on another port, as membership would report it.
    let second = ChildNode::spawn(dir.path());
    a.links.member_up(b.clone(), second.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let item = Item::new("user-2".to_string(), Kind::Text);
    let reply = loop {
        let outcome = a
            .links
            .forward(
                &b,
                Forward::Submit {
                    caller: Caller::for_key("chorus_test_key", Role::Submit),
                    items: vec![item.clone()],
                },
            )
            .await;
        match outcome {
            Ok(reply) => break reply,
            Err(ErrorCode::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no link to the restarted peer: {e:?} {:?}", a.links.peers()),
        }
    };
    let ForwardReply::Submit(outcomes) = reply else {
        panic!("a submit answered with {reply:?}");
    };
    assert_eq!(outcomes[0].as_ref().unwrap().owner, b);
    a.stop().await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dials_this_node_is_linked_and_forwarded_to() {
    // node-b dials node-c (the lower id dials); node-c only accepts, checks node-b's
    // certificate against the name it gave, and forwards over the accepted link.
    let dir = cluster(&["node-b", "node-c"]);
    let c = TestNode::start(dir.path(), "node-c").await;
    let _child = ChildNode::spawn_with_peer(dir.path(), Some((&c.id, c.addr)));
    let b = NodeId("node-b".into());
    wait_until_up(&c.links, &b).await;
    let view = c.links.peers();
    assert!(!view[0].member, "linked before membership said so");

    let item = Item::new("user-3".to_string(), Kind::Text);
    let reply = forward_when_ready(
        &c.links,
        &b,
        Forward::Submit {
            caller: Caller::for_key("chorus_test_key", Role::Submit),
            items: vec![item.clone()],
        },
    )
    .await
    .unwrap();
    let ForwardReply::Submit(outcomes) = reply else {
        panic!("a submit answered with {reply:?}");
    };
    assert_eq!(outcomes[0].as_ref().unwrap().owner, b);
    let page = c
        .links
        .forward(
            &b,
            Forward::ListByUser {
                user_id: "user-3".into(),
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    let ForwardReply::List(items, _) = page else {
        panic!("a list answered with {page:?}");
    };
    assert_eq!(items.len(), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_a_name_its_certificate_does_not_carry_is_not_linked() {
    // The child calls itself node-a but holds node-b's certificate; it dials node-c.
    let dir = cluster(&["node-b", "node-c"]);
    let c = TestNode::start(dir.path(), "node-c").await;
    let _child = ChildNode::spawn_as(dir.path(), Some((&c.id, c.addr)), "node-a", "node-b");
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert!(
            c.links.peers().iter().all(|p| p.link != LinkState::Up),
            "an impostor was linked: {:?}",
            c.links.peers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcome = c
        .links
        .forward(
            &NodeId("node-a".into()),
            Forward::Get {
                id: chorus_protocol::ItemId(1),
            },
        )
        .await;
    assert!(
        matches!(outcome, Err(ErrorCode::Unavailable { .. })),
        "{outcome:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_beyond_the_bound_per_peer_are_refused_as_overloaded() {
    let dir = cluster(&["node-a", "node-b"]);
    let child = ChildNode::spawn(dir.path());
    let a = TestNode::start_with(dir.path(), "node-a", "node-a", |settings| {
        settings.max_forwards_per_peer = 1;
    })
    .await;
    let b = NodeId("node-b".into());
    a.links.member_up(b.clone(), child.addr);
    wait_until_up(&a.links, &b).await;
    let get = Forward::Get {
        id: chorus_protocol::ItemId(1),
    };
    forward_when_ready(&a.links, &b, get.clone()).await.unwrap();

    // The first forward takes the only slot on its first poll and then waits for the
    // peer's answer, which cannot arrive before the next line runs.
    {
        let first = a.links.forward(&b, get.clone());
        tokio::pin!(first);
        tokio::select! {
            biased;
            _ = &mut first => panic!("a forward was answered without a round trip"),
            _ = std::future::ready(()) => {}
        }
        let second = a.links.forward(&b, get.clone()).await;
        assert!(
            matches!(second, Err(ErrorCode::Overloaded { .. })),
            "{second:?}"
        );
        first.await.unwrap();
    }
    a.links
        .forward(&b, get)
        .await
        .expect("the slot is free again");
    a.stop().await;
    drop(child);
}

/// Set in a child process to `NAME:CERT:TARGET=ADDR`: the child is an impostor that
/// holds the cluster's cookie and the certificate issued to CERT, calls itself NAME,
/// dials TARGET at ADDR with ractor_cluster directly, holds back its own `Ready` (so a
/// check made only when the session is ready never runs) and calls TARGET's forward
/// receiver as soon as it learns of it.
const CHILD_IMPOSTOR_ENV: &str = "CHORUS_LINKS_TEST_IMPOSTOR";
/// The line the impostor prints with what became of its call.
const IMPOSTOR_LINE: &str = "IMPOSTOR=";
/// The id of the item the impostor tries to store.
const IMPOSTOR_ITEM: chorus_protocol::ItemId = chorus_protocol::ItemId(0x1badc0de);

/// The parts of ractor_cluster's schema the impostor needs to recognise its own `Ready`
/// (`NetworkMessage.control = 3`, `ControlMessage.ready = 9`).
mod ready_schema {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NetworkMessage {
        #[prost(message, optional, tag = "3")]
        pub control: Option<ControlMessage>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ControlMessage {
        #[prost(message, optional, tag = "9")]
        pub ready: Option<Empty>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}
}

/// A writer that passes ractor_cluster frames through, except `Ready`.
struct WithoutReady {
    inner: quinn::SendStream,
    parsing: Vec<u8>,
    out: Vec<u8>,
}

impl WithoutReady {
    fn take_frames(&mut self) {
        use prost::Message;
        loop {
            let Some((prefix, rest)) = self.parsing.split_first_chunk::<8>() else {
                return;
            };
            let len = u64::from_be_bytes(*prefix) as usize;
            if rest.len() < len {
                return;
            }
            let frame: Vec<u8> = self.parsing.drain(..8 + len).collect();
            let is_ready = ready_schema::NetworkMessage::decode(&frame[8..])
                .ok()
                .and_then(|m| m.control)
                .is_some_and(|c| c.ready.is_some());
            if !is_ready {
                self.out.extend_from_slice(&frame);
            }
        }
    }

    fn poll_drain(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let n =
                std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            self.out.drain(..n);
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for WithoutReady {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.parsing.extend_from_slice(buf);
        this.take_frames();
        let _ = this.poll_drain(cx);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_drain(cx))?;
        std::pin::Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_drain(cx))?;
        std::pin::Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

struct ImpostorStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl ractor_cluster::ClusterBidiStream for ImpostorStream {
    fn split(self: Box<Self>) -> (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) {
        (
            Box::new(tokio::io::BufReader::new(self.recv)),
            Box::new(WithoutReady {
                inner: self.send,
                parsing: Vec::new(),
                out: Vec::new(),
            }),
        )
    }

    fn peer_label(&self) -> Option<String> {
        Some("impostor".into())
    }

    fn local_label(&self) -> Option<String> {
        Some("impostor".into())
    }
}

/// The impostor's side (see [`CHILD_IMPOSTOR_ENV`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostor_child() {
    let (Some(dir), Some(spec)) = (
        std::env::var_os(CHILD_DIR_ENV),
        std::env::var_os(CHILD_IMPOSTOR_ENV),
    ) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let spec = spec.into_string().unwrap();
    let (name, rest) = spec.split_once(':').unwrap();
    let (cert, target) = rest.split_once(':').unwrap();
    let (target, addr) = target.split_once('=').unwrap();
    let addr: SocketAddr = addr.parse().unwrap();

    let config = dial_config(&paths(&dir, cert));
    let endpoint = client_endpoint();
    let connection = endpoint
        .connect_with(config, addr, target)
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = connection.open_bi().await.unwrap();
    let server = ractor_cluster::NodeServer::new(
        0,
        cookie(&dir),
        name.to_string(),
        chorus_node::cluster::links::SESSION_HOST.to_string(),
        None,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(loopback());
    let (server, _) = ractor::Actor::spawn(None, server, ()).await.unwrap();
    ractor_cluster::client_connect_external(&server, Box::new(ImpostorStream { send, recv }))
        .await
        .unwrap();

    let group = chorus_node::cluster::links::group_name(&NodeId(target.into()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let receiver = loop {
        let remote = ractor::pg::get_members(&group)
            .into_iter()
            .find(|cell| matches!(cell.get_id(), ractor::ActorId::Remote { .. }));
        if remote.is_some() || Instant::now() >= deadline {
            break remote;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let outcome = match receiver {
        None => "no-receiver".to_string(),
        Some(cell) => {
            let mut item = Item::new("impostor-user".to_string(), Kind::Text);
            item.id = IMPOSTOR_ITEM;
            let payload = chorus_node::cluster::links::encode_request(
                Forward::Submit {
                    caller: Caller::for_key("impostor", Role::Submit),
                    items: vec![item],
                },
                &[],
            );
            let actor: ractor::ActorRef<chorus_node::cluster::links::ForwardMsg> = cell.into();
            let timeout = Duration::from_secs(3);
            match actor
                .call(
                    |port| chorus_node::cluster::links::ForwardMsg::Forward(payload, port),
                    Some(timeout),
                )
                .await
            {
                Ok(ractor::rpc::CallResult::Success(_)) => "delivered".to_string(),
                other => format!("not-answered:{other:?}"),
            }
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{IMPOSTOR_LINE}{outcome}").unwrap();
    out.flush().unwrap();
    drop(out);
    server.stop(None);
}

/// Runs the impostor child and returns the outcome it printed.
fn run_impostor(
    cert_dir: &Path,
    name: &str,
    cert: &str,
    target: &NodeId,
    addr: SocketAddr,
) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "impostor_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, cert_dir)
        .env(CHILD_IMPOSTOR_ENV, format!("{name}:{cert}:{target}={addr}"))
        .env("TMPDIR", tmp.path())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let at = stdout
        .find(IMPOSTOR_LINE)
        .unwrap_or_else(|| panic!("the impostor printed no outcome: {stdout}"));
    stdout[at + IMPOSTOR_LINE.len()..]
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_the_cookie_but_another_nodes_certificate_is_stopped_before_any_message_is_delivered()
 {
    // The impostor holds the cookie and node-b's certificate, calls itself node-a, and
    // never sends Ready: only a check made before the session's first message stops it.
    let dir = cluster(&["node-b", "node-c"]);
    let c = TestNode::start(dir.path(), "node-c").await;
    let outcome = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let (id, addr) = (c.id.clone(), c.addr);
        move || run_impostor(&dir, "node-a", "node-b", &id, addr)
    })
    .await
    .unwrap();
    assert_ne!(outcome, "delivered", "the impostor's call reached node-c");
    assert_eq!(
        c.node.get(IMPOSTOR_ITEM).await.unwrap(),
        None,
        "the impostor's item was stored"
    );
    assert!(
        c.links.peers().iter().all(|p| p.link != LinkState::Up),
        "an impostor was linked: {:?}",
        c.links.peers()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_session_with_its_own_certificate_is_delivered() {
    // The control for the test above: the same impostor child, honest about its name,
    // gets its call through, so the refusal above is the name check and nothing else.
    let dir = cluster(&["node-b", "node-c"]);
    let c = TestNode::start(dir.path(), "node-c").await;
    let outcome = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let (id, addr) = (c.id.clone(), c.addr);
        move || run_impostor(&dir, "node-b", "node-b", &id, addr)
    })
    .await
    .unwrap();
    assert_eq!(outcome, "delivered");
    assert!(c.node.get(IMPOSTOR_ITEM).await.unwrap().is_some());
    c.stop().await;
}

/// The TCP ports this process listens on (from `/proc/self/net/tcp`, matched to this
/// process's sockets), so a test can find the port ractor_cluster chose.
fn own_tcp_listeners() -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    const LISTEN: &str = "0A";
    std::fs::read_to_string("/proc/self/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != LISTEN || !inodes.contains(*inode) {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

/// Session events of the test's own NodeServer, as names.
struct Recorder(std::sync::mpsc::Sender<&'static str>);

impl ractor_cluster::NodeEventSubscription for Recorder {
    fn node_session_opened(&self, _: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send("opened");
    }
    fn node_session_disconnected(&self, _: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send("disconnected");
    }
    fn node_session_authenticated(&self, _: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send("authenticated");
    }
    fn node_session_ready(&self, _: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send("ready");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_servers_own_tcp_listener_authenticates_no_session() {
    let dir = cluster(&["node-a"]);
    let before = own_tcp_listeners();
    let a = TestNode::start(dir.path(), "node-a").await;
    let ports: Vec<u16> = own_tcp_listeners()
        .into_iter()
        .filter(|port| !before.contains(port))
        .collect();
    assert_eq!(ports.len(), 1, "ractor_cluster's listener: {ports:?}");

    // A local process that holds the cookie dials the plain TCP listener.
    let server = ractor_cluster::NodeServer::new(
        0,
        cookie(dir.path()),
        "node-z".into(),
        chorus_node::cluster::links::SESSION_HOST.to_string(),
        None,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(loopback());
    let (server, _) = ractor::Actor::spawn(None, server, ()).await.unwrap();
    let (events, seen) = std::sync::mpsc::channel();
    server
        .cast(ractor_cluster::NodeServerMessage::SubscribeToEvents {
            id: "test".into(),
            subscription: Box::new(Recorder(events)),
        })
        .unwrap();
    ractor_cluster::client_connect(&server, format!("127.0.0.1:{}", ports[0]))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&"disconnected") {
        let event = tokio::task::block_in_place(|| seen.recv_timeout(Duration::from_secs(10)))
            .unwrap_or_else(|_| panic!("the session neither ended nor went on: {got:?}"));
        got.push(event);
    }
    assert_eq!(
        got,
        ["opened", "disconnected"],
        "the session got past its handshake"
    );
    server.stop(None);
    a.stop().await;
}
