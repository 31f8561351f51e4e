//! Sums over axes and broadcasts (each other's adjoint). bf16: `sum_to` through
//! `bf16_via_f32` (rounded once), `broadcast_to` copies the bf16 values bit for bit.

use half::bf16;

use super::{
    bf16_via_f32, broadcast_strides, float_dispatch, is_bf16, out, row_offsets, CpuBackend,
};
use crate::backend::ReduceOps;
use crate::{Elem, Float, Result, Tensor};

/// Sums `x` (shape `in_shape`) into `out_shape` (same rank; reduced axes have size 1),
/// accumulating in f64.
fn sum_to<T: Float>(x: &[T], in_shape: &[usize], out_shape: &[usize]) -> Vec<T> {
    let total_out: usize = out_shape.iter().product();
    let mut acc = vec![0f64; total_out];
    let inner = in_shape.last().copied().unwrap_or(1);
    if x.is_empty() {
        return vec![T::zero(); total_out];
    }
    // Strides of the output seen from the input's index space (0 on reduced axes).
    let so = broadcast_strides(out_shape, in_shape);
    let offs = row_offsets(in_shape, &so);
    let io = so.last().copied().unwrap_or(0);
    for (r, xr) in x.chunks(inner).enumerate() {
        let base = offs[r];
        if io == 0 {
            acc[base] += xr.iter().map(|v| Elem::to_f64(*v)).sum::<f64>();
        } else {
            for (j, v) in xr.iter().enumerate() {
                acc[base + j] += Elem::to_f64(*v);
            }
        }
    }
    acc.into_iter().map(T::c).collect()
}

/// Broadcasts `x` (shape `in_shape`, size-1 axes) to `out_shape`.
fn broadcast<T: Elem + Default>(x: &[T], in_shape: &[usize], out_shape: &[usize]) -> Vec<T> {
    let total: usize = out_shape.iter().product();
    let inner = out_shape.last().copied().unwrap_or(1);
    let mut y = vec![T::default(); total];
    if total == 0 {
        return y;
    }
    let s = broadcast_strides(in_shape, out_shape);
    let offs = row_offsets(out_shape, &s);
    let is = s.last().copied().unwrap_or(0);
    for (r, yr) in y.chunks_mut(inner).enumerate() {
        for (j, v) in yr.iter_mut().enumerate() {
            *v = x[offs[r] + j * is];
        }
    }
    y
}

impl ReduceOps for CpuBackend {
    fn sum_to(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        if is_bf16(x) {
            return bf16_via_f32(&[x], |t| self.sum_to(t[0], out_shape));
        }
        float_dispatch!("sum_to", x.dtype(), |T| {
            out(sum_to::<T>(x.as_slice()?, x.shape(), out_shape), out_shape)
        })
    }

    fn broadcast_to(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        if is_bf16(x) {
            let y = broadcast::<bf16>(x.as_slice()?, x.shape(), out_shape);
            return out(y, out_shape);
        }
        float_dispatch!("broadcast_to", x.dtype(), |T| {
            out(
                broadcast::<T>(x.as_slice()?, x.shape(), out_shape),
                out_shape,
            )
        })
    }
}
