// Convolution family (NCHW input, OIHW weight, no bias): direct kernels for every geometry that
// is not a dense 1x1 (stride 1, no padding, groups 1); those run as cuBLAS GEMMs on the host
// side (crates/hr-tensor/src/cuda/backend/conv.rs). CPU twin: crates/hr-tensor/src/cpu/conv.rs.
//
// Why direct kernels and not im2col + GEMM for the rest: the convolutions of the audio encoder
// that are not pointwise are depthwise (one input channel per group) or the stem (one input
// channel), so the GEMM inner dimension K = (c_in / groups) * kh * kw is at most 25. A GEMM
// with K <= 25 is memory bound, and im2col would multiply the input traffic by kh * kw before
// it; the direct kernels read every input element once from DRAM (the other taps hit L1/L2).
// Dense grouped convolutions with many input channels per group are correct here but not fast
// (the encoder has none).
//
// Kernels (templated on the kernel size: 3x3 and 5x5 are unrolled, `_any` takes it at run time):
// - conv_fwd_*:  one thread per output element, blocks of 32 (width) x 8 (height) outputs of
//   one (n, c_out) plane; grid.x strides over planes, grid.y over the tiles of a plane.
// - conv_bwd_data_*: one thread per input element (a gather: no atomics), same tiling over
//   the (n, c_in) planes of dx; `_k3s1`, `_k3s2`, `_k5s1`, `_k5s2` also fix the stride.
// - conv_bwd_weight_part_*: block per (c_out, c_in-within-group) pair (grid.x) and batch chunk
//   (grid.y); threads stride over output positions (coalesced along the width), each keeps one
//   accumulator per tap, then one block reduction per tap writes a partial; the
//   conv_bwd_weight_finish kernel sums the chunk partials in a fixed order (deterministic).
//
// Indices inside a plane are int (the host checks h*w and h_out*w_out < 2^31 and bounds the
// paddings); plane offsets are 64-bit.
#include "common.cuh"

/// Convolution geometry (mirrors `ConvGeom` in crates/hr-tensor/src/cuda/launch.rs).
struct ConvGeom {
    i64 n, c_in, h, w, c_out, ho, wo;
    i64 cig;  // input channels per group
    i64 cog;  // output channels per group
    int kh, kw, sh, sw, ph, pw, dh, dw;
};

#define CONV_TW 32
#define CONV_TH 8

/// Number of (CONV_TH x CONV_TW) tiles over a rows x cols plane, and tiles per tile row.
__device__ __forceinline__ void plane_tiles(i64 rows, i64 cols, i64 &tiles, i64 &tiles_w) {
    tiles_w = (cols + CONV_TW - 1) / CONV_TW;
    tiles = tiles_w * ((rows + CONV_TH - 1) / CONV_TH);
}

/// Forward: y[n, co, oh, ow] = sum_{c < cig, i, j} w[co, c, i, j] * x[n, g*cig + c, ih, iw]
/// with ih = oh*sh - ph + i*dh, iw = ow*sw - pw + j*dw (zero outside the image). Taps are
/// summed in (c, i, j) order, like the CPU's depthwise loops.
template <typename T, int KH, int KW>
__device__ void conv_fwd(const T *x, const T *wt, T *y, const ConvGeom &g) {
    const int kh = KH > 0 ? KH : g.kh, kw = KW > 0 ? KW : g.kw;
    const int H = (int)g.h, W = (int)g.w, Wo = (int)g.wo;
    i64 tiles, tiles_w;
    plane_tiles(g.ho, g.wo, tiles, tiles_w);
    const i64 planes = g.n * g.c_out;
    for (i64 p = blockIdx.x; p < planes; p += gridDim.x) {
        const i64 ni = p / g.c_out, co = p % g.c_out;
        const i64 ci0 = (co / g.cog) * g.cig;
        const T *wk = wt + co * g.cig * kh * kw;
        const T *xn = x + (ni * g.c_in + ci0) * g.h * g.w;
        T *yp = y + p * g.ho * g.wo;
        for (i64 t = blockIdx.y; t < tiles; t += gridDim.y) {
            const int oh = (int)(t / tiles_w) * CONV_TH + (int)threadIdx.y;
            const int ow = (int)(t % tiles_w) * CONV_TW + (int)threadIdx.x;
            if (oh >= (int)g.ho || ow >= Wo) continue;
            const int ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
            acc_t acc = 0.0f;
            for (i64 c = 0; c < g.cig; ++c) {
                const T *xp = xn + c * g.h * g.w;
                const T *wc = wk + c * kh * kw;
#pragma unroll
                for (int i = 0; i < kh; ++i) {
                    const int ih = ih0 + i * g.dh;
                    if (ih < 0 || ih >= H) continue;
#pragma unroll
                    for (int j = 0; j < kw; ++j) {
                        const int iw = iw0 + j * g.dw;
                        if (iw >= 0 && iw < W) acc = acc + load(wc, i * kw + j) * load(xp, (i64)ih * W + iw);
                    }
                }
            }
            store(yp, (i64)oh * Wo + ow, acc);
        }
    }
}

