// bf16 activations of the audio CNN: the `_bf16` entry points of kernels/conv.cu and
// kernels/batch_norm.cu (bf16 x / y / dy / dx, f32 weights, statistics and parameter gradients)
// against their `_f32` twins run on the same values (bf16-exact inputs): every f32 result
// (statistics, weight-gradient partials, dgamma, dbeta) must be bit-identical and every bf16
// output must be the f32 output rounded once (round to nearest even), bit for bit. Planes of
// length 4k exercise the 8-byte bf16 vector path of bn_apply / bn_bwd_dx; a buffer shifted by
// one element (2 bytes) must fall back to the scalar path with the same bits.
#include "emu.h"
#include <cstdio>
#include <cstring>
#include <algorithm>
#include "../../kernels/conv.cu"
#include "../../kernels/batch_norm.cu"

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static float rnd() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }
static int fails = 0;

/// `n` random values exactly representable in bf16, as f32 and as bf16.
static void rand_bf16(size_t n, float scale, float shift, std::vector<float> &f, std::vector<bf16> &b) {
    f.resize(n);
    b.resize(n);
    for (size_t i = 0; i < n; ++i) {
        b[i] = f32_to_bf16(rnd() * scale + shift);
        f[i] = bf16_to_f32(b[i]);
    }
}

static void same_f32(const char *what, const char *name, const std::vector<float> &a, const std::vector<float> &b) {
    bool ok = a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
    if (!ok) ++fails;
    printf("%s %s %s: f32 results bit-identical\n", ok ? "ok" : "FAIL", what, name);
}

/// bf16 output `b` (of `n` elements from `off`) equals the f32 output rounded once.
static void same_rounded(const char *what, const char *name, const bf16 *b, const std::vector<float> &f) {
    size_t bad = 0;
    for (size_t i = 0; i < f.size(); ++i)
        if (b[i].bits != f32_to_bf16(f[i]).bits) ++bad;
    if (bad) ++fails;
    printf("%s %s %s: bf16 output == round(f32 output) (%zu of %zu differ)\n", bad ? "FAIL" : "ok", what, name, bad, f.size());
}

struct Case { const char *name; int n, c_in, h, w, c_out, k, s, groups; };

