//! The overload scenario drives the node's real write-path core (the tier stage and the
//! admission shed check): at 3× and 5× the capacity the excess is refused at the door,
//! realtime stays fast, and nothing admitted outlives its tier's budget.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// Runs `overload` at `load`× capacity; rows of overload.csv by tier, and levels.csv.
fn run_at(name: &str, load: &str) -> (HashMap<String, HashMap<String, String>>, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_chorus-simulations"))
        .args([
            "overload",
            "--loads",
            load,
            "--capacity",
            "2000",
            "--duration",
            "8",
        ])
        .args(["--seed", "3", "--no-plots", "--out"])
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

/// Requests served per simulated second over the run (capacity 2,000/s, 8 s).
fn goodput(rows: &HashMap<String, HashMap<String, String>>) -> f64 {
    rows.values()
        .map(|row| number(row, "offered") * number(row, "served %") / 100.0)
        .sum::<f64>()
        / 8.0
}

#[test]
fn at_three_times_capacity_the_door_refuses_the_excess_and_the_level_never_moves() {
    // Realtime and priority together ask for 0.9× capacity: the door refuses what
    // standard and batch would wait for past their budgets, the critical tiers stay
    // inside theirs, so the level never has to move and nothing admitted expires.
    let (rows, levels) = run_at("overload-3x", "3");
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
    let realtime = &rows["realtime"];
    assert!(number(realtime, "p99 ms") < 100.0, "{realtime:?}");
    // Not 100: a few are still queued or being served when the simulated time ends.
    assert!(number(realtime, "served %") > 99.0, "{realtime:?}");
    let row: Vec<&str> = levels.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[1], "0", "level changes: {levels}");
    assert!(goodput(&rows) >= 0.9 * 2000.0, "goodput {}", goodput(&rows));
}

#[test]
fn at_five_times_capacity_the_critical_tiers_are_protected_and_goodput_holds() {
    // Priority alone now asks for the whole capacity: its wait nears its budget, the
    // level sheds the other tiers, realtime is never refused, nothing admitted expires,
    // and the node still serves at capacity.
    let (rows, _) = run_at("overload-5x", "5");
    for tier in ["realtime", "priority", "standard", "batch"] {
        let row = &rows[tier];
        assert_eq!(number(row, "timeout %"), 0.0, "{tier}: {row:?}");
    }
    let realtime = &rows["realtime"];
    assert_eq!(number(realtime, "shed %"), 0.0, "{realtime:?}");
    assert!(number(realtime, "p99 ms") < 100.0, "{realtime:?}");
    assert!(number(&rows["priority"], "p99 ms") < 1000.0);
    assert!(number(&rows["batch"], "shed %") > 90.0);
    assert!(goodput(&rows) >= 0.9 * 2000.0, "goodput {}", goodput(&rows));
}
