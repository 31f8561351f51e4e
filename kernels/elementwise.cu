// Elementwise family: activations (forward and backward), broadcasting binary arithmetic,
// affine, axpy and dropout. CPU twin: crates/hr-tensor/src/cpu/elementwise.rs.
#include "common.cuh"

// Activations: `unary_f` / `unary_df` and the U_* codes live in common.cuh (batch norm fuses
// them too).

template <typename T> __device__ void unary_fwd(const T *x, T *y, i64 n, int kind) {
    GRID_STRIDE(i, n) store(y, i, unary_f(kind, load(x, i)));
}

template <typename T> __device__ void unary_bwd(const T *x, const T *dy, T *dx, i64 n, int kind) {
    GRID_STRIDE(i, n) store(dx, i, load(dy, i) * unary_df(kind, load(x, i)));
}

// Binary codes (match `binary_code` in backend.rs).
#define B_ADD 0
#define B_SUB 1
#define B_MUL 2
#define B_DIV 3

__device__ __forceinline__ float binary_f(int kind, float a, float b) {
    switch (kind) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    default: return a / b;
    }
}

/// Same-shape binary op (the common case: no index arithmetic).
template <typename T> __device__ void binary_same(const T *a, const T *b, T *c, i64 n, int kind) {
    GRID_STRIDE(i, n) store(c, i, binary_f(kind, load(a, i), load(b, i)));
}

/// Broadcasting binary op: `c[i] = a[off_a(i)] op b[off_b(i)]`.
template <typename T>
__device__ void binary_bcast(const T *a, const T *b, T *c, i64 n, int kind, Broadcast2 g) {
    GRID_STRIDE(i, n) {
        i64 r = i, oa = 0, ob = 0;
        for (int d = g.rank - 1; d >= 0; --d) {
            i64 co = r % g.shape[d];
            r /= g.shape[d];
            oa += co * g.stride_a[d];
            ob += co * g.stride_b[d];
        }
        store(c, i, binary_f(kind, load(a, oa), load(b, ob)));
    }
}

template <typename T> __device__ void affine(const T *x, T *y, i64 n, float mul, float add) {
    GRID_STRIDE(i, n) store(y, i, load(x, i) * mul + add);
}

template <typename T> __device__ void axpy(T *y, const T *x, i64 n, float alpha) {
    GRID_STRIDE(i, n) store(y, i, load(y, i) + alpha * load(x, i));
}

/// Inverted dropout: `scale[i] = counter_uniform(seed, i) < p ? 0 : keep`, `y = x * scale`.
template <typename T>
__device__ void dropout(const T *x, T *y, T *scale, i64 n, double p, u64 seed, float keep) {
    GRID_STRIDE(i, n) {
        float s = counter_uniform(seed, (u64)i) < p ? 0.0f : keep;
        store(scale, i, s);
        store(y, i, load(x, i) * s);
    }
}

/// Entry points of the ops that have a bf16 variant, for storage `T` with dtype suffix `S`
/// (bf16 uses these scalar kernels; f32 also has the float4 `_v4` variants below).
#define ELEMENTWISE_ENTRIES(S, T)                                                                  \
    HR_EXTERN void unary_fwd_##S(const T *x, T *y, i64 n, int kind) { unary_fwd(x, y, n, kind); }  \
    HR_EXTERN void unary_bwd_##S(const T *x, const T *dy, T *dx, i64 n, int kind) {                \
        unary_bwd(x, dy, dx, n, kind);                                                             \
    }                                                                                              \
    HR_EXTERN void binary_same_##S(const T *a, const T *b, T *c, i64 n, int kind) {                \
        binary_same(a, b, c, n, kind);                                                             \
    }                                                                                              \
    HR_EXTERN void binary_bcast_##S(const T *a, const T *b, T *c, i64 n, int kind, Broadcast2 g) { \
        binary_bcast(a, b, c, n, kind, g);                                                         \
    }                                                                                              \
    HR_EXTERN void affine_##S(const T *x, T *y, i64 n, float mul, float add) {                     \
        affine(x, y, n, mul, add);                                                                 \
    }                                                                                              \
    HR_EXTERN void axpy_##S(T *y, const T *x, i64 n, float alpha) { axpy(y, x, n, alpha); }        \
    HR_EXTERN void dropout_##S(const T *x, T *y, T *scale, i64 n, double p, u64 seed, float keep) { \
        dropout(x, y, scale, n, p, seed, keep);                                                    \
    }
