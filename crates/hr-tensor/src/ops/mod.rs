//! Front-end ops: validate once (shapes, dtypes, devices) and dispatch to the operands' backend.
//! Every op has a forward and a backward function; backward functions take the upstream
//! gradient `dy` and whatever the forward saved.

mod attention;
mod audio;
mod batch_norm;
mod contrastive;
mod conv;
mod elementwise;
mod gemm;
mod layer_norm;
mod layout;
mod optim;
mod plane;
mod reduce;
mod softmax;

pub use attention::*;
pub use audio::*;
#[allow(unused_imports)]
pub use batch_norm::*;
pub use contrastive::*;
#[allow(unused_imports)]
pub use conv::*;
pub use elementwise::*;
pub use gemm::*;
pub use layer_norm::*;
#[allow(unused_imports)]
pub use layout::*;
#[allow(unused_imports)]
pub use optim::*;
pub use plane::*;
pub use reduce::*;
#[allow(unused_imports)]
pub use softmax::*;

use crate::backend::{backend_for, Backend};
pub(crate) use crate::checks::{expect_rank, expect_shape, rows_cols, same_shape};
use crate::{Error, Result, Tensor};

/// Checks that `a` and `b` share device and dtype; returns their backend.
pub(crate) fn pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<&'static dyn Backend> {
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch {
            op,
            lhs: a.device(),
            rhs: b.device(),
        });
    }
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    backend_for(op, a.device())
}

/// The parameter dtype that goes with activations of `dtype`: f32 for bf16 activations (the
/// mixed precision of the convolutions and batch norms: bf16 activations, f32 weights and
/// statistics), else the same dtype.
pub(crate) fn param_dtype(dtype: crate::DType) -> crate::DType {
    match dtype {
        crate::DType::BF16 => crate::DType::F32,
        other => other,
    }
}

/// Checks a mixed-precision operand set: the activations `acts` (at least one) share one
/// device and dtype, the parameters `params` live on that device with [`param_dtype`] of it;
/// returns their backend.
pub(crate) fn acts_params(
    op: &'static str,
    acts: &[&Tensor],
    params: &[&Tensor],
) -> Result<&'static dyn Backend> {
    let be = all_same(op, acts)?;
    let want = param_dtype(acts[0].dtype());
    for p in params {
        if p.device() != acts[0].device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: acts[0].device(),
                rhs: p.device(),
            });
        }
        if p.dtype() != want {
            return Err(Error::DTypeMismatch {
                op,
                lhs: want,
                rhs: p.dtype(),
            });
        }
    }
    Ok(be)
}

/// Checks that every tensor shares the first one's device and dtype; returns their backend.
pub(crate) fn all_same(op: &'static str, ts: &[&Tensor]) -> Result<&'static dyn Backend> {
    let first = ts
        .first()
        .ok_or_else(|| Error::invalid(op, "no operands given"))?;
    for t in &ts[1..] {
        pair(op, first, t)?;
    }
    backend_for(op, first.device())
}
