// Layout family: strided gather / scatter (permute, slice, pad, concat) and the embedding gather
// and scatter-add. CPU twin: crates/hr-tensor/src/cpu/layout.rs. Data movement has `_f32` and
// `_bf16` entry points (bit-exact copies); the scatter-add is atomicAdd for f32 and a
// deterministic bucketed sum (`embedding_bwd_sorted_bf16`) for bf16.
#include "common.cuh"

/// `y[base + off(i)] = x[i]`: writes `x` into a strided window of `y` (pad_axis, concat).
template <typename T> __device__ void scatter_strided(const T *x, T *y, i64 n, i64 base, Strided s) {
    GRID_STRIDE(i, n) store(y, base + strided_offset(i, s), load(x, i));
}

/// `y[i, j] = x[base + off(i, j)]` (permute, slice); duplicated from reduce.cu so each family
/// is one self-contained module.
template <typename T> __device__ void gather(const T *x, T *y, i64 n, i64 base, Strided s) {
    GRID_STRIDE(i, n) store(y, i, load(x, base + strided_offset(i, s)));
}

/// Rows of `table` (vocab, d) picked by `ids` (validated on the host) -> (n_ids, d).
template <typename T>
__device__ void embedding(const T *table, const u32 *ids, T *y, i64 n_ids, i64 d) {
    GRID_STRIDE(i, n_ids * d) {
        i64 row = i / d, col = i - row * d;
        store(y, i, load(table, (i64)ids[row] * d + col));
    }
}

/// Scatter-add of `dy` (n_ids, d) into `g` (vocab, d), which the host zeroed. Rows that repeat
/// an id are added with atomicAdd (order-dependent rounding: equal to the CPU's in-order sum
/// up to f32 reassociation).
__device__ void embedding_bwd_impl(const float *dy, const u32 *ids, float *g, i64 n_ids, i64 d) {
    GRID_STRIDE(i, n_ids * d) {
        i64 row = i / d, col = i - row * d;
        atomicAdd(g + (i64)ids[row] * d + col, dy[i]);
    }
}

/// Deterministic scatter-add for bf16 storage: `g[v, c]` is the f32 sum, in position order, of
/// `dy[pos, c]` over the positions `order[start[v] .. start[v + 1]]` whose id is `v` (bucketed
/// on the host by a stable counting sort), rounded once; every element of `g` (vocab, d) is
/// written. Same order and arithmetic as the CPU, so the result matches it bit for bit.
template <typename T>
__device__ void embedding_bwd_sorted(const T *dy, const u32 *start, const u32 *order, T *g,
                                     i64 vocab, i64 d) {
    GRID_STRIDE(i, vocab * d) {
        i64 v = i / d, col = i - v * d;
        acc_t acc = 0.0f;
        for (u32 k = start[v]; k < start[v + 1]; ++k) acc += load(dy, (i64)order[k] * d + col);
        store(g, i, acc);
    }
}

/// Data-movement entry points for storage `T` with dtype suffix `S` (bit-exact copies).
#define LAYOUT_ENTRIES(S, T)                                                                       \
    HR_EXTERN void scatter_strided_##S(const T *x, T *y, i64 n, i64 base, Strided s) {             \
        scatter_strided(x, y, n, base, s);                                                         \
    }                                                                                              \
    HR_EXTERN void gather_##S(const T *x, T *y, i64 n, i64 base, Strided s) {                      \
        gather(x, y, n, base, s);                                                                  \
    }                                                                                              \
    HR_EXTERN void embedding_##S(const T *table, const u32 *ids, T *y, i64 n_ids, i64 d) {         \
        embedding(table, ids, y, n_ids, d);                                                        \
    }
LAYOUT_ENTRIES(f32, float)
LAYOUT_ENTRIES(bf16, bf16)
HR_EXTERN void embedding_bwd_f32(const float *dy, const u32 *ids, float *g, i64 n_ids, i64 d) {
    embedding_bwd_impl(dy, ids, g, n_ids, d);
}
HR_EXTERN void embedding_bwd_sorted_bf16(const bf16 *dy, const u32 *start, const u32 *order,
                                         bf16 *g, i64 vocab, i64 d) {
    embedding_bwd_sorted(dy, start, order, g, vocab, d);
}
