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
// - conv_fwd_*:  blocks of 32 x 8 threads over tiles of 32 (width) x 32 (height) outputs of
//   one (n, c_out) plane; each thread computes CONV_ROWS = 4 outputs of one column, 8 rows
//   apart (a warp covers 32 consecutive columns of one row: coalesced), so the plane / tile
//   index arithmetic and the weight loads are shared by 4 outputs (these kernels do 9-25
//   multiply-adds per output and are instruction bound). grid.x strides over planes, grid.y
//   over the tiles of a plane.
// - conv_fwd_dw_s2_k3 / _k5: the depthwise forward with stride 2 (dilation 1) through a
//   shared-memory input tile (coalesced loads once per tile instead of strided reads per tap);
//   bit-identical to conv_fwd.
// - conv_fwd_c1_k3 / _k5: the forward when c_in == 1 and groups == 1 (the stem): one thread
//   per output position of a 256-position chunk, its K*K input taps in registers, looping over
//   a chunk of 16 output channels whose weights sit in shared memory; grid.x strides over
//   (n, position chunk), grid.y over the channel chunks. Bit-identical to conv_fwd.
// - conv_bwd_data_*: a gather over the input elements (no atomics), same tiling (4 rows per
//   thread) over the (n, c_in) planes of dx; `_k3s1`, `_k3s2`, `_k5s1`, `_k5s2` also fix the
//   stride.
// - conv_bwd_weight_part_*: block per (c_out, c_in-within-group) pair (grid.x) and batch chunk
//   (grid.y); threads stride over output positions (coalesced along the width), each keeps one
//   accumulator per tap, then one block reduction per tap writes a partial; the
//   conv_bwd_weight_finish kernel sums the chunk partials in a fixed order (deterministic).
//
// Every kernel has an `_f32` entry point and a `_bf16` one for bf16 activations (x, y, dy, dx in
// bf16, the weight in f32, f32 accumulation; the weight-gradient partials stay f32): templates
// over the activation type T and the weight type TW.
//
// Indices inside a plane, plane numbers (n * c_out, n * c_in), channels and tile numbers are
// 32-bit (the host, `geom` in crates/hr-tensor/src/cuda/backend/conv.rs, checks h*w,
// h_out*w_out, n*c_in and n*c_out <= 2^30 and sizes, strides, paddings and dilations <= 2^28);
// the offsets of planes (plane * plane size) are 64-bit.
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
/// Rows per thread of conv_fwd / conv_bwd_data: a block of CONV_TW x CONV_TH threads covers a
/// tile of CONV_TW columns x CONV_TILE_H rows (mirrored by `TILE_ROWS` in
/// crates/hr-tensor/src/cuda/backend/conv.rs).
#define CONV_ROWS 4
#define CONV_TILE_H (CONV_TH * CONV_ROWS)

/// Number of (CONV_TILE_H x CONV_TW) tiles over a rows x cols plane, and tiles per tile row
/// (rows * cols <= 2^30, so both fit in an int).
__device__ __forceinline__ void plane_tiles(int rows, int cols, int &tiles, int &tiles_w) {
    tiles_w = (cols + CONV_TW - 1) / CONV_TW;
    tiles = tiles_w * ((rows + CONV_TILE_H - 1) / CONV_TILE_H);
}

