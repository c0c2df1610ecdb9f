//! Same options and seed, same report: the `ring` and `overload` scenarios print
//! byte-identical stdout and write byte-identical CSV files on every run.

use std::path::PathBuf;
use std::process::Command;

/// Runs the simulations binary, writing files under a fresh `out` directory (emptied
/// first, so that two runs print the same paths); returns stdout.
fn run(scenario: &str, out: &str, args: &[&str]) -> (String, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(out);
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_chorus-simulations"))
        .arg(scenario)
        .args(args)
        .arg("--no-plots")
        .arg("--out")
        .arg(&dir)
        .output()
        .expect("the simulations binary runs");
    assert!(
        output.status.success(),
        "{scenario} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (String::from_utf8(output.stdout).expect("utf-8 stdout"), dir)
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const RING: &[&str] = &[
    "--nodes",
    "3,10,40",
    "--partitions",
    "256",
    "--vnodes",
    "16",
    "--slack",
    "5",
    "--changes",
    "2",
    "--seed",
    "7",
];

const OVERLOAD: &[&str] = &[
    "--loads",
    "0.5,3",
    "--capacity",
    "2000",
    "--duration",
    "4",
    "--seed",
    "7",
];

#[test]
fn ring_report_is_byte_identical_for_the_same_seed() {
    let (a, dir) = run("ring", "determinism-ring", RING);
    let csv_a = read(dir.join("ring.csv"));
    let (b, dir) = run("ring", "determinism-ring", RING);
    assert_eq!(a, b);
    assert!(a.contains("bounded-5%"), "{a}");
    assert_eq!(csv_a, read(dir.join("ring.csv")));
    // Wall-clock times stay out of the deterministic report.
    assert!(!a.contains(" ms"), "{a}");
}

#[test]
fn overload_report_is_byte_identical_for_the_same_seed() {
    const FILES: [&str; 3] = [
        "overload.csv",
        "overload-levels.csv",
        "overload-level-changes.csv",
    ];
    let (a, dir) = run("overload", "determinism-overload", OVERLOAD);
    let files_a: Vec<String> = FILES.iter().map(|f| read(dir.join(f))).collect();
    let (b, dir) = run("overload", "determinism-overload", OVERLOAD);
    assert_eq!(a, b);
    for (file, before) in FILES.iter().zip(files_a) {
        assert_eq!(before, read(dir.join(file)), "{file}");
    }
}

#[test]
fn another_seed_gives_another_overload_run() {
    let (a, _) = run("overload", "determinism-overload-seed", OVERLOAD);
    let mut other = OVERLOAD.to_vec();
    *other.last_mut().unwrap() = "8";
    let (b, _) = run("overload", "determinism-overload-seed", &other);
    assert_ne!(a, b, "the seed must drive the arrivals");
}
