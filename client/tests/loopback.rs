//! Narrow transport behaviours of the client over a real QUIC endpoint on loopback.
//!
//! The peer here is NOT a Chorus server: it speaks the real protocol (hello, framed
//! `ClientFrame`/`ServerFrame` on long-lived streams) but answers `Get` requests with
//! behaviour chosen by the requested id, to provoke what the client must survive:
//! responses out of order, a reset stream, a dropped connection. For routing, several
//! peers under one CA form a fake cluster: each answers `RingSnapshot` with the ring the
//! test advertises, refuses a routed request it does not own (by the ring the test holds
//! as the truth) with `NotOwner`, and serves plain requests as a forwarding node would.
//! End-to-end tests against the real node live in `node/tests`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chorus_client::{Client, ClientConfig, ClientError, Credentials, RoutingConfig};
use chorus_protocol::{
    ALPN_CLIENT, ErrorCode, FRAME_HEADER_LEN, FrameLimit, Item, ItemId, Kind, NodeId, Receipt,
    Request, ResetCode, Response, RingMember, RingSnapshot, Role, ServerFrame, Status, StoredItem,
    Welcome, decode_client_frame, decode_hello, encode_value, read_frame_len,
};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{RecvStream, SendStream, VarInt};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;

const API_KEY: &str = "test-key";
/// A `Get` of this id makes the peer reset the stream it came on.
const RESET_STREAM: u128 = 666;
/// A `Get` of this id makes the peer close the connection, every time.
const CLOSE_CONNECTION: u128 = 777;
/// A `Get` of this id makes the peer close the connection on the first connection only.
const CLOSE_FIRST_CONNECTION: u128 = 778;
/// `Get`s of ids in this range are never answered (they wait for a reset).
const HELD: std::ops::Range<u128> = 100..200;
/// `Get`s of ids in this range are answered in reverse order, `REVERSE_BATCH` at a time.
const REVERSED: std::ops::Range<u128> = 1000..2000;
const REVERSE_BATCH: usize = 8;
/// A routed request about a user whose name starts with this is refused as a whole.
const FORBIDDEN_USER: &str = "forbidden-";

/// A cluster CA, issuing peer certificates.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` and its key.
    fn leaf(&self, names: &[&str]) -> Certs {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &self.issuer)
            .unwrap();
        Certs {
            ca_pem: self.pem(),
            chain: vec![leaf.der().clone()],
            key: leaf_key.serialize_der(),
        }
    }
}

struct Certs {
    ca_pem: String,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: Vec<u8>,
}

fn certs() -> Certs {
    Ca::new().leaf(&["localhost"])
}

/// What the peer observed, for the tests to check.
#[derive(Default)]
struct Observed {
    connections: AtomicUsize,
    streams: AtomicUsize,
    /// Routed requests it served as the owner.
    routed: AtomicUsize,
    /// Routed requests it refused with `NotOwner`.
    refused: AtomicUsize,
    /// Plain submits and listings it served (as a node forwarding them would).
    plain: AtomicUsize,
    /// `RingSnapshot` requests it answered.
    ring_fetches: AtomicUsize,
}

/// The rings of a fake cluster: the one peers hand out, and the one they act on.
struct Rings {
    advertised: RingSnapshot,
    truth: RingSnapshot,
}

type SharedRings = Arc<std::sync::Mutex<Rings>>;

/// Who a peer is, for the requests that depend on it.
#[derive(Clone)]
struct Identity {
    name: NodeId,
    rings: SharedRings,
}

struct Peer {
    addr: SocketAddr,
    ca_pem: String,
    observed: Arc<Observed>,
    /// Ids of held requests as they arrive.
    held: mpsc::UnboundedReceiver<u128>,
    _endpoint: quinn::Endpoint,
}

/// A lone peer named `peer` whose ring has it as the only member.
async fn start_peer() -> Peer {
    let rings = Arc::new(std::sync::Mutex::new(Rings {
        advertised: single_ring(),
        truth: single_ring(),
    }));
    let identity = Identity {
        name: NodeId("peer".into()),
        rings,
    };
    start_peer_with(certs(), identity).await
}

fn single_ring() -> RingSnapshot {
    RingSnapshot {
        epoch: 1,
        partitions: 8,
        members: vec![RingMember {
            node: NodeId("peer".into()),
            addr: "127.0.0.1:1".into(),
        }],
        owners: vec![0; 8],
    }
}

