//! Softmax family over the last axis: softmax (optionally key-padding masked), log-softmax,
//! their backward, and the negative log-likelihood loss. Row reductions accumulate in f64;
//! rows run in parallel for large inputs.

use rayon::prelude::*;

use super::{bf16_via_f32, float_dispatch, is_bf16, out, CpuBackend, PAR_THRESHOLD};
use crate::backend::SoftmaxOps;
use crate::checks::rows_cols;
use crate::{Elem, Float, Result, Tensor};

/// Applies `f(row index, out row)` to every row of `y` (chunks of `k`), in parallel when large.
fn for_rows<T: Float>(y: &mut [T], k: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if k == 0 {
        return;
    }
    if y.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(k).enumerate().for_each(|(r, yr)| f(r, yr));
    } else {
        y.chunks_mut(k).enumerate().for_each(|(r, yr)| f(r, yr));
    }
}

/// Softmax of one row; `keep` (same length, nonzero = keep) drops entries to exactly 0.
/// A row with nothing kept (or only `-inf` kept) is all zeros.
fn softmax_row<T: Float>(xr: &[T], keep: Option<&[T]>, yr: &mut [T]) {
    let kept = |j: usize| keep.is_none_or(|m| m[j] != T::c(0.0));
    let mut max = T::neg_infinity();
    for (j, &v) in xr.iter().enumerate() {
        if kept(j) && v > max {
            max = v;
        }
    }
    if max == T::neg_infinity() {
        yr.iter_mut().for_each(|y| *y = T::c(0.0));
        return;
    }
    let mut sum = 0f64;
    for (j, (y, &v)) in yr.iter_mut().zip(xr).enumerate() {
        *y = if kept(j) { (v - max).exp() } else { T::c(0.0) };
        sum += Elem::to_f64(*y);
    }
    let inv = T::c(1.0 / sum);
    yr.iter_mut().for_each(|y| *y = *y * inv);
}

impl SoftmaxOps for CpuBackend {
    fn softmax(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        if is_bf16(x) {
            let ts: Vec<&Tensor> = std::iter::once(x).chain(mask).collect();
            return bf16_via_f32(&ts, |t| self.softmax(t[0], t.get(1).copied()));
        }
        let (rows, k) = rows_cols("softmax", x)?;
        // Rows per mask row: x is viewed as (B, R, K) against a (B, K) mask.
        let per_mask_row = mask.map_or(1, |m| rows.checked_div(m.shape()[0]).unwrap_or(1));
        float_dispatch!("softmax", x.dtype(), |T| {
            let xs = x.as_slice::<T>()?;
            let ms = mask.map(|m| m.as_slice::<T>()).transpose()?;
            let mut y = vec![T::c(0.0); xs.len()];
            for_rows(&mut y, k, |r, yr| {
                let keep = ms.map(|m| {
                    let b = r / per_mask_row;
                    &m[b * k..(b + 1) * k]
                });
                softmax_row(&xs[r * k..(r + 1) * k], keep, yr);
            });
            out(y, x.shape())
        })
    }

    fn softmax_bwd(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        if is_bf16(y) {
            return bf16_via_f32(&[y, dy], |t| self.softmax_bwd(t[0], t[1]));
        }
        let (_, k) = rows_cols("softmax_bwd", y)?;
        float_dispatch!("softmax_bwd", y.dtype(), |T| {
            let (ys, dys) = (y.as_slice::<T>()?, dy.as_slice::<T>()?);
            let mut dx = vec![T::c(0.0); ys.len()];
            for_rows(&mut dx, k, |r, dxr| {
                let (yr, dyr) = (&ys[r * k..(r + 1) * k], &dys[r * k..(r + 1) * k]);
                let s: f64 = yr
                    .iter()
                    .zip(dyr)
                    .map(|(a, b)| Elem::to_f64(*a) * Elem::to_f64(*b))
                    .sum();
                let s = T::c(s);
                for ((o, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
                    *o = yv * (g - s);
                }
            });
            out(dx, y.shape())
        })
    }

    fn log_softmax(&self, x: &Tensor) -> Result<Tensor> {
        let (_, k) = rows_cols("log_softmax", x)?;
        float_dispatch!("log_softmax", x.dtype(), |T| {
            let xs = x.as_slice::<T>()?;
            let mut y = vec![T::c(0.0); xs.len()];
            for_rows(&mut y, k, |r, yr| {
                let xr = &xs[r * k..(r + 1) * k];
                let max = xr.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v));
                if max == T::NEG_INFINITY || max == T::INFINITY {
                    // Degenerate rows follow the IEEE result of x - logsumexp(x).
                    let lse = if max == T::INFINITY {
                        max
                    } else {
                        T::NEG_INFINITY
                    };
                    yr.iter_mut().zip(xr).for_each(|(y, &v)| *y = v - lse);
                    return;
                }
                let sum: f64 = xr.iter().map(|&v| Elem::to_f64((v - max).exp())).sum();
                let lse = max + T::c(sum.ln());
                yr.iter_mut().zip(xr).for_each(|(y, &v)| *y = v - lse);
            });
            out(y, x.shape())
        })
    }

    fn log_softmax_bwd(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (_, k) = rows_cols("log_softmax_bwd", y)?;
        float_dispatch!("log_softmax_bwd", y.dtype(), |T| {
            let (ys, dys) = (y.as_slice::<T>()?, dy.as_slice::<T>()?);
            let mut dx = vec![T::c(0.0); ys.len()];
            for_rows(&mut dx, k, |r, dxr| {
                let (yr, dyr) = (&ys[r * k..(r + 1) * k], &dys[r * k..(r + 1) * k]);
                let s = T::c(dyr.iter().map(|v| Elem::to_f64(*v)).sum::<f64>());
                for ((o, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
                    *o = g - yv.exp() * s;
                }
            });
            out(dx, y.shape())
        })
    }

    fn nll_loss(&self, logp: &Tensor, targets: &[u32]) -> Result<Tensor> {
        let (rows, k) = rows_cols("nll_loss", logp)?;
        float_dispatch!("nll_loss", logp.dtype(), |T| {
            let ls = logp.as_slice::<T>()?;
            let total: f64 = targets
                .iter()
                .enumerate()
                .map(|(r, &t)| -Elem::to_f64(ls[r * k + t as usize]))
                .sum();
            out(vec![T::c(total / rows as f64)], &[])
        })
    }

    fn nll_loss_bwd(&self, logp: &Tensor, targets: &[u32], dloss: f64) -> Result<Tensor> {
        let (rows, k) = rows_cols("nll_loss_bwd", logp)?;
        float_dispatch!("nll_loss_bwd", logp.dtype(), |T| {
            let mut g = vec![T::c(0.0); logp.numel()];
            let v = T::c(-dloss / rows as f64);
            for (r, &t) in targets.iter().enumerate() {
                g[r * k + t as usize] = v;
            }
            out(g, logp.shape())
        })
    }
}
