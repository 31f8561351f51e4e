#include "emu.h"
#include <cstdio>
#include <algorithm>
#include "../../kernels/conv.cu"
#include "../../kernels/batch_norm.cu"
#include "../../kernels/audio.cu"

static uint64_t rs = 88172645463325252ull;
static float rnd() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }
static std::vector<float> randv(size_t n) { std::vector<float> v(n); for (auto &x : v) x = rnd(); return v; }
static int fails = 0;
static void cmp(const char *what, const char *name, const std::vector<float> &g, const std::vector<double> &r, double tol = 1e-5) {
    double scale = 0, err = 0; size_t worst = 0; bool nan = false;
    for (size_t i = 0; i < r.size(); ++i) {
        if (std::isnan(g[i])) { nan = true; worst = i; break; }
        scale = std::max(scale, std::fabs(r[i]));
        if (std::fabs(g[i] - r[i]) > err) { err = std::fabs(g[i] - r[i]); worst = i; }
    }
    double rel = scale > 0 ? err / scale : err;
    bool ok = !nan && rel <= tol;
    if (!ok) ++fails;
    printf("%s %s %s: rel %.2e worst %zu (gpu %g ref %g)%s\n", ok ? "ok" : "FAIL", what, name, rel, worst, g[worst], r[worst], nan ? " NaN" : "");
}

struct Case { const char *name; int n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups; };

