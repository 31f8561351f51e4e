//! Front-end ops of the attention family: fused scaled-dot-product attention and its
//! backward.

use super::all_same;
use crate::backend::{AttentionSpec, Qkv};
use crate::checks::attention_operands;
use crate::{Error, Result, Tensor};

/// The spec of attention over `q` (B, Tq, H, Dh) and `k` (B, Tk, H, Dh) with the usual
/// `1 / sqrt(Dh)` scale, no dropout.
pub fn attention_spec(q: &Tensor, k: &Tensor) -> Result<AttentionSpec> {
    match (q.shape(), k.shape()) {
        (&[b, tq, h, dh], &[_, tk, _, _]) => Ok(AttentionSpec {
            batch: b,
            heads: h,
            q_len: tq,
            k_len: tk,
            head_dim: dh,
            scale: 1.0 / (dh.max(1) as f64).sqrt(),
            dropout: 0.0,
            seed: 0,
        }),
        _ => Err(Error::ShapeMismatch {
            op: "attention",
            lhs: q.shape().to_vec(),
            rhs: k.shape().to_vec(),
        }),
    }
}

/// Fused attention (see [`crate::backend::AttentionOps::attention`]): returns `(out, lse)`;
/// keep both for [`attention_bwd`]. `mask` has `q`'s dtype and device.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    spec: &AttentionSpec,
) -> Result<(Tensor, Tensor)> {
    attention_operands("attention", [q, k, v], mask, spec)?;
    let mut ts = vec![q, k, v];
    ts.extend(mask);
    all_same("attention", &ts)?.attention(Qkv { q, k, v, mask }, spec)
}

/// Backward of [`attention`]: `[dq, dk, dv]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    spec: &AttentionSpec,
) -> Result<[Tensor; 3]> {
    let op = "attention_bwd";
    attention_operands(op, [q, k, v], mask, spec)?;
    super::same_shape(op, q, out)?;
    super::same_shape(op, q, dout)?;
    super::expect_shape(op, lse, &[spec.batch, spec.heads, spec.q_len])?;
    let mut ts = vec![q, k, v, out, lse, dout];
    ts.extend(mask);
    all_same(op, &ts)?.attention_bwd(Qkv { q, k, v, mask }, [out, lse, dout], spec)
}
