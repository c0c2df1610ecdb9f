#!/usr/bin/env bash
# A rolling upgrade under a steady workload, for BENCHMARKS.md: three release `chorus
# agent`s on 127.0.0.1/.2/.3 (three replicas per partition) start on OLD_BIN while a
# workload runs at a steady rate through the SDK; then each host in turn, as
# deploy/README.md "Upgrading the binary" says: stop (SIGTERM, as `systemctl restart`),
# start on NEW_BIN, wait until every member sees every member alive and the followers
# are in step (under load some records are always on their way: fewer than LAG
# behind), next host. Reports each host's time from its stop until the cluster
# is whole again, the whole upgrade's time, and what the workload's clients saw
# (requests, errors by kind, p99) over the whole WINDOW the workload ran, the upgrade
# inside it. The agents' logs are kept in OUT (upgrade-node-N.log).
#
#   OLD_BIN=/tmp/chorus-old NEW_BIN=target/release/chorus node/scripts/bench-upgrade.sh
#
# Knobs: OLD_BIN, NEW_BIN (both default to CHORUS_BIN or this tree's release build),
# RATE (writes/s, 1000), WINDOW (the workload's length, 120s), RETRIES (the SDK's
# retries per request, 3 as an application's default; 0 counts every refusal),
# SETTLE (seconds between hosts, 5), LAG (records behind on all leaders together
# that count as in step under load, 100), PROBE_MS (500), OUT (./bench-results).
set -euo pipefail
RATE="${RATE:-1000}"
SETTLE="${SETTLE:-5}"
WINDOW="${WINDOW:-120s}"
RETRIES="${RETRIES:-3}"
LAG="${LAG:-100}"
PROBE_MS="${PROBE_MS:-500}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
# shellcheck source=bench-nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-nodes.sh"
OLD_BIN="${OLD_BIN:-$BIN}"
NEW_BIN="${NEW_BIN:-$BIN}"

records_behind() { # records the followers lack on all leaders together
  local i sum=0
  for i in 1 2 3; do
    sum=$((sum + $(ctl "$i" handoff | field "d['result']['records_left']")))
  done
  echo "$sum"
}

alive_everywhere() { # every node sees all three members alive
  local i
  for i in 1 2 3; do
    [ "$(ctl "$i" members | field "sum(m['state'] == 'alive' for m in d['result']['members'])")" = 3 ] ||
      return 1
  done
}

BIN="$OLD_BIN"
nodes_init 3 ""
for i in 1 2 3; do start_agent "$i"; done
wait_formed 3
sleep 3

# The workload's SDK is the new release's (an application's is its own).
"$NEW_BIN" bench --server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" \
  --data-dir "$WORK/data-1" --duration "$WINDOW" --warmup 0s --rate "$RATE" --concurrency 64 \
  --connections 2 --streams 4 --users 20000 --retries "$RETRIES" \
  --json "$OUT/upgrade-workload.json" >"$OUT/upgrade-workload.txt" 2>"$OUT/upgrade-workload.err" &
workload=$!
sleep "$SETTLE"

echo "| host | stopped to whole again (ms) |"
echo "| --- | ---: |"
started=$(now_ms)
for i in 3 2 1; do
  t0=$(now_ms)
  stop_agent "$i"
  BIN="$NEW_BIN"
  start_agent "$i"
  until alive_everywhere; do sleep 0.1; done
  until [ "$(records_behind)" -le "$LAG" ]; do sleep 0.1; done
  echo "| node-$i | $(( $(now_ms) - t0 )) |"
  sleep "$SETTLE"
done
total=$(( $(now_ms) - started - 3 * SETTLE * 1000 ))
for i in 1 2 3; do cp "$WORK/node-$i.log" "$OUT/upgrade-node-$i.log"; done
kill -0 "$workload" 2>/dev/null || echo "the workload ended before the upgrade did: raise WINDOW" >&2
wait "$workload" || true
# Requests held through a change of leader, as counted by the agents running now (each
# counts from its last start; a release without the counter shows none).
held=$(for i in 1 2 3; do curl -s "http://127.0.0.$i:9400/metrics" || true; done |
  awk '/^chorus_replication_requests_held_total/ { split($1, a, "\""); n[a[2]] += $2 }
       END { for (o in n) printf "%s=%d ", o, n[o] }')
echo
echo "upgrade of three hosts: $total ms (without the ${SETTLE} s pauses between hosts)"
echo "requests held by the agents running at the end: ${held:-none counted}"
python3 - "$OUT/upgrade-workload.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
errors = s["errors"]
print(f"workload: {s['requests_per_sec']:,.0f} req/s, p50 {s['latency_ms']['p50']:.1f} ms, "
      f"p99 {s['latency_ms']['p99']:.1f} ms, errors {sum(errors.values())} {dict(errors)}")
PY
