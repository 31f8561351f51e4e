//! Batch norm over axis 1 (the batch-norm family): per-channel kernels over `x` viewed as
//! (N, C, S) with `S` the product of the spatial axes. Statistics are accumulated in f64 per
//! (n, c) plane, planes split across threads for large inputs, and the per-plane partial sums
//! added in a fixed order (results do not depend on the number of threads). bf16 activations
//! with f32 parameters go through `super::f32_acts`: f32 compute, `y` / `dx` rounded once,
//! statistics and parameter gradients f32.

use rayon::prelude::*;

use super::elementwise::{unary_df, unary_f};
use super::{f32_acts, float_dispatch, is_bf16, out, CpuBackend, RoundBf16, PAR_THRESHOLD};
use crate::backend::{
    Affine, BatchNormOps, BatchNormTrain, NormGrads, NormSaved, NormStats, Unary,
};
use crate::checks::nc_spatial;
use crate::{Elem, Float, Result, Tensor};

impl BatchNormOps for CpuBackend {
    /// bf16 `x`: the f32 op on its values, `y` rounded once (the statistics stay f32).
    fn batch_norm_train(&self, x: &Tensor, p: BatchNormTrain) -> Result<(Tensor, NormStats)> {
        let (a, run, act) = (p.affine, p.running, p.act);
        let (g, b, [rm, rv]) = (a.gamma, a.beta, [run.mean, run.var]);
        let hyper = (run.momentum, a.eps);
        if !is_bf16(x) {
            return batch_norm_train(x, g, b, rm, rv, hyper, act);
        }
        f32_acts(&[x], |a| batch_norm_train(a[0], g, b, rm, rv, hyper, act))?.round_bf16()
    }
    fn batch_norm_eval(&self, x: &Tensor, p: Affine, running: [&Tensor; 2]) -> Result<Tensor> {
        if is_bf16(x) {
            return f32_acts(&[x], |a| batch_norm_eval(a[0], p, running))?.round_bf16();
        }
        batch_norm_eval(x, p, running)
    }
    /// bf16 `x` and `dy`: the f32 op on their values, `dx` rounded once.
    fn batch_norm_bwd(
        &self,
        saved: NormSaved,
        dy: &Tensor,
        act: Option<(Unary, &Tensor)>,
    ) -> Result<NormGrads> {
        if !is_bf16(saved.x) {
            return batch_norm_bwd(saved, dy, act);
        }
        let grads = f32_acts(&[saved.x, dy], |a| {
            batch_norm_bwd(NormSaved { x: a[0], ..saved }, a[1], act)
        })?;
        Ok(NormGrads {
            dx: grads.dx.round_bf16()?,
            ..grads
        })
    }
}

/// `sum(f(a[i], b[i]))` in f64 with four independent accumulators (vectorises).
#[inline]
fn sum2<T: Float>(a: &[T], b: &[T], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for ((s, &xv), &yv) in acc.iter_mut().zip(x).zip(y) {
            *s += f(Elem::to_f64(xv), Elem::to_f64(yv));
        }
    }
    let tail: f64 = ar
        .iter()
        .zip(br)
        .map(|(&x, &y)| f(Elem::to_f64(x), Elem::to_f64(y)))
        .sum();
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

/// `f(plane index)` for every (n, c) plane, in parallel when `total` elements are many.
fn per_plane<R: Send>(planes: usize, s: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if planes * s >= PAR_THRESHOLD {
        (0..planes)
            .into_par_iter()
            .with_min_len((PAR_THRESHOLD / s.max(1)).max(1))
            .map(f)
            .collect()
    } else {
        (0..planes).map(f).collect()
    }
}

