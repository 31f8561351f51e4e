// Host emulation of the CUDA subset used by kernels/*.cu: one std::thread per CUDA thread,
// blocks run one after another (so __shared__ = static), __syncthreads = block barrier,
// warp shuffles = per-warp exchange + barrier.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#include <math.h>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

static std::unique_ptr<std::barrier<>> g_block_bar;
static std::vector<std::unique_ptr<std::barrier<>>> g_warp_bar;
static float g_xchg_f[1024];
static double g_xchg_d[1024];

inline int lin_tid() { return threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y; }
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float xchg_slot(float *, int t, float v, int src) { (void)v; return g_xchg_f[src]; }
template <class A> A __shfl_xor_sync(unsigned, A v, int o) {
    int t = lin_tid(), w = t / 32;
    A *buf = nullptr;
    if constexpr (sizeof(A) == 4) buf = (A *)g_xchg_f; else buf = (A *)g_xchg_d;
    buf[t] = v;
    g_warp_bar[w]->arrive_and_wait();
    A r = buf[t ^ o];
    g_warp_bar[w]->arrive_and_wait();
    return r;
}

template <class F> void emu_launch(dim3 grid, dim3 block, F kernel) {
    gridDim = grid;
    blockDim = block;
    const int nt = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                g_block_bar = std::make_unique<std::barrier<>>(nt);
                g_warp_bar.clear();
                for (int w = 0; w < (nt + 31) / 32; ++w)
                    g_warp_bar.push_back(std::make_unique<std::barrier<>>(std::min(32, nt - 32 * w)));
                std::vector<std::thread> ts;
                for (int t = 0; t < nt; ++t)
                    ts.emplace_back([&, t, bx, by, bz] {
                        blockIdx = {bx, by, bz};
                        threadIdx = {(unsigned)(t % block.x), (unsigned)((t / block.x) % block.y),
                                     (unsigned)(t / (block.x * block.y))};
                        kernel();
                    });
                for (auto &th : ts) th.join();
            }
}

// attention.cu: aligned static shared arrays.
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
