//! `deploy/install.sh` under a temporary DESTDIR (no root, no systemd): file modes, a
//! stripped binary, idempotence, a config template edited only where meant, and a host
//! bundle from `chorus certs bundle` that the node's own TLS loading accepts.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chorus_node::config::NodeConfig;
use support::chorus_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn install(destdir: &Path, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .args(args)
        .arg(chorus_bin())
        .env("DESTDIR", destdir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every file and directory under `root`: (mode, size, mtime in ns, content).
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, u64, i128, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            let content = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                stack.push(path.clone());
                Vec::new()
            };
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                (
                    meta.permissions().mode() & 0o7777,
                    meta.len(),
                    mtime,
                    content,
                ),
            );
        }
    }
    out
}

/// The value of `key` in `[section]` ("" for the top level) of a TOML text.
fn toml_value(text: &str, section: &str, key: &str) -> Option<toml::Value> {
    let table: toml::Table = text.parse().unwrap();
    let table = match section {
        "" => &table,
        s => table.get(s)?.as_table()?,
    };
    table.get(key).cloned()
}

fn template() -> String {
    std::fs::read_to_string(repo().join("cluster-config/bare-metal.toml")).unwrap()
}

#[test]
fn installs_with_tight_modes_a_stripped_binary_and_twice_changes_nothing() {
    let dest = tempfile::tempdir().unwrap();
    let root = dest.path();
    install(root, &[]);

    assert_eq!(mode(&root.join("etc/chorus")), 0o750);
    assert_eq!(mode(&root.join("etc/chorus/certs")), 0o750);
    assert_eq!(mode(&root.join("etc/chorus/chorus.toml")), 0o640);
    assert_eq!(mode(&root.join("var/lib/chorus")), 0o700);
    assert_eq!(mode(&root.join("usr/local/bin/chorus")), 0o755);
    assert_eq!(mode(&root.join("etc/systemd/system/chorus.service")), 0o644);

    // The template is what gets installed, its `[metrics] listen` as it was.
    let config = std::fs::read_to_string(root.join("etc/chorus/chorus.toml")).unwrap();
    assert_eq!(config, template());
    NodeConfig::from_file_bytes(config.as_bytes()).expect("the installed config is valid");

    // Debug info stripped: smaller than the built binary, and it still runs.
    let built = std::fs::metadata(chorus_bin()).unwrap().len();
    let installed = std::fs::metadata(root.join("usr/local/bin/chorus"))
        .unwrap()
        .len();
    assert!(
        installed < built,
        "installed {installed} B, built {built} B"
    );
    let sections = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(root.join("usr/local/bin/chorus"))
        .output();
    if let Ok(sections) = sections {
        let sections = String::from_utf8_lossy(&sections.stdout);
        assert!(!sections.contains(".debug_info"), "{sections}");
    }
    let version = Command::new(root.join("usr/local/bin/chorus"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());

    // A second run, after an operator's edit and a mode someone loosened: the edit
    // stays, the mode is put back, and nothing else is touched.
    let config_path = root.join("etc/chorus/chorus.toml");
    let edited = config.replace("chorus-a", "chorus-z");
    std::fs::write(&config_path, &edited).unwrap();
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(
        root.join("var/lib/chorus"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let before = tree(root);
    // mtimes are compared: make a rewrite within the same clock tick visible.
    std::thread::sleep(Duration::from_millis(20));
    install(root, &[]);
    let mut after = tree(root);
    assert_eq!(mode(&root.join("var/lib/chorus")), 0o700);
    after.get_mut(Path::new("var/lib/chorus")).unwrap().0 = 0o755;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, was) in &before {
        assert!(after[path] == *was, "{} changed", path.display());
    }
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), edited);
}

