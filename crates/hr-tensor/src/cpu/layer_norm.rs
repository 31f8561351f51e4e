//! Layer norm and L2 normalisation over the last axis (the layer-norm family): per-row
//! kernels, statistics accumulated in f64, rows split across threads for large inputs. bf16
//! inputs compute in f32 through `super::bf16_via_f32` and round the outputs once.

use rayon::prelude::*;

use super::{bf16_via_f32, float_dispatch, is_bf16, out, CpuBackend, PAR_THRESHOLD};
use crate::backend::{Affine, LayerNormOps, NormGrads, NormSaved, NormStats};
use crate::checks::last_axis_rows;
use crate::{Elem, Float, Result, Tensor};

impl LayerNormOps for CpuBackend {
    fn layer_norm(&self, x: &Tensor, p: Affine) -> Result<(Tensor, NormStats)> {
        if is_bf16(x) {
            let eps = p.eps;
            return bf16_via_f32(&[x, p.gamma, p.beta], |t| {
                layer_norm(
                    t[0],
                    Affine {
                        gamma: t[1],
                        beta: t[2],
                        eps,
                    },
                )
            });
        }
        layer_norm(x, p)
    }
    fn layer_norm_bwd(&self, saved: NormSaved, dy: &Tensor) -> Result<NormGrads> {
        let (x, g, s) = (saved.x, saved.gamma, saved.stats);
        if is_bf16(x) {
            return bf16_via_f32(&[x, g, dy], |t| layer_norm_bwd(t[0], t[1], s, t[2]));
        }
        layer_norm_bwd(x, g, s, dy)
    }
    fn l2_normalize(&self, x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
        l2_normalize(x, eps)
    }
    fn l2_normalize_bwd(&self, y: &Tensor, n: &Tensor, dy: &Tensor, eps: f64) -> Result<Tensor> {
        l2_normalize_bwd(y, n, dy, eps)
    }
}

/// Row-block count of the parameter-gradient reduction (fixed, so results do not depend on
/// the number of threads).
const GRAD_BLOCKS: usize = 64;

/// One layer-norm forward row: `((y, x), (mean, rstd))`.
type LnRow<'a, T> = ((&'a mut [T], &'a [T]), (&'a mut T, &'a mut T));
/// One L2-normalisation backward row: `(((dx, y), dy), norm)`.
type L2BwdRow<'a, T> = (((&'a mut [T], &'a [T]), &'a [T]), &'a T);

/// Layer-norm forward of one row; returns `(mean, rstd)`.
fn ln_row<T: Float>(xr: &[T], g: &[T], b: &[T], eps: f64, yr: &mut [T]) -> (T, T) {
    let d = xr.len() as f64;
    let mean = xr.iter().map(|v| Elem::to_f64(*v)).sum::<f64>() / d;
    let var = xr
        .iter()
        .map(|v| {
            let c = Elem::to_f64(*v) - mean;
            c * c
        })
        .sum::<f64>()
        / d;
    let rstd = 1.0 / (var + eps).sqrt();
    let (m, r) = (T::c(mean), T::c(rstd));
    for (((y, &x), &gv), &bv) in yr.iter_mut().zip(xr).zip(g).zip(b) {
        *y = (x - m) * r * gv + bv;
    }
    (m, r)
}

