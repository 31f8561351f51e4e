// Checks the `_bf16` entry points of kernels/elementwise.cu (unary fwd/bwd, binary same-shape
// and broadcast, affine), kernels/softmax.cu (warp and block softmax with a bf16 mask,
// softmax_bwd), kernels/layer_norm.cu (layer norm with f32 statistics, its backward), the bf16
// axpy and dropout of elementwise.cu, kernels/layout.cu (strided gather / scatter, embedding:
// bit-exact copies; the deterministic bucketed embedding backward: bit-exact against the
// CPU's in-order f32 sum) and kernels/reduce.cu (sum_to: one ulp; strided gather: bit-exact)
// on the CPU emulator against a plain f64 reference rounded to bf16 (crates/hr-tensor/src/cpu is the
// f32 twin). Inputs are bf16 values; an output passes within one bf16 ulp of the rounded
// reference (2^-7 relative to its power of two, i.e. 2^-8 .. 2^-7 of the value, plus 1e-6 of
// the tensor's largest magnitude for entries that cancel to ~0); f32 statistics within 1e-5. Odd sizes, tiny grids (grid-stride loops), the
// launch shapes of crates/hr-tensor/src/cuda/backend.rs.
#include "emu.h"
#include <algorithm>
#include <cstdio>
#include <functional>
#include <atomic>
/// layout.cu's f32 scatter-add (not checked here) needs atomicAdd to compile.
inline float atomicAdd(float *p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
#include "../../kernels/elementwise.cu"
#include "../../kernels/layout.cu"
#include "../../kernels/layer_norm.cu"
#include "../../kernels/reduce.cu"
#include "../../kernels/softmax.cu"

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static double rnd() {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (double)(rs >> 11) * (1.0 / 9007199254740992.0);
}
static int fails = 0;

/// `n` bf16 values uniform in [lo, hi).
static std::vector<bf16> randb(size_t n, double lo, double hi) {
    std::vector<bf16> v(n);
    for (auto &x : v) x = f32_to_bf16((float)(lo + (hi - lo) * rnd()));
    return v;
}
static double val(bf16 v) { return (double)bf16_to_f32(v); }
static std::vector<double> vals(const std::vector<bf16> &v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = val(v[i]);
    return r;
}
/// NaN-poisoned output of `n` elements (an unwritten entry fails).
static std::vector<bf16> outb(size_t n) { return std::vector<bf16>(n, bf16{0x7fc0}); }

/// bf16 output against the f64 reference rounded to bf16: within one ulp (see the header).
static void cmp(const char *what, const std::vector<bf16> &g, const std::vector<double> &r) {
    double scale = 0, worst = 0;
    size_t wi = 0;
    bool bad = false;
    for (double x : r) scale = std::max(scale, std::fabs(x));
    for (size_t i = 0; i < r.size(); ++i) {
        const double want = val(f32_to_bf16((float)r[i])), got = val(g[i]);
        if (std::isnan(got) || std::isnan(want)) {
            bad = bad || std::isnan(got) != std::isnan(want);
            continue;
        }
        const double ulp = want == 0.0 ? 0.0 : std::ldexp(1.0, std::ilogb(want) - 7);
        const double err = std::fabs(got - want) / (ulp + 1e-6 * scale + 1e-30);
        if (err > worst) { worst = err; wi = i; }
    }
    const bool ok = !bad && worst <= 1.0;
    fails += !ok;
    printf("%s %s: worst %.2f ulp at %zu (got %g ref %g)%s\n", ok ? "ok" : "FAIL",
           what, worst, wi, r.empty() ? 0.0 : val(g[wi]), r.empty() ? 0.0 : r[wi],
           bad ? " NaN mismatch" : "");
}

/// f32 output (statistics) against the f64 reference, relative 1e-5 of the largest magnitude.
static void cmp_f32(const char *what, const std::vector<float> &g, const std::vector<double> &r) {
    double scale = 0, err = 0;
    for (size_t i = 0; i < r.size(); ++i) {
        scale = std::max(scale, std::fabs(r[i]));
        err = std::max(err, std::isnan(g[i]) ? INFINITY : std::fabs(g[i] - r[i]));
    }
    const bool ok = err <= 1e-5 * std::max(scale, 1e-30);
    fails += !ok;
    printf("%s %s: rel %.2e\n", ok ? "ok" : "FAIL", what, scale > 0 ? err / scale : err);
}

static double ref_unary(int kind, double x) {
    switch (kind) {
    case U_RELU: return std::max(x, 0.0);
    case U_GELU: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case U_HARDSWISH: return x * std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case U_SIGMOID: return 1.0 / (1.0 + std::exp(-x));
    case U_TANH: return std::tanh(x);
    case U_EXP: return std::exp(x);
    case U_LOG: return std::log(x);
    default: return std::sqrt(x);
    }
}

static double ref_dunary(int kind, double x) {
    switch (kind) {
    case U_RELU: return x > 0 ? 1.0 : 0.0;
    case U_GELU: return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    case U_HARDSWISH: return x < -3 ? 0.0 : x > 3 ? 1.0 : (2.0 * x + 3.0) / 6.0;
    case U_SIGMOID: { double s = 1.0 / (1.0 + std::exp(-x)); return s * (1.0 - s); }
    case U_TANH: { double t = std::tanh(x); return 1.0 - t * t; }
    case U_EXP: return std::exp(x);
    case U_LOG: return 1.0 / x;
    default: return 0.5 / std::sqrt(x);
    }
}

static double ref_binary(int kind, double a, double b) {
    return kind == B_ADD ? a + b : kind == B_SUB ? a - b : kind == B_MUL ? a * b : a / b;
}

static void check_unary_affine() {
    const char *names[] = {"relu", "gelu", "hardswish", "sigmoid", "tanh", "exp", "log", "sqrt"};
    for (i64 n : {1, 37, 1000}) {
        for (int kind = 0; kind < 8; ++kind) {
            const bool pos = kind == U_LOG || kind == U_SQRT;
            auto x = pos ? randb(n, 0.05, 4.0) : randb(n, -5.0, 5.0);
            auto dy = randb(n, -1.0, 1.0);
            auto y = outb(n), dx = outb(n);
            emu_launch({2, 1, 1}, {64, 1, 1}, [&] { unary_fwd_bf16(x.data(), y.data(), n, kind); });
            emu_launch({2, 1, 1}, {64, 1, 1}, [&] { unary_bwd_bf16(x.data(), dy.data(), dx.data(), n, kind); });
            std::vector<double> ry(n), rd(n);
            for (i64 i = 0; i < n; ++i) {
                ry[i] = ref_unary(kind, val(x[i]));
                rd[i] = val(dy[i]) * ref_dunary(kind, val(x[i]));
            }
            char what[64];
            snprintf(what, sizeof what, "unary %s n=%lld", names[kind], (long long)n);
            cmp(what, y, ry);
            snprintf(what, sizeof what, "unary_bwd %s n=%lld", names[kind], (long long)n);
            cmp(what, dx, rd);
        }
        auto x = randb(n, -3.0, 3.0);
        auto y = outb(n);
        emu_launch({1, 1, 1}, {64, 1, 1}, [&] { affine_bf16(x.data(), y.data(), n, 0.37f, -1.25f); });
        std::vector<double> r(n);
        for (i64 i = 0; i < n; ++i) r[i] = (double)(float)(val(x[i]) * (double)0.37f) + (double)-1.25f;
        char what[64];
        snprintf(what, sizeof what, "affine n=%lld", (long long)n);
        cmp(what, y, r);
    }
}

/// Row-major broadcast strides of `in` (same rank as `out`; 0 where the size is 1).
static std::vector<i64> bstrides(const std::vector<i64> &in, const std::vector<i64> &out) {
    std::vector<i64> s(in.size());
    i64 acc = 1;
    for (int d = (int)in.size() - 1; d >= 0; --d) {
        s[d] = in[d] == out[d] ? acc : 0;
        acc *= in[d];
    }
    return s;
}

static i64 prod(const std::vector<i64> &s) {
    i64 p = 1;
    for (i64 v : s) p *= v;
    return p;
}

static void check_binary() {
    const std::vector<std::vector<i64>> shapes[] = {
        {{7}, {7}, {7}}, {{3, 5}, {3, 5}, {3, 5}}, {{3, 1, 5}, {1, 4, 5}, {3, 4, 5}},
        {{2, 3, 33}, {1, 1, 33}, {2, 3, 33}}, {{5, 1}, {1, 9}, {5, 9}}};
    const char *names[] = {"add", "sub", "mul", "div"};
    for (const auto &sh : shapes) {
        const auto &sa = sh[0], &sb = sh[1], &so = sh[2];
        const i64 n = prod(so);
        auto a = randb(prod(sa), -2.0, 2.0), b = randb(prod(sb), 0.5, 2.5);
        Broadcast2 g{};
        g.rank = (int)so.size();
        auto ta = bstrides(sa, so), tb = bstrides(sb, so);
        for (int d = 0; d < g.rank; ++d) {
            g.shape[d] = so[d];
            g.stride_a[d] = ta[d];
            g.stride_b[d] = tb[d];
        }
        const bool same = sa == so && sb == so;
        for (int kind = 0; kind < 4; ++kind) {
            auto c = outb(n);
            emu_launch({2, 1, 1}, {32, 1, 1}, [&] {
                if (same) binary_same_bf16(a.data(), b.data(), c.data(), n, kind);
                else binary_bcast_bf16(a.data(), b.data(), c.data(), n, kind, g);
            });
            std::vector<double> r(n);
            for (i64 i = 0; i < n; ++i) {
                i64 rem = i, oa = 0, ob = 0;
                for (int d = g.rank - 1; d >= 0; --d) {
                    const i64 co = rem % so[d];
                    rem /= so[d];
                    oa += co * ta[d];
                    ob += co * tb[d];
                }
                r[i] = ref_binary(kind, val(a[oa]), val(b[ob]));
            }
            char what[80];
            snprintf(what, sizeof what, "binary_%s %s n=%lld", same ? "same" : "bcast", names[kind], (long long)n);
            cmp(what, c, r);
        }
    }
}

/// Softmax of rows of `k` with mask row r / per (nonzero = keep), f64.
static std::vector<double> ref_softmax(const std::vector<double> &x, const std::vector<double> *m, i64 k, i64 per) {
    std::vector<double> y(x.size(), 0.0);
    for (size_t r = 0; r * k < x.size(); ++r) {
        auto keep = [&](i64 j) { return !m || (*m)[(r / per) * k + j] != 0.0; };
        double mx = -INFINITY, s = 0;
        for (i64 j = 0; j < k; ++j) if (keep(j)) mx = std::max(mx, x[r * k + j]);
        if (mx == -INFINITY) continue;
        for (i64 j = 0; j < k; ++j) if (keep(j)) s += std::exp(x[r * k + j] - mx);
        for (i64 j = 0; j < k; ++j) y[r * k + j] = keep(j) ? std::exp(x[r * k + j] - mx) / s : 0.0;
    }
    return y;
}

/// The bf16 softmax kernel and launch of the host (`softmax_kernel` in backend.rs).
static void launch_softmax(const bf16 *x, const bf16 *m, int has, bf16 *y, i64 rows, i64 k, i64 per) {
    const unsigned warp_blocks = (unsigned)((rows + 3) / 4);
    const dim3 wg{warp_blocks, 1, 1}, wb{128, 1, 1};
    switch ((k + 31) / 32) {
    case 0: case 1: emu_launch(wg, wb, [&] { softmax_warp1_bf16(x, m, has, y, rows, k, per); }); return;
    case 2: emu_launch(wg, wb, [&] { softmax_warp2_bf16(x, m, has, y, rows, k, per); }); return;
    case 3: case 4: emu_launch(wg, wb, [&] { softmax_warp4_bf16(x, m, has, y, rows, k, per); }); return;
    default: break;
    }
    const unsigned threads = (unsigned)std::min<i64>(std::max<i64>((k + 31) / 32, 1), 8) * 32;
    emu_launch({(unsigned)std::min<i64>(rows, 2), 1, 1}, {threads, 1, 1},
               [&] { softmax_bf16(x, m, has, y, rows, k, per); });
}

static void check_softmax() {
    const i64 cases[][3] = {{1, 1, 1}, {2, 3, 7}, {2, 3, 33}, {3, 2, 97}, {2, 2, 1031}};
    for (const auto &c : cases) {
        const i64 b = c[0], r = c[1], k = c[2], rows = b * r, n = rows * k;
        auto x = randb(n, -6.0, 6.0), dy = randb(n, -1.0, 1.0);
        std::vector<bf16> m(b * k);
        for (i64 i = 0; i < b * k; ++i) m[i] = f32_to_bf16(rnd() < 0.7 ? 1.0f : 0.0f);
        m[0] = f32_to_bf16(1.0f);
        if (b > 1) for (i64 j = 0; j < k; ++j) m[(b - 1) * k + j] = f32_to_bf16(0.0f);
        const auto xv = vals(x), mv = vals(m);
        char what[80];
        auto y = outb(n), ym = outb(n), dx = outb(n);
        launch_softmax(x.data(), x.data(), 0, y.data(), rows, k, 1);
        snprintf(what, sizeof what, "softmax (%lld, %lld, %lld)", (long long)b, (long long)r, (long long)k);
        cmp(what, y, ref_softmax(xv, nullptr, k, 1));
        launch_softmax(x.data(), m.data(), 1, ym.data(), rows, k, r);
        snprintf(what, sizeof what, "softmax masked (%lld, %lld, %lld)", (long long)b, (long long)r, (long long)k);
        cmp(what, ym, ref_softmax(xv, &mv, k, r));
        const unsigned threads = (unsigned)std::min<i64>((k + 31) / 32, 8) * 32;
        emu_launch({2, 1, 1}, {threads, 1, 1}, [&] { softmax_bwd_bf16(ym.data(), dy.data(), dx.data(), rows, k); });
        std::vector<double> rd(n);
        for (i64 row = 0; row < rows; ++row) {
            double s = 0;
            for (i64 j = 0; j < k; ++j) s += val(ym[row * k + j]) * val(dy[row * k + j]);
            for (i64 j = 0; j < k; ++j) rd[row * k + j] = val(ym[row * k + j]) * (val(dy[row * k + j]) - s);
        }
        snprintf(what, sizeof what, "softmax_bwd (%lld, %lld, %lld)", (long long)b, (long long)r, (long long)k);
        cmp(what, dx, rd);
    }
}

static void check_layer_norm() {
    const i64 cases[][2] = {{1, 1}, {15, 7}, {9, 65}, {3, 257}};
    for (const auto &c : cases) {
        const i64 rows = c[0], d = c[1], n = rows * d;
        const double eps = 1e-5;
        auto x = randb(n, -2.0, 3.0), g = randb(d, 0.5, 1.5), b = randb(d, -1.0, 1.0), dy = randb(n, -1.0, 1.0);
        auto y = outb(n), dx = outb(n), dg = outb(d), db = outb(d);
        std::vector<float> mean(rows, NAN), rstd(rows, NAN);
        const unsigned threads = (unsigned)std::min<i64>((d + 31) / 32, 8) * 32;
        const unsigned grid = (unsigned)std::min<i64>(rows, 3);
        emu_launch({grid, 1, 1}, {threads, 1, 1}, [&] {
            layer_norm_bf16(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, d, eps);
        });
        emu_launch({grid, 1, 1}, {threads, 1, 1}, [&] {
            layer_norm_bwd_dx_bf16(x.data(), g.data(), mean.data(), rstd.data(), dy.data(), dx.data(), rows, d);
        });
        // Forced multi-chunk parameter reduction (the host uses ceil(rows / 8) chunks, <= 64).
        const i64 chunks = std::max<i64>((rows + 7) / 8, 2);
        std::vector<float> pg(chunks * d, NAN), pb(chunks * d, NAN);
        emu_launch({(unsigned)((d + 31) / 32), (unsigned)chunks, 1}, {32, 8, 1}, [&] {
            layer_norm_bwd_params_bf16(x.data(), mean.data(), rstd.data(), dy.data(), pg.data(), pb.data(), rows, d);
        });
        emu_launch({1, 1, 1}, {64, 1, 1}, [&] {
            layer_norm_bwd_finish_bf16(pg.data(), pb.data(), dg.data(), db.data(), chunks, d);
        });
        std::vector<double> ry(n), rm(rows), rr(rows), rdx(n), rdg(d, 0.0), rdb(d, 0.0);
        for (i64 r = 0; r < rows; ++r) {
            double m = 0, v = 0, a = 0, bb = 0;
            for (i64 j = 0; j < d; ++j) m += val(x[r * d + j]);
            m /= d;
            for (i64 j = 0; j < d; ++j) v += (val(x[r * d + j]) - m) * (val(x[r * d + j]) - m);
            const double is = 1.0 / std::sqrt(v / d + eps);
            rm[r] = m;
            rr[r] = is;
            for (i64 j = 0; j < d; ++j) {
                const double xh = (val(x[r * d + j]) - m) * is, gy = val(dy[r * d + j]);
                ry[r * d + j] = xh * val(g[j]) + val(b[j]);
                a += gy * val(g[j]);
                bb += gy * val(g[j]) * xh;
                rdg[j] += gy * xh;
                rdb[j] += gy;
            }
            for (i64 j = 0; j < d; ++j) {
                const double xh = (val(x[r * d + j]) - m) * is;
                rdx[r * d + j] = is * (val(dy[r * d + j]) * val(g[j]) - a / d - xh * bb / d);
            }
        }
        char what[80];
        snprintf(what, sizeof what, "layer_norm (%lld, %lld)", (long long)rows, (long long)d);
        cmp(what, y, ry);
        snprintf(what, sizeof what, "layer_norm mean f32 (%lld, %lld)", (long long)rows, (long long)d);
        cmp_f32(what, mean, rm);
        snprintf(what, sizeof what, "layer_norm rstd f32 (%lld, %lld)", (long long)rows, (long long)d);
        cmp_f32(what, rstd, rr);
        snprintf(what, sizeof what, "layer_norm_bwd dx (%lld, %lld)", (long long)rows, (long long)d);
        cmp(what, dx, rdx);
        snprintf(what, sizeof what, "layer_norm_bwd dgamma (%lld, %lld)", (long long)rows, (long long)d);
        cmp(what, dg, rdg);
        snprintf(what, sizeof what, "layer_norm_bwd dbeta (%lld, %lld)", (long long)rows, (long long)d);
        cmp(what, db, rdb);
    }
}

/// bf16 bits of `g` must equal `want` exactly (data movement; NaN payloads included).
static void cmp_bits(const char *what, const std::vector<bf16> &g, const std::vector<bf16> &want) {
    size_t bad = g.size() == want.size() ? g.size() : 0;
    for (size_t i = 0; i < want.size() && bad == g.size(); ++i)
        if (g[i].bits != want[i].bits) bad = i;
    const bool ok = g.size() == want.size() && bad == g.size();
    fails += !ok;
    if (ok) printf("ok %s: bit-exact (%zu elements)\n", what, g.size());
    else printf("FAIL %s: element %zu is %#06x, want %#06x\n", what, bad, g[bad].bits, want[bad].bits);
}

/// `n` bf16 values with -0.0, +inf, -inf and a NaN among them (data movement copies bits).
static std::vector<bf16> special(size_t n) {
    auto v = randb(n, -4.0, 4.0);
    const unsigned short sp[] = {0x8000, 0x7f80, 0xff80, 0x7fc1};
    for (size_t i = 0, k = 0; i < n && k < 4; i += 7, ++k) v[i].bits = sp[k];
    return v;
}

/// A `Strided` view of `shape` with element `stride`s.
static Strided view(const std::vector<i64> &shape, const std::vector<i64> &stride) {
    Strided s{};
    s.rank = (int)shape.size();
    for (int d = 0; d < s.rank; ++d) {
        s.shape[d] = shape[d];
        s.stride[d] = stride[d];
    }
    return s;
}

/// Row-major strides of `shape`.
static std::vector<i64> row_major(const std::vector<i64> &shape) {
    return bstrides(shape, shape);
}

/// Host reference of a strided gather: `y[i] = x[base + off(i)]`.
static std::vector<bf16> ref_gather(const std::vector<bf16> &x, const Strided &s, i64 base) {
    std::vector<i64> shape(s.shape, s.shape + s.rank);
    std::vector<bf16> y(prod(shape));
    for (i64 i = 0; i < (i64)y.size(); ++i) y[i] = x[base + strided_offset(i, s)];
    return y;
}

static void check_layout() {
    char what[96];
    // permute (3, 5, 7) -> axes (2, 0, 1); slice of axis 1 (start 2, len 3); broadcast_to.
    auto x = special(3 * 5 * 7);
    const Strided perm = view({7, 3, 5}, {1, 35, 7});
    const Strided sl = view({3, 3, 7}, {35, 7, 1});
    auto yp = outb(105), ys = outb(63), yb = outb(4 * 5 * 6);
    emu_launch({2, 1, 1}, {32, 1, 1}, [&] { gather_bf16(x.data(), yp.data(), 105, 0, perm); });
    cmp_bits("permute (3, 5, 7) -> (7, 3, 5)", yp, ref_gather(x, perm, 0));
    emu_launch({1, 1, 1}, {64, 1, 1}, [&] { gather_bf16(x.data(), ys.data(), 63, 2 * 7, sl); });
    cmp_bits("slice (3, 5, 7) axis 1 at 2 len 3", ys, ref_gather(x, sl, 2 * 7));
    auto small = special(5);
    const Strided bc = view({4, 5, 6}, {0, 1, 0});
    emu_launch({3, 1, 1}, {32, 1, 1}, [&] { gather_strided_bf16(small.data(), yb.data(), 120, 0, bc); });
    cmp_bits("broadcast_to (1, 5, 1) -> (4, 5, 6)", yb, ref_gather(small, bc, 0));
    // concat of (2, 3, 4) and (2, 1, 4) on axis 1, then pad axis 1 of (2, 3, 4) to 6 at 2.
    auto a = special(24), b = special(8);
    auto yc = outb(32);
    std::vector<bf16> yz(2 * 6 * 4, bf16{0}), want_c(32), want_z = yz;
    emu_launch({2, 1, 1}, {32, 1, 1}, [&] { scatter_strided_bf16(a.data(), yc.data(), 24, 0, view({2, 3, 4}, {16, 4, 1})); });
    emu_launch({1, 1, 1}, {32, 1, 1}, [&] { scatter_strided_bf16(b.data(), yc.data(), 8, 12, view({2, 1, 4}, {16, 4, 1})); });
    emu_launch({1, 1, 1}, {64, 1, 1}, [&] { scatter_strided_bf16(a.data(), yz.data(), 24, 8, view({2, 3, 4}, {24, 4, 1})); });
    for (i64 o = 0; o < 2; ++o)
        for (i64 j = 0; j < 4; ++j) {
            for (i64 m = 0; m < 3; ++m) {
                want_c[o * 16 + m * 4 + j] = a[o * 12 + m * 4 + j];
                want_z[o * 24 + (m + 2) * 4 + j] = a[o * 12 + m * 4 + j];
            }
            want_c[o * 16 + 12 + j] = b[o * 4 + j];
        }
    cmp_bits("concat (2, 3, 4) + (2, 1, 4) axis 1", yc, want_c);
    cmp_bits("pad_axis (2, 3, 4) axis 1 at 2 to 6", yz, want_z);
    // embedding / embedding backward over repeated ids (id 10 unused).
    for (i64 d : {1, 33}) {
        const i64 vocab = 11;
        const std::vector<u32> ids = {0, 9, 3, 3, 7, 3, 0, 5, 9, 1, 3, 2, 8, 4, 6};
        const i64 ni = (i64)ids.size();
        auto table = special(vocab * d);
        auto y = outb(ni * d);
        emu_launch({2, 1, 1}, {32, 1, 1}, [&] { embedding_bf16(table.data(), ids.data(), y.data(), ni, d); });
        std::vector<bf16> want(ni * d);
        for (i64 i = 0; i < ni * d; ++i) want[i] = table[ids[i / d] * d + i % d];
        snprintf(what, sizeof what, "embedding (%lld ids, d %lld)", (long long)ni, (long long)d);
        cmp_bits(what, y, want);
        // Host bucketing (the stable counting sort of crate::cpu::id_buckets).
        std::vector<u32> start(vocab + 1, 0), order(ni), fill;
        for (u32 id : ids) ++start[id + 1];
        for (i64 v = 0; v < vocab; ++v) start[v + 1] += start[v];
        fill = start;
        for (i64 p = 0; p < ni; ++p) order[fill[ids[p]]++] = (u32)p;
        auto dy = randb(ni * d, -1.0, 1.0);
        auto g = outb(vocab * d);
        emu_launch({2, 1, 1}, {32, 1, 1}, [&] {
            embedding_bwd_sorted_bf16(dy.data(), start.data(), order.data(), g.data(), vocab, d);
        });
        std::vector<double> r(vocab * d, 0.0);
        std::vector<bf16> in_order(vocab * d);
        for (i64 v = 0; v < vocab; ++v)
            for (i64 c = 0; c < d; ++c) {
                float acc = 0.0f;
                for (i64 p = 0; p < ni; ++p)
                    if (ids[p] == v) {
                        r[v * d + c] += val(dy[p * d + c]);
                        acc += (float)val(dy[p * d + c]);
                    }
                in_order[v * d + c] = f32_to_bf16(acc);
            }
        snprintf(what, sizeof what, "embedding_bwd (vocab %lld, d %lld)", (long long)vocab, (long long)d);
        cmp(what, g, r);
        snprintf(what, sizeof what, "embedding_bwd (vocab %lld, d %lld) vs in-order f32 sum", (long long)vocab, (long long)d);
        cmp_bits(what, g, in_order);
    }
}

static void check_sum_to() {
    const std::vector<std::vector<i64>> cases[] = {
        {{4, 5, 6}, {1, 5, 1}}, {{7, 3}, {7, 1}}, {{3, 5}, {1, 5}}, {{37, 33}, {1, 33}},
        {{2, 3, 4, 5}, {2, 1, 4, 1}}, {{301}, {1}}};
    for (const auto &c : cases) {
        const auto &in = c[0], &out = c[1];
        const auto st = row_major(in);
        std::vector<i64> red_shape, red_stride;
        for (size_t d = 0; d < in.size(); ++d)
            if (in[d] != out[d]) {
                red_shape.push_back(in[d]);
                red_stride.push_back(st[d]);
            }
        const i64 n_out = prod(out), red_n = prod(red_shape);
        const Strided kept = view(out, st), red = view(red_shape, red_stride);
        auto x = randb(prod(in), -1.0, 1.5);
        auto y = outb(n_out);
        const unsigned threads = (unsigned)std::min<i64>(std::max<i64>((red_n + 31) / 32, 1), 8) * 32;
        emu_launch({(unsigned)std::min<i64>(n_out, 3), 1, 1}, {threads, 1, 1},
                   [&] { sum_to_bf16(x.data(), y.data(), n_out, red_n, kept, red); });
        std::vector<double> r(n_out, 0.0);
        for (i64 i = 0; i < prod(in); ++i) {
            i64 rem = i, o = 0;
            for (int d = (int)in.size() - 1; d >= 0; --d) {
                const i64 co = rem % in[d];
                rem /= in[d];
                if (out[d] != 1 || in[d] == 1) o += co * row_major(out)[d];
            }
            r[o] += val(x[i]);
        }
        char what[80];
        snprintf(what, sizeof what, "sum_to %lld -> %lld elements (reduce %lld)", (long long)prod(in),
                 (long long)n_out, (long long)red_n);
        cmp(what, y, r);
    }
}

static void check_axpy_dropout() {
    for (i64 n : {1, 37, 1000}) {
        char what[80];
        auto x = randb(n, -3.0, 3.0), y = randb(n, -1.0, 2.0);
        std::vector<double> r(n);
        for (i64 i = 0; i < n; ++i) r[i] = val(y[i]) + (double)(-0.75f * (float)val(x[i]));
        emu_launch({2, 1, 1}, {64, 1, 1}, [&] { axpy_bf16(y.data(), x.data(), n, -0.75f); });
        snprintf(what, sizeof what, "axpy n=%lld", (long long)n);
        cmp(what, y, r);
        for (double p : {0.0, 0.1, 0.5}) {
            const u64 seed = 0xdeadbeef1234ull;
            const float keep = (float)(1.0 / (1.0 - p));
            auto yd = outb(n), sc = outb(n);
            emu_launch({2, 1, 1}, {32, 1, 1}, [&] { dropout_bf16(x.data(), yd.data(), sc.data(), n, p, seed, keep); });
            std::vector<double> ry(n);
            std::vector<bf16> rs(n);
            for (i64 i = 0; i < n; ++i) {
                const float s = counter_uniform(seed, (u64)i) < p ? 0.0f : keep;
                rs[i] = f32_to_bf16(s);
                ry[i] = val(x[i]) * (double)s;
            }
            snprintf(what, sizeof what, "dropout scale n=%lld p=%g", (long long)n, p);
            cmp_bits(what, sc, rs);
            snprintf(what, sizeof what, "dropout n=%lld p=%g", (long long)n, p);
            cmp(what, yd, ry);
        }
    }
}

int main() {
    check_unary_affine();
    check_binary();
    check_softmax();
    check_layer_norm();
    check_layout();
    check_sum_to();
    check_axpy_dropout();
    printf("%d failures\n", fails);
    return fails != 0;
}
