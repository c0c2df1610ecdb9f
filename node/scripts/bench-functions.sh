#!/usr/bin/env bash
# Function summaries over many stored items, for BENCHMARKS.md: three local agents
# (three replicas of each partition), items about FUNCTIONS functions (three versions
# each) loaded through node-1 with `chorus bench` for LOAD, then QUERIES runs of
# pages asked of node-1 over one SDK connection: each function's versions (pages node-1
# has not kept), then every version LISTS times, each after node-1's kept page went
# stale, then INSIGHTS plain and private insights over every version
# (node/examples/function_pages.rs).
#
#   CHORUS_BIN=target/release/chorus LOAD=60s node/scripts/bench-functions.sh
#
# Knobs: CHORUS_BIN LOAD (60s) FUNCTIONS (100) LISTS (20) INSIGHTS (10) PROBE_MS (500)
set -euo pipefail
PROBE_MS="${PROBE_MS:-500}"
LOAD="${LOAD:-60s}"
FUNCTIONS="${FUNCTIONS:-100}"
LISTS="${LISTS:-20}"
INSIGHTS="${INSIGHTS:-10}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
# shellcheck source=bench-nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-nodes.sh"
nodes_init 3 "replication_factor = 3"
for i in 1 2 3; do start_agent "$i"; done
wait_formed 3
client=(--server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" --data-dir "$WORK/data-1")
wait_writable "${client[@]}"
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
# Timed from one SDK connection, as an application asks (node/examples/function_pages.rs).
cargo run --release --quiet --manifest-path "$ROOT/Cargo.toml" -p chorus-node --example function_pages -- \
  127.0.0.1:7400 node-1 "$WORK/certs/ca.pem" "$WORK/data-1/admin.key" "$FUNCTIONS" "$LISTS" "$INSIGHTS"
