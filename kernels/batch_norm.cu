// Batch norm over axis 1 of (N, C, S) (S = product of the spatial axes): train-mode statistics,
// normalise + affine, eval mode and backward. CPU twin: `channel` in
// crates/hr-tensor/src/cpu/norm.rs (f64 statistics; PyTorch running-stat semantics).
//
// Reductions are two-stage and deterministic: a partial kernel gives each block one channel and
// one chunk of the (n, s) positions (grid.y strides over channels, grid.x over chunks; a chunk
// is `per_chunk` batch entries times a range of `s_len` spatial positions, read with 4-element
// loads over the chunk's rows flattened where planes allow: `bn_chunk_visit`), the block sums in
// f64 like the CPU (f64 adds are cheap next to the memory traffic on sm_80/sm_90) and writes
// one f64 partial; a finish kernel (one thread per channel) combines the partials in chunk
// order. The statistics partials are (count, mean, M2) of the chunk computed two-pass inside
// the block (the second pass re-reads the chunk, mostly from L2), merged with Chan's formula,
// so var is sane for N*S up to 10^6 and beyond even when |mean| >> std, and the f32 mean is
// the rounded f64 mean like on the CPU (the backward's `x - mean` then matches it too).
//
// Pointwise kernels (normalise, dx; float4 / 8-byte bf16 accesses when planes allow, two in
// flight per thread) stride over planes on grid.x and over a plane on grid.y and compute
// `(x - m) * a + b` and `a * (dy - b - (x - m) * k)` in f32 without contraction, with the
// per-channel constants rounded from f64 exactly like the CPU.
//
// Fused batch norm + activation (`_act` entry points, a U_* code of common.cuh): the forward
// applies the activation to the normalised value before storing it, so the normalised tensor
// is never written; the backward recomputes it per element from x, the statistics, gamma and
// beta (`BnAct`) to form dy * act'(z) inside the reduction and the dx pass, so the separate
// activation-backward pass and its tensor disappear too. The CNN's activations (ReLU,
// Hardswish) are compile-time variants (`with_act`), others a run-time switch.
#include "common.cuh"

/// The chunk `k` of channel positions: batch entries [n0, n1) x spatial positions [s0, s1).
struct BnChunk {
    i64 n0, n1, s0, s1;
};

__device__ __forceinline__ BnChunk bn_chunk(i64 k, i64 n, i64 s, i64 per_chunk, i64 s_len,
                                            i64 s_chunks) {
    BnChunk c;
    const i64 kn = k / s_chunks, ks = k % s_chunks;
    c.n0 = kn * per_chunk;
    c.n1 = c.n0 + per_chunk < n ? c.n0 + per_chunk : n;
    c.s0 = ks * s_len;
    c.s1 = c.s0 + s_len < s ? c.s0 + s_len : s;
    return c;
}

