// Shared helpers of every hr-tensor kernel family. Compiled by NVRTC (no host headers: only
// builtins), included by each `<family>.cu` as "common.cuh".
//
// Conventions:
// - Entry points are `extern "C"` so their names are stable: `<op>_<dtype>` (`_f32`, and
//   `_bf16` for the families with bf16 storage: elementwise, softmax, layer norm, layout,
//   reduce, and conv / batch norm for bf16 activations with f32 parameters). Each wraps
//   a template over the storage type `T`; arithmetic runs in `acc_t` (f32), so a bf16 variant
//   is one more instantiation with the `load`/`store` overloads below.
// - Sizes are 64-bit (`i64`); elementwise kernels use grid-stride loops, so any grid works.
// - The runtime compiles with `--fmad=false`: a * b + c rounds twice, exactly like the CPU
//   reference in crates/hr-tensor/src/cpu/, so pointwise kernels match it bit for bit except
//   for transcendental functions (expf, erff, ... differ by a few ulp).
#pragma once

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef float acc_t;

#define HR_EXTERN extern "C" __global__

/// Maximum rank of the strided (broadcast / permute / reduce) kernels; the host collapses
/// contiguous and size-1 axes first and reports an error above this.
#define HR_MAX_RANK 8

/// Shape and element strides of a strided view (passed by value; mirrors `Strided` in
/// crates/hr-tensor/src/cuda/launch.rs).
struct Strided {
    int rank;
    int _pad;
    i64 shape[HR_MAX_RANK];
    i64 stride[HR_MAX_RANK];
};

/// Shape of the output and strides of two broadcast inputs (0 on broadcast axes).
struct Broadcast2 {
    int rank;
    int _pad;
    i64 shape[HR_MAX_RANK];
    i64 stride_a[HR_MAX_RANK];
    i64 stride_b[HR_MAX_RANK];
};

/// bfloat16 storage: the top 16 bits of an f32 (no host headers, so not `__nv_bfloat16`;
/// the bit layout is the same).
struct bf16 {
    unsigned short bits;
};

/// f32 -> bf16, round to nearest even; NaN stays a (quiet) NaN. Same as Rust's
/// `half::bf16::from_f32` (crate::autocast::round_bf16).
__device__ __forceinline__ bf16 f32_to_bf16(float v) {
    const u32 x = __float_as_uint(v);
    bf16 r;
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        r.bits = (unsigned short)((x >> 16) | 0x0040u);
    } else {
        r.bits = (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    }
    return r;
}

/// bf16 -> f32 (exact).
__device__ __forceinline__ float bf16_to_f32(bf16 v) { return __uint_as_float((u32)v.bits << 16); }

/// Storage <-> compute conversions (one overload per storage type).
__device__ __forceinline__ acc_t load(const float *p, i64 i) { return p[i]; }
__device__ __forceinline__ void store(float *p, i64 i, acc_t v) { p[i] = v; }
__device__ __forceinline__ acc_t load(const bf16 *p, i64 i) { return bf16_to_f32(p[i]); }
__device__ __forceinline__ void store(bf16 *p, i64 i, acc_t v) { p[i] = f32_to_bf16(v); }

/// Grid-stride loop over `n` elements.
#define GRID_STRIDE(i, n)                                                                      \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                         \
         i += (i64)blockDim.x * gridDim.x)

/// True when every pointer is 16-byte aligned (float4 loads/stores allowed).
__device__ __forceinline__ bool aligned16(const void *a, const void *b, const void *c = 0,
                                          const void *d = 0) {
    return ((((u64)a) | ((u64)b) | ((u64)c) | ((u64)d)) & 15ULL) == 0;
}

/// True when the pointers allow 4-element vector accesses of their storage type: 16-byte
/// alignment for f32 (float4), 8 bytes for bf16 (see `load4` / `store4`).
__device__ __forceinline__ bool aligned4x(const float *a, const float *b, const float *c = 0) {
    return aligned16(a, b, c);
}
__device__ __forceinline__ bool aligned4x(const bf16 *a, const bf16 *b, const bf16 *c = 0) {
    return ((((u64)a) | ((u64)b) | ((u64)c)) & 7ULL) == 0;
}

/// Elements 4*j .. 4*j+3 of `p` as f32 (one float4 load; for bf16 one 8-byte load, element 0
/// in the low half of the first word: little endian).
__device__ __forceinline__ float4 load4(const float *p, i64 j) { return ((const float4 *)p)[j]; }
__device__ __forceinline__ float4 load4(const bf16 *p, i64 j) {
    const uint2 u = ((const uint2 *)p)[j];
    float4 v;
    v.x = __uint_as_float(u.x << 16);
    v.y = __uint_as_float(u.x & 0xffff0000u);
    v.z = __uint_as_float(u.y << 16);
    v.w = __uint_as_float(u.y & 0xffff0000u);
    return v;
}

/// Stores `v` as elements 4*j .. 4*j+3 of `p` (bf16: each rounded like `store`).
__device__ __forceinline__ void store4(float *p, i64 j, float4 v) { ((float4 *)p)[j] = v; }
__device__ __forceinline__ void store4(bf16 *p, i64 j, float4 v) {
    uint2 u;
    u.x = (u32)f32_to_bf16(v.x).bits | ((u32)f32_to_bf16(v.y).bits << 16);
    u.y = (u32)f32_to_bf16(v.z).bits | ((u32)f32_to_bf16(v.w).bits << 16);
    ((uint2 *)p)[j] = u;
}

