// Runs kernels/reduce.cu's sum_to (block per output) and sum_to_cols (32 outputs per block)
// on the CPU through emu.h and compares both with an f64 reference on the reduction shapes
// the host produces (bias gradients, a mean over H x W, over one middle axis, two separate
// reduced axes, everything), with full and tiny (grid-stride) grids. The Strided views are
// built like `Strided::new` in crates/hr-tensor/src/cuda/launch.rs (size-1 axes dropped,
// contiguous axes merged). Prints ok/FAIL lines and "N failures".
#include "emu.h"
#include <algorithm>
#include <cstdio>
#include <string>
#include "../../kernels/reduce.cu"

static uint64_t rs = 0x2545f4914f6cdd1dull;
static float rnd() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }
static int fails = 0;

/// `Strided::new`: drop size-1 axes, merge axes contiguous in `stride`.
static Strided make(const std::vector<i64> &shape, const std::vector<i64> &stride) {
    std::vector<i64> sh, st;
    for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] == 1) continue;
        if (!sh.empty() && st.back() == shape[d] * stride[d]) { sh.back() *= shape[d]; st.back() = stride[d]; continue; }
        sh.push_back(shape[d]); st.push_back(stride[d]);
    }
    Strided s{};
    s.rank = (int)sh.size();
    for (size_t d = 0; d < sh.size(); ++d) { s.shape[d] = sh[d]; s.stride[d] = st[d]; }
    return s;
}

/// Sums `in_shape` down to `out_shape` (1 on reduced axes) with both kernels.
static void run(const std::string &name, const std::vector<i64> &in, const std::vector<i64> &out, bool small_grid) {
    const size_t r = in.size();
    std::vector<i64> st(r, 1);
    for (int d = (int)r - 2; d >= 0; --d) st[d] = st[d + 1] * in[d + 1];
    std::vector<i64> red_sh, red_st;
    i64 n_out = 1, red_n = 1, n_in = 1;
    for (size_t d = 0; d < r; ++d) {
        n_in *= in[d]; n_out *= out[d];
        if (out[d] != in[d]) { red_sh.push_back(in[d]); red_st.push_back(st[d]); red_n *= in[d]; }
    }
    Strided kept = make(out, st), red = make(red_sh, red_st);
    std::vector<float> x(n_in);
    for (auto &v : x) v = rnd();
    // Reference: every input element adds into its output (row-major over `out`).
    std::vector<double> ref(n_out, 0.0);
    for (i64 i = 0; i < n_in; ++i) {
        i64 rem = i, o = 0, mul = 1;
        for (int d = (int)r - 1; d >= 0; --d) {
            i64 c = rem % in[d]; rem /= in[d];
            if (out[d] != 1) o += c * mul;
            mul *= out[d];
        }
        ref[o] += x[i];
    }
    for (int k = 0; k < 2; ++k) {
        std::vector<float> y(n_out, NAN);
        const float *xp = x.data();
        float *yp = y.data();
        if (k == 0) {
            unsigned threads = (unsigned)std::clamp<i64>((red_n + 31) / 32, 1, 8) * 32;
            unsigned grid = (unsigned)std::clamp<i64>(n_out, 1, small_grid ? 2 : 1 << 18);
            emu_launch({grid, 1, 1}, {threads, 1, 1}, [&] { sum_to_f32(xp, yp, n_out, red_n, kept, red); });
        } else {
            unsigned grid = (unsigned)std::clamp<i64>((n_out + 31) / 32, 1, small_grid ? 1 : 1 << 18);
            emu_launch({grid, 1, 1}, {32, SUM_COLS_Y, 1}, [&] { sum_to_cols_f32(xp, yp, n_out, red_n, kept, red); });
        }
        double scale = 0, err = 0; size_t worst = 0; bool nan = false;
        for (i64 i = 0; i < n_out; ++i) {
            if (std::isnan(y[i])) { nan = true; worst = i; break; }
            scale = std::max(scale, std::fabs(ref[i]));
            if (std::fabs(y[i] - ref[i]) > err) { err = std::fabs(y[i] - ref[i]); worst = i; }
        }
        // f64 sums rounded once to f32: within half an ulp of the output's scale.
        bool ok = !nan && err <= 1e-6 * std::max(scale, 1.0);
        if (!ok) ++fails;
        printf("%s %s %s%s (kept rank %d, red rank %d): err %.2e (emu %g ref %g)%s\n", ok ? "ok" : "FAIL",
               k == 0 ? "sum_to" : "sum_to_cols", name.c_str(), small_grid ? " small grid" : "", kept.rank,
               red.rank, err, y[worst], ref[worst], nan ? " NaN" : "");
    }
}

int main() {
    for (bool small : {false, true}) {
        run("bias grad (37, 45) -> (1, 45)", {37, 45}, {1, 45}, small);
        run("bias grad (3, 11, 70) -> (1, 1, 70)", {3, 11, 70}, {1, 1, 70}, small);
        run("SE mean (3, 5, 7, 11) -> (3, 5, 1, 1)", {3, 5, 7, 11}, {3, 5, 1, 1}, small);
        run("middle axis (2, 3, 4, 5) -> (2, 3, 1, 5)", {2, 3, 4, 5}, {2, 3, 1, 5}, small);
        run("two axes (4, 3, 5) -> (1, 3, 1)", {4, 3, 5}, {1, 3, 1}, small);
        run("all (7, 9) -> (1, 1)", {7, 9}, {1, 1}, small);
        run("none (5, 6) -> (5, 6)", {5, 6}, {5, 6}, small);
        run("long column (1000, 3) -> (1, 3)", {1000, 3}, {1, 3}, small);
        run("outputs > 32 (2, 3, 97) -> (1, 3, 97)", {2, 3, 97}, {1, 3, 97}, small);
    }
    printf("%d failures\n", fails);
    return fails != 0;
}
