//! The actor tree end to end, through `NodeHandle` and the supervisor, on a real store.

mod support;

use support::caller;

use std::sync::Arc;
use std::time::Duration;

use chorus_actors::messages::Children;
use chorus_actors::restart::RestartPolicy;
use chorus_actors::supervisor::{NodeSupervisor, SupervisorArgs};
use chorus_actors::{Durability, NodeHandle, PipelineConfig, Store, StoreConfig};
use chorus_protocol::{ErrorCode, Item, Kind, Role, Status};
use ractor::{Actor, ActorStatus};
use tokio::sync::watch;

fn config(dir: &std::path::Path) -> StoreConfig {
    support::store_config(dir, Durability::Full)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_all_get_receipts_and_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeHandle::start(config(dir.path())).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..10 {
                let mut item = Item::new(format!("user-{}", t % 8), Kind::Text);
                item.text = format!("task {t} item {i}");
                let receipt = node.submit(&caller(), item.clone()).await.unwrap();
                assert_eq!(receipt.id, item.id);
                assert_eq!(receipt.status, Status::Accepted);
                out.push(item);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), 640);
    for item in &all {
        let stored = node
            .get(item.id)
            .await
            .unwrap()
            .expect("acknowledged item is readable");
        assert_eq!(&stored.item, item);
    }
    let (page, next) = node
        .list_by_user("user-3".into(), None, 1000)
        .await
        .unwrap();
    assert_eq!((page.len(), next), (80, None));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resubmit_returns_the_first_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeHandle::start(config(dir.path())).await.unwrap();
    let item = Item::new("alice", Kind::Bug);
    let first = node.submit(&caller(), item.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = node.submit(&caller(), item).await.unwrap();
    assert_eq!(again.stored_at, first.stored_at);
    assert_eq!(again, first);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_invalid_item_fails_alone_and_the_rest_of_the_batch_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeHandle::start(config(dir.path())).await.unwrap();
    let good1 = Item::new("bob", Kind::Text);
    let mut bad = Item::new("bob", Kind::Rating);
    bad.rating = Some(9);
    let good2 = Item::new("bob", Kind::Text);
    let outcomes = node
        .submit_batch(&caller(), vec![good1.clone(), bad.clone(), good2.clone()])
        .await
        .unwrap();
    assert_eq!(outcomes[0].as_ref().unwrap().id, good1.id);
    assert!(matches!(&outcomes[1], Err(ErrorCode::Invalid { field, .. }) if field == "rating"));
    assert_eq!(outcomes[2].as_ref().unwrap().id, good2.id);
    assert!(node.get(bad.id).await.unwrap().is_none());
    // Shape errors fail the whole request.
    assert!(matches!(
        node.submit_batch(&caller(), vec![]).await,
        Err(ErrorCode::Invalid { .. })
    ));
    assert!(matches!(
        node.list_by_user("bob".into(), None, 0).await,
        Err(ErrorCode::Invalid { .. })
    ));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn keys_and_data_survive_a_shutdown_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeHandle::start(config(dir.path())).await.unwrap();
    let admin = node
        .ensure_admin_key()
        .await
        .unwrap()
        .expect("first start makes a key");
    assert_eq!(node.ensure_admin_key().await.unwrap(), None);
    let reader = node
        .create_api_key(Role::Read, "dash".into())
        .await
        .unwrap();
    let item = Item::new("carol", Kind::Feature);
    node.submit(&caller(), item.clone()).await.unwrap();
    node.shutdown().await.unwrap();

    let node = NodeHandle::start(config(dir.path())).await.unwrap();
    assert_eq!(node.authenticate(&admin).await.unwrap(), Some(Role::Admin));
    assert_eq!(node.authenticate(&reader).await.unwrap(), Some(Role::Read));
    assert_eq!(node.authenticate("chorus_nope").await.unwrap(), None);
    assert_eq!(node.get(item.id).await.unwrap().unwrap().item, item);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_partition_mismatch_fails_start() {
    let dir = tempfile::tempdir().unwrap();
    NodeHandle::start(config(dir.path()))
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let mut other = config(dir.path());
    other.partitions = 32;
    let err = NodeHandle::start(other).await.unwrap_err();
    assert!(err.to_string().contains("16 partitions"), "{err}");
}

/// A supervisor (default pipeline) on a fresh store under `dir`, and where it publishes
/// its children.
async fn spawn_supervisor(
    dir: &std::path::Path,
    policy: RestartPolicy,
) -> (
    watch::Receiver<Children>,
    ractor::ActorRef<chorus_actors::supervisor::SupervisorMsg>,
    tokio::task::JoinHandle<()>,
) {
    let store = Arc::new(Store::open(config(dir)).unwrap());
    let (tx, rx) = watch::channel(Children::default());
    let args = SupervisorArgs::new(store, tx, PipelineConfig::default(), policy).unwrap();
    let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args).await.unwrap();
    (rx, supervisor, join)
}

