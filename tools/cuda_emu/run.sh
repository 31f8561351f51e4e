#!/usr/bin/env bash
# Runs kernels/conv.cu and kernels/batch_norm.cu unchanged on the CPU: emu.h emulates the CUDA
# execution model (one std::thread per CUDA thread, real __syncthreads barriers and warp
# shuffles) and emu.cpp compares every kernel with a plain f64 reference on odd shapes, tiny
# grids (grid-stride loops) and forced multi-chunk reductions. A logic check for machines
# without a GPU; the GPU parity cases (the `_cuda` tests of crates/hr-tensor/tests/<family>.rs)
# are the real test.
# Usage: tools/cuda_emu/run.sh   (needs g++; prints one ok/FAIL line per check)
set -euo pipefail
cd "$(dirname "$0")"
out="$(mktemp -d)"
# emu.cpp checks conv/batchnorm/audio; each <family>_check.cpp checks one more family
# (bf16_cnn_check.cpp: the bf16-activation entry points of conv.cu and batchnorm.cu;
# plane_check.cpp: plane.cu).
status=0
for src in emu.cpp *_check.cpp; do
    [ -e "$src" ] || continue
    echo "== $src"
    g++ -O2 -std=c++20 -pthread -o "$out/${src%.cpp}" "$src"
    "$out/${src%.cpp}" || status=1
done
exit "$status"
