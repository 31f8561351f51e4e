// Runs kernels/contrastive.cu on the CPU through emu.h and compares the loss, the row/column
// log-sum-exps and dS with a double reference, using the launch geometry of
// crates/hr-tensor/src/cuda/backend/contrastive.rs (and, with `small_grid`, grids smaller than
// the work to exercise the grid-stride loops). Prints ok/FAIL lines and "N failures".
#include "emu.h"
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include "../../kernels/contrastive.cu"

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static double rnd01() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (rs >> 11) * (1.0 / 9007199254740992.0); }
static int fails = 0;

/// Normwise relative error `max |g - r| / max |r|` (NaN in g where r is finite fails).
static void cmp(const std::string &what, const std::vector<float> &g, const std::vector<double> &r, double tol = 1e-5) {
    double scale = 0, err = 0; size_t worst = 0; bool nan = false;
    for (size_t i = 0; i < r.size(); ++i) {
        if (std::isnan(g[i]) != std::isnan(r[i])) { nan = true; worst = i; break; }
        if (std::isnan(r[i])) continue;
        scale = std::max(scale, std::fabs(r[i]));
        if (std::fabs(g[i] - r[i]) > err) { err = std::fabs(g[i] - r[i]); worst = i; }
    }
    double rel = scale > 0 ? err / scale : err;
    bool ok = !nan && rel <= tol;
    if (!ok) ++fails;
    printf("%s %s: rel %.2e worst %zu (emu %.9g ref %.9g)%s\n", ok ? "ok" : "FAIL", what.c_str(), rel, worst, g[worst], r[worst], nan ? " NaN mismatch" : "");
}

/// Threads of the forward kernel: a multiple of 32 covering N, 32..128 (Rust: `fwd_cfg`).
static unsigned fwd_threads(i64 n) { return (unsigned)std::clamp<i64>((n + 31) / 32, 1, 4) * 32; }

struct Ref { std::vector<double> row, col, ds; double loss; };

static double lse(i64 n, const std::function<double(i64)> &f) {
    double mx = -INFINITY;
    for (i64 j = 0; j < n; ++j) mx = std::max(mx, f(j));
    if (mx == -INFINITY) return mx;
    double s = 0;
    for (i64 j = 0; j < n; ++j) s += std::exp(f(j) - mx);
    return mx + std::log(s);
}

static Ref reference(const std::vector<float> &s, const std::vector<u32> &g, i64 n, double dloss) {
    Ref r;
    std::vector<double> cnt(n, 0);
    double pairs = 0;
    for (i64 i = 0; i < n; ++i) for (i64 j = 0; j < n; ++j) if (g[i] == g[j]) { cnt[i] += 1; pairs += 1; }
    for (i64 i = 0; i < n; ++i) {
        r.row.push_back(lse(n, [&](i64 j) { return (double)s[i * n + j]; }));
        r.col.push_back(lse(n, [&](i64 j) { return (double)s[j * n + i]; }));
    }
    double tot = 0;
    for (i64 i = 0; i < n; ++i) for (i64 j = 0; j < n; ++j)
        if (g[i] == g[j]) tot += 2.0 * s[i * n + j] - r.row[i] - r.col[j];
    r.loss = -0.5 * tot / pairs;
    const double w = -0.5 * dloss / pairs;
    for (i64 i = 0; i < n; ++i) for (i64 j = 0; j < n; ++j) {
        double sij = s[i * n + j], pos = g[i] == g[j] ? 2.0 : 0.0;
        r.ds.push_back(w * (pos - cnt[i] * std::exp(sij - r.row[i]) - cnt[j] * std::exp(sij - r.col[j])));
    }
    return r;
}

