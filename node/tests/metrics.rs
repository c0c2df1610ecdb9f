//! The metrics and health endpoint over real HTTP on a loopback port: liveness,
//! readiness through a drain, and Prometheus counters that match real SDK traffic.

mod support;

use std::net::SocketAddr;

use chorus_client::{ClientError, ErrorCode, Item, Kind, Role};
use support::TestNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One `GET path` with `Connection: close`; the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_string())
}

/// The value of the sample named `name` whose labels include every `labels` pair; 0 if
/// there is none yet.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

fn metrics_addr(node: &TestNode) -> SocketAddr {
    node.metrics.as_ref().expect("started with metrics").addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_answers_while_the_process_runs() {
    let node = TestNode::start_with_metrics().await;
    let (status, body) = get(metrics_addr(&node), "/health/live").await;
    assert_eq!(status, 200, "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_with_a_reason_once_draining() {
    let node = TestNode::start_with_metrics().await;
    let addr = metrics_addr(&node);
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 200, "{body}");

    node.metrics.as_ref().unwrap().readiness.set_draining();
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    // Liveness is not readiness: a draining node is still alive.
    assert_eq!(get(addr, "/health/live").await.0, 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_an_unavailable_store() {
    let node = TestNode::start_with_metrics().await;
    let addr = metrics_addr(&node);
    node.metrics
        .as_ref()
        .unwrap()
        .readiness
        .set_store_available(false);
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("store"), "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_submits_rejections_and_flushes() {
    const SUBMITS: usize = 20;
    let node = TestNode::start_with_metrics().await;
    let addr = metrics_addr(&node);
    let ok_submits = [("request", "submit"), ("outcome", "ok")];
    // The recorder is process-wide: measure differences, not absolute values.
    let (status, before) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{before}");

    let client = node.client().await;
    for i in 0..SUBMITS {
        let mut item = Item::new("alice", Kind::Text);
        item.text = format!("note {i}");
        client.submit(item).await.unwrap();
    }
    let read_key = client.create_api_key(Role::Read, "reader").await.unwrap();
    let reader = node.client_with(&read_key).await.unwrap();
    assert!(matches!(
        reader.submit(Item::new("bob", Kind::Bug)).await,
        Err(ClientError::Server(ErrorCode::Forbidden))
    ));

    let (status, after) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{after}");
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(
        delta("chorus_requests_total", &ok_submits),
        SUBMITS as f64,
        "{after}"
    );
    assert_eq!(
        delta(
            "chorus_requests_total",
            &[("request", "submit"), ("outcome", "forbidden")]
        ),
        1.0
    );
    assert_eq!(
        delta("chorus_rejections_total", &[("reason", "forbidden")]),
        1.0
    );
    assert!(
        delta(
            "chorus_request_duration_seconds_count",
            &[("request", "submit"), ("tier", "standard")]
        ) >= SUBMITS as f64
    );
    assert!(sample(&after, "chorus_store_flush_duration_seconds_count", &[]) > 0.0);
    assert!(sample(&after, "chorus_store_batch_items_count", &[]) > 0.0);
    assert!(
        sample(
            &after,
            "chorus_validation_outcomes_total",
            &[("status", "accepted")]
        ) >= SUBMITS as f64
    );
    assert!(after.contains("# HELP chorus_requests_total"), "{after}");
    assert!(after.contains("chorus_connections_open"), "{after}");
    node.stop().await;
}

#[tokio::test]
async fn a_taken_port_is_refused_naming_the_address() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = chorus_node::metrics::MetricsServer::start(
        addr,
        chorus_node::metrics::Readiness::new(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("the port is taken");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
