//! The CPU reference backend: rayon for parallel loops, the `gemm` crate for matrix products.
//! Kernels are generic over [`crate::Float`] and run in f32 or f64.

mod audio;
mod conv;
mod elementwise;
mod gemm;
mod layout;
mod norm;
mod optim;
mod reduce;
mod softmax;

use crate::{Elem, Result, Tensor};

/// The CPU backend (stateless; rayon's global pool provides the threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

/// Runs `$body` with `$T` bound to the Rust float type of `$dtype`, or returns an
/// `UnsupportedDType` error naming `$op`.
macro_rules! float_dispatch {
    ($op:expr, $dtype:expr, |$T:ident| $body:block) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            other => Err($crate::Error::UnsupportedDType {
                op: $op,
                dtype: other,
                device: $crate::Device::Cpu,
            }),
        }
    };
}
pub(crate) use float_dispatch;

/// Wraps a kernel's output vector as a CPU tensor.
pub(crate) fn out<T: Elem>(v: Vec<T>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(v, shape)
}

/// Elements above which loops are split across threads.
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Strides of `in_shape` seen through broadcasting to `out_shape` (0 on broadcast axes).
pub(crate) fn broadcast_strides(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let s = strides(in_shape);
    in_shape
        .iter()
        .zip(out_shape)
        .zip(s)
        .map(|((&i, &o), st)| if i == o { st } else { 0 })
        .collect()
}

/// Offset into an input (given its broadcast `strides`) of the first element of each output
/// row, a row being the last axis of `out_shape`.
pub(crate) fn row_offsets(out_shape: &[usize], strides: &[usize]) -> Vec<usize> {
    let rank = out_shape.len();
    if rank == 0 {
        return vec![0];
    }
    let rows: usize = out_shape[..rank - 1].iter().product();
    let mut offs = Vec::with_capacity(rows);
    let mut idx = vec![0usize; rank - 1];
    let mut off = 0usize;
    for _ in 0..rows {
        offs.push(off);
        for ax in (0..rank - 1).rev() {
            idx[ax] += 1;
            off += strides[ax];
            if idx[ax] < out_shape[ax] {
                break;
            }
            off -= strides[ax] * out_shape[ax];
            idx[ax] = 0;
        }
    }
    offs
}
