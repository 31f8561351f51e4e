// kernels/plane.cu (the squeeze-and-excitation block's per-plane ops) on the CPU emulator:
// plane_sum against an f64 sum of the f32 products (rounded once; the kernel's sum order
// differs, so within 1e-6 of the plane's absolute sum), plane_scale bit for bit against
// x * scale (+ shift) in f32 (bf16: rounded once), for f32 and bf16 storage, planes of 4k
// elements (vector path), odd planes and a buffer shifted by one element (scalar path), empty
// planes, and small grids (grid-stride loops).
#include "emu.h"
#include <cstdio>
#include <cstring>
#include <algorithm>
#include "../../kernels/plane.cu"

static uint64_t rs = 0x2545f4914f6cdd1dull;
static float rnd() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }
static int fails = 0;

static void report(bool ok, const char *what) {
    if (!ok) ++fails;
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
}

template <typename T> static T to_t(float v);
template <> float to_t<float>(float v) { return v; }
template <> bf16 to_t<bf16>(float v) { return f32_to_bf16(v); }
static float to_f(float v) { return v; }
static float to_f(bf16 v) { return bf16_to_f32(v); }

template <typename T>
static void run(const char *tname, int planes, int s, int shift, bool small_grid) {
    const size_t n = (size_t)planes * s + shift;
    std::vector<T> a0(n), b0(n), y(n);
    for (size_t i = 0; i < n; ++i) { a0[i] = to_t<T>(rnd()); b0[i] = to_t<T>(rnd()); }
    const T *a = a0.data() + shift, *b = b0.data() + shift;
    std::vector<float> scale(planes), sh(planes);
    for (int p = 0; p < planes; ++p) { scale[p] = rnd(); sh[p] = rnd(); }
    char name[160];
    for (int has_b = 0; has_b < 2; ++has_b) {
        std::vector<float> out(planes, NAN);
        const dim3 grid{small_grid ? 2u : (unsigned)std::max(planes, 1), 1, 1}, blk{small_grid ? 64u : 256u, 1, 1};
        emu_launch(grid, blk, [&] { plane_sum(a, b, has_b, out.data(), planes, s); });
        bool ok = true;
        for (int p = 0; p < planes && ok; ++p) {
            double ref = 0, mag = 0;
            for (int j = 0; j < s; ++j) {
                const float v = has_b ? to_f(a[(size_t)p * s + j]) * to_f(b[(size_t)p * s + j]) : to_f(a[(size_t)p * s + j]);
                ref += v;
                mag += std::fabs(v);
            }
            ok = std::fabs(out[p] - ref) <= 1e-6 * mag + 1e-30 && !std::isnan(out[p]);
        }
        snprintf(name, sizeof name, "plane_sum %s planes %d s %d shift %d b %d%s", tname, planes, s, shift, has_b, small_grid ? " small grid" : "");
        report(ok, name);
    }
    for (int has_shift = 0; has_shift < 2; ++has_shift) {
        std::fill(y.begin(), y.end(), to_t<T>(NAN));
        T *yp = y.data() + shift;
        const int work = s % 4 == 0 ? s / 4 : s;
        const dim3 grid{small_grid ? 2u : (unsigned)std::max(planes, 1), small_grid ? 1u : (unsigned)std::max(1, (work + 255) / 256), 1};
        emu_launch(grid, {64, 1, 1}, [&] { plane_scale(a, scale.data(), sh.data(), has_shift, yp, planes, s); });
        bool ok = true;
        for (int p = 0; p < planes && ok; ++p)
            for (int j = 0; j < s && ok; ++j) {
                const size_t i = (size_t)p * s + j;
                const float r = has_shift ? to_f(a[i]) * scale[p] + sh[p] : to_f(a[i]) * scale[p];
                const T want = to_t<T>(r);
                ok = std::memcmp(&want, &yp[i], sizeof(T)) == 0;
            }
        snprintf(name, sizeof name, "plane_scale %s planes %d s %d shift %d has_shift %d%s (bitwise)", tname, planes, s, shift, has_shift, small_grid ? " small grid" : "");
        report(ok, name);
    }
}

int main() {
    for (bool small : {false, true}) {
        run<float>("f32", 5, 40, 0, small);
        run<float>("f32", 5, 40, 1, small);
        run<float>("f32", 3, 37, 0, small);
        run<float>("f32", 2, 1000, 0, small);
        run<float>("f32", 3, 0, 0, small);
        run<bf16>("bf16", 5, 40, 0, small);
        run<bf16>("bf16", 5, 40, 1, small);
        run<bf16>("bf16", 3, 37, 0, small);
        run<bf16>("bf16", 2, 1000, 0, small);
    }
    printf(fails ? "%d FAILED\n" : "all plane checks passed\n", fails);
    return fails ? 1 : 0;
}
