//! Front-end ops: validate once (shapes, dtypes, devices) and dispatch to the operands' backend.
//! Every op has a forward and a backward function; backward functions take the upstream
//! gradient `dy` and whatever the forward saved.

mod attention;
mod audio;
mod conv;
mod elementwise;
mod gemm;
mod layout;
mod norm;
mod optim;
mod reduce;
mod softmax;

pub use attention::*;
pub use audio::*;
#[allow(unused_imports)]
pub use conv::*;
pub use elementwise::*;
pub use gemm::*;
#[allow(unused_imports)]
pub use layout::*;
#[allow(unused_imports)]
pub use norm::*;
#[allow(unused_imports)]
pub use optim::*;
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
