#!/usr/bin/env bash
# Single-node figures for BENCHMARKS.md: a release `chorus agent` on 127.0.0.1 with a
# fresh data dir per scenario, `chorus bench` on the same machine, ~300-byte items.
# Prints one table row per scenario and keeps each run's JSON summary in $OUT.
#
#   node/scripts/bench-single-node.sh            # every scenario
#   SCENARIOS="closed32 pipelined16" DUR=10s node/scripts/bench-single-node.sh
#
# Knobs: CHORUS_BIN (build this tree) DUR (10s) WARMUP (2s) OUT (./bench-results) SCENARIOS (all) SAT_RATE/SAT_BATCH_RATE
#        AGENT_CPUS BENCH_CPUS (pinning) MIX (the tier mix) OVERLOAD_RATE or OVERLOAD_MULTIPLE (2, of saturation_mix) OVERLOAD_WORKERS OVERLOAD_CONNECTIONS
# (open-loop targets; default: half of the measured closed-loop saturation).
#
# SCENARIO=NAME instead runs one `chorus bench --scenario NAME` (baseline, 150, stress,
# spike, soak, overload) on a fresh node with its memory sampled, and keeps
# $OUT/scenario-NAME.{txt,json,svg}:
#
#   SCENARIO=spike SCENARIO_ARGS="--spike-before 10s --spike-length 10s --spike-after 10s" \
#     node/scripts/bench-single-node.sh
#
# Scenario knobs: SATURATION_RATE (S in req/s; default: calibrated by the bench itself),
# CALIBRATE (10s), CONNECTIONS (2 per tier), STREAMS (8), MIX, SCENARIO_ARGS (more flags,
# e.g. --duration 2m, --step 5s, --multiple 4).
set -euo pipefail
SCENARIOS="${SCENARIOS:-closed32 pipelined16 saturation half single_flush batch100 batch100_half}"
MIX="${MIX:-realtime=10,priority=20,standard=40,batch=30}"
# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

AGENT_PID=""
WORK=""
# AGENT_CPUS / BENCH_CPUS (e.g. 0 and 1): pin the node and the load generator to their
# own cores, so that generating a multiple of the node's rate takes none of its CPU.
AGENT_PIN="${AGENT_CPUS:+taskset -c $AGENT_CPUS}"
BENCH_PIN="${BENCH_CPUS:+taskset -c $BENCH_CPUS}"
stop_agent() {
  if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
    kill -TERM "$AGENT_PID" # the agent this script started
    wait "$AGENT_PID" || true
  fi
  AGENT_PID=""
  [ -n "$WORK" ] && rm -rf "$WORK"
  WORK=""
}
trap stop_agent EXIT

# start_agent [ENV=VALUE...]: a fresh node in a temp dir on port 7499.
start_agent() {
  WORK="$(mktemp -d -t chorus-bench.XXXXXX)"
  (cd "$WORK" && exec $AGENT_PIN env CHORUS_LISTEN=127.0.0.1:7499 CHORUS_LOG_LEVEL="${AGENT_LOG:-warn}" "$@" "$BIN" agent >/dev/null 2>"$WORK/agent.log") &
  AGENT_PID=$!
  for _ in $(seq 1 100); do [ -s "$WORK/chorus-data/admin.key" ] && break; sleep 0.1; done
  sleep 0.3
}

# agent_cpu: the agent's CPU time so far, in clock ticks.
agent_cpu() { awk '{print $14 + $15}' "/proc/$AGENT_PID/stat"; }

# run NAME [bench flags...]: one scenario on a fresh node; prints a row. The agent's CPU
# per request is sampled over the measured window less its first and last second (so
# whole-second DUR and WARMUP of at least 3 s and 0 s; otherwise "-").
run() {
  local name="$1"; shift
  $BENCH_PIN "$BIN" bench --server 127.0.0.1:7499 --data-dir "$WORK/chorus-data" \
    --duration "$DUR" --warmup "$WARMUP" --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.progress" &
  local bench=$! warm="${WARMUP%s}" dur="${DUR%s}" cpu="-"
  if [[ "$warm" =~ ^[0-9]+$ && "$dur" =~ ^[0-9]+$ ]] && ((dur >= 3)); then
    sleep $((warm + 1))
    local c0 t0 c1 t1
    c0=$(agent_cpu); t0=$(date +%s.%N)
    sleep $((dur - 2))
    c1=$(agent_cpu); t1=$(date +%s.%N)
    cpu="$(python3 -c "import os; print(($c1 - $c0) / os.sysconf('SC_CLK_TCK') / ($t1 - $t0))")"
  fi
  wait "$bench"
  python3 - "$name" "$OUT/$name.json" "$*" "$cpu" <<'PY'
import json, sys
name, path, flags, cpu = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
s = json.load(open(path))
l = s["latency_ms"]
errors = sum(s["errors"].values())
answered = (s["requests_ok"] + errors) / s["seconds"]
per = lambda rate: "-" if cpu == "-" or rate == 0 else f"{float(cpu) / rate * 1e6:.1f}"
print(f"| {name} | `{flags}` | {s['requests_per_sec']:,.0f} | {s['items_per_sec']:,.0f} | {l['p50']:.2f} | {l['p99']:.2f} | {l['p999']:.2f} | {errors} | {per(s['requests_per_sec'])} | {per(answered)} |")
PY
}

