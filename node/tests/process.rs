//! `chorus agent` as a real process: first start, durability across SIGKILL, graceful
//! SIGTERM, refusal of a bad configuration and of a data dir another agent holds, and
//! the CLI against it.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use chorus_client::{Item, Kind};
use support::{AgentProcess, chorus_bin, free_udp_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_item_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let agent = AgentProcess::start(dir.path(), port).await;
    let client = agent.client().await.unwrap();

    // Concurrent submits; keep the ids of those acknowledged.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let mut item = Item::new(format!("user-{}", (t * 40 + i) % 97), Kind::Text);
                item.text = format!("item {t}/{i}");
                if i % 10 == 0 {
                    let batch: Vec<Item> = (0..10)
                        .map(|_| Item::new(format!("batch-{t}"), Kind::Bug))
                        .collect();
                    if let Ok(outcomes) = client.submit_batch(batch).await {
                        acked.extend(outcomes.into_iter().flatten());
                    }
                }
                if let Ok(receipt) = client.submit(item.clone()).await {
                    acked.push(receipt);
                }
            }
            acked
        });
    }
    // Kill the node while writes are still arriving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.signal("KILL");
    let acked: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    drop(client);
    drop(agent);
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the kill"
    );

    let agent = AgentProcess::start(dir.path(), port).await;
    let client = agent.client().await.unwrap();
    let mut lost = Vec::new();
    for receipt in &acked {
        match client.get(receipt.id).await.unwrap() {
            Some(stored) => assert_eq!(&stored.receipt, receipt, "read back with another receipt"),
            None => lost.push(receipt.id),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged items lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(dir.path(), free_udp_port()).await;
    let client = agent.client().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200 {
                let item = Item::new(format!("term-{t}-{i}"), Kind::Text);
                match client.submit(item.clone()).await {
                    Ok(_) => acked.push(item.id),
                    Err(_) => break,
                }
            }
            acked
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    agent.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = agent.child.wait().unwrap();
        (status, agent)
    });
    let acked: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    let (status, agent) = status.await.unwrap();
    assert!(status.success(), "agent exited with {status}");
    drop(client);
    let data_dir = agent.data_dir.clone();
    drop(agent);

    let agent = AgentProcess::start(&data_dir, free_udp_port()).await;
    let client = agent.client().await.unwrap();
    for id in &acked {
        assert!(
            client.get(*id).await.unwrap().is_some(),
            "acknowledged {id} lost across SIGTERM"
        );
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_a_running_nodes_data_dir_stops_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(dir.path(), free_udp_port()).await;
    let out = Command::new(chorus_bin())
        .arg("agent")
        .env("CHORUS_DATA_DIR", dir.path())
        .env("CHORUS_LISTEN", format!("127.0.0.1:{}", free_udp_port()))
        .env("CHORUS_METRICS_LISTEN", "127.0.0.1:0")
        .env("CHORUS_CONTROL_SOCKET", dir.path().join("other.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "in use by another chorus agent (pid {})",
            agent.child.id()
        )),
        "{stderr}"
    );
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
}