/// Sums per-plane values over the batch: `out[c] = sum_n v[n * C + c]`.
fn over_batch(v: &[f64], c: usize) -> Vec<f64> {
    let mut acc = vec![0f64; c];
    for row in v.chunks(c.max(1)) {
        acc.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
    acc
}

/// `out[p] = f(c, x-plane, y-plane)` written plane by plane, in parallel for large inputs.
fn map_planes<T: Float>(
    x: &[T],
    dy: Option<&[T]>,
    c: usize,
    s: usize,
    f: impl Fn(usize, &[T], &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    if s == 0 || c == 0 {
        return y;
    }
    let body = |(p, yp): (usize, &mut [T])| {
        let xp = &x[p * s..(p + 1) * s];
        let dp = dy.map_or(xp, |d| &d[p * s..(p + 1) * s]);
        f(p % c, xp, dp, yp);
    };
    if x.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(s)
            .enumerate()
            .with_min_len((PAR_THRESHOLD / s).max(1))
            .for_each(body);
    } else {
        y.chunks_mut(s).enumerate().for_each(body);
    }
    y
}

/// Binds `$f` to `|z| $fun(kind, z)` for the activation `$act` (a `Unary`) and evaluates
/// `$body` with it: ReLU and Hardswish (the CNN's) get a closure whose kind is a constant,
/// so the per-element loop in `$body` has no `match` and vectorises; other kinds dispatch at
/// run time.
macro_rules! with_act {
    ($act:expr, $fun:ident, $f:ident => $body:expr) => {
        match $act {
            Unary::Relu => {
                let $f = |z| $fun(Unary::Relu, z);
                $body
            }
            Unary::Hardswish => {
                let $f = |z| $fun(Unary::Hardswish, z);
                $body
            }
            kind => {
                let $f = move |z| $fun(kind, z);
                $body
            }
        }
    };
}

/// `y = act((x - m[c]) * a[c] + b[c])` (`act` None: the affine map alone).
fn affine_planes<T: Float>(
    x: &[T],
    c: usize,
    s: usize,
    mab: [&[T]; 3],
    act: Option<Unary>,
) -> Vec<T> {
    match act {
        None => affine_with(x, c, s, mab, |z| z),
        Some(kind) => with_act!(kind, unary_f, f => affine_with(x, c, s, mab, f)),
    }
}

/// `y = f((x - m[c]) * a[c] + b[c])` plane by plane.
fn affine_with<T: Float>(
    x: &[T],
    c: usize,
    s: usize,
    [m, a, b]: [&[T]; 3],
    f: impl Fn(T) -> T + Sync,
) -> Vec<T> {
    map_planes(x, None, c, s, |ch, xp, _, yp| {
        let (mv, av, bv) = (m[ch], a[ch], b[ch]);
        for (y, &v) in yp.iter_mut().zip(xp) {
            *y = f((v - mv) * av + bv);
        }
    })
}

/// Converts f64 values to a per-channel tensor of `T`.
fn channel_tensor<T: Float>(v: impl IntoIterator<Item = f64>, shape: &[usize]) -> Result<Tensor> {
    out(v.into_iter().map(T::c).collect::<Vec<T>>(), shape)
}

/// Train-mode batch norm; with `act` its output goes through the activation in the same
/// pass (the fused batch norm + activation: the normalised tensor is never stored).
pub(super) fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    (momentum, eps): (f64, f64),
    act: Option<Unary>,
) -> Result<(Tensor, NormStats)> {
    const OP: &str = "batch_norm_train";
    let (n, c, s) = nc_spatial(OP, x)?;
    let m = n * s;
    float_dispatch!(OP, x.dtype(), |T| {
        let xs = x.as_slice::<T>()?;
        let sums = per_plane(n * c, s, |p| {
            let xp = &xs[p * s..(p + 1) * s];
            sum2(xp, xp, |v, _| v)
        });
        let mean: Vec<f64> = over_batch(&sums, c).iter().map(|v| v / m as f64).collect();
        let sq = per_plane(n * c, s, |p| {
            let xp = &xs[p * s..(p + 1) * s];
            let mu = mean[p % c];
            sum2(xp, xp, |v, _| (v - mu) * (v - mu))
        });
        let var: Vec<f64> = over_batch(&sq, c).iter().map(|v| v / m as f64).collect();
        let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let g = gamma.as_slice::<T>()?;
        let mean_t: Vec<T> = mean.iter().map(|&v| T::c(v)).collect();
        let a: Vec<T> = rstd
            .iter()
            .zip(g)
            .map(|(&r, &gv)| T::c(r * Elem::to_f64(gv)))
            .collect();
        let y = affine_planes(xs, c, s, [&mean_t, &a, beta.as_slice::<T>()?], act);
        let unbias = m as f64 / (m as f64 - 1.0);
        for (rm, &mu) in running_mean.as_mut_slice::<T>()?.iter_mut().zip(&mean) {
            *rm = T::c((1.0 - momentum) * Elem::to_f64(*rm) + momentum * mu);
        }
        for (rv, &v) in running_var.as_mut_slice::<T>()?.iter_mut().zip(&var) {
            *rv = T::c((1.0 - momentum) * Elem::to_f64(*rv) + momentum * v * unbias);
        }
        let stats = NormStats {
            mean: out(mean_t, &[c])?,
            rstd: channel_tensor::<T>(rstd, &[c])?,
        };
        Ok((out(y, x.shape())?, stats))
    })
}

/// The operands of the batch-norm backward (x, dy, gamma and the statistics as slices, the
/// geometry and the count `m = N * S`).
struct BwdOperands<'a, T> {
    xs: &'a [T],
    dys: &'a [T],
    g: &'a [T],
    mean: &'a [T],
    rstd: &'a [T],
    planes: usize,
    c: usize,
    s: usize,
    m: f64,
}