async fn start_peer_with(certs: Certs, identity: Identity) -> Peer {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        certs.chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.key)),
    )
    .unwrap();
    tls.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
    let config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let observed = Arc::new(Observed::default());
    let (held_tx, held) = mpsc::unbounded_channel();
    let accepting = endpoint.clone();
    let peer_observed = observed.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let observed = peer_observed.clone();
            let held_tx = held_tx.clone();
            let identity = identity.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                let number = observed.connections.fetch_add(1, Ordering::SeqCst);
                serve_connection(connection, number, observed, held_tx, identity).await;
            });
        }
    });
    Peer {
        addr,
        ca_pem: certs.ca_pem,
        observed,
        held,
        _endpoint: endpoint,
    }
}

async fn read_frame(recv: &mut RecvStream) -> Option<Vec<u8>> {
    let mut header = [0; FRAME_HEADER_LEN];
    recv.read_exact(&mut header).await.ok()?;
    let len = read_frame_len(header, FrameLimit::default()).ok()?;
    let mut payload = vec![0; len];
    recv.read_exact(&mut payload).await.ok()?;
    Some(payload)
}

async fn serve_connection(
    connection: quinn::Connection,
    number: usize,
    observed: Arc<Observed>,
    held: mpsc::UnboundedSender<u128>,
    identity: Identity,
) {
    let Ok((mut send, mut recv)) = connection.accept_bi().await else {
        return;
    };
    let hello = decode_hello(&read_frame(&mut recv).await.unwrap());
    let answer: Result<Welcome, ErrorCode> = match hello {
        Ok(hello) if hello.api_key == API_KEY => Ok(Welcome {
            version: hello.version,
            node: identity.name.clone(),
            role: Role::Admin,
            max_frame: FrameLimit::default().get(),
        }),
        Ok(_) => Err(ErrorCode::Unauthorized),
        Err(error) => Err(error),
    };
    let accepted = answer.is_ok();
    let mut out = Vec::new();
    encode_value(&answer, FrameLimit::default(), &mut out).unwrap();
    send.write_all(&out).await.unwrap();
    send.finish().unwrap();
    if !accepted {
        // Let the answer reach the client before the connection goes.
        let _ = send.stopped().await;
        return;
    }
    while let Ok((send, recv)) = connection.accept_bi().await {
        observed.streams.fetch_add(1, Ordering::SeqCst);
        let connection = connection.clone();
        let held = held.clone();
        let peer = (identity.clone(), observed.clone());
        tokio::spawn(serve_stream(connection, number, send, recv, held, peer));
    }
}

fn receipt(id: ItemId, owner: &NodeId) -> Receipt {
    Receipt {
        id,
        status: Status::Accepted,
        alignment_score: None,
        owner: owner.clone(),
        replicas: vec![],
        stored_at: 0,
        enrichment: chorus_protocol::Enrichment::NotConfigured,
    }
}

fn stored(id: u128) -> StoredItem {
    let mut item = Item::new("user-1", Kind::Text);
    item.id = ItemId(id);
    StoredItem {
        item,
        receipt: receipt(ItemId(id), &NodeId("peer".into())),
    }
}

async fn answer(send: &mut SendStream, request_id: u64, id: u128) {
    reply(
        send,
        request_id,
        Ok(Response::Item(Some(Box::new(stored(id))))),
    )
    .await;
}

async fn reply(send: &mut SendStream, request_id: u64, result: Result<Response, ErrorCode>) {
    let frame = ServerFrame { request_id, result };
    let mut out = Vec::new();
    encode_value(&frame, FrameLimit::default(), &mut out).unwrap();
    let _ = send.write_all(&out).await;
}

/// The users a request is about.
fn users_of(request: &Request) -> Vec<String> {
    match request {
        Request::Submit(item) => vec![item.user_id.clone()],
        Request::SubmitBatch(items) => items.iter().map(|i| i.user_id.clone()).collect(),
        Request::ListByUser { user_id, .. } => vec![user_id.clone()],
        other => panic!("the peer does not serve {}", other.kind()),
    }
}

