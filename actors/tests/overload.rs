//! Overload: with the store slowed down and more submissions than it can take, the tier
//! queues hold the backlog, realtime work is served first and answered, a full tier is
//! refused with `Overloaded{tier, retry_after_ms}` at once, and nobody is left waiting;
//! an operator can pin the degradation level to shed everything but the urgent tiers.

mod support;

use support::caller;

use std::num::NonZeroUsize;
use std::time::Duration;

use chorus_actors::DegradeCommand;
use chorus_actors::PipelineConfig;
use chorus_actors::policy::bulkhead::BulkheadConfig;
use chorus_actors::policy::degradation::Level;
use chorus_actors::policy::tier_queue::TierQueueConfig;
use chorus_protocol::{ErrorCode, Item, Kind, Tier};

fn item(user: String, tier: Tier) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.tier = tier;
    item
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_is_served_while_a_full_batch_tier_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut tiers = TierQueueConfig::default();
    tiers.batch.capacity = NonZeroUsize::new(8).unwrap();
    let pipeline = PipelineConfig {
        tiers,
        store_writes: BulkheadConfig {
            max_concurrent: 4,
            max_queue: 4,
            max_queue_wait: None,
        },
        ..PipelineConfig::default()
    };
    let node = support::start(dir.path(), pipeline).await;
    node.store_for_tests()
        .inject_write_delay(Duration::from_millis(10));

    let mut batch = tokio::task::JoinSet::new();
    for i in 0..100 {
        let node = node.clone();
        batch.spawn(async move {
            node.submit(&caller(), item(format!("b{i}"), Tier::Batch))
                .await
        });
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut realtime = tokio::task::JoinSet::new();
    for i in 0..10 {
        let node = node.clone();
        realtime.spawn(async move {
            node.submit(&caller(), item(format!("r{i}"), Tier::Realtime))
                .await
        });
    }
    let status = node.queues().await.unwrap();
    assert!(status.in_flight <= 8, "{status:?}");

    let realtime = tokio::time::timeout(Duration::from_secs(10), realtime.join_all())
        .await
        .expect("realtime answered");
    for outcome in &realtime {
        assert!(outcome.is_ok(), "realtime refused: {outcome:?}");
    }
    let batch = tokio::time::timeout(Duration::from_secs(30), batch.join_all())
        .await
        .expect("every batch submit answered");
    let refused = batch
        .iter()
        .filter(|o| {
            matches!(o, Err(ErrorCode::Overloaded { tier: Tier::Batch, retry_after_ms }) if *retry_after_ms > 0)
        })
        .count();
    let stored = batch.iter().filter(|o| o.is_ok()).count();
    assert!(refused > 0, "a full batch tier must refuse");
    assert_eq!(
        refused + stored,
        100,
        "only Overloaded or a receipt: {batch:?}"
    );

    // An operator pins the level: only realtime and priority get in.
    assert_eq!(
        node.degrade(DegradeCommand::Set(Level::CriticalOnly)).await,
        Ok(Level::CriticalOnly)
    );
    node.store_for_tests().inject_write_delay(Duration::ZERO);
    assert!(matches!(
        node.submit(&caller(), item("s".into(), Tier::Standard))
            .await,
        Err(ErrorCode::Overloaded {
            tier: Tier::Standard,
            ..
        })
    ));
    node.submit(&caller(), item("p".into(), Tier::Priority))
        .await
        .unwrap();
    node.degrade(DegradeCommand::Auto).await.unwrap();
    node.shutdown().await.unwrap();
}
