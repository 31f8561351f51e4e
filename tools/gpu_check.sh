#!/usr/bin/env bash
# The ONE script to run on a GPU machine (no Rust needed): parity tests, CUDA benchmarks and the
# PyTorch comparison, all output to $OUT/gpu_check.log (or ./gpu_check.log without $OUT).
#
# Usage (from the repo root): tools/gpu_check.sh BUNDLE_DIR
#   BUNDLE_DIR holds the prebuilt executables from tools/build_gpu_bundle.sh:
#   hr-tensor family test executables (family-elementwise, family-conv, ...: their `_cuda`
#   cases run here), other test executables (test-device, test-cuda_step, ...) and the bench
#   executables (bench-cuda_ops, ...).
# Libraries: every lib/ folder under python3's site-packages nvidia/ (pip CUDA wheels that
# PyTorch ships: cuBLAS, NVRTC, ...) goes on LD_LIBRARY_PATH; a libnccl.so symlink is created
# when only libnccl.so.2 exists (cudarc looks for libnccl.so).
set -uo pipefail
cd "$(dirname "$0")/.."

BUNDLE="${1:?usage: tools/gpu_check.sh BUNDLE_DIR_OR_TAR_XZ}"
if [ -f "$BUNDLE" ]; then
    # A compressed bundle (tools/build_gpu_bundle.sh --pack): unpack with python (no xz needed).
    DEST="$(mktemp -d /tmp/hr-gpu-bundle.XXXXXX)"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$BUNDLE" "$DEST"
    BUNDLE="$DEST"
fi
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

# Tests: the op parity cases first (the `_cuda` cases that test_device! registers in each
# hr-tensor family test executable; their `_cpu` twins run with every `cargo test`), then the
# model step, the trainer and NCCL.
families=0
for exe in "$BUNDLE"/family-*; do
    [ -x "$exe" ] || continue
    families=$((families + 1))
    name="$(basename "$exe")"
    step "test $name (_cuda cases)"
    # One GPU: one test at a time (readable output, clean timings).
    if ! timeout 420 "$exe" _cuda --nocapture --test-threads=1 > "$OUT_DIR/$name.log" 2>&1; then
        FAILED+=("$name")
    fi
    # The full log comes back as a file; show the summary lines here.
    grep -E "^test |FAIL|mismatch|error|panicked|skipped|^step|cpu .* cuda|ok: |GB/s" "$OUT_DIR/$name.log" | tail -80
done
[ "$families" -gt 0 ] || echo "(no hr-tensor family test executables, family-*, in the bundle)"
for name in test-device test-cuda_mel test-cuda_step test-cuda_train test-nccl; do
    exe="$BUNDLE/$name"
    [ -x "$exe" ] || { echo "(no $name in the bundle)"; continue; }
    step "test $name"
    # One GPU: one test at a time (readable output, clean timings).
    if ! timeout 420 "$exe" --nocapture --test-threads=1 > "$OUT_DIR/$name.log" 2>&1; then
        FAILED+=("$name")
    fi
    # The full log comes back as a file; show the summary lines here.
    grep -E "^test |FAIL|mismatch|error|panicked|skipped|^step|cpu .* cuda|ok: |GB/s" "$OUT_DIR/$name.log" | tail -80
done

step "kernel cache after tests"
ls -la "$HR_KERNEL_CACHE" 2>/dev/null || echo "(none)"

# HR_GPU_CHECK_QUICK=1: tests + the paper-base step (ours and PyTorch f32) only.
QUICK="${HR_GPU_CHECK_QUICK:-0}"
# HR_GPU_CHECK_SKIP_OPS=1: no kernel benchmarks (ours and PyTorch's); HR_GPU_CHECK_DEMO: the
# precisions of the GPU demo (default "f32 bf16"; empty: no demo); HR_GPU_CHECK_PRECISIONS: the
# precisions of the paper-base step, ours and PyTorch's (default "f32 bf16").
SKIP_OPS="${HR_GPU_CHECK_SKIP_OPS:-0}"
DEMO_PRECISIONS="${HR_GPU_CHECK_DEMO:-f32 bf16}"
if [ "$QUICK" != 1 ] && [ "$SKIP_OPS" != 1 ] && [ -x "$BUNDLE/bench-cuda_ops" ]; then
    step "bench cuda_ops (kernels)"
    if ! timeout 240 "$BUNDLE/bench-cuda_ops" --bench; then FAILED+=("bench-cuda_ops"); fi
    step "PyTorch on the same card (same ops)"
    if ! timeout 240 python3 tools/torch_ops_bench.py; then FAILED+=("torch_ops_bench.py"); fi