/// Serves a submit or listing: as its owner (receipts name the peer), or for a plain
/// request as a forwarding node would (receipts name the owner the truth ring gives).
fn serve_user_request(identity: &Identity, request: Request, routed: bool) -> Response {
    let truth = identity.rings.lock().unwrap().truth.clone();
    let owner = |user: &str| -> NodeId {
        if routed {
            identity.name.clone()
        } else {
            truth.owner_of_user(user).1.node.clone()
        }
    };
    match request {
        Request::Submit(item) => Response::Receipt(receipt(item.id, &owner(&item.user_id))),
        Request::SubmitBatch(items) => Response::Batch(
            items
                .iter()
                .map(|i| Ok(receipt(i.id, &owner(&i.user_id))))
                .collect(),
        ),
        Request::ListByUser { .. } => Response::Page {
            items: vec![],
            next: None,
        },
        other => panic!("the peer does not serve {}", other.kind()),
    }
}

/// The answer to a request the peer serves by its identity; `None` for a `Get`.
fn answer_by_identity(
    identity: &Identity,
    observed: &Observed,
    request: Request,
) -> Option<Result<Response, ErrorCode>> {
    match request {
        Request::Get(_) => None,
        Request::RingSnapshot => {
            observed.ring_fetches.fetch_add(1, Ordering::SeqCst);
            Some(Ok(Response::Ring(
                identity.rings.lock().unwrap().advertised.clone(),
            )))
        }
        Request::Routed { request, .. } => {
            let request = Request::from(request);
            let truth = identity.rings.lock().unwrap().truth.clone();
            let foreign = users_of(&request)
                .iter()
                .map(|u| truth.owner_of_user(u).1.node.clone())
                .find(|owner| owner != &identity.name);
            let forbidden = users_of(&request)
                .iter()
                .any(|u| u.starts_with(FORBIDDEN_USER));
            Some(match foreign {
                _ if forbidden => Err(ErrorCode::Forbidden),
                Some(owner) => {
                    observed.refused.fetch_add(1, Ordering::SeqCst);
                    Err(ErrorCode::NotOwner { owner })
                }
                None => {
                    observed.routed.fetch_add(1, Ordering::SeqCst);
                    Ok(serve_user_request(identity, request, true))
                }
            })
        }
        request => {
            observed.plain.fetch_add(1, Ordering::SeqCst);
            Some(Ok(serve_user_request(identity, request, false)))
        }
    }
}

async fn serve_stream(
    connection: quinn::Connection,
    connection_number: usize,
    mut send: SendStream,
    mut recv: RecvStream,
    held: mpsc::UnboundedSender<u128>,
    (identity, observed): (Identity, Arc<Observed>),
) {
    let mut reversed = Vec::new();
    while let Some(payload) = read_frame(&mut recv).await {
        let frame = decode_client_frame(&payload, FrameLimit::default()).unwrap();
        let Request::Get(ItemId(id)) = frame.request else {
            let result = answer_by_identity(&identity, &observed, frame.request).unwrap();
            reply(&mut send, frame.request_id, result).await;
            continue;
        };
        match id {
            RESET_STREAM => {
                let code = VarInt::from_u32(ResetCode::Malformed.code());
                let _ = send.reset(code);
                let _ = recv.stop(code);
                return;
            }
            CLOSE_CONNECTION => return connection.close(VarInt::from_u32(5), b"going away"),
            CLOSE_FIRST_CONNECTION if connection_number == 0 => {
                return connection.close(VarInt::from_u32(5), b"going away");
            }
            id if HELD.contains(&id) => held.send(id).unwrap(),
            id if REVERSED.contains(&id) => {
                reversed.push((frame.request_id, id));
                if reversed.len() == REVERSE_BATCH {
                    for (request_id, id) in reversed.drain(..).rev() {
                        answer(&mut send, request_id, id).await;
                    }
                }
            }
            id => answer(&mut send, frame.request_id, id).await,
        }
    }
}

fn config(streams: usize, max_retries: u32) -> ClientConfig {
    ClientConfig {
        streams_per_connection: NonZeroUsize::new(streams).unwrap(),
        max_retries,
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    }
}

async fn connect(peer: &Peer, config: ClientConfig) -> Client {
    let credentials = Credentials::new(peer.ca_pem.clone(), API_KEY);
    Client::connect(&[peer.addr], credentials, config)
        .await
        .unwrap()
}

