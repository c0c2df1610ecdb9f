//! The store-writes bulkhead: writes beyond its running and waiting slots are refused
//! `Overloaded` at once, waiting writes run in order as slots free, and its occupancy is
//! published for `chorus ctl bulkheads`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chorus_actors::BatchOutcome;
use chorus_actors::Durability;
use chorus_actors::core::admission::STORE_DEPENDENCY;
use chorus_actors::messages::{StoreMsg, WriteRequest};
use chorus_actors::policy::breaker::BreakerConfig;
use chorus_actors::policy::bulkhead::BulkheadConfig;
use chorus_actors::published_breaker::new_board;
use chorus_actors::published_bulkhead::BulkheadBoard;
use chorus_actors::store::{Store, Write};
use chorus_actors::store_actor::{StoreActor, StoreArgs};
use chorus_protocol::{ErrorCode, Item, Kind, Tier};
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

fn write(store: &ActorRef<StoreMsg>, user: &str, tier: Tier) -> oneshot::Receiver<BatchOutcome> {
    let (tx, rx) = oneshot::channel();
    let mut item = Item::new(user, Kind::Text);
    item.tier = tier;
    store
        .cast(StoreMsg::WriteMany {
            requests: vec![WriteRequest {
                items: vec![Write::from(item)],
                rejected: Vec::new(),
                tier,
                reply: tx.into(),
                after_ack: None,
            }],
            credit: None,
        })
        .unwrap();
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_running_and_waiting_slots_are_refused_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(support::store_config(dir.path(), Durability::Flush)).unwrap());
    // Every flush takes a while, so the first write holds the only running slot.
    store.inject_write_delay(Duration::from_millis(300));
    let board = BulkheadBoard::new(
        STORE_DEPENDENCY,
        BulkheadConfig {
            max_concurrent: 1,
            max_queue: 1,
            max_queue_wait: None,
        },
    );
    let args = StoreArgs::new(
        Arc::clone(&store),
        BreakerConfig::store(),
        new_board(),
        Arc::clone(&board),
    );
    let (actor, join) = Actor::spawn(None, StoreActor, args).await.unwrap();

    let first = write(&actor, "u1", Tier::Standard);
    let second = write(&actor, "u2", Tier::Standard);
    let third = write(&actor, "u3", Tier::Realtime);
    let refused = third.await.unwrap();
    assert_eq!(
        refused,
        Err(ErrorCode::Overloaded {
            tier: Tier::Realtime,
            retry_after_ms: 1000
        })
    );
    let occupancy = board.read();
    assert_eq!((occupancy.running, occupancy.queued), (1, 1));

    // The waiting write runs once the first is durable; both get receipts.
    for rx in [first, second] {
        let outcomes = rx.await.unwrap().unwrap();
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
    }
    // The slots are freed when the actor learns the batch is durable, just after the
    // replies went out.
    tokio::time::timeout(Duration::from_secs(5), async {
        while (board.read().running, board.read().queued) != (0, 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every slot freed");
    actor.stop(None);
    join.await.unwrap();
}
