//! Pointwise kernels: activations, broadcasting arithmetic, axpy and dropout (bf16 storage
//! through `bf16_via_f32`: f32 compute, rounded once).

use half::bf16;
use rayon::prelude::*;

use super::{
    bf16_via_f32, broadcast_strides, float_dispatch, is_bf16, out, row_offsets, CpuBackend,
    PAR_THRESHOLD,
};
use crate::backend::{Binary, ElementwiseOps, Unary};
use crate::rng::counter_uniform;
use crate::{Float, Result, Tensor};

/// Applies `f` to every element, in parallel for large inputs.
fn map<T: Float>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    if x.len() >= PAR_THRESHOLD {
        x.par_iter().map(|&v| f(v)).collect()
    } else {
        x.iter().map(|&v| f(v)).collect()
    }
}

/// Applies `f` to element pairs, in parallel for large inputs.
fn zip_map<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    if a.len() >= PAR_THRESHOLD {
        a.par_iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    } else {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    }
}

/// Forward of one activation at `x`.
pub(crate) fn unary_f<T: Float>(kind: Unary, x: T) -> T {
    let (zero, one) = (T::zero(), T::one());
    match kind {
        Unary::Relu => x.max(zero),
        Unary::Gelu => T::c(0.5) * x * (one + (x * T::c(std::f64::consts::FRAC_1_SQRT_2)).erf()),
        Unary::Hardswish => x * (x + T::c(3.0)).max(zero).min(T::c(6.0)) / T::c(6.0),
        Unary::Sigmoid => one / (one + (-x).exp()),
        Unary::Tanh => x.tanh(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
    }
}

/// Derivative of one activation at `x`.
pub(crate) fn unary_df<T: Float>(kind: Unary, x: T) -> T {
    let (zero, one) = (T::zero(), T::one());
    match kind {
        Unary::Relu => {
            if x > zero {
                one
            } else {
                zero
            }
        }
        Unary::Gelu => {
            let cdf = T::c(0.5) * (one + (x * T::c(std::f64::consts::FRAC_1_SQRT_2)).erf());
            let pdf = (T::c(-0.5) * x * x).exp() * T::c(0.398_942_280_401_432_7);
            cdf + x * pdf
        }
        Unary::Hardswish => {
            if x < T::c(-3.0) {
                zero
            } else if x > T::c(3.0) {
                one
            } else {
                (T::c(2.0) * x + T::c(3.0)) / T::c(6.0)
            }
        }
        Unary::Sigmoid => {
            let s = one / (one + (-x).exp());
            s * (one - s)
        }
        Unary::Tanh => one - x.tanh() * x.tanh(),
        Unary::Exp => x.exp(),
        Unary::Log => one / x,
        Unary::Sqrt => T::c(0.5) / x.sqrt(),
    }
}

/// Broadcasting binary op over rows of the output's last axis.
fn broadcast_binary<T: Float>(
    kind: Binary,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<T> {
    let (a, b) = ((a, a_shape), (b, b_shape));
    // One monomorphised loop per op (no per-element match).
    match kind {
        Binary::Add => broadcast_with(a, b, out_shape, |x, y| x + y),
        Binary::Sub => broadcast_with(a, b, out_shape, |x, y| x - y),
        Binary::Mul => broadcast_with(a, b, out_shape, |x, y| x * y),
        Binary::Div => broadcast_with(a, b, out_shape, |x, y| x / y),
    }
}

/// `f(a, b)` broadcast to `out_shape`, row by row over the last axis: rows where both operands
/// are contiguous (a bias row added to every row of a matrix) or one is a single broadcast
/// value run as plain slice loops the compiler vectorises; other strides take the general loop.
fn broadcast_with<T: Float>(
    (a, a_shape): (&[T], &[usize]),
    (b, b_shape): (&[T], &[usize]),
    out_shape: &[usize],
    f: impl Fn(T, T) -> T + Sync + Copy,
) -> Vec<T> {
    if a_shape == b_shape {
        return zip_map(a, b, f);
    }
    let inner = out_shape.last().copied().unwrap_or(1);
    let total: usize = out_shape.iter().product();
    let mut c = vec![T::zero(); total];
    if total == 0 {
        return c;
    }
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let (ia, ib) = (
        sa.last().copied().unwrap_or(0),
        sb.last().copied().unwrap_or(0),
    );
    let oa = row_offsets(out_shape, &sa);
    let ob = row_offsets(out_shape, &sb);
    let row = |(r, cr): (usize, &mut [T])| {
        let (pa, pb) = (oa[r], ob[r]);
        match (ia, ib) {
            (1, 1) => {
                let (ar, br) = (&a[pa..pa + inner], &b[pb..pb + inner]);
                for ((cv, &x), &y) in cr.iter_mut().zip(ar).zip(br) {
                    *cv = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[pb];
                for (cv, &x) in cr.iter_mut().zip(&a[pa..pa + inner]) {
                    *cv = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[pa];
                for (cv, &y) in cr.iter_mut().zip(&b[pb..pb + inner]) {
                    *cv = f(x, y);
                }
            }
            _ => {
                for (j, cv) in cr.iter_mut().enumerate() {
                    *cv = f(a[pa + j * ia], b[pb + j * ib]);
                }
            }
        }
    };
    if total >= PAR_THRESHOLD {
        c.par_chunks_mut(inner).enumerate().for_each(row);
    } else {
        c.chunks_mut(inner).enumerate().for_each(row);
    }
    c
}

impl ElementwiseOps for CpuBackend {
    fn unary(&self, kind: Unary, x: &Tensor) -> Result<Tensor> {
        if is_bf16(x) {
            return bf16_via_f32(&[x], |t| self.unary(kind, t[0]));
        }
        float_dispatch!("unary", x.dtype(), |T| {
            out(map::<T>(x.as_slice()?, |v| unary_f(kind, v)), x.shape())
        })
    }

    fn unary_bwd(&self, kind: Unary, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        if is_bf16(x) {
            return bf16_via_f32(&[x, dy], |t| self.unary_bwd(kind, t[0], t[1]));
        }
        float_dispatch!("unary_bwd", x.dtype(), |T| {
            let g = zip_map::<T>(x.as_slice()?, dy.as_slice()?, |v, d| d * unary_df(kind, v));
            out(g, x.shape())
        })
    }

    fn binary(&self, kind: Binary, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        if is_bf16(a) {
            return bf16_via_f32(&[a, b], |t| self.binary(kind, t[0], t[1], out_shape));
        }
        float_dispatch!("binary", a.dtype(), |T| {
            let c = broadcast_binary::<T>(
                kind,
                a.as_slice()?,
                a.shape(),
                b.as_slice()?,
                b.shape(),
                out_shape,
            );
            out(c, out_shape)
        })
    }

    fn affine(&self, x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
        if is_bf16(x) {
            return bf16_via_f32(&[x], |t| self.affine(t[0], mul, add));
        }
        float_dispatch!("affine", x.dtype(), |T| {
            let (m, a) = (T::c(mul), T::c(add));
            out(map::<T>(x.as_slice()?, |v| v * m + a), x.shape())
        })
    }

    fn axpy(&self, y: &mut Tensor, alpha: f64, x: &Tensor) -> Result<()> {
        if is_bf16(x) {
            // f32 `y + alpha * x`, rounded once, written back into `y`'s bf16 storage.
            let sum = bf16_via_f32(&[y, x], |t| {
                let mut w = t[0].clone();
                self.axpy(&mut w, alpha, t[1])?;
                Ok(w)
            })?;
            y.as_mut_slice::<bf16>()?
                .copy_from_slice(sum.as_slice::<bf16>()?);
            return Ok(());
        }
        float_dispatch!("axpy", x.dtype(), |T| {
            let al = T::c(alpha);
            let xs = x.as_slice::<T>()?;
            let ys = y.as_mut_slice::<T>()?;
            if xs.len() >= PAR_THRESHOLD {
                ys.par_iter_mut()
                    .zip(xs)
                    .for_each(|(yv, &xv)| *yv += al * xv);
            } else {
                ys.iter_mut().zip(xs).for_each(|(yv, &xv)| *yv += al * xv);
            }
            Ok(())
        })
    }

    fn dropout(&self, x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)> {
        if is_bf16(x) {
            return bf16_via_f32(&[x], |t| self.dropout(t[0], p, seed));
        }
        float_dispatch!("dropout", x.dtype(), |T| {
            let keep = T::c(1.0 / (1.0 - p));
            let n = x.numel();
            let scale: Vec<T> = (0..n)
                .into_par_iter()
                .map(|i| {
                    if counter_uniform(seed, i as u64) < p {
                        T::c(0.0)
                    } else {
                        keep
                    }
                })
                .collect();
            let y = zip_map::<T>(x.as_slice()?, &scale, |v, s| v * s);
            Ok((out(y, x.shape())?, out(scale, x.shape())?))
        })
    }
}