static void run_conv(const Case &c, bool small_grid, i64 per_chunk_override) {
    ConvGeom g;
    g.n = c.n; g.c_in = c.c_in; g.h = c.h; g.w = c.w; g.c_out = c.c_out;
    g.ho = (c.h + 2 * c.ph - c.dh * (c.kh - 1) - 1) / c.sh + 1;
    g.wo = (c.w + 2 * c.pw - c.dw * (c.kw - 1) - 1) / c.sw + 1;
    g.cig = c.c_in / c.groups; g.cog = c.c_out / c.groups;
    g.kh = c.kh; g.kw = c.kw; g.sh = c.sh; g.sw = c.sw; g.ph = c.ph; g.pw = c.pw; g.dh = c.dh; g.dw = c.dw;
    const i64 xn = g.n * g.c_in * g.h * g.w, yn = g.n * g.c_out * g.ho * g.wo, wn = g.c_out * g.cig * g.kh * g.kw;
    auto x = randv(xn), w = randv(wn), dy = randv(yn);
    // Reference (double).
    std::vector<double> y_r(yn, 0), dx_r(xn, 0), dw_r(wn, 0);
    for (i64 n = 0; n < g.n; ++n) for (i64 co = 0; co < g.c_out; ++co) for (i64 oh = 0; oh < g.ho; ++oh) for (i64 ow = 0; ow < g.wo; ++ow) {
        i64 yi = ((n * g.c_out + co) * g.ho + oh) * g.wo + ow;
        for (i64 cl = 0; cl < g.cig; ++cl) for (int i = 0; i < g.kh; ++i) for (int j = 0; j < g.kw; ++j) {
            i64 ih = oh * g.sh - g.ph + i * g.dh, iw = ow * g.sw - g.pw + j * g.dw;
            if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
            i64 ci = (co / g.cog) * g.cig + cl;
            i64 xi = ((n * g.c_in + ci) * g.h + ih) * g.w + iw, wi = ((co * g.cig + cl) * g.kh + i) * g.kw + j;
            y_r[yi] += (double)w[wi] * x[xi];
            dx_r[xi] += (double)w[wi] * dy[yi];
            dw_r[wi] += (double)dy[yi] * x[xi];
        }
    }
    const char *k3[3] = {"k3", "k5", "any"};
    int sel = (c.kh == 3 && c.kw == 3) ? 0 : (c.kh == 5 && c.kw == 5) ? 1 : 2;
    auto tiles = [](i64 r, i64 cc) { return ((r + 31) / 32) * ((cc + 31) / 32); };  // CONV_TH * CONV_ROWS rows
    auto cl = [](i64 v, i64 hi) { return (unsigned)std::max<i64>(1, std::min(v, hi)); };
    std::vector<float> y(yn, NAN), dx(xn, NAN), dwt(wn, NAN);
    i64 gx_lim = small_grid ? 3 : 1 << 30, gy_lim = small_grid ? 2 : 65535;
    dim3 blk{32, 8, 1};
    dim3 grid{cl(g.n * g.c_out, gx_lim), cl(tiles(g.ho, g.wo), gy_lim), 1};
    const float *xp = x.data(), *wp = w.data(), *dyp = dy.data();
    float *yp = y.data(), *dxp = dx.data(), *dwp = dwt.data();
    if (sel == 0) emu_launch(grid, blk, [&] { conv_fwd_k3_f32(xp, wp, yp, g); });
    if (sel == 1) emu_launch(grid, blk, [&] { conv_fwd_k5_f32(xp, wp, yp, g); });
    if (sel == 2) emu_launch(grid, blk, [&] { conv_fwd_any_f32(xp, wp, yp, g); });
    // The one-input-channel forward (the stem): must equal conv_fwd bit for bit.
    const bool c1 = c.c_in == 1 && c.groups == 1 && sel < 2;
    std::vector<float> y1(yn, NAN);
    if (c1) {
        float *y1p = y1.data();
        i64 chunks1 = (g.ho * g.wo + 255) / 256;
        dim3 g1{cl(g.n * chunks1, small_grid ? 2 : 1 << 30), cl((g.c_out + 15) / 16, small_grid ? 2 : 65535), 1};
        if (sel == 0) emu_launch(g1, {256, 1, 1}, [&] { conv_fwd_c1_k3_f32(xp, wp, y1p, g); });
        if (sel == 1) emu_launch(g1, {256, 1, 1}, [&] { conv_fwd_c1_k5_f32(xp, wp, y1p, g); });
    }
    // The stride-2 depthwise forward through a shared-memory tile: bit-identical to conv_fwd.
    const bool s2 = c.groups == c.c_in && c.c_in == c.c_out && c.sh == 2 && c.sw == 2 && c.dh == 1 && c.dw == 1 && sel < 2;
    std::vector<float> y2(yn, NAN);
    if (s2) {
        float *y2p = y2.data();
        if (sel == 0) emu_launch(grid, blk, [&] { conv_fwd_dw_s2_k3_f32(xp, wp, y2p, g); });
        if (sel == 1) emu_launch(grid, blk, [&] { conv_fwd_dw_s2_k5_f32(xp, wp, y2p, g); });
    }
    grid = {cl(g.n * g.c_in, gx_lim), cl(tiles(g.h, g.w), gy_lim), 1};
    const int st = (g.sh == 1 && g.sw == 1) ? 1 : (g.sh == 2 && g.sw == 2) ? 2 : 0;
    if (sel == 0 && st == 0) emu_launch(grid, blk, [&] { conv_bwd_data_k3_f32(dyp, wp, dxp, g); });
    if (sel == 0 && st == 1) emu_launch(grid, blk, [&] { conv_bwd_data_k3s1_f32(dyp, wp, dxp, g); });
    if (sel == 0 && st == 2) emu_launch(grid, blk, [&] { conv_bwd_data_k3s2_f32(dyp, wp, dxp, g); });
    if (sel == 1 && st == 0) emu_launch(grid, blk, [&] { conv_bwd_data_k5_f32(dyp, wp, dxp, g); });
    if (sel == 1 && st == 1) emu_launch(grid, blk, [&] { conv_bwd_data_k5s1_f32(dyp, wp, dxp, g); });
    if (sel == 1 && st == 2) emu_launch(grid, blk, [&] { conv_bwd_data_k5s2_f32(dyp, wp, dxp, g); });
    if (sel == 2) emu_launch(grid, blk, [&] { conv_bwd_data_any_f32(dyp, wp, dxp, g); });
    i64 plane = std::max<i64>(1, g.ho * g.wo);
    i64 pc = std::max<i64>(1, std::min<i64>(8192 / plane, g.n));
    if (per_chunk_override > 0) pc = per_chunk_override;
    i64 chunks = (g.n + pc - 1) / pc;
    i64 pairs = g.c_out * g.cig;
    std::vector<float> part(chunks * wn, NAN);
    float *pp = part.data();
    grid = {cl(pairs, gx_lim), (unsigned)chunks, 1};
    dim3 b1{256, 1, 1};
    if (small_grid) b1 = {64, 1, 1};
    if (sel == 0) emu_launch(grid, b1, [&] { conv_bwd_weight_part_k3_f32(xp, dyp, pp, g, pc); });
    if (sel == 1) emu_launch(grid, b1, [&] { conv_bwd_weight_part_k5_f32(xp, dyp, pp, g, pc); });
    if (sel == 2) emu_launch(grid, b1, [&] { conv_bwd_weight_part_any_f32(xp, dyp, pp, g, pc); });
    emu_launch({cl((wn + 255) / 256, small_grid ? 1 : 1 << 18), 1, 1}, {256, 1, 1}, [&] { conv_bwd_weight_finish_f32(pp, dwp, chunks, wn); });
    char name[200];
    snprintf(name, sizeof name, "%s [%s] grid%s chunks %lld", c.name, k3[sel], small_grid ? " small" : "", (long long)chunks);
    cmp("fwd", name, y, y_r);
    if (c1) {
        bool same = std::memcmp(y.data(), y1.data(), yn * sizeof(float)) == 0;
        if (!same) ++fails;
        printf("%s fwd_c1 == fwd (bitwise) %s\n", same ? "ok" : "FAIL", name);
        cmp("fwd_c1", name, y1, y_r);
    }
    if (s2) {
        bool same = std::memcmp(y.data(), y2.data(), yn * sizeof(float)) == 0;
        if (!same) ++fails;
        printf("%s fwd_dw_s2 == fwd (bitwise) %s\n", same ? "ok" : "FAIL", name);
    }
    cmp("bwd_data", name, dx, dx_r);
    cmp("bwd_weight", name, dwt, dw_r);
}