fi

# The paper-base training step (batch 32, 10 s audio, 32 tokens) against the PyTorch
# reference of the same model, same card, same call. Ours runs twice per precision: waveforms
# uploaded inside every step (what the trainer does) and resident on the device (what the
# PyTorch reference does with its batch; like for like), the latter with the op profile.
if [ -x "$BUNDLE/bench-retriever" ]; then
    read -r -a precisions <<< "${HR_GPU_CHECK_PRECISIONS:-f32 bf16}"
    [ "$QUICK" = 1 ] && precisions=(f32)
    for prec in "${precisions[@]}"; do
        for waves in host device; do
            step "bench retriever: paper-base step on cuda (ours, $prec, waveforms on $waves)"
            profile=0; breakdown=0
            [ "$waves" = device ] && profile=1
            [ "$waves" = host ] && [ "$prec" = f32 ] && breakdown=1
            if ! HR_BENCH_PRESET=paper-base HR_BENCH_BATCH=32 HR_BENCH_STEPS=5 HR_BENCH_GFLOP=2682 \
                HR_BENCH_PRECISION=$prec HR_BENCH_WAVEFORMS=$waves HR_BENCH_PROFILE=$profile \
                HR_BENCH_BREAKDOWN=$breakdown timeout 300 \
                "$BUNDLE/bench-retriever" --bench --device cuda; then
                FAILED+=("bench-retriever $prec $waves")
            fi
        done
    done
    # bf16 GEMM operands with f32 CNN activations (the mode before bf16 activation storage):
    # the like-for-like comparison of what storing the CNN's activations in bf16 gains.
    if [ "$QUICK" != 1 ] && [[ " ${precisions[*]} " == *" bf16 "* ]]; then
        step "bench retriever: paper-base step on cuda (ours, bf16 GEMMs, f32 activations, waveforms on device)"
        if ! HR_BENCH_PRESET=paper-base HR_BENCH_BATCH=32 HR_BENCH_STEPS=5 HR_BENCH_GFLOP=2682 \
            HR_BENCH_PRECISION=bf16-gemm HR_BENCH_WAVEFORMS=device timeout 300 \
            "$BUNDLE/bench-retriever" --bench --device cuda; then
            FAILED+=("bench-retriever bf16-gemm device")
        fi
    fi
    amps=()
    for prec in "${precisions[@]}"; do amps+=("$([ "$prec" = f32 ] && echo off || echo "$prec")"); done
    for amp in "${amps[@]}"; do
        step "PyTorch paper-base step on cuda (amp $amp)"
        if ! timeout 240 python3 tools/torch_retriever_bench.py --preset paper-base --batch 32 \
            --steps 5 --device cuda --amp "$amp" --tf32 off --flops --profile; then
            FAILED+=("torch_retriever_bench.py --amp $amp")
        fi
    done
fi

# A short demo on the GPU (tiny preset, baseline vs late fusion), to compare with
# the CPU demo's metrics band in docs/PERF.md.
if [ "$QUICK" != 1 ] && [ -x "$BUNDLE/hr-train" ]; then
    step "hr-train kernels --precompile (fresh cache)"
    if ! timeout 120 "$BUNDLE/hr-train" --kernel-cache "$(mktemp -d /tmp/hr-kc.XXXXXX)" kernels --precompile; then
        FAILED+=("kernels --precompile")
    fi
fi
if [ "$QUICK" != 1 ] && [ -x "$BUNDLE/hr-train" ]; then
    for prec in $DEMO_PRECISIONS; do
        variants=none,late,mid
        [ "$prec" = bf16 ] && variants=none,late
        step "demo on cuda ($prec, tiny, $variants)"
        DEMO="$(mktemp -d /tmp/hr-gpu-demo.XXXXXX)"
        if ! timeout 200 "$BUNDLE/hr-train" demo --config configs/experiments/demo.toml \
            --set 'run.device="cuda"' --set "run.precision=\"$prec\"" \
            --set "run.dir=\"$DEMO/runs\"" --set "data.root=\"$DEMO/data\"" \
            --variants "$variants"; then
            FAILED+=("demo on cuda $prec")
        fi
    done
fi

step "summary"
nvidia-smi --query-gpu=name,temperature.gpu,clocks.sm,clocks.mem --format=csv || true
if [ "${#FAILED[@]}" -eq 0 ]; then
    echo "ALL PASSED"
else
    echo "FAILED: ${FAILED[*]}"
fi
rm -rf "$SHIM"
[ "${#FAILED[@]}" -eq 0 ]
