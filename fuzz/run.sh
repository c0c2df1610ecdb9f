#!/usr/bin/env bash
# Runs each fuzz target for a bounded time and prints its executions.
#
#   fuzz/run.sh                         every target, 60 s each
#   SECONDS_PER_TARGET=600 fuzz/run.sh  ten minutes each
#   TARGETS="hello client_frame" fuzz/run.sh
#   JOBS=2 fuzz/run.sh                  libFuzzer workers per target (default 1)
#   DEBUG_ASSERTIONS=1 fuzz/run.sh      also debug assertions and overflow checks
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Runs under
# `nice -n 15` (the machine is shared). The working corpus is fuzz/corpus/NAME (not
# committed), seeded from the committed fuzz/seeds/NAME; a crash lands in
# fuzz/artifacts/NAME: copy it to fuzz/regressions/NAME/ so that the stable smoke test
# (node/tests/fuzz_smoke.rs) replays it forever, then fix the decoder.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET="${SECONDS_PER_TARGET:-60}"
JOBS="${JOBS:-1}"
FLAGS=(-O)
[ "${DEBUG_ASSERTIONS:-0}" = 1 ] && FLAGS+=(-a)
# Every [[bin]] of the manifest.
ALL="$(grep -o 'fuzz_targets/[a-z_0-9]*\.rs' Cargo.toml | sed 's#fuzz_targets/##; s#\.rs##' | tr '\n' ' ')"
TARGETS="${TARGETS:-$ALL}"

for target in $TARGETS; do
  nice -n 15 cargo +nightly fuzz build "${FLAGS[@]}" "$target" >/dev/null
done

status=0
for target in $TARGETS; do
  mkdir -p "corpus/$target" "artifacts/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds+=("seeds/$target")
  [ -d "regressions/$target" ] && seeds+=("regressions/$target")
  log="$(mktemp)"
  set +e
  # With one worker libFuzzer runs in this process and its stats go to $log; with more
  # it writes fuzz-N.log in this directory (so two run.sh with JOBS>1 must not share it).
  parallel=()
  [ "$JOBS" -gt 1 ] && parallel=(-jobs="$JOBS" -workers="$JOBS")
  nice -n 15 cargo +nightly fuzz run "${FLAGS[@]}" "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" "${parallel[@]}" \
    -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1
  rc=$?
  set -e
  # fuzz-N.log exist only with JOBS > 1; a missing one must not end the script.
  execs="$({ cat "$log"; cat fuzz-*.log 2>/dev/null || true; } \
    | { grep -h 'stat::number_of_executed_units' || true; } | awk '{s += $2} END {print s + 0}')"
  rm -f fuzz-*.log
  if [ "$rc" -ne 0 ]; then
    echo "$target: CRASH after $execs executions (exit $rc); see fuzz/artifacts/$target"
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 || true
    status=1
  else
    echo "$target: $execs executions in ${SECONDS_PER_TARGET}s, no crash"
  fi
  rm -f "$log"
done
exit $status