static void run_conv(const Case &c) {
    ConvGeom g;
    const int p = (c.k - 1) / 2;
    g.n = c.n; g.c_in = c.c_in; g.h = c.h; g.w = c.w; g.c_out = c.c_out;
    g.ho = (c.h + 2 * p - (c.k - 1) - 1) / c.s + 1;
    g.wo = (c.w + 2 * p - (c.k - 1) - 1) / c.s + 1;
    g.cig = c.c_in / c.groups; g.cog = c.c_out / c.groups;
    g.kh = g.kw = c.k; g.sh = g.sw = c.s; g.ph = g.pw = p; g.dh = g.dw = 1;
    const i64 xn = g.n * g.c_in * g.h * g.w, yn = g.n * g.c_out * g.ho * g.wo, wn = g.c_out * g.cig * c.k * c.k;
    std::vector<float> xf, dyf, w(wn);
    std::vector<bf16> xb, dyb;
    rand_bf16(xn, 1.0f, 0.0f, xf, xb);
    rand_bf16(yn, 1.0f, 0.0f, dyf, dyb);
    for (auto &v : w) v = rnd();
    auto cl = [](i64 v) { return (unsigned)std::max<i64>(1, std::min<i64>(v, 3)); };  // small grids: grid-stride loops
    const dim3 blk{32, 8, 1};
    std::vector<float> yf(yn), dxf(xn), partf, dwf(wn), dwb(wn);
    std::vector<bf16> yb(yn), dxb(xn);
    // Forward: the stem kernel for one input channel, else the tiled kernel.
    const bool c1 = c.c_in == 1 && c.groups == 1 && (c.k == 3 || c.k == 5);
    const dim3 fg = c1 ? dim3{cl(g.n * 4), cl((g.c_out + 15) / 16), 1} : dim3{cl(g.n * g.c_out), cl(4), 1};
    const dim3 fb = c1 ? dim3{256, 1, 1} : blk;
    emu_launch(fg, fb, [&] {
        if (c1 && c.k == 3) { conv_fwd_c1_k3_f32(xf.data(), w.data(), yf.data(), g); conv_fwd_c1_k3_bf16(xb.data(), w.data(), yb.data(), g); }
        else if (c1) { conv_fwd_c1_k5_f32(xf.data(), w.data(), yf.data(), g); conv_fwd_c1_k5_bf16(xb.data(), w.data(), yb.data(), g); }
        else if (c.k == 3) { conv_fwd_k3_f32(xf.data(), w.data(), yf.data(), g); conv_fwd_k3_bf16(xb.data(), w.data(), yb.data(), g); }
        else if (c.k == 5) { conv_fwd_k5_f32(xf.data(), w.data(), yf.data(), g); conv_fwd_k5_bf16(xb.data(), w.data(), yb.data(), g); }
        else { conv_fwd_any_f32(xf.data(), w.data(), yf.data(), g); conv_fwd_any_bf16(xb.data(), w.data(), yb.data(), g); }
    });
    same_rounded("conv fwd", c.name, yb.data(), yf);
    if (c.groups == c.c_in && c.c_in == c.c_out && c.s == 2 && (c.k == 3 || c.k == 5)) {
        // The shared-memory stride-2 depthwise forward, both dtypes, against conv_fwd's results.
        std::vector<float> yf2(yn);
        std::vector<bf16> yb2(yn);
        emu_launch({cl(g.n * g.c_out), cl(4), 1}, blk, [&] {
            if (c.k == 3) { conv_fwd_dw_s2_k3_f32(xf.data(), w.data(), yf2.data(), g); conv_fwd_dw_s2_k3_bf16(xb.data(), w.data(), yb2.data(), g); }
            else { conv_fwd_dw_s2_k5_f32(xf.data(), w.data(), yf2.data(), g); conv_fwd_dw_s2_k5_bf16(xb.data(), w.data(), yb2.data(), g); }
        });
        same_f32("conv fwd_dw_s2 (f32) == conv_fwd", c.name, yf2, yf);
        same_rounded("conv fwd_dw_s2 (bf16)", c.name, yb2.data(), yf);
    }
    emu_launch({cl(g.n * g.c_in), cl(4), 1}, blk, [&] {
        if (c.k == 3 && c.s == 1) { conv_bwd_data_k3s1_f32(dyf.data(), w.data(), dxf.data(), g); conv_bwd_data_k3s1_bf16(dyb.data(), w.data(), dxb.data(), g); }
        else if (c.k == 3 && c.s == 2) { conv_bwd_data_k3s2_f32(dyf.data(), w.data(), dxf.data(), g); conv_bwd_data_k3s2_bf16(dyb.data(), w.data(), dxb.data(), g); }
        else if (c.k == 3) { conv_bwd_data_k3_f32(dyf.data(), w.data(), dxf.data(), g); conv_bwd_data_k3_bf16(dyb.data(), w.data(), dxb.data(), g); }
        else if (c.k == 5 && c.s == 1) { conv_bwd_data_k5s1_f32(dyf.data(), w.data(), dxf.data(), g); conv_bwd_data_k5s1_bf16(dyb.data(), w.data(), dxb.data(), g); }
        else if (c.k == 5 && c.s == 2) { conv_bwd_data_k5s2_f32(dyf.data(), w.data(), dxf.data(), g); conv_bwd_data_k5s2_bf16(dyb.data(), w.data(), dxb.data(), g); }
        else if (c.k == 5) { conv_bwd_data_k5_f32(dyf.data(), w.data(), dxf.data(), g); conv_bwd_data_k5_bf16(dyb.data(), w.data(), dxb.data(), g); }
        else { conv_bwd_data_any_f32(dyf.data(), w.data(), dxf.data(), g); conv_bwd_data_any_bf16(dyb.data(), w.data(), dxb.data(), g); }
    });
    same_rounded("conv bwd_data", c.name, dxb.data(), dxf);
    // Weight gradient: one batch entry per chunk (several partials), both dtypes.
    const i64 chunks = g.n, pairs = g.c_out * g.cig;
    std::vector<float> pf(chunks * wn, NAN), pb(chunks * wn, NAN);
    emu_launch({cl(pairs), (unsigned)chunks, 1}, {64, 1, 1}, [&] {
        if (c.k == 3) { conv_bwd_weight_part_k3_f32(xf.data(), dyf.data(), pf.data(), g, 1); conv_bwd_weight_part_k3_bf16(xb.data(), dyb.data(), pb.data(), g, 1); }
        else if (c.k == 5) { conv_bwd_weight_part_k5_f32(xf.data(), dyf.data(), pf.data(), g, 1); conv_bwd_weight_part_k5_bf16(xb.data(), dyb.data(), pb.data(), g, 1); }
        else { conv_bwd_weight_part_any_f32(xf.data(), dyf.data(), pf.data(), g, 1); conv_bwd_weight_part_any_bf16(xb.data(), dyb.data(), pb.data(), g, 1); }
    });
    same_f32("conv bwd_weight partials", c.name, pb, pf);
}

