//! Convolution kernels (NCHW input, OIHW weight, no bias).
//!
//! Three paths, picked from the (validated) [`Conv2dSpec`]:
//!
//! * **depthwise** (`groups == c_in == c_out`): direct loops, parallel over `(n, c)` planes.
//!   A strided input row is first split into its `stride_w` phases (`phase r` holds the
//!   columns `q * stride_w + r`), so every kernel tap reads (or, backward, writes) a contiguous
//!   run of one phase and the inner loop over the output width vectorises for any stride,
//!   padding and dilation;
//! * **pointwise** (1x1, stride 1, no padding): one GEMM per (batch entry, group), no im2col;
//! * **general**: im2col per (batch entry, group) and a GEMM, parallel over the batch.
//!
//! Weight gradients that sum over the batch are accumulated per fixed batch chunk and the
//! partial sums added in order, so results do not depend on rayon's scheduling.
//!
//! bf16 activations (with an f32 weight) run the f32 kernels on their exact f32 values and
//! round `y` / `dx` once (`super::f32_acts`); `dw` stays f32.

use gemm::Parallelism;
use rayon::prelude::*;

use super::{f32_acts, float_dispatch, is_bf16, out, CpuBackend, RoundBf16, PAR_THRESHOLD};
use crate::autocast::{bf16_conv_operands, bf16_matmuls, rounded_f32};
use crate::backend::{Conv2dSpec, ConvOps};
use crate::{Float, Result, Tensor};

mod depthwise;
use depthwise::{depthwise_bwd_data, depthwise_bwd_weight, depthwise_fwd};

impl ConvOps for CpuBackend {
    fn conv2d(&self, x: &Tensor, w: &Tensor, s: &Conv2dSpec) -> Result<Tensor> {
        if is_bf16(x) {
            return f32_acts(&[x], |a| self.conv2d(a[0], w, s))?.round_bf16();
        }
        if let Some(r) = autocast_operands(s, [x, w], |[a, b]| self.conv2d(a, b, s)) {
            return r;
        }
        float_dispatch!("conv2d", x.dtype(), |T| {
            let (xs, ws) = (x.as_slice::<T>()?, w.as_slice::<T>()?);
            let y = match path(s) {
                Path::Depthwise => depthwise_fwd::<T>(xs, ws, s),
                Path::Pointwise => pointwise_fwd::<T>(xs, ws, s),
                Path::General => general_fwd::<T>(xs, ws, s),
            };
            out(y, &[s.n, s.c_out, s.h_out, s.w_out])
        })
    }

    fn conv2d_bwd_data(&self, dy: &Tensor, w: &Tensor, s: &Conv2dSpec) -> Result<Tensor> {
        if is_bf16(dy) {
            return f32_acts(&[dy], |a| self.conv2d_bwd_data(a[0], w, s))?.round_bf16();
        }
        if let Some(r) = autocast_operands(s, [dy, w], |[a, b]| self.conv2d_bwd_data(a, b, s)) {
            return r;
        }
        float_dispatch!("conv2d_bwd_data", dy.dtype(), |T| {
            let (dys, ws) = (dy.as_slice::<T>()?, w.as_slice::<T>()?);
            let dx = match path(s) {
                Path::Depthwise => depthwise_bwd_data::<T>(dys, ws, s),
                Path::Pointwise => pointwise_bwd_data::<T>(dys, ws, s),
                Path::General => general_bwd_data::<T>(dys, ws, s),
            };
            out(dx, &[s.n, s.c_in, s.h, s.w])
        })
    }

    fn conv2d_bwd_weight(&self, x: &Tensor, dy: &Tensor, s: &Conv2dSpec) -> Result<Tensor> {
        if is_bf16(x) {
            return f32_acts(&[x, dy], |a| self.conv2d_bwd_weight(a[0], a[1], s));
        }
        if let Some(r) = autocast_operands(s, [x, dy], |[a, b]| self.conv2d_bwd_weight(a, b, s)) {
            return r;
        }
        float_dispatch!("conv2d_bwd_weight", x.dtype(), |T| {
            let (xs, dys) = (x.as_slice::<T>()?, dy.as_slice::<T>()?);
            let dw = match path(s) {
                Path::Depthwise => depthwise_bwd_weight::<T>(xs, dys, s),
                Path::Pointwise => pointwise_bwd_weight::<T>(xs, dys, s),
                Path::General => general_bwd_weight::<T>(xs, dys, s),
            };
            out(dw, &[s.c_out, s.c_in / s.groups.max(1), s.kh, s.kw])
        })
    }
}

