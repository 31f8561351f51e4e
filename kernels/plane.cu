// Per-plane ops over (N, C, S) tensors (S = product of the spatial axes; plane p = n * C + c):
// the squeeze-and-excitation block's pooling, gate gradient and scaling, each one pass over the
// planes instead of a chain of broadcasts, products, reductions and adds. CPU twin:
// crates/hr-tensor/src/cpu/plane.rs.
//
// - plane_sum:   out[p] = sum_s a[p, s] (* b[p, s]): the product rounded in f32 like the unfused
//   `mul`, the sum accumulated in f64 and rounded once to f32 (like `sum_to`). One block per
//   plane (grid-strided), 4-element loads when the plane length is a multiple of 4 and the
//   buffers are aligned; the block sum runs in a fixed order (deterministic). (Two vectors in
//   flight per thread, as in plane_scale, made it slower on an H100: PERF.md section 6c.)
// - plane_scale: y[p, s] = x[p, s] * scale[p] (+ shift[p]), f32 arithmetic without contraction,
//   rounded once to the storage type. Launch like bn_apply: grid.x strides over planes, grid.y
//   and the threads over a plane, two vectors in flight per thread (`pair_loop`).
//
// `_bf16` entry points take bf16 activations (a, b, x, y) with f32 per-plane values.
#include "common.cuh"

template <typename T>
__device__ void plane_sum(const T *a, const T *b, int has_b, float *out, i64 planes, i64 s) {
    __shared__ double scratch[32];
    const bool vec = s % 4 == 0 && aligned4x(a, b);
    const i64 s4 = vec ? s / 4 : 0;
    for (i64 p = blockIdx.x; p < planes; p += gridDim.x) {
        const i64 base = p * s;
        double acc = 0.0;
        for (i64 j = threadIdx.x; j < s4; j += blockDim.x) {
            const float4 va = load4(a + base, j);
            if (has_b) {
                const float4 vb = load4(b + base, j);
                acc = acc + (double)(va.x * vb.x) + (double)(va.y * vb.y) + (double)(va.z * vb.z) +
                      (double)(va.w * vb.w);
            } else {
                acc = acc + (double)va.x + (double)va.y + (double)va.z + (double)va.w;
            }
        }
        for (i64 j = s4 * 4 + threadIdx.x; j < s; j += blockDim.x) {
            const float v = load(a, base + j);
            acc = acc + (double)(has_b ? v * load(b, base + j) : v);
        }
        const double t = block_sum(acc, scratch);
        if (threadIdx.x == 0) out[p] = (float)t;
    }
}

template <typename T>
__device__ void plane_scale(const T *x, const float *scale, const float *shift, int has_shift,
                            T *y, i64 planes, i64 s) {
    const bool vec = s % 4 == 0 && aligned4x(x, y);
    const i64 s4 = vec ? s / 4 : 0;
    const i64 first = (i64)blockIdx.y * blockDim.x + threadIdx.x;
    const i64 step = (i64)gridDim.y * blockDim.x;
    for (i64 p = blockIdx.x; p < planes; p += gridDim.x) {
        const float sc = scale[p], sh = has_shift ? shift[p] : 0.0f;
        auto f = [=](float v) { return has_shift ? v * sc + sh : v * sc; };
        const i64 base = p * s;
        pair_loop(
            first, step, s4, [&](i64 j) { return load4(x + base, j); },
            [&](i64 j, float4 v) {
                v.x = f(v.x);
                v.y = f(v.y);
                v.z = f(v.z);
                v.w = f(v.w);
                store4(y + base, j, v);
            });
        for (i64 j = s4 * 4 + first; j < s; j += step) store(y, base + j, f(load(x, base + j)));
    }
}

HR_EXTERN void plane_sum_f32(const float *a, const float *b, int has_b, float *out, i64 planes,
                             i64 s) {
    plane_sum(a, b, has_b, out, planes, s);
}
HR_EXTERN void plane_sum_bf16(const bf16 *a, const bf16 *b, int has_b, float *out, i64 planes,
                              i64 s) {
    plane_sum(a, b, has_b, out, planes, s);
}
HR_EXTERN void plane_scale_f32(const float *x, const float *scale, const float *shift,
                               int has_shift, float *y, i64 planes, i64 s) {
    plane_scale(x, scale, shift, has_shift, y, planes, s);
}
HR_EXTERN void plane_scale_bf16(const bf16 *x, const float *scale, const float *shift,
                                int has_shift, bf16 *y, i64 planes, i64 s) {
    plane_scale(x, scale, shift, has_shift, y, planes, s);
}
