// Optimiser family: the fused Adam/AdamW update. CPU twin: crates/hr-tensor/src/cpu/optim.rs.
// The per-step constants are computed once on the host in f64 (exactly like the CPU) and
// passed rounded to f32; the update runs in PyTorch's order of operations, so with
// `--fmad=false` it matches the CPU bit for bit.
#include "common.cuh"

struct AdamConsts {
    float decay;         // 1 - lr * weight_decay
    float b1;            // beta1
    float one_minus_b1;  // 1 - beta1
    float b2;            // beta2
    float one_minus_b2;  // 1 - beta2
    float step_size;     // lr / (1 - beta1^t)
    float bc2_sqrt;      // sqrt(1 - beta2^t)
    float eps;           // epsilon
};

/// One element of the update (shared by both entry points, so they agree bit for bit).
__device__ __forceinline__ void adam_elem(float &p, float g, float &m, float &v, const AdamConsts &c) {
    float pv = p * c.decay;
    float mv = c.b1 * m + c.one_minus_b1 * g;
    float vv = c.b2 * v + c.one_minus_b2 * g * g;
    float denom = sqrtf(vv) / c.bc2_sqrt + c.eps;
    p = pv - c.step_size * (mv / denom);
    m = mv;
    v = vv;
}

HR_EXTERN void adam_f32(float *p, const float *g, float *m, float *v, i64 n, AdamConsts c) {
    GRID_STRIDE(i, n) {
        float pv = p[i], mv = m[i], vv = v[i];
        adam_elem(pv, g[i], mv, vv, c);
        p[i] = pv;
        m[i] = mv;
        v[i] = vv;
    }
}

/// One tensor of a multi-tensor update (mirrors `AdamRow` in
/// crates/hr-tensor/src/cuda/backend/optim.rs): device addresses of the parameter, gradient
/// and moments (f32), the element count, and the index of the tensor's first chunk.
struct AdamRow {
    u64 p, g, m, v;
    i64 n;
    i64 first;
};

/// Multi-tensor Adam: one launch updates every tensor of `rows` (`count` rows, sorted by
/// `first`, each tensor cut into chunks of `chunk` elements, a multiple of 4; `chunks` in
/// all). Block b takes chunks b, b + gridDim.x, ...; a chunk's row is found by binary search.
/// float4 accesses when the row's four buffers are 16-byte aligned.
HR_EXTERN void adam_multi_f32(const AdamRow *rows, int count, i64 chunks, i64 chunk, AdamConsts c) {
    for (i64 ch = blockIdx.x; ch < chunks; ch += gridDim.x) {
        int lo = 0, hi = count - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (rows[mid].first <= ch) lo = mid; else hi = mid - 1;
        }
        const AdamRow r = rows[lo];
        float *p = (float *)r.p;
        const float *g = (const float *)r.g;
        float *m = (float *)r.m;
        float *v = (float *)r.v;
        const i64 start = (ch - r.first) * chunk;
        const i64 end = start + chunk < r.n ? start + chunk : r.n;
        const bool vec = aligned16(p, g, m, v);
        const i64 end4 = vec ? start + (end - start) / 4 * 4 : start;
        for (i64 i = start + 4 * (i64)threadIdx.x; i < end4; i += 4 * (i64)blockDim.x) {
            float4 pv = *(float4 *)(p + i), mv = *(float4 *)(m + i), vv = *(float4 *)(v + i);
            const float4 gv = *(const float4 *)(g + i);
            adam_elem(pv.x, gv.x, mv.x, vv.x, c);
            adam_elem(pv.y, gv.y, mv.y, vv.y, c);
            adam_elem(pv.z, gv.z, mv.z, vv.z, c);
            adam_elem(pv.w, gv.w, mv.w, vv.w, c);
            *(float4 *)(p + i) = pv;
            *(float4 *)(m + i) = mv;
            *(float4 *)(v + i) = vv;
        }
        for (i64 i = end4 + threadIdx.x; i < end; i += blockDim.x) {
            float pv = p[i], mv = m[i], vv = v[i];
            adam_elem(pv, g[i], mv, vv, c);
            p[i] = pv;
            m[i] = mv;
            v[i] = vv;
        }
    }
}
