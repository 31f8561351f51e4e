// Softmax family over the last axis: (masked) softmax, log-softmax, their backward, and the
// negative log-likelihood loss. CPU twin: crates/hr-tensor/src/cpu/softmax.rs.
// One block per row (grid-stride over rows); row sums accumulate in acc_t (f32), the loss in
// f64 like the CPU.
#include "common.cuh"

/// The final pass's `exp(x[j] - max)` of the block softmax (0 for a dropped entry): f32
/// storage re-reads what the second pass stored (exact); bf16 storage rounded it, so it is
/// recomputed (one rounding of the result, like the CPU).
__device__ __forceinline__ float softmax_exp_again(const float *yr, const float *, const float *,
                                                   i64 j, float) {
    return yr[j];
}
__device__ __forceinline__ float softmax_exp_again(const bf16 *, const bf16 *xr, const bf16 *mr,
                                                   i64 j, float mx) {
    return (!mr || load(mr, j) != 0.0f) ? expf(load(xr, j) - mx) : 0.0f;
}

/// Softmax of rows of `k`; with `has_mask`, `mask` (b, k) (nonzero = keep) row r uses mask row
/// r / per_mask_row. Dropped entries are exactly 0; a row with nothing kept (or only -inf
/// kept) is all zeros.
template <typename T>
__device__ void softmax(const T *x, const T *mask, int has_mask, T *y, i64 rows, i64 k,
                        i64 per_mask_row) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * k;
        T *yr = y + r * k;
        const T *mr = has_mask ? mask + (r / per_mask_row) * k : (const T *)0;
        float mx = HR_NEG_INF;
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) {
            float v = load(xr, j);
            if ((!mr || load(mr, j) != 0.0f) && v > mx) mx = v;
        }
        mx = block_max(mx, scratch);
        if (mx == HR_NEG_INF) {
            for (i64 j = threadIdx.x; j < k; j += blockDim.x) store(yr, j, 0.0f);
            continue;
        }
        acc_t sum = 0.0f;
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) {
            float e = (!mr || load(mr, j) != 0.0f) ? expf(load(xr, j) - mx) : 0.0f;
            store(yr, j, e);
            sum += e;
        }
        sum = block_sum(sum, scratch);
        const float inv = (float)(1.0 / (double)sum);
        // Each thread rescales exactly the entries it wrote (no barrier needed).
        for (i64 j = threadIdx.x; j < k; j += blockDim.x)
            store(yr, j, softmax_exp_again(yr, xr, mr, j, mx) * inv);
    }
}

/// Softmax with one warp per row for rows of `k <= 32 * PER_LANE` (the row lives in registers:
/// one read, one write). Same semantics as `softmax`: a dropped (or -inf) entry contributes
/// exp(-inf) = 0, a row whose kept maximum is -inf is all zeros, NaN is ignored by the max
/// (fmaxf, like Rust's f32::max) and propagates through the sum.
template <typename T, int PER_LANE>
__device__ void softmax_warp(const T *x, const T *mask, int has_mask, T *y, i64 rows, i64 k,
                             i64 per_mask_row) {
    const int lane = threadIdx.x & 31;
    const i64 wpb = blockDim.x >> 5;
    for (i64 r = (i64)blockIdx.x * wpb + (threadIdx.x >> 5); r < rows; r += (i64)gridDim.x * wpb) {
        const T *xr = x + r * k;
        T *yr = y + r * k;
        const T *mr = has_mask ? mask + (r / per_mask_row) * k : (const T *)0;
        float v[PER_LANE];
        float mx = HR_NEG_INF;
#pragma unroll
        for (int t = 0; t < PER_LANE; ++t) {
            const i64 j = lane + 32 * t;
            const bool keep = j < k && (!mr || load(mr, j) != 0.0f);
            v[t] = keep ? load(xr, j) : HR_NEG_INF;
            mx = fmaxf(mx, v[t]);
        }
        mx = warp_max(mx);
        if (mx == HR_NEG_INF) {
#pragma unroll
            for (int t = 0; t < PER_LANE; ++t) {
                const i64 j = lane + 32 * t;
                if (j < k) store(yr, j, 0.0f);
            }
            continue;
        }
        acc_t sum = 0.0f;
#pragma unroll
        for (int t = 0; t < PER_LANE; ++t) {
            v[t] = expf(v[t] - mx);
            sum += v[t];
        }
        sum = warp_sum(sum);
        const float inv = (float)(1.0 / (double)sum);
#pragma unroll
        for (int t = 0; t < PER_LANE; ++t) {
            const i64 j = lane + 32 * t;
            if (j < k) store(yr, j, v[t] * inv);
        }
    }
}