/// Which kernel family handles a geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Depthwise,
    Pointwise,
    General,
}

/// Under autocast (a dense pointwise convolution, see [`bf16_conv_operands`]): `f` on
/// bf16-rounded copies of the two operands, with autocast off inside so they round once.
fn autocast_operands(
    s: &Conv2dSpec,
    [a, b]: [&Tensor; 2],
    f: impl FnOnce([&Tensor; 2]) -> Result<Tensor>,
) -> Option<Result<Tensor>> {
    if !bf16_conv_operands(s, a.dtype()) {
        return None;
    }
    let run = || {
        let (a, b) = (rounded_f32(a)?, rounded_f32(b)?);
        let _f32 = bf16_matmuls(false);
        f([&a, &b])
    };
    Some(run())
}

fn path(s: &Conv2dSpec) -> Path {
    if s.groups == s.c_in && s.groups == s.c_out {
        Path::Depthwise
    } else if s.kh == 1 && s.kw == 1 && s.stride == (1, 1) && s.padding == (0, 0) {
        Path::Pointwise
    } else {
        Path::General
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// One kernel column `j` seen along the width: the output columns `lo..hi` read input column
/// `ow * stride + off`, i.e. element `ow + qoff` of phase `r` (`off = qoff * stride + r`).
#[derive(Debug, Clone, Copy)]
struct Tap {
    r: usize,
    qoff: isize,
    lo: usize,
    hi: usize,
}

/// Length of phase `r` of a row of `w` elements split with `stride` (`ceil((w - r) / stride)`).
fn phase_len(w: usize, stride: usize, r: usize) -> usize {
    if r >= w {
        0
    } else {
        (w - r).div_ceil(stride)
    }
}

/// The width taps of every kernel column.
fn width_taps(s: &Conv2dSpec) -> Vec<Tap> {
    let (sw, pw, dw) = (s.stride.1, s.padding.1 as isize, s.dilation.1);
    (0..s.kw)
        .map(|j| {
            let off = (j * dw) as isize - pw;
            let r = off.rem_euclid(sw as isize) as usize;
            let qoff = off.div_euclid(sw as isize);
            let len = phase_len(s.w, sw, r) as isize;
            let lo = (-qoff).max(0);
            let hi = (len - qoff).min(s.w_out as isize);
            if hi <= lo {
                Tap {
                    r,
                    qoff,
                    lo: 0,
                    hi: 0,
                }
            } else {
                Tap {
                    r,
                    qoff,
                    lo: lo as usize,
                    hi: hi as usize,
                }
            }
        })
        .collect()
}

/// Input row read by output row `oh` through kernel row `i`, if inside the image.
#[inline]
fn input_row(s: &Conv2dSpec, oh: usize, i: usize) -> Option<usize> {
    let ih = (oh * s.stride.0 + i * s.dilation.0) as isize - s.padding.0 as isize;
    if ih >= 0 && (ih as usize) < s.h {
        Some(ih as usize)
    } else {
        None
    }
}

/// Start of `tap`'s input run inside a phase row (`lo + qoff`, non-negative by construction).
#[inline]
fn run_start(t: &Tap) -> usize {
    (t.lo as isize + t.qoff) as usize
}

/// Splits a `h x w` plane into `stride` phases, each `h x lq` (`lq = ceil(w / stride)`);
/// entries past a phase's length are unspecified (never read).
fn split_phases<T: Float>(x: &[T], h: usize, w: usize, stride: usize, buf: &mut Vec<T>) {
    let lq = w.div_ceil(stride);
    buf.resize(stride * h * lq, T::zero());
    if stride == 2 {
        let (even, odd) = buf.split_at_mut(h * lq);
        for ih in 0..h {
            let src = &x[ih * w..(ih + 1) * w];
            let (e, o) = (
                &mut even[ih * lq..(ih + 1) * lq],
                &mut odd[ih * lq..(ih + 1) * lq],
            );
            let pairs = src.chunks_exact(2);
            if let [last] = pairs.remainder() {
                e[lq - 1] = *last;
            }
            for (pr, (ev, ov)) in pairs.zip(e.iter_mut().zip(o.iter_mut())) {
                *ev = pr[0];
                *ov = pr[1];
            }
        }
        return;
    }
    for ih in 0..h {
        let src = &x[ih * w..(ih + 1) * w];
        for (q, chunk) in src.chunks(stride).enumerate() {
            for (r, &v) in chunk.iter().enumerate() {
                buf[(r * h + ih) * lq + q] = v;
            }
        }
    }
}

/// Inverse of [`split_phases`]: writes the phases back into a `h x w` plane.
fn merge_phases<T: Float>(phases: &[T], h: usize, w: usize, stride: usize, x: &mut [T]) {
    let lq = w.div_ceil(stride);
    if stride == 2 {
        let (even, odd) = phases.split_at(h * lq);
        for ih in 0..h {
            let dst = &mut x[ih * w..(ih + 1) * w];
            let (e, o) = (&even[ih * lq..(ih + 1) * lq], &odd[ih * lq..(ih + 1) * lq]);
            let mut pairs = dst.chunks_exact_mut(2);
            for (pr, (&ev, &ov)) in (&mut pairs).zip(e.iter().zip(o)) {
                pr[0] = ev;
                pr[1] = ov;
            }
            if let [last] = pairs.into_remainder() {
                *last = e[lq - 1];
            }
        }
        return;
    }
    for ih in 0..h {
        let dst = &mut x[ih * w..(ih + 1) * w];
        for (q, chunk) in dst.chunks_mut(stride).enumerate() {
            for (r, v) in chunk.iter_mut().enumerate() {
                *v = phases[(r * h + ih) * lq + q];
            }
        }
    }
}

/// `y[i] += a * x[i]` (vectorises).
#[inline]
fn axpy<T: Float>(y: &mut [T], a: T, x: &[T]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv = *yv + a * xv;
    }
}

/// Dot product with eight independent accumulators (vectorises).
#[inline]
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for ((s, &xv), &yv) in acc.iter_mut().zip(x).zip(y) {
            *s = *s + xv * yv;
        }
    }
    let mut tail = T::zero();
    for (&x, &y) in ar.iter().zip(br) {
        tail = tail + x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// A row-major (or transposed) matrix operand of [`gemm_into`]: element `(i, j)` is at
/// `i * rs + j * cs`.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    fn rows(data: &'a [T], ld: usize) -> Self {
        Mat {
            data,
            rs: ld,
            cs: 1,
        }
    }
    fn cols(data: &'a [T], ld: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: ld,
        }
    }
}

