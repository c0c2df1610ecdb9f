#!/usr/bin/env bash
# A join on real nodes for BENCHMARKS.md: three release `chorus agent`s on 127.0.0.1-.3
# (three replicas per partition) loaded with LOAD of 4 KB items, then node-4 starts with
# an empty data dir while a closed-loop workload runs through node-1. node-4 warms up:
# its partitions' leaders stream them to it as a learner, within the cap, while the
# replicas it will replace keep serving; once it holds them it turns warm and the
# replica sets and leadership flip to it. Reports when it turned warm, when it led its
# first partition, what it held when it turned warm and the rate it came at, and the
# workload before the join and during it (requests/s, p99, errors).
#
#   CHORUS_BIN=target/release/chorus node/scripts/bench-join.sh
#
# Knobs: CHORUS_BIN, LOAD (10s), CAP (handoff_bytes_per_sec, 67108864), WINDOW (the
# workload's length during the join, 20s), PROBE_MS (500), OUT (./bench-results).
set -euo pipefail
LOAD="${LOAD:-10s}"
CAP="${CAP:-67108864}"
WINDOW="${WINDOW:-20s}"
PROBE_MS="${PROBE_MS:-500}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
# shellcheck source=bench-nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-nodes.sh"

nodes_init 4 "handoff_bytes_per_sec = $CAP"
for i in 1 2 3; do start_agent "$i"; done
wait_formed 3
sleep 2
load_items "$LOAD" join-load
wait_in_step 1 2 3

workload() { # workload SECONDS NAME: single items through node-1, 16 in flight
  "$BIN" bench --server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" \
    --data-dir "$WORK/data-1" --duration "$1" --warmup 0s --concurrency 16 \
    --connections 2 --text-bytes 400 --users 20000 \
    --json "$OUT/$2.json" >"$OUT/$2.txt" 2>"$OUT/$2.err"
}
workload 10s join-before

workload "$WINDOW" join-during &
WORKLOAD=$!
sleep 1
start_agent 4
t0=$(now_ms)
warm=""; led=""
while [ -z "$led" ]; do
  t=$(( $(now_ms) - t0 ))
  [ "$t" -gt 600000 ] && { echo "node-4 did not lead within 10 minutes" >&2; exit 1; }
  if [ -z "$warm" ]; then
    # A binary without standings has no `warming`: it counts as warm at once.
    w=$(ctl 4 status | field "d['result']['replication'].get('warming', False)")
    if [ "$w" = False ]; then
      warm=$t
      bytes=$(ctl 4 status | field "d['result']['store_log']['bytes']")
      partitions=$(ctl 4 replicas | field "sum(p['last'] > 0 for p in d['result']['partitions'])")
    fi
  else
    n=$(ctl 4 replicas | field "d['result']['leading']")
    [ "$n" -gt 0 ] && led=$t
  fi
  sleep 0.1
done
wait "$WORKLOAD"

python3 - "$warm" "$led" "$bytes" "$partitions" "$CAP" "$OUT/join-before.json" "$OUT/join-during.json" <<'PY'
import json, sys
warm, led, moved, partitions, cap = map(int, sys.argv[1:6])
before, during = (json.load(open(p)) for p in sys.argv[6:8])
secs = max(warm, 1) / 1000
print("| warm | first partition led | partitions held when warm | bytes held when warm | MiB/s | cap MiB/s |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
print(f"| {warm:,} ms | {led:,} ms | {partitions:,} | {moved/2**20:,.1f} MiB | {moved/2**20/secs:,.1f} | {cap/2**20:,.0f} |")
print()
print("| workload | req/s | p50 ms | p99 ms | errors |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, s in (("before the join", before), ("during the join", during)):
    lat = s["latency_ms"]
    errors = sum(s["errors"].values()) if isinstance(s["errors"], dict) else len(s["errors"])
    print(f"| {name} | {s['requests_per_sec']:,.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} | {errors} |")
PY