/// Backward-data: dx[n, ci, ih, iw] = sum over the output channels co of ci's group and the taps
/// (i, j) with ih = oh*sh - ph + i*dh, iw = ow*sw - pw + j*dw for an output (oh, ow) in range,
/// of w[co, ci % cig, i, j] * dy[n, co, oh, ow]. `S` > 0 fixes both strides at compile time
/// (the divisibility tests then compile to shifts and masks instead of integer divisions).
template <typename T, int KH, int KW, int S>
__device__ void conv_bwd_data(const T *dy, const T *wt, T *dx, const ConvGeom &g) {
    const int kh = KH > 0 ? KH : g.kh, kw = KW > 0 ? KW : g.kw;
    const int sh = S > 0 ? S : g.sh, sw = S > 0 ? S : g.sw;
    const int Ho = (int)g.ho, Wo = (int)g.wo, W = (int)g.w;
    i64 tiles, tiles_w;
    plane_tiles(g.h, g.w, tiles, tiles_w);
    const i64 planes = g.n * g.c_in;
    for (i64 p = blockIdx.x; p < planes; p += gridDim.x) {
        const i64 ni = p / g.c_in, ci = p % g.c_in;
        const i64 cl = ci % g.cig, co0 = (ci / g.cig) * g.cog;
        T *dxp = dx + p * g.h * g.w;
        for (i64 t = blockIdx.y; t < tiles; t += gridDim.y) {
            const int ih = (int)(t / tiles_w) * CONV_TH + (int)threadIdx.y;
            const int iw = (int)(t % tiles_w) * CONV_TW + (int)threadIdx.x;
            if (ih >= (int)g.h || iw >= W) continue;
            acc_t acc = 0.0f;
            for (i64 k = 0; k < g.cog; ++k) {
                const i64 co = co0 + k;
                const T *dyp = dy + (ni * g.c_out + co) * g.ho * g.wo;
                const T *wc = wt + (co * g.cig + cl) * kh * kw;
#pragma unroll
                for (int i = 0; i < kh; ++i) {
                    const int th = ih + g.ph - i * g.dh;
                    if (th < 0 || th % sh != 0) continue;
                    const int oh = th / sh;
                    if (oh >= Ho) continue;
#pragma unroll
                    for (int j = 0; j < kw; ++j) {
                        const int tw = iw + g.pw - j * g.dw;
                        if (tw < 0 || tw % sw != 0) continue;
                        const int ow = tw / sw;
                        if (ow < Wo) acc = acc + load(wc, i * kw + j) * load(dyp, (i64)oh * Wo + ow);
                    }
                }
            }
            store(dxp, (i64)ih * W + iw, acc);
        }
    }
}

/// Batch range [n0, n1) of chunk `blockIdx.y` (chunks of `per_chunk` batch entries).
__device__ __forceinline__ void batch_chunk(const ConvGeom &g, i64 per_chunk, i64 &n0, i64 &n1) {
    n0 = (i64)blockIdx.y * per_chunk;
    n1 = n0 + per_chunk < g.n ? n0 + per_chunk : g.n;
}

