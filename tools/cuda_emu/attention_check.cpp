// Checks kernels/attention.cu (forward, backward dK/dV and dQ) on the CPU emulator against a
// plain f64 reference of crates/hr-tensor/src/cpu/attention.rs: odd shapes, Tq != Tk, Dh of
// 1 .. 128 (scalar and float4 staging, the 8/16/32 register variants), key masks (with a
// fully masked batch entry and a fully masked key tile), dropout, no keys at all. Each Dh
// picks the entry-point variant the host picks; launch grids are those of
// crates/hr-tensor/src/cuda/backend/attention.rs: (B*H, ceil(T/32)) x 128 threads.
#include "emu.h"
#include <algorithm>
#include <cstdio>
#include "../../kernels/attention.cu"

static uint64_t rs = 0x2545f4914f6cdd1dull;
static float rnd() {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static std::vector<float> randv(size_t n, float amp = 1.0f) {
    std::vector<float> v(n);
    for (auto &x : v) x = rnd() * amp;
    return v;
}
static int fails = 0;

/// Max-abs error relative to max |ref| (infinities must match exactly; NaN fails).
static void cmp(const char *what, const char *name, const std::vector<float> &g, const std::vector<double> &r, double tol = 1e-5) {
    double scale = 0, err = 0; size_t worst = 0; bool bad = false;
    for (size_t i = 0; i < r.size(); ++i) {
        if (std::isinf(r[i]) || std::isinf(g[i]) || std::isnan(g[i])) {
            if (!(std::isinf(r[i]) && g[i] == (float)r[i])) { bad = true; worst = i; break; }
            continue;
        }
        scale = std::max(scale, std::fabs(r[i]));
        if (std::fabs(g[i] - r[i]) > err) { err = std::fabs(g[i] - r[i]); worst = i; }
    }
    double rel = scale > 0 ? err / scale : err;
    bool ok = !bad && rel <= tol;
    if (!ok) ++fails;
    printf("%s %s %s: rel %.2e worst %zu (gpu %g ref %g)%s\n", ok ? "ok" : "FAIL", what, name, rel, worst,
           r.empty() ? 0.0 : (double)g[worst], r.empty() ? 0.0 : r[worst], bad ? " inf/NaN mismatch" : "");
}

struct Shape { int b, h, tq, tk, dh; double p; int mask; };  // mask: 0 none, 1 random + batch 1 all dropped, 2 tail tile dropped

struct Ref { std::vector<double> out, lse, dq, dk, dv; };

static double keep_ref(const AttnGeom &g, i64 bh, i64 i, i64 j) {
    if (g.p <= 0) return 1.0;
    return counter_uniform(g.seed, (u64)((bh * g.tq + i) * g.tk + j)) < g.p ? 0.0 : 1.0 / (1.0 - g.p);
}

/// f64 reference of the CPU backend (forward and backward).
static Ref reference(const Shape &s, const AttnGeom &g, const std::vector<float> &q, const std::vector<float> &k,
                     const std::vector<float> &v, const std::vector<float> &mask, const std::vector<float> &dout) {
    Ref r;
    const size_t nq = (size_t)s.b * s.tq * s.h * s.dh, nk = (size_t)s.b * s.tk * s.h * s.dh;
    r.out.assign(nq, 0); r.dq.assign(nq, 0); r.dk.assign(nk, 0); r.dv.assign(nk, 0);
    r.lse.assign((size_t)s.b * s.h * s.tq, 0);
    auto at = [&](int b, int len, int t, int h) { return (((size_t)b * len + t) * s.h + h) * s.dh; };
    for (int b = 0; b < s.b; ++b) for (int h = 0; h < s.h; ++h) {
        const i64 bh = (i64)b * s.h + h;
        for (int i = 0; i < s.tq; ++i) {
            const size_t qo = at(b, s.tq, i, h);
            std::vector<double> sc(s.tk, -INFINITY);
            double mx = -INFINITY;
            for (int j = 0; j < s.tk; ++j) {
                if (!mask.empty() && mask[(size_t)b * s.tk + j] == 0.0f) continue;
                double d = 0;
                for (int c = 0; c < s.dh; ++c) d += (double)q[qo + c] * k[at(b, s.tk, j, h) + c];
                sc[j] = d * g.scale;
                mx = std::max(mx, sc[j]);
            }
            double l = mx;
            if (mx > -INFINITY) { double sum = 0; for (double x : sc) sum += std::exp(x - mx); l = mx + std::log(sum); }
            r.lse[bh * s.tq + i] = l;
            if (l == -INFINITY) continue;
            for (int j = 0; j < s.tk; ++j) {
                if (sc[j] == -INFINITY) continue;
                const double p = std::exp(sc[j] - l) * keep_ref(g, bh, i, j);
                for (int c = 0; c < s.dh; ++c) r.out[qo + c] += p * v[at(b, s.tk, j, h) + c];
            }
            // Backward with the f64 out (the kernels get the f32 forward output, see run()).
            double di = 0;
            for (int c = 0; c < s.dh; ++c) di += (double)dout[qo + c] * (float)r.out[qo + c];
            for (int j = 0; j < s.tk; ++j) {
                if (sc[j] == -INFINITY) continue;
                const size_t ko = at(b, s.tk, j, h);
                const double p = std::exp(sc[j] - l), m = keep_ref(g, bh, i, j);
                double dpv = 0;
                for (int c = 0; c < s.dh; ++c) dpv += (double)dout[qo + c] * v[ko + c];
                const double ds = p * (m * dpv - di) * g.scale;
                for (int c = 0; c < s.dh; ++c) {
                    r.dv[ko + c] += p * m * dout[qo + c];
                    r.dq[qo + c] += ds * k[ko + c];
                    r.dk[ko + c] += ds * q[qo + c];
                }
            }
        }
    }
    return r;
}

static std::vector<float> make_mask(const Shape &s) {
    if (s.mask == 0) return {};
    std::vector<float> m((size_t)s.b * s.tk);
    for (int b = 0; b < s.b; ++b) for (int j = 0; j < s.tk; ++j) {
        float &x = m[(size_t)b * s.tk + j];
        if (s.mask == 1) x = b == 1 ? 0.0f : (rnd() > -0.4f ? 1.0f : 0.0f);
        else x = (b == 0 && j >= 30) ? 0.0f : (rnd() > -0.6f ? 1.0f : 0.0f);
    }
    return m;
}

static void run(const Shape &s) {
    const size_t nq = (size_t)s.b * s.tq * s.h * s.dh, nk = (size_t)s.b * s.tk * s.h * s.dh;
    auto q = randv(nq, 2.0f), k = randv(nk, 2.0f), v = randv(nk), dout = randv(nq);
    auto mask = make_mask(s);
    AttnGeom g{s.h, s.tq, s.tk, s.dh, (float)(1.0 / std::sqrt((double)std::max(s.dh, 1))),
               (float)(1.0 / (1.0 - s.p)), s.p, 0x1234abcdull, mask.empty() ? 0 : 1, 0};
    Ref r = reference(s, g, q, k, v, mask, dout);
    std::vector<float> out(nq, NAN), lse((size_t)s.b * s.h * s.tq, NAN), dq(nq, NAN), dk(nk, NAN), dv(nk, NAN);
    const float *mp = mask.empty() ? nullptr : mask.data();
    const unsigned bh = (unsigned)(s.b * s.h);
    const dim3 blk{ATT_THREADS, 1, 1};
    const dim3 gq{bh, (unsigned)((s.tq + ATT_ROWS - 1) / ATT_ROWS), 1};
    const dim3 gk{bh, (unsigned)((s.tk + ATT_ROWS - 1) / ATT_ROWS), 1};
    // The host's variant choice: the narrowest register width that holds Dh.
    auto fwd = s.dh <= 32 ? attention_fwd_dh32_f32 : s.dh <= 64 ? attention_fwd_dh64_f32 : attention_fwd_f32;
    auto dkdv = s.dh <= 32 ? attention_bwd_dkdv_dh32_f32 : s.dh <= 64 ? attention_bwd_dkdv_dh64_f32 : attention_bwd_dkdv_f32;
    auto dqk = s.dh <= 32 ? attention_bwd_dq_dh32_f32 : s.dh <= 64 ? attention_bwd_dq_dh64_f32 : attention_bwd_dq_f32;
    if (bh > 0 && gq.y > 0)
        emu_launch(gq, blk, [&] { fwd(q.data(), k.data(), v.data(), mp, out.data(), lse.data(), g); });
    if (bh > 0 && gk.y > 0 && s.dh > 0)
        emu_launch(gk, blk, [&] { dkdv(q.data(), k.data(), v.data(), mp, out.data(), lse.data(), dout.data(), dk.data(), dv.data(), g); });
    if (bh > 0 && gq.y > 0 && s.dh > 0)
        emu_launch(gq, blk, [&] { dqk(q.data(), k.data(), v.data(), mp, out.data(), lse.data(), dout.data(), dq.data(), g); });
    char name[200];
    snprintf(name, sizeof name, "B %d H %d Tq %d Tk %d Dh %d p %.2f mask %d", s.b, s.h, s.tq, s.tk, s.dh, s.p, s.mask);
    cmp("fwd out", name, out, r.out);
    cmp("fwd lse", name, lse, r.lse);
    cmp("bwd dq", name, dq, r.dq);
    cmp("bwd dk", name, dk, r.dk);
    cmp("bwd dv", name, dv, r.dv);
}

int main() {
    const Shape shapes[] = {
        {2, 3, 37, 37, 16, 0.0, 0},
        {2, 3, 37, 37, 16, 0.1, 1},
        {2, 2, 19, 45, 24, 0.1, 2},
        {2, 2, 45, 19, 13, 0.0, 1},
        {1, 2, 70, 70, 64, 0.1, 2},
        {1, 2, 70, 33, 64, 0.0, 0},
        {1, 1, 33, 40, 100, 0.1, 2},
        {1, 1, 9, 11, 128, 0.0, 1},
        {2, 1, 40, 35, 32, 0.1, 1},
        {1, 2, 23, 29, 65, 0.0, 2},
        {1, 1, 20, 70, 1, 0.1, 0},
        {1, 2, 5, 0, 8, 0.0, 0},
    };
    for (const auto &s : shapes) run(s);
    printf("%d failures\n", fails);
    return fails != 0;
}
