//! The optional enrichment call against a real local HTTP server: a 2xx marks the
//! receipt `Done`; failures open its breaker, after which submits skip the call at once
//! ("circuit open"); a slow server times out; no URL means `NotConfigured`. Every item
//! is accepted whatever enrichment does.

mod support;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chorus_actors::DegradeCommand;
use chorus_actors::enrichment::EnrichmentConfig;
use chorus_actors::policy::breaker::BreakerConfig;
use chorus_actors::policy::bulkhead::BulkheadConfig;
use chorus_actors::policy::degradation::Level;
use chorus_actors::{Caller, NodeHandle, PipelineConfig};
use chorus_protocol::{Enrichment, Item, Kind, Receipt, Role, Status};

const OK: u8 = 0;
const SLOW: u8 = 1;
const FAILING: u8 = 2;

/// How long the slow mode sleeps: well past the test timeout.
const SLOW_FOR: Duration = Duration::from_secs(3);
/// The per-call timeout in these tests.
const TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Default)]
struct Server {
    mode: AtomicU8,
    requests: AtomicUsize,
    last_body: Mutex<String>,
}

async fn enrich(State(server): State<Arc<Server>>, body: String) -> StatusCode {
    server.requests.fetch_add(1, Ordering::SeqCst);
    *server.last_body.lock().unwrap() = body;
    match server.mode.load(Ordering::SeqCst) {
        OK => StatusCode::OK,
        SLOW => {
            tokio::time::sleep(SLOW_FOR).await;
            StatusCode::OK
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A local enrichment service on 127.0.0.1:0; returns its state and URL.
async fn serve() -> (Arc<Server>, String) {
    let server = Arc::new(Server::default());
    let app = Router::new()
        .route("/enrich", post(enrich))
        .with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/enrich", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (server, url)
}

/// The breaker's open timeout in these tests.
const OPEN_FOR: Duration = Duration::from_secs(1);

async fn node(dir: &tempfile::TempDir, url: Option<String>) -> NodeHandle {
    node_with(
        dir,
        EnrichmentConfig {
            url,
            ..EnrichmentConfig::default()
        },
    )
    .await
}

/// A node whose enrichment uses `config` with the test timeout and open timeout.
async fn node_with(dir: &tempfile::TempDir, config: EnrichmentConfig) -> NodeHandle {
    let pipeline = PipelineConfig {
        enrichment: EnrichmentConfig {
            timeout: TIMEOUT,
            breaker: BreakerConfig {
                open_timeout: OPEN_FOR,
                ..BreakerConfig::enrichment()
            },
            ..config
        },
        validator_workers: 2,
        ..PipelineConfig::default()
    };
    support::start(dir.path(), pipeline).await
}

async fn submit(node: &NodeHandle, user: &str) -> Receipt {
    let caller = Caller::for_key("chorus_test", Role::Admin);
    let mut item = Item::new(user, Kind::Text);
    item.text = "works well, mail me at a@b.example".into();
    let receipt = node.submit(&caller, item).await.expect("always accepted");
    assert_eq!(receipt.status, Status::Accepted);
    receipt
}

fn skipped_reason(receipt: &Receipt) -> String {
    match &receipt.enrichment {
        Enrichment::Skipped { reason } => reason.clone(),
        other => panic!("expected Skipped, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_marks_the_receipt_done_and_the_item_is_sent_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = serve().await;
    let node = node(&dir, Some(url)).await;
    let receipt = submit(&node, "u1").await;
    assert_eq!(receipt.enrichment, Enrichment::Done);
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    let body: serde_json::Value = serde_json::from_str(&server.last_body.lock().unwrap()).unwrap();
    assert_eq!(body["id"], receipt.id.to_string());
    assert_eq!(body["user_id"], "u1");
    assert_eq!(body["kind"], "text");
    assert_eq!(body["tier"], "standard");
    assert!(body["tags"].is_array());
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("[email]") && !text.contains("a@b.example"),
        "{text}"
    );
    // The stored receipt says the same.
    let stored = node.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(stored.receipt.enrichment, Enrichment::Done);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_open_the_breaker_and_later_submits_skip_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = serve().await;
    server.mode.store(FAILING, Ordering::SeqCst);
    let node = node(&dir, Some(url)).await;
    for i in 0..5 {
        let receipt = submit(&node, &format!("u{i}")).await;
        let reason = skipped_reason(&receipt);
        assert!(
            reason.contains("failed") && reason.contains("500"),
            "{reason}"
        );
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 5);
    // Open: accepted at once without a call, even though the server is back.
    server.mode.store(OK, Ordering::SeqCst);
    for i in 0..3 {
        let started = Instant::now();
        let receipt = submit(&node, &format!("later{i}")).await;
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
        let reason = skipped_reason(&receipt);
        assert!(reason.contains("circuit open"), "{reason}");
    }
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        5,
        "no call went out"
    );

    // After the open timeout, trials go out again and succeed.
    tokio::time::sleep(OPEN_FOR + Duration::from_millis(100)).await;
    for i in 0..4 {
        let receipt = submit(&node, &format!("trial{i}")).await;
        assert_eq!(receipt.enrichment, Enrichment::Done);
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 9);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_optional_work_skips_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = serve().await;
    let node = node(&dir, Some(url)).await;
    node.degrade(DegradeCommand::Set(Level::ShedOptional))
        .await
        .unwrap();
    let receipt = submit(&node, "u1").await;
    assert_eq!(skipped_reason(&receipt), "shed: shed_optional");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
    node.degrade(DegradeCommand::Set(Level::Normal))
        .await
        .unwrap();
    assert_eq!(submit(&node, "u2").await.enrichment, Enrichment::Done);
    let bulkheads = node.bulkheads();
    let names: Vec<_> = bulkheads.iter().map(|b| b.resource).collect();
    assert_eq!(names, ["store", "enrichment"]);
    let enrichment = bulkheads[1];
    assert_eq!(
        (enrichment.running, enrichment.queued),
        (0, 0),
        "every call has left"
    );
    assert!(enrichment.max_concurrent >= 1);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_times_out_and_the_item_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = serve().await;
    server.mode.store(SLOW, Ordering::SeqCst);
    let node = node(&dir, Some(url)).await;
    let started = Instant::now();
    let receipt = submit(&node, "u1").await;
    assert!(started.elapsed() < SLOW_FOR, "{:?}", started.elapsed());
    let reason = skipped_reason(&receipt);
    assert!(reason.contains("timed out"), "{reason}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_url_receipts_say_not_configured() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, None).await;
    let receipt = submit(&node, "u1").await;
    assert_eq!(receipt.enrichment, Enrichment::NotConfigured);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_skips_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = serve().await;
    server.mode.store(SLOW, Ordering::SeqCst);
    let node = node_with(
        &dir,
        EnrichmentConfig {
            url: Some(url),
            bulkhead: BulkheadConfig {
                max_concurrent: 1,
                max_queue: 0,
                max_queue_wait: None,
            },
            ..EnrichmentConfig::default()
        },
    )
    .await;
    let caller = Caller::for_key("chorus_test", Role::Admin);
    let items = (0..3)
        .map(|i| Item::new(format!("u{i}"), Kind::Text))
        .collect();
    let outcomes = node.submit_batch(&caller, items).await.unwrap();
    let mut reasons: Vec<String> = outcomes
        .iter()
        .map(|o| skipped_reason(o.as_ref().expect("always accepted")))
        .collect();
    reasons.sort();
    assert_eq!(reasons[0], "bulkhead full");
    assert_eq!(reasons[1], "bulkhead full");
    assert!(reasons[2].contains("timed out"), "{reasons:?}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_calls_run_when_a_slot_frees() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = serve().await;
    let node = node_with(
        &dir,
        EnrichmentConfig {
            url: Some(url),
            bulkhead: BulkheadConfig {
                max_concurrent: 1,
                max_queue: 10,
                max_queue_wait: None,
            },
            ..EnrichmentConfig::default()
        },
    )
    .await;
    let caller = Caller::for_key("chorus_test", Role::Admin);
    let items = (0..5)
        .map(|i| Item::new(format!("u{i}"), Kind::Text))
        .collect();
    let outcomes = node.submit_batch(&caller, items).await.unwrap();
    for outcome in outcomes {
        assert_eq!(outcome.unwrap().enrichment, Enrichment::Done);
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 5);
    node.shutdown().await.unwrap();
}

#[test]
fn a_bad_url_names_the_field() {
    let pipeline = PipelineConfig {
        enrichment: EnrichmentConfig {
            url: Some("not a url".into()),
            ..EnrichmentConfig::default()
        },
        ..PipelineConfig::default()
    };
    let error = pipeline.validate().unwrap_err().to_string();
    assert!(error.starts_with("enrichment: url:"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_open_and_reset_the_enrichment_breaker() {
    use chorus_actors::BreakerCommand;
    use chorus_actors::policy::breaker::BreakerState;

    let (server, url) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, Some(url)).await;
    assert_eq!(
        node.breakers(),
        vec![
            ("store", BreakerState::Closed),
            ("enrichment", BreakerState::Closed)
        ]
    );
    assert_eq!(
        node.breaker_command("enrichment", BreakerCommand::ForceOpen)
            .await,
        Ok(BreakerState::ForcedOpen)
    );
    let before = server.requests.load(Ordering::SeqCst);
    assert!(skipped_reason(&submit(&node, "u1").await).contains("circuit open"));
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        before,
        "no call while forced open"
    );
    assert_eq!(
        node.breaker_command("enrichment", BreakerCommand::Reset)
            .await,
        Ok(BreakerState::Closed)
    );
    assert_eq!(submit(&node, "u2").await.enrichment, Enrichment::Done);
    node.shutdown().await.unwrap();
}
