//! Bad input over real QUIC: each case gets a typed error (or, for a broken frame, its
//! stream is reset with an error code), while a well-behaved client sharing the node is
//! served throughout.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chorus_protocol::{
    ClientFrame, ErrorCode, Hello, Item, Kind, PROTOCOL_VERSION, Request, ResetCode,
    SUPPORTED_VERSIONS, ServerFrame, Welcome, decode_value,
};
use support::{TestNode, frame, raw_connection, read_payload};

/// A raw connection that has completed its hello with the admin key.
async fn hello_done(node: &TestNode) -> quinn::Connection {
    let conn = raw_connection(node.addr, &node.ca_pem).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        api_key: node.admin_key.clone(),
        client: "bad-input-test".into(),
    };
    send.write_all(&frame(&hello)).await.unwrap();
    send.finish().unwrap();
    let welcome: Result<Welcome, ErrorCode> =
        decode_value(&read_payload(&mut recv).await.unwrap()).unwrap();
    welcome.expect("the admin key is welcome");
    conn
}

/// Sends raw bytes as one request stream and returns the server's answer.
async fn exchange(
    conn: &quinn::Connection,
    bytes: &[u8],
) -> Result<ServerFrame, quinn::ReadExactError> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let payload = read_payload(&mut recv).await?;
    Ok(decode_value(&payload).expect("the server sends valid frames"))
}

