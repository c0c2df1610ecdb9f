//! The overload scenario drives the node's real write-path core (the tier stage and the
//! admission shed check): under 3× the capacity, batch is shed and realtime is not,
//! realtime stays fast, and nothing admitted outlives its tier's budget.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// Runs `overload` at 3× with the given CPU signal; rows of overload.csv by tier.
fn run_at_3x(name: &str, cpu_signal: &str) -> (HashMap<String, HashMap<String, String>>, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_chorus-simulations"))
        .args([
            "overload",
            "--loads",
            "3",
            "--capacity",
            "2000",
            "--duration",
            "8",
        ])
        .args([
            "--cpu-signal",
            cpu_signal,
            "--seed",
            "3",
            "--no-plots",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = std::fs::read_to_string(dir.join("overload.csv")).unwrap();
    let mut lines = csv.lines();
    let headers: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows = lines
        .map(|l| {
            let row: HashMap<String, String> = headers
                .iter()
                .zip(l.split(','))
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect();
            (row["tier"].clone(), row)
        })
        .collect();
    let levels = std::fs::read_to_string(dir.join("overload-levels.csv")).unwrap();
    (rows, levels)
}

fn number(row: &HashMap<String, String>, column: &str) -> f64 {
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column}: {:?}", row[column]))
}

#[test]
fn at_three_times_capacity_batch_is_shed_before_realtime() {
    let (rows, _) = run_at_3x("overload-3x-busy", "busy");
    let (realtime, batch) = (&rows["realtime"], &rows["batch"]);
    assert_eq!(number(realtime, "shed %"), 0.0, "{realtime:?}");
    assert!(number(batch, "shed %") > 90.0, "{batch:?}");
    assert!(number(&rows["standard"], "shed %") > 50.0);
    assert_eq!(realtime["first shed s"], "-");
    // Served realtime work stays well inside its 100 ms budget.
    assert!(number(realtime, "p99 ms") < 100.0, "{realtime:?}");
    // Not 100: a few are still queued or being served when the simulated time ends.
    assert!(number(realtime, "served %") > 99.0);
}

#[test]
fn without_a_cpu_signal_time_bounded_queues_refuse_at_the_door_and_nothing_times_out() {
    // No CPU signal and queues bounded by time: a job that would wait past its tier's
    // budget is refused when it arrives, so the queues never fill, the level never has
    // to move, and nothing admitted expires; realtime and priority are never refused.
    let (rows, levels) = run_at_3x("overload-3x-queue-only", "none");
    let (batch, standard) = (&rows["batch"], &rows["standard"]);
    assert!(number(batch, "by queue %") > 90.0, "{batch:?}");
    assert!(number(standard, "by queue %") > 50.0, "{standard:?}");
    for tier in ["realtime", "priority", "standard", "batch"] {
        let row = &rows[tier];
        assert_eq!(number(row, "timeout %"), 0.0, "{tier}: {row:?}");
        assert_eq!(number(row, "by level %"), 0.0, "{tier}: {row:?}");
    }
    assert_eq!(number(&rows["realtime"], "shed %"), 0.0);
    assert_eq!(number(&rows["priority"], "shed %"), 0.0);
    assert!(number(&rows["priority"], "p99 ms") < 1000.0);
    assert!(number(standard, "p99 ms") < 10_000.0);
    let row: Vec<&str> = levels.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[1], "0", "level changes: {levels}");
}
