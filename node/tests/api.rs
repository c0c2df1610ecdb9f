//! The client protocol end to end through the SDK: writes, reads, pagination,
//! idempotency, roles and keys.

mod support;

use std::collections::HashSet;

use chorus_client::{ClientError, ErrorCode, Item, ItemId, Kind, Role, Status};
use support::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_items_read_back_and_list_in_pages() {
    let node = TestNode::start().await;
    let client = node.client().await;

    let mut item = Item::new("alice", Kind::Rating);
    item.rating = Some(4);
    item.text = "works well".into();
    item.tags = vec!["ui".into()];
    let receipt = client.submit(item.clone()).await.unwrap();
    assert_eq!(receipt.id, item.id);
    assert_eq!(receipt.status, Status::Accepted);
    assert_eq!(receipt.owner.0, "test-node");

    let stored = client.get(item.id).await.unwrap().expect("stored");
    assert_eq!(stored.item, item);
    assert_eq!(stored.receipt, receipt);
    assert_eq!(client.get(ItemId::generate()).await.unwrap(), None);

    let batch: Vec<Item> = (0..25)
        .map(|i| {
            let mut it = Item::new("bob", Kind::Text);
            it.text = format!("note {i}");
            it
        })
        .collect();
    let outcomes = client.submit_batch(batch.clone()).await.unwrap();
    assert_eq!(outcomes.len(), 25);
    assert!(outcomes.iter().all(Result::is_ok));

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = client.list_by_user("bob", after, 10).await.unwrap();
        assert!(page.items.len() <= 10);
        seen.extend(page.items.into_iter().map(|s| s.item.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<ItemId> = batch.iter().map(|i| i.id).collect();
    assert_eq!(
        seen, expected,
        "all of bob's items, oldest first, each once"
    );
    assert_eq!(
        client.list_all_by_user("alice", 100).await.unwrap().len(),
        1
    );
    client.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_an_id_returns_the_first_receipt_and_stores_nothing_new() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let mut item = Item::new("carol", Kind::Text);
    item.text = "first".into();
    let first = client.submit(item.clone()).await.unwrap();
    let mut again = item.clone();
    again.text = "second version must not overwrite".into();
    let second = client.submit(again.clone()).await.unwrap();
    assert_eq!(first, second);
    // The same id twice in one batch, and once more: one item, one receipt.
    let outcomes = client
        .submit_batch(vec![again.clone(), again])
        .await
        .unwrap();
    for outcome in outcomes {
        assert_eq!(outcome.unwrap(), first);
    }
    assert_eq!(
        client.get(item.id).await.unwrap().unwrap().item.text,
        "first"
    );
    assert_eq!(client.list_all_by_user("carol", 10).await.unwrap().len(), 1);
    client.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_on_one_connection_all_get_their_own_answer() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..64 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let item = Item::new(format!("user-{t}-{i}"), Kind::Text);
                let receipt = client.submit(item.clone()).await.unwrap();
                assert_eq!(receipt.id, item.id, "a response went to the wrong caller");
                ids.push(item.id);
            }
            ids
        });
    }
    let ids: Vec<ItemId> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 64 * 20);
    for id in ids.iter().step_by(37) {
        assert!(client.get(*id).await.unwrap().is_some());
    }
    client.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_a_key_may_do() {
    let node = TestNode::start().await;
    let admin = node.client().await;
    let submit_key = admin.create_api_key(Role::Submit, "ingest").await.unwrap();
    let read_key = admin.create_api_key(Role::Read, "dashboard").await.unwrap();
    assert_ne!(submit_key, read_key);

    let submitter = node.client_with(&submit_key).await.unwrap();
    let reader = node.client_with(&read_key).await.unwrap();
    let item = Item::new("dave", Kind::Bug);
    submitter.submit(item.clone()).await.unwrap();
    assert_eq!(
        submitter.get(item.id).await,
        Err(ClientError::Server(ErrorCode::Forbidden))
    );
    assert!(reader.get(item.id).await.unwrap().is_some());
    assert_eq!(
        reader.submit(Item::new("dave", Kind::Bug)).await,
        Err(ClientError::Server(ErrorCode::Forbidden))
    );
    assert_eq!(
        submitter.create_api_key(Role::Admin, "escalate").await,
        Err(ClientError::Server(ErrorCode::Forbidden))
    );
    match node.client_with("chorus_not_a_key").await {
        Err(ClientError::Server(ErrorCode::Unauthorized)) => {}
        other => panic!("expected Unauthorized, got {:?}", other.map(|_| ())),
    }
    for c in [admin, submitter, reader] {
        c.close().await;
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_bad_items_stores_the_good_ones() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let good = Item::new("erin", Kind::Text);
    let mut bad = Item::new("erin", Kind::Rating);
    bad.rating = Some(0);
    let outcomes = client
        .submit_batch(vec![good.clone(), bad.clone()])
        .await
        .unwrap();
    assert!(outcomes[0].is_ok());
    assert!(matches!(&outcomes[1], Err(ErrorCode::Invalid { field, .. }) if field == "rating"));
    assert!(client.get(good.id).await.unwrap().is_some());
    assert!(client.get(bad.id).await.unwrap().is_none());
    client.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_100_a_minute_is_rate_limited_with_a_retry_hint() {
    let node = TestNode::start().await;
    let client = node.client().await;
    // One batch is admitted at one instant, so no token refills in between.
    let items: Vec<Item> = (0..101).map(|_| Item::new("frank", Kind::Text)).collect();
    let mut outcomes = client.submit_batch(items).await.unwrap();
    let last = outcomes.pop().unwrap();
    assert!(outcomes.iter().all(Result::is_ok));
    match last {
        Err(ErrorCode::RateLimited { retry_after_ms }) => {
            assert!((1..=600).contains(&retry_after_ms), "{retry_after_ms}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Another user is not affected, and a refused item was not stored.
    client.submit(Item::new("grace", Kind::Text)).await.unwrap();
    assert_eq!(
        client.list_all_by_user("frank", 1000).await.unwrap().len(),
        100
    );
    client.close().await;
    node.stop().await;
}
