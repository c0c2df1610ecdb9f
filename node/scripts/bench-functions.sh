#!/usr/bin/env bash
# Function summaries over many stored items, for BENCHMARKS.md: three local agents
# (three replicas of each partition), items about FUNCTIONS functions (three versions
# each) loaded through node-1 with `chorus bench` for LOAD, then QUERIES runs of
# `chorus functions versions NAME --json` against node-1, each for a function not asked
# before (node-1 keeps a page for a second). Each sample is a whole CLI process (its
# start, a QUIC handshake and the query), so its time bounds the query's from above.
#
#   CHORUS_BIN=target/release/chorus LOAD=60s node/scripts/bench-functions.sh
#
# Knobs: CHORUS_BIN LOAD (60s) FUNCTIONS (100) QUERIES (100) PROBE_MS (500)
set -euo pipefail
PROBE_MS="${PROBE_MS:-500}"
LOAD="${LOAD:-60s}"
FUNCTIONS="${FUNCTIONS:-100}"
QUERIES="${QUERIES:-100}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
# shellcheck source=bench-nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-nodes.sh"
nodes_init 3 "replication_factor = 3"
for i in 1 2 3; do start_agent "$i"; done
wait_formed 3
client=(--server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" --data-dir "$WORK/data-1")
# Writes are refused until every partition's leader has taken over.
for _ in $(seq 1 200); do
  "$BIN" submit --user warmup "${client[@]}" >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN" bench "${client[@]}" --duration "$LOAD" --warmup 0s --batch 100 --concurrency 32 \
  --connections 4 --functions "$FUNCTIONS" >"$WORK/load.txt" 2>&1
grep -E "req/s|items/s" "$WORK/load.txt" | head -2 || true
counted() {
  "$BIN" functions list --json "${client[@]}" 2>/dev/null |
    python3 -c "import json, sys; print(sum(json.loads(l)['items'] for l in sys.stdin))"
}
# The counts follow each leader's index: wait until two reads a second apart agree.
last=-1
for _ in $(seq 1 120); do
  now="$(counted)"
  [ "$now" = "$last" ] && break
  last="$now"
  sleep 1.1
done
echo "items counted: $last"
for i in 1 2 3; do
  echo "node-$i log: $(du -sh "$WORK/data-$i/store/log" | cut -f1)"
done
python3 - "$BIN" "$QUERIES" "$FUNCTIONS" "${client[@]}" <<'PY'
import json, subprocess, sys, time
bin, queries, functions, client = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
times = []
for q in range(queries):
    name = f"fn-{q % functions:05}"
    started = time.perf_counter()
    out = subprocess.run([bin, "functions", "versions", name, "--json", *client],
                         capture_output=True, check=True)
    times.append((time.perf_counter() - started) * 1000)
    versions = [json.loads(l) for l in out.stdout.decode().splitlines()]
    assert len(versions) == 3, versions
times.sort()
pick = lambda p: times[min(len(times) - 1, int(p * len(times)))]
print(f"{queries} queries (whole CLI runs): p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {times[-1]:.1f} ms")
PY
