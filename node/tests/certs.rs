//! `chorus certs` from the shell: the files it writes, and that it never overwrites.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn chorus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn certs_init_and_node_write_the_cluster_files_and_refuse_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let init = chorus(&["certs", "init", "--dir", d]);
    assert!(init.status.success(), "{init:?}");
    for (file, mode) in [("ca.pem", 0o644), ("ca.key", 0o600), ("cluster.key", 0o600)] {
        let meta = std::fs::metadata(dir.path().join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    let key = std::fs::read_to_string(dir.path().join("cluster.key")).unwrap();
    assert_eq!(hex::decode(key.trim()).unwrap().len(), 32);

    let again = chorus(&["certs", "init", "--dir", d]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cluster.key")).unwrap(),
        key
    );

    let node = chorus(&[
        "certs",
        "node",
        "node-1",
        "--ip",
        "10.0.0.1",
        "--ip",
        "::1",
        "--dns",
        "n1.example",
        "--dir",
        d,
    ]);
    assert!(node.status.success(), "{node:?}");
    assert!(dir.path().join("node-1.pem").exists());
    let key_mode = std::fs::metadata(dir.path().join("node-1.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let twice = chorus(&["certs", "node", "node-1", "--ip", "10.0.0.1", "--dir", d]);
    assert!(!twice.status.success());

    let no_ip = chorus(&["certs", "node", "node-2", "--dir", d]);
    assert!(!no_ip.status.success(), "an IP is required");
}