/// Sends an item and expects `Invalid{field}`.
async fn expect_invalid(conn: &quinn::Connection, item: Item, field: &str) {
    let request = ClientFrame {
        request_id: 42,
        request: Request::Submit(item),
    };
    let answer = exchange(conn, &frame(&request)).await.unwrap();
    assert_eq!(answer.request_id, 42);
    match answer.result {
        Err(ErrorCode::Invalid { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected Invalid{{{field}}}, got {other:?}"),
    }
}

/// Expects the stream to be reset by the server with `code`.
fn expect_reset(outcome: Result<ServerFrame, quinn::ReadExactError>, codes: &[ResetCode]) {
    match outcome {
        Err(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(code))) => {
            let code = ResetCode::from_code(code.into_inner());
            assert!(
                code.is_some_and(|c| codes.contains(&c)),
                "reset with {code:?}, expected one of {codes:?}"
            );
        }
        other => panic!("expected a reset with {codes:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_never_disturbs_other_clients() {
    let node = TestNode::start().await;

    // A well-behaved client submitting all along.
    let good = node.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let background = tokio::spawn({
        let (good, stop, served) = (good.clone(), stop.clone(), served.clone());
        async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // A user per submit: the per-user rate limit is not what this test is about.
                let user = format!("good-user-{}", served.load(Ordering::Relaxed));
                match good.submit(Item::new(user, Kind::Text)).await {
                    Ok(_) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failures
        }
    });
    // After each bad case the good client must complete another submit (no timing
    // assumption: it only has to make progress, within a generous bound).
    let progress = {
        let served = served.clone();
        move || {
            let served = served.clone();
            async move {
                let before = served.load(Ordering::Relaxed);
                tokio::time::timeout(Duration::from_secs(10), async {
                    while served.load(Ordering::Relaxed) <= before {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await
                .expect("the good client stalled during bad input");
            }
        }
    };

    let conn = hello_done(&node).await;

    // A frame over the limit: the stream is reset before the payload is read.
    let mut huge = (2u32 << 20).to_be_bytes().to_vec();
    huge.extend(vec![0u8; 1024]);
    expect_reset(exchange(&conn, &huge).await, &[ResetCode::FrameTooLarge]);
    progress().await;

    // Random bytes: a length that cannot fit, or a payload without a request id.
    let random: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80)
        .collect();
    expect_reset(
        exchange(&conn, &random).await,
        &[ResetCode::FrameTooLarge, ResetCode::Malformed],
    );
    // Random bytes inside a well-formed length prefix: no request id can be read.
    let mut framed_random = 9u32.to_be_bytes().to_vec();
    framed_random.extend([0xff; 9]);
    expect_reset(
        exchange(&conn, &framed_random).await,
        &[ResetCode::Malformed],
    );

    // A truncated frame: the length says 100, the stream ends after 10.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend([1u8; 10]);
    expect_reset(exchange(&conn, &truncated).await, &[ResetCode::Truncated]);
    progress().await;

    // An unknown request tag: request id 7, variant 200.
    let mut unknown = 2u32.to_be_bytes().to_vec();
    unknown.extend([7u8, 200]);
    let answer = exchange(&conn, &unknown).await.unwrap();
    assert_eq!(answer.request_id, 7);
    assert!(
        matches!(answer.result, Err(ErrorCode::Invalid { ref field, .. }) if field == "request"),
        "{answer:?}"
    );

    // Invalid UTF-8 in user_id.
    let request = ClientFrame {
        request_id: 8,
        request: Request::Submit(Item::new("QQQ", Kind::Text)),
    };
    let mut bytes = frame(&request);
    let at = bytes.windows(3).position(|w| w == b"QQQ").unwrap();
    bytes[at] = 0xc3;
    bytes[at + 1] = 0x28;
    let answer = exchange(&conn, &bytes).await.unwrap();
    assert!(
        matches!(answer.result, Err(ErrorCode::Invalid { ref field, .. }) if field == "user_id"),
        "{answer:?}"
    );

    // Schema limits.
    expect_invalid(&conn, Item::new("", Kind::Text), "user_id").await;
    progress().await;
    let mut item = Item::new("u", Kind::Rating);
    item.rating = Some(9);
    expect_invalid(&conn, item, "rating").await;
    progress().await;
    let mut item = Item::new("u", Kind::Text);
    item.text = "x".repeat(8 * 1024 + 1);
    expect_invalid(&conn, item, "text").await;
    progress().await;
    let mut item = Item::new("u", Kind::Text);
    item.tags = (0..17).map(|i| format!("t{i}")).collect();
    expect_invalid(&conn, item, "tags").await;
    progress().await;

    // The same connection still serves a valid request after all of that.
    let ok = ClientFrame {
        request_id: 9,
        request: Request::Submit(Item::new("after", Kind::Text)),
    };
    let answer = exchange(&conn, &frame(&ok)).await.unwrap();
    assert!(answer.result.is_ok(), "{answer:?}");

    // An unsupported version on a fresh connection: a typed refusal listing what is served.
    let conn2 = raw_connection(node.addr, &node.ca_pem).await;
    let (mut send, mut recv) = conn2.open_bi().await.unwrap();
    let hello = Hello {
        version: 999,
        api_key: node.admin_key.clone(),
        client: "old".into(),
    };
    send.write_all(&frame(&hello)).await.unwrap();
    send.finish().unwrap();
    let reply: Result<Welcome, ErrorCode> =
        decode_value(&read_payload(&mut recv).await.unwrap()).unwrap();
    assert_eq!(
        reply,
        Err(ErrorCode::UnsupportedVersion {
            supported: SUPPORTED_VERSIONS.to_vec()
        })
    );

    // A wrong API key: Unauthorized.
    let conn3 = raw_connection(node.addr, &node.ca_pem).await;
    let (mut send, mut recv) = conn3.open_bi().await.unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        api_key: "chorus_wrong".into(),
        client: "x".into(),
    };
    send.write_all(&frame(&hello)).await.unwrap();
    send.finish().unwrap();
    let reply: Result<Welcome, ErrorCode> =
        decode_value(&read_payload(&mut recv).await.unwrap()).unwrap();
    assert_eq!(reply, Err(ErrorCode::Unauthorized));

    // The good client was served during the abuse (checked after each case above) and
    // is served after it.
    progress().await;
    good.submit(Item::new("good-user", Kind::Text))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let failures = background.await.unwrap();
    assert!(
        failures.is_empty(),
        "the good client saw errors: {failures:?}"
    );
    good.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nested_sixty_thousand_deep_is_refused_and_the_node_keeps_serving() {
    let node = TestNode::start().await;
    let conn = hello_done(&node).await;
    // Request id 11, then `Routed { epoch: 0, .. }` 60,000 times around a ring request:
    // about 120 KB, well inside the frame limit. Decoding it recursively overflowed a
    // worker's stack and aborted the node.
    let mut payload = vec![11u8];
    for _ in 0..60_000 {
        payload.extend([6u8, 0]);
    }
    payload.push(5);
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend(payload);
    let answer = exchange(&conn, &bytes).await.unwrap();
    assert_eq!(answer.request_id, 11);
    assert!(
        matches!(answer.result, Err(ErrorCode::Invalid { ref field, .. }) if field == "request"),
        "{answer:?}"
    );
    // The node is alive and serves a fresh client.
    let client = node.client().await;
    client
        .submit(Item::new("after-nesting", Kind::Text))
        .await
        .unwrap();
    client.close().await;
    node.stop().await;
}
