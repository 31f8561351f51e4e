// Attention family: fused flash-style scaled-dot-product attention, forward and backward.
// CPU twin: crates/hr-tensor/src/cpu/attention.rs (layouts q/out (B,Tq,H,Dh), k/v (B,Tk,H,Dh),
// lse (B,H,Tq), key mask (B,Tk) of 1 keep / 0 drop, dropout regenerated from counter_uniform).
//
// Every kernel uses 128 threads = 32 rows x 4 threads: thread (row, sub) owns the dimensions
// d = sub + 4c of its row in registers (NC = 8 / 16 / 32 per thread: the _dh32 / _dh64 /
// unsuffixed entry points, for Dh <= 32 / 64 / 128); a row dot product is 4 strided partial
// sums joined by two xor shuffles (the summation order is the same in all three kernels, so
// the backward recomputes exactly the forward's scores). The other operand is staged 32 rows
// at a time in static shared memory (2 x 32 x 4NC f32: 8 / 16 / 32 KiB), read by the 8 rows
// of a warp at the same address (broadcast) and 4 consecutive words per row (no bank
// conflicts); staging is coalesced (float4 when Dh % 4 == 0 and the base is aligned).
//
// - attention_fwd_f32: grid (B*H, ceil(Tq/32)); rows = queries, K/V tiles staged; online
//   softmax (running max m, running sum l of the undropped probabilities; acc and l are
//   rescaled only when a key raises the max), output acc / l and lse = m + log(l) (0 and -inf
//   for a row without kept keys). Loops over keys are not unrolled: the dropout hash stays
//   one copy per kernel variant.
// - attention_bwd_dkdv_f32: grid (B*H, ceil(Tk/32)); rows = keys (k, v in registers), Q/dO
//   tiles staged with lse and D_i = dout_i . out_i; P recomputed as exp(s - lse);
//   dv += P*M dout_i, dk += dS q_i with dS = P (M dP - D_i) scale.
// - attention_bwd_dq_f32: grid (B*H, ceil(Tq/32)); rows = queries, K/V tiles staged;
//   dq += dS k_j. Two launches instead of atomics: deterministic, no zeroed dq, every output
//   element written exactly once.
#include "common.cuh"

/// Rows (queries or keys) per block and per staged tile.
#define ATT_ROWS 32
/// Threads per row.
#define ATT_TPR 4
/// Threads per block (ATT_ROWS * ATT_TPR).
#define ATT_THREADS 128
/// Largest supported head dimension (the host rejects larger ones).
#define ATT_MAX_DH 128

/// Attention geometry (mirrors `AttnGeom` in crates/hr-tensor/src/cuda/backend/attention.rs).
struct AttnGeom {
    i64 heads;        // H
    i64 tq;           // query positions
    i64 tk;           // key positions
    i64 dh;           // head dim (<= ATT_MAX_DH)
    float scale;      // score scale
    float keep_scale; // 1 / (1 - p)
    double p;         // dropout probability (0 = none)
    u64 seed;         // dropout seed
    int has_mask;     // mask pointer valid
    int _pad;
};

/// Sum over the 4 threads of one row (lanes 4r .. 4r+3 of a warp).
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}

/// Dropout multiplier of probability (bh, i, j): 0 or 1 / (1 - p).
__device__ __forceinline__ float att_keep(const AttnGeom &g, i64 bh, i64 i, i64 j) {
    if (g.p <= 0.0) return 1.0f;
    const u64 idx = (u64)((bh * g.tq + i) * g.tk + j);
    return counter_uniform(g.seed, idx) < g.p ? 0.0f : g.keep_scale;
}

/// Offset of row t of head h in batch entry b of a (B, T, H, Dh) tensor.
__device__ __forceinline__ i64 att_row(const AttnGeom &g, i64 b, i64 len, i64 t, i64 h) {
    return ((b * len + t) * g.heads + h) * g.dh;
}