async fn get_id(client: &Client, id: u128) -> Result<u128, ClientError> {
    let item = client
        .get(ItemId(id))
        .await?
        .expect("the peer always finds");
    Ok(item.item.id.0)
}

#[tokio::test]
async fn responses_out_of_order_reach_their_own_callers() {
    let peer = start_peer().await;
    // One stream, so that every request shares it and the peer reverses them.
    let client = connect(&peer, config(1, 0)).await;
    let mut calls = Vec::new();
    for id in REVERSED.start..REVERSED.start + 4 * REVERSE_BATCH as u128 {
        let client = client.clone();
        calls.push(tokio::spawn(async move { (id, get_id(&client, id).await) }));
    }
    for call in calls {
        let (asked, got) = call.await.unwrap();
        assert_eq!(got, Ok(asked));
    }
    assert_eq!(peer.observed.streams.load(Ordering::SeqCst), 1);
    client.close().await;
}

#[tokio::test]
async fn a_reset_stream_fails_its_pending_requests_and_the_next_request_uses_a_fresh_stream() {
    let mut peer = start_peer().await;
    let client = connect(&peer, config(1, 0)).await;
    let mut held_calls = Vec::new();
    for id in HELD.start..HELD.start + 3 {
        let client = client.clone();
        held_calls.push(tokio::spawn(async move { get_id(&client, id).await }));
    }
    for _ in 0..3 {
        peer.held.recv().await.unwrap();
    }
    let expected = ClientError::StreamReset {
        code: u64::from(ResetCode::Malformed.code()),
    };
    assert_eq!(get_id(&client, RESET_STREAM).await, Err(expected.clone()));
    for call in held_calls {
        assert_eq!(call.await.unwrap(), Err(expected.clone()));
    }
    assert_eq!(get_id(&client, 5).await, Ok(5));
    assert_eq!(peer.observed.streams.load(Ordering::SeqCst), 2);
    assert_eq!(peer.observed.connections.load(Ordering::SeqCst), 1);
    client.close().await;
}

#[tokio::test]
async fn a_lost_connection_fails_its_requests_and_the_next_request_reconnects() {
    let peer = start_peer().await;
    let client = connect(&peer, config(2, 0)).await;
    assert_eq!(get_id(&client, 1).await, Ok(1));
    assert!(matches!(
        get_id(&client, CLOSE_CONNECTION).await,
        Err(ClientError::ConnectionLost { .. })
    ));
    assert_eq!(get_id(&client, 2).await, Ok(2));
    assert_eq!(peer.observed.connections.load(Ordering::SeqCst), 2);
    client.close().await;
}

#[tokio::test]
async fn an_idempotent_request_is_retried_over_a_new_connection() {
    let peer = start_peer().await;
    let client = connect(&peer, config(1, 3)).await;
    assert_eq!(
        get_id(&client, CLOSE_FIRST_CONNECTION).await,
        Ok(CLOSE_FIRST_CONNECTION)
    );
    assert_eq!(peer.observed.connections.load(Ordering::SeqCst), 2);
    client.close().await;
}

#[tokio::test]
async fn a_wrong_api_key_is_a_typed_unauthorized() {
    let peer = start_peer().await;
    let credentials = Credentials::new(peer.ca_pem.clone(), "wrong-key");
    let result = Client::connect(&[peer.addr], credentials, config(1, 0)).await;
    assert_eq!(
        result.err(),
        Some(ClientError::Server(ErrorCode::Unauthorized))
    );
}

#[tokio::test]
async fn a_server_outside_the_ca_fails_the_tls_handshake() {
    let peer = start_peer().await;
    let other_ca = certs().ca_pem;
    let credentials = Credentials::new(other_ca, API_KEY);
    let result = Client::connect(&[peer.addr], credentials, config(1, 0)).await;
    assert!(matches!(result, Err(ClientError::Tls(_))), "{result:?}");
}

#[tokio::test]
async fn requests_after_close_fail_without_reconnecting() {
    let peer = start_peer().await;
    let client = connect(&peer, config(1, 3)).await;
    client.close().await;
    assert_eq!(get_id(&client, 1).await, Err(ClientError::Closed));
    assert_eq!(peer.observed.connections.load(Ordering::SeqCst), 1);
}