pub(super) fn layer_norm(x: &Tensor, p: Affine) -> Result<(Tensor, NormStats)> {
    let Affine { gamma, beta, eps } = p;
    let d = gamma.numel();
    let (rows, stat_shape) = last_axis_rows("layer_norm", x, d)?;
    float_dispatch!("layer_norm", x.dtype(), |T| {
        let (xs, g, b) = (
            x.as_slice::<T>()?,
            gamma.as_slice::<T>()?,
            beta.as_slice::<T>()?,
        );
        let mut y = vec![T::c(0.0); xs.len()];
        let mut mean = vec![T::c(0.0); rows];
        let mut rstd = vec![T::c(0.0); rows];
        let row = |((yr, xr), (m, r)): LnRow<'_, T>| {
            (*m, *r) = ln_row(xr, g, b, eps, yr);
        };
        if xs.len() >= PAR_THRESHOLD {
            y.par_chunks_mut(d)
                .zip(xs.par_chunks(d))
                .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
                .for_each(row);
        } else {
            y.chunks_mut(d)
                .zip(xs.chunks(d))
                .zip(mean.iter_mut().zip(rstd.iter_mut()))
                .for_each(row);
        }
        let stats = NormStats {
            mean: out(mean, &stat_shape)?,
            rstd: out(rstd, &stat_shape)?,
        };
        Ok((out(y, x.shape())?, stats))
    })
}

/// Layer-norm backward of a block of rows: writes `dx` and accumulates the block's
/// `(dgamma, dbeta)` partial sums (length `d` each).
#[allow(clippy::too_many_arguments)]
fn ln_bwd_block<T: Float>(
    xs: &[T],
    dys: &[T],
    g: &[T],
    mean: &[T],
    rstd: &[T],
    dx: &mut [T],
    dg: &mut [f64],
    db: &mut [f64],
) {
    let d = g.len();
    let mut xhat = vec![0f64; d];
    for (i, ((xr, dyr), dxr)) in xs
        .chunks(d)
        .zip(dys.chunks(d))
        .zip(dx.chunks_mut(d))
        .enumerate()
    {
        let (m, r) = (Elem::to_f64(mean[i]), Elem::to_f64(rstd[i]));
        let (mut a, mut b) = (0f64, 0f64);
        for j in 0..d {
            let xh = (Elem::to_f64(xr[j]) - m) * r;
            let dyv = Elem::to_f64(dyr[j]);
            let dxh = dyv * Elem::to_f64(g[j]);
            xhat[j] = xh;
            a += dxh;
            b += dxh * xh;
            dg[j] += dyv * xh;
            db[j] += dyv;
        }
        let (a, b) = (a / d as f64, b / d as f64);
        for j in 0..d {
            let dxh = Elem::to_f64(dyr[j]) * Elem::to_f64(g[j]);
            dxr[j] = T::c(r * (dxh - a - xhat[j] * b));
        }
    }
}

