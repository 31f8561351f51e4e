//! The CPU reference backend: rayon for parallel loops, the `gemm` crate for matrix products.
//! Kernels are generic over [`crate::Float`] and run in f32 or f64. bf16 storage is supported
//! by `unary`, `unary_bwd`, `binary`, `affine`, `axpy`, `dropout`, `softmax`, `softmax_bwd`,
//! `layer_norm`, `layer_norm_bwd`, `sum_to` and `embedding_bwd` through `bf16_via_f32` (f32
//! compute, each result rounded to bf16 once; layer norm's statistics stay f32), and by the
//! data movement of `broadcast_to` and the layout ops (`permute`, `concat`, `slice`,
//! `pad_axis`, `embedding`: bit-exact copies); the convolutions and batch norms take bf16
//! activations with f32 parameters through `f32_acts` (f32 compute, activation outputs rounded
//! once); other ops reject bf16 with `UnsupportedDType`.

#[allow(unsafe_code)] // see the module doc
mod alloc;
mod attention;
mod audio;
mod batch_norm;
mod contrastive;
#[allow(unsafe_code)] // see the module doc
mod conv;
mod elementwise;
#[allow(unsafe_code)] // see the module doc
mod gemm;
mod layer_norm;
mod layout;
mod optim;
mod plane;
mod reduce;
mod softmax;
mod transfer;

pub use alloc::keep_freed_memory;

pub(crate) use layout::id_buckets;

use crate::backend::{NormGrads, NormStats};
use crate::{DType, Elem, Result, Tensor};

/// The CPU backend (stateless; rayon's global pool provides the threads).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuBackend;

impl crate::backend::Backend for CpuBackend {}

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

/// An op result whose tensors can be rounded to bf16 storage (see [`bf16_via_f32`]).
pub(crate) trait RoundBf16: Sized {
    /// The result with its data tensors rounded to bf16 (round to nearest even).
    fn round_bf16(self) -> Result<Self>;
}

impl RoundBf16 for Tensor {
    fn round_bf16(self) -> Result<Self> {
        self.to_dtype(DType::BF16)
    }
}

/// Layer norm's output is rounded; its statistics stay f32 (as on CUDA).
impl RoundBf16 for (Tensor, NormStats) {
    fn round_bf16(self) -> Result<Self> {
        Ok((self.0.round_bf16()?, self.1))
    }
}

/// Both tensors rounded (dropout's output and scale).
impl RoundBf16 for (Tensor, Tensor) {
    fn round_bf16(self) -> Result<Self> {
        Ok((self.0.round_bf16()?, self.1.round_bf16()?))
    }
}

impl RoundBf16 for NormGrads {
    fn round_bf16(self) -> Result<Self> {
        Ok(NormGrads {
            dx: self.dx.round_bf16()?,
            dgamma: self.dgamma.round_bf16()?,
            dbeta: self.dbeta.round_bf16()?,
        })
    }
}

/// True when `t` holds bf16 storage (the op then runs through [`bf16_via_f32`]).
pub(crate) fn is_bf16(t: &Tensor) -> bool {
    t.dtype() == DType::BF16
}

/// bf16 storage with f32 compute: runs the f32 op `f` on f32 copies of `ts` (exact) and rounds
/// its result to bf16 once, so a bf16 op equals the f32 op on the same values, rounded.
pub(crate) fn bf16_via_f32<R: RoundBf16>(
    ts: &[&Tensor],
    f: impl FnOnce(&[&Tensor]) -> Result<R>,
) -> Result<R> {
    let wide = ts
        .iter()
        .map(|t| t.to_dtype(DType::F32))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = wide.iter().collect();
    f(&refs)?.round_bf16()
}

/// bf16 activations with f32 parameters (convolutions and batch norms under mixed precision):
/// runs the f32 op `f` on exact f32 copies of the activations `acts` with bf16 matrix products
/// on, so a dense pointwise convolution multiplies the bf16 rounding of its weight like the CUDA
/// GEMM does (the activations already hold bf16 values). The caller rounds the activation
/// outputs to bf16 (`RoundBf16`); f32 results (weight gradients, statistics) stay f32.
pub(crate) fn f32_acts<R>(acts: &[&Tensor], f: impl FnOnce(&[&Tensor]) -> Result<R>) -> Result<R> {
    let wide = acts
        .iter()
        .map(|t| t.to_dtype(DType::F32))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = wide.iter().collect();
    let _bf16_gemms = crate::autocast::bf16_matmuls(true);
    f(&refs)
}

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
