//! Users' rights across a cluster: three `chorus agent` processes on loopback. A user's
//! export holds every item, whichever member is asked; a deletion asked of any member
//! is made by the user's leader and answered once a write quorum holds the tombstones;
//! a replica that was down while it happened applies it when it returns (its copy of
//! the partition matches the leader's, and its own store lists nothing of the user),
//! and nothing brings a deleted item back.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_client::{Client, EventQuery, EventType};
use chorus_protocol::{Item, ItemId, Kind, Status};
use support::cluster::{cluster_with, digest_of, formed, plain_client, until, user_owned_by};
use support::open_stopped_store;

async fn export(client: &Client, user: &str, page: u32) -> Vec<ItemId> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let got = client.export_user(user, after, page).await.unwrap();
        ids.extend(got.items.iter().map(|s| s.item.id));
        match got.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

async fn submit_all(client: &Client, items: Vec<Item>) {
    tokio::time::timeout(Duration::from_secs(20), async {
        for chunk in items.chunks(100) {
            loop {
                match client.submit_batch(chunk.to_vec()).await {
                    Ok(outcomes) if outcomes.iter().all(|o| o.is_ok()) => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    })
    .await
    .expect("the leaders took over in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_reaches_every_replica_even_one_that_was_down_and_nothing_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    // One user writes 300 items at once here, past the default per-user limit.
    let mut nodes = cluster_with(
        dir.path(),
        "[limits]\nper_user_per_minute = 100000\nper_user_burst = 100000",
    );
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let client = plain_client(&nodes[0], dir.path()).await;
    // The user is led by node-2, so node-1 forwards the export and the deletion.
    let user = user_owned_by(&nodes[0], "node-2", "gone");
    let other = user_owned_by(&nodes[0], "node-2", "kept");
    let items: Vec<Item> = (0..300)
        .map(|i| {
            let mut item = Item::new(user.clone(), Kind::Text);
            item.text = format!("personal note {i}");
            item
        })
        .collect();
    let ids: BTreeSet<ItemId> = items.iter().map(|i| i.id).collect();
    submit_all(&client, items.clone()).await;
    submit_all(&client, vec![Item::new(other.clone(), Kind::Text)]).await;

    let exported = export(&client, &user, 64).await;
    assert_eq!(exported.len(), 300);
    assert_eq!(exported.iter().copied().collect::<BTreeSet<_>>(), ids);

    let partition = nodes[0].ctl(&["ring", "--user", &user])["result"]["user"]["partition"]
        .as_u64()
        .unwrap();
    nodes[2].kill();
    let deleted = client.delete_user(&user).await.unwrap();
    assert_eq!(deleted, 300);
    assert!(export(&client, &user, 100).await.is_empty());
    assert_eq!(client.get(items[0].id).await.unwrap(), None);
    assert_eq!(
        client
            .list_by_user(&other, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1,
        "another user's items stay"
    );
    // A retry of a deleted item is answered from its tombstone and stores nothing.
    let retried = client.submit(items[1].clone()).await.unwrap();
    assert_eq!(retried.status, Status::Deleted);
    assert!(export(&client, &user, 100).await.is_empty());

    // node-3 returns and catches up by sequence: its copy matches the leader's.
    nodes[2].start();
    formed(&nodes).await;
    until(Duration::from_secs(30), "node-3 caught up", || {
        let leader = digest_of(&nodes[1], partition);
        leader.is_some() && digest_of(&nodes[2], partition) == leader
    })
    .await;
    // What node-3's own store holds of the user: tombstones only.
    nodes[2].terminate();
    until(Duration::from_secs(20), "node-3 stopped", || {
        nodes[2].exited().is_some()
    })
    .await;
    let store = open_stopped_store(&nodes[2].data, &nodes[2].name, 128);
    assert_eq!(store.list_by_user(&user, None, 1000).unwrap().0, []);
    assert_eq!(
        store.get(items[5].id).unwrap().unwrap().receipt.status,
        Status::Deleted
    );
    assert_eq!(store.count_user(&user).unwrap(), 0);
    drop(store);

    // Both rights are events.
    let page = client
        .events(&EventQuery::default(), None, 100)
        .await
        .unwrap();
    let types: Vec<EventType> = page.events.iter().map(|e| e.event_type()).collect();
    assert!(types.contains(&EventType::UserExported), "{types:?}");
    assert!(types.contains(&EventType::UserDeleted), "{types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_old_items_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster_with(
        dir.path(),
        "[retention]\nmax_age_secs = 3\ncheck_interval_secs = 1",
    );
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let client = plain_client(&nodes[0], dir.path()).await;
    let users: Vec<String> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|owner| user_owned_by(&nodes[0], owner, "aged"))
        .collect();
    for user in &users {
        submit_all(
            &client,
            (0..5)
                .map(|_| Item::new(user.clone(), Kind::Text))
                .collect(),
        )
        .await;
    }
    let partitions: Vec<u64> = users
        .iter()
        .map(|user| {
            nodes[0].ctl(&["ring", "--user", user])["result"]["user"]["partition"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // Past three seconds, each leader's next round writes the tombstones.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut left = 0;
            for user in &users {
                left += client
                    .list_by_user(user, None, 10)
                    .await
                    .unwrap()
                    .items
                    .len();
            }
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("every item expired");
    // And on every replica: each copy of those partitions matches its leader's.
    for partition in partitions {
        until(Duration::from_secs(20), "the replicas agree", || {
            let first = digest_of(&nodes[0], partition);
            first.is_some()
                && digest_of(&nodes[1], partition) == first
                && digest_of(&nodes[2], partition) == first
        })
        .await;
    }
    let fresh = Item::new(users[0].clone(), Kind::Text);
    submit_all(&client, vec![fresh.clone()]).await;
    assert_eq!(
        client.get(fresh.id).await.unwrap().unwrap().item.id,
        fresh.id
    );
}
