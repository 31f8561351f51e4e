//! GEMM through the `gemm` crate (multithreaded, AVX-512/AVX2 microkernels).

use gemm::Parallelism;
use rayon::prelude::*;

use super::{float_dispatch, out, CpuBackend};
use crate::autocast::rounded_f32;
use crate::backend::{GemmOps, MatmulSpec};
use crate::{DType, Float, Result, Tensor};

impl GemmOps for CpuBackend {
    fn matmul(&self, a: &Tensor, b: &Tensor, spec: &MatmulSpec, shape: &[usize]) -> Result<Tensor> {
        if spec.bf16_inputs && a.dtype() == DType::F32 {
            // Autocast: the operands rounded to bf16, then an f32 GEMM (what tensor cores do
            // with bf16 inputs and f32 accumulation, up to summation order).
            let (a, b) = (rounded_f32(a)?, rounded_f32(b)?);
            let (a, b) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
            return out(gemm_batched(a, b, spec), shape);
        }
        float_dispatch!("matmul", a.dtype(), |T| {
            out(gemm_batched::<T>(a.as_slice()?, b.as_slice()?, spec), shape)
        })
    }
}

/// Products below this many multiply-adds run single-threaded (threads cost more than they give).
const SMALL_GEMM: usize = 48 * 48 * 48;

fn gemm_batched<T: Float>(a: &[T], b: &[T], s: &MatmulSpec) -> Vec<T> {
    let (m, n, k) = (s.m, s.n, s.k);
    let mut c = vec![T::zero(); s.batch * m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    let a_stride = if s.a_batched { m * k } else { 0 };
    let b_stride = if s.b_batched { k * n } else { 0 };
    let alpha = T::c(s.alpha);
    let work = m * n * k;
    let one = |bi: usize, cb: &mut [T], par: Parallelism| {
        let ab = &a[bi * a_stride..bi * a_stride + m * k];
        let bb = &b[bi * b_stride..bi * b_stride + k * n];
        gemm_one(ab, bb, cb, s, alpha, par);
    };
    if s.batch > 1 && work < SMALL_GEMM * 8 {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, cb)| one(bi, cb, Parallelism::None));
    } else {
        let par = if work < SMALL_GEMM {
            Parallelism::None
        } else {
            Parallelism::Rayon(0)
        };
        for (bi, cb) in c.chunks_mut(m * n).enumerate() {
            one(bi, cb, par);
        }
    }
    c
}

/// `c = alpha * op(a) @ op(b)` for one row-major matrix triple.
fn gemm_one<T: Float>(a: &[T], b: &[T], c: &mut [T], s: &MatmulSpec, alpha: T, par: Parallelism) {
    let (m, n, k) = (s.m as isize, s.n as isize, s.k as isize);
    // (row stride, column stride) of op(a) (m x k) and op(b) (k x n).
    let (a_rs, a_cs) = if s.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if s.trans_b { (1, k) } else { (n, 1) };
    // SAFETY: the slices hold exactly m*k, k*n and m*n elements (checked by the front end),
    // and the strides above address only those elements.
    unsafe {
        gemm::gemm(
            s.m,
            s.n,
            s.k,
            c.as_mut_ptr(),
            1,
            n,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::zero(),
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}
