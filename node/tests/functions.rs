//! Function stats across a cluster: three `chorus agent` processes on loopback (three
//! replicas of each partition), items about two versions of a function written for
//! users every member leads, and one page asked of one member: every partition counted
//! once (by its leader), each version's items counted once (not once per replica), and
//! judged by the node's thresholds.

mod support;

use std::time::Duration;

use chorus_protocol::{ExecutionMetrics, FunctionRef, Item, Kind, UpdateReason};
use support::cluster::{cluster, formed, plain_client, submit_once_led, until, user_owned_by};

fn about(user: &str, version: &str, rating: u8, errors: f64) -> Item {
    let mut item = Item::new(user.to_string(), Kind::Rating);
    item.rating = Some(rating);
    item.function = Some(FunctionRef {
        name: "resize".into(),
        version: version.into(),
    });
    item.metrics = Some(ExecutionMetrics {
        success_rate: 1.0 - errors,
        avg_duration_ms: 8.0,
        error_rate: errors,
    });
    item
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_function_stats_counts_every_partition_once_across_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let client = plain_client(&nodes[0], dir.path()).await;
    // Users led by each member; 20 poor items about 1.0 each, 5 good ones about 2.0.
    let mut items = Vec::new();
    for owner in ["node-1", "node-2", "node-3"] {
        let user = user_owned_by(&nodes[0], owner, owner);
        items.extend((0..20).map(|_| about(&user, "1.0", 2, 0.1)));
        items.extend((0..5).map(|_| about(&user, "2.0", 5, 0.0)));
    }
    for item in items {
        submit_once_led(&client, item).await.unwrap();
    }
    let page = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let page = client
                .functions(Some("resize".into()), None, 10)
                .await
                .unwrap();
            let items: u64 = page.versions.iter().map(|v| v.stats.items).sum();
            if items == 75 && page.covered.0 == page.covered.1 {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every item counted once, every partition covered");
    assert_eq!(page.versions.len(), 2);
    assert_eq!(page.next, None);
    let old = &page.versions[0];
    assert_eq!(old.function.version, "1.0");
    assert_eq!(old.stats.items, 60);
    assert!(matches!(
        old.requires_update.0[..],
        [
            UpdateReason::LowRating { over: 60, .. },
            UpdateReason::HighErrorRate { over: 60, .. }
        ]
    ));
    assert_eq!(page.versions[1].stats.items, 15);
    assert!(page.versions[1].requires_update.0.is_empty());
    // Paged: one version, then the rest after it.
    let first = client.functions(None, None, 1).await.unwrap();
    assert_eq!(first.versions.len(), 1);
    let rest = client.functions(None, first.next, 10).await.unwrap();
    assert_eq!(rest.versions.len(), 1);
    assert_eq!(rest.versions[0].function.version, "2.0");

    // A member down: its partitions' new leaders count them once they take over.
    nodes[2].kill();
    until(Duration::from_secs(20), "node-3 down on node-1", || {
        nodes[0]
            .sees("node-3")
            .is_none_or(|(state, _)| state != "alive")
    })
    .await;
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            // A page not asked for before: node-1 keeps pages for a second.
            let page = client.functions(None, None, 9).await.unwrap();
            let items: u64 = page.versions.iter().map(|v| v.stats.items).sum();
            if items == 75 && page.covered.0 == page.covered.1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the survivors count every item after the failover");
}