static void run_bn(int n, int c, int s, int shift, int act) {
    const i64 N = (i64)n * c * s, M = (i64)n * s;
    std::vector<float> xf0, dyf0, gam(c), bet(c), rm(c, 0.0f), rv(c, 1.0f);
    std::vector<bf16> xb0, dyb0;
    rand_bf16(N + shift, 2.0f, 1.5f, xf0, xb0);
    rand_bf16(N + shift, 1.0f, 0.0f, dyf0, dyb0);
    for (auto &v : gam) v = rnd() + 1.5f;
    for (auto &v : bet) v = rnd();
    // `shift` elements in: the bf16 buffers lose their 8-byte alignment (scalar path).
    const float *xf = xf0.data() + shift, *dyf = dyf0.data() + shift;
    const bf16 *xb = xb0.data() + shift, *dyb = dyb0.data() + shift;
    const i64 s_len = std::min<i64>(s, 64), s_chunks = (s + s_len - 1) / s_len;
    const i64 pc = std::max<i64>(1, std::min<i64>(64 / s_len, n)), chunks = ((n + pc - 1) / pc) * s_chunks;
    const dim3 rg{2, 2, 1}, rb{64, 1, 1}, pg{3, 2, 1}, pb{32, 1, 1};
    std::vector<double> partf(chunks * c * 3), partb(chunks * c * 3);
    emu_launch(rg, rb, [&] {
        bn_stats_part_f32(xf, partf.data(), n, c, s, pc, s_len, s_chunks, chunks);
        bn_stats_part_bf16(xb, partb.data(), n, c, s, pc, s_len, s_chunks, chunks);
    });
    char name[160];
    snprintf(name, sizeof name, "bn [%d,%d,%d] shift %d act %d", n, c, s, shift, act);
    const bool parts_same = std::memcmp(partf.data(), partb.data(), partf.size() * 8) == 0;
    if (!parts_same) ++fails;
    printf("%s bn stats partials %s: f64 partials bit-identical\n", parts_same ? "ok" : "FAIL", name);
    std::vector<float> mean(c), rstd(c), scale(c), yf(N);
    std::vector<bf16> yb(N);
    emu_launch({1, 1, 1}, {64, 1, 1}, [&] { bn_stats_finish_f32(partf.data(), gam.data(), mean.data(), rstd.data(), scale.data(), rm.data(), rv.data(), c, chunks, 0.1, 1e-5); });
    emu_launch(pg, pb, [&] {
        if (act < 0) { bn_apply_f32(xf, mean.data(), scale.data(), bet.data(), yf.data(), n, c, s); bn_apply_bf16(xb, mean.data(), scale.data(), bet.data(), yb.data(), n, c, s); }
        else { bn_apply_act_f32(xf, mean.data(), scale.data(), bet.data(), yf.data(), n, c, s, act); bn_apply_act_bf16(xb, mean.data(), scale.data(), bet.data(), yb.data(), n, c, s, act); }
    });
    same_rounded("bn apply", name, yb.data(), yf);
    std::vector<double> bf(chunks * c * 2), bb(chunks * c * 2);
    emu_launch(rg, rb, [&] {
        if (act < 0) { bn_bwd_part_f32(xf, dyf, mean.data(), bf.data(), n, c, s, pc, s_len, s_chunks, chunks); bn_bwd_part_bf16(xb, dyb, mean.data(), bb.data(), n, c, s, pc, s_len, s_chunks, chunks); }
        else {
            bn_bwd_part_act_f32(xf, dyf, mean.data(), rstd.data(), gam.data(), bet.data(), bf.data(), n, c, s, pc, s_len, s_chunks, chunks, act);
            bn_bwd_part_act_bf16(xb, dyb, mean.data(), rstd.data(), gam.data(), bet.data(), bb.data(), n, c, s, pc, s_len, s_chunks, chunks, act);
        }
    });
    const bool bwd_same = std::memcmp(bf.data(), bb.data(), bf.size() * 8) == 0;
    if (!bwd_same) ++fails;
    printf("%s bn bwd partials %s: f64 partials bit-identical\n", bwd_same ? "ok" : "FAIL", name);
    std::vector<float> dg(c), db(c), k1(c), k2(c), k3(c), dxf(N);
    std::vector<bf16> dxb(N);
    emu_launch({1, 1, 1}, {64, 1, 1}, [&] { bn_bwd_finish_f32(bf.data(), gam.data(), rstd.data(), dg.data(), db.data(), k1.data(), k2.data(), k3.data(), c, chunks, (double)M); });
    emu_launch(pg, pb, [&] {
        if (act < 0) { bn_bwd_dx_f32(xf, dyf, mean.data(), k1.data(), k2.data(), k3.data(), dxf.data(), n, c, s); bn_bwd_dx_bf16(xb, dyb, mean.data(), k1.data(), k2.data(), k3.data(), dxb.data(), n, c, s); }
        else {
            bn_bwd_dx_act_f32(xf, dyf, mean.data(), rstd.data(), gam.data(), bet.data(), k1.data(), k2.data(), k3.data(), dxf.data(), n, c, s, act);
            bn_bwd_dx_act_bf16(xb, dyb, mean.data(), rstd.data(), gam.data(), bet.data(), k1.data(), k2.data(), k3.data(), dxb.data(), n, c, s, act);
        }
    });
    same_rounded("bn bwd dx", name, dxb.data(), dxf);
}