/// Stages rows t0 .. t0+n-1 of head h of `src` (T positions) into `dst` (ATT_ROWS rows of
/// `ld` floats, ld >= Dh, a multiple of 4), zeros for rows >= n. float4 loads when Dh % 4 == 0 and `src` is aligned.
__device__ void att_stage(float *dst, int ld, const float *src, const AttnGeom &g, i64 b,
                          i64 len, i64 t0, int n, i64 h) {
    const int dh = (int)g.dh;
    if (dh % 4 == 0 && aligned16(src, src)) {
        const int d4 = dh / 4;
        for (int e = threadIdx.x; e < ATT_ROWS * d4; e += blockDim.x) {
            const int r = e / d4, c = e - r * d4;
            float4 v = {0.f, 0.f, 0.f, 0.f};
            if (r < n) v = *(const float4 *)(src + att_row(g, b, len, t0 + r, h) + 4 * c);
            *(float4 *)(dst + r * ld + 4 * c) = v;
        }
        return;
    }
    for (int e = threadIdx.x; e < ATT_ROWS * dh; e += blockDim.x) {
        const int r = e / dh, d = e - r * dh;
        dst[r * ld + d] = r < n ? src[att_row(g, b, len, t0 + r, h) + d] : 0.0f;
    }
}

/// Loads this thread's dimensions of row `off` (zeros when `!valid`).
template <int NC>
__device__ __forceinline__ void att_load(float *r, const float *src, i64 off, bool valid,
                                         int sub, int dh) {
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int d = sub + ATT_TPR * c;
        r[c] = (valid && d < dh) ? src[off + d] : 0.0f;
    }
}

/// Row dot product of registers `r` with staged row `s` (sum over the row's 4 threads).
template <int NC>
__device__ __forceinline__ float att_dot(const float *r, const float *s, int sub, int dh) {
    float acc = 0.0f;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int d = sub + ATT_TPR * c;
        if (d < dh) acc += r[c] * s[d];
    }
    return quad_sum(acc);
}

/// `acc += a * s` over this thread's dimensions.
template <int NC>
__device__ __forceinline__ void att_axpy(float *acc, float a, const float *s, int sub, int dh) {
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int d = sub + ATT_TPR * c;
        if (d < dh) acc[c] += a * s[d];
    }
}

/// Stores this thread's dimensions of row `off`.
template <int NC>
__device__ __forceinline__ void att_store(float *dst, i64 off, const float *r, float mul,
                                          int sub, int dh) {
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int d = sub + ATT_TPR * c;
        if (d < dh) dst[off + d] = r[c] * mul;
    }
}

/// Stages keys j0 .. j0+n-1 (K and V) and their keep flags.
__device__ void att_stage_kv(int ld, float *ks, float *vs, float *keep, const float *k, const float *v,
                             const float *mask, const AttnGeom &g, i64 b, i64 h, i64 j0, int n) {
    att_stage(ks, ld, k, g, b, g.tk, j0, n, h);
    att_stage(vs, ld, v, g, b, g.tk, j0, n, h);
    if (threadIdx.x < ATT_ROWS) {
        const int r = threadIdx.x;
        keep[r] = (r < n && (!g.has_mask || mask[b * g.tk + j0 + r] != 0.0f)) ? 1.0f : 0.0f;
    }
}

/// Forward of one block: 32 query rows of one (b, h).
template <int NC>
__device__ void att_fwd(const float *q, const float *k, const float *v, const float *mask,
                        float *out, float *lse, const AttnGeom &g, float *ks, float *vs,
                        float *keep) {
    constexpr int LD = NC * ATT_TPR;  // staged row stride (>= Dh)
    const i64 bh = blockIdx.x, b = bh / g.heads, h = bh % g.heads;
    const int row = threadIdx.x / ATT_TPR, sub = threadIdx.x % ATT_TPR, dh = (int)g.dh;
    const i64 i = (i64)blockIdx.y * ATT_ROWS + row;
    const bool valid = i < g.tq;
    const i64 off = att_row(g, b, g.tq, valid ? i : 0, h);
    float qr[NC], acc[NC];
    att_load<NC>(qr, q, off, valid, sub, dh);
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[c] = 0.0f;
    float m = HR_NEG_INF, l = 0.0f;
    for (i64 j0 = 0; j0 < g.tk; j0 += ATT_ROWS) {
        const int n = (int)(g.tk - j0 < ATT_ROWS ? g.tk - j0 : ATT_ROWS);
        __syncthreads();  // the previous tile is consumed
        att_stage_kv(LD, ks, vs, keep, k, v, mask, g, b, h, j0, n);
        __syncthreads();
        for (int jj = 0; jj < n; ++jj) {
            if (keep[jj] == 0.0f) continue;  // masked key (uniform over the block)
            const float s = att_dot<NC>(qr, ks + jj * LD, sub, dh) * g.scale;
            if (s > m) {  // new running max: rescale (rare after the first keys)
                const float corr = expf(m - s);
                l *= corr;
#pragma unroll
                for (int c = 0; c < NC; ++c) acc[c] *= corr;
                m = s;
            }
            const float p = expf(s - m);
            l += p;
            const float pd = p * att_keep(g, bh, i, j0 + jj);
            if (pd != 0.0f) att_axpy<NC>(acc, pd, vs + jj * LD, sub, dh);
        }
    }
    if (!valid) return;
    att_store<NC>(out, off, acc, l > 0.0f ? 1.0f / l : 0.0f, sub, dh);
    if (sub == 0) lse[bh * g.tq + i] = l > 0.0f ? m + logf(l) : HR_NEG_INF;
}