/// Vectorised elementwise loop over `n` f32 elements: `vf(i4)` handles elements
/// 4*i4 .. 4*i4+3 with float4 accesses, `sf(j)` handles element j (the tail, or every element
/// when `vec` is false). Launch with about n/4 threads.
template <typename V, typename S>
__device__ __forceinline__ void vec4_loop(i64 n, bool vec, V vf, S sf) {
    const i64 n4 = vec ? n / 4 : 0;
    const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 step = (i64)blockDim.x * gridDim.x;
    for (i64 i4 = tid; i4 < n4; i4 += step) vf(i4);
    for (i64 j = n4 * 4 + tid; j < n; j += step) sf(j);
}

/// Four elements each of two operands (x and dy, a and b), as loaded by `load4`.
struct Vec4Pair {
    float4 v, d;
};

/// Strided loop over vector indices j = first, first + step, ... < n4, two at a time: `ld(j)`
/// loads what index j needs, `st(j, v)` computes and stores it; both loads of a pair are issued
/// before either store (two 16-byte f32 / 8-byte bf16 vectors in flight per thread, which a
/// memory-bound pass over bf16 needs to approach the stream bandwidth). Indices are visited in
/// the same order as the plain loop.
template <typename L, typename S>
__device__ __forceinline__ void pair_loop(i64 first, i64 step, i64 n4, L ld, S st) {
    for (i64 j = first; j < n4; j += 2 * step) {
        const i64 j2 = j + step;
        const auto a = ld(j);
        if (j2 < n4) {
            const auto b = ld(j2);
            st(j, a);
            st(j2, b);
        } else {
            st(j, a);
        }
    }
}

/// Offset of linear index `i` of a row-major `shape` in a tensor with `stride`.
__device__ __forceinline__ i64 strided_offset(i64 i, const Strided &s) {
    i64 off = 0;
    for (int d = s.rank - 1; d >= 0; --d) {
        i64 c = i % s.shape[d];
        i /= s.shape[d];
        off += c * s.stride[d];
    }
    return off;
}

/// Warp-level sum (all lanes get the result).
template <typename A> __device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/// Warp-level max that ignores NaN like Rust's `f32::max` (all lanes get the result).
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/// Block-wide sum; `scratch` holds 32 values of `A`. Every thread gets the result.
/// Must be called by all threads of the block (blockDim.x a multiple of 32, <= 1024).
template <typename A> __device__ A block_sum(A v, A *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    A t = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : A(0);
    if (warp == 0) t = warp_sum(t);
    if (threadIdx.x == 0) scratch[0] = t;
    __syncthreads();
    return scratch[0];
}

/// Block-wide NaN-ignoring max (see `warp_max`); `scratch` holds 32 floats.
__device__ float block_max(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : -__int_as_float(0x7f800000);
    if (warp == 0) t = warp_max(t);
    if (threadIdx.x == 0) scratch[0] = t;
    __syncthreads();
    return scratch[0];
}

/// +infinity / -infinity without <math.h> constants.
#define HR_INF __int_as_float(0x7f800000)
#define HR_NEG_INF __int_as_float(0xff800000)

/// SplitMix64 finaliser (crate::rng::mix64).
__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/// Uniform in [0, 1) from (seed, counter): bit-identical to crate::rng::counter_uniform.
__device__ __forceinline__ double counter_uniform(u64 seed, u64 counter) {
    u64 bits = mix64(seed ^ mix64(counter + 0x9e3779b97f4a7c15ULL));
    return (double)(bits >> 11) * (1.0 / 9007199254740992.0);
}

// Activation codes (match `unary_code` in crates/hr-tensor/src/cuda/backend.rs), the function
// (`unary_f`) and its derivative (`unary_df`): shared by the elementwise kernels and the fused
// batch norm + activation kernels, so both round alike.
#define U_RELU 0
#define U_GELU 1
#define U_HARDSWISH 2
#define U_SIGMOID 3
#define U_TANH 4
#define U_EXP 5
#define U_LOG 6
#define U_SQRT 7

__device__ __forceinline__ float unary_f(int kind, float x) {
    switch (kind) {
    case U_RELU: return fmaxf(x, 0.0f);
    case U_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
    case U_HARDSWISH: return x * fminf(fmaxf(x + 3.0f, 0.0f), 6.0f) / 6.0f;
    case U_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case U_TANH: return tanhf(x);
    case U_EXP: return expf(x);
    case U_LOG: return logf(x);
    default: return sqrtf(x);
    }
}

__device__ __forceinline__ float unary_df(int kind, float x) {
    switch (kind) {
    case U_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case U_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
        float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
        return cdf + x * pdf;
    }
    case U_HARDSWISH:
        if (x < -3.0f) return 0.0f;
        if (x > 3.0f) return 1.0f;
        return (2.0f * x + 3.0f) / 6.0f;
    case U_SIGMOID: {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f - s);
    }
    case U_TANH: {
        float t = tanhf(x);
        return 1.0f - t * t;
    }
    case U_EXP: return expf(x);
    case U_LOG: return 1.0f / x;
    default: return 0.5f / sqrtf(x);
    }
}
