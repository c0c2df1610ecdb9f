# Sourced by the bench scripts: the common knobs and the `chorus` binary to measure.
# CHORUS_BIN: a prebuilt `chorus` (e.g. another revision) instead of building this tree.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DUR="${DUR:-10s}"
WARMUP="${WARMUP:-2s}"
OUT="${OUT:-$PWD/bench-results}"
mkdir -p "$OUT"
if [ -n "${CHORUS_BIN:-}" ]; then
  BIN="$CHORUS_BIN"
else
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p chorus-node
  BIN="$ROOT/target/release/chorus"
fi
