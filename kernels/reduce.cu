// Reduce family: sum_to (sum over broadcast axes) and broadcast_to / strided gathers.
// CPU twin: crates/hr-tensor/src/cpu/reduce.rs (which accumulates in f64; so does sum_to here,
// since its reductions can be long: a bias gradient sums every row of a batch).
#include "common.cuh"

/// One block per output element: sums the `red_n` input elements addressed by `red` (the
/// reduced axes of the input) starting at the offset that `kept` gives for the output index.
template <typename T>
__device__ void sum_to(const T *x, T *y, i64 n_out, i64 red_n, Strided kept, Strided red) {
    __shared__ double scratch[32];
    for (i64 o = blockIdx.x; o < n_out; o += gridDim.x) {
        const i64 base = strided_offset(o, kept);
        double acc = 0.0;
        for (i64 r = threadIdx.x; r < red_n; r += blockDim.x) acc += (double)load(x, base + strided_offset(r, red));
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) store(y, o, (acc_t)acc);
    }
}

/// `y[i] = x[base + off(i)]` for a strided view of `x` (broadcast_to, permute, slice).
template <typename T> __device__ void gather_strided(const T *x, T *y, i64 n, i64 base, Strided s) {
    GRID_STRIDE(i, n) store(y, i, load(x, base + strided_offset(i, s)));
}

/// Entry points for storage `T` with dtype suffix `S`: bf16 sums accumulate in f64 like f32,
/// then round to f32 and to bf16 at the store (as the CPU does); the gather is a bit-exact copy.
#define REDUCE_ENTRIES(S, T)                                                                       \
    HR_EXTERN void sum_to_##S(const T *x, T *y, i64 n_out, i64 red_n, Strided kept, Strided red) { \
        sum_to(x, y, n_out, red_n, kept, red);                                                     \
    }                                                                                              \
    HR_EXTERN void gather_strided_##S(const T *x, T *y, i64 n, i64 base, Strided s) {              \
        gather_strided(x, y, n, base, s);                                                          \
    }
REDUCE_ENTRIES(f32, float)
REDUCE_ENTRIES(bf16, bf16)
