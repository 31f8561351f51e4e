#!/usr/bin/env bash
# The main job on the embedded default (synthetic data, CPU): `hr-train demo` generates the
# synthetic dataset if absent, trains the tiny preset as the content-based baseline (fusion none)
# and as late- and mid-fusion hybrids, evaluates them on the test split and prints the table
# (config: configs/experiments/demo.toml; extra arguments are passed on, e.g. --set optim.epochs=1).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -p hr-train --bin hr-train -- demo --config configs/experiments/demo.toml "$@"
