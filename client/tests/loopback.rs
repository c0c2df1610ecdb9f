//! Narrow transport behaviours of the client over a real QUIC endpoint on loopback.
//!
//! The peer here is NOT a Chorus server: it speaks the real protocol (hello, framed
//! `ClientFrame`/`ServerFrame` on long-lived streams) but only answers `Get` requests,
//! with behaviour chosen by the requested id, to provoke what the client must survive:
//! responses out of order, a reset stream, a dropped connection. End-to-end tests against
//! the real node live in `node/tests`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chorus_client::{Client, ClientConfig, ClientError, Credentials};
use chorus_protocol::{
    ALPN_CLIENT, ErrorCode, FRAME_HEADER_LEN, FrameLimit, Item, ItemId, Kind, NodeId, Receipt,
    Request, ResetCode, Response, Role, ServerFrame, Status, StoredItem, Welcome,
    decode_client_frame, decode_hello, encode_value, read_frame_len,
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

struct Certs {
    ca_pem: String,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: Vec<u8>,
}

fn certs() -> Certs {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Certs {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone()],
        key: leaf_key.serialize_der(),
    }
}

/// What the peer observed, for the tests to check.
#[derive(Default)]
struct Observed {
    connections: AtomicUsize,
    streams: AtomicUsize,
}

struct Peer {
    addr: SocketAddr,
    ca_pem: String,
    observed: Arc<Observed>,
    /// Ids of held requests as they arrive.
    held: mpsc::UnboundedReceiver<u128>,
    _endpoint: quinn::Endpoint,
}

async fn start_peer() -> Peer {
    let certs = certs();
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
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                let number = observed.connections.fetch_add(1, Ordering::SeqCst);
                serve_connection(connection, number, observed, held_tx).await;
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
) {
    let Ok((mut send, mut recv)) = connection.accept_bi().await else {
        return;
    };
    let hello = decode_hello(&read_frame(&mut recv).await.unwrap());
    let answer: Result<Welcome, ErrorCode> = match hello {
        Ok(hello) if hello.api_key == API_KEY => Ok(Welcome {
            version: hello.version,
            node: NodeId("peer".into()),
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
        tokio::spawn(serve_stream(connection, number, send, recv, held));
    }
}

fn stored(id: u128) -> StoredItem {
    let mut item = Item::new("user-1", Kind::Text);
    item.id = ItemId(id);
    StoredItem {
        item,
        receipt: Receipt {
            id: ItemId(id),
            status: Status::Accepted,
            alignment_score: None,
            owner: NodeId("peer".into()),
            replicas: vec![],
            stored_at: 0,
            enrichment: chorus_protocol::Enrichment::NotConfigured,
        },
    }
}

async fn answer(send: &mut SendStream, request_id: u64, id: u128) {
    let frame = ServerFrame {
        request_id,
        result: Ok(Response::Item(Some(Box::new(stored(id))))),
    };
    let mut out = Vec::new();
    encode_value(&frame, FrameLimit::default(), &mut out).unwrap();
    let _ = send.write_all(&out).await;
}

async fn serve_stream(
    connection: quinn::Connection,
    connection_number: usize,
    mut send: SendStream,
    mut recv: RecvStream,
    held: mpsc::UnboundedSender<u128>,
) {
    let mut reversed = Vec::new();
    while let Some(payload) = read_frame(&mut recv).await {
        let frame = decode_client_frame(&payload).unwrap();
        let Request::Get(ItemId(id)) = frame.request else {
            panic!("the peer only serves Get")
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