ELEMENTWISE_ENTRIES(f32, float)
ELEMENTWISE_ENTRIES(bf16, bf16)

// ---- f32 vectorised variants (16-byte loads/stores; same per-element arithmetic) ----------

HR_EXTERN void unary_fwd_v4_f32(const float *x, float *y, i64 n, int kind) {
    const float4 *x4 = (const float4 *)x;
    float4 *y4 = (float4 *)y;
    vec4_loop(
        n, aligned16(x, y),
        [&](i64 i4) {
            float4 v = x4[i4];
            v.x = unary_f(kind, v.x);
            v.y = unary_f(kind, v.y);
            v.z = unary_f(kind, v.z);
            v.w = unary_f(kind, v.w);
            y4[i4] = v;
        },
        [&](i64 j) { y[j] = unary_f(kind, x[j]); });
}

HR_EXTERN void unary_bwd_v4_f32(const float *x, const float *dy, float *dx, i64 n, int kind) {
    const float4 *x4 = (const float4 *)x, *g4 = (const float4 *)dy;
    float4 *d4 = (float4 *)dx;
    vec4_loop(
        n, aligned16(x, dy, dx),
        [&](i64 i4) {
            float4 v = x4[i4], g = g4[i4];
            g.x = g.x * unary_df(kind, v.x);
            g.y = g.y * unary_df(kind, v.y);
            g.z = g.z * unary_df(kind, v.z);
            g.w = g.w * unary_df(kind, v.w);
            d4[i4] = g;
        },
        [&](i64 j) { dx[j] = dy[j] * unary_df(kind, x[j]); });
}

HR_EXTERN void binary_same_v4_f32(const float *a, const float *b, float *c, i64 n, int kind) {
    const float4 *a4 = (const float4 *)a, *b4 = (const float4 *)b;
    float4 *c4 = (float4 *)c;
    vec4_loop(
        n, aligned16(a, b, c),
        [&](i64 i4) {
            float4 u = a4[i4], v = b4[i4];
            u.x = binary_f(kind, u.x, v.x);
            u.y = binary_f(kind, u.y, v.y);
            u.z = binary_f(kind, u.z, v.z);
            u.w = binary_f(kind, u.w, v.w);
            c4[i4] = u;
        },
        [&](i64 j) { c[j] = binary_f(kind, a[j], b[j]); });
}

HR_EXTERN void affine_v4_f32(const float *x, float *y, i64 n, float mul, float add) {
    const float4 *x4 = (const float4 *)x;
    float4 *y4 = (float4 *)y;
    vec4_loop(
        n, aligned16(x, y),
        [&](i64 i4) {
            float4 v = x4[i4];
            v.x = v.x * mul + add;
            v.y = v.y * mul + add;
            v.z = v.z * mul + add;
            v.w = v.w * mul + add;
            y4[i4] = v;
        },
        [&](i64 j) { y[j] = x[j] * mul + add; });
}

HR_EXTERN void axpy_v4_f32(float *y, const float *x, i64 n, float alpha) {
    const float4 *x4 = (const float4 *)x;
    float4 *y4 = (float4 *)y;
    vec4_loop(
        n, aligned16(x, y),
        [&](i64 i4) {
            float4 u = y4[i4], v = x4[i4];
            u.x = u.x + alpha * v.x;
            u.y = u.y + alpha * v.y;
            u.z = u.z + alpha * v.z;
            u.w = u.w + alpha * v.w;
            y4[i4] = u;
        },
        [&](i64 j) { y[j] = y[j] + alpha * x[j]; });
}

/// Storage conversion `y[i] = (To) x[i]` through the f32 compute type (bf16 rounds to nearest
/// even): the operand casts of bf16 GEMMs under autocast. 4-element accesses (16-byte f32,
/// 8-byte bf16) when both buffers allow them; launch with about n/4 threads.
template <typename From, typename To> __device__ void cast(const From *x, To *y, i64 n) {
    vec4_loop(
        n, aligned4x(x, x) && aligned4x(y, y), [&](i64 i4) { store4(y, i4, load4(x, i4)); },
        [&](i64 j) { store(y, j, load(x, j)); });
}
HR_EXTERN void cast_f32_bf16(const float *x, bf16 *y, i64 n) { cast(x, y, n); }
HR_EXTERN void cast_bf16_f32(const bf16 *x, float *y, i64 n) { cast(x, y, n); }