static void run_bn(int n, int c, int s, i64 chunk_elems, bool small_grid) {
    i64 M = (i64)n * s, N = (i64)n * c * s;
    auto x = randv(N), dy = randv(N), gam = randv(c), bet = randv(c), rm = randv(c), rv = randv(c);
    for (auto &v : x) v = v * 0.5f + 3.0f;
    for (auto &v : rv) v = std::fabs(v) + 0.5f;
    double mom = 0.1, eps = 1e-3;
    std::vector<double> mean_r(c), var_r(c), y_r(N), rm_r(c), rv_r(c), dx_r(N), dg_r(c), db_r(c), rstd_r(c);
    for (int ch = 0; ch < c; ++ch) {
        double sm = 0; for (int i = 0; i < n; ++i) for (int j = 0; j < s; ++j) sm += x[((i64)i * c + ch) * s + j];
        double mu = sm / M, sq = 0;
        for (int i = 0; i < n; ++i) for (int j = 0; j < s; ++j) { double d = x[((i64)i * c + ch) * s + j] - mu; sq += d * d; }
        double var = sq / M, r = 1 / std::sqrt(var + eps);
        mean_r[ch] = mu; var_r[ch] = var; rstd_r[ch] = r;
        rm_r[ch] = (1 - mom) * rm[ch] + mom * mu; rv_r[ch] = (1 - mom) * rv[ch] + mom * var * M / (M - 1);
        double sdy = 0, sdyx = 0, mb = (float)mu, rb = (float)r;  // the backward sees the f32 stats, like the CPU
        for (int i = 0; i < n; ++i) for (int j = 0; j < s; ++j) { i64 k = ((i64)i * c + ch) * s + j; y_r[k] = (x[k] - mu) * r * gam[ch] + bet[ch]; sdy += dy[k]; sdyx += dy[k] * (x[k] - mb); }
        db_r[ch] = sdy; dg_r[ch] = sdyx * rb;
        for (int i = 0; i < n; ++i) for (int j = 0; j < s; ++j) { i64 k = ((i64)i * c + ch) * s + j; dx_r[k] = gam[ch] * rb * (dy[k] - sdy / M - (x[k] - mb) * rb * sdyx * rb / M); }
    }
    i64 s_len = std::max<i64>(1, std::min<i64>(s, chunk_elems));
    i64 s_chunks = std::max<i64>(1, (s + s_len - 1) / s_len);
    i64 pc = std::max<i64>(1, std::min<i64>(chunk_elems / s_len, n));
    i64 chunks = ((n + pc - 1) / pc) * s_chunks;
    auto cl = [](i64 v, i64 hi) { return (unsigned)std::max<i64>(1, std::min(v, hi)); };
    i64 gx = small_grid ? 2 : 1 << 30, gy = small_grid ? 2 : 65535;
    std::vector<double> part(chunks * c * 3, NAN); std::vector<float> mean(c, NAN), rstd(c, NAN), scale(c, NAN), y(N, NAN);
    std::vector<float> rmg = rm, rvg = rv;
    emu_launch({cl(chunks, gx), cl(c, gy), 1}, {256, 1, 1}, [&] { bn_stats_part_f32(x.data(), part.data(), n, c, s, pc, s_len, s_chunks, chunks); });
    emu_launch({cl((c + 255) / 256, gx), 1, 1}, {256, 1, 1}, [&] { bn_stats_finish_f32(part.data(), gam.data(), mean.data(), rstd.data(), scale.data(), rmg.data(), rvg.data(), c, chunks, mom, eps); });
    i64 work = s % 4 == 0 ? s / 4 : s;
    i64 th = std::max<i64>(32, std::min<i64>(((work + 31) / 32) * 32, 256));
    dim3 pg{cl((i64)n * c, gx), cl((work + th - 1) / th, gy), 1}, pb{(unsigned)th, 1, 1};
    emu_launch(pg, pb, [&] { bn_apply_f32(x.data(), mean.data(), scale.data(), bet.data(), y.data(), n, c, s); });
    char name[200];
    snprintf(name, sizeof name, "bn [%d,%d,%d] chunk_elems %lld chunks %lld%s", n, c, s, (long long)chunk_elems, (long long)chunks, small_grid ? " small grid" : "");
    cmp("train mean", name, mean, mean_r);
    cmp("train rstd", name, rstd, rstd_r);
    cmp("train y", name, y, y_r);
    cmp("running mean", name, rmg, rm_r);
    cmp("running var", name, rvg, rv_r);
    std::vector<double> part2(chunks * c * 2, NAN); std::vector<float> dg(c, NAN), db(c, NAN), k1(c, NAN), k2(c, NAN), k3(c, NAN), dx(N, NAN);
    emu_launch({cl(chunks, gx), cl(c, gy), 1}, {256, 1, 1}, [&] { bn_bwd_part_f32(x.data(), dy.data(), mean.data(), part2.data(), n, c, s, pc, s_len, s_chunks, chunks); });
    emu_launch({1, 1, 1}, {256, 1, 1}, [&] { bn_bwd_finish_f32(part2.data(), gam.data(), rstd.data(), dg.data(), db.data(), k1.data(), k2.data(), k3.data(), c, chunks, (double)M); });
    emu_launch(pg, pb, [&] { bn_bwd_dx_f32(x.data(), dy.data(), mean.data(), k1.data(), k2.data(), k3.data(), dx.data(), n, c, s); });
    cmp("bwd dx", name, dx, dx_r);
    cmp("bwd dgamma", name, dg, dg_r);
    cmp("bwd dbeta", name, db, db_r);
    // eval with the reference running stats
    std::vector<float> sc(c, NAN), ye(N, NAN), rmf(rm_r.begin(), rm_r.end()), rvf(rv_r.begin(), rv_r.end());
    std::vector<double> ye_r(N);
    for (i64 k = 0; k < N; ++k) { int ch = (k / s) % c; ye_r[k] = (x[k] - rmf[ch]) * (gam[ch] / std::sqrt((double)rvf[ch] + eps)) + bet[ch]; }
    emu_launch({1, 1, 1}, {256, 1, 1}, [&] { bn_eval_scale_f32(gam.data(), rvf.data(), sc.data(), c, eps); });
    emu_launch(pg, pb, [&] { bn_apply_f32(x.data(), rmf.data(), sc.data(), bet.data(), ye.data(), n, c, s); });
    cmp("eval y", name, ye, ye_r);
    // Fused batch norm + activation (ReLU, Hardswish): forward against act(y), backward against
    // the batch norm backward of dy * act'(y) (the kernel recomputes y from x and the stats).
    for (int act : {U_RELU, U_HARDSWISH}) {
        auto f = [&](double z) { return act == U_RELU ? std::max(z, 0.0) : z * std::min(std::max(z + 3, 0.0), 6.0) / 6; };
        auto df = [&](double z) { return act == U_RELU ? (z > 0 ? 1.0 : 0.0) : z < -3 ? 0.0 : z > 3 ? 1.0 : (2 * z + 3) / 6; };
        std::vector<double> ya_r(N), dz(N), dxa_r(N), dga_r(c), dba_r(c);
        for (i64 k = 0; k < N; ++k) { ya_r[k] = f(y_r[k]); dz[k] = dy[k] * df(y_r[k]); }
        for (int ch = 0; ch < c; ++ch) {
            double sdz = 0, sdzx = 0, mb = (float)mean_r[ch], rb = (float)rstd_r[ch];
            for (int i = 0; i < n; ++i) for (int j = 0; j < s; ++j) { i64 k = ((i64)i * c + ch) * s + j; sdz += dz[k]; sdzx += dz[k] * (x[k] - mb); }
            dba_r[ch] = sdz; dga_r[ch] = sdzx * rb;
            for (int i = 0; i < n; ++i) for (int j = 0; j < s; ++j) { i64 k = ((i64)i * c + ch) * s + j; dxa_r[k] = gam[ch] * rb * (dz[k] - sdz / M - (x[k] - mb) * rb * sdzx * rb / M); }
        }
        std::vector<float> ya(N, NAN), dga(c, NAN), dba(c, NAN), dxa(N, NAN);
        emu_launch(pg, pb, [&] { bn_apply_act_f32(x.data(), mean.data(), scale.data(), bet.data(), ya.data(), n, c, s, act); });
        emu_launch({cl(chunks, gx), cl(c, gy), 1}, {256, 1, 1}, [&] { bn_bwd_part_act_f32(x.data(), dy.data(), mean.data(), rstd.data(), gam.data(), bet.data(), part2.data(), n, c, s, pc, s_len, s_chunks, chunks, act); });
        emu_launch({1, 1, 1}, {256, 1, 1}, [&] { bn_bwd_finish_f32(part2.data(), gam.data(), rstd.data(), dga.data(), dba.data(), k1.data(), k2.data(), k3.data(), c, chunks, (double)M); });
        emu_launch(pg, pb, [&] { bn_bwd_dx_act_f32(x.data(), dy.data(), mean.data(), rstd.data(), gam.data(), bet.data(), k1.data(), k2.data(), k3.data(), dxa.data(), n, c, s, act); });
        const char *an = act == U_RELU ? "relu" : "hardswish";
        char nm[240];
        snprintf(nm, sizeof nm, "%s +%s", name, an);
        cmp("train+act y", nm, ya, ya_r);
        cmp("bwd+act dx", nm, dxa, dxa_r);
        cmp("bwd+act dgamma", nm, dga, dga_r);
        cmp("bwd+act dbeta", nm, dba, dba_r);
    }
}

