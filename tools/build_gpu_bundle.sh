#!/usr/bin/env bash
# Builds (release) the hr-tensor test executables and the CUDA bench executable here (no GPU
# needed) and copies them into a bundle folder for tools/gpu_check.sh on a GPU machine.
#
# Usage (from anywhere): tools/build_gpu_bundle.sh [BUNDLE_DIR]   (default: gpu-bundle/)
# Then on the GPU machine, from the repo root: tools/gpu_check.sh gpu-bundle
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
    # Reads cargo's JSON messages; prints the executable of every test/bench artifact.
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

echo "== building test executables (release)"
cargo test --release -p hr-tensor --no-run --message-format=json | collect > "$BUNDLE/.tests"
echo "== building bench executable (release)"
cargo bench -p hr-tensor --bench cuda_ops --no-run --message-format=json | collect > "$BUNDLE/.benches"

while read -r kind name exe; do
    case "$kind" in
        test) cp "$exe" "$BUNDLE/$name" ;;
        lib) cp "$exe" "$BUNDLE/unit-$name" ;;
    esac
done < "$BUNDLE/.tests"
while read -r kind name exe; do
    [ "$name" = "cuda_ops" ] && cp "$exe" "$BUNDLE/cuda_ops"
done < "$BUNDLE/.benches"
rm -f "$BUNDLE/.tests" "$BUNDLE/.benches"
# Line tables are enough for backtraces; strip the rest to keep the bundle small.
for f in "$BUNDLE"/*; do strip --strip-debug "$f" 2>/dev/null || true; done
ls -la "$BUNDLE"
du -sh "$BUNDLE"