/// Backward-weight partials, kernel size fixed at compile time: block (pair, chunk) writes
/// part[(chunk * pairs + pair) * KH*KW + tap] = sum over the chunk's batch entries and every
/// output position of dy[n, co, oh, ow] * x[n, ci, ih, iw]; pair = co * cig + (ci % cig).
/// grid.y must equal the number of chunks. Launch with blockDim.x a multiple of 32.
template <typename T, int KH, int KW>
__device__ void conv_bwd_weight_part(const T *x, const T *dy, float *part, const ConvGeom &g,
                                     i64 per_chunk) {
    __shared__ acc_t scratch[32];
    constexpr int K = KH * KW;
    const i64 pairs = g.c_out * g.cig;
    const int H = (int)g.h, W = (int)g.w, Wo = (int)g.wo;
    const int howo = (int)(g.ho * g.wo);
    i64 n0, n1;
    batch_chunk(g, per_chunk, n0, n1);
    for (i64 pr = blockIdx.x; pr < pairs; pr += gridDim.x) {
        const i64 co = pr / g.cig, cl = pr % g.cig;
        const i64 ci = (co / g.cog) * g.cig + cl;
        acc_t acc[K];
#pragma unroll
        for (int k = 0; k < K; ++k) acc[k] = 0.0f;
        for (i64 ni = n0; ni < n1; ++ni) {
            const T *dyp = dy + (ni * g.c_out + co) * howo;
            const T *xp = x + (ni * g.c_in + ci) * g.h * g.w;
            for (int q = threadIdx.x; q < howo; q += blockDim.x) {
                const int oh = q / Wo, ow = q - oh * Wo;
                const acc_t d = load(dyp, q);
                const int ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
#pragma unroll
                for (int i = 0; i < KH; ++i) {
                    const int ih = ih0 + i * g.dh;
                    if (ih < 0 || ih >= H) continue;
#pragma unroll
                    for (int j = 0; j < KW; ++j) {
                        const int iw = iw0 + j * g.dw;
                        if (iw >= 0 && iw < W) acc[i * KW + j] = acc[i * KW + j] + d * load(xp, (i64)ih * W + iw);
                    }
                }
            }
        }
        float *out = part + ((i64)blockIdx.y * pairs + pr) * K;
#pragma unroll
        for (int k = 0; k < K; ++k) {
            const acc_t s = block_sum(acc[k], scratch);
            if (threadIdx.x == 0) out[k] = s;
        }
    }
}

/// Backward-weight partials for any kernel size: as conv_bwd_weight_part, one tap at a time
/// (re-reads dy once per tap; the fallback for kernel sizes other than 3x3 and 5x5).
template <typename T>
__device__ void conv_bwd_weight_part_any(const T *x, const T *dy, float *part, const ConvGeom &g,
                                         i64 per_chunk) {
    __shared__ acc_t scratch[32];
    const int K = g.kh * g.kw;
    const i64 pairs = g.c_out * g.cig;
    const int H = (int)g.h, W = (int)g.w, Wo = (int)g.wo;
    const int howo = (int)(g.ho * g.wo);
    i64 n0, n1;
    batch_chunk(g, per_chunk, n0, n1);
    for (i64 pr = blockIdx.x; pr < pairs; pr += gridDim.x) {
        const i64 co = pr / g.cig, cl = pr % g.cig;
        const i64 ci = (co / g.cog) * g.cig + cl;
        float *out = part + ((i64)blockIdx.y * pairs + pr) * K;
        for (int k = 0; k < K; ++k) {
            const int i = k / g.kw, j = k % g.kw;
            acc_t acc = 0.0f;
            for (i64 ni = n0; ni < n1; ++ni) {
                const T *dyp = dy + (ni * g.c_out + co) * howo;
                const T *xp = x + (ni * g.c_in + ci) * g.h * g.w;
                for (int q = threadIdx.x; q < howo; q += blockDim.x) {
                    const int oh = q / Wo, ow = q - oh * Wo;
                    const int ih = oh * g.sh - g.ph + i * g.dh;
                    const int iw = ow * g.sw - g.pw + j * g.dw;
                    if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                        acc = acc + load(dyp, q) * load(xp, (i64)ih * W + iw);
                }
            }
            const acc_t s = block_sum(acc, scratch);
            if (threadIdx.x == 0) out[k] = s;
        }
    }
}