/// Forward + finish + backward as the Rust launch code does; compares with `reference`.
static void run(const char *name, const std::vector<float> &s, const std::vector<u32> &g, bool small_grid, bool check_loss = true) {
    const i64 n = (i64)g.size();
    const double dloss = 1.7;
    std::vector<u32> counts(n, 0);
    u64 pairs = 0;
    for (i64 i = 0; i < n; ++i) for (i64 j = 0; j < n; ++j) counts[i] += g[i] == g[j];
    for (u32 c : counts) pairs += c;
    std::vector<float> row(n, NAN), col(n, NAN), loss(1, NAN), ds(n * n, NAN);
    std::vector<double> part(n, NAN);
    const float *sp = s.data();
    const u32 *gp = g.data(), *cp = counts.data();
    float *rp = row.data(), *colp = col.data(), *lp = loss.data(), *dsp = ds.data();
    double *pp = part.data();
    unsigned fwd_grid = small_grid ? (unsigned)std::min<i64>(n, 3) : (unsigned)n;
    emu_launch({fwd_grid, 1, 1}, {fwd_threads(n), 1, 1}, [&] { contrastive_fwd_f32(sp, gp, cp, rp, colp, pp, n); });
    emu_launch({1, 1, 1}, {256, 1, 1}, [&] { contrastive_loss_finish_f32(pp, lp, n, (double)pairs); });
    const float w = (float)(-0.5 * dloss / (double)pairs);
    unsigned bwd_grid = small_grid ? 2 : (unsigned)std::max<i64>(1, (n * n + 255) / 256);
    emu_launch({bwd_grid, 1, 1}, {256, 1, 1}, [&] { contrastive_bwd_f32(sp, gp, cp, rp, colp, dsp, n, w); });
    Ref r = reference(s, g, n, dloss);
    std::string tag = std::string(name) + " n " + std::to_string(n) + (small_grid ? " small grid" : "");
    if (check_loss) cmp(tag + " loss", loss, {r.loss});
    cmp(tag + " row_lse", row, r.row);
    cmp(tag + " col_lse", col, r.col);
    cmp(tag + " dS", ds, r.ds);
}

static std::vector<float> scores(i64 n, double mag, double pos_boost, const std::vector<u32> &g) {
    std::vector<float> s(n * n);
    for (i64 i = 0; i < n; ++i) for (i64 j = 0; j < n; ++j) {
        double v = (2 * rnd01() - 1) * mag;
        if (g[i] == g[j]) v += pos_boost;
        s[i * n + j] = (float)v;
    }
    return s;
}

/// Groups of `per` consecutive items (5 captions per clip), then shuffled.
static std::vector<u32> clips(i64 n, i64 per) {
    std::vector<u32> g(n);
    for (i64 i = 0; i < n; ++i) g[i] = (u32)(i / per);
    for (i64 i = n - 1; i > 0; --i) std::swap(g[i], g[(i64)(rnd01() * (i + 1))]);
    return g;
}

int main() {
    run("single", {0.3f}, {7}, false);
    run("single large", {-50.0f}, {0}, false);
    std::vector<u32> distinct = {4, 1, 9, 0, 2, 3, 8};
    run("distinct", scores(7, 3.0, 0.0, distinct), distinct, false);
    auto ninf = scores(7, 3.0, 0.0, distinct);
    ninf[0 * 7 + 2] = -INFINITY; ninf[5 * 7 + 1] = -INFINITY;  // masked negatives
    run("distinct -inf negatives", ninf, distinct, false);
    auto g33 = clips(33, 5);
    run("clips of 5", scores(33, 2.0, 1.0, g33), g33, false);
    run("clips of 5", scores(33, 2.0, 1.0, g33), g33, true);
    auto g130 = clips(130, 5);
    run("clips of 5", scores(130, 1.0, 0.5, g130), g130, false);
    run("clips of 5 +-50", scores(130, 50.0, 0.0, g130), g130, false);
    run("clips of 5 +-50 positives +40", scores(130, 10.0, 40.0, g130), g130, false);
    auto g64 = clips(64, 2);
    run("pairs +-50", scores(64, 50.0, 0.0, g64), g64, true);
    std::vector<u32> one(33, 3);
    run("one group", scores(33, 50.0, 0.0, one), one, false);
    printf("%d failures\n", fails);
    return fails != 0;
}
