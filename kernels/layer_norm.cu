// Normalisation family over the last axis: layer norm (forward, backward with the parameter
// gradients) and L2 normalisation. CPU twin: crates/hr-tensor/src/cpu/norm.rs.
// One block per row; statistics accumulate in acc_t (f32); the final 1/sqrt and 1/n are taken
// in f64 like the CPU. Layer norm's saved mean / rstd are f32 for every storage type (bf16
// x, gamma, beta and gradients; f32 statistics: see `NormStats` in crates/hr-tensor).
#include "common.cuh"

/// Layer norm of rows of `d`: writes y, mean and rstd (one per row).
template <typename T>
__device__ void layer_norm(const T *x, const T *g, const T *b, T *y, float *mean, float *rstd, i64 rows,
                           i64 d, double eps) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * d;
        acc_t s = 0.0f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) s += load(xr, j);
        const float m = block_sum(s, scratch) / (float)d;
        acc_t q = 0.0f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            float c = load(xr, j) - m;
            q += c * c;
        }
        const float var = block_sum(q, scratch) / (float)d;
        const float rs = (float)(1.0 / sqrt((double)var + eps));
        for (i64 j = threadIdx.x; j < d; j += blockDim.x)
            store(y + r * d, j, (load(xr, j) - m) * rs * load(g, j) + load(b, j));
        if (threadIdx.x == 0) {
            store(mean, r, m);
            store(rstd, r, rs);
        }
    }
}

/// Layer-norm input gradient: `dx = rstd * (dy*g - mean(dy*g) - xhat * mean(dy*g*xhat))`.
template <typename T>
__device__ void layer_norm_bwd_dx(const T *x, const T *g, const float *mean, const float *rstd, const T *dy,
                                  T *dx, i64 rows, i64 d) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * d, *gr = dy + r * d;
        const float m = load(mean, r), rs = load(rstd, r);
        acc_t a = 0.0f, bb = 0.0f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            float dxh = load(gr, j) * load(g, j);
            a += dxh;
            bb += dxh * ((load(xr, j) - m) * rs);
        }
        a = block_sum(a, scratch) / (float)d;
        bb = block_sum(bb, scratch) / (float)d;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            float xh = (load(xr, j) - m) * rs;
            float dxh = load(gr, j) * load(g, j);
            store(dx + r * d, j, rs * (dxh - a - xh * bb));
        }
    }
}

/// Partial parameter gradients: block (bx, by) sums rows by, by + gridDim.y, ... of columns
/// [32 bx, 32 bx + 32) into part_g/part_b[by, col]. blockDim = (32, 8).
template <typename T>
__device__ void layer_norm_bwd_params(const T *x, const float *mean, const float *rstd, const T *dy,
                                      float *part_g, float *part_b, i64 rows, i64 d) {
    __shared__ float sg[8][33];
    __shared__ float sb[8][33];
    const i64 col = (i64)blockIdx.x * 32 + threadIdx.x;
    acc_t ag = 0.0f, ab = 0.0f;
    if (col < d) {
        for (i64 r = (i64)blockIdx.y * 8 + threadIdx.y; r < rows; r += (i64)gridDim.y * 8) {
            float dyv = load(dy, r * d + col);
            float xh = (load(x, r * d + col) - load(mean, r)) * load(rstd, r);
            ag += dyv * xh;
            ab += dyv;
        }
    }
    sg[threadIdx.y][threadIdx.x] = ag;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && col < d) {
        for (int t = 1; t < 8; ++t) {
            ag += sg[t][threadIdx.x];
            ab += sb[t][threadIdx.x];
        }
        part_g[(i64)blockIdx.y * d + col] = ag;
        part_b[(i64)blockIdx.y * d + col] = ab;
    }
}

