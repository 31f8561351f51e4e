#!/usr/bin/env bash
# The ONE script to run on a GPU machine (no Rust needed): parity tests, CUDA benchmarks and the
# PyTorch comparison, all output to $OUT/gpu_check.log (or ./gpu_check.log without $OUT).
#
# Usage (from the repo root): tools/gpu_check.sh BUNDLE_DIR
#   BUNDLE_DIR holds the prebuilt executables from tools/build_gpu_bundle.sh:
#   test executables (cuda_parity-*, device-*, ...) and the bench executable cuda_ops-*.
# Libraries: every lib/ folder under python3's site-packages nvidia/ (pip CUDA wheels that
# PyTorch ships: cuBLAS, NVRTC, ...) goes on LD_LIBRARY_PATH; a libnccl.so symlink is created
# when only libnccl.so.2 exists (cudarc looks for libnccl.so).
set -uo pipefail
cd "$(dirname "$0")/.."

BUNDLE="${1:?usage: tools/gpu_check.sh BUNDLE_DIR}"
BUNDLE="$(cd "$BUNDLE" && pwd)"
OUT_DIR="${OUT:-$PWD}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
FAILED=()

step "machine"
date -u
uname -a
nvidia-smi || echo "nvidia-smi failed"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true

step "libraries"
PY_SITES="$(python3 - <<'PY'
import site, sys
dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
dirs += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
print("\n".join(dict.fromkeys(d for d in dirs if isinstance(d, str))))
PY
)"
LIBDIRS=()
while IFS= read -r site; do
    [ -d "$site/nvidia" ] || continue
    while IFS= read -r d; do LIBDIRS+=("$d"); done < <(find "$site/nvidia" -type d -name lib 2>/dev/null | sort)
done <<< "$PY_SITES"
SHIM="$(mktemp -d /tmp/hr-gpu-libs.XXXXXX)"
for d in "${LIBDIRS[@]}"; do
    if [ ! -e "$d/libnccl.so" ] && [ -e "$d/libnccl.so.2" ]; then
        ln -sf "$d/libnccl.so.2" "$SHIM/libnccl.so"
    fi
done
LD_LIBRARY_PATH="$SHIM$(printf ':%s' "${LIBDIRS[@]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for lib in libcuda.so.1 libnvrtc.so.13 libnvrtc.so.12 libcublas.so.13 libcublas.so.12 libcublasLt.so.13 libnccl.so; do
    found="$(for d in ${LD_LIBRARY_PATH//:/ } /usr/lib/x86_64-linux-gnu /usr/lib64; do ls "$d/$lib" 2>/dev/null; done | head -1)"
    echo "  $lib: ${found:-not found}"
done
export HR_KERNEL_CACHE="${HR_KERNEL_CACHE:-$OUT_DIR/kernel-cache}"
echo "HR_KERNEL_CACHE=$HR_KERNEL_CACHE"
export RUST_BACKTRACE=1

step "bundle"
ls -la "$BUNDLE"

for exe in "$BUNDLE"/*; do
    [ -f "$exe" ] && [ -x "$exe" ] || continue
    name="$(basename "$exe")"
    case "$name" in cuda_ops*) continue ;; esac
    step "test $name"
    # The parity suite runs on one thread (one GPU, readable output); CPU suites in parallel.
    threads=()
    case "$name" in cuda_parity*) threads=(--test-threads=1) ;; esac
    if ! timeout 600 "$exe" --nocapture "${threads[@]}"; then
        FAILED+=("$name")
    fi
done

step "kernel cache after tests"
ls -la "$HR_KERNEL_CACHE" 2>/dev/null || echo "(none)"

for exe in "$BUNDLE"/cuda_ops*; do
    [ -f "$exe" ] && [ -x "$exe" ] || continue
    step "bench $(basename "$exe")"
    if ! timeout 600 "$exe" --bench; then FAILED+=("$(basename "$exe")"); fi
done

step "PyTorch on the same card"
if ! timeout 600 python3 tools/torch_ops_bench.py; then FAILED+=("torch_ops_bench.py"); fi

step "summary"
nvidia-smi --query-gpu=name,temperature.gpu,clocks.sm,clocks.mem --format=csv || true
if [ "${#FAILED[@]}" -eq 0 ]; then
    echo "ALL PASSED"
else
    echo "FAILED: ${FAILED[*]}"
fi
rm -rf "$SHIM"
[ "${#FAILED[@]}" -eq 0 ]
