//! Matrix products and their backward.

use super::pair;
use crate::backend::MatmulSpec;
use crate::{Error, Result, Tensor};

/// Resolves the geometry of `op(a) @ op(b)` for a (..., m, k) / (..., k, n) pair where either
/// side may be a single shared matrix; returns the spec and the output shape.
pub fn matmul_spec(
    a: &[usize],
    b: &[usize],
    trans_a: bool,
    trans_b: bool,
    alpha: f64,
) -> Result<(MatmulSpec, Vec<usize>)> {
    let mismatch = || Error::ShapeMismatch {
        op: "matmul",
        lhs: a.to_vec(),
        rhs: b.to_vec(),
    };
    if a.len() < 2 || b.len() < 2 {
        return Err(mismatch());
    }
    let (ab, am) = a.split_at(a.len() - 2);
    let (bb, bm) = b.split_at(b.len() - 2);
    let (m, ka) = if trans_a {
        (am[1], am[0])
    } else {
        (am[0], am[1])
    };
    let (kb, n) = if trans_b {
        (bm[1], bm[0])
    } else {
        (bm[0], bm[1])
    };
    let a_batched = !ab.is_empty();
    let b_batched = !bb.is_empty();
    if ka != kb || (a_batched && b_batched && ab != bb) {
        return Err(mismatch());
    }
    let batch_dims = if a_batched { ab } else { bb };
    let mut out = batch_dims.to_vec();
    out.extend([m, n]);
    let spec = MatmulSpec {
        batch: batch_dims.iter().product(),
        m,
        n,
        k: ka,
        trans_a,
        trans_b,
        a_batched,
        b_batched,
        alpha,
        bf16_inputs: false,
    };
    Ok((spec, out))
}

/// `alpha * op(a) @ op(b)` with optional transposes of the last two axes; leading axes are
/// batch axes (equal on both sides, or absent on one side = shared matrix). f32 operands are
/// rounded to bf16 first inside [`crate::autocast::bf16_matmuls`].
pub fn matmul_ex(
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f64,
) -> Result<Tensor> {
    let be = pair("matmul", a, b)?;
    let (mut spec, out) = matmul_spec(a.shape(), b.shape(), trans_a, trans_b, alpha)?;
    spec.bf16_inputs = a.dtype() == crate::DType::F32 && crate::autocast::bf16_matmuls_active();
    if spec.a_batched && !spec.b_batched && !trans_a {
        // A batch of row-major matrices times one shared matrix is one taller product (the
        // same memory layout in and out): one large GEMM instead of `batch` short ones.
        spec.m *= spec.batch;
        spec.batch = 1;
        spec.a_batched = false;
    }
    be.matmul(a, b, &spec, &out)
}

/// `a @ b`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_ex(a, b, false, false, 1.0)
}

/// Backward of [`matmul_ex`]: returns `(da, db)` for upstream gradient `dy`. A side that was
/// shared across the batch gets its gradient summed over the batch.
pub fn matmul_ex_bwd(
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f64,
) -> Result<(Tensor, Tensor)> {
    let da = if trans_a {
        matmul_ex(b, dy, trans_b, true, alpha)?
    } else {
        matmul_ex(dy, b, false, !trans_b, alpha)?
    };
    let db = if trans_b {
        matmul_ex(dy, a, true, trans_a, alpha)?
    } else {
        matmul_ex(a, dy, !trans_a, false, alpha)?
    };
    Ok((fold_batch(da, a.shape())?, fold_batch(db, b.shape())?))
}

/// Sums a batched gradient over its batch axes when the operand was a shared matrix.
fn fold_batch(g: Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g);
    }
    let r = g.rank();
    let batch: usize = g.shape()[..r - 2].iter().product();
    let flat = g.reshape(&[batch, g.shape()[r - 2], g.shape()[r - 1]])?;
    super::sum_axes(&flat, &[0], false)?.reshape(shape)
}
