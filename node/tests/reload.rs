//! Reloading a running agent's configuration: a real `chorus agent` process started
//! from a config file, the file edited, and `chorus ctl reload` and SIGHUP seen to put
//! the new limits, log filter and certificate in force, refuse a change that needs a
//! restart, naming the key, and audit every attempt.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientConfig, Credentials};
use chorus_node::tls::{self, TlsPaths};
use chorus_protocol::{ErrorCode, Item, Kind};
use serde_json::Value;
use support::{AgentProcess, ctl_json, free_udp_port, open_stopped_store};

fn write_config(path: &Path, data: &Path, port: u16, body: &str) {
    let text = format!(
        "data_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n{body}"
    );
    std::fs::write(path, text).unwrap();
}

async fn client_trusting(
    agent: &AgentProcess,
    ca: &Path,
) -> Result<Client, chorus_client::ClientError> {
    let key = std::fs::read_to_string(agent.data_dir.join("admin.key")).unwrap();
    let credentials = Credentials::from_ca_file(ca, key.trim())?;
    Client::connect(&[agent.addr], credentials, ClientConfig::default()).await
}

fn applied(reply: &Value) -> Vec<String> {
    assert_eq!(reply["ok"], true, "{reply}");
    reply["result"]["applied"]
        .as_array()
        .unwrap_or_else(|| panic!("no applied keys: {reply}"))
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_limits_log_level_and_a_rotated_certificate_and_refuses_listen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("chorus.toml");
    let port = free_udp_port();
    let limits = |burst: u32| {
        format!(
            "[log]\nlevel = \"warn\"\n\n[limits]\nper_user_per_minute = 1\nper_user_burst = {burst}\n"
        )
    };
    write_config(&config, &data, port, &limits(1_000));
    let agent = AgentProcess::start_with_config(&config, &data, port).await;
    let old_ca = data.join("tls/ca.pem");
    let old_ca_copy = dir.path().join("old-ca.pem");
    std::fs::copy(&old_ca, &old_ca_copy).unwrap();

    // Nothing changed: the reload applies nothing and says so.
    assert_eq!(
        applied(&ctl_json(&config, &["reload"])),
        Vec::<String>::new()
    );

    // Two items a user, a new log filter and a certificate from a new CA.
    write_config(
        &config,
        &data,
        port,
        &limits(2).replace("level = \"warn\"", "level = \"error\""),
    );
    let paths = TlsPaths::dev(&data);
    for file in [
        &paths.ca_cert,
        &paths.cert,
        &paths.key,
        &TlsPaths::dev_ca_key(&data),
    ] {
        std::fs::remove_file(file).unwrap();
    }
    assert!(
        tls::ensure_dev_certificates(&paths, &TlsPaths::dev_ca_key(&data), "node-1", &[]).unwrap()
    );
    let reply = ctl_json(&config, &["reload"]);
    assert_eq!(
        applied(&reply),
        vec![
            "limits.per_user_burst".to_string(),
            "log.level".to_string(),
            "tls.cert".to_string(),
        ]
    );
    assert!(reply["result"]["audit_seq"].as_u64().is_some(), "{reply}");

    // A new connection is shown the new certificate: only the new CA verifies it.
    assert!(client_trusting(&agent, &old_ca_copy).await.is_err());
    let client = client_trusting(&agent, &paths.ca_cert).await.unwrap();
    // The new limit is enforced: the third item of one user is refused.
    let items: Vec<Item> = (0..3).map(|_| Item::new("reloaded", Kind::Text)).collect();
    let outcomes = client.submit_batch(items).await.unwrap();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[2], Err(ErrorCode::RateLimited { .. })),
        "{outcomes:?}"
    );
    let status = ctl_json(&config, &["status"]);
    assert_eq!(status["result"]["log_level"], "error", "{status}");
    let shown = ctl_json(&config, &["limits"]);
    assert_eq!(shown["result"]["per_user_burst"], 2, "{shown}");

    // A new listen address needs a restart: refused, naming the key, nothing applied.
    let moved = free_udp_port();
    write_config(&config, &data, moved, &limits(7));
    let refused = ctl_json(&config, &["reload"]);
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["field"], "listen", "{refused}");
    let reason = refused["error"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("listen cannot change without a restart"),
        "{reason}"
    );
    let shown = ctl_json(&config, &["limits"]);
    assert_eq!(shown["result"]["per_user_burst"], 2, "{shown}");

    // SIGHUP reloads too.
    write_config(
        &config,
        &data,
        port,
        &limits(50).replace("level = \"warn\"", "level = \"error\""),
    );
    agent.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = ctl_json(&config, &["limits"]);
        if shown["result"]["per_user_burst"] == 50 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.close().await;
    agent.stop().await;

    // Every attempt is in the audit log, by whom and with what.
    let store = open_stopped_store(&data, "node-1", 1024);
    let audit = store.audit();
    let reloads: Vec<(String, String, String)> = (1..=20)
        .filter_map(|seq| audit.get(seq).unwrap())
        .filter(|e| e.action.starts_with("reload"))
        .map(|e| (e.actor, e.action, e.detail))
        .collect();
    assert_eq!(reloads.len(), 4, "{reloads:?}");
    assert_eq!(reloads[0].2, "keys=");
    assert_eq!(
        reloads[1].2,
        "keys=limits.per_user_burst,log.level,tls.cert"
    );
    assert_eq!(reloads[2].1, "reload-refused");
    assert!(reloads[2].2.starts_with("key=listen "), "{:?}", reloads[2]);
    assert!(reloads[0].0.starts_with("ctl uid="), "{:?}", reloads[0]);
    assert_eq!(
        (
            reloads[3].0.as_str(),
            reloads[3].1.as_str(),
            reloads[3].2.as_str()
        ),
        ("agent SIGHUP", "reload", "keys=limits.per_user_burst")
    );
}
