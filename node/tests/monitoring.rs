//! The monitoring assets in deploy/monitoring/ against a running node: the alert rules
//! and the Grafana dashboard parse, and every `chorus_*` metric their PromQL names is
//! exported by a `chorus agent` cluster member after a little traffic.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientConfig, ClientError, Credentials, ErrorCode, Item, Kind, Role};
use chorus_protocol::Tier;
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use support::{chorus_bin, free_udp_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// The Grafana variables the dashboard's queries use, and what stands for each when a
/// query is parsed as plain PromQL.
const GRAFANA_VARIABLES: [(&str, &str); 2] = [("$__rate_interval", "5m"), ("$instance", ".*")];

/// Parses `expr` as PromQL (after putting values in for Grafana's variables) and adds
/// every metric it selects to `into`; a syntax error names the expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    struct Names<'a>(&'a mut BTreeSet<String>);
    impl ExprVisitor for Names<'_> {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            let selector = match expr {
                Expr::VectorSelector(selector) => Some(selector),
                Expr::MatrixSelector(matrix) => Some(&matrix.vs),
                _ => None,
            };
            if let Some(name) = selector.and_then(|s| s.name.clone()) {
                self.0.insert(name);
            }
            Ok(true)
        }
    }
    let plain = GRAFANA_VARIABLES
        .iter()
        .fold(expr.to_string(), |e, (variable, value)| {
            e.replace(variable, value)
        });
    let parsed =
        promql_parser::parser::parse(&plain).unwrap_or_else(|e| panic!("not PromQL: {e}\n{expr}"));
    let Ok(_) = walk_expr(&mut Names(into), &parsed);
}

/// The alert rules' expressions, after checking each rule has what an on-call engineer
/// needs: a name, a severity and a summary.
fn rule_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("chorus.rules.yml")).unwrap();
    let rules: serde_norway::Value = serde_norway::from_str(&text).expect("the rules parse");
    let groups = rules["groups"].as_sequence().expect("a list of groups");
    let mut exprs = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in groups {
        assert!(group["name"].as_str().is_some(), "a group without a name");
        for rule in group["rules"].as_sequence().expect("a list of rules") {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(alert.to_string()), "{alert} is defined twice");
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning")),
                "{alert}: severity {severity:?}"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{alert} has no summary"
            );
            exprs.push(rule["expr"].as_str().expect("an expression").to_string());
        }
    }
    // The rules the issue asks for, one per kind of trouble.
    for must in [
        "ChorusNodeDown",
        "ChorusHighErrorRate",
        "ChorusRealtimeLatencyOverBudget",
        "ChorusPriorityLatencyOverBudget",
        "ChorusStandardLatencyOverBudget",
        "ChorusBatchLatencyOverBudget",
        "ChorusTierQueueBackingUp",
        "ChorusBreakerOpen",
        "ChorusDegraded",
        "ChorusLogDiskFillingUp",
        "ChorusMembershipDisagrees",
        "ChorusGossipRejected",
    ] {
        assert!(alerts.contains(must), "no {must} rule");
    }
    exprs
}

/// Every `expr` in the dashboard, at any depth (panels nest in rows).
fn dashboard_expressions() -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(values) => values.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(monitoring_dir().join("chorus-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard parses");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} is used twice");
    }
    let mut exprs = Vec::new();
    walk(&dashboard, &mut exprs);
    exprs
}

/// The metric names of every sample in a Prometheus text exposition.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            line[..end].to_string()
        })
        .collect()
}

#[test]
fn names_are_taken_from_parsed_promql_and_bad_promql_is_refused() {
    let mut names = BTreeSet::new();
    metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(chorus_request_duration_seconds_bucket{tier="batch",instance=~"$instance"}[$__rate_interval]))) / on() group_left up{job="chorus", note="chorus_not_a_name"}"#,
        &mut names,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["chorus_request_duration_seconds_bucket", "up"]
    );
    let unbalanced = std::panic::catch_unwind(|| {
        metric_names("sum(rate(chorus_requests_total[5m])", &mut BTreeSet::new())
    });
    assert!(unbalanced.is_err());
    let exposition =
        "# HELP chorus_a x\n# TYPE chorus_a counter\nchorus_a{k=\"v\"} 1\nchorus_b 0\n";
    assert_eq!(
        exported_names(exposition).into_iter().collect::<Vec<_>>(),
        ["chorus_a", "chorus_b"]
    );
}

