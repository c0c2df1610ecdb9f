#!/usr/bin/env bash
# The membership scenario runs behind simulations/MEMBERSHIP.md. Reports go to stdout,
# CSV files and charts to simulations/results (or $OUT), wall times to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-simulations/results}
SIM=(cargo run --release -q -p chorus-simulations -- membership --out "$OUT")

# Scale: 10 to 1,000 nodes, without and with 5 % loss.
for nodes in 10 100 1000; do
  for loss in 0 0.05; do
    "${SIM[@]}" --nodes "$nodes" --loss "$loss" --seed 1
  done
done

# Roster sync: how long a joiner needs to know the whole roster without it.
for nodes in 100 1000; do
  "${SIM[@]}" --nodes "$nodes" --loss 0.05 --seed 1 --roster-sync off
done

# An hour at 1,000 nodes and 5 % loss: false down verdicts and forced rejoins.
"${SIM[@]}" --nodes 1000 --loss 0.05 --seed 1 --minutes 60

# Lifeguard: a slow node at 1,000 nodes and 5 % loss, with and without.
for lifeguard in on off; do
  "${SIM[@]}" --nodes 1000 --loss 0.05 --seed 1 --slow-node --lifeguard "$lifeguard"
done

# 10,000 nodes, no loss, five simulated minutes.
"${SIM[@]}" --nodes 10000 --loss 0 --seed 1 --minutes 5