/// Visits every element (x, dy) of a chunk assigned to this thread: `g(x, dy)` in f32 (dy = x
/// when `DY` is false: the statistics read x alone). Planes of 4k elements (every chunk then
/// starts on a multiple of 4) go through 4-element vector loads (float4 / 8-byte bf16), two
/// vectors in flight per thread, over the chunk's rows flattened (a chunk of many short planes
/// keeps all threads busy); other shapes take the scalar loop. The order of the visits differs
/// between the paths, so f64 sums built on them agree to rounding, not bit for bit.
template <bool DY, typename T, typename G>
__device__ __forceinline__ void bn_chunk_visit(const T *x, const T *dy, i64 ch, i64 c, i64 s,
                                               const BnChunk &k, G g) {
    if (s % 4 == 0 && aligned4x(x, DY ? dy : x)) {
        // Chunks hold at most CHUNK_ELEMS (host side) positions: 32-bit indices within one.
        const u32 len4 = (u32)((k.s1 - k.s0) / 4), total = (u32)(k.n1 - k.n0) * len4;
        const i64 row0 = ((k.n0 * c + ch) * s + k.s0) / 4, row_step = c * s / 4;
        auto at = [&](u32 i) {
            const u32 r = i / len4;
            return row0 + (i64)r * row_step + (i64)(i - r * len4);
        };
        auto visit4 = [&](const float4 &v, const float4 &d) {
            g(v.x, d.x);
            g(v.y, d.y);
            g(v.z, d.z);
            g(v.w, d.w);
        };
        u32 i = threadIdx.x;
        for (; i + blockDim.x < total; i += 2 * blockDim.x) {
            const i64 a = at(i), b = at(i + blockDim.x);
            const float4 xa = load4(x, a), xb = load4(x, b);
            const float4 da = DY ? load4(dy, a) : xa, db = DY ? load4(dy, b) : xb;
            visit4(xa, da);
            visit4(xb, db);
        }
        if (i < total) {
            const i64 a = at(i);
            const float4 xa = load4(x, a);
            visit4(xa, DY ? load4(dy, a) : xa);
        }
        return;
    }
    for (i64 ni = k.n0; ni < k.n1; ++ni) {
        const i64 base = (ni * c + ch) * s;
        for (i64 j = k.s0 + threadIdx.x; j < k.s1; j += blockDim.x) {
            const float v = load(x, base + j);
            g(v, DY ? load(dy, base + j) : v);
        }
    }
}

/// Sum of f(x) over a chunk, per thread (f64).
template <typename T, typename F>
__device__ __forceinline__ double bn_chunk_sum(const T *x, i64 ch, i64 c, i64 s, const BnChunk &k,
                                               F f) {
    double acc = 0.0;
    bn_chunk_visit<false>(x, x, ch, c, s, k, [&](float v, float) { acc = acc + f(v); });
    return acc;
}

/// Two sums over a chunk in one pass, per thread (f64): `f(x, dy, a0, a1)` adds element
/// (x, dy)'s terms to the accumulators.
template <typename T, typename F>
__device__ __forceinline__ void bn_chunk_sum2(const T *x, const T *dy, i64 ch, i64 c, i64 s,
                                              const BnChunk &k, double &a0, double &a1, F f) {
    a0 = 0.0;
    a1 = 0.0;
    bn_chunk_visit<true>(x, dy, ch, c, s, k, [&](float v, float d) { f(v, d, a0, a1); });
}

/// Statistics partials: part[(ch * chunks + k) * 3 + {0, 1, 2}] = (count, mean, M2) of chunk k
/// of channel ch. blockDim.x a multiple of 32.
template <typename T>
__device__ void bn_stats_part(const T *x, double *part, i64 n, i64 c, i64 s, i64 per_chunk,
                              i64 s_len, i64 s_chunks, i64 chunks) {
    __shared__ double scratch[32];
    for (i64 ch = blockIdx.y; ch < c; ch += gridDim.y) {
        for (i64 k = blockIdx.x; k < chunks; k += gridDim.x) {
            const BnChunk b = bn_chunk(k, n, s, per_chunk, s_len, s_chunks);
            const double cnt = (double)((b.n1 - b.n0) * (b.s1 - b.s0));
            const double sum =
                block_sum(bn_chunk_sum(x, ch, c, s, b, [](float v) { return (double)v; }), scratch);
            const double mean = cnt > 0.0 ? sum / cnt : 0.0;
            const double m2 = block_sum(bn_chunk_sum(x, ch, c, s, b,
                                                     [mean](float v) {
                                                         const double d = (double)v - mean;
                                                         return d * d;
                                                     }),
                                        scratch);
            if (threadIdx.x == 0) {
                double *o = part + (ch * chunks + k) * 3;
                o[0] = cnt;
                o[1] = mean;
                o[2] = m2;
            }
        }
    }
}

