//! The control socket end to end: a real `chorus agent` process administered with the
//! real `chorus ctl`, and an audit log tampered with on disk while the node is down.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use chorus_actors::AuditEntry;
use serde_json::Value;
use support::{AgentProcess, chorus_bin, free_udp_port, open_stopped_store};

/// Runs `chorus ctl ARGS` against the node whose data dir is `data_dir`.
fn ctl(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(chorus_bin())
        .arg("ctl")
        .args(args)
        .env("CHORUS_CLI_DATA_DIR", data_dir)
        .env_remove("CHORUS_CONTROL_SOCKET")
        .output()
        .unwrap()
}

fn json_of(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}; stderr {:?}", output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reports_status_changes_the_log_level_and_detects_a_tampered_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let socket = data.join("chorus.sock");
    let port = free_udp_port();
    let agent = AgentProcess::start(data, port).await;

    let meta = std::fs::metadata(&socket).expect("the agent opened its control socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let uid = meta.uid();

    let status = ctl(data, &["status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let status = json_of(&status);
    assert_eq!(status["ok"], true);
    assert_eq!(status["result"]["kind"], "status");
    assert_eq!(status["result"]["node_id"], "node-1");
    assert_eq!(status["result"]["pid"], agent.child.id());
    assert_eq!(status["result"]["listen"], format!("127.0.0.1:{port}"));
    assert_eq!(status["result"]["log_level"], "warn");
    // The store's log: at least the segment being written.
    assert!(status["result"]["store_log"]["segments"].as_u64() >= Some(1));
    // What it speaks, for a rolling upgrade's checks.
    let speaks = &status["result"]["speaks"];
    assert_eq!(speaks["client_protocol"], serde_json::json!([1]));
    assert_eq!(speaks["link_alpn"], "chorus-link/2");
    assert_eq!(
        speaks["link_alpns"],
        serde_json::json!(["chorus-link/2", "chorus-link/1"])
    );
    assert_eq!(speaks["link_messages"], 2);
    assert_eq!(speaks["log_segments"], 1);

    let human = ctl(data, &["status"]);
    assert!(human.status.success(), "{human:?}");
    assert!(String::from_utf8_lossy(&human.stdout).contains("node-1"));
    assert!(String::from_utf8_lossy(&human.stdout).contains("store log"));
    assert!(String::from_utf8_lossy(&human.stdout).contains("speaks"));

    let changed = ctl(data, &["log-level", "debug"]);
    assert!(changed.status.success(), "{changed:?}");
    let text = String::from_utf8_lossy(&changed.stdout);
    assert!(text.contains("warn -> debug"), "{text}");
    let after = json_of(&ctl(data, &["status", "--json"]));
    assert_eq!(after["result"]["log_level"], "debug");

    let refused = ctl(data, &["log-level", "[[["]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid level"));

    // The bootstrap admin key, then the log-level change; the refused filter is not there.
    let verify = ctl(data, &["audit-verify", "--json"]);
    assert!(verify.status.success(), "{verify:?}");
    let verify = json_of(&verify);
    assert_eq!(verify["result"]["intact"], true);
    assert_eq!(verify["result"]["entries"], 2);
    assert_eq!(verify["result"]["head_seq"], 2);

    agent.stop().await;
    assert!(!socket.exists(), "the socket outlived the agent");
    let missing = ctl(data, &["status"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("is the agent running? no socket at"),
        "{missing:?}"
    );

    // Edit the log-level entry while the node is down.
    {
        let store = open_stopped_store(data, "node-1", 1024);
        let audit = store.audit();
        let first = audit.get(1).unwrap().unwrap();
        assert_eq!(
            (first.actor.as_str(), first.action.as_str()),
            ("agent", "api-key.create")
        );
        let mut entry: AuditEntry = audit.get(2).unwrap().unwrap();
        assert_eq!(entry.actor, format!("ctl uid={uid}"));
        assert_eq!(entry.action, "log-level");
        assert_eq!(entry.detail, "from=\"warn\" to=\"debug\"");
        entry.detail = "from=\"warn\" to=\"info\"".into();
        audit
            .tree()
            .insert(entry.seq.to_be_bytes(), entry.encode())
            .unwrap();
        store.flush().unwrap();
    }

    let agent = AgentProcess::start(data, port).await;
    let verify = ctl(data, &["audit-verify", "--json"]);
    assert!(!verify.status.success(), "a broken chain must fail");
    let verify = json_of(&verify);
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["result"]["intact"], false);
    assert_eq!(verify["result"]["first_broken"]["seq"], 2);
    let human = ctl(data, &["audit-verify"]);
    assert!(!human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("BROKEN at entry 2"), "{text}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_finds_a_socket_moved_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/ctl.sock");
    let port = free_udp_port();
    let agent = AgentProcess::start_with_env(
        dir.path(),
        port,
        &[("CHORUS_CONTROL_SOCKET", socket.to_str().unwrap())],
    )
    .await;
    assert!(socket.exists());
    let output = Command::new(chorus_bin())
        .args(["ctl", "--socket"])
        .arg(&socket)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        json_of(&output)["result"]["control_socket"],
        socket.to_str().unwrap()
    );
    agent.stop().await;
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_breakers_and_an_opened_store_breaker_turns_submits_away() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_udp_port();
    let agent = AgentProcess::start(data, port).await;
    let client = agent.client().await.unwrap();

    let list = json_of(&ctl(data, &["breakers", "--json"]));
    assert_eq!(list["result"]["breakers"][0]["name"], "store");
    assert_eq!(list["result"]["breakers"][0]["state"], "closed");

    let opened = ctl(data, &["breakers", "open", "store", "--json"]);
    assert!(opened.status.success(), "{opened:?}");
    assert_eq!(json_of(&opened)["result"]["state"], "forced-open");
    let refused = client
        .submit(chorus_client::Item::new("u", chorus_client::Kind::Text))
        .await;
    assert_eq!(
        refused,
        Err(chorus_client::ClientError::Server(
            chorus_client::ErrorCode::CircuitOpen {
                dependency: "store".into()
            }
        ))
    );

    let reset = ctl(data, &["breakers", "reset", "store", "--json"]);
    assert_eq!(json_of(&reset)["result"]["state"], "closed");
    client
        .submit(chorus_client::Item::new("u", chorus_client::Kind::Text))
        .await
        .unwrap();
    let unknown = ctl(data, &["breakers", "reset", "nosuch"]);
    assert!(!unknown.status.success());

    // Both commands are in the audit log.
    let audit = json_of(&ctl(data, &["audit-verify", "--json"]));
    assert_eq!(audit["result"]["intact"], true);
    assert!(audit["result"]["entries"].as_u64().unwrap() >= 3);
    client.close().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_shows_the_queues_and_a_pinned_level_sheds_the_standard_tier() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let agent = AgentProcess::start(data, free_udp_port()).await;
    let client = agent.client().await.unwrap();

    let queues = json_of(&ctl(data, &["queues", "--json"]));
    let tiers = queues["result"]["tiers"].as_array().unwrap();
    assert_eq!(tiers.len(), 4);
    assert_eq!(tiers[0]["tier"], "realtime");
    assert_eq!(tiers[0]["capacity"], 1024);
    assert_eq!(queues["result"]["max_in_flight"], 192);

    let level = json_of(&ctl(data, &["degrade", "--json"]));
    assert_eq!(level["result"]["level"], "normal");
    assert_eq!(level["result"]["manual"], false);

    let pinned = ctl(data, &["degrade", "set", "critical_only", "--json"]);
    assert!(pinned.status.success(), "{pinned:?}");
    let pinned = json_of(&pinned);
    assert_eq!(pinned["result"]["level"], "critical_only");
    assert_eq!(pinned["result"]["manual"], true);
    assert!(pinned["result"]["audit_seq"].as_u64().is_some());
    match client
        .submit(chorus_client::Item::new("u", chorus_client::Kind::Text))
        .await
    {
        Err(chorus_client::ClientError::Server(chorus_client::ErrorCode::Overloaded {
            tier: chorus_client::Tier::Standard,
            retry_after_ms,
        })) => assert!(retry_after_ms > 0),
        other => panic!("expected Overloaded for the standard tier, got {other:?}"),
    }
    let mut urgent = chorus_client::Item::new("u", chorus_client::Kind::Text);
    urgent.tier = chorus_client::Tier::Realtime;
    client.submit(urgent).await.unwrap();

    let limits = json_of(&ctl(data, &["limits", "--json"]));
    assert_eq!(limits["result"]["per_user_per_minute"], 100);
    assert_eq!(limits["result"]["global_per_second"], 0);
    assert!(limits["result"]["tracked_users"].as_u64().unwrap() >= 1);

    // No external dependency is configured: no bulkhead to show, and that is said.
    let bulkheads = json_of(&ctl(data, &["bulkheads", "--json"]));
    assert_eq!(
        bulkheads["result"]["bulkheads"],
        serde_json::json!([{"name": "store", "running": 0, "queued": 0,
            "max_concurrent": 128, "max_queue": 64}])
    );

    assert!(!ctl(data, &["degrade", "set", "panic"]).status.success());
    let auto = json_of(&ctl(data, &["degrade", "auto", "--json"]));
    assert_eq!(auto["result"]["manual"], false);
    client.close().await;
    agent.stop().await;
}
