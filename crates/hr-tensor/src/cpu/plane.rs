//! Per-plane ops (see [`PlaneOps`]): parallel over the `(n, c)` planes, f64 sums in element
//! order. bf16 activations run on their exact f32 values (`super::f32_acts`); `plane_scale`
//! rounds its output to bf16 once. CUDA twin: `kernels/plane.cu`.

use rayon::prelude::*;

use super::{f32_acts, float_dispatch, is_bf16, out, CpuBackend, RoundBf16, PAR_THRESHOLD};
use crate::backend::PlaneOps;
use crate::checks;
use crate::{Elem, Float, Result, Tensor};

impl PlaneOps for CpuBackend {
    fn plane_sum(&self, a: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        if is_bf16(a) {
            let acts: Vec<&Tensor> = std::iter::once(a).chain(b).collect();
            return f32_acts(&acts, |t| self.plane_sum(t[0], t.get(1).copied()));
        }
        let (planes, s) = checks::planes("plane_sum", a, b, &[])?;
        float_dispatch!("plane_sum", a.dtype(), |T| {
            let bs = b.map(|b| b.as_slice::<T>()).transpose()?;
            out(
                sums::<T>(a.as_slice::<T>()?, bs, planes, s),
                &a.shape()[..2],
            )
        })
    }

    fn plane_scale(&self, x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
        if is_bf16(x) {
            return f32_acts(&[x], |t| self.plane_scale(t[0], scale, shift))?.round_bf16();
        }
        let per_plane: Vec<&Tensor> = std::iter::once(scale).chain(shift).collect();
        let (_, s) = checks::planes("plane_scale", x, None, &per_plane)?;
        float_dispatch!("plane_scale", x.dtype(), |T| {
            let sh = shift.map(|t| t.as_slice::<T>()).transpose()?;
            let y = scaled::<T>(x.as_slice::<T>()?, scale.as_slice::<T>()?, sh, s);
            out(y, x.shape())
        })
    }
}

/// Per plane of `s` elements: the f64 sum of `a` (times `b`), rounded once.
fn sums<T: Float>(a: &[T], b: Option<&[T]>, planes: usize, s: usize) -> Vec<T> {
    let plane = |p: usize| {
        let ap = &a[p * s..(p + 1) * s];
        let acc: f64 = match b {
            Some(b) => ap
                .iter()
                .zip(&b[p * s..(p + 1) * s])
                .map(|(&x, &y)| Elem::to_f64(x * y))
                .sum(),
            None => ap.iter().map(|&x| Elem::to_f64(x)).sum(),
        };
        T::c(acc)
    };
    if a.len() >= PAR_THRESHOLD {
        (0..planes).into_par_iter().map(plane).collect()
    } else {
        (0..planes).map(plane).collect()
    }
}

/// `x * scale[p] (+ shift[p])` per plane of `s` elements.
fn scaled<T: Float>(x: &[T], scale: &[T], shift: Option<&[T]>, s: usize) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    if s == 0 {
        return y;
    }
    let plane = |(p, (yp, xp)): (usize, (&mut [T], &[T]))| {
        let sc = scale[p];
        match shift {
            Some(sh) => yp
                .iter_mut()
                .zip(xp)
                .for_each(|(o, &v)| *o = v * sc + sh[p]),
            None => yp.iter_mut().zip(xp).for_each(|(o, &v)| *o = v * sc),
        }
    };
    if x.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .for_each(plane);
    } else {
        y.chunks_mut(s).zip(x.chunks(s)).enumerate().for_each(plane);
    }
    y
}
