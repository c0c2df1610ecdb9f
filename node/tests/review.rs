//! The review queue across a cluster: three `chorus agent` processes on loopback in
//! research mode (an item with PII is flagged before its ack). A reviewer's key lists
//! every flagged item once, whichever member leads it; a decision asked of any member
//! is made by the item's leader, replicated to a write quorum, recorded as an event,
//! and takes the item out of the queue; each flagged item is an event too.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_client::{
    Client, ClientConfig, ClientError, Credentials, ErrorCode, EventQuery, EventType, ItemId, Role,
    Status,
};
use chorus_protocol::{EventKind, Item, Kind};
use support::cluster::{Node, cluster_with, formed, plain_client, submit_once_led, user_owned_by};

async fn client_with_key(node: &Node, dir: &std::path::Path, key: &str) -> Client {
    let credentials = Credentials::from_ca_file(dir.join("certs/ca.pem"), key)
        .unwrap()
        .with_server_name(node.name.clone());
    let config = ClientConfig {
        routing: None,
        ..ClientConfig::default()
    };
    Client::connect(&[node.addr.parse().unwrap()], credentials, config)
        .await
        .unwrap()
}

async fn whole_queue(client: &Client) -> Vec<ItemId> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = client.review_queue(after, 2).await.unwrap();
        ids.extend(page.items.iter().map(|s| s.item.id));
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagged_items_are_reviewed_cluster_wide_and_every_step_is_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster_with(dir.path(), "[validation]\nmode = \"research\"");
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let admin = plain_client(&nodes[0], dir.path()).await;
    let mut flagged = Vec::new();
    for owner in ["node-1", "node-2", "node-3"] {
        let user = user_owned_by(&nodes[0], owner, owner);
        for _ in 0..2 {
            let mut item = Item::new(user.clone(), Kind::Text);
            item.text = "write to me at jane.doe@example.com".into();
            let receipt = submit_once_led(&admin, item.clone()).await.unwrap();
            assert!(
                matches!(receipt.status, Status::Flagged { .. }),
                "{receipt:?}"
            );
            flagged.push((user.clone(), item.id));
        }
        let mut clean = Item::new(user.clone(), Kind::Text);
        clean.text = "the new search is fast and helpful".into();
        submit_once_led(&admin, clean).await.unwrap();
    }
    let key = admin
        .create_api_key(Role::Review, "reviewer")
        .await
        .unwrap();
    // Keys reach every member by push; the reviewer works through another member.
    let reviewer = client_with_key(&nodes[1], dir.path(), &key).await;
    let want: BTreeSet<ItemId> = flagged.iter().map(|(_, id)| *id).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queued = whole_queue(&reviewer).await;
        assert_eq!(
            queued.len(),
            queued.iter().collect::<BTreeSet<_>>().len(),
            "no item twice"
        );
        if queued.iter().copied().collect::<BTreeSet<_>>() == want {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{queued:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Led by node-3, decided through node-2.
    let (user, approved) = flagged[4].clone();
    let stored = reviewer.review(user, approved, true).await.unwrap();
    assert_eq!(stored.receipt.status, Status::Accepted);
    assert!(stored.receipt.replicas.len() >= 2, "{stored:?}");
    let (user, rejected) = flagged[0].clone();
    let stored = reviewer
        .review(user.clone(), rejected, false)
        .await
        .unwrap();
    assert!(matches!(stored.receipt.status, Status::Rejected { .. }));
    // Once decided, not waiting any more.
    let again = reviewer.review(user, rejected, true).await;
    assert!(
        matches!(again, Err(ClientError::Server(ErrorCode::Invalid { .. }))),
        "{again:?}"
    );
    assert_eq!(
        admin.get(approved).await.unwrap().unwrap().receipt.status,
        Status::Accepted
    );
    let left: BTreeSet<ItemId> = whole_queue(&reviewer).await.into_iter().collect();
    assert_eq!(left.len(), want.len() - 2);
    assert!(!left.contains(&approved) && !left.contains(&rejected));

    // A key without the review role may not look.
    let submitter_key = admin.create_api_key(Role::Submit, "app").await.unwrap();
    let submitter = client_with_key(&nodes[2], dir.path(), &submitter_key).await;
    assert!(matches!(
        submitter.review_queue(None, 10).await,
        Err(ClientError::Server(ErrorCode::Forbidden))
    ));

    // Every flagged item and both decisions are events, held by every member.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = reviewer
            .events(&EventQuery::default(), None, 100)
            .await
            .unwrap();
        let flagged_events: BTreeSet<ItemId> = page
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::ItemFlagged { item, .. } => Some(*item),
                _ => None,
            })
            .collect();
        let reviewed = page
            .events
            .iter()
            .filter(|e| e.event_type() == EventType::ItemReviewed)
            .count();
        if flagged_events == want && reviewed == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{flagged_events:?} {reviewed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