/// Peers under one CA, each with a certificate naming it, sharing their rings.
struct Cluster {
    peers: Vec<Peer>,
    rings: SharedRings,
    ca_pem: String,
}

/// Starts one peer per name; both rings give the 8 partitions to the members in turn.
async fn start_cluster(names: &[&str]) -> Cluster {
    let ca = Ca::new();
    let rings = Arc::new(std::sync::Mutex::new(Rings {
        advertised: single_ring(),
        truth: single_ring(),
    }));
    let mut peers = Vec::new();
    for name in names {
        let identity = Identity {
            name: NodeId(name.to_string()),
            rings: rings.clone(),
        };
        peers.push(start_peer_with(ca.leaf(&[name, "localhost"]), identity).await);
    }
    let ring = RingSnapshot {
        epoch: 1,
        partitions: 8,
        members: names
            .iter()
            .zip(&peers)
            .map(|(name, peer)| RingMember {
                node: NodeId(name.to_string()),
                addr: peer.addr.to_string(),
            })
            .collect(),
        owners: (0..8).map(|p| p % names.len() as u16).collect(),
    };
    *rings.lock().unwrap() = Rings {
        advertised: ring.clone(),
        truth: ring,
    };
    Cluster {
        peers,
        rings,
        ca_pem: ca.pem(),
    }
}

impl Cluster {
    /// A client connected to the first peer, routing, never refreshing in the background.
    async fn client(&self, min_refresh_interval: Duration) -> Client {
        let config = ClientConfig {
            routing: Some(RoutingConfig {
                refresh_interval: Duration::from_secs(600),
                min_refresh_interval,
                ..RoutingConfig::default()
            }),
            max_retries: 0,
            request_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        };
        let credentials = Credentials::new(self.ca_pem.clone(), API_KEY);
        Client::connect(&[self.peers[0].addr], credentials, config)
            .await
            .unwrap()
    }

    /// A user the truth ring gives to `owner`, distinct for each `n`.
    fn user_of(&self, owner: &str, n: usize) -> String {
        self.named_user_of("user-", owner, n)
    }

    /// A user named `prefix` and a number that the truth ring gives to `owner`.
    fn named_user_of(&self, prefix: &str, owner: &str, n: usize) -> String {
        let truth = self.rings.lock().unwrap().truth.clone();
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .filter(|u| truth.owner_of_user(u).1.node.0 == owner)
            .nth(n)
            .unwrap()
    }

    fn observed(&self, peer: usize) -> &Observed {
        &self.peers[peer].observed
    }
}

fn count(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

fn item(user: &str, id: u128) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.id = ItemId(id);
    item
}

#[tokio::test]
async fn the_ring_is_fetched_at_connect_and_a_single_member_changes_nothing() {
    let peer = start_peer().await;
    let client = connect(&peer, config(1, 0)).await;
    assert_eq!(client.ring_epoch(), Some(1));
    assert_eq!(client.ring().unwrap().members.len(), 1);
    let receipt = client.submit(item("alice", 1)).await.unwrap();
    assert_eq!(receipt.owner, NodeId("peer".into()));
    assert_eq!(count(&peer.observed.plain), 1);
    assert_eq!(count(&peer.observed.routed), 0);
    assert_eq!(client.routing_stats(), Default::default());
    assert!(client.member_connections().is_empty());
    client.close().await;
}

#[tokio::test]
async fn with_routing_off_no_ring_is_fetched() {
    let peer = start_peer().await;
    let config = ClientConfig {
        routing: None,
        ..config(1, 0)
    };
    let client = connect(&peer, config).await;
    assert_eq!(client.ring_epoch(), None);
    assert_eq!(client.refresh_ring().await, None);
    client.submit(item("alice", 1)).await.unwrap();
    assert_eq!(count(&peer.observed.ring_fetches), 0);
    client.close().await;
}