/// Per channel: merges the partials (Chan et al., f64, chunk order) into the biased variance;
/// writes mean, rstd = 1/sqrt(var + eps), scale = rstd * gamma (rounded from f64 like the CPU)
/// and updates the running statistics in place:
/// rm = (1 - momentum) rm + momentum mean, rv = (1 - momentum) rv + momentum var M/(M-1).
template <typename T>
__device__ void bn_stats_finish(const double *part, const T *gamma, T *mean_out, T *rstd_out,
                                float *scale, T *rmean, T *rvar, i64 c, i64 chunks,
                                double momentum, double eps) {
    GRID_STRIDE(ch, c) {
        double cnt = 0.0, mean = 0.0, m2 = 0.0;
        for (i64 k = 0; k < chunks; ++k) {
            const double *p = part + (ch * chunks + k) * 3;
            const double nb = p[0];
            if (nb <= 0.0) continue;
            const double tot = cnt + nb;
            const double d = p[1] - mean;
            mean += d * (nb / tot);
            m2 += p[2] + d * d * (cnt * nb / tot);
            cnt = tot;
        }
        const double var = cnt > 0.0 ? m2 / cnt : 0.0;
        const double rstd = 1.0 / sqrt(var + eps);
        store(mean_out, ch, (float)mean);
        store(rstd_out, ch, (float)rstd);
        scale[ch] = (float)(rstd * (double)load(gamma, ch));
        const double unbias = cnt > 1.0 ? cnt / (cnt - 1.0) : 1.0;
        store(rmean, ch, (float)((1.0 - momentum) * (double)load(rmean, ch) + momentum * mean));
        store(rvar, ch,
              (float)((1.0 - momentum) * (double)load(rvar, ch) + momentum * var * unbias));
    }
}

/// Eval-mode scale: scale[ch] = gamma / sqrt(running_var + eps) (f64, rounded once).
template <typename T>
__device__ void bn_eval_scale(const T *gamma, const T *rvar, float *scale, i64 c, double eps) {
    GRID_STRIDE(ch, c) {
        scale[ch] = (float)((double)load(gamma, ch) / sqrt((double)load(rvar, ch) + eps));
    }
}

/// No activation after the batch norm.
#define BN_NO_ACT -1
/// An activation known only at run time (`ActK::act`).
#define BN_ANY_ACT -2

/// The activation of a fused batch norm: `K` is BN_NO_ACT, U_RELU or U_HARDSWISH at compile
/// time (the per-element code then has no switch, and none of the other activations' code and
/// registers), or BN_ANY_ACT with the U_* code in `act`.
template <int K> struct ActK {
    int act;
    __device__ __forceinline__ int kind() const { return K == BN_ANY_ACT ? act : K; }
    /// act(z) (z itself without an activation).
    __device__ __forceinline__ float f(float z) const {
        return kind() < 0 ? z : unary_f(kind(), z);
    }
    /// act'(z).
    __device__ __forceinline__ float df(float z) const { return unary_df(kind(), z); }
};

/// Calls `f(ActK<K>{act})` with `K` the compile-time form of `act` where there is one
/// (no activation, ReLU, Hardswish: the CNN's), BN_ANY_ACT otherwise.
template <typename F> __device__ __forceinline__ void with_act(int act, F f) {
    switch (act) {
    case BN_NO_ACT: f(ActK<BN_NO_ACT>{act}); break;
    case U_RELU: f(ActK<U_RELU>{act}); break;
    case U_HARDSWISH: f(ActK<U_HARDSWISH>{act}); break;
    default: f(ActK<BN_ANY_ACT>{act}); break;
    }
}

