#!/usr/bin/env bash
# Builds (release, here: no GPU needed) everything tools/gpu_check.sh runs on a GPU machine and
# copies it into a bundle folder: the CUDA test executables (every hr-tensor family test file with
# device-parametrised `test_device!` cases as family-<name>, hr-tensor device, hr-models
# cuda_step, hr-train cuda_train, hr-dist nccl when present), the CUDA kernel bench,
# the retriever training-step bench and the hr-train binary (GPU demo run). Only GPU-relevant
# executables go in, stripped, so the bundle stays small enough to carry.
#
# Usage (from anywhere): tools/build_gpu_bundle.sh [BUNDLE_DIR]   (default: gpu-bundle/)
# Then on the GPU machine, from the repo root: tools/gpu_check.sh gpu-bundle
# The bundle is ~80 MB; the device tool carries at most 64 MiB, so the script also writes
# gpu-pack/bundle.tar.xz (~20 MB): carry `gpu-pack` and run tools/gpu_check.sh gpu-pack/bundle.tar.xz
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE="${1:-gpu-bundle}"
# Only ever clear a folder this script made (it carries a marker file).
if [ -d "$BUNDLE" ] && [ -n "$(ls -A "$BUNDLE")" ] && [ ! -e "$BUNDLE/.hr-gpu-bundle" ]; then
    echo "error: $BUNDLE exists, is not empty and is not a GPU bundle; pick another folder" >&2
    exit 1
fi
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"
touch "$BUNDLE/.hr-gpu-bundle"

collect() {
    # Reads cargo's JSON messages; prints kind, name and executable of every artifact.
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])
'
}

# hr-tensor's op families: every test file that registers cases with `test_device!` (its GPU
# cases are the tests named *_cuda; tools/gpu_check.sh runs those). Built on their own so that a
# test file of the same name in another crate cannot take a family's place in the bundle.
FAMILIES=()
for f in crates/hr-tensor/tests/*.rs; do
    if grep -q 'test_device!' "$f"; then FAMILIES+=(--test "$(basename "$f" .rs)"); fi
done
[ "${#FAMILIES[@]}" -gt 0 ] || { echo "error: no test_device! cases in crates/hr-tensor/tests" >&2; exit 1; }
echo "== building hr-tensor family test executables (release): ${FAMILIES[*]}"
cargo test --release -p hr-tensor "${FAMILIES[@]}" --no-run --message-format=json | collect > "$BUNDLE/.families"
TESTS=(-p hr-tensor --test device -p hr-models --test cuda_step --test cuda_mel -p hr-train --test cuda_train)
if [ -f crates/hr-dist/tests/nccl.rs ]; then TESTS+=(-p hr-dist --test nccl); fi
echo "== building test executables (release): ${TESTS[*]}"
cargo test --release "${TESTS[@]}" --no-run --message-format=json | collect > "$BUNDLE/.tests"
echo "== building bench executables (release)"
cargo bench -p hr-tensor --bench cuda_ops -p hr-models --bench retriever --no-run --message-format=json | collect > "$BUNDLE/.benches"
echo "== building hr-train (release)"
cargo build --release -p hr-train --bin hr-train

while read -r kind name exe; do
    [ "$kind" = test ] && cp "$exe" "$BUNDLE/family-$name"
done < "$BUNDLE/.families"
while read -r kind name exe; do
    [ "$kind" = test ] && cp "$exe" "$BUNDLE/test-$name"
done < "$BUNDLE/.tests"
while read -r kind name exe; do
    [ "$kind" = bench ] && cp "$exe" "$BUNDLE/bench-$name"
done < "$BUNDLE/.benches"
cp "${CARGO_TARGET_DIR:-target}/release/hr-train" "$BUNDLE/hr-train"
rm -f "$BUNDLE/.families" "$BUNDLE/.tests" "$BUNDLE/.benches"
# Line tables are enough for backtraces; strip the rest to keep the bundle small.
for f in "$BUNDLE"/*; do strip --strip-debug "$f" 2>/dev/null || true; done
ls -la "$BUNDLE"
du -sh "$BUNDLE"
mkdir -p gpu-pack
tar -C "$BUNDLE" -cf - . | xz -T2 -6 > gpu-pack/bundle.tar.xz
ls -la gpu-pack/bundle.tar.xz