async fn next_store(rx: &mut watch::Receiver<Children>, old: ractor::ActorId) -> Children {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            rx.changed().await.unwrap();
            let c = rx.borrow().clone();
            if c.store.as_ref().is_some_and(|s| s.get_id() != old) {
                return c;
            }
        }
    })
    .await
    .expect("store restarted")
}

#[tokio::test]
async fn a_failed_store_actor_is_restarted_and_the_new_one_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rx, supervisor, join) = spawn_supervisor(dir.path(), RestartPolicy::default()).await;
    let before = rx.borrow_and_update().clone();
    let old = before.store.unwrap();
    old.kill();
    let after = next_store(&mut rx, old.get_id()).await;
    let intake = after.intake.unwrap();
    let outcome = intake
        .call(
            |reply| chorus_actors::messages::IntakeMsg::Submit {
                caller: caller(),
                items: vec![Item::new("dan", Kind::Text)],
                reply,
                arrived: std::time::Instant::now(),
                request: None,
            },
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.unwrap()[0].is_ok());
    supervisor.stop(None);
    join.await.unwrap();
}

#[tokio::test]
async fn a_store_actor_failing_too_often_stops_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rx, supervisor, join) = spawn_supervisor(dir.path(), RestartPolicy::default()).await;
    for _ in 0..5 {
        let old = rx.borrow_and_update().store.clone().unwrap();
        old.kill();
        next_store(&mut rx, old.get_id()).await;
    }
    let last = rx.borrow_and_update().store.clone().unwrap();
    last.kill();
    tokio::time::timeout(Duration::from_secs(5), join)
        .await
        .expect("supervisor gave up")
        .unwrap();
    assert_eq!(supervisor.get_status(), ActorStatus::Stopped);
    assert!(rx.borrow().store.is_none() && rx.borrow().intake.is_none());
}

#[tokio::test]
async fn a_killed_validator_pool_answers_unavailable_then_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rx, supervisor, join) = spawn_supervisor(
        dir.path(),
        RestartPolicy {
            base_backoff: Duration::from_millis(200),
            ..RestartPolicy::default()
        },
    )
    .await;
    let before = rx.borrow_and_update().clone();
    let intake = before.intake.unwrap();
    let old = before.validators.unwrap();
    old.stop_and_wait(None, None).await.unwrap();
    // Unpublished at once: intake answers `Unavailable` instead of hanging.
    let submit = |user: &'static str| {
        intake.call(
            move |reply| chorus_actors::messages::IntakeMsg::Submit {
                caller: caller(),
                items: vec![Item::new(user, Kind::Text)],
                reply,
                arrived: std::time::Instant::now(),
                request: None,
            },
            None,
        )
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.borrow_and_update().validators.is_some() {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("validators unpublished");
    let outcome = submit("erin").await.unwrap().unwrap();
    assert!(
        matches!(outcome, Err(ErrorCode::Unavailable { .. })),
        "{outcome:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if rx
                .borrow_and_update()
                .validators
                .as_ref()
                .is_some_and(|v| v.get_id() != old.get_id())
            {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("validators restarted");
    let outcome = submit("fred").await.unwrap().unwrap();
    assert!(outcome.unwrap()[0].is_ok());
    supervisor.stop(None);
    join.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_puts_new_limits_and_tiers_in_force_and_refuses_invalid_ones() {
    use chorus_actors::policy::rate_limit::{BucketConfig, Rate};
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = PipelineConfig::default();
    pipeline.limits.per_user.bucket = BucketConfig {
        capacity: 1,
        refill: Rate::per_minute(1),
    };
    let node = NodeHandle::start_with(config(dir.path()), pipeline)
        .await
        .unwrap();
    let submit = |node: &NodeHandle| {
        let node = node.clone();
        async move { node.submit(&caller(), Item::new("alice", Kind::Text)).await }
    };
    submit(&node).await.unwrap();
    assert!(matches!(
        submit(&node).await,
        Err(ErrorCode::RateLimited { .. })
    ));

    let mut live = node.live_policy();
    live.limits.per_user.bucket.capacity = 3;
    live.tiers.batch.weight = std::num::NonZeroU32::new(7).unwrap();
    node.reconfigure(live).unwrap();
    assert_eq!(node.live_policy(), live);
    // The next submission meets the new limit with a full bucket: three more pass.
    for _ in 0..3 {
        submit(&node).await.unwrap();
    }
    assert!(matches!(
        submit(&node).await,
        Err(ErrorCode::RateLimited { .. })
    ));

    // Another live change (the tiers only) leaves the buckets as they are.
    let mut tiers_only = live;
    tiers_only.tiers.batch.weight = std::num::NonZeroU32::new(8).unwrap();
    node.reconfigure(tiers_only).unwrap();
    assert!(matches!(
        submit(&node).await,
        Err(ErrorCode::RateLimited { .. })
    ));

    let mut invalid = tiers_only;
    invalid.degradation.critical_only_at = 0.1;
    assert!(node.reconfigure(invalid).is_err());
    assert_eq!(node.live_policy(), tiers_only);
    node.shutdown().await.unwrap();
}
