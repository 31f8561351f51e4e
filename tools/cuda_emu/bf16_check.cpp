// The bf16 storage conversions of kernels/common.cuh (used by cast_f32_bf16 / cast_bf16_f32 in
// kernels/elementwise.cu) against an independent reference: the nearer of the two bf16
// neighbours, ties to the even one, overflow to infinity, NaN stays NaN.
#include "emu.h"
#include <cstdio>
#include "../../kernels/elementwise.cu"

static int fails = 0;

/// Reference rounding of a finite or infinite f32 to bf16 bits, in double arithmetic.
static unsigned short ref_round(float v) {
    unsigned x = __float_as_uint(v);
    unsigned short lo = (unsigned short)(x >> 16), hi = (unsigned short)(lo + 1);
    if ((x & 0xffffu) == 0) return lo;
    double a = __uint_as_float((unsigned)lo << 16), b = __uint_as_float((unsigned)hi << 16);
    double da = std::fabs((double)v - a), db = std::fabs((double)v - b);
    if (std::isinf(b)) db = std::ldexp(1.0, 128) - std::fabs((double)v);  // past the largest finite
    if (da < db) return lo;
    if (db < da) return hi;
    return (lo & 1) ? hi : lo;
}

int main() {
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256,
                             3.14159265f, -2.71828f, 1e-40f, -1e-45f, 3.3895314e38f,
                             3.4028235e38f, INFINITY, -INFINITY};
    uint64_t s = 12345;
    for (int i = 0; i < 20000; ++i) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        unsigned bits = (unsigned)(s >> 11);
        float f = __uint_as_float(bits);
        if (!std::isnan(f)) xs.push_back(f);
    }
    const i64 n = (i64)xs.size();
    std::vector<bf16> y(n);
    std::vector<float> back(n, NAN);
    emu_launch({3, 1, 1}, {64, 1, 1}, [&] { cast_f32_bf16(xs.data(), y.data(), n); });
    emu_launch({3, 1, 1}, {64, 1, 1}, [&] { cast_bf16_f32(y.data(), back.data(), n); });
    int bad = 0;
    for (i64 i = 0; i < n; ++i) {
        unsigned short want = ref_round(xs[i]);
        if (y[i].bits != want || __float_as_uint(back[i]) != (unsigned)want << 16) {
            if (bad++ < 5) printf("  x %a: got %04x want %04x\n", xs[i], y[i].bits, want);
        }
    }
    printf("%s cast f32->bf16->f32 on %lld values (ties, subnormals, overflow, infinities)\n",
           bad ? "FAIL" : "ok", (long long)n);
    fails += bad != 0;
    // Buffers one element off 16 / 8-byte alignment take the scalar path; the results agree.
    std::vector<bf16> y1(n);
    std::vector<float> back1(n, NAN);
    emu_launch({2, 1, 1}, {32, 1, 1}, [&] { cast_f32_bf16(xs.data() + 1, y1.data() + 1, n - 1); });
    emu_launch({2, 1, 1}, {32, 1, 1}, [&] { cast_bf16_f32(y1.data() + 1, back1.data() + 1, n - 1); });
    int bad1 = 0;
    for (i64 i = 1; i < n; ++i)
        bad1 += y1[i].bits != y[i].bits || __float_as_uint(back1[i]) != __float_as_uint(back[i]);
    printf("%s cast on misaligned buffers (scalar path) equals the vector path\n", bad1 ? "FAIL" : "ok");
    fails += bad1 != 0;
    bf16 q = f32_to_bf16(NAN);
    bool nan_ok = std::isnan(bf16_to_f32(q));
    printf("%s NaN stays NaN\n", nan_ok ? "ok" : "FAIL");
    fails += !nan_ok;
    printf("%d failures\n", fails);
    return fails != 0;
}