/// `c (m x n, row stride n) = [c +] a (m x k) @ b (k x n)`.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    accumulate: bool,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::zero());
        }
        return;
    }
    let last = |mat: &Mat<'_, T>, r: usize, cl: usize| (r - 1) * mat.rs + (cl - 1) * mat.cs;
    // Soundness of the raw-pointer call below: every addressed element is in bounds.
    assert!(c.len() >= m * n, "gemm_into: output too small");
    assert!(a.data.len() > last(&a, m, k), "gemm_into: lhs too small");
    assert!(b.data.len() > last(&b, k, n), "gemm_into: rhs too small");
    // SAFETY: the asserts above bound every index the strides address; `c` is borrowed mutably
    // and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { T::one() } else { T::zero() },
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}

/// GEMMs below this many multiply-adds are not worth threading inside.
const SMALL_GEMM: usize = 1 << 17;

/// Parallelism of the GEMMs inside a loop over `outer` independent work items.
fn inner_par(outer: usize, gemm_work: usize) -> Parallelism {
    if outer < rayon::current_num_threads() && gemm_work >= SMALL_GEMM {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// Number of batch chunks for a batch reduction (one per thread at most) and their size.
fn batch_chunks(n: usize) -> (usize, usize) {
    let chunks = n.min(rayon::current_num_threads()).max(1);
    let size = n.div_ceil(chunks).max(1);
    (n.div_ceil(size), size)
}

/// Sums per-chunk partial weight gradients, in chunk order.
fn sum_partials<T: Float>(parts: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut it = parts.into_iter();
    let mut acc = it.next().unwrap_or_else(|| vec![T::zero(); len]);
    for p in it {
        for (a, v) in acc.iter_mut().zip(p) {
            *a = *a + v;
        }
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Depthwise: groups == c_in == c_out, weight (C, 1, kh, kw).

fn pointwise_fwd<T: Float>(x: &[T], w: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (cig, cog, hw) = (s.c_in / s.groups, s.c_out / s.groups, s.h * s.w);
    let mut y = vec![T::zero(); s.n * s.c_out * hw];
    if y.is_empty() {
        return y;
    }
    let par = inner_par(s.n, cog * cig * hw);
    let one = |ni: usize, yn: &mut [T]| {
        let xn = &x[ni * s.c_in * hw..(ni + 1) * s.c_in * hw];
        for g in 0..s.groups {
            gemm_into(
                cog,
                hw,
                cig,
                &mut yn[g * cog * hw..(g + 1) * cog * hw],
                Mat::rows(&w[g * cog * cig..], cig),
                Mat::rows(&xn[g * cig * hw..], hw),
                false,
                par,
            );
        }
    };
    y.par_chunks_mut(s.c_out * hw)
        .enumerate()
        .for_each(|(ni, yn)| one(ni, yn));
    y
}

fn pointwise_bwd_data<T: Float>(dy: &[T], w: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (cig, cog, hw) = (s.c_in / s.groups, s.c_out / s.groups, s.h * s.w);
    let mut dx = vec![T::zero(); s.n * s.c_in * hw];
    if dx.is_empty() {
        return dx;
    }
    let par = inner_par(s.n, cog * cig * hw);
    dx.par_chunks_mut(s.c_in * hw)
        .enumerate()
        .for_each(|(ni, dxn)| {
            let dyn_ = &dy[ni * s.c_out * hw..(ni + 1) * s.c_out * hw];
            for g in 0..s.groups {
                // dx_g (cig x hw) = W_g^T (cig x cog) @ dy_g (cog x hw).
                gemm_into(
                    cig,
                    hw,
                    cog,
                    &mut dxn[g * cig * hw..(g + 1) * cig * hw],
                    Mat::cols(&w[g * cog * cig..], cig),
                    Mat::rows(&dyn_[g * cog * hw..], hw),
                    false,
                    par,
                );
            }
        });
    dx
}

fn pointwise_bwd_weight<T: Float>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (cig, cog, hw) = (s.c_in / s.groups, s.c_out / s.groups, s.h * s.w);
    let len = s.c_out * cig;
    let (chunks, size) = batch_chunks(s.n);
    let par = inner_par(chunks, cog * cig * hw);
    let parts: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|ch| {
            let mut acc = vec![T::zero(); len];
            for ni in ch * size..((ch + 1) * size).min(s.n) {
                let xn = &x[ni * s.c_in * hw..(ni + 1) * s.c_in * hw];
                let dyn_ = &dy[ni * s.c_out * hw..(ni + 1) * s.c_out * hw];
                for g in 0..s.groups {
                    // dW_g (cog x cig) += dy_g (cog x hw) @ x_g^T (hw x cig).
                    gemm_into(
                        cog,
                        cig,
                        hw,
                        &mut acc[g * cog * cig..(g + 1) * cog * cig],
                        Mat::rows(&dyn_[g * cog * hw..], hw),
                        Mat::cols(&xn[g * cig * hw..], hw),
                        true,
                        par,
                    );
                }
            }
            acc
        })
        .collect();
    sum_partials(parts, len)
}

// ---------------------------------------------------------------------------------------------
// General: im2col + GEMM per (batch entry, group).

/// Fills `col` ((cig*kh*kw) x (h_out*w_out)) from the `cig` input planes of one group.
fn im2col<T: Float>(xg: &[T], cig: usize, taps: &[Tap], s: &Conv2dSpec, col: &mut Vec<T>) {
    let (hw, khw, p) = (s.h * s.w, s.kh * s.kw, s.h_out * s.w_out);
    col.clear();
    col.resize(cig * khw * p, T::zero());
    let sw = s.stride.1;
    for ci in 0..cig {
        let plane = &xg[ci * hw..(ci + 1) * hw];
        for i in 0..s.kh {
            for (j, t) in taps.iter().enumerate() {
                let row = &mut col[((ci * s.kh + i) * s.kw + j) * p..][..p];
                if t.hi == t.lo {
                    continue;
                }
                let base = run_start(t) * sw + t.r;
                for oh in 0..s.h_out {
                    let Some(ih) = input_row(s, oh, i) else {
                        continue;
                    };
                    let src = &plane[ih * s.w..(ih + 1) * s.w];
                    let dst = &mut row[oh * s.w_out + t.lo..oh * s.w_out + t.hi];
                    if sw == 1 {
                        dst.copy_from_slice(&src[base..base + dst.len()]);
                    } else {
                        for (q, d) in dst.iter_mut().enumerate() {
                            *d = src[base + q * sw];
                        }
                    }
                }
            }
        }
    }
}

/// Adds `col` (as produced by [`im2col`]) back into the `cig` input-gradient planes of a group.
fn col2im<T: Float>(col: &[T], cig: usize, taps: &[Tap], s: &Conv2dSpec, dxg: &mut [T]) {
    let (hw, p) = (s.h * s.w, s.h_out * s.w_out);
    let sw = s.stride.1;
    for ci in 0..cig {
        let plane = &mut dxg[ci * hw..(ci + 1) * hw];
        for i in 0..s.kh {
            for (j, t) in taps.iter().enumerate() {
                if t.hi == t.lo {
                    continue;
                }
                let row = &col[((ci * s.kh + i) * s.kw + j) * p..][..p];
                let base = run_start(t) * sw + t.r;
                for oh in 0..s.h_out {
                    let Some(ih) = input_row(s, oh, i) else {
                        continue;
                    };
                    let dst = &mut plane[ih * s.w..(ih + 1) * s.w];
                    let src = &row[oh * s.w_out + t.lo..oh * s.w_out + t.hi];
                    if sw == 1 {
                        axpy(&mut dst[base..base + src.len()], T::one(), src);
                    } else {
                        for (q, &v) in src.iter().enumerate() {
                            dst[base + q * sw] = dst[base + q * sw] + v;
                        }
                    }
                }
            }
        }
    }
}

fn general_fwd<T: Float>(x: &[T], w: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    let (hw, k, p) = (s.h * s.w, cig * s.kh * s.kw, s.h_out * s.w_out);
    let mut y = vec![T::zero(); s.n * s.c_out * p];
    if y.is_empty() {
        return y;
    }
    let taps = width_taps(s);
    let par = inner_par(s.n, cog * k * p);
    y.par_chunks_mut(s.c_out * p)
        .enumerate()
        .for_each_init(Vec::new, |col, (ni, yn)| {
            let xn = &x[ni * s.c_in * hw..(ni + 1) * s.c_in * hw];
            for g in 0..s.groups {
                im2col(&xn[g * cig * hw..(g + 1) * cig * hw], cig, &taps, s, col);
                gemm_into(
                    cog,
                    p,
                    k,
                    &mut yn[g * cog * p..(g + 1) * cog * p],
                    Mat::rows(&w[g * cog * k..], k),
                    Mat::rows(col, p),
                    false,
                    par,
                );
            }
        });
    y
}

fn general_bwd_data<T: Float>(dy: &[T], w: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    let (hw, k, p) = (s.h * s.w, cig * s.kh * s.kw, s.h_out * s.w_out);
    let mut dx = vec![T::zero(); s.n * s.c_in * hw];
    if dx.is_empty() {
        return dx;
    }
    let taps = width_taps(s);
    let par = inner_par(s.n, cog * k * p);
    dx.par_chunks_mut(s.c_in * hw)
        .enumerate()
        .for_each_init(Vec::new, |col, (ni, dxn)| {
            let dyn_ = &dy[ni * s.c_out * p..(ni + 1) * s.c_out * p];
            col.clear();
            col.resize(k * p, T::zero());
            for g in 0..s.groups {
                // dcol (k x p) = W_g^T (k x cog) @ dy_g (cog x p).
                gemm_into(
                    k,
                    p,
                    cog,
                    col,
                    Mat::cols(&w[g * cog * k..], k),
                    Mat::rows(&dyn_[g * cog * p..], p),
                    false,
                    par,
                );
                col2im(
                    col,
                    cig,
                    &taps,
                    s,
                    &mut dxn[g * cig * hw..(g + 1) * cig * hw],
                );
            }
        });
    dx
}

fn general_bwd_weight<T: Float>(x: &[T], dy: &[T], s: &Conv2dSpec) -> Vec<T> {
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    let (hw, k, p) = (s.h * s.w, cig * s.kh * s.kw, s.h_out * s.w_out);
    let len = s.c_out * k;
    let taps = width_taps(s);
    let (chunks, size) = batch_chunks(s.n);
    let par = inner_par(chunks, cog * k * p);
    let parts: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|ch| {
            let mut acc = vec![T::zero(); len];
            let mut col = Vec::new();
            for ni in ch * size..((ch + 1) * size).min(s.n) {
                let xn = &x[ni * s.c_in * hw..(ni + 1) * s.c_in * hw];
                let dyn_ = &dy[ni * s.c_out * p..(ni + 1) * s.c_out * p];
                for g in 0..s.groups {
                    im2col(
                        &xn[g * cig * hw..(g + 1) * cig * hw],
                        cig,
                        &taps,
                        s,
                        &mut col,
                    );
                    // dW_g (cog x k) += dy_g (cog x p) @ col^T (p x k).
                    gemm_into(
                        cog,
                        k,
                        p,
                        &mut acc[g * cog * k..(g + 1) * cog * k],
                        Mat::rows(&dyn_[g * cog * p..], p),
                        Mat::cols(&col, p),
                        true,
                        par,
                    );
                }
            }
            acc
        })
        .collect();
    sum_partials(parts, len)
}
