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

template <typename T> __device__ void adam(T *p, const T *g, T *m, T *v, i64 n, AdamConsts c) {
    GRID_STRIDE(i, n) {
        float pv = load(p, i) * c.decay;
        float gv = load(g, i);
        float mv = c.b1 * load(m, i) + c.one_minus_b1 * gv;
        float vv = c.b2 * load(v, i) + c.one_minus_b2 * gv * gv;
        float denom = sqrtf(vv) / c.bc2_sqrt + c.eps;
        pv = pv - c.step_size * (mv / denom);
        store(p, i, pv);
        store(m, i, mv);
        store(v, i, vv);
    }
}

HR_EXTERN void adam_f32(float *p, const float *g, float *m, float *v, i64 n, AdamConsts c) {
    adam(p, g, m, v, n, c);
}