/// D_i = dout_i . out_i of the row at `off` (sum over the row's 4 threads; 0 when `!valid`).
__device__ __forceinline__ float att_delta(const float *o, const float *dout, i64 off,
                                           bool valid, int sub, int dh) {
    float s = 0.0f;
    if (valid)
        for (int d = sub; d < dh; d += ATT_TPR) s += dout[off + d] * o[off + d];
    return quad_sum(s);
}

/// Backward dK/dV of one block: 32 key rows of one (b, h), all query tiles.
template <int NC>
__device__ void att_dkdv(const float *q, const float *k, const float *v, const float *mask,
                         const float *o, const float *lse, const float *dout, float *dk,
                         float *dv, const AttnGeom &g, float *qs, float *dos, float *rows) {
    constexpr int LD = NC * ATT_TPR;  // staged row stride (>= Dh)
    const i64 bh = blockIdx.x, b = bh / g.heads, h = bh % g.heads;
    const int row = threadIdx.x / ATT_TPR, sub = threadIdx.x % ATT_TPR, dh = (int)g.dh;
    const i64 j = (i64)blockIdx.y * ATT_ROWS + row;
    const bool valid = j < g.tk;
    const bool kept = valid && (!g.has_mask || mask[b * g.tk + j] != 0.0f);
    const i64 off = att_row(g, b, g.tk, valid ? j : 0, h);
    float kr[NC], vr[NC], gk[NC], gv[NC];
    att_load<NC>(kr, k, off, kept, sub, dh);
    att_load<NC>(vr, v, off, kept, sub, dh);
#pragma unroll
    for (int c = 0; c < NC; ++c) gk[c] = gv[c] = 0.0f;
    float *lses = rows, *delta = rows + ATT_ROWS;
    for (i64 i0 = 0; i0 < g.tq; i0 += ATT_ROWS) {
        const int n = (int)(g.tq - i0 < ATT_ROWS ? g.tq - i0 : ATT_ROWS);
        __syncthreads();  // the previous tile is consumed
        att_stage(qs, LD, q, g, b, g.tq, i0, n, h);
        att_stage(dos, LD, dout, g, b, g.tq, i0, n, h);
        const bool rv = row < n;
        const float d_i = att_delta(o, dout, att_row(g, b, g.tq, rv ? i0 + row : 0, h), rv, sub, dh);
        if (sub == 0) {
            delta[row] = d_i;
            lses[row] = rv ? lse[bh * g.tq + i0 + row] : HR_NEG_INF;
        }
        __syncthreads();
        for (int ii = 0; ii < n; ++ii) {
            const float li = lses[ii];
            if (li == HR_NEG_INF) continue;  // a row without kept keys (uniform)
            const float s = att_dot<NC>(kr, qs + ii * LD, sub, dh) * g.scale;
            const float dp = att_dot<NC>(vr, dos + ii * LD, sub, dh);
            if (!kept) continue;
            const float p = expf(s - li);
            const float mk = att_keep(g, bh, i0 + ii, j);
            const float ds = p * (mk * dp - delta[ii]) * g.scale;
            att_axpy<NC>(gv, p * mk, dos + ii * LD, sub, dh);
            att_axpy<NC>(gk, ds, qs + ii * LD, sub, dh);
        }
    }
    if (!valid) return;
    att_store<NC>(dk, off, gk, 1.0f, sub, dh);
    att_store<NC>(dv, off, gv, 1.0f, sub, dh);
}


