// Runs kernels/optim.cu's multi-tensor Adam (adam_multi_f32) on the CPU through emu.h and
// compares it bit for bit with the single-tensor kernel (adam_f32) run on each tensor: odd
// sizes, tensors spanning several chunks, a chunk size that leaves scalar tails, a tiny grid
// (grid-stride over chunks), and misaligned buffers (the scalar path). The table is built like
// `step_multi` in crates/hr-tensor/src/cuda/backend/optim.rs (empty tensors get no row).
// Prints ok/FAIL lines and "N failures".
#include "emu.h"
#include <cstdio>
#include <string>
#include "../../kernels/optim.cu"

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static float rnd() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }
static int fails = 0;

/// One tensor's state: parameter, gradient, moments (each with `pad` leading floats so the
/// data can start misaligned).
struct State {
    std::vector<float> p, g, m, v;
    size_t pad;
    float *at(std::vector<float> &x) { return x.data() + pad; }
};

static State make(long n, size_t pad) {
    State s{std::vector<float>(n + pad), std::vector<float>(n + pad), std::vector<float>(n + pad),
            std::vector<float>(n + pad), pad};
    for (long i = 0; i < n; ++i) {
        s.p[pad + i] = rnd();
        s.g[pad + i] = rnd();
        s.m[pad + i] = 0.1f * rnd();
        s.v[pad + i] = 0.005f * (rnd() + 1.0f);
    }
    return s;
}

static void run(const std::string &name, const std::vector<long> &sizes, long chunk, unsigned grid_max, size_t pad) {
    AdamConsts c{0.99f, 0.9f, 0.1f, 0.999f, 0.001f, 0.0015f, 0.05f, 1e-8f};
    std::vector<State> one, multi, orig;
    for (long n : sizes) {
        one.push_back(make(n, pad));
        multi.push_back(one.back());
        orig.push_back(one.back());
    }
    for (size_t t = 0; t < sizes.size(); ++t) {
        State &s = one[t];
        if (sizes[t] == 0) continue;
        float *p = s.at(s.p), *g = s.at(s.g), *m = s.at(s.m), *v = s.at(s.v);
        emu_launch({2, 1, 1}, {32, 1, 1}, [&] { adam_f32(p, g, m, v, sizes[t], c); });
    }
    std::vector<AdamRow> rows;
    long chunks = 0;
    for (size_t t = 0; t < sizes.size(); ++t) {
        if (sizes[t] == 0) continue;
        State &s = multi[t];
        rows.push_back({(u64)s.at(s.p), (u64)s.at(s.g), (u64)s.at(s.m), (u64)s.at(s.v), sizes[t], chunks});
        chunks += (sizes[t] + chunk - 1) / chunk;
    }
    const AdamRow *rp = rows.data();
    const int count = (int)rows.size();
    unsigned grid = (unsigned)std::max<long>(1, std::min<long>(chunks, grid_max));
    emu_launch({grid, 1, 1}, {32, 1, 1}, [&] { adam_multi_f32(rp, count, chunks, chunk, c); });
    long bad = -1;
    size_t bad_t = 0;
    for (size_t t = 0; t < sizes.size() && bad < 0; ++t)
        for (long i = 0; i < sizes[t] + (long)pad; ++i) {
            if (memcmp(&one[t].p[i], &multi[t].p[i], 4) || memcmp(&one[t].m[i], &multi[t].m[i], 4) ||
                memcmp(&one[t].v[i], &multi[t].v[i], 4)) {
                bad = i;
                bad_t = t;
                break;
            }
        }
    // Every parameter element must have moved (an update that did nothing would agree too).
    long still = 0;
    for (size_t t = 0; t < sizes.size(); ++t)
        for (long i = 0; i < sizes[t]; ++i) still += multi[t].p[pad + i] == orig[t].p[pad + i];
    if (still > 0 && bad < 0) {
        bad = 0;
        printf("(%ld parameters not updated) ", still);
    }
    if (bad >= 0) ++fails;
    printf("%s adam_multi %s (%zu tensors, %ld chunks, grid %u): ", bad < 0 ? "ok" : "FAIL", name.c_str(),
           sizes.size(), chunks, grid);
    if (bad < 0) printf("bit-identical to adam_f32\n");
    else printf("tensor %zu element %ld differs\n", bad_t, bad);
}

int main() {
    const std::vector<long> sizes = {1, 0, 1001, 3 * 64 + 7, 64, 4, 13, 0};
    run("chunks of 64", sizes, 64, 1 << 18, 0);
    run("chunks of 64, grid 3", sizes, 64, 3, 0);
    run("one chunk per tensor", sizes, 4096, 1 << 18, 0);
    run("misaligned (scalar path)", sizes, 64, 5, 1);
    run("single tensor", {777}, 128, 2, 0);
    printf("%d failures\n", fails);
    return fails != 0;
}
