// The fused symmetric contrastive (NT-Xent) loss on a square score matrix S (N, N), row-major.
// CPU reference: crates/hr-tensor/src/cpu/contrastive.rs; launches:
// crates/hr-tensor/src/cuda/backend/contrastive.rs.
//
// Positives: P_ij = groups[i] == groups[j]; counts[i] = sum_j P_ij (computed on the host, which
// also passes pairs = |P| = sum_i counts[i]). Since P is symmetric, counts[j] is also the
// positive count of column j.
//
// Forward (two launches, deterministic: no atomics):
//   contrastive_fwd_f32: block r (grid-stride over r) reduces row r and column r of S to their
//     log-sum-exps (max trick, f32 accumulation like log_softmax) and writes the f64 partial
//       partial[r] = 2 sum_{j: P_rj} S_rj - counts[r] (row_lse_r + col_lse_r)
//     (sum_ij P_ij (row_lse_i + col_lse_j) = sum_i counts[i] row_lse_i + sum_j counts[j] col_lse_j,
//     so each block needs only its own row and column). The partial uses the log-sum-exps in
//     f64 before their rounding to f32 (no cancellation of f32-rounded +-50 scores).
//   contrastive_loss_finish_f32: one block sums the N partials in a fixed order (f64) and
//     writes loss = -partials / (2 pairs).
// Backward (one launch): contrastive_bwd_f32, grid-stride, one thread per element:
//   dS_ij = w (2 P_ij - counts[i] exp(S_ij - row_lse_i) - counts[j] exp(S_ij - col_lse_j)),
//   w = -dloss / (2 |P|) passed by value.
#include "common.cuh"

/// Log-sum-exp of `k` values `x[j * stride]` over the whole block (every thread gets it):
/// the f32 result and, in `*lse_d`, the same value before its rounding to f32. Like the CPU
/// reference: -inf when every value is -inf, NaN when one is +inf or NaN. `fscratch` holds 32
/// floats.
template <typename T>
__device__ float block_lse(const T *x, i64 k, i64 stride, float *fscratch, double *lse_d) {
    float mx = HR_NEG_INF;
    for (i64 j = threadIdx.x; j < k; j += blockDim.x) mx = fmaxf(mx, load(x, j * stride));
    mx = block_max(mx, fscratch);
    if (mx == HR_NEG_INF) {
        *lse_d = (double)mx;
        return mx;
    }
    acc_t sum = 0.0f;
    for (i64 j = threadIdx.x; j < k; j += blockDim.x) sum += expf(load(x, j * stride) - mx);
    sum = block_sum(sum, fscratch);
    const double l = log((double)sum);
    *lse_d = (double)mx + l;
    return mx + (float)l;
}

/// Row and column log-sum-exps of S and the per-row loss partials (see the header).
template <typename T>
__device__ void contrastive_fwd(const T *s, const u32 *groups, const u32 *counts, T *row_lse,
                                T *col_lse, double *partial, i64 n) {
    __shared__ float fscratch[32];
    __shared__ double dscratch[32];
    for (i64 r = blockIdx.x; r < n; r += gridDim.x) {
        double row_d, col_d;
        const float row = block_lse(s + r * n, n, 1, fscratch, &row_d);
        const float col = block_lse(s + r, n, n, fscratch, &col_d);
        const u32 g = groups[r];
        double pos = 0.0;
        for (i64 j = threadIdx.x; j < n; j += blockDim.x)
            if (groups[j] == g) pos += (double)load(s, r * n + j);
        pos = block_sum(pos, dscratch);
        if (threadIdx.x == 0) {
            store(row_lse, r, row);
            store(col_lse, r, col);
            partial[r] = 2.0 * pos - (double)counts[r] * (row_d + col_d);
        }
    }
}

/// `loss[0] = -sum(partial) / (2 pairs)`: one block, fixed summation order (deterministic for
/// a given blockDim).
template <typename T>
__device__ void contrastive_loss_finish(const double *partial, T *loss, i64 n, double pairs) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (i64 r = threadIdx.x; r < n; r += blockDim.x) acc += partial[r];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0 && blockIdx.x == 0) store(loss, 0, (acc_t)(-0.5 * acc / pairs));
}

/// `dS` elementwise from the saved log-sum-exps; `w = -dloss / (2 |P|)`.
template <typename T>
__device__ void contrastive_bwd(const T *s, const u32 *groups, const u32 *counts,
                                const T *row_lse, const T *col_lse, T *ds, i64 n, float w) {
    GRID_STRIDE(idx, n * n) {
        const i64 i = idx / n, j = idx - i * n;
        const acc_t sij = load(s, idx);
        const acc_t pos = groups[i] == groups[j] ? 2.0f : 0.0f;
        const acc_t soft_r = expf(sij - load(row_lse, i)) * (acc_t)counts[i];
        const acc_t soft_c = expf(sij - load(col_lse, j)) * (acc_t)counts[j];
        store(ds, idx, w * (pos - soft_r - soft_c));
    }
}

HR_EXTERN void contrastive_fwd_f32(const float *s, const u32 *groups, const u32 *counts,
                                   float *row_lse, float *col_lse, double *partial, i64 n) {
    contrastive_fwd(s, groups, counts, row_lse, col_lse, partial, n);
}
HR_EXTERN void contrastive_loss_finish_f32(const double *partial, float *loss, i64 n,
                                           double pairs) {
    contrastive_loss_finish(partial, loss, n, pairs);
}
HR_EXTERN void contrastive_bwd_f32(const float *s, const u32 *groups, const u32 *counts,
                                   const float *row_lse, const float *col_lse, float *ds, i64 n,
                                   float w) {
    contrastive_bwd(s, groups, counts, row_lse, col_lse, ds, n, w);
}
