//! Replication across three `chorus agent` processes with the cluster defaults
//! (replication factor 3, write quorum 2): receipts name the replicas that hold an
//! item; when a partition's leader is SIGKILLed its users are served again by another
//! replica after detection and catch-up, and every acknowledged item stays in their
//! listing, once each; the killed node restarts, catches up and leads again with
//! nothing lost; and when another replica dies, the listing is still complete.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientError};
use chorus_protocol::{ErrorCode, Item, ItemId, Kind, Receipt};
use support::cluster::{cluster, formed, plain_client, until, user_owned_by};

/// Submits `item` until it is acknowledged (the same id each time, so a retry never
/// stores it twice), refusals while leadership moves being retried.
async fn submit_acked(client: &Client, item: &Item, limit: Duration) -> Receipt {
    let started = Instant::now();
    loop {
        match client.submit(item.clone()).await {
            Ok(receipt) => return receipt,
            Err(ClientError::Server(
                ErrorCode::Unavailable { .. }
                | ErrorCode::NotOwner { .. }
                | ErrorCode::Timeout
                | ErrorCode::CircuitOpen { .. },
            ))
            | Err(ClientError::Timeout) => {}
            Err(other) => panic!("submit of {:?} failed: {other:?}", item.id),
        }
        assert!(
            started.elapsed() < limit,
            "{:?} not acknowledged within {limit:?}",
            item.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every id in `user`'s listing, each page after the last; `None` while the listing is
/// refused (a replica that does not lead the partition, or is catching up).
async fn listed(client: &Client, user: &str) -> Option<Vec<ItemId>> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        match client.list_by_user(user, after, 100).await {
            Ok(page) => {
                ids.extend(page.items.iter().map(|s| s.item.id));
                match page.next {
                    Some(next) => after = Some(next),
                    None => return Some(ids),
                }
            }
            Err(ClientError::Server(ErrorCode::Unavailable { .. })) | Err(ClientError::Timeout) => {
                return None;
            }
            Err(other) => panic!("listing {user} failed: {other:?}"),
        }
    }
}

/// Waits until `user`'s listing holds exactly `acked`, each once.
async fn complete(client: &Client, user: &str, acked: &[ItemId], what: &str) {
    let want: BTreeSet<ItemId> = acked.iter().copied().collect();
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(ids) = listed(client, user).await {
            let unique: BTreeSet<ItemId> = ids.iter().copied().collect();
            assert_eq!(unique.len(), ids.len(), "{what}: an item listed twice");
            assert!(
                unique.is_superset(&want),
                "{what}: {} acknowledged items missing from the listing",
                want.difference(&unique).count()
            );
            if unique == want {
                return;
            }
            last = Some(unique.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what}: the listing never held the {} acknowledged items ({last:?})",
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_items_survive_a_lost_leader_and_listings_stay_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let via_1 = plain_client(&nodes[0], dir.path()).await;
    let via_2 = plain_client(&nodes[1], dir.path()).await;
    let carol = user_owned_by(&nodes[0], "node-3", "carol");
    let mut acked = Vec::new();

    // Writes are acknowledged once two replicas hold them, and the receipt says which.
    for _ in 0..20 {
        let item = Item::new(carol.clone(), Kind::Text);
        let receipt = submit_acked(&via_1, &item, Duration::from_secs(30)).await;
        assert_eq!(receipt.owner.0, "node-3");
        assert!(
            receipt.replicas.len() >= 2 && receipt.replicas.iter().any(|r| r.0 == "node-3"),
            "replicas {:?}",
            receipt.replicas
        );
        acked.push(item.id);
    }
    complete(&via_1, &carol, &acked, "before the crash").await;

    // The leader dies: another replica takes over after detection and catch-up.
    nodes[2].kill();
    let killed = Instant::now();
    let item = Item::new(carol.clone(), Kind::Text);
    let receipt = submit_acked(&via_1, &item, Duration::from_secs(30)).await;
    eprintln!(
        "first acknowledged write for the dead leader's user {:?} after SIGKILL",
        killed.elapsed()
    );
    assert_ne!(receipt.owner.0, "node-3");
    acked.push(item.id);
    for _ in 0..20 {
        let item = Item::new(carol.clone(), Kind::Text);
        submit_acked(&via_1, &item, Duration::from_secs(10)).await;
        acked.push(item.id);
    }
    complete(&via_1, &carol, &acked, "with the leader down").await;

    // It comes back: it catches up from the others before it leads again.
    nodes[2].start();
    formed(&nodes).await;
    until(
        Duration::from_secs(30),
        "node-3 leading carol again",
        || nodes[0].ctl(&["ring", "--user", &carol])["result"]["user"]["owner"] == "node-3",
    )
    .await;
    complete(&via_1, &carol, &acked, "after the rejoin").await;
    for _ in 0..10 {
        let item = Item::new(carol.clone(), Kind::Text);
        let receipt = submit_acked(&via_1, &item, Duration::from_secs(30)).await;
        assert_eq!(receipt.owner.0, "node-3", "the rejoined node leads again");
        acked.push(item.id);
    }
    complete(
        &via_1,
        &carol,
        &acked,
        "after writes to the rejoined leader",
    )
    .await;

    // Another replica dies: the listing is still complete from the survivors.
    nodes[0].kill();
    complete(&via_2, &carol, &acked, "with node-1 down").await;
    via_1.close().await;
    via_2.close().await;
}
