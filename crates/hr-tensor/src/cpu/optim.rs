//! Optimiser kernels: the fused Adam/AdamW update (one pass over param, grad, m, v).

use rayon::prelude::*;

use super::{float_dispatch, CpuBackend, PAR_THRESHOLD};
use crate::backend::{AdamStep, AdamTensors, OptimOps};
use crate::{Float, Result};

/// Per-step constants of the update, computed once in f64.
struct AdamConsts<T> {
    decay: T,
    b1: T,
    one_minus_b1: T,
    b2: T,
    one_minus_b2: T,
    step_size: T,
    bc2_sqrt: T,
    eps: T,
}

/// One element of the update, in PyTorch's order of operations:
/// `p *= 1 - lr * wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`.
#[inline]
fn adam_elem<T: Float>(c: &AdamConsts<T>, p: &mut T, g: T, m: &mut T, v: &mut T) {
    *p = *p * c.decay;
    *m = c.b1 * *m + c.one_minus_b1 * g;
    *v = c.b2 * *v + c.one_minus_b2 * g * g;
    let denom = v.sqrt() / c.bc2_sqrt + c.eps;
    *p = *p - c.step_size * (*m / denom);
}

fn adam_k<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], hp: &AdamStep) {
    // `step` is validated >= 1 by the front end; powi takes i32, so large steps go through powf.
    let t = hp.step as f64;
    let bc1 = 1.0 - hp.beta1.powf(t);
    let bc2 = 1.0 - hp.beta2.powf(t);
    let c = AdamConsts {
        decay: T::c(1.0 - hp.lr * hp.weight_decay),
        b1: T::c(hp.beta1),
        one_minus_b1: T::c(1.0 - hp.beta1),
        b2: T::c(hp.beta2),
        one_minus_b2: T::c(1.0 - hp.beta2),
        step_size: T::c(hp.lr / bc1),
        bc2_sqrt: T::c(bc2.sqrt()),
        eps: T::c(hp.eps),
    };
    if p.len() >= PAR_THRESHOLD {
        p.par_iter_mut()
            .zip(g.par_iter())
            .zip(m.par_iter_mut().zip(v.par_iter_mut()))
            .for_each(|((p, &g), (m, v))| adam_elem(&c, p, g, m, v));
    } else {
        p.iter_mut()
            .zip(g)
            .zip(m.iter_mut().zip(v.iter_mut()))
            .for_each(|((p, &g), (m, v))| adam_elem(&c, p, g, m, v));
    }
}

impl OptimOps for CpuBackend {
    fn adam_step(&self, t: AdamTensors, hp: &AdamStep) -> Result<()> {
        let moments = t.m.iter_mut().zip(t.v.iter_mut());
        for ((param, grad), (m, v)) in t.params.iter_mut().zip(t.grads).zip(moments) {
            float_dispatch!("adam_step", param.dtype(), |T| {
                let (p, g) = (param.as_mut_slice()?, grad.as_slice()?);
                adam_k::<T>(p, g, m.as_mut_slice()?, v.as_mut_slice()?, hp);
                Ok(())
            })?;
        }
        Ok(())
    }
}