/// Forward: y[n, co, oh, ow] = sum_{c < cig, i, j} w[co, c, i, j] * x[n, g*cig + c, ih, iw]
/// with ih = oh*sh - ph + i*dh, iw = ow*sw - pw + j*dw (zero outside the image). Taps are
/// summed in (c, i, j) order, like the CPU's depthwise loops.
/// Launch: blocks of CONV_TW x CONV_TH threads; grid.x strides over the n * c_out planes,
/// grid.y over the CONV_TILE_H x CONV_TW tiles of a plane. Thread (tx, ty) of tile (tr, tc)
/// computes column tc*CONV_TW + tx of the CONV_ROWS rows tr*CONV_TILE_H + ty + CONV_TH*r, so a
/// warp still reads and writes 32 consecutive columns of one row, and the plane/tile index
/// arithmetic (32-bit: the host bounds n * c_out and the planes by 2^30) and the weights
/// (3x3 / 5x5: held in registers) are shared by CONV_ROWS outputs.
template <typename T, typename TW, int KH, int KW>
__device__ void conv_fwd(const T *x, const TW *wt, T *y, const ConvGeom &g) {
    constexpr bool FIXED = KH > 0 && KW > 0;
    const int kh = FIXED ? KH : g.kh, kw = FIXED ? KW : g.kw;
    const int H = (int)g.h, W = (int)g.w, Ho = (int)g.ho, Wo = (int)g.wo;
    const int c_out = (int)g.c_out, cig = (int)g.cig, cog = (int)g.cog;
    const int sh = g.sh, sw = g.sw, ph = g.ph, pw = g.pw, dh = g.dh, dw = g.dw;
    const i64 in_plane = g.h * g.w, out_plane = g.ho * g.wo;
    int tiles, tiles_w;
    plane_tiles(Ho, Wo, tiles, tiles_w);
    // Unsigned loop counters: p < 2^30 and gridDim.x < 2^31, so p + gridDim.x cannot wrap.
    const u32 planes = (u32)(g.n * g.c_out);
    for (u32 p = blockIdx.x; p < planes; p += gridDim.x) {
        const u32 ni = p / (u32)c_out, co = p - ni * (u32)c_out;
        const u32 ci0 = (co / (u32)cog) * (u32)cig;
        const TW *wk = wt + (i64)co * cig * kh * kw;
        const T *xn = x + ((i64)ni * g.c_in + ci0) * in_plane;
        T *yp = y + (i64)p * out_plane;
        for (u32 t = blockIdx.y; t < (u32)tiles; t += gridDim.y) {
            const u32 tr = t / (u32)tiles_w, tc = t - tr * (u32)tiles_w;
            const int ow = (int)tc * CONV_TW + (int)threadIdx.x;
            const int oh0 = (int)tr * CONV_TILE_H + (int)threadIdx.y;
            if (ow >= Wo || oh0 >= Ho) continue;
            const int iw0 = ow * sw - pw;
            acc_t acc[CONV_ROWS];
#pragma unroll
            for (int r = 0; r < CONV_ROWS; ++r) acc[r] = 0.0f;
            for (int c = 0; c < cig; ++c) {
                const T *xp = xn + (i64)c * in_plane;
                const TW *wc = wk + c * kh * kw;
                // 3x3 / 5x5: the channel's weights once into registers for the CONV_ROWS rows.
                acc_t wv[FIXED ? KH * KW : 1];
                (void)wv;
                if constexpr (FIXED) {
#pragma unroll
                    for (int k = 0; k < KH * KW; ++k) wv[k] = load(wc, k);
                }
#pragma unroll
                for (int r = 0; r < CONV_ROWS; ++r) {
                    const int oh = oh0 + CONV_TH * r;
                    if (oh >= Ho) break;
                    const int ih0 = oh * sh - ph;
#pragma unroll
                    for (int i = 0; i < kh; ++i) {
                        const int ih = ih0 + i * dh;
                        if (ih < 0 || ih >= H) continue;
                        const T *xr = xp + ih * W;  // ih * W < 2^30
#pragma unroll
                        for (int j = 0; j < kw; ++j) {
                            const int iw = iw0 + j * dw;
                            if (iw >= 0 && iw < W) {
                                acc_t wij;
                                if constexpr (FIXED) wij = wv[i * KW + j];
                                else wij = load(wc, i * kw + j);
                                acc[r] = acc[r] + wij * load(xr, iw);
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < CONV_ROWS; ++r) {
                const int oh = oh0 + CONV_TH * r;
                if (oh >= Ho) break;
                store(yp, oh * Wo + ow, acc[r]);  // oh * Wo + ow < 2^30
            }
        }
    }
}

/// Backward-data: dx[n, ci, ih, iw] = sum over the output channels co of ci's group and the taps
/// (i, j) with ih = oh*sh - ph + i*dh, iw = ow*sw - pw + j*dw for an output (oh, ow) in range,
/// of w[co, ci % cig, i, j] * dy[n, co, oh, ow], summed in (co, i, j) order. `S` > 0 fixes both
/// strides at compile time (the divisibility tests then compile to shifts and masks instead of
/// integer divisions).
/// Launch: as conv_fwd over the n * c_in planes of dx (grid.x) and the CONV_TILE_H x CONV_TW
/// tiles of a plane (grid.y); each thread computes one column of CONV_ROWS rows, CONV_TH apart.
template <typename T, typename TW, int KH, int KW, int S>
__device__ void conv_bwd_data(const T *dy, const TW *wt, T *dx, const ConvGeom &g) {
    constexpr bool FIXED = KH > 0 && KW > 0;
    const int kh = FIXED ? KH : g.kh, kw = FIXED ? KW : g.kw;
    const int sh = S > 0 ? S : g.sh, sw = S > 0 ? S : g.sw;
    const int H = (int)g.h, W = (int)g.w, Ho = (int)g.ho, Wo = (int)g.wo;
    const int c_in = (int)g.c_in, cig = (int)g.cig, cog = (int)g.cog;
    const int ph = g.ph, pw = g.pw, dh = g.dh, dw = g.dw;
    const i64 in_plane = g.h * g.w, out_plane = g.ho * g.wo;
    int tiles, tiles_w;
    plane_tiles(H, W, tiles, tiles_w);
    // Unsigned loop counters: p < 2^30 and gridDim.x < 2^31, so p + gridDim.x cannot wrap.
    const u32 planes = (u32)(g.n * g.c_in);
    for (u32 p = blockIdx.x; p < planes; p += gridDim.x) {
        const u32 ni = p / (u32)c_in, ci = p - ni * (u32)c_in;
        const u32 gi = ci / (u32)cig, cl = ci - gi * (u32)cig;
        const u32 co0 = gi * (u32)cog;
        const T *dyn = dy + ((i64)ni * g.c_out + co0) * out_plane;
        const TW *wg = wt + ((i64)co0 * cig + cl) * kh * kw;
        T *dxp = dx + (i64)p * in_plane;
        for (u32 t = blockIdx.y; t < (u32)tiles; t += gridDim.y) {
            const u32 tr = t / (u32)tiles_w, tc = t - tr * (u32)tiles_w;
            const int iw = (int)tc * CONV_TW + (int)threadIdx.x;
            const int ih0 = (int)tr * CONV_TILE_H + (int)threadIdx.y;
            if (iw >= W || ih0 >= H) continue;
            const int tw0 = iw + pw;
            acc_t acc[CONV_ROWS];
#pragma unroll
            for (int r = 0; r < CONV_ROWS; ++r) acc[r] = 0.0f;
            for (int k = 0; k < cog; ++k) {
                const T *dyp = dyn + (i64)k * out_plane;
                const TW *wc = wg + (i64)k * cig * kh * kw;
                // 3x3 / 5x5: the weights of (co0 + k, cl) once into registers for the rows.
                acc_t wv[FIXED ? KH * KW : 1];
                (void)wv;
                if constexpr (FIXED) {
#pragma unroll
                    for (int q = 0; q < KH * KW; ++q) wv[q] = load(wc, q);
                }
#pragma unroll
                for (int r = 0; r < CONV_ROWS; ++r) {
                    const int ih = ih0 + CONV_TH * r;
                    if (ih >= H) break;
#pragma unroll
                    for (int i = 0; i < kh; ++i) {
                        const int th = ih + ph - i * dh;
                        if (th < 0 || th % sh != 0) continue;
                        const int oh = th / sh;
                        if (oh >= Ho) continue;
                        const T *dyr = dyp + oh * Wo;  // oh * Wo < 2^30
#pragma unroll
                        for (int j = 0; j < kw; ++j) {
                            const int tw = tw0 - j * dw;
                            if (tw < 0 || tw % sw != 0) continue;
                            const int ow = tw / sw;
                            if (ow < Wo) {
                                acc_t wij;
                                if constexpr (FIXED) wij = wv[i * KW + j];
                                else wij = load(wc, i * kw + j);
                                acc[r] = acc[r] + wij * load(dyr, ow);
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < CONV_ROWS; ++r) {
                const int ih = ih0 + CONV_TH * r;
                if (ih >= H) break;
                store(dxp, ih * W + iw, acc[r]);  // ih * W + iw < 2^30
            }
        }
    }
}

/// Depthwise forward for stride 2 on both axes, dilation 1, kernel K x K fixed (3 or 5): the
/// block's input tile (2 * CONV_TILE_H + K - 2 rows x 2 * CONV_TW + K - 2 columns of the input
/// plane, zero outside the image) is loaded once into shared memory with coalesced reads, its
/// even and odd columns stored apart so the 32 outputs of a warp read 32 consecutive words (no
/// bank conflicts). Each thread then computes CONV_ROWS outputs of one column exactly like
/// conv_fwd (taps in (i, j) order, out-of-range taps skipped, no contraction): bit-identical.
/// It replaces conv_fwd's strided global reads, where a warp's 32 outputs of a stride-2 row
/// touch twice the cache lines of a stride-1 row, once per tap.
/// Launch: as conv_fwd (blocks of CONV_TW x CONV_TH threads, grid.x over the n * c planes,
/// grid.y over the CONV_TILE_H x CONV_TW output tiles).
template <typename T, typename TW, int K>
__device__ void conv_fwd_dw_s2(const T *x, const TW *wt, T *y, const ConvGeom &g) {
    constexpr int IH = 2 * CONV_TILE_H + K - 2, IW = 2 * CONV_TW + K - 2, IW2 = (IW + 1) / 2;
    __shared__ acc_t tile[2][IH][IW2];
    const int H = (int)g.h, W = (int)g.w, Ho = (int)g.ho, Wo = (int)g.wo, c = (int)g.c_out;
    const i64 in_plane = g.h * g.w, out_plane = g.ho * g.wo;
    const int tid = (int)(threadIdx.y * CONV_TW + threadIdx.x);
    int tiles, tiles_w;
    plane_tiles(Ho, Wo, tiles, tiles_w);
    const u32 planes = (u32)(g.n * g.c_out);
    for (u32 p = blockIdx.x; p < planes; p += gridDim.x) {
        const u32 ni = p / (u32)c, ch = p - ni * (u32)c;
        const T *xp = x + ((i64)ni * g.c_in + ch) * in_plane;
        T *yp = y + (i64)p * out_plane;
        acc_t wv[K * K];
#pragma unroll
        for (int k = 0; k < K * K; ++k) wv[k] = load(wt + (i64)ch * K * K, k);
        for (u32 t = blockIdx.y; t < (u32)tiles; t += gridDim.y) {
            const u32 tr = t / (u32)tiles_w, tc = t - tr * (u32)tiles_w;
            const int oh0 = (int)tr * CONV_TILE_H, ow0 = (int)tc * CONV_TW;
            const int ih0 = 2 * oh0 - g.ph, iw0 = 2 * ow0 - g.pw;
            __syncthreads();  // the previous tile's readers are done
            for (int e = tid; e < IH * IW; e += CONV_TW * CONV_TH) {
                const int r = e / IW, col = e - r * IW;
                const int ih = ih0 + r, iw = iw0 + col;
                const bool in = ih >= 0 && ih < H && iw >= 0 && iw < W;
                tile[col & 1][r][col >> 1] = in ? load(xp, ih * W + iw) : 0.0f;
            }
            __syncthreads();
            const int ow = ow0 + (int)threadIdx.x;
            if (ow >= Wo) continue;  // no barrier follows in this iteration
#pragma unroll
            for (int rr = 0; rr < CONV_ROWS; ++rr) {
                const int lr0 = (int)threadIdx.y + CONV_TH * rr, oh = oh0 + lr0;
                if (oh >= Ho) break;
                acc_t acc = 0.0f;
#pragma unroll
                for (int i = 0; i < K; ++i) {
                    const int ih = 2 * oh - g.ph + i;
                    if (ih < 0 || ih >= H) continue;
#pragma unroll
                    for (int j = 0; j < K; ++j) {
                        const int iw = 2 * ow - g.pw + j, lc = 2 * (int)threadIdx.x + j;
                        if (iw >= 0 && iw < W) acc = acc + wv[i * K + j] * tile[lc & 1][2 * lr0 + i][lc >> 1];
                    }
                }
                store(yp, oh * Wo + ow, acc);
            }
        }
    }
}

#define CONV_C1_THREADS 256
#define CONV_C1_CO 16

/// Forward for one input channel and groups == 1 (the stem), kernel K x K fixed: the same sum
/// as conv_fwd (taps in (i, j) order, out-of-range taps skipped: bit-identical), but each
/// thread loads its K*K input taps once into registers and reuses them for CONV_C1_CO output
/// channels, whose weights sit in shared memory.
/// Launch: blocks of CONV_C1_THREADS (x) threads; grid.x strides over (n, chunk of
/// CONV_C1_THREADS output positions of the ho * wo plane), grid.y over the chunks of
/// CONV_C1_CO output channels (ceil(c_out / CONV_C1_CO), grid-strided). Thread q of a chunk
/// writes y[n, co, q / wo, q % wo] for its channels: coalesced along the plane.
template <typename T, typename TW, int K>
__device__ void conv_fwd_c1(const T *x, const TW *wt, T *y, const ConvGeom &g) {
    __shared__ acc_t ws[CONV_C1_CO * K * K];
    const int H = (int)g.h, W = (int)g.w, Wo = (int)g.wo, c_out = (int)g.c_out;
    const int hwo = (int)(g.ho * g.wo);
    const i64 in_plane = g.h * g.w, out_plane = g.ho * g.wo;
    const i64 chunks = (hwo + CONV_C1_THREADS - 1) / CONV_C1_THREADS;
    const i64 work = g.n * chunks;
    // co_base < c_out <= 2^30 and gridDim.y * CONV_C1_CO < 2^21: no overflow.
    for (int cb = (int)blockIdx.y * CONV_C1_CO; cb < c_out; cb += (int)gridDim.y * CONV_C1_CO) {
        const int nco = c_out - cb < CONV_C1_CO ? c_out - cb : CONV_C1_CO;
        __syncthreads();  // the previous chunk's readers are done with ws
        for (int e = threadIdx.x; e < nco * K * K; e += blockDim.x) ws[e] = load(wt, (i64)cb * K * K + e);
        __syncthreads();
        for (i64 b = blockIdx.x; b < work; b += gridDim.x) {
            const i64 ni = b / chunks;
            const int q = (int)(b - ni * chunks) * CONV_C1_THREADS + (int)threadIdx.x;
            if (q >= hwo) continue;
            const int oh = q / Wo, ow = q - oh * Wo;
            const int ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
            const T *xp = x + ni * in_plane;
            bool rv[K], cv[K];
            acc_t xv[K * K];
#pragma unroll
            for (int j = 0; j < K; ++j) {
                const int iw = iw0 + j * g.dw;
                cv[j] = iw >= 0 && iw < W;
            }
#pragma unroll
            for (int i = 0; i < K; ++i) {
                const int ih = ih0 + i * g.dh;
                rv[i] = ih >= 0 && ih < H;
#pragma unroll
                for (int j = 0; j < K; ++j) {
                    const int iw = iw0 + j * g.dw;
                    xv[i * K + j] = rv[i] && cv[j] ? load(xp, ih * W + iw) : 0.0f;
                }
            }
            T *yp = y + (ni * g.c_out + cb) * out_plane + q;
            for (int c = 0; c < nco; ++c) {
                const acc_t *wc = ws + c * K * K;
                acc_t acc = 0.0f;
#pragma unroll
                for (int i = 0; i < K; ++i) {
#pragma unroll
                    for (int j = 0; j < K; ++j)
                        if (rv[i] && cv[j]) acc = acc + wc[i * K + j] * xv[i * K + j];
                }
                store(yp, (i64)c * out_plane, acc);
            }
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

/// Entry points for activations of storage type `T` (dtype suffix `S`) with f32 weights: f32,
/// and bf16 activations (x, y, dy, dx) with f32 accumulation, whose weight-gradient partials
/// stay f32 (conv_bwd_weight_finish_f32 sums them into the f32 gradient for both).
#define CONV_ENTRIES(S, T)                                                                         \
    HR_EXTERN void conv_fwd_k3_##S(const T *x, const float *w, T *y, ConvGeom g) {                 \
        conv_fwd<T, float, 3, 3>(x, w, y, g);                                                      \
    }                                                                                              \
    HR_EXTERN void conv_fwd_k5_##S(const T *x, const float *w, T *y, ConvGeom g) {                 \
        conv_fwd<T, float, 5, 5>(x, w, y, g);                                                      \
    }                                                                                              \
    HR_EXTERN void conv_fwd_any_##S(const T *x, const float *w, T *y, ConvGeom g) {                \
        conv_fwd<T, float, 0, 0>(x, w, y, g);                                                      \
    }                                                                                              \
    HR_EXTERN void conv_fwd_dw_s2_k3_##S(const T *x, const float *w, T *y, ConvGeom g) {           \
        conv_fwd_dw_s2<T, float, 3>(x, w, y, g);                                                   \
    }                                                                                              \
    HR_EXTERN void conv_fwd_dw_s2_k5_##S(const T *x, const float *w, T *y, ConvGeom g) {           \
        conv_fwd_dw_s2<T, float, 5>(x, w, y, g);                                                   \
    }                                                                                              \
    HR_EXTERN void conv_fwd_c1_k3_##S(const T *x, const float *w, T *y, ConvGeom g) {              \
        conv_fwd_c1<T, float, 3>(x, w, y, g);                                                      \
    }                                                                                              \
    HR_EXTERN void conv_fwd_c1_k5_##S(const T *x, const float *w, T *y, ConvGeom g) {              \
        conv_fwd_c1<T, float, 5>(x, w, y, g);                                                      \
    }                                                                                              \
    HR_EXTERN void conv_bwd_data_k3_##S(const T *dy, const float *w, T *dx, ConvGeom g) {          \
        conv_bwd_data<T, float, 3, 3, 0>(dy, w, dx, g);                                            \
    }                                                                                              \
    HR_EXTERN void conv_bwd_data_k3s1_##S(const T *dy, const float *w, T *dx, ConvGeom g) {        \
        conv_bwd_data<T, float, 3, 3, 1>(dy, w, dx, g);                                            \
    }                                                                                              \
    HR_EXTERN void conv_bwd_data_k3s2_##S(const T *dy, const float *w, T *dx, ConvGeom g) {        \
        conv_bwd_data<T, float, 3, 3, 2>(dy, w, dx, g);                                            \
    }                                                                                              \
    HR_EXTERN void conv_bwd_data_k5_##S(const T *dy, const float *w, T *dx, ConvGeom g) {          \
        conv_bwd_data<T, float, 5, 5, 0>(dy, w, dx, g);                                            \
    }                                                                                              \
    HR_EXTERN void conv_bwd_data_k5s1_##S(const T *dy, const float *w, T *dx, ConvGeom g) {        \
        conv_bwd_data<T, float, 5, 5, 1>(dy, w, dx, g);                                            \
    }                                                                                              \
    HR_EXTERN void conv_bwd_data_k5s2_##S(const T *dy, const float *w, T *dx, ConvGeom g) {        \
        conv_bwd_data<T, float, 5, 5, 2>(dy, w, dx, g);                                            \
    }                                                                                              \
    HR_EXTERN void conv_bwd_data_any_##S(const T *dy, const float *w, T *dx, ConvGeom g) {         \
        conv_bwd_data<T, float, 0, 0, 0>(dy, w, dx, g);                                            \
    }                                                                                              \
    HR_EXTERN void conv_bwd_weight_part_k3_##S(const T *x, const T *dy, float *part, ConvGeom g,   \
                                               i64 per_chunk) {                                    \
        conv_bwd_weight_part<T, 3, 3>(x, dy, part, g, per_chunk);                                  \
    }                                                                                              \
    HR_EXTERN void conv_bwd_weight_part_k5_##S(const T *x, const T *dy, float *part, ConvGeom g,   \
                                               i64 per_chunk) {                                    \
        conv_bwd_weight_part<T, 5, 5>(x, dy, part, g, per_chunk);                                  \
    }                                                                                              \
    HR_EXTERN void conv_bwd_weight_part_any_##S(const T *x, const T *dy, float *part, ConvGeom g,  \
                                                i64 per_chunk) {                                   \
        conv_bwd_weight_part_any<T>(x, dy, part, g, per_chunk);                                    \
    }
CONV_ENTRIES(f32, float)
CONV_ENTRIES(bf16, bf16)

HR_EXTERN void conv_bwd_weight_finish_f32(const float *part, float *dw, i64 chunks, i64 len) {
    conv_bwd_weight_finish<float>(part, dw, chunks, len);
}