#[test]
fn an_invalid_config_exits_64_naming_the_key_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "partitions = 0\n").unwrap();
    let out = Command::new(chorus_bin())
        .args(["agent", "--config"])
        .arg(&config)
        .env("CHORUS_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("partitions"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing may be created before the config is valid"
    );

    let out = Command::new(chorus_bin())
        .arg("agent")
        .env("CHORUS_LISTEN", "not-an-address")
        .env("CHORUS_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}

/// Runs the CLI with `args` against the agent on `port` whose data dir is `dir`.
fn cli_at(dir: &std::path::Path, port: u16, args: &[&str]) -> std::process::Output {
    Command::new(chorus_bin())
        .args(args)
        .env("CHORUS_CLI_DATA_DIR", dir)
        .env("CHORUS_SERVER", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_gets_and_lists_with_the_local_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let _agent = AgentProcess::start(dir.path(), port).await;
    let cli = |args: &[&str]| cli_at(dir.path(), port, args);

    let out = cli(&[
        "submit", "--user", "u1", "--rating", "5", "--text", "great", "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["status"], "accepted");
    let id = receipt["id"].as_str().unwrap().to_string();

    let out = cli(&["get", &id, "--json"]);
    assert!(out.status.success());
    let item: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["status"], "accepted");
    assert_eq!(item["rating"], 5);

    let out = cli(&["list", "--user", "u1", "--json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    // An id nobody stored: exit non-zero, the same error shape as any other.
    let out = cli(&["get", "01JDX3V9Q8ZK7M4T2N6P0R5S1W", "--json"]);
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"], "not_found");
    assert_eq!(error["field"], "id");
    assert!(
        error["reason"]
            .as_str()
            .unwrap()
            .contains("01JDX3V9Q8ZK7M4T2N6P0R5S1W")
    );

    // A typed error exits non-zero and names the field.
    let out = cli(&["submit", "--user", "u1", "--rating", "9", "--json"]);
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"], "invalid");
    assert_eq!(error["field"], "rating");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rating"));

    // An admin can make keys; a read key cannot submit.
    let out = cli(&["keys", "create", "--role", "read", "--json"]);
    assert!(out.status.success());
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let read_key = key["key"].as_str().unwrap();
    let out = cli(&["submit", "--user", "u1", "--api-key", read_key, "--json"]);
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"], "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_keys_and_revokes_one_by_a_prefix_of_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let _agent = AgentProcess::start(dir.path(), port).await;
    let cli = |args: &[&str]| cli_at(dir.path(), port, args);
    let json_lines = |out: &std::process::Output| -> Vec<serde_json::Value> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let created = json_lines(&cli(&[
        "keys", "create", "--role", "read", "--name", "dash", "--json",
    ]));
    let read_key = created[0]["key"].as_str().unwrap().to_string();

    let keys = json_lines(&cli(&["keys", "list", "--json"]));
    assert_eq!(keys.len(), 2, "the bootstrap admin key and the new one");
    let dash = keys.iter().find(|k| k["name"] == "dash").unwrap();
    assert_eq!(dash["role"], "read");
    assert!(dash["revoked_at"].is_null());
    let id = dash["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    assert!(!String::from_utf8_lossy(&cli(&["keys", "list"]).stdout).contains(&read_key));

    // An id no key has, and one that is not hex, are refused naming the id.
    let unknown = if id.starts_with('0') { "1" } else { "0" }.repeat(16);
    let out = cli(&["keys", "revoke", &unknown, "--json"]);
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["field"], "id", "{error}");
    assert!(!cli(&["keys", "revoke", "not-hex"]).status.success());

    let revoked = json_lines(&cli(&["keys", "revoke", &id[..8], "--json"]));
    assert_eq!(revoked[0]["id"], id.as_str());
    assert!(revoked[0]["revoked_at"].is_u64());
    let keys = json_lines(&cli(&["keys", "list", "--json"]));
    let dash = keys.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(dash["revoked_at"], revoked[0]["revoked_at"]);
    // The revoked key no longer gets in.
    let out = cli(&["list", "--user", "u1", "--api-key", &read_key, "--json"]);
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"], "unauthorized", "{error}");
}

/// Runs `chorus agent` on `dir` until its admin key exists, then stops it with SIGTERM;
/// `terminal`: under `script`, so that the agent's stdout is a pseudo-terminal. Returns
/// (stdout, stderr).
fn first_start(dir: &std::path::Path, terminal: bool) -> (String, String) {
    let port = free_udp_port();
    let mut command = if terminal {
        let mut c = Command::new("script");
        c.args(["-qec"])
            .arg(format!("exec {}", chorus_bin().display()) + " agent")
            .arg("/dev/null");
        c
    } else {
        let mut c = Command::new(chorus_bin());
        c.arg("agent");
        c
    };
    let child = command
        .env("CHORUS_DATA_DIR", dir)
        .env("CHORUS_LISTEN", format!("127.0.0.1:{port}"))
        // Port 0: agents of parallel tests must not race for the default metrics port.
        .env("CHORUS_METRICS_LISTEN", "127.0.0.1:0")
        .env("CHORUS_LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !dir.join("admin.key").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let agent = if terminal {
        descendant_named(child.id(), "chorus").expect("the agent runs under script")
    } else {
        child.id()
    };
    Command::new("kill")
        .args(["-s", "TERM", &agent.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first descendant of `pid` whose executable is named `name`.
fn descendant_named(pid: u32, name: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
    {
        let exe = std::fs::read_link(format!("/proc/{child}/exe")).ok();
        if exe.is_some_and(|e| e.file_name().is_some_and(|f| f == name)) {
            return Some(child);
        }
        if let Some(found) = descendant_named(child, name) {
            return Some(found);
        }
    }
    None
}

#[test]
fn the_first_start_saves_the_admin_key_privately_and_prints_it_only_to_a_terminal() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    // Stdout a pipe (systemd, a log collector): the key is not printed, the log names
    // the file that holds it.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (stdout, stderr) = first_start(&data, false);
    let key_file = data.join("admin.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(!stdout.contains(key.trim()), "printed to a pipe: {stdout}");
    assert!(!stderr.contains(key.trim()), "logged: {stderr}");
    assert!(stderr.contains(&key_file.display().to_string()), "{stderr}");
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&data), 0o700, "the data dir is private");
    assert!(data.join("tls/ca.pem").exists());

    // Stdout a terminal: printed once, on the first start only.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped the terminal half: no `script` (util-linux) on this host");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = first_start(dir.path(), true);
    let key = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    assert!(
        first.contains(key.trim()),
        "first start must print the key to a terminal: {first}"
    );
    let (second, _) = first_start(dir.path(), true);
    assert!(!second.contains(key.trim()), "the key is printed only once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_what_the_feedback_about_each_function_version_adds_up_to() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    // Judged over 3 items rather than 50, so that a few submissions cross the line.
    let _agent =
        AgentProcess::start_with_env(dir.path(), port, &[("CHORUS_FUNCTIONS_MIN_ITEMS", "3")])
            .await;
    let cli = |args: &[&str]| cli_at(dir.path(), port, args);
    let submits: [(&str, &str, &str, &str); 5] = [
        ("resize@1.0", "2", "0.2", "10"),
        ("resize@1.0", "1", "0.1", "20"),
        ("resize@1.0", "3", "0.0", "30"),
        ("resize@2.0", "5", "0.0", "4"),
        ("crop@1", "4", "0.0", "1"),
    ];
    for (i, (function, rating, errors, ms)) in submits.into_iter().enumerate() {
        let user = format!("user-{i}");
        let out = cli(&[
            "submit",
            "--user",
            &user,
            "--function",
            function,
            "--rating",
            rating,
            "--error-rate",
            errors,
            "--duration-ms",
            ms,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The counts follow the index, which applies what is stored within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let versions: Vec<serde_json::Value> = loop {
        let out = cli(&["functions", "versions", "resize", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let versions: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let items: u64 = versions.iter().map(|v| v["items"].as_u64().unwrap()).sum();
        if items == 4 {
            break versions;
        }
        assert!(std::time::Instant::now() < deadline, "{versions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(versions.len(), 2);
    let old = &versions[0];
    assert_eq!(old["version"], "1.0");
    assert_eq!(old["items"], 3);
    assert_eq!(old["mean_rating"], 2.0);
    assert!((old["error_rate"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    assert!((old["p50_ms"].as_f64().unwrap() - 20.0).abs() < 1.0);
    let reasons: Vec<&str> = old["requires_update"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["low_rating", "high_error_rate"]);
    assert_eq!(versions[1]["version"], "2.0");
    assert_eq!(versions[1]["requires_update"], serde_json::json!([]));

    let out = cli(&["functions", "list", "--json"]);
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "crop");
    assert_eq!(listed[1]["name"], "resize");
    assert_eq!(listed[1]["items"], 4);
    assert_eq!(listed[1]["requires_update"], serde_json::json!(["1.0"]));

    let out = cli(&["functions", "show", "resize", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["items"], 4);
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);

    let out = cli(&["functions", "show", "nothing-names-this", "--json"]);
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"], "not_found");
    let out = cli(&["submit", "--user", "u", "--function", "no-version"]);
    assert!(!out.status.success(), "NAME@VERSION is asked for");
}

/// The JSON lines a CLI run printed.
fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_crossing_the_thresholds_and_an_operators_changes_are_events_the_cli_lists_and_follows()
 {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let _agent = AgentProcess::start_with_env(
        dir.path(),
        port,
        &[
            ("CHORUS_FUNCTIONS_MIN_ITEMS", "2"),
            ("CHORUS_FUNCTIONS_CHECK_INTERVAL_MS", "1000"),
        ],
    )
    .await;
    let cli = |args: &[&str]| cli_at(dir.path(), port, args);
    // A follower started before anything happens sees every event, in order.
    let mut follower = Command::new(chorus_bin())
        .args(["events", "--follow", "--json"])
        .env("CHORUS_CLI_DATA_DIR", dir.path())
        .env("CHORUS_SERVER", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for user in ["a", "b"] {
        let out = cli(&[
            "submit",
            "--user",
            user,
            "--function",
            "resize@1.0",
            "--rating",
            "1",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let crossed = loop {
        let out = cli(&["events", "--type", "requires_update", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events = json_lines(&out);
        if let Some(event) = events.first() {
            break event.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no requires_update event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(crossed["function"], "resize");
    assert_eq!(crossed["version"], "1.0");
    assert_eq!(crossed["seq"], 1);

    for (change, version) in [("deprecate", "resize@1.0"), ("current", "resize@2.0")] {
        let out = cli(&["functions", change, version, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli(&["functions", "versions", "resize", "--json"]);
    let versions = json_lines(&out);
    assert_eq!(versions[0]["status"], "deprecated");
    assert_eq!(versions[0]["current"], false);
    let out = cli(&["functions", "list", "--json"]);
    assert_eq!(json_lines(&out)[0]["current"], "2.0");

    let out = cli(&["events", "--json"]);
    let types: Vec<String> = json_lines(&out)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        ["requires_update", "version_deprecated", "current_version"]
    );
    let out = cli(&["events", "--type", "current_version", "--json"]);
    assert_eq!(json_lines(&out).len(), 1);
    let out = cli(&["events", "--type", "no_such_type"]);
    assert!(!out.status.success());

    // The follower printed the same three, each with the cursor to resume after it;
    // resuming after the first prints the other two and nothing else.
    let stdout = follower.stdout.take().unwrap();
    let followed = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|line| serde_json::from_str::<serde_json::Value>(&line.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    let followed = tokio::time::timeout(Duration::from_secs(20), followed)
        .await
        .expect("the follower printed three events")
        .unwrap();
    follower.kill().unwrap();
    let _ = follower.wait();
    let seqs: Vec<u64> = followed
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    let mut resumed = Command::new(chorus_bin())
        .args(["events", "--follow", "--json", "--cursor"])
        .arg(followed[0]["cursor"].as_str().unwrap())
        .env("CHORUS_CLI_DATA_DIR", dir.path())
        .env("CHORUS_SERVER", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = resumed.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            lines.push(line.unwrap());
        }
        lines
    });
    // Long enough for a third event to show up if the cursor were wrong.
    tokio::time::sleep(Duration::from_secs(3)).await;
    resumed.kill().unwrap();
    let _ = resumed.wait();
    let lines = lines.await.unwrap();
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_the_review_queue_and_approves_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let _agent =
        AgentProcess::start_with_env(dir.path(), port, &[("CHORUS_VALIDATION_MODE", "research")])
            .await;
    let cli = |args: &[&str]| cli_at(dir.path(), port, args);
    let mut ids = Vec::new();
    for user in ["ann", "bob"] {
        let out = cli(&[
            "submit",
            "--user",
            user,
            "--text",
            "call me on ann@example.com",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(receipt["status"], "flagged");
        ids.push((user, receipt["id"].as_str().unwrap().to_string()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(&["review", "list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if json_lines(&out).len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never held both"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (user, id) = &ids[0];
    let out = cli(&["review", "approve", id, "--user", user, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let approved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(approved["status"], "accepted");
    let (user, id) = &ids[1];
    let out = cli(&["review", "reject", id, "--user", user, "--json"]);
    let rejected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rejected["status"], "rejected");
    let out = cli(&["review", "list", "--json"]);
    assert!(json_lines(&out).is_empty());
    let out = cli(&["review", "reject", id, "--user", user, "--json"]);
    assert!(!out.status.success(), "a decided item is not waiting");
    let out = cli(&["events", "--type", "item_reviewed", "--json"]);
    assert_eq!(json_lines(&out).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exports_a_users_items_and_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let _agent = AgentProcess::start(dir.path(), port).await;
    let cli = |args: &[&str]| cli_at(dir.path(), port, args);
    for text in ["one", "two", "three"] {
        let out = cli(&["submit", "--user", "ann", "--text", text]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file = dir.path().join("ann.jsonl");
    let out = cli(&["users", "export", "ann", "--page", "2", "--out"]);
    assert!(!out.status.success(), "--out needs a file");
    let out = cli_at(
        dir.path(),
        port,
        &[
            "users",
            "export",
            "ann",
            "--page",
            "2",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 3 items"));
    let exported: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let texts: Vec<&str> = exported
        .iter()
        .map(|i| i["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);

    let out = cli(&["users", "delete", "ann", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deleted["deleted"], 3);
    let out = cli(&["list", "--user", "ann", "--json"]);
    assert!(json_lines(&out).is_empty());
    let out = cli(&["get", exported[0]["id"].as_str().unwrap(), "--json"]);
    assert!(!out.status.success(), "a deleted item is not found");
    let out = cli(&["events", "--json"]);
    let types: Vec<String> = json_lines(&out)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["user_exported", "user_deleted"]);
}
