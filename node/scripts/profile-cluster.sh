#!/usr/bin/env bash
# Where a three-node cluster spends its CPU at saturation: three release agents on
# 127.0.0.1/.2/.3 (as bench-cluster.sh makes them), `chorus bench` through node-1 at
# saturation for 14 s, and `perf record` with DWARF call graphs of node-2 (a leader of a
# third of the partitions and a follower of the rest) for 5 s in the middle.
#
#   CHORUS_BIN=target/release/chorus node/scripts/profile-cluster.sh
#   perf report -i bench-results/node-2.perf --children --sort sym -g none
#
# With PERF_STAT=1 it counts node-2's futex calls and context switches over the same
# 5 s instead (`perf stat`, into bench-results/node-2.stat).
#
# Knobs: RF (3), PROBE_MS (500), PERF_STAT, OUT (./bench-results), CHORUS_BIN,
# BENCH_FLAGS (the load: "--concurrency 256 --connections 2 --streams 8", saturation).
set -euo pipefail
RF="${RF:-3}"
PROBE_MS="${PROBE_MS:-500}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
# shellcheck source=bench-nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-nodes.sh"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
nodes_init 3 "replication_factor = $RF"
for i in 1 2 3; do start_agent "$i"; done
for _ in $(seq 1 100); do [ -s "$WORK/data-1/admin.key" ] && break; sleep 0.1; done
wait_formed 3
sleep 3 # every partition's leader has taken over
# shellcheck disable=SC2086 # BENCH_FLAGS is words
"$BIN" bench --server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" \
  --data-dir "$WORK/data-1" --duration 14s --warmup 2s \
  ${BENCH_FLAGS:---concurrency 256 --connections 2 --streams 8} \
  --json "$OUT/profile-bench.json" >"$OUT/profile-bench.txt" 2>&1 &
bench=$!
sleep 5
if [ -n "${PERF_STAT:-}" ]; then
  result="$OUT/node-2.stat"
  perf stat -e syscalls:sys_enter_futex,context-switches -p "${PIDS[2]}" -o "$result" \
    -- sleep 5 >/dev/null 2>&1
else
  result="$OUT/node-2.perf"
  perf record -F 199 --call-graph dwarf,16384 -p "${PIDS[2]}" -o "$result" \
    -- sleep 5 >/dev/null 2>&1
fi
wait "$bench"
python3 -c "
import json; s = json.load(open('$OUT/profile-bench.json'))
print(f\"{s['requests_per_sec']:,.0f} req/s, p99 {s['latency_ms']['p99']:.1f} ms; node-2 in $result\")"