/// Sums `parts` partial rows of (parts, d) into dgamma / dbeta (fixed order: deterministic).
template <typename T>
__device__ void layer_norm_bwd_finish(const float *part_g, const float *part_b, T *dg, T *db,
                                      i64 parts, i64 d) {
    GRID_STRIDE(j, d) {
        acc_t ag = 0.0f, ab = 0.0f;
        for (i64 p = 0; p < parts; ++p) {
            ag += part_g[p * d + j];
            ab += part_b[p * d + j];
        }
        store(dg, j, ag);
        store(db, j, ab);
    }
}

/// `y = x / max(||x||, eps)` per row; `norms[r] = ||x_r||`.
template <typename T> __device__ void l2_normalize(const T *x, T *y, T *norms, i64 rows, i64 d, double eps) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * d;
        acc_t s = 0.0f;
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
            float v = load(xr, j);
            s += v * v;
        }
        const double n = sqrt((double)block_sum(s, scratch));
        const float inv = (float)(1.0 / fmax(n, eps));
        for (i64 j = threadIdx.x; j < d; j += blockDim.x) store(y + r * d, j, load(xr, j) * inv);
        if (threadIdx.x == 0) store(norms, r, (float)n);
    }
}

/// Backward of l2_normalize: `dx = (dy - y <y, dy>) / n` when `n >= eps`, else `dy / eps`.
template <typename T>
__device__ void l2_normalize_bwd(const T *y, const T *norms, const T *dy, T *dx, i64 rows, i64 d,
                                 double eps) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *yr = y + r * d, *gr = dy + r * d;
        const double n = (double)load(norms, r);
        if (n >= eps && n > 0.0) {
            acc_t s = 0.0f;
            for (i64 j = threadIdx.x; j < d; j += blockDim.x) s += load(yr, j) * load(gr, j);
            s = block_sum(s, scratch);
            const float inv = (float)(1.0 / n);
            for (i64 j = threadIdx.x; j < d; j += blockDim.x)
                store(dx + r * d, j, (load(gr, j) - load(yr, j) * s) * inv);
        } else {
            const float inv = (float)(1.0 / eps);
            for (i64 j = threadIdx.x; j < d; j += blockDim.x) store(dx + r * d, j, load(gr, j) * inv);
        }
    }
}

/// Layer-norm entry points for storage `T` with dtype suffix `S` (statistics and the partial
/// parameter gradients are f32).
#define LAYER_NORM_ENTRIES(S, T)                                                                   \
    HR_EXTERN void layer_norm_##S(const T *x, const T *g, const T *b, T *y, float *mean,          \
                                  float *rstd, i64 rows, i64 d, double eps) {                      \
        layer_norm(x, g, b, y, mean, rstd, rows, d, eps);                                          \
    }                                                                                              \
    HR_EXTERN void layer_norm_bwd_dx_##S(const T *x, const T *g, const float *mean,               \
                                         const float *rstd, const T *dy, T *dx, i64 rows, i64 d) { \
        layer_norm_bwd_dx(x, g, mean, rstd, dy, dx, rows, d);                                      \
    }                                                                                              \
    HR_EXTERN void layer_norm_bwd_params_##S(const T *x, const float *mean, const float *rstd,    \
                                             const T *dy, float *part_g, float *part_b, i64 rows,  \
                                             i64 d) {                                              \
        layer_norm_bwd_params(x, mean, rstd, dy, part_g, part_b, rows, d);                         \
    }                                                                                              \
    HR_EXTERN void layer_norm_bwd_finish_##S(const float *part_g, const float *part_b, T *dg,     \
                                             T *db, i64 parts, i64 d) {                            \
        layer_norm_bwd_finish(part_g, part_b, dg, db, parts, d);                                   \
    }
LAYER_NORM_ENTRIES(f32, float)
LAYER_NORM_ENTRIES(bf16, bf16)
HR_EXTERN void l2_normalize_f32(const float *x, float *y, float *norms, i64 rows, i64 d, double eps) {
    l2_normalize(x, y, norms, rows, d, eps);
}
HR_EXTERN void l2_normalize_bwd_f32(const float *y, const float *norms, const float *dy, float *dx,
                                    i64 rows, i64 d, double eps) {
    l2_normalize_bwd(y, norms, dy, dx, rows, d, eps);
}
