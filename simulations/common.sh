# Sourced by the run scripts: from the repository root, builds the simulations in
# release and sets SIM to the binary and OUT to where results go.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-simulations/results}
mkdir -p "$OUT"
cargo build --release -q -p chorus-simulations
SIM=target/release/chorus-simulations
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then SIM="$CARGO_TARGET_DIR/release/chorus-simulations"; fi