int main() {
    const Case cases[] = {
        {"dw3 s1", 2, 6, 9, 37, 6, 3, 1, 6},
        {"dw3 s2", 2, 5, 13, 35, 5, 3, 2, 5},
        {"dw5 s1", 1, 4, 11, 33, 4, 5, 1, 4},
        {"dw5 s2", 2, 4, 12, 41, 4, 5, 2, 4},
        {"stem k3 s2", 2, 1, 16, 45, 17, 3, 2, 1},
        {"stem k5 s2", 1, 1, 13, 30, 18, 5, 2, 1},
        {"grouped 3x3", 2, 4, 7, 9, 6, 3, 1, 2},
        {"dw 7x7 (any)", 1, 3, 9, 10, 3, 7, 1, 3},
    };
    for (const auto &c : cases) run_conv(c);
    for (int act : {-1, U_RELU, U_HARDSWISH}) {
        run_bn(3, 5, 40, 0, act);   // vector path (planes of 4k, aligned)
        run_bn(3, 5, 40, 1, act);   // misaligned by one bf16: scalar path
        run_bn(2, 3, 37, 0, act);   // odd planes: scalar path
        run_bn(2, 4, 300, 0, act);  // several spatial chunks per plane
    }
    printf(fails ? "%d FAILED\n" : "all bf16 CNN checks passed\n", fails);
    return fails ? 1 : 0;
}
