//! The procedure of deploy/README.md, followed on loopback addresses with one DESTDIR per
//! "host": bundles from `chorus certs bundle`, `deploy/install.sh --bundle`, the two
//! settings the operator edits, first start, verify with `chorus ctl` and the CLI, add a
//! fourth host, remove one with `chorus ctl leave`.
//!
//! What differs from real hosts: the paths the installed config names are rooted in the
//! DESTDIR, and every port is a free one (hosts share this machine's loopback).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{chorus_bin, ctl_json, free_udp_port};

/// The loopback addresses standing for the hosts (away from the 127.0.0.1-3 of
/// cluster-config/local-3).
const HOST_IPS: [&str; 4] = ["127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44"];

fn chorus(args: &[&str]) -> Output {
    let out = Command::new(chorus_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "chorus {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `chorus ARGS` until it succeeds (a cluster just formed answers `Unavailable` while
/// its partitions' leaders take over), for at most 30 s.
fn chorus_until_ok(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(chorus_bin()).args(args).output().unwrap();
        if out.status.success() || Instant::now() > deadline {
            assert!(
                out.status.success(),
                "chorus {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Host {
    name: String,
    root: PathBuf,
    /// The installed config with the test's paths and ports.
    config: PathBuf,
    child: Option<Child>,
}

impl Host {
    /// Makes the host's bundle, installs it under its DESTDIR and edits the config as
    /// deploy/README.md says (`[metrics] listen`, `seeds`).
    fn install(work: &Path, index: usize, seeds: &[SocketAddr]) -> (Host, SocketAddr) {
        let name = format!("chorus-{}", ["a", "b", "c", "d"][index]);
        let ip = HOST_IPS[index];
        let bundle = work.join(format!("{name}.tar"));
        let certs = work.join("certs");
        chorus(&[
            "certs",
            "bundle",
            &name,
            "--ip",
            ip,
            "--dir",
            certs.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
        ]);
        let root = work.join(&name);
        let out = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install.sh"))
            .args(["--bundle", bundle.to_str().unwrap()])
            .arg(chorus_bin())
            .env("DESTDIR", &root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let installed = std::fs::read_to_string(root.join("etc/chorus/chorus.toml")).unwrap();
        let mut config: toml::Table = installed.parse().unwrap();
        assert_eq!(config["node_id"].as_str(), Some(name.as_str()));
        assert_eq!(
            config["listen"].as_str(),
            Some(format!("{ip}:7400").as_str())
        );
        let gossip: SocketAddr = format!("{ip}:{}", free_udp_port()).parse().unwrap();
        let rooted = |path: &toml::Value| {
            toml::Value::String(format!("{}{}", root.display(), path.as_str().unwrap()))
        };
        config.insert("listen".into(), format!("{ip}:{}", free_udp_port()).into());
        config.insert("data_dir".into(), rooted(&config["data_dir"]));
        let tls = config["tls"].as_table_mut().unwrap();
        for key in ["ca_cert", "cert", "key"] {
            let path = rooted(&tls[key]);
            tls.insert(key.into(), path);
        }
        config["log"]
            .as_table_mut()
            .unwrap()
            .insert("level".into(), "warn".into());
        let metrics = std::net::TcpListener::bind(format!("{ip}:0"))
            .unwrap()
            .local_addr()
            .unwrap();
        config["metrics"]
            .as_table_mut()
            .unwrap()
            .insert("listen".into(), metrics.to_string().into());
        let cluster = config["cluster"].as_table_mut().unwrap();
        let key_file = rooted(&cluster["key_file"]);
        cluster.insert("key_file".into(), key_file);
        cluster.insert("gossip_listen".into(), gossip.to_string().into());
        let seeds: Vec<toml::Value> = seeds
            .iter()
            .chain(seeds.is_empty().then_some(&gossip))
            .map(|s| s.to_string().into())
            .collect();
        cluster.insert("seeds".into(), seeds.into());
        let path = root.join("run.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        (
            Host {
                name,
                root,
                config: path,
                child: None,
            },
            gossip,
        )
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.root.join("agent.log")).unwrap();
        self.child = Some(
            Command::new(chorus_bin())
                .args(["agent", "--config"])
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn ctl(&self, args: &[&str]) -> Value {
        ctl_json(&self.config, args)
    }

    /// The members this host sees in `state`.
    fn members_in(&self, state: &str) -> Vec<String> {
        let mut names: Vec<String> = self.ctl(&["members"])["result"]["members"]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter(|m| m["state"] == state)
                    .filter_map(|m| m["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn listen(&self) -> String {
        let config: toml::Table = std::fs::read_to_string(&self.config)
            .unwrap()
            .parse()
            .unwrap();
        config["listen"].as_str().unwrap().to_string()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 40 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_from_nothing_then_a_fourth_joins_and_one_leaves() {
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    chorus(&["certs", "init", "--dir", certs.to_str().unwrap()]);

    // The first host seeds the others, as the three seeds of the template would.
    let (first, seed) = Host::install(work.path(), 0, &[]);
    let mut hosts = vec![first];
    for index in 1..3 {
        hosts.push(Host::install(work.path(), index, &[seed]).0);
    }
    for host in &mut hosts {
        host.start();
    }
    let names = |hosts: &[Host]| -> Vec<String> { hosts.iter().map(|h| h.name.clone()).collect() };
    let three = names(&hosts);
    until("three members alive everywhere", || {
        hosts.iter().all(|h| h.members_in("alive") == three)
    })
    .await;
    let status = hosts[1].ctl(&["status"]);
    assert_eq!(status["result"]["node_id"], "chorus-b", "{status}");

    // A submission from the operator machine, with the first host's admin key.
    let admin_key = hosts[0].root.join("var/lib/chorus/admin.key");
    let submitted = chorus_until_ok(&[
        "submit",
        "--server",
        &hosts[0].listen(),
        "--ca",
        certs.join("ca.pem").to_str().unwrap(),
        "--api-key-file",
        admin_key.to_str().unwrap(),
        "--server-name",
        "chorus-a",
        "--user",
        "alice",
        "--rating",
        "5",
        "--text",
        "first!",
        "--json",
    ]);
    let receipt: Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(receipt["status"], "accepted", "{receipt}");
    // Without --server-name the second host's certificate is checked against the IP
    // dialed, which `chorus certs node --ip` put in it.
    let submitted = chorus_until_ok(&[
        "submit",
        "--server",
        &hosts[1].listen(),
        "--ca",
        certs.join("ca.pem").to_str().unwrap(),
        "--api-key-file",
        admin_key.to_str().unwrap(),
        "--user",
        "bob",
        "--json",
    ]);
    let receipt: Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(receipt["status"], "accepted", "{receipt}");

    // A fourth host joins through the same seed and every host places it in the ring.
    let epoch = hosts[0].ctl(&["ring"])["result"]["epoch"].clone();
    hosts.push(Host::install(work.path(), 3, &[seed]).0);
    hosts[3].start();
    let four = names(&hosts);
    until("four members alive everywhere", || {
        hosts.iter().all(|h| h.members_in("alive") == four)
    })
    .await;
    let ring = hosts[0].ctl(&["ring"])["result"].clone();
    assert_ne!(ring["epoch"], epoch);
    assert_eq!(ring["nodes"].as_array().unwrap().len(), 4, "{ring}");

    // The third host leaves: it stops by itself, with success, and the others place the
    // ring without it.
    let left = hosts[2].ctl(&["leave"]);
    assert!(left["result"].is_object(), "{left}");
    let mut child = hosts[2].child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop after leaving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    let remaining: Vec<String> = four.iter().filter(|n| *n != "chorus-c").cloned().collect();
    until("the others go on without the host that left", || {
        [0, 1, 3].iter().all(|&i| {
            hosts[i].members_in("alive") == remaining
                && hosts[i].members_in("left") == ["chorus-c".to_string()]
                && hosts[i].ctl(&["ring"])["result"]["nodes"]
                    .as_array()
                    .is_some_and(|nodes| nodes.len() == 3)
        })
    })
    .await;
}