/// y = act((x - m[ch]) * a[ch] + b[ch]) over (N, C, S) (`act` an `ActK`: no activation when
/// it is BN_NO_ACT; otherwise a U_* code of common.cuh: the fused batch norm + activation, whose
/// normalised value is never stored). grid.x strides over planes, grid.y and the threads over
/// a plane (two vectors in flight per thread, `pair_loop`); planes whose length is a multiple
/// of 4 use 4-element accesses (float4 for f32, 8 bytes for bf16; every plane then starts
/// aligned when the buffers do).
template <typename T, typename A>
__device__ void bn_apply(const T *x, const float *m, const float *a, const float *b, T *y, i64 n,
                         i64 c, i64 s, A act) {
    const i64 planes = n * c;
    const bool vec = s % 4 == 0 && aligned4x(x, y);
    const i64 s4 = vec ? s / 4 : 0;
    const i64 first = (i64)blockIdx.y * blockDim.x + threadIdx.x;
    const i64 step = (i64)gridDim.y * blockDim.x;
    auto f = [act](float z) { return act.f(z); };
    for (i64 p = blockIdx.x; p < planes; p += gridDim.x) {
        const i64 ch = p % c;
        const acc_t mv = load(m, ch), av = a[ch], bv = load(b, ch);
        const i64 base = p * s;
        pair_loop(
            first, step, s4, [&](i64 j) { return load4(x + base, j); },
            [&](i64 j, float4 v) {
                v.x = f((v.x - mv) * av + bv);
                v.y = f((v.y - mv) * av + bv);
                v.z = f((v.z - mv) * av + bv);
                v.w = f((v.w - mv) * av + bv);
                store4(y + base, j, v);
            });
        for (i64 j = s4 * 4 + first; j < s; j += step)
            store(y, base + j, f((load(x, base + j) - mv) * av + bv));
    }
}

/// The activation of a fused batch norm + activation, for its backward: the gradient `d` at the
/// output becomes `d * act'(z)` at the normalised value z = (x - mean) * scale + beta, which is
/// recomputed with scale = f32(rstd * gamma) (products in f64, like the CPU twin). Identity
/// (`d`) for BN_NO_ACT. `A` is an `ActK`.
template <typename A> struct BnAct {
    A act;
    const float *rstd, *gamma, *beta;

    /// Per-channel constants (scale, beta) of channel `ch`.
    __device__ __forceinline__ void channel(i64 ch, float &scale, float &shift) const {
        scale = act.kind() < 0 ? 0.0f : (float)((double)rstd[ch] * (double)gamma[ch]);
        shift = act.kind() < 0 ? 0.0f : beta[ch];
    }

    /// d * act'((x - mu) * scale + shift).
    __device__ __forceinline__ float grad(float x, float d, float mu, float scale,
                                          float shift) const {
        return act.kind() < 0 ? d : d * act.df((x - mu) * scale + shift);
    }
};

/// Backward partials: part[(ch * chunks + k) * 2 + {0, 1}] = (sum g, sum g * (x - mean)) with
/// g = ba.grad(x, dy) (= dy without an activation).
template <typename T, typename A>
__device__ void bn_bwd_part(const T *x, const T *dy, const float *mean, BnAct<A> ba, double *part,
                            i64 n, i64 c, i64 s, i64 per_chunk, i64 s_len, i64 s_chunks,
                            i64 chunks) {
    __shared__ double scratch[32];
    for (i64 ch = blockIdx.y; ch < c; ch += gridDim.y) {
        const float muf = load(mean, ch);
        const double mu = (double)muf;
        float sc, sh;
        ba.channel(ch, sc, sh);
        for (i64 k = blockIdx.x; k < chunks; k += gridDim.x) {
            const BnChunk b = bn_chunk(k, n, s, per_chunk, s_len, s_chunks);
            double a0, a1;
            bn_chunk_sum2(x, dy, ch, c, s, b, a0, a1, [=](float v, float d, double &s0, double &s1) {
                const double g = (double)ba.grad(v, d, muf, sc, sh);
                s0 = s0 + g;
                s1 = s1 + ((double)v - mu) * g;
            });
            const double sdy = block_sum(a0, scratch);
            const double sdyx = block_sum(a1, scratch);
            if (threadIdx.x == 0) {
                double *o = part + (ch * chunks + k) * 2;
                o[0] = sdy;
                o[1] = sdyx;
            }
        }
    }
}