# tiers NAME: per-tier rows of a run with a tier mix, and the agent's peak RSS.
tiers() {
  python3 - "$1" "$OUT/$1.json" "$(grep VmHWM /proc/"$AGENT_PID"/status | awk '{print $2}')" <<'PY'
import json, sys
name, path, rss_kb = sys.argv[1], sys.argv[2], sys.argv[3]
s = json.load(open(path))
for tier, t in s["tiers"].items():
    l = t["latency_ms"]
    errors = " ".join(f"{k}={n}" for k, n in t["errors"].items()) or "none"
    print(f"|   {name} / {tier} | | {t['requests_per_sec']:,.0f} | | {l['p50']:.2f} | {l['p99']:.2f} | {l['p999']:.2f} | {errors} | | |")
print(f"|   {name}: agent peak RSS {int(rss_kb) / 1024:.0f} MiB | | | | | | | | | |")
PY
}

# levels: the degradation level changes the agent counted (/metrics) and logged.
levels() {
  local counted logged
  counted="$(curl -s http://127.0.0.1:9400/metrics | awk '/^chorus_degradation_changes_total/ {printf "%s%s", sep, $0; sep=", "}')"
  logged="$(grep -c "degradation level" "$WORK/agent.log" || true)"
  echo "|   $1: level changes counted: ${counted:-none}; logged: $logged | | | | | | | | | |"
}

rate_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['$2'])" "$OUT/$1.json"; }

# scenario NAME: one `chorus bench --scenario NAME` on a fresh node.
scenario() {
  local name="$1" file="$OUT/scenario-$1"
  start_agent
  # shellcheck disable=SC2086 # SCENARIO_ARGS is a list of flags
  $BENCH_PIN "$BIN" bench --server 127.0.0.1:7499 --data-dir "$WORK/chorus-data" \
    --scenario "$name" --node-pid "$AGENT_PID" --tier-mix "$MIX" \
    --connections "${CONNECTIONS:-2}" --streams "${STREAMS:-8}" \
    --calibrate "${CALIBRATE:-10s}" --warmup "$WARMUP" \
    ${SATURATION_RATE:+--saturation-rate "$SATURATION_RATE"} ${SCENARIO_ARGS:-} \
    --json "$file.json" --plot "$file.svg" 2>"$file.progress" | tee "$file.txt"
  stop_agent
  echo "kept $file.{txt,json,svg,progress}"
}

if [ -n "${SCENARIO:-}" ]; then
  scenario "$SCENARIO"
  exit 0
fi

echo "| scenario | flags | req/s | items/s | p50 ms | p99 ms | p99.9 ms | errors | agent CPU µs/ok | agent CPU µs/answer |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for s in $SCENARIOS; do
  case "$s" in
    closed32) start_agent; run closed32 --concurrency 32 --connections 32 --streams 1 ;;
    pipelined16) start_agent; run pipelined16 --concurrency 512 --connections 32 --streams 1 ;;
    saturation) start_agent; run saturation --concurrency 256 --connections 2 --streams 8 ;;
    # The same with items about 100 functions: what counting function stats costs.
    saturation_functions) start_agent; run saturation_functions --concurrency 256 --connections 2 --streams 8 --functions 100 ;;
    # Every submit refused (the level sheds batch): what a refusal costs the node.
    refusals)
      start_agent
      "$BIN" ctl degrade --data-dir "$WORK/chorus-data" set shed_optional >/dev/null
      run refusals --tier batch --concurrency 256 --connections 2 --streams 8 ;;
    half)
      start_agent
      rate="${SAT_RATE:-$(python3 -c "print(round($(rate_of saturation requests_per_sec) / 2))")}"
      run half --rate "$rate" --concurrency 256 --connections 2 --streams 8 ;;
    single_flush) start_agent CHORUS_DURABILITY=flush; run single_flush --concurrency 256 --connections 2 --streams 8 ;;
    batch100) start_agent; run batch100 --batch 100 --concurrency 16 --connections 2 --streams 4 ;;
    batch100_half)
      start_agent
      rate="${SAT_BATCH_RATE:-$(python3 -c "print(round($(rate_of batch100 requests_per_sec) / 2))")}"
      run batch100_half --batch 100 --rate "$rate" --concurrency 64 --connections 2 --streams 4 ;;
    saturation_mix) start_agent; run saturation_mix --tier-mix "$MIX" --concurrency 256 --connections 2 --streams 8; tiers saturation_mix ;;
    overload)
      start_agent
      rate="${OVERLOAD_RATE:-$(python3 -c "print(round($(rate_of saturation_mix requests_per_sec) * ${OVERLOAD_MULTIPLE:-2}))")}"
      run overload --tier-mix "$MIX" --rate "$rate" --concurrency "${OVERLOAD_WORKERS:-2048}" --connections "${OVERLOAD_CONNECTIONS:-1}" --streams 16
      tiers overload
      levels overload ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
  stop_agent
done