/// `dx = y * (dy - sum(dy * y))`.
template <typename T> __device__ void softmax_bwd(const T *y, const T *dy, T *dx, i64 rows, i64 k) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *yr = y + r * k, *gr = dy + r * k;
        acc_t s = 0.0f;
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) s += load(yr, j) * load(gr, j);
        s = block_sum(s, scratch);
        for (i64 j = threadIdx.x; j < k; j += blockDim.x)
            store(dx + r * k, j, load(yr, j) * (load(gr, j) - s));
    }
}

/// `y = x - logsumexp(x)`; rows whose max is +-inf follow the IEEE result like the CPU.
template <typename T> __device__ void log_softmax(const T *x, T *y, i64 rows, i64 k) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * k;
        T *yr = y + r * k;
        float mx = HR_NEG_INF;
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) mx = fmaxf(mx, load(xr, j));
        mx = block_max(mx, scratch);
        float lse;
        if (mx == HR_NEG_INF || mx == HR_INF) {
            lse = mx == HR_INF ? mx : HR_NEG_INF;
        } else {
            acc_t sum = 0.0f;
            for (i64 j = threadIdx.x; j < k; j += blockDim.x) sum += expf(load(xr, j) - mx);
            sum = block_sum(sum, scratch);
            lse = mx + (float)log((double)sum);
        }
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) store(yr, j, load(xr, j) - lse);
    }
}

/// `dx = dy - exp(y) * sum(dy)`.
template <typename T>
__device__ void log_softmax_bwd(const T *y, const T *dy, T *dx, i64 rows, i64 k) {
    __shared__ float scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *yr = y + r * k, *gr = dy + r * k;
        acc_t s = 0.0f;
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) s += load(gr, j);
        s = block_sum(s, scratch);
        for (i64 j = threadIdx.x; j < k; j += blockDim.x)
            store(dx + r * k, j, load(gr, j) - expf(load(yr, j)) * s);
    }
}

/// Mean over rows of `-logp[r, targets[r]]` (targets validated on the host); one block,
/// f64 accumulation, result stored as a 1-element tensor.
template <typename T>
__device__ void nll_loss(const T *logp, const u32 *targets, T *out, i64 rows, i64 k) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (i64 r = threadIdx.x; r < rows; r += blockDim.x) acc -= (double)load(logp, r * k + targets[r]);
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) store(out, 0, (acc_t)(acc / (double)rows));
}

/// Writes `value` at each row's target of a gradient the host zeroed.
template <typename T> __device__ void nll_loss_bwd(const u32 *targets, T *g, i64 rows, i64 k, float value) {
    GRID_STRIDE(r, rows) store(g, r * k + targets[r], value);
}

HR_EXTERN void log_softmax_f32(const float *x, float *y, i64 rows, i64 k) { log_softmax(x, y, rows, k); }
HR_EXTERN void log_softmax_bwd_f32(const float *y, const float *dy, float *dx, i64 rows, i64 k) {
    log_softmax_bwd(y, dy, dx, rows, k);
}
HR_EXTERN void nll_loss_f32(const float *logp, const u32 *targets, float *out, i64 rows, i64 k) {
    nll_loss(logp, targets, out, rows, k);
}
HR_EXTERN void nll_loss_bwd_f32(const u32 *targets, float *g, i64 rows, i64 k, float value) {
    nll_loss_bwd(targets, g, rows, k, value);
}

#define SOFTMAX_WARP(S, T, P)                                                                      \
    HR_EXTERN void softmax_warp##P##_##S(const T *x, const T *mask, int has_mask, T *y, i64 rows,   \
                                         i64 k, i64 per_mask_row) {                                 \
        softmax_warp<T, P>(x, mask, has_mask, y, rows, k, per_mask_row);                           \
    }

/// Softmax entry points (block and warp-per-row variants, backward) for storage `T` with dtype
/// suffix `S`.
#define SOFTMAX_ENTRIES(S, T)                                                                      \
    HR_EXTERN void softmax_##S(const T *x, const T *mask, int has_mask, T *y, i64 rows, i64 k,     \
                               i64 per_mask_row) {                                                 \
        softmax(x, mask, has_mask, y, rows, k, per_mask_row);                                      \
    }                                                                                              \
    HR_EXTERN void softmax_bwd_##S(const T *y, const T *dy, T *dx, i64 rows, i64 k) {              \
        softmax_bwd(y, dy, dx, rows, k);                                                           \
    }                                                                                              \
    SOFTMAX_WARP(S, T, 1)                                                                          \
    SOFTMAX_WARP(S, T, 2)                                                                          \
    SOFTMAX_WARP(S, T, 4)                                                                          \
    SOFTMAX_WARP(S, T, 8)                                                                          \
    SOFTMAX_WARP(S, T, 16)                                                                         \
    SOFTMAX_WARP(S, T, 32)
SOFTMAX_ENTRIES(f32, float)
SOFTMAX_ENTRIES(bf16, bf16)