#[test]
fn a_host_bundle_installs_0600_and_the_node_loads_its_tls_and_cluster_key() {
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let bundle = work.path().join("chorus-b.tar");
    let chorus = |args: &[&str]| {
        let out = Command::new(chorus_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "chorus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let certs_dir = certs.to_str().unwrap();
    chorus(&["certs", "init", "--dir", certs_dir]);
    chorus(&[
        "certs",
        "bundle",
        "chorus-b",
        "--ip",
        "10.0.0.12",
        "--dir",
        certs_dir,
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(mode(&bundle), 0o600);

    let dest = work.path().join("dest");
    install(&dest, &["--bundle", bundle.to_str().unwrap()]);
    let installed = dest.join("etc/chorus/certs");
    let mut names: Vec<String> = std::fs::read_dir(&installed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The CA's private key never leaves the operator's machine.
    assert_eq!(
        names,
        ["ca.pem", "chorus-b.key", "chorus-b.pem", "cluster.key"]
    );
    for name in &names {
        assert_eq!(mode(&installed.join(name)), 0o600, "{name}");
        assert_eq!(
            std::fs::read(installed.join(name)).unwrap(),
            std::fs::read(certs.join(name)).unwrap(),
            "{name}"
        );
    }

    // The config names this host; only the keys meant for it changed.
    let config_path = dest.join("etc/chorus/chorus.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let template = template();
    let value = |section: &str, key: &str| toml_value(&text, section, key);
    assert_eq!(value("", "node_id").unwrap().as_str(), Some("chorus-b"));
    assert_eq!(
        value("", "listen").unwrap().as_str(),
        Some("10.0.0.12:7400")
    );
    assert_eq!(
        value("cluster", "gossip_listen").unwrap().as_str(),
        Some("10.0.0.12:7401")
    );
    assert_eq!(
        value("tls", "cert").unwrap().as_str(),
        Some("/etc/chorus/certs/chorus-b.pem")
    );
    assert_eq!(
        value("metrics", "listen"),
        toml_value(&template, "metrics", "listen"),
        "[metrics] listen must keep the template's private address"
    );
    assert_eq!(
        value("cluster", "seeds"),
        toml_value(&template, "cluster", "seeds")
    );

    // The node's own loading code accepts what was installed, read where DESTDIR put it.
    let rooted = text.replace(
        "\"/etc/chorus/",
        &format!("\"{}/etc/chorus/", dest.display()),
    );
    let config = NodeConfig::from_file_bytes(rooted.as_bytes()).expect("a valid config");
    chorus_node::secrets::check_key_files(&config).expect("key files private");
    let cert = chorus_node::tls::NodeCert::load(&config.tls_paths())
        .expect("the certificate and key load from the installed files");
    chorus_node::cluster::links::link_server_config(
        &config.tls_paths(),
        cert,
        16,
        Duration::from_secs(10),
    )
    .expect("the TLS config loads from the installed files");
    let key = config
        .cluster
        .as_ref()
        .expect("the template is a cluster member")
        .load_key()
        .expect("the cluster key loads");
    assert_eq!(
        key.0,
        chorus_node::cluster::certs::read_cluster_key(&certs.join("cluster.key")).unwrap()
    );

    // Installing the same bundle again changes nothing.
    let before = tree(&dest);
    std::thread::sleep(Duration::from_millis(20));
    install(&dest, &["--bundle", bundle.to_str().unwrap()]);
    assert!(before == tree(&dest), "a second install changed files");
}

#[test]
fn a_bundle_with_paths_in_it_is_refused_before_anything_is_installed() {
    let work = tempfile::tempdir().unwrap();
    let evil = work.path().join("evil.tar");
    let mut archive = tar::Builder::new(std::fs::File::create(&evil).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    archive
        .append_data(&mut header, "sub/ca.pem", &b"x"[..])
        .unwrap();
    archive.finish().unwrap();
    drop(archive);
    let dest = work.path().join("dest");
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .args(["--bundle", evil.to_str().unwrap()])
        .arg(chorus_bin())
        .env("DESTDIR", &dest)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unexpected entry"), "{stderr}");
    assert!(!dest.exists(), "something was installed");
}

#[test]
fn an_unknown_option_is_refused_by_name() {
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .arg("--frobnicate")
        .env("DESTDIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frobnicate"));
}
