#!/usr/bin/env bash
# Regenerates every simulation result: the reports (results/*.txt), CSV files and SVG
# charts in simulations/results (or $OUT). Deterministic reports go to stdout and the
# .txt files; wall-clock placement times go to stderr and results/ring-timings.csv.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# Ring: every strategy over N = 3..1000 and P = 1024, 4096 (balance, moves, time).
"$SIM" ring --out "$OUT" --seed 1 | tee "$OUT/ring.txt"

# Ring, densely around N = 100 and N = 300: where a cap drops by one partition, the
# greedy bounded load moves many partitions at once (a cliff between sweep points above).
"$SIM" ring --out "$OUT/ring-dense" --seed 1 --no-plots --vnodes 16 --slack 5,10 \
  --nodes "$(seq -s, 90 1 110),$(seq -s, 280 1 320)" | tee "$OUT/ring-dense.txt" >/dev/null

# Re-replication: one member lost at N = 10..1000, time until every replica set is
# complete again, new leaders or spread senders streaming; then with 16x finer partitions.
"$SIM" rereplicate --out "$OUT" --seed 1 | tee "$OUT/rereplicate.txt"
"$SIM" rereplicate --out "$OUT/rereplicate-p65535" --seed 1 --no-plots --partitions 65535 \
  | tee "$OUT/rereplicate-p65535.txt" >/dev/null

# Overload: the tier stage and degradation policy at 0.5x..5x capacity.
"$SIM" overload --out "$OUT" --seed 1 | tee "$OUT/overload.txt"

# --- membership ----------------------------------------------------------------------
# SWIM at 10..3,000 nodes (see MEMBERSHIP.md); the longest runs take tens of minutes.
OUT="$OUT" simulations/run-membership.sh
# --- end membership ------------------------------------------------------------------