/// Backward dQ of one block: 32 query rows of one (b, h), all key tiles.
template <int NC>
__device__ void att_dq(const float *q, const float *k, const float *v, const float *mask,
                       const float *o, const float *lse, const float *dout, float *dq,
                       const AttnGeom &g, float *ks, float *vs, float *keep) {
    constexpr int LD = NC * ATT_TPR;  // staged row stride (>= Dh)
    const i64 bh = blockIdx.x, b = bh / g.heads, h = bh % g.heads;
    const int row = threadIdx.x / ATT_TPR, sub = threadIdx.x % ATT_TPR, dh = (int)g.dh;
    const i64 i = (i64)blockIdx.y * ATT_ROWS + row;
    const bool valid = i < g.tq;
    const i64 off = att_row(g, b, g.tq, valid ? i : 0, h);
    const float li = valid ? lse[bh * g.tq + i] : HR_NEG_INF;
    const bool live = li != HR_NEG_INF;
    float qr[NC], dor[NC], gq[NC];
    att_load<NC>(qr, q, off, live, sub, dh);
    att_load<NC>(dor, dout, off, live, sub, dh);
#pragma unroll
    for (int c = 0; c < NC; ++c) gq[c] = 0.0f;
    const float d_i = att_delta(o, dout, off, live, sub, dh);
    for (i64 j0 = 0; j0 < g.tk; j0 += ATT_ROWS) {
        const int n = (int)(g.tk - j0 < ATT_ROWS ? g.tk - j0 : ATT_ROWS);
        __syncthreads();  // the previous tile is consumed
        att_stage_kv(LD, ks, vs, keep, k, v, mask, g, b, h, j0, n);
        __syncthreads();
        for (int jj = 0; jj < n; ++jj) {
            if (keep[jj] == 0.0f) continue;  // masked key (uniform)
            const float s = att_dot<NC>(qr, ks + jj * LD, sub, dh) * g.scale;
            const float dp = att_dot<NC>(dor, vs + jj * LD, sub, dh);
            if (!live) continue;
            const float p = expf(s - li);
            const float mk = att_keep(g, bh, i, j0 + jj);
            const float ds = p * (mk * dp - d_i) * g.scale;
            att_axpy<NC>(gq, ds, ks + jj * LD, sub, dh);
        }
    }
    if (!valid) return;
    att_store<NC>(dq, off, gq, 1.0f, sub, dh);
}

// Entry points: one per register width, the host picks the narrowest that holds Dh (the
// unsuffixed ones take any Dh <= 128; _dh64 Dh <= 64; _dh32 Dh <= 32), so a Dh = 64 launch
// does not reserve the registers of the Dh = 128 variant.
#define ATT_ENTRIES(SFX, NC)                                                                   \
    HR_EXTERN void attention_fwd##SFX##_f32(const float *q, const float *k, const float *v,     \
                                            const float *mask, float *out, float *lse,         \
                                            AttnGeom g) {                                      \
        __shared__ __align__(16) float ks[ATT_ROWS * NC * ATT_TPR];                              \
        __shared__ __align__(16) float vs[ATT_ROWS * NC * ATT_TPR];                              \
        __shared__ float keep[ATT_ROWS];                                                       \
        att_fwd<NC>(q, k, v, mask, out, lse, g, ks, vs, keep);                                 \
    }                                                                                          \
    HR_EXTERN void attention_bwd_dkdv##SFX##_f32(                                              \
        const float *q, const float *k, const float *v, const float *mask, const float *o,     \
        const float *lse, const float *dout, float *dk, float *dv, AttnGeom g) {               \
        __shared__ __align__(16) float qs[ATT_ROWS * NC * ATT_TPR];                              \
        __shared__ __align__(16) float dos[ATT_ROWS * NC * ATT_TPR];                             \
        __shared__ float rows[2 * ATT_ROWS];                                                   \
        att_dkdv<NC>(q, k, v, mask, o, lse, dout, dk, dv, g, qs, dos, rows);                   \
    }                                                                                          \
    HR_EXTERN void attention_bwd_dq##SFX##_f32(                                                \
        const float *q, const float *k, const float *v, const float *mask, const float *o,     \
        const float *lse, const float *dout, float *dq, AttnGeom g) {                          \
        __shared__ __align__(16) float ks[ATT_ROWS * NC * ATT_TPR];                              \
        __shared__ __align__(16) float vs[ATT_ROWS * NC * ATT_TPR];                              \
        __shared__ float keep[ATT_ROWS];                                                       \
        att_dq<NC>(q, k, v, mask, o, lse, dout, dq, g, ks, vs, keep);                          \
    }

ATT_ENTRIES(, 32)
ATT_ENTRIES(_dh64, 16)
ATT_ENTRIES(_dh32, 8)