// frame_signal (kernels/audio.cu) against a direct preemphasis + reflect pad + frame + window
// loop in f64, on a small grid (grid-stride) and a grid covering every element.
static void run_frame(int b, int n, int n_fft, int hop, bool small_grid) {
    const i64 len = n - 1, pad = n_fft / 2, frames = 1 + (len + 2 * pad - n_fft) / hop;
    const i64 total = (i64)b * frames * n_fft;
    auto x = randv((size_t)b * n), w = randv(n_fft);
    const float c = 0.97f;
    std::vector<double> y_r(total);
    for (int e = 0; e < b; ++e) {
        std::vector<double> padded;
        for (i64 p = -pad; p < len + pad; ++p) {
            i64 i = p < 0 ? -p : (p >= len ? 2 * (len - 1) - p : p);
            padded.push_back((double)x[e * n + i + 1] - (double)c * x[e * n + i]);
        }
        for (i64 t = 0; t < frames; ++t)
            for (int j = 0; j < n_fft; ++j) y_r[((i64)e * frames + t) * n_fft + j] = padded[t * hop + j] * w[j];
    }
    FrameGeom g{n, len, frames, n_fft, hop, pad, total};
    std::vector<float> y(total, NAN);
    unsigned blocks = small_grid ? 3 : (unsigned)((total + 255) / 256);
    emu_launch({blocks, 1, 1}, {256, 1, 1}, [&] { frame_signal_f32(x.data(), w.data(), y.data(), g, c); });
    char name[200];
    snprintf(name, sizeof name, "b %d n %d n_fft %d hop %d frames %lld%s", b, n, n_fft, hop, (long long)frames, small_grid ? " small grid" : "");
    cmp("frame_signal", name, y, y_r, 1e-6);
}