pub(super) fn layer_norm_bwd(
    x: &Tensor,
    gamma: &Tensor,
    stats: &NormStats,
    dy: &Tensor,
) -> Result<NormGrads> {
    let d = gamma.numel();
    let (rows, _) = last_axis_rows("layer_norm_bwd", x, d)?;
    float_dispatch!("layer_norm_bwd", x.dtype(), |T| {
        let (xs, dys, g) = (
            x.as_slice::<T>()?,
            dy.as_slice::<T>()?,
            gamma.as_slice::<T>()?,
        );
        let (mean, rstd) = (stats.mean.as_slice::<T>()?, stats.rstd.as_slice::<T>()?);
        let mut dx = vec![T::c(0.0); xs.len()];
        let blocks = if xs.len() >= PAR_THRESHOLD {
            GRAD_BLOCKS.min(rows)
        } else {
            1
        };
        let per = rows.div_ceil(blocks.max(1)).max(1);
        let partial = |(bi, dxb): (usize, &mut [T])| {
            let (r0, n) = (bi * per, dxb.len() / d);
            let (mut dg, mut db) = (vec![0f64; d], vec![0f64; d]);
            ln_bwd_block(
                &xs[r0 * d..(r0 + n) * d],
                &dys[r0 * d..(r0 + n) * d],
                g,
                &mean[r0..r0 + n],
                &rstd[r0..r0 + n],
                dxb,
                &mut dg,
                &mut db,
            );
            (dg, db)
        };
        let parts: Vec<(Vec<f64>, Vec<f64>)> = if blocks > 1 {
            dx.par_chunks_mut(per * d)
                .enumerate()
                .map(partial)
                .collect()
        } else {
            dx.chunks_mut(per * d).enumerate().map(partial).collect()
        };
        let (mut dg, mut db) = (vec![0f64; d], vec![0f64; d]);
        for (pg, pb) in &parts {
            dg.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
        Ok(NormGrads {
            dx: out(dx, x.shape())?,
            dgamma: out(dg.into_iter().map(T::c).collect::<Vec<T>>(), gamma.shape())?,
            dbeta: out(db.into_iter().map(T::c).collect::<Vec<T>>(), gamma.shape())?,
        })
    })
}

pub(super) fn l2_normalize(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let d = x.shape().last().copied().unwrap_or(0);
    let (rows, stat_shape) = last_axis_rows("l2_normalize", x, d)?;
    float_dispatch!("l2_normalize", x.dtype(), |T| {
        let xs = x.as_slice::<T>()?;
        let mut y = vec![T::c(0.0); xs.len()];
        let mut norms = vec![T::c(0.0); rows];
        let row = |((yr, xr), nr): ((&mut [T], &[T]), &mut T)| {
            let n = xr
                .iter()
                .map(|v| {
                    let f = Elem::to_f64(*v);
                    f * f
                })
                .sum::<f64>()
                .sqrt();
            let inv = T::c(1.0 / n.max(eps));
            yr.iter_mut().zip(xr).for_each(|(y, &x)| *y = x * inv);
            *nr = T::c(n);
        };
        if xs.len() >= PAR_THRESHOLD {
            y.par_chunks_mut(d)
                .zip(xs.par_chunks(d))
                .zip(norms.par_iter_mut())
                .for_each(row);
        } else {
            y.chunks_mut(d)
                .zip(xs.chunks(d))
                .zip(norms.iter_mut())
                .for_each(row);
        }
        Ok((out(y, x.shape())?, out(norms, &stat_shape)?))
    })
}

pub(super) fn l2_normalize_bwd(
    y: &Tensor,
    norms: &Tensor,
    dy: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let d = y.shape().last().copied().unwrap_or(0);
    let (_rows, _) = last_axis_rows("l2_normalize_bwd", y, d)?;
    float_dispatch!("l2_normalize_bwd", y.dtype(), |T| {
        let (ys, dys, ns) = (
            y.as_slice::<T>()?,
            dy.as_slice::<T>()?,
            norms.as_slice::<T>()?,
        );
        let mut dx = vec![T::c(0.0); ys.len()];
        // y = x / max(n, eps): with n >= eps, dx = (dy - y <y, dy>) / n; below eps the
        // denominator is the constant eps and dx = dy / eps (torch's clamp_min gradient).
        let row = |(((dxr, yr), dyr), &n): L2BwdRow<'_, T>| {
            let n = Elem::to_f64(n);
            if n >= eps && n > 0.0 {
                let s: f64 = yr
                    .iter()
                    .zip(dyr)
                    .map(|(a, b)| Elem::to_f64(*a) * Elem::to_f64(*b))
                    .sum();
                let (s, inv) = (T::c(s), T::c(1.0 / n));
                for ((o, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
                    *o = (g - yv * s) * inv;
                }
            } else {
                let inv = T::c(1.0 / eps);
                dxr.iter_mut().zip(dyr).for_each(|(o, &g)| *o = g * inv);
            }
        };
        if ys.len() >= PAR_THRESHOLD {
            dx.par_chunks_mut(d)
                .zip(ys.par_chunks(d))
                .zip(dys.par_chunks(d))
                .zip(ns.par_iter())
                .for_each(row);
        } else {
            dx.chunks_mut(d)
                .zip(ys.chunks(d))
                .zip(dys.chunks(d))
                .zip(ns.iter())
                .for_each(row);
        }
        out(dx, y.shape())
    })
}
