#!/usr/bin/env bash
# Three-node figures for BENCHMARKS.md: three release `chorus agent`s on 127.0.0.1/.2/.3
# (fresh data and certificates in a temp dir), `chorus bench` on the same machine.
#
#   node/scripts/bench-cluster.sh              # builds the release binary, runs every row
#   CHORUS_BIN=/path/to/chorus DUR=10s node/scripts/bench-cluster.sh
#
# Rows: the SDK sending each submit straight to its owner vs everything through node-1
# (which forwards what it does not own over the cluster links), closed loop at saturation
# and at 32 x 1; then the time from SIGKILL of node-3 until both survivors see it down,
# over KILLS repetitions. Knobs: CHORUS_BIN, DUR (10s), WARMUP (2s), KILLS (5),
# PROBE_MS (500), OUT (./bench-results).
set -euo pipefail
KILLS="${KILLS:-5}"
PROBE_MS="${PROBE_MS:-500}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

WORK="$(mktemp -d -t chorus-cluster-bench.XXXXXX)"
PIDS=(0 0 0 0)
stop_all() {
  for i in 1 2 3; do
    if [ "${PIDS[$i]}" != 0 ] && kill -0 "${PIDS[$i]}" 2>/dev/null; then
      kill -TERM "${PIDS[$i]}" 2>/dev/null || true # an agent this script started
      wait "${PIDS[$i]}" 2>/dev/null || true
    fi
    PIDS[$i]=0
  done
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" certs init --dir "$WORK/certs" >/dev/null
for i in 1 2 3; do
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
[cluster.gossip]
expected_cluster_size = 3
probe_period_ms = $PROBE_MS
probe_rtt_ms = $((PROBE_MS * 2 / 5))
TOML
done

start_node() {
  "$BIN" agent --config "$WORK/node-$1.toml" >/dev/null 2>>"$WORK/node-$1.log" &
  PIDS[$1]=$!
}

state_of() { # state_of OBSERVER MEMBER
  "$BIN" ctl --json --config "$WORK/node-$1.toml" members 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
print(next((m['state'] for m in d['result']['members'] if m['id'] == 'node-$2'), 'none'))" 2>/dev/null || echo none
}

wait_alive() {
  for _ in $(seq 1 300); do
    local ok=1
    for o in 1 2 3; do for m in 1 2 3; do
      [ "$(state_of "$o" "$m")" = alive ] || ok=0
    done; done
    [ $ok = 1 ] && return 0
    sleep 0.1
  done
  echo "the cluster did not form" >&2; exit 1
}

fresh_cluster() {
  stop_all
  rm -rf "$WORK"/data-*
  for i in 1 2 3; do start_node "$i"; done
  for _ in $(seq 1 100); do [ -s "$WORK/data-1/admin.key" ] && break; sleep 0.1; done
  wait_alive
}

# run NAME [bench flags...]: one bench through node-1; prints a row.
run() {
  local name="$1"; shift
  "$BIN" bench --server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" \
    --data-dir "$WORK/data-1" --duration "$DUR" --warmup "$WARMUP" \
    --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.progress"
  python3 - "$name" "$OUT/$name.json" "$*" <<'PY'
import json, sys
name, path, flags = sys.argv[1], sys.argv[2], sys.argv[3]
s = json.load(open(path))
l = s["latency_ms"]
errors = sum(s["errors"].values())
print(f"| {name} | `{flags}` | {s['requests_per_sec']:,.0f} | {l['p50']:.2f} | {l['p99']:.2f} | {errors} |")
PY
}

echo "| scenario | flags | req/s | p50 ms | p99 ms | errors |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
fresh_cluster
run direct_saturation --concurrency 256 --connections 2 --streams 8
run forwarded_saturation --concurrency 256 --connections 2 --streams 8 --no-routing
run direct_32x1 --concurrency 32 --connections 32 --streams 1
run forwarded_32x1 --concurrency 32 --connections 32 --streams 1 --no-routing

echo
echo "| kill | detected by both survivors (ms) |"
echo "| ---: | ---: |"
for k in $(seq 1 "$KILLS"); do
  fresh_cluster
  kill -KILL "${PIDS[3]}"; wait "${PIDS[3]}" 2>/dev/null || true; PIDS[3]=0
  t0=$(date +%s%N)
  while [ "$(state_of 1 3)" != down ] || [ "$(state_of 2 3)" != down ]; do
    sleep 0.02
    if [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 60000 ]; then echo "not detected" >&2; exit 1; fi
  done
  echo "| $k | $(( ($(date +%s%N) - t0) / 1000000 )) |"
done
