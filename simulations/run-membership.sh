#!/usr/bin/env bash
# The membership runs behind simulations/MEMBERSHIP.md. Each report goes to stdout and to
# $OUT/membership-<name>.txt, CSV files and charts to $OUT (default simulations/results),
# wall times to stderr.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

run() {
  local name=$1
  shift
  "$SIM" membership --out "$OUT" "$@" | tee "$OUT/membership-$name.txt"
}

# Scale: 10, 100 and 1,000 nodes, without and with 5 % loss.
for nodes in 10 100 1000; do
  run "n$nodes-loss0" --nodes "$nodes" --loss 0 --seed 1
  run "n$nodes-loss5" --nodes "$nodes" --loss 0.05 --seed 1
done

# Between the two: a healed partition at 300 nodes.
run n300-loss5 --nodes 300 --loss 0.05 --seed 1 --no-plots

# Averages over seeds (one crash and one join per run), and the bound on convergence
# after a heal, at 0 % and 5 % loss.
for nodes in 10 100; do
  for seed in $(seq 1 10); do
    run "n$nodes-loss0-seed$seed" --nodes "$nodes" --loss 0 --seed "$seed" --no-plots
    run "n$nodes-loss5-seed$seed" --nodes "$nodes" --loss 0.05 --seed "$seed" --no-plots
  done
done

# Same-side down verdicts, rejoins outside the cut and convergence after a partition,
# per seed, at 1,000 nodes (about 20 s a run without loss, 1.5 minutes with 5 %).
for seed in $(seq 1 10); do
  run "n1000-loss0-seed$seed" --nodes 1000 --loss 0 --seed "$seed" --no-plots
  run "n1000-loss5-seed$seed" --nodes 1000 --loss 0.05 --seed "$seed" --no-plots
done

# Roster sync off: how long a joiner needs to learn the whole roster by gossip alone.
for nodes in 100 1000; do
  run "n$nodes-loss5-nosync" --nodes "$nodes" --loss 0.05 --seed 1 --roster-sync off
done

# Lifeguard: node 2 sends everything 300-800 ms late; with and without Lifeguard.
for nodes in 100 1000; do
  for lifeguard in on off; do
    run "n$nodes-loss5-slow-lifeguard-$lifeguard" --nodes "$nodes" --loss 0.05 --seed 1 \
      --slow-node --lifeguard "$lifeguard"
  done
done

# A longer steady state at 1,000 nodes and 5 % loss (false verdicts per node-hour); 65
# minutes puts the partition at 3,616 s, so the steady state lasts a simulated hour.
run n1000-loss5-12min --nodes 1000 --loss 0.05 --seed 1 --minutes 12
run n1000-loss5-30min --nodes 1000 --loss 0.05 --seed 1 --minutes 30
run n1000-loss5-65min --nodes 1000 --loss 0.05 --seed 1 --minutes 65

# 3,000 and 10,000 nodes, no loss. Every member holds the whole roster, so one process
# holds N^2 roster entries: about 7 GB and half an hour of CPU at 10,000.
run n3000-loss0 --nodes 3000 --loss 0 --seed 1
run n10000-loss0 --nodes 10000 --loss 0 --seed 1 --minutes 5