/// Per channel: dbeta = sum dy, dgamma = rstd * sum dy (x - mean) (f64), and the constants of
/// dx = k1 * (dy - k2 - (x - mean) * k3): k1 = gamma * rstd (f32 product, like the CPU),
/// k2 = dbeta / M, k3 = dgamma * rstd / M (f64, rounded once).
template <typename T>
__device__ void bn_bwd_finish(const double *part, const T *gamma, const T *rstd, T *dgamma,
                              T *dbeta, float *k1, float *k2, float *k3, i64 c, i64 chunks,
                              double m) {
    GRID_STRIDE(ch, c) {
        double sdy = 0.0, sdyx = 0.0;
        for (i64 k = 0; k < chunks; ++k) {
            sdy += part[(ch * chunks + k) * 2];
            sdyx += part[(ch * chunks + k) * 2 + 1];
        }
        const float r = load(rstd, ch);
        const double dg = sdyx * (double)r;
        store(dbeta, ch, (float)sdy);
        store(dgamma, ch, (float)dg);
        k1[ch] = load(gamma, ch) * r;
        k2[ch] = (float)(sdy / m);
        k3[ch] = (float)(dg * (double)r / m);
    }
}

/// dx = k1[ch] * (g - k2[ch] - (x - mean[ch]) * k3[ch]) over (N, C, S) with g = ba.grad(x, dy)
/// (= dy without an activation); launch and vector paths as bn_apply.
template <typename T, typename A>
__device__ void bn_bwd_dx(const T *x, const T *dy, const float *mean, BnAct<A> ba, const float *k1,
                          const float *k2, const float *k3, T *dx, i64 n, i64 c, i64 s) {
    const i64 planes = n * c;
    const bool vec = s % 4 == 0 && aligned4x(x, dy, dx);
    const i64 s4 = vec ? s / 4 : 0;
    const i64 first = (i64)blockIdx.y * blockDim.x + threadIdx.x;
    const i64 step = (i64)gridDim.y * blockDim.x;
    for (i64 p = blockIdx.x; p < planes; p += gridDim.x) {
        const i64 ch = p % c;
        const acc_t mu = load(mean, ch), a = k1[ch], b = k2[ch], k = k3[ch];
        float sc, sh;
        ba.channel(ch, sc, sh);
        auto dxv = [&](float v, float d) { return a * (ba.grad(v, d, mu, sc, sh) - b - (v - mu) * k); };
        const i64 base = p * s;
        pair_loop(
            first, step, s4,
            [&](i64 j) { return Vec4Pair{load4(x + base, j), load4(dy + base, j)}; },
            [&](i64 j, const Vec4Pair &q) {
                float4 o;
                o.x = dxv(q.v.x, q.d.x);
                o.y = dxv(q.v.y, q.d.y);
                o.z = dxv(q.v.z, q.d.z);
                o.w = dxv(q.v.w, q.d.w);
                store4(dx + base, j, o);
            });
        for (i64 j = s4 * 4 + first; j < s; j += step)
            store(dx, base + j, dxv(load(x, base + j), load(dy, base + j)));
    }
}

HR_EXTERN void bn_stats_finish_f32(const double *part, const float *gamma, float *mean,
                                   float *rstd, float *scale, float *rmean, float *rvar, i64 c,
                                   i64 chunks, double momentum, double eps) {
    bn_stats_finish(part, gamma, mean, rstd, scale, rmean, rvar, c, chunks, momentum, eps);
}
HR_EXTERN void bn_eval_scale_f32(const float *gamma, const float *rvar, float *scale, i64 c,
                                 double eps) {
    bn_eval_scale(gamma, rvar, scale, c, eps);
}
HR_EXTERN void bn_bwd_finish_f32(const double *part, const float *gamma, const float *rstd,
                                 float *dgamma, float *dbeta, float *k1, float *k2, float *k3,
                                 i64 c, i64 chunks, double m) {
    bn_bwd_finish(part, gamma, rstd, dgamma, dbeta, k1, k2, k3, c, chunks, m);
}

