#!/usr/bin/env sh
# Runs each cargo-fuzz target for a bounded time and prints its execution count.
#   fuzz/run.sh [SECONDS] [TARGET...]   (default: 60 s each, every target)
# CI runs a smoke of a few seconds: `fuzz/run.sh 5`. Needs nightly and cargo-fuzz.
set -eu
cd "$(dirname "$0")"
secs="${1:-60}"
[ $# -gt 0 ] && shift
targets="${*:-$(cargo +nightly fuzz list)}"
for target in $targets; do
    log="$(mktemp)"
    if ! nice -n 15 cargo +nightly fuzz run "$target" -O -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=1024 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "FAIL $target (artifacts in fuzz/artifacts/$target)"
        exit 1
    fi
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    echo "ok   $target: $runs executions in ${secs}s"
    rm -f "$log"
done
