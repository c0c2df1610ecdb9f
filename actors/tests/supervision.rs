//! Supervision under a real panic: the store actor panics (a test-only hook) while
//! writes are queued and in flight. Every caller gets an answer — a receipt for what was
//! made durable, `Unavailable` for the rest — never silence; the supervisor restarts
//! the store with backoff and the node keeps answering; nothing acknowledged is lost.

use std::sync::Arc;
use std::time::Duration;

use chorus_actors::messages::Children;
use chorus_actors::messages::IntakeMsg;
use chorus_actors::messages::StoreMsg;
use chorus_actors::restart::RestartPolicy;
use chorus_actors::supervisor::{NodeSupervisor, SupervisorArgs};
use chorus_actors::{Caller, Durability, PipelineConfig, Store, StoreConfig};
use chorus_protocol::{ErrorCode, Item, Kind, NodeId, Receipt, Role};
use ractor::Actor;
use tokio::sync::watch;

/// Submits one item through intake, as the node's server does.
async fn submit(children: &watch::Receiver<Children>, user: String) -> Result<Receipt, ErrorCode> {
    let Some(intake) = children.borrow().intake.clone() else {
        return Err(ErrorCode::Unavailable {
            reason: "intake down".into(),
        });
    };
    let caller = Caller::for_key("chorus_test", Role::Admin);
    let outcome = intake
        .call(
            |reply| IntakeMsg::Submit {
                caller,
                items: vec![Item::new(user, Kind::Text)],
                reply,
                arrived: std::time::Instant::now(),
                request: None,
            },
            Some(Duration::from_secs(10)),
        )
        .await;
    match outcome {
        Ok(ractor::rpc::CallResult::Success(batch)) => batch.map(|mut v| v.pop().unwrap())?,
        Ok(ractor::rpc::CallResult::Timeout) => panic!("a caller was left waiting (silence)"),
        // The reply port dropped with the crashed actor: the caller learns at once.
        _ => Err(ErrorCode::Unavailable {
            reason: "reply dropped".into(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_store_is_restarted_and_no_caller_is_left_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(StoreConfig {
            path: dir.path().join("store"),
            node: NodeId("n".into()),
            partitions: 16,
            durability: Durability::Flush,
            log: chorus_actors::store::LogConfig::default(),
        })
        .unwrap(),
    );
    let (tx, rx) = watch::channel(Children::default());
    let args = SupervisorArgs::new(
        store.clone(),
        tx,
        PipelineConfig::default(),
        RestartPolicy::default(),
    )
    .unwrap();
    let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args).await.unwrap();
    let first_store = rx.borrow().store.clone().unwrap();

    // Writes in flight and queued when the panic hits.
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let rx = rx.clone();
        writers.spawn(async move { submit(&rx, format!("user-{i}")).await });
    }
    tokio::task::yield_now().await;
    first_store.cast(StoreMsg::InjectPanic).unwrap();

    let outcomes = tokio::time::timeout(Duration::from_secs(20), writers.join_all())
        .await
        .expect("every writer was answered");
    let acked: Vec<Receipt> = outcomes.iter().filter_map(|o| o.clone().ok()).collect();
    eprintln!("acked {} of {}", acked.len(), outcomes.len());
    for outcome in &outcomes {
        if let Err(e) = outcome {
            assert!(
                matches!(e, ErrorCode::Unavailable { .. }),
                "unexpected error {e:?}"
            );
        }
    }

    // The supervisor publishes a new store and the node answers again.
    let restarted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let current = rx.borrow().store.clone();
            if let Some(s) = current
                && s.get_id() != first_store.get_id()
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the store was restarted");
    assert_ne!(restarted.get_id(), first_store.get_id());
    let after = submit(&rx, "after-the-crash".into()).await.unwrap();
    assert_eq!(store.get(after.id).unwrap().unwrap().receipt, after);

    // Nothing acknowledged was lost.
    for receipt in &acked {
        let stored = store
            .get(receipt.id)
            .unwrap()
            .expect("acknowledged item lost");
        assert_eq!(&stored.receipt, receipt);
    }
    supervisor.stop(None);
    join.await.unwrap();
}
