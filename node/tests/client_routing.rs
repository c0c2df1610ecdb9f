//! The SDK's ring routing against a real node: the seeds it starts from, the snapshot
//! it fetches, the identity a member is reached under, and routed requests served by
//! their owner. A single node owns every partition, so the SDK routes nothing and every
//! call works as before.

mod support;

use chorus_client::{
    Client, ClientConfig, Credentials, Item, Kind, Request, Response, RoutedRequest,
};
use std::time::Duration;

use support::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_first_seed_costs_a_moment_not_its_connect_timeout() {
    let node = TestNode::start().await;
    // Takes every packet and never answers, like a host whose node hangs.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(60),
        ..ClientConfig::default()
    };
    let seeds = [silent.local_addr().unwrap(), node.addr];
    let connect = Client::connect(
        &seeds,
        Credentials::new(node.ca_pem.clone(), &node.admin_key),
        config,
    );
    // Tried one after the other, the live seed would wait until the silent one's
    // attempt gives up (15 s here, at QUIC's idle timeout, well before the 60 s).
    let client = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("the second seed was tried beside the silent first")
        .unwrap();
    client.submit(Item::new("alice", Kind::Text)).await.unwrap();
    client.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_fetches_the_ring_and_a_single_node_serves_everything_unrouted() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let ring = client.ring().expect("fetched at connect");
    assert_eq!(client.ring_epoch(), Some(ring.epoch));
    assert_eq!(ring.members.len(), 1);
    assert_eq!(ring.members[0].node.0, "test-node");
    assert_eq!(ring.members[0].addr.parse(), Ok(node.addr));

    let item = Item::new("alice", Kind::Text);
    assert_eq!(
        client.submit(item.clone()).await.unwrap().owner.0,
        "test-node"
    );
    let batch: Vec<Item> = (0..10)
        .map(|i| Item::new(format!("user-{i}"), Kind::Text))
        .collect();
    let outcomes = client.submit_batch(batch.clone()).await.unwrap();
    let ids: Vec<_> = outcomes.into_iter().map(|o| o.unwrap().id).collect();
    assert_eq!(ids, batch.iter().map(|i| i.id).collect::<Vec<_>>());
    assert!(client.get(item.id).await.unwrap().is_some());
    assert_eq!(client.list_all_by_user("alice", 10).await.unwrap().len(), 1);
    assert_eq!(client.refresh_ring().await, Some(ring.epoch));
    assert_eq!(client.routing_stats(), Default::default());
    assert!(client.member_connections().is_empty());
    client.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_reachable_at_its_advertised_address_under_its_own_name() {
    let node = TestNode::start().await;
    let ring = node.client().await.ring().unwrap();
    let member = &ring.members[0];
    let credentials = Credentials::new(node.ca_pem.clone(), node.admin_key.clone())
        .with_server_name(member.node.0.clone());
    let client = Client::connect(
        &[member.addr.parse().unwrap()],
        credentials,
        ClientConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(client.welcome().unwrap().node, member.node);
    client.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_request_is_served_by_its_owner() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let epoch = client.ring_epoch().unwrap();
    let item = Item::new("bob", Kind::Text);
    let routed = Request::Routed {
        epoch,
        request: RoutedRequest::Submit(item.clone()),
    };
    match client.request(routed).await.unwrap() {
        Response::Receipt(receipt) => assert_eq!(receipt.owner.0, "test-node"),
        other => panic!("expected a receipt, got {other:?}"),
    }
    assert_eq!(client.list_all_by_user("bob", 10).await.unwrap().len(), 1);
    client.close().await;
    node.stop().await;
}