/// dw[e] = sum over chunks c (in order) of part[c * len + e].
template <typename T>
__device__ void conv_bwd_weight_finish(const float *part, T *dw, i64 chunks, i64 len) {
    GRID_STRIDE(e, len) {
        acc_t s = 0.0f;
        for (i64 c = 0; c < chunks; ++c) s = s + part[c * len + e];
        store(dw, e, s);
    }
}

HR_EXTERN void conv_fwd_k3_f32(const float *x, const float *w, float *y, ConvGeom g) {
    conv_fwd<float, 3, 3>(x, w, y, g);
}
HR_EXTERN void conv_fwd_k5_f32(const float *x, const float *w, float *y, ConvGeom g) {
    conv_fwd<float, 5, 5>(x, w, y, g);
}
HR_EXTERN void conv_fwd_any_f32(const float *x, const float *w, float *y, ConvGeom g) {
    conv_fwd<float, 0, 0>(x, w, y, g);
}
HR_EXTERN void conv_bwd_data_k3_f32(const float *dy, const float *w, float *dx, ConvGeom g) {
    conv_bwd_data<float, 3, 3, 0>(dy, w, dx, g);
}
HR_EXTERN void conv_bwd_data_k3s1_f32(const float *dy, const float *w, float *dx, ConvGeom g) {
    conv_bwd_data<float, 3, 3, 1>(dy, w, dx, g);
}
HR_EXTERN void conv_bwd_data_k3s2_f32(const float *dy, const float *w, float *dx, ConvGeom g) {
    conv_bwd_data<float, 3, 3, 2>(dy, w, dx, g);
}
HR_EXTERN void conv_bwd_data_k5_f32(const float *dy, const float *w, float *dx, ConvGeom g) {
    conv_bwd_data<float, 5, 5, 0>(dy, w, dx, g);
}
HR_EXTERN void conv_bwd_data_k5s1_f32(const float *dy, const float *w, float *dx, ConvGeom g) {
    conv_bwd_data<float, 5, 5, 1>(dy, w, dx, g);
}
HR_EXTERN void conv_bwd_data_k5s2_f32(const float *dy, const float *w, float *dx, ConvGeom g) {
    conv_bwd_data<float, 5, 5, 2>(dy, w, dx, g);
}
HR_EXTERN void conv_bwd_data_any_f32(const float *dy, const float *w, float *dx, ConvGeom g) {
    conv_bwd_data<float, 0, 0, 0>(dy, w, dx, g);
}
HR_EXTERN void conv_bwd_weight_part_k3_f32(const float *x, const float *dy, float *part, ConvGeom g,
                                           i64 per_chunk) {
    conv_bwd_weight_part<float, 3, 3>(x, dy, part, g, per_chunk);
}
HR_EXTERN void conv_bwd_weight_part_k5_f32(const float *x, const float *dy, float *part, ConvGeom g,
                                           i64 per_chunk) {
    conv_bwd_weight_part<float, 5, 5>(x, dy, part, g, per_chunk);
}
HR_EXTERN void conv_bwd_weight_part_any_f32(const float *x, const float *dy, float *part,
                                            ConvGeom g, i64 per_chunk) {
    conv_bwd_weight_part_any<float>(x, dy, part, g, per_chunk);
}
HR_EXTERN void conv_bwd_weight_finish_f32(const float *part, float *dw, i64 chunks, i64 len) {
    conv_bwd_weight_finish<float>(part, dw, chunks, len);
}