int main(int argc, char **argv) {
    bool quick = argc > 1;
    Case cases[] = {
        {"dw3 s1", 3, 8, 7, 13, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8},
        {"dw3 s2", 1, 8, 13, 7, 8, 3, 3, 2, 2, 1, 1, 1, 1, 8},
        {"dw3 s2 odd", 3, 5, 13, 13, 5, 3, 3, 2, 2, 1, 1, 1, 1, 5},
        {"dw3 h=1", 3, 5, 1, 13, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5},
        {"dw3 w=1 s2", 1, 5, 13, 1, 5, 3, 3, 2, 2, 1, 1, 1, 1, 5},
        {"dw3 dil2 s2", 1, 4, 13, 13, 4, 3, 3, 2, 2, 2, 2, 2, 2, 4},
        {"dw3 nopad s(2,1)", 3, 4, 7, 13, 4, 3, 3, 2, 1, 0, 0, 1, 1, 4},
        {"dw5 s1", 3, 6, 13, 13, 6, 5, 5, 1, 1, 2, 2, 1, 1, 6},
        {"dw5 s2", 3, 6, 7, 13, 6, 5, 5, 2, 2, 2, 2, 1, 1, 6},
        {"dw5 s2 h=1", 1, 6, 1, 7, 6, 5, 5, 2, 2, 2, 2, 1, 1, 6},
        {"stem", 3, 1, 13, 29, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {"stem mel", 2, 1, 64, 70, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {"pw direct", 3, 24, 7, 13, 10, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {"grouped 3x3", 3, 8, 9, 11, 12, 3, 3, 2, 1, 1, 0, 1, 2, 2},
        {"grouped 1x1", 1, 8, 7, 7, 6, 1, 1, 1, 1, 0, 0, 1, 1, 2},
        {"dense 3x3", 1, 3, 9, 10, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {"dense 5x5 dil", 3, 2, 13, 7, 3, 5, 5, 1, 1, 4, 2, 2, 1, 1},
        {"dw 3x5", 3, 4, 9, 11, 4, 3, 5, 1, 2, 1, 2, 1, 1, 4},
        {"dw 1x1 s2", 1, 4, 7, 13, 4, 1, 1, 2, 2, 0, 0, 1, 1, 4},
        {"pw stride 2", 3, 6, 7, 13, 5, 1, 1, 2, 2, 0, 0, 1, 1, 1},
        {"grouped 5x5 s2", 2, 4, 11, 9, 6, 5, 5, 2, 2, 2, 2, 1, 1, 2},
        {"dw5 s(1,2)", 2, 3, 9, 12, 3, 5, 5, 1, 2, 2, 2, 1, 1, 3},
        {"dw3 s3 dil(1,2)", 2, 3, 10, 14, 3, 3, 3, 3, 3, 1, 2, 1, 2, 3},
        {"dw3 s1 h=37", 2, 3, 37, 35, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3},
        {"dw3 s2 h=70", 1, 2, 70, 33, 2, 3, 3, 2, 2, 1, 1, 1, 1, 2},
        {"dw5 s1 h=70", 1, 2, 70, 9, 2, 5, 5, 1, 1, 2, 2, 1, 1, 2},
        {"dw5 s2 h=37", 2, 2, 37, 40, 2, 5, 5, 2, 2, 2, 2, 1, 1, 2},
        {"grouped 3x3 h=37", 1, 4, 37, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2},
        {"stem c_out=40", 2, 1, 37, 70, 40, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {"stem5 c_out=40", 1, 1, 70, 37, 40, 5, 5, 2, 2, 2, 2, 1, 1, 1},
        {"stem5 s1 dil", 2, 1, 37, 23, 17, 5, 5, 1, 1, 3, 4, 2, 2, 1},
    };
    for (auto &c : cases) {
        run_conv(c, false, 0);
        if (!quick) { run_conv(c, true, 1); run_conv(c, false, 2); }
    }
    run_bn(3, 5, 91, 8192, false);
    run_bn(3, 5, 91, 16, false);
    run_bn(3, 5, 91, 100, true);
    run_bn(2, 3, 1, 8192, false);
    run_bn(37, 5, 1, 8, true);
    run_bn(1, 4, 13, 8192, false);
    run_bn(2, 3, 1000, 300, false);
    run_bn(3, 4, 12, 8192, false);
    run_bn(2, 3, 1000, 8192, true);
    run_bn(2, 5, 4, 8192, true);
    run_frame(1, 7, 4, 1, false);
    run_frame(3, 101, 16, 5, false);
    run_frame(2, 99, 9, 4, true);
    run_frame(2, 514, 1024, 320, false);
    run_frame(1, 3001, 1024, 320, true);
    printf("%d failures\n", fails);
    return fails != 0;
}
