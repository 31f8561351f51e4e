// Reduce family: sum_to (sum over broadcast axes) and broadcast_to / strided gathers.
// CPU twin: crates/hr-tensor/src/cpu/reduce.rs (which accumulates in f64; so does sum_to here,
// since its reductions can be long: a bias gradient sums every row of a batch).
#include "common.cuh"

/// Offset of element `r` of a strided view (the reduced elements, or the kept outputs): rank 0
/// and 1 (the common cases once the host has merged contiguous axes) without the divisions of
/// `strided_offset`.
__device__ __forceinline__ i64 reduced_offset(i64 r, const Strided &red) {
    if (red.rank == 0) return 0;
    if (red.rank == 1) return r * red.stride[0];
    return strided_offset(r, red);
}

/// One block per output element: sums the `red_n` input elements addressed by `red` (the
/// reduced axes of the input) starting at the offset that `kept` gives for the output index.
/// For long and contiguous reductions (a mean over H x W); launch: `cfg_rows(n_out, red_n)`.
template <typename T>
__device__ void sum_to(const T *x, T *y, i64 n_out, i64 red_n, Strided kept, Strided red) {
    __shared__ double scratch[32];
    for (i64 o = blockIdx.x; o < n_out; o += gridDim.x) {
        const i64 base = reduced_offset(o, kept);
        double acc = 0.0;
        for (i64 r = threadIdx.x; r < red_n; r += blockDim.x) acc += (double)load(x, base + reduced_offset(r, red));
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) store(y, o, (acc_t)acc);
    }
}

#define SUM_COLS_Y 8

/// Short strided reductions (bias gradients: the rows of a (rows, cols) matrix; a mean over a
/// middle axis): block (32, SUM_COLS_Y); lane x takes output `o = tile * 32 + x` (neighbouring
/// outputs are neighbouring addresses: coalesced), row y sums the reduced elements y,
/// y + SUM_COLS_Y, ...; row 0 adds the SUM_COLS_Y partials in order (deterministic). Grid-stride
/// over tiles of 32 outputs on grid.x.
template <typename T>
__device__ void sum_to_cols(const T *x, T *y, i64 n_out, i64 red_n, Strided kept, Strided red) {
    __shared__ double part[SUM_COLS_Y][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (i64 o0 = (i64)blockIdx.x * 32; o0 < n_out; o0 += (i64)gridDim.x * 32) {
        const i64 o = o0 + tx;
        double acc = 0.0;
        if (o < n_out) {
            const i64 base = reduced_offset(o, kept);
            for (i64 r = ty; r < red_n; r += SUM_COLS_Y) acc += (double)load(x, base + reduced_offset(r, red));
        }
        part[ty][tx] = acc;
        __syncthreads();
        if (ty == 0 && o < n_out) {
            double s = 0.0;
            for (int k = 0; k < SUM_COLS_Y; ++k) s += part[k][tx];
            store(y, o, (acc_t)s);
        }
        __syncthreads();
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
    HR_EXTERN void sum_to_cols_##S(const T *x, T *y, i64 n_out, i64 red_n, Strided kept,           \
                                   Strided red) {                                                  \
        sum_to_cols(x, y, n_out, red_n, kept, red);                                                \
    }                                                                                              \
    HR_EXTERN void gather_strided_##S(const T *x, T *y, i64 n, i64 base, Strided s) {              \
        gather_strided(x, y, n, base, s);                                                          \
    }
REDUCE_ENTRIES(f32, float)
REDUCE_ENTRIES(bf16, bf16)