/// A `chorus agent` process that is the first member of a cluster, with its metrics on
/// a known loopback port.
struct Member {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    data: PathBuf,
    ca: PathBuf,
}

impl Member {
    fn start(dir: &Path) -> Member {
        let certs = dir.join("certs");
        for args in [vec!["init"], vec!["node", "mon-1", "--ip", "127.0.0.1"]] {
            let status = Command::new(chorus_bin())
                .arg("certs")
                .args(&args)
                .arg("--dir")
                .arg(&certs)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "chorus certs {args:?}");
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let metrics = free_tcp_addr();
        let data = dir.join("data");
        let config = dir.join("mon-1.toml");
        std::fs::write(
            &config,
            format!(
                r#"node_id = "mon-1"
data_dir = "{data}"
listen = "{addr}"
partitions = 64
[tls]
ca_cert = "{certs}/ca.pem"
cert = "{certs}/mon-1.pem"
key = "{certs}/mon-1.key"
[log]
level = "warn"
[metrics]
listen = "{metrics}"
[cluster]
gossip_listen = "127.0.0.1:{gossip}"
seeds = []
key_file = "{certs}/cluster.key"
# A cluster of one that replicates (so replication's metrics exist): its partitions'
# only replica, acknowledging alone (the default quorum of 2 would take no writes
# until another member joins).
replication_factor = 2
write_quorum = 1
"#,
                data = data.display(),
                certs = certs.display(),
                gossip = free_udp_port(),
            ),
        )
        .unwrap();
        let child = Command::new(chorus_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Member {
            child,
            addr,
            metrics,
            data,
            ca: certs.join("ca.pem"),
        }
    }

    async fn client_with(&self, key: &str) -> Result<Client, ClientError> {
        let credentials = Credentials::from_ca_file(&self.ca, key)?.with_server_name("mon-1");
        Client::connect(&[self.addr], credentials, ClientConfig::default()).await
    }

    /// An admin client, once the node has made its admin key and accepts connections.
    async fn admin(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(key) = std::fs::read_to_string(self.data.join("admin.key"))
                && let Ok(client) = self.client_with(key.trim()).await
            {
                return client;
            }
            assert!(Instant::now() < deadline, "the node did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP address free when asked (the agent binds it right after).
fn free_tcp_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET /metrics`: the body, once the endpoint answers 200.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_name_is_exported() {
    let mut named = BTreeSet::new();
    let rules = rule_expressions();
    let panels = dashboard_expressions();
    assert!(
        rules.len() >= 12 && panels.len() >= 20,
        "{rules:?} {panels:?}"
    );
    for expr in rules.iter().chain(&panels) {
        metric_names(expr, &mut named);
    }
    // Only Prometheus's own `up` comes from elsewhere: any other name is a typo.
    named.remove("up");
    assert!(named.iter().all(|n| n.starts_with("chorus_")), "{named:?}");
    // Histograms are named by their series; a bare histogram name exports nothing.
    for name in &named {
        assert!(
            !name.ends_with("_seconds") && !name.ends_with("_items"),
            "{name}: a histogram is queried as _bucket, _sum or _count"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let member = Member::start(dir.path());
    let admin = member.admin().await;
    // A submit in every tier, a read, and a request the node refuses.
    let mut ids = Vec::new();
    for tier in Tier::ALL {
        let mut item = Item::new("alice", Kind::Text);
        item.tier = tier;
        item.text = format!("{} feedback", tier.as_str());
        ids.push(admin.submit(item).await.unwrap().id);
    }
    admin.get(ids[0]).await.unwrap();
    let read_key = admin.create_api_key(Role::Read, "reader").await.unwrap();
    let reader = member.client_with(&read_key).await.unwrap();
    assert!(matches!(
        reader.submit(Item::new("bob", Kind::Bug)).await,
        Err(ClientError::Server(ErrorCode::Forbidden))
    ));

    // The store's gauges are published on a timer (every 500 ms): wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let missing = loop {
        let exported = exported_names(&scrape(member.metrics).await);
        let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        missing.is_empty(),
        "named by deploy/monitoring but not exported by a running node: {missing:?}"
    );
}
