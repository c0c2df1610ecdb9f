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

WORK="$(mktemp -d -t chorus-rereplicate.XXXXXX)"
PIDS=(0 0 0 0 0)
cleanup() {
  for i in 1 2 3 4; do
    if [ "${PIDS[$i]}" != 0 ] && kill -0 "${PIDS[$i]}" 2>/dev/null; then
      kill -TERM "${PIDS[$i]}" 2>/dev/null || true # an agent this script started
      wait "${PIDS[$i]}" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" certs init --dir "$WORK/certs" >/dev/null
for i in 1 2 3 4; do
  "$BIN" certs node "node-$i" --ip "127.0.0.$i" --dir "$WORK/certs" >/dev/null
  cat > "$WORK/node-$i.toml" <<TOML
node_id = "node-$i"
data_dir = "$WORK/data-$i"
listen = "127.0.0.$i:7400"
partitions = 1024
[log]
level = "warn,chorus_node::cluster=info"
[tls]
ca_cert = "$WORK/certs/ca.pem"
cert = "$WORK/certs/node-$i.pem"
key = "$WORK/certs/node-$i.key"
[metrics]
listen = "127.0.0.$i:9400"
[cluster]
gossip_listen = "127.0.0.$i:7401"
seeds = ["127.0.0.1:7401"]
key_file = "$WORK/certs/cluster.key"
down_grace_ms = $GRACE_MS
handoff_bytes_per_sec = $CAP
[cluster.gossip]
expected_cluster_size = 4
probe_period_ms = $PROBE_MS
probe_rtt_ms = $((PROBE_MS * 2 / 5))
TOML
done

ctl() { # ctl NODE ARGS...: the JSON answer
  local node="$1"; shift
  "$BIN" ctl --json --config "$WORK/node-$node.toml" "$@" 2>/dev/null
}
field() { # field PYTHON-EXPR: EXPR on the JSON read from stdin as `d` (0 if it fails)
  python3 -c "
import json, sys
try:
    d = json.load(sys.stdin); print($1)
except Exception:
    print(0)"
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

for i in 1 2 3 4; do
  "$BIN" agent --config "$WORK/node-$i.toml" >/dev/null 2>>"$WORK/node-$i.log" &
  PIDS[$i]=$!
done
for _ in $(seq 1 300); do
  alive=$(ctl 1 members | field "sum(m['state'] == 'alive' for m in d['result']['members'])" || echo 0)
  [ "$alive" = 4 ] && break
  sleep 0.1
done
[ "$alive" = 4 ] || { echo "the cluster did not form" >&2; exit 1; }
sleep 2

"$BIN" bench --server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" \
  --data-dir "$WORK/data-1" --duration "$LOAD" --warmup 1s --concurrency 16 \
  --connections 2 --batch 16 --text-bytes 4000 --users 20000 \
  --json "$OUT/rereplicate-load.json" >"$OUT/rereplicate-load.txt" 2>/dev/null
# Every follower in step before the kill.
for _ in $(seq 1 600); do
  left=0
  for i in 1 2 3 4; do
    l=$(ctl "$i" handoff | field "d['result']['pairs_left']")
    left=$((left + l))
  done
  [ "$left" = 0 ] && break
  sleep 0.1
done

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
