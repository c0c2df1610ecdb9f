//! A three-node cluster as three `chorus agent` processes on loopback, with certificates
//! from `chorus certs`: members find each other, a request sent to a node that does not
//! own its user is forwarded to the owner, a SIGKILLed owner's users get `Unavailable`
//! quickly while other users are served, the survivors declare it down within the
//! detection bound and the ring moves (its items are read from another replica), and
//! its restart rejoins under a new incarnation.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chorus_client::ClientError;
use chorus_protocol::{ErrorCode, Item, Kind, Role};
use support::cluster::{
    Node, PROBE_MS, cluster_with, formed, plain_client, submit_once_led, until, user_owned_by,
};

/// JSON logs, with the request spans of the client server and the forward receiver.
const LOG: &str = r#"
[log]
format = "json"
level = "warn,chorus_node::server::stream=debug,chorus_node::server::dispatch=debug,chorus_node::cluster::links::receiver=debug"
"#;

/// The request ids of the spans `node` logged `message` in.
fn logged_request_ids(node: &Node, message: &str) -> BTreeSet<u64> {
    let log = std::fs::read_to_string(node.data.with_extension("log")).unwrap();
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == message)
        .filter_map(|event| event["span"]["request_id"].as_u64())
        .collect()
}

/// The ids of the requests whose records `node` took in as a follower: the request id of
/// each shipment it answered, or the ids its span names when it served several.
fn shipped_request_ids(node: &Node) -> BTreeSet<u64> {
    let log = std::fs::read_to_string(node.data.with_extension("log")).unwrap();
    let mut ids = BTreeSet::new();
    for event in log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "forward answered" && event["span"]["kind"] == "ship")
    {
        match event["span"]["request_ids"].as_str() {
            Some(several) => ids.extend(
                several
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(", ")
                    .filter_map(|id| id.parse::<u64>().ok()),
            ),
            None => ids.extend(event["span"]["request_id"].as_u64()),
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_owner_down_detection_ring_move_and_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster_with(dir.path(), LOG);
    for node in &mut nodes {
        node.start();
    }
    let epoch = formed(&nodes).await;

    // A submit sent to node-1 for a user node-3 owns is stored by node-3.
    let client = plain_client(&nodes[0], dir.path()).await;
    let far_user = user_owned_by(&nodes[0], "node-3", "far");
    let near_user = user_owned_by(&nodes[0], "node-1", "near");
    let far = Item::new(far_user.clone(), Kind::Text);
    let receipt = submit_once_led(&client, far.clone()).await.unwrap();
    assert_eq!(receipt.owner.0, "node-3");
    // One request id on both nodes the submit touched: node-1 forwarded it under the id
    // it minted, and node-3 served the forward under the same id.
    let forwarded = logged_request_ids(&nodes[0], "forwarding");
    let served = logged_request_ids(&nodes[2], "forward answered");
    let request = *forwarded
        .intersection(&served)
        .next()
        .unwrap_or_else(|| panic!("node-1 forwarded {forwarded:?}, node-3 served {served:?}"));
    // node-3 leads the user's partition and shipped the record to node-1 and node-2,
    // which logged the shipment under the same request id.
    for follower in [&nodes[0], &nodes[1]] {
        until(Duration::from_secs(10), "the shipment logged", || {
            shipped_request_ids(follower).contains(&request)
        })
        .await;
    }
    let page = client.list_by_user(&far_user, None, 10).await.unwrap();
    assert_eq!(page.items.len(), 1, "listed at the owner through node-1");
    let found = client
        .get(far.id)
        .await
        .unwrap()
        .expect("read back through node-1");
    assert_eq!(found.item.user_id, far_user);

    // API keys are the cluster's: each member's first admin key reaches the others
    // over the links, and a key created on node-1 is pushed to node-2 (whose listing
    // reads its own copy only).
    let on_node_2 = plain_client(&nodes[1], dir.path()).await;
    let listed = |keys: &[chorus_protocol::ApiKeyInfo], name: &str| {
        keys.iter().filter(|k| k.name == name).count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let keys = on_node_2.list_api_keys().await.unwrap();
        if listed(&keys, "bootstrap-admin") == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "node-2 holds {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.create_api_key(Role::Read, "pushed").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(&on_node_2.list_api_keys().await.unwrap(), "pushed") == 0 {
        assert!(
            Instant::now() < deadline,
            "the key created on node-1 never reached node-2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    on_node_2.close().await;

    // node-3 dies: its users get Unavailable quickly, node-1's users are unaffected.
    let incarnation = nodes[0].sees("node-3").unwrap().1;
    nodes[2].kill();
    let killed = Instant::now();
    let started = Instant::now();
    let refused = client.submit(Item::new(far_user.clone(), Kind::Text)).await;
    let took = started.elapsed();
    match refused {
        // Refused before the ring moved; or, if detection was already done, stored by
        // the new owner: never a hang, never a wrong receipt.
        Err(ClientError::Server(ErrorCode::Unavailable { .. })) => {}
        Ok(receipt) => assert_ne!(receipt.owner.0, "node-3"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    let near = client
        .submit(Item::new(near_user, Kind::Text))
        .await
        .unwrap();
    assert_eq!(near.owner.0, "node-1");

    // Both survivors declare it down within the detection bound; the ring moves.
    let settings = chorus_node::cluster::membership::GossipSettings {
        expected_cluster_size: 3,
        probe_period_ms: PROBE_MS,
        probe_rtt_ms: 100,
        ..Default::default()
    };
    let bound = settings.suspect_to_down_max() + settings.probe_period() * 6;
    until(bound, "node-3 down on both survivors", || {
        nodes[..2]
            .iter()
            .all(|n| n.sees("node-3").is_some_and(|(s, _)| s == "down"))
    })
    .await;
    eprintln!(
        "node-3 declared down everywhere {:?} after SIGKILL",
        killed.elapsed()
    );
    let moved = nodes[0].ring();
    assert_ne!(moved["epoch"].as_u64(), Some(epoch));
    assert_eq!(moved["nodes"].as_array().unwrap().len(), 2);
    assert!(moved["moved_last_change"].as_u64().unwrap() > 0);
    // node-3's users are served by their new owner now.
    let receipt = client
        .submit(Item::new(far_user.clone(), Kind::Text))
        .await
        .unwrap();
    assert_ne!(receipt.owner.0, "node-3");
    // The item acknowledged by node-3 before it died is read from another replica.
    let found = client
        .get(far.id)
        .await
        .unwrap()
        .expect("an acknowledged item outlives its leader");
    assert_eq!(found.item.id, far.id);

    // node-3 restarts: rejoins under a new incarnation; the ring is whole again.
    nodes[2].start();
    until(
        Duration::from_secs(30),
        "node-3 alive again everywhere",
        || {
            nodes[..2].iter().all(|n| {
                n.sees("node-3")
                    .is_some_and(|(s, run)| s == "alive" && run > incarnation)
            })
        },
    )
    .await;
    until(Duration::from_secs(10), "the first ring again", || {
        nodes
            .iter()
            .all(|n| n.ring()["epoch"].as_u64() == Some(epoch))
    })
    .await;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Some(found)) = client.get(far.id).await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the item written before the crash is readable again");
    assert_eq!(found.item.id, far.id);
    client.close().await;
}
