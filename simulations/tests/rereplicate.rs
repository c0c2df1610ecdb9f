//! The `rereplicate` scenario at small sizes: every row restores the lost replicas no
//! faster than the bound allows, and the same seed prints and writes the same bytes.

use std::path::PathBuf;
use std::process::Command;

const ARGS: &[&str] = &[
    "--nodes",
    "4,12,40",
    "--partitions",
    "256",
    "--bytes-per-node",
    "1GiB",
    "--seed",
    "7",
];

/// Runs the scenario into a fresh directory under `out`; returns stdout and the CSV.
fn run(out: &str, args: &[&str]) -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(out);
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_chorus-simulations"))
        .arg("rereplicate")
        .args(args)
        .arg("--no-plots")
        .arg("--out")
        .arg(&dir)
        .output()
        .expect("the simulations binary runs");
    assert!(
        output.status.success(),
        "rereplicate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = std::fs::read_to_string(dir.join("rereplicate.csv")).expect("the CSV is written");
    (String::from_utf8(output.stdout).expect("utf-8 stdout"), csv)
}

#[test]
fn every_size_and_source_restores_within_the_bound() {
    let (stdout, csv) = run("rereplicate-rows", ARGS);
    let header: Vec<&str> = csv.lines().next().expect("a header").split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[column("nodes")], r[column("source")]))
        .collect();
    assert_eq!(
        keys,
        [
            ("4", "leader"),
            ("4", "spread"),
            ("12", "leader"),
            ("12", "spread"),
            ("40", "leader"),
            ("40", "spread")
        ]
    );
    let number = |row: &[&str], name: &str| -> f64 { row[column(name)].parse().expect(name) };
    for row in &rows {
        let restore = number(row, "restore_s");
        assert!(number(row, "streams") > 0.0, "{row:?}");
        assert!(
            restore >= number(row, "lower_bound_s") * (1.0 - 1e-6),
            "{row:?}"
        );
        assert!(number(row, "lost_restore_s") <= restore, "{row:?}");
        // The lost member held about rf/N of the partitions; each needs a new replica.
        assert!(number(row, "lost_partitions") > 0.0, "{row:?}");
    }
    assert!(stdout.contains("restore/bound"), "{stdout}");
}

#[test]
fn rereplicate_report_is_byte_identical_for_the_same_seed() {
    let (a, csv_a) = run("rereplicate-determinism", ARGS);
    let (b, csv_b) = run("rereplicate-determinism", ARGS);
    assert_eq!(a, b);
    assert_eq!(csv_a, csv_b);
}

#[test]
fn another_seed_loses_another_member() {
    let (_, a) = run("rereplicate-seed", ARGS);
    let mut other = ARGS.to_vec();
    *other.last_mut().expect("a seed") = "8";
    let (_, b) = run("rereplicate-seed", &other);
    assert_ne!(a, b, "the seed must choose the lost member");
}

#[test]
fn a_bad_size_is_refused_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_chorus-simulations"))
        .args(["rereplicate", "--bytes-per-node", "lots", "--no-plots"])
        .output()
        .expect("the simulations binary runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a size"));
}
