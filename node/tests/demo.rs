//! `chorus demo` end to end: three agents as child processes, a workload, one member
//! SIGKILLed and restarted, every acknowledged item read back. The summary is the one
//! JSON object on stdout.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest the demo may take before the test gives up (it kills the demo, whose
/// children it then kills in turn).
const DEMO_DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn the_demo_survives_a_killed_member_without_losing_acknowledged_items() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["demo", "--json", "--duration", "8s", "--concurrency", "8"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("chorus demo starts");
    let started = Instant::now();
    while child.try_wait().expect("waiting for the demo").is_none() {
        if started.elapsed() > DEMO_DEADLINE {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            panic!("chorus demo did not finish within {DEMO_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("the demo's output");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 on stdout");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON object on stdout: {stdout}"
    );
    let summary: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON on stdout");

    assert_eq!(summary["nodes"], 3, "{summary}");
    assert!(summary["acked"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["mismatched"], 0, "{summary}");
    assert_eq!(summary["read_back"], summary["acked"], "{summary}");
    assert_eq!(summary["rejoined"], true, "{summary}");
    assert!(
        summary["detected_down_ms"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["partitions_moved"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["partitions_moved_back"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(output.status.success(), "exit status {:?}", output.status);
}
