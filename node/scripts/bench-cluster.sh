#!/usr/bin/env bash
# Three-node figures for BENCHMARKS.md: three release `chorus agent`s on 127.0.0.1/.2/.3
# (fresh data and certificates in a temp dir), `chorus bench` on the same machine.
#
#   node/scripts/bench-cluster.sh              # builds the release binary, runs every row
#   CHORUS_BIN=/path/to/chorus DUR=10s node/scripts/bench-cluster.sh
#
# Rows, for one replica per partition (replication_factor = 1) and for three (the
# default, write quorum 2), same script, same run: the SDK sending each submit straight
# to its owner vs everything through node-1 (which forwards what it does not own over
# the cluster links), closed loop at saturation and at 32 x 1. Then, over KILLS
# repetitions with three replicas: SIGKILL of node-3, the time until both survivors see
# it down, and the time until a write for a user node-3 led is acknowledged again
# (failover: detection, a new leader's promises and catch-up). Knobs: CHORUS_BIN,
# DUR (10s), WARMUP (2s), KILLS (10), PROBE_MS (500), OUT (./bench-results), RFS ("1 3":
# the replication factors whose rows run).
set -euo pipefail
KILLS="${KILLS:-10}"
RF=3
PROBE_MS="${PROBE_MS:-500}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

# shellcheck source=bench-nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-nodes.sh"
# The replication factor is filled in per run (start_node).
nodes_init 3 "replication_factor = @RF@"
stop_all() { for i in 1 2 3; do stop_agent "$i"; done; }

start_node() {
  sed "s/@RF@/$RF/" "$WORK/node-$1.toml" > "$WORK/node-$1.run.toml"
  "$BIN" agent --config "$WORK/node-$1.run.toml" >/dev/null 2>>"$WORK/node-$1.log" &
  PIDS[$1]=$!
}

state_of() { # state_of OBSERVER MEMBER
  "$BIN" ctl --json --config "$WORK/node-$1.run.toml" members 2>/dev/null | python3 -c "
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

# submit_ok USER: one write for USER through node-1; true once acknowledged.
submit_ok() {
  "$BIN" submit --user "$1" --server 127.0.0.1:7400 --server-name node-1 \
    --ca "$WORK/certs/ca.pem" --data-dir "$WORK/data-1" >/dev/null 2>&1
}

# owned_by NODE: a user whose partition NODE leads, as node-1's ring says.
owned_by() {
  for i in $(seq 1 1000); do
    if "$BIN" ctl --json --config "$WORK/node-1.run.toml" ring --user "u-$i" 2>/dev/null |
      grep -q "\"owner\": *\"node-$1\""; then
      echo "u-$i"; return 0
    fi
  done
  echo "no user on node-$1" >&2; exit 1
}

fresh_cluster() {
  stop_all
  rm -rf "$WORK"/data-*
  for i in 1 2 3; do start_node "$i"; done
  for _ in $(seq 1 100); do [ -s "$WORK/data-1/admin.key" ] && break; sleep 0.1; done
  wait_alive
  # Writable: every partition's leader has taken over (sampled on a few users).
  for u in w-1 w-2 w-3 w-4 w-5 w-6 w-7 w-8; do
    for _ in $(seq 1 300); do submit_ok "$u" && break; sleep 0.1; done
  done
}

# agents_cpu: CPU seconds the running agents have used (user + system).
agents_cpu() {
  local ticks=0 pid
  for pid in "${PIDS[@]}"; do
    [ "$pid" != 0 ] || continue
    ticks=$(( ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
  done
  echo "$ticks $(getconf CLK_TCK)" | awk '{printf "%.2f", $1 / $2}'
}

# run NAME [bench flags...]: one bench through node-1; prints a row. The agents' CPU
# is counted from the end of the warmup to the end of the run: on a shared machine the
# CPU a write costs varies less than the writes per second.
run() {
  local name="$1"; shift
  "$BIN" bench --server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" \
    --data-dir "$WORK/data-1" --duration "$DUR" --warmup "$WARMUP" \
    --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.progress" &
  local bench=$!
  sleep "${WARMUP%s}"
  local cpu0; cpu0=$(agents_cpu)
  wait "$bench"
  local cpu1; cpu1=$(agents_cpu)
  python3 - "$name" "$OUT/$name.json" "$*" "$cpu0" "$cpu1" "${DUR%s}" <<'PY'
import json, sys
name, path, flags = sys.argv[1], sys.argv[2], sys.argv[3]
cpu = float(sys.argv[5]) - float(sys.argv[4])
s = json.load(open(path))
l = s["latency_ms"]
errors = sum(s["errors"].values())
served = s["requests_per_sec"] * float(sys.argv[6])
per = cpu / served * 1e6 if served else 0
print(f"| {name} | `{flags}` | {s['requests_per_sec']:,.0f} | {l['p50']:.2f} | {l['p99']:.2f} | {errors} | {per:,.0f} |")
PY
}

echo "| replicas | scenario | flags | req/s | p50 ms | p99 ms | errors | agents' CPU µs/req |"
echo "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"
for RF in ${RFS:-1 3}; do
  fresh_cluster
  for row in "direct_saturation --concurrency 256 --connections 2 --streams 8" \
             "forwarded_saturation --concurrency 256 --connections 2 --streams 8 --no-routing" \
             "direct_32x1 --concurrency 32 --connections 32 --streams 1" \
             "forwarded_32x1 --concurrency 32 --connections 32 --streams 1 --no-routing"; do
    # shellcheck disable=SC2086
    set -- $row
    name="$1"; shift
    printf '| %s ' "$RF"
    run "rf${RF}_$name" "$@"
  done
done

RF=3
echo
echo "| kill | detected by both survivors (ms) | first acknowledged write for node-3's user (ms) |"
echo "| ---: | ---: | ---: |"
for k in $(seq 1 "$KILLS"); do
  fresh_cluster
  user="$(owned_by 3)"
  for _ in $(seq 1 300); do submit_ok "$user" && break; sleep 0.1; done
  kill -KILL "${PIDS[3]}"; wait "${PIDS[3]}" 2>/dev/null || true; PIDS[3]=0
  t0=$(date +%s%N)
  ( while [ "$(state_of 1 3)" != down ] || [ "$(state_of 2 3)" != down ]; do sleep 0.02; done
    echo $(( ($(date +%s%N) - t0) / 1000000 )) > "$WORK/detected" ) &
  detector=$!
  until submit_ok "$user"; do
    sleep 0.02
    if [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 60000 ]; then echo "no failover" >&2; exit 1; fi
  done
  acked=$(( ($(date +%s%N) - t0) / 1000000 ))
  wait "$detector"
  echo "| $k | $(cat "$WORK/detected") | $acked |"
done
