#!/usr/bin/env bash
# Re-replication on real nodes for BENCHMARKS.md: four release `chorus agent`s on
# 127.0.0.1-.4 (three replicas per partition), loaded with LOAD of 4 KB items, then
# node-4 is SIGKILLed for good. Once the down grace (GRACE_MS) has passed, the others
# place the ring without it and each partition's leader streams it to the member that
# replaced node-4. Reports when node-4 was seen down, when the placement dropped it,
# when every leader's `ctl handoff` showed nothing left, and the partitions and bytes
# that moved (each survivor's `ctl replicas` and `ctl status` before and after).
#
#   CHORUS_BIN=target/release/chorus node/scripts/bench-rereplicate.sh
#
# Knobs: CHORUS_BIN, LOAD (20s), GRACE_MS (2000), CAP (handoff_bytes_per_sec, 67108864),
# PROBE_MS (500), OUT (./bench-results).
set -euo pipefail
LOAD="${LOAD:-20s}"
GRACE_MS="${GRACE_MS:-2000}"
CAP="${CAP:-67108864}"
PROBE_MS="${PROBE_MS:-500}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

# shellcheck source=bench-nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-nodes.sh"

nodes_init 4 "down_grace_ms = $GRACE_MS
handoff_bytes_per_sec = $CAP"
for i in 1 2 3 4; do start_agent "$i"; done
wait_formed 4
sleep 2

load_items "$LOAD" rereplicate-load
# Every follower in step before the kill.
wait_in_step 1 2 3 4

held() { ctl "$1" replicas | field "sum(p['last'] > 0 for p in d['result']['partitions'])"; }
with_data() { ctl "$1" replicas | field "' '.join(str(p['partition']) for p in d['result']['partitions'] if p['last'] > 0)"; }
log_bytes() { ctl "$1" status | field "d['result']['store_log']['bytes']"; }
declare -A HELD BYTES
for i in 1 2 3; do HELD[$i]=$(held "$i"); BYTES[$i]=$(log_bytes "$i"); done
# Once restored, each of the three survivors holds every partition that has data.
want=$(( 3 * $(for i in 1 2 3 4; do with_data "$i" | tr ' ' '\n'; done | grep . | sort -u | wc -l) ))

kill -KILL "${PIDS[4]}"; wait "${PIDS[4]}" 2>/dev/null || true; PIDS[4]=0
t0=$(now_ms)
down=""; restored=""
while [ -z "$restored" ]; do
  t=$(( $(now_ms) - t0 ))
  [ "$t" -gt 600000 ] && { echo "not re-replicated within 10 minutes" >&2; exit 1; }
  if [ -z "$down" ]; then
    s=$(ctl 1 members | field "next(m['state'] for m in d['result']['members'] if m['id'] == 'node-4')")
    [ "$s" = down ] && down=$t
  else
    left=0; got=0
    for i in 1 2 3; do
      l=$(ctl "$i" handoff | field "d['result']['pairs_left'] + d['result']['records_left']")
      left=$((left + l))
      got=$((got + $(held "$i")))
    done
    [ "$left" = 0 ] && [ "$got" -ge "$want" ] && restored=$t
  fi
  sleep 0.1
done
# The others place the ring without node-4 once it has been down for the grace.
placed=$(( down + GRACE_MS ))

partitions=0; bytes=0
for i in 1 2 3; do
  partitions=$(( partitions + $(held "$i") - HELD[$i] ))
  bytes=$(( bytes + $(log_bytes "$i") - BYTES[$i] ))
done
stream_ms=$(( restored - placed ))
python3 - "$down" "$placed" "$restored" "$partitions" "$bytes" "$stream_ms" "$CAP" <<'PY'
import sys
down, placed, restored, partitions, moved, stream_ms, cap = map(int, sys.argv[1:])
secs = max(stream_ms, 1) / 1000
print("| seen down | placed without it | replicas restored | partitions streamed | bytes streamed | partitions/s | MiB/s | cap MiB/s |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
print(f"| {down:,} ms | {placed:,} ms | {restored:,} ms | {partitions:,} | {moved/2**20:,.1f} MiB | {partitions/secs:,.0f} | {moved/2**20/secs:,.1f} | {cap/2**20:,.0f} |")
PY
