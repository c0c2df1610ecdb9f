//! The content policy on the write path, through `NodeHandle`: PII is redacted before
//! storage and receipts carry the validator's status and alignment score.

mod support;

use support::caller;

use chorus_actors::validation::ValidationConfig;
use chorus_actors::{Durability, NodeHandle, PipelineConfig};
use chorus_protocol::{Item, Kind, Status};

fn item(user: &str, text: &str) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.text = text.into();
    item
}

async fn start(dir: &std::path::Path, validation: ValidationConfig) -> NodeHandle {
    let config = support::store_config(dir, Durability::Full);
    let pipeline = PipelineConfig {
        validation,
        validator_workers: 2,
        ..PipelineConfig::default()
    };
    NodeHandle::start_with(config, pipeline).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_is_redacted_before_storage() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ValidationConfig::default()).await;
    let email = "jane.doe@example.com";
    let card = "4111 1111 1111 1111";
    let it = item("alice", &format!("mail {email}, card {card}, thanks"));
    let receipt = node.submit(&caller(), it.clone()).await.unwrap();
    assert_eq!(receipt.id, it.id);
    let stored = node.get(it.id).await.unwrap().expect("stored");
    let text = &stored.item.text;
    assert!(text.contains("[email]"), "{text}");
    assert!(text.contains("[card]"), "{text}");
    assert!(!text.contains(email), "{text}");
    assert!(!text.contains(card), "{text}");
    assert!(!text.contains("4111"), "{text}");
    assert_eq!(stored.receipt, receipt);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_item_is_accepted_with_a_score() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ValidationConfig::research()).await;
    let it = item("bob", "works well, the export finished in two seconds");
    let receipt = node.submit(&caller(), it.clone()).await.unwrap();
    assert_eq!(receipt.status, Status::Accepted);
    let score = receipt
        .alignment_score
        .expect("research mode scores every item");
    assert!((0.8..=1.0).contains(&score), "{score}");
    let stored = node.get(it.id).await.unwrap().expect("stored");
    assert_eq!(stored.receipt, receipt);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threat_is_rejected_with_reasons_and_a_retry_gets_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ValidationConfig::research()).await;
    let it = item("carol", "fix this or i will kill you");
    let receipt = node.submit(&caller(), it.clone()).await.unwrap();
    let Status::Rejected { reasons } = &receipt.status else {
        panic!("expected Rejected, got {:?}", receipt.status);
    };
    assert!(!reasons.is_empty());
    assert!(receipt.alignment_score.is_some());
    let retry = node.submit(&caller(), it.clone()).await.unwrap();
    assert_eq!(retry, receipt);
    // A batch mixing a threat, a clean item and a schema violation answers each in place.
    let mut bad = item("carol", "x");
    bad.user_id = String::new();
    let clean = item("carol", "nice dashboard");
    let outcomes = node
        .submit_batch(&caller(), vec![it.clone(), bad, clean])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].as_ref().unwrap(), &receipt);
    assert!(outcomes[1].is_err());
    assert_eq!(outcomes[2].as_ref().unwrap().status, Status::Accepted);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_accepts_plain_text_unscored() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ValidationConfig::default()).await;
    for text in ["works well", "note 1"] {
        let receipt = node.submit(&caller(), item("dave", text)).await.unwrap();
        assert_eq!(receipt.status, Status::Accepted);
        assert_eq!(receipt.alignment_score, None);
    }
    node.shutdown().await.unwrap();
}

/// Polls `get` until the stored status is no longer `Accepted` (or 5 s pass).
async fn reviewed(node: &NodeHandle, id: chorus_protocol::ItemId) -> chorus_protocol::Receipt {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stored = node.get(id).await.unwrap().expect("stored");
        if stored.receipt.alignment_score.is_some() || std::time::Instant::now() > deadline {
            return stored.receipt;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_reviews_after_the_ack_and_updates_the_stored_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ValidationConfig::default()).await;
    let threat = item("erin", "fix this or i will kill you");
    let clean = item("erin", "works well, the export finished in two seconds");
    // The ack is the fast path's: stored, redacted, provisionally accepted.
    let ack = node.submit(&caller(), threat.clone()).await.unwrap();
    assert_eq!(ack.status, Status::Accepted);
    assert_eq!(ack.alignment_score, None);
    let clean_ack = node.submit(&caller(), clean.clone()).await.unwrap();
    assert_eq!(clean_ack.status, Status::Accepted);

    let after = reviewed(&node, threat.id).await;
    let Status::Rejected { reasons } = &after.status else {
        panic!("expected Rejected after review, got {:?}", after.status);
    };
    assert!(reasons.iter().any(|r| r.contains("threat")), "{reasons:?}");
    assert!(after.alignment_score.is_some(), "scored by the review");
    // Only the verdict changed; the rest of the receipt is the one acknowledged.
    assert_eq!(after.stored_at, ack.stored_at);
    assert_eq!(after.owner, ack.owner);

    // A clean item keeps the receipt it was acknowledged with.
    let clean_after = node.get(clean.id).await.unwrap().expect("stored").receipt;
    assert_eq!(clean_after, clean_ack);

    // A retry of the same id answers with the stored (reviewed) receipt.
    let retry = node.submit(&caller(), threat.clone()).await.unwrap();
    assert_eq!(retry, after);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_pipeline_settings_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::store_config(dir.path(), Durability::Full);
    let pipeline = PipelineConfig {
        validator_workers: 0,
        ..PipelineConfig::default()
    };
    let err = NodeHandle::start_with(config, pipeline).await.unwrap_err();
    assert!(err.to_string().contains("validator_workers"), "{err}");
}