#[tokio::test]
async fn each_request_goes_straight_to_its_owner_over_one_connection_per_member() {
    let cluster = start_cluster(&["a", "b"]).await;
    let client = cluster.client(Duration::from_millis(100)).await;
    let (ua, ub) = (cluster.user_of("a", 0), cluster.user_of("b", 0));
    assert_eq!(client.submit(item(&ua, 1)).await.unwrap().owner.0, "a");
    for id in 2..5 {
        assert_eq!(client.submit(item(&ub, id)).await.unwrap().owner.0, "b");
    }
    client.list_by_user(ub.clone(), None, 10).await.unwrap();
    assert_eq!(
        (
            count(&cluster.observed(0).routed),
            count(&cluster.observed(1).routed)
        ),
        (1, 4)
    );
    assert_eq!(
        count(&cluster.observed(0).plain) + count(&cluster.observed(1).plain),
        0
    );
    // The connected node serves its own users on the first connection; b got one of its own.
    assert_eq!(client.member_connections(), vec![NodeId("b".into())]);
    assert_eq!(count(&cluster.observed(0).connections), 1);
    assert_eq!(count(&cluster.observed(1).connections), 1);
    assert_eq!(client.routing_stats().routed, 5);
    client.close().await;
}

#[tokio::test]
async fn a_not_owner_answer_refreshes_the_ring_and_resends_to_the_new_owner() {
    let cluster = start_cluster(&["a", "b"]).await;
    let client = cluster.client(Duration::ZERO).await;
    let ua = cluster.user_of("a", 0);
    {
        // The cluster moves every partition to b (epoch 2); the client still has epoch 1.
        let mut rings = cluster.rings.lock().unwrap();
        rings.truth.epoch = 2;
        rings.truth.owners = vec![1; 8];
        rings.advertised = rings.truth.clone();
    }
    let receipt = client.submit(item(&ua, 1)).await.unwrap();
    assert_eq!(receipt.owner.0, "b");
    assert_eq!(client.ring_epoch(), Some(2));
    assert_eq!(count(&cluster.observed(0).refused), 1);
    assert_eq!(count(&cluster.observed(1).routed), 1);
    let stats = client.routing_stats();
    assert_eq!((stats.routed, stats.redirected, stats.fallbacks), (1, 1, 0));
    client.close().await;
}

#[tokio::test]
async fn concurrent_not_owner_answers_share_one_ring_fetch() {
    let cluster = start_cluster(&["a", "b"]).await;
    let client = cluster.client(Duration::from_secs(1)).await;
    // Let the connect's fetch age past the rate limit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let users: Vec<String> = (0..16).map(|n| cluster.user_of("a", n)).collect();
    {
        let mut rings = cluster.rings.lock().unwrap();
        rings.truth.epoch = 2;
        rings.truth.owners = vec![1; 8];
        rings.advertised = rings.truth.clone();
    }
    let fetches_before = count(&cluster.observed(0).ring_fetches);
    let mut calls = Vec::new();
    for (n, user) in users.into_iter().enumerate() {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client.submit(item(&user, n as u128)).await
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().owner.0, "b");
    }
    assert_eq!(count(&cluster.observed(0).ring_fetches) - fetches_before, 1);
    assert_eq!(client.ring_epoch(), Some(2));
    client.close().await;
}

#[tokio::test]
async fn a_batch_is_split_by_owner_and_its_outcomes_come_back_in_order() {
    let cluster = start_cluster(&["a", "b", "c"]).await;
    let client = cluster.client(Duration::from_millis(100)).await;
    let owners = ["b", "a", "c", "b", "b", "a", "c"];
    let items: Vec<Item> = owners
        .iter()
        .enumerate()
        .map(|(n, owner)| item(&cluster.user_of(owner, n), n as u128))
        .collect();
    let outcomes = client.submit_batch(items).await.unwrap();
    let got: Vec<(u128, String)> = outcomes
        .into_iter()
        .map(|o| o.map(|r| (r.id.0, r.owner.0)).unwrap())
        .collect();
    let expected: Vec<(u128, String)> = owners
        .iter()
        .enumerate()
        .map(|(n, owner)| (n as u128, owner.to_string()))
        .collect();
    assert_eq!(got, expected);
    for peer in 0..3 {
        assert_eq!(count(&cluster.observed(peer).routed), 1, "peer {peer}");
    }
    client.close().await;
}