/// Entry points of the passes over the activations for storage type `T` (dtype suffix `S`):
/// f32, and bf16 activations (x, y, dy, dx) with f32 parameters, statistics and gradients of
/// gamma / beta (the per-channel finish kernels above serve both). A bf16 value is read as the
/// f32 it represents, so the results equal the f32 kernels' on the same values, with y and dx
/// rounded to bf16 once.
#define BN_ENTRIES(S, T)                                                                           \
    HR_EXTERN void bn_stats_part_##S(const T *x, double *part, i64 n, i64 c, i64 s,                \
                                     i64 per_chunk, i64 s_len, i64 s_chunks, i64 chunks) {         \
        bn_stats_part(x, part, n, c, s, per_chunk, s_len, s_chunks, chunks);                       \
    }                                                                                              \
    HR_EXTERN void bn_apply_##S(const T *x, const float *m, const float *a, const float *b, T *y,  \
                                i64 n, i64 c, i64 s) {                                             \
        bn_apply(x, m, a, b, y, n, c, s, ActK<BN_NO_ACT>{BN_NO_ACT});                              \
    }                                                                                              \
    HR_EXTERN void bn_apply_act_##S(const T *x, const float *m, const float *a, const float *b,    \
                                    T *y, i64 n, i64 c, i64 s, int act) {                          \
        with_act(act, [&](auto k) { bn_apply(x, m, a, b, y, n, c, s, k); });                       \
    }                                                                                              \
    HR_EXTERN void bn_bwd_part_##S(const T *x, const T *dy, const float *mean, double *part,       \
                                   i64 n, i64 c, i64 s, i64 per_chunk, i64 s_len, i64 s_chunks,    \
                                   i64 chunks) {                                                   \
        const BnAct<ActK<BN_NO_ACT>> none{{BN_NO_ACT}, nullptr, nullptr, nullptr};                 \
        bn_bwd_part(x, dy, mean, none, part, n, c, s, per_chunk, s_len, s_chunks, chunks);         \
    }                                                                                              \
    HR_EXTERN void bn_bwd_part_act_##S(const T *x, const T *dy, const float *mean,                 \
                                       const float *rstd, const float *gamma, const float *beta,   \
                                       double *part, i64 n, i64 c, i64 s, i64 per_chunk,           \
                                       i64 s_len, i64 s_chunks, i64 chunks, int act) {             \
        with_act(act, [&](auto k) {                                                                \
            const BnAct<decltype(k)> ba{k, rstd, gamma, beta};                                     \
            bn_bwd_part(x, dy, mean, ba, part, n, c, s, per_chunk, s_len, s_chunks, chunks);       \
        });                                                                                        \
    }                                                                                              \
    HR_EXTERN void bn_bwd_dx_##S(const T *x, const T *dy, const float *mean, const float *k1,      \
                                 const float *k2, const float *k3, T *dx, i64 n, i64 c, i64 s) {   \
        const BnAct<ActK<BN_NO_ACT>> none{{BN_NO_ACT}, nullptr, nullptr, nullptr};                 \
        bn_bwd_dx(x, dy, mean, none, k1, k2, k3, dx, n, c, s);                                     \
    }                                                                                              \
    HR_EXTERN void bn_bwd_dx_act_##S(const T *x, const T *dy, const float *mean,                   \
                                     const float *rstd, const float *gamma, const float *beta,     \
                                     const float *k1, const float *k2, const float *k3, T *dx,     \
                                     i64 n, i64 c, i64 s, int act) {                               \
        with_act(act, [&](auto k) {                                                                \
            const BnAct<decltype(k)> ba{k, rstd, gamma, beta};                                     \
            bn_bwd_dx(x, dy, mean, ba, k1, k2, k3, dx, n, c, s);                                   \
        });                                                                                        \
    }
BN_ENTRIES(f32, float)
BN_ENTRIES(bf16, bf16)
