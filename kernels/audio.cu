// Audio family: the framing step of the mel frontend (preemphasis, reflect padding, framing and
// window multiply in one pass). CPU twin: crates/hr-tensor/src/cpu/audio.rs.
// One thread per output element (grid-stride), consecutive threads along the n_fft axis, so
// the window reads, the output writes and (inside the signal) the input reads are coalesced.
#include "common.cuh"

/// Frame geometry (mirrors `FrameGeom` in crates/hr-tensor/src/cuda/backend/audio.rs).
struct FrameGeom {
    i64 n;      // samples per waveform (input row length)
    i64 len;    // preemphasised length = n - 1
    i64 frames; // frames per waveform
    i64 n_fft;  // frame length
    i64 hop;    // hop between frames
    i64 pad;    // reflect padding on each side (n_fft / 2)
    i64 total;  // batch * frames * n_fft output elements
};

/// `y[(b * frames + t) * n_fft + j] = (x[b, i + 1] - c * x[b, i]) * w[j]` where
/// `i = reflect(t * hop + j - pad)` over the preemphasised signal of `len` samples (numpy
/// `reflect`: the edge sample is not repeated; the host guarantees `len > pad`).
template <typename T>
__device__ void frame_signal(const T *x, const T *w, T *y, FrameGeom g, float c) {
    GRID_STRIDE(o, g.total) {
        const i64 j = o % g.n_fft;
        const i64 r = o / g.n_fft;
        const i64 t = r % g.frames;
        const i64 b = r / g.frames;
        i64 i = t * g.hop + j - g.pad;
        if (i < 0) i = -i;
        if (i >= g.len) i = 2 * (g.len - 1) - i;
        const T *xb = x + b * g.n;
        const float pre = load(xb, i + 1) - c * load(xb, i);
        store(y, o, pre * load(w, j));
    }
}

HR_EXTERN void frame_signal_f32(const float *x, const float *w, float *y, FrameGeom g, float c) {
    frame_signal(x, w, y, g, c);
}