#[tokio::test]
async fn an_owner_out_of_reach_is_bypassed_through_the_connected_node() {
    let cluster = start_cluster(&["a", "b"]).await;
    {
        // b is advertised at a's address, whose certificate does not name b: the TLS
        // handshake to "b" fails before anything is sent.
        let mut rings = cluster.rings.lock().unwrap();
        rings.advertised.members[1].addr = cluster.peers[0].addr.to_string();
    }
    let client = cluster.client(Duration::from_millis(100)).await;
    let ub = cluster.user_of("b", 0);
    // The connected node forwards it: its receipt names the real owner.
    assert_eq!(client.submit(item(&ub, 1)).await.unwrap().owner.0, "b");
    assert_eq!(count(&cluster.observed(0).plain), 1);
    assert_eq!(count(&cluster.observed(1).connections), 0);
    assert_eq!(client.routing_stats().fallbacks, 1);
    // Within the reconnect hold-off the next one falls back at once too.
    assert_eq!(client.submit(item(&ub, 2)).await.unwrap().owner.0, "b");
    assert_eq!(count(&cluster.observed(0).plain), 2);
    client.close().await;
}

#[tokio::test]
async fn a_batch_part_refused_as_a_whole_fails_only_its_own_items() {
    let cluster = start_cluster(&["a", "b"]).await;
    let client = cluster.client(Duration::from_millis(100)).await;
    let ua = cluster.user_of("a", 0);
    let refused = cluster.named_user_of(FORBIDDEN_USER, "b", 0);
    let items = vec![item(&refused, 0), item(&ua, 1), item(&refused, 2)];
    let outcomes = client.submit_batch(items).await.unwrap();
    assert_eq!(outcomes[0], Err(ErrorCode::Forbidden));
    assert_eq!(outcomes[1].as_ref().map(|r| r.owner.0.as_str()), Ok("a"));
    assert_eq!(outcomes[2], Err(ErrorCode::Forbidden));
    // When every part fails, the batch fails as it would unsplit.
    let refused_a = cluster.named_user_of(FORBIDDEN_USER, "a", 0);
    let all_refused = vec![item(&refused, 3), item(&refused_a, 4)];
    assert_eq!(
        client.submit_batch(all_refused).await,
        Err(ClientError::Server(ErrorCode::Forbidden))
    );
    client.close().await;
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole_even_if_its_parts_fit() {
    let cluster = start_cluster(&["a", "b"]).await;
    let client = cluster.client(Duration::from_millis(100)).await;
    let (ua, ub) = (cluster.user_of("a", 0), cluster.user_of("b", 0));
    let items: Vec<Item> = (0..=chorus_protocol::MAX_BATCH_ITEMS as u128)
        .map(|n| item(if n % 2 == 0 { &ua } else { &ub }, n))
        .collect();
    let result = client.submit_batch(items).await;
    assert!(
        matches!(
            result,
            Err(ClientError::Server(ErrorCode::Invalid { ref field, .. })) if field == "items"
        ),
        "{result:?}"
    );
    assert_eq!(
        count(&cluster.observed(0).routed) + count(&cluster.observed(1).routed),
        0
    );
    client.close().await;
}

#[tokio::test]
async fn the_ring_is_refreshed_in_the_background() {
    let cluster = start_cluster(&["a", "b"]).await;
    let config = ClientConfig {
        routing: Some(RoutingConfig {
            refresh_interval: Duration::from_millis(50),
            min_refresh_interval: Duration::from_millis(10),
            ..RoutingConfig::default()
        }),
        ..ClientConfig::default()
    };
    let credentials = Credentials::new(cluster.ca_pem.clone(), API_KEY);
    let client = Client::connect(&[cluster.peers[0].addr], credentials, config)
        .await
        .unwrap();
    assert_eq!(client.ring_epoch(), Some(1));
    cluster.rings.lock().unwrap().advertised.epoch = 2;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.ring_epoch() != Some(2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no background refresh"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.close().await;
}

#[tokio::test]
async fn the_connection_to_a_member_that_left_the_ring_is_closed() {
    let cluster = start_cluster(&["a", "b"]).await;
    let client = cluster.client(Duration::ZERO).await;
    let ub = cluster.user_of("b", 0);
    client.submit(item(&ub, 1)).await.unwrap();
    assert_eq!(client.member_connections(), vec![NodeId("b".into())]);
    {
        let mut rings = cluster.rings.lock().unwrap();
        rings.advertised.epoch = 2;
        rings.advertised.members.truncate(1);
        rings.advertised.owners = vec![0; 8];
    }
    assert_eq!(client.refresh_ring().await, Some(2));
    assert!(client.member_connections().is_empty());
    client.close().await;
}
