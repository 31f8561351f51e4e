//! The depthwise path (`groups == c_in == c_out`): direct loops over `(n, c)` planes on the
//! phase-split input rows (see the parent module).

use std::ops::Range;

use super::*;

/// Visits every (output row, kernel tap) pair that reads input, in a fixed order:
/// `f(k, input run, output run)` with `k = i * kw + j` the tap's kernel index, the input run in
/// the phase-split plane (see the parent module) and the output run in the flat output plane.
fn for_each_run(
    s: &Conv2dSpec,
    taps: &[Tap],
    mut f: impl FnMut(usize, Range<usize>, Range<usize>),
) {
    let lq = s.w.div_ceil(s.stride.1);
    for oh in 0..s.h_out {
        for i in 0..s.kh {
            let Some(ih) = input_row(s, oh, i) else {
                continue;
            };
            for (j, t) in taps.iter().enumerate() {
                if t.hi == t.lo {
                    continue;
                }
                let at = (t.r * s.h + ih) * lq + run_start(t);
                let out = oh * s.w_out;
                f(i * s.kw + j, at..at + (t.hi - t.lo), out + t.lo..out + t.hi);
            }
        }
    }
}

/// Forward of one plane: `y (h_out x w_out) = x conv w`, `xp` = phases of the input plane.
pub(super) fn dw_plane_fwd<T: Float>(
    xp: &[T],
    wk: &[T],
    taps: &[Tap],
    s: &Conv2dSpec,
    y: &mut [T],
) {
    for_each_run(s, taps, |k, inp, out| axpy(&mut y[out], wk[k], &xp[inp]));
}

/// Backward-data of one plane: accumulates into the phases `dxp` of the input gradient.
pub(super) fn dw_plane_bwd_data<T: Float>(
    dy: &[T],
    wk: &[T],
    taps: &[Tap],
    s: &Conv2dSpec,
    dxp: &mut [T],
) {
    for_each_run(s, taps, |k, inp, out| axpy(&mut dxp[inp], wk[k], &dy[out]));
}

/// Backward-weight of one plane: `dwk[i, j] = sum dy * x(shifted)`.
pub(super) fn dw_plane_bwd_weight<T: Float>(
    xp: &[T],
    dy: &[T],
    taps: &[Tap],
    s: &Conv2dSpec,
    dwk: &mut [T],
) {
    dwk.fill(T::zero());
    for_each_run(s, taps, |k, inp, out| {
        dwk[k] = dwk[k] + dot(&dy[out], &xp[inp]);
    });
}

/// Runs `f(plane index, output chunk, scratch)` over equal output chunks, in parallel when the
/// whole job is large enough.
pub(super) fn for_planes<T: Float>(
    outv: &mut [T],
    chunk: usize,
    work: usize,
    f: impl Fn(usize, &mut [T], &mut Vec<T>) + Sync + Send,
) {
    if chunk == 0 {
        return;
    }
    if work >= PAR_THRESHOLD {
        outv.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(Vec::new, |buf, (p, o)| f(p, o, buf));
    } else {
        let mut buf = Vec::new();
        for (p, o) in outv.chunks_mut(chunk).enumerate() {
            f(p, o, &mut buf);
        }
    }
}

pub(super) fn depthwise_fwd<T: Float>(x: &[T], w: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (c, hw, khw) = (s.c_in, s.h * s.w, s.kh * s.kw);
    let plane_out = s.h_out * s.w_out;
    let mut y = vec![T::zero(); s.n * c * plane_out];
    let taps = width_taps(s);
    let work = y.len() * khw;
    for_planes(&mut y, plane_out, work, |p, yp, buf| {
        let xplane = &x[p * hw..(p + 1) * hw];
        let wk = &w[(p % c) * khw..(p % c + 1) * khw];
        if s.stride.1 == 1 {
            dw_plane_fwd(xplane, wk, &taps, s, yp);
        } else {
            split_phases(xplane, s.h, s.w, s.stride.1, buf);
            dw_plane_fwd(buf, wk, &taps, s, yp);
        }
    });
    y
}

pub(super) fn depthwise_bwd_data<T: Float>(dy: &[T], w: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (c, hw, khw) = (s.c_in, s.h * s.w, s.kh * s.kw);
    let plane_out = s.h_out * s.w_out;
    let mut dx = vec![T::zero(); s.n * c * hw];
    let taps = width_taps(s);
    let work = s.n * c * plane_out * khw;
    for_planes(&mut dx, hw, work, |p, dxp, buf| {
        let dyp = &dy[p * plane_out..(p + 1) * plane_out];
        let wk = &w[(p % c) * khw..(p % c + 1) * khw];
        if s.stride.1 == 1 {
            dw_plane_bwd_data(dyp, wk, &taps, s, dxp);
        } else {
            let sw = s.stride.1;
            buf.clear();
            buf.resize(sw * s.h * s.w.div_ceil(sw), T::zero());
            dw_plane_bwd_data(dyp, wk, &taps, s, buf);
            merge_phases(buf, s.h, s.w, sw, dxp);
        }
    });
    dx
}

pub(super) fn depthwise_bwd_weight<T: Float>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (c, hw, khw) = (s.c_in, s.h * s.w, s.kh * s.kw);
    let plane_out = s.h_out * s.w_out;
    // Per-plane partial gradients (N*C*kh*kw, small), then an ordered sum over the batch.
    let mut partial = vec![T::zero(); s.n * c * khw];
    let taps = width_taps(s);
    let work = s.n * c * plane_out * khw;
    for_planes(&mut partial, khw, work, |p, dwk, buf| {
        let xplane = &x[p * hw..(p + 1) * hw];
        let dyp = &dy[p * plane_out..(p + 1) * plane_out];
        if s.stride.1 == 1 {
            dw_plane_bwd_weight(xplane, dyp, &taps, s, dwk);
        } else {
            split_phases(xplane, s.h, s.w, s.stride.1, buf);
            dw_plane_bwd_weight(buf, dyp, &taps, s, dwk);
        }
    });
    let mut dw = vec![T::zero(); c * khw];
    for part in partial.chunks(c * khw) {
        for (a, &v) in dw.iter_mut().zip(part) {
            *a = *a + v;
        }
    }
    dw
}

// ---------------------------------------------------------------------------------------------
// Pointwise: 1x1, stride 1, no padding; per (batch entry, group) `y = W_g @ x_g`.