/// The batch-norm backward with `dz(channel, x, dy)` the gradient at the normalised value
/// (`fused`: it differs from dy and is formed per plane for the sums): `(dx, dgamma,
/// dbeta)`.
fn bwd_with<T: Float>(
    o: &BwdOperands<'_, T>,
    fused: bool,
    dz: impl Fn(usize, T, T) -> T + Sync,
) -> (Vec<T>, Vec<f64>, Vec<f64>) {
    let (c, s) = (o.c, o.s);
    // Per plane: (sum dz, sum dz * (x - mean)).
    let parts = per_plane(o.planes, s, |p| {
        let (xp, dp) = (&o.xs[p * s..(p + 1) * s], &o.dys[p * s..(p + 1) * s]);
        let (ch, mu) = (p % c, Elem::to_f64(o.mean[p % c]));
        let plane: Vec<T>;
        let dp = match fused {
            true => {
                plane = xp.iter().zip(dp).map(|(&v, &d)| dz(ch, v, d)).collect();
                &plane[..]
            }
            false => dp,
        };
        (sum2(dp, dp, |d, _| d), sum2(xp, dp, |v, d| (v - mu) * d))
    });
    let dbeta = over_batch(&parts.iter().map(|p| p.0).collect::<Vec<_>>(), c);
    let sdyx = over_batch(&parts.iter().map(|p| p.1).collect::<Vec<_>>(), c);
    let dgamma: Vec<f64> = sdyx
        .iter()
        .zip(o.rstd)
        .map(|(&v, &r)| v * Elem::to_f64(r))
        .collect();
    // dx = gamma * rstd * (dy - dbeta / M - (x - mean) * rstd * dgamma / M).
    let k1: Vec<T> = o.g.iter().zip(o.rstd).map(|(&gv, &r)| gv * r).collect();
    let k2: Vec<T> = dbeta.iter().map(|&v| T::c(v / o.m)).collect();
    let k3: Vec<T> = dgamma
        .iter()
        .zip(o.rstd)
        .map(|(&dg, &r)| T::c(dg * Elem::to_f64(r) / o.m))
        .collect();
    let dx = map_planes(o.xs, Some(o.dys), c, s, |ch, xp, dp, op| {
        let (mu, a, b, k) = (o.mean[ch], k1[ch], k2[ch], k3[ch]);
        for ((out, &v), &d) in op.iter_mut().zip(xp).zip(dp) {
            *out = a * (dz(ch, v, d) - b - (v - mu) * k);
        }
    });
    (dx, dgamma, dbeta)
}

fn batch_norm_eval(
    x: &Tensor,
    p: Affine,
    [running_mean, running_var]: [&Tensor; 2],
) -> Result<Tensor> {
    const OP: &str = "batch_norm_eval";
    let (gamma, beta, eps) = (p.gamma, p.beta, p.eps);
    let (_, c, s) = nc_spatial(OP, x)?;
    float_dispatch!(OP, x.dtype(), |T| {
        let (g, rv) = (gamma.as_slice::<T>()?, running_var.as_slice::<T>()?);
        let a: Vec<T> = g
            .iter()
            .zip(rv)
            .map(|(&gv, &v)| T::c(Elem::to_f64(gv) / (Elem::to_f64(v) + eps).sqrt()))
            .collect();
        let (rm, b) = (running_mean.as_slice::<T>()?, beta.as_slice::<T>()?);
        let y = affine_planes(x.as_slice::<T>()?, c, s, [rm, &a, b], None);
        out(y, x.shape())
    })
}

/// Backward of the train-mode batch norm; with `act` (the activation and the batch norm's
/// beta) the backward of the fused batch norm + activation: the gradient at the normalised
/// value, `dy * act'(z)` with `z = (x - mean) * round(rstd * gamma) + beta` recomputed per
/// element (as the CUDA kernels do), is formed plane by plane and never stored whole.
fn batch_norm_bwd(
    saved: NormSaved,
    dy: &Tensor,
    act: Option<(Unary, &Tensor)>,
) -> Result<NormGrads> {
    const OP: &str = "batch_norm_bwd";
    let (x, gamma, stats) = (saved.x, saved.gamma, saved.stats);
    let (n, c, s) = nc_spatial(OP, x)?;
    float_dispatch!(OP, x.dtype(), |T| {
        let (xs, dys, g) = (
            x.as_slice::<T>()?,
            dy.as_slice::<T>()?,
            gamma.as_slice::<T>()?,
        );
        let (mean, rstd) = (stats.mean.as_slice::<T>()?, stats.rstd.as_slice::<T>()?);
        let ops = BwdOperands {
            xs,
            dys,
            g,
            mean,
            rstd,
            planes: n * c,
            c,
            s,
            m: (n * s) as f64,
        };
        // The gradient at the normalised value: dy, or dy * act'(z).
        let (dx, dgamma, dbeta) = match act {
            None => bwd_with(&ops, false, |_, _, d| d),
            Some((kind, beta)) => {
                let a: Vec<T> = rstd
                    .iter()
                    .zip(g)
                    .map(|(&r, &gv)| T::c(Elem::to_f64(r) * Elem::to_f64(gv)))
                    .collect();
                let b = beta.as_slice::<T>()?;
                with_act!(kind, unary_df, df => bwd_with(&ops, true, |ch, v, d| {
                    d * df((v - mean[ch]) * a[ch] + b[ch])
                }))
            }
        };
        Ok(NormGrads {
            dx: out(dx, x.shape())?,
            dgamma: channel_tensor::<T>(dgamma, gamma.shape())?,
            dbeta: channel_tensor::<T>(dbeta, gamma.shape())?,
        })
    })
}
