#!/usr/bin/env bash
# The main job on the embedded default: synthetic data, CPU.
# The trainer (hr-train, issue 5) is not built yet; until it lands this script prepares the
# synthetic dataset the demo will train on and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/demo-data}"
if cargo metadata --no-deps --format-version 1 2>/dev/null | grep -q '"name":"hr-train"'; then
  exec cargo run --release -p hr-train -- --config configs/experiments/demo.toml
fi
echo "hr-train is not built yet (issue 5): preparing the synthetic dataset only, in $out"
cargo run --release -p hr-data -- prepare synthetic --clips 64 --seed 1 --out "$out"
cargo run --release -p hr-data -- inspect "$out"
