#!/usr/bin/env bash
# Users' rights at size, for BENCHMARKS.md: three local agents (three replicas of each
# partition), one user's items loaded through node-1 with `chorus bench --users 1` for
# LOAD, then that user exported with `chorus users export` (its MB/s, as the CLI
# reports it) and deleted with `chorus users delete`: the time to the answer (a write
# quorum holds every tombstone) and to every replica's copy of the user's partition
# matching (`ctl replicas --digest` on each node), which is when the deletion is
# complete everywhere.
#
#   CHORUS_BIN=target/release/chorus LOAD=4s node/scripts/bench-users.sh
#
# Knobs: CHORUS_BIN LOAD (4s) TEXT_BYTES (2000) PROBE_MS (500)
set -euo pipefail
PROBE_MS="${PROBE_MS:-500}"
LOAD="${LOAD:-4s}"
TEXT_BYTES="${TEXT_BYTES:-2000}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
# shellcheck source=bench-nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-nodes.sh"
# One user writes far past the default per-user limit here.
nodes_init 3 "replication_factor = 3
[limits]
per_user_per_minute = 100000000
per_user_burst = 1000000"
for i in 1 2 3; do start_agent "$i"; done
wait_formed 3
client=(--server 127.0.0.1:7400 --server-name node-1 --ca "$WORK/certs/ca.pem" --data-dir "$WORK/data-1")
wait_writable "${client[@]}"
"$BIN" bench "${client[@]}" --duration "$LOAD" --warmup 0s --batch 100 --concurrency 8 \
  --connections 2 --users 1 --text-bytes "$TEXT_BYTES" >"$WORK/load.txt" 2>&1
user="user-00000000000"
partition="$(ctl 1 ring --user "$user" | field "d['result']['user']['partition']")"
leader="$(ctl 1 ring --user "$user" | field "d['result']['user']['owner']")"
echo "user $user: partition $partition, led by $leader"
wait_in_step 1 2 3
"$BIN" users export "$user" --out "$WORK/export.jsonl" "${client[@]}" 2>"$WORK/export.err" || { cat "$WORK/export.err"; exit 1; }
tail -1 "$WORK/export.err"
echo "export file: $(wc -l <"$WORK/export.jsonl") lines, $(du -h "$WORK/export.jsonl" | cut -f1)"
digest() { ctl "$1" replicas --digest | field "[r['digest'] for r in d['result']['partitions'] if r['partition'] == $partition][0]"; }
started="$(now_ms)"
"$BIN" users delete "$user" --json "${client[@]}"
answered="$(now_ms)"
for _ in $(seq 1 600); do
  a="$(digest 1)"; b="$(digest 2)"; c="$(digest 3)"
  [ "$a" = "$b" ] && [ "$b" = "$c" ] && [ "$a" != 0 ] && break
  sleep 0.05
done
everywhere="$(now_ms)"
echo "deletion answered after $((answered - started)) ms (a write quorum holds it; includes the CLI's connect)"
echo "deletion on every replica after $((everywhere - started)) ms"
"$BIN" list --user "$user" --json "${client[@]}" | wc -l | xargs echo "items listed afterwards:"
