//! Overload over the client protocol: a node whose disk is slowed down takes a flood of
//! batch submits from an SDK client. The batch queue fills, the degradation level moves
//! by itself to shed batch, every batch submit is answered with a receipt or
//! `Overloaded{tier: batch, retry_after_ms}`, and realtime submits sent meanwhile are
//! all stored.

mod support;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use chorus_actors::PipelineConfig;
use chorus_actors::policy::bulkhead::BulkheadConfig;
use chorus_actors::policy::tier_queue::TierQueueConfig;
use chorus_client::{Client, ClientConfig, ClientError, Credentials, ErrorCode, Item, Kind, Tier};
use support::TestNode;

fn item(user: String, tier: Tier) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.tier = tier;
    item
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_flood_is_refused_by_tier_and_realtime_is_still_served() {
    let mut tiers = TierQueueConfig::default();
    tiers.batch.capacity = NonZeroUsize::new(16).unwrap();
    let node = TestNode::start_with_pipeline(PipelineConfig {
        tiers,
        store_writes: BulkheadConfig {
            max_concurrent: 4,
            max_queue: 4,
            max_queue_wait: None,
        },
        ..PipelineConfig::default()
    })
    .await;
    node.node
        .store_for_tests()
        .inject_write_delay(Duration::from_millis(20));
    // No retries and no client-side throttling: every refusal reaches the test.
    let config = ClientConfig {
        max_retries: 0,
        load_guard: None,
        ..ClientConfig::default()
    };
    let credentials = Credentials::new(node.ca_pem.clone(), node.admin_key.clone());
    let client = Client::connect(&[node.addr], credentials, config)
        .await
        .unwrap();

    let flood_until = Instant::now() + Duration::from_millis(1500);
    let mut flood = tokio::task::JoinSet::new();
    for worker in 0..48 {
        let client = client.clone();
        flood.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0.. {
                if Instant::now() >= flood_until {
                    break;
                }
                let user = format!("batch-{worker}-{i}");
                outcomes.push(client.submit(item(user, Tier::Batch)).await);
            }
            outcomes
        });
    }

    // Let the flood build up: the store's 20 ms flushes make the batch tier's expected
    // wait long, so what would not be served in time is refused at the door.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = node.node.queues().await.unwrap();
    assert!(!status.manual);

    for i in 0..10 {
        let receipt = client
            .submit(item(format!("realtime-{i}"), Tier::Realtime))
            .await;
        assert!(
            receipt.is_ok(),
            "realtime refused under overload: {receipt:?}"
        );
    }

    let outcomes: Vec<_> = flood.join_all().await.into_iter().flatten().collect();
    let refused = outcomes
        .iter()
        .filter(|o| {
            matches!(o, Err(ClientError::Server(ErrorCode::Overloaded { tier: Tier::Batch, retry_after_ms })) if *retry_after_ms > 0)
        })
        .count();
    let stored = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(
        refused > 0 && stored > 0,
        "{refused} refused, {stored} stored"
    );
    assert_eq!(
        refused + stored,
        outcomes.len(),
        "a batch submit gets a receipt or Overloaded, nothing else: {:?}",
        outcomes.iter().find(|o| !matches!(
            o,
            Ok(_) | Err(ClientError::Server(ErrorCode::Overloaded { .. }))
        ))
    );
    node.stop().await;
}

/// One frame sent on a fresh stream of `conn`, and the server's answer.
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> chorus_protocol::ServerFrame {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let payload = support::read_payload(&mut recv).await.unwrap();
    chorus_protocol::decode_value(&payload).unwrap()
}

/// A submit frame of `tier` cut short after its tier: its head reads, its body does not.
fn cut_submit(request_id: u64, tier: Tier) -> Vec<u8> {
    let mut item = item("cut-user".into(), tier);
    item.client_ts = u64::MAX;
    let mut bytes = support::frame(&chorus_protocol::ClientFrame {
        request_id,
        request: chorus_protocol::Request::Submit(item),
    });
    // The last field, a u64 at its widest (9 bytes), loses its last byte.
    bytes.pop();
    let len = (bytes.len() - 4) as u32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_submit_is_refused_from_its_head_before_its_body_is_decoded() {
    use chorus_actors::DegradeCommand;
    use chorus_actors::policy::degradation::Level;

    let node = TestNode::start().await;
    let conn = support::raw_connection(node.addr, &node.ca_pem).await;
    support::raw_hello(&conn, &node.admin_key).await.unwrap();

    // Open: the body is decoded, and the cut is found.
    let answer = exchange(&conn, &cut_submit(1, Tier::Batch)).await;
    assert!(
        matches!(answer.result, Err(ErrorCode::Invalid { .. })),
        "{answer:?}"
    );

    node.node
        .degrade(DegradeCommand::Set(Level::ShedOptional))
        .await
        .unwrap();
    // Shed: the head is enough to refuse, and the broken body is never read.
    let answer = exchange(&conn, &cut_submit(2, Tier::Batch)).await;
    assert_eq!(answer.request_id, 2);
    assert!(
        matches!(
            answer.result,
            Err(ErrorCode::Overloaded {
                tier: Tier::Batch,
                retry_after_ms
            }) if retry_after_ms > 0
        ),
        "{answer:?}"
    );
    // A tier the level takes still goes the whole way.
    let answer = exchange(&conn, &cut_submit(3, Tier::Realtime)).await;
    assert!(
        matches!(answer.result, Err(ErrorCode::Invalid { .. })),
        "{answer:?}"
    );
    node.stop().await;
}
