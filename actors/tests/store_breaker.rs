//! The store behind its circuit breaker: failed flushes open it, an open breaker turns
//! submits away at once with `CircuitOpen{store}`, it probes again after its open
//! timeout and closes after successful trials; operators can force it open and reset it.

mod support;

use support::caller;

use std::time::Duration;

use chorus_actors::BreakerCommand;
use chorus_actors::PipelineConfig;
use chorus_actors::policy::breaker::{BreakerConfig, BreakerState};
use chorus_protocol::{ErrorCode, Item, Kind};
use tokio::sync::watch;

async fn wait_for(rx: &mut watch::Receiver<BreakerState>, want: BreakerState) {
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| panic!("breaker never became {want:?}"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_flushes_open_the_breaker_and_trials_close_it() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = PipelineConfig {
        store_breaker: BreakerConfig {
            open_timeout: Duration::from_millis(300),
            ..BreakerConfig::store()
        },
        ..PipelineConfig::default()
    };
    let node = support::start(dir.path(), pipeline).await;
    let store = node.store_for_tests();
    let mut breaker = node.store_breaker();
    assert_eq!(*breaker.borrow(), BreakerState::Closed);

    // Five failed flushes in a row: each caller learns the store failed.
    store.inject_write_failures(true);
    for i in 0..5 {
        match node
            .submit(&caller(), Item::new(format!("u{i}"), Kind::Text))
            .await
        {
            Err(ErrorCode::Unavailable { reason }) => assert!(reason.contains("store"), "{reason}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    wait_for(&mut breaker, BreakerState::Open).await;
    // Open: refused at once, nothing queued behind the failing disk.
    let refused = node.submit(&caller(), Item::new("x", Kind::Text)).await;
    assert_eq!(
        refused,
        Err(ErrorCode::CircuitOpen {
            dependency: "store".into()
        })
    );
    assert_eq!(node.breakers(), vec![("store", BreakerState::Open)]);

    // The disk recovers; after the open timeout trials go through and close it.
    store.inject_write_failures(false);
    wait_for(&mut breaker, BreakerState::HalfOpen).await;
    for i in 0..3 {
        node.submit(&caller(), Item::new(format!("trial{i}"), Kind::Text))
            .await
            .unwrap();
    }
    wait_for(&mut breaker, BreakerState::Closed).await;
    node.submit(&caller(), Item::new("after", Kind::Text))
        .await
        .unwrap();

    // An operator can open it by hand, and reset it.
    assert_eq!(
        node.breaker_command("store", BreakerCommand::ForceOpen)
            .await,
        Ok(BreakerState::ForcedOpen)
    );
    assert!(matches!(
        node.submit(&caller(), Item::new("y", Kind::Text)).await,
        Err(ErrorCode::CircuitOpen { .. })
    ));
    assert_eq!(
        node.breaker_command("store", BreakerCommand::Reset).await,
        Ok(BreakerState::Closed)
    );
    node.submit(&caller(), Item::new("z", Kind::Text))
        .await
        .unwrap();
    assert!(matches!(
        node.breaker_command("enrichment", BreakerCommand::Reset)
            .await,
        Err(ErrorCode::Invalid { .. })
    ));
    node.shutdown().await.unwrap();
}
