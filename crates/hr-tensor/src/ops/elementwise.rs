//! Pointwise ops: activations, broadcasting arithmetic, scaling, axpy, dropout.

use super::{pair, rows_cols, same_shape};
use crate::backend::{backend_for, Binary, Unary};
use crate::{Error, Result, Tensor};

/// `kind(x)` elementwise.
pub fn unary(kind: Unary, x: &Tensor) -> Result<Tensor> {
    backend_for("unary", x.device())?.unary(kind, x)
}

/// Backward of [`unary`]: `dy * kind'(x)`.
pub fn unary_bwd(kind: Unary, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    same_shape("unary_bwd", x, dy)?;
    pair("unary_bwd", x, dy)?.unary_bwd(kind, x, dy)
}

/// ReLU.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Relu, x)
}

/// GELU (exact erf form).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Gelu, x)
}

/// Hardswish.
pub fn hardswish(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Hardswish, x)
}

/// Logistic sigmoid.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Sigmoid, x)
}

/// Hyperbolic tangent.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Tanh, x)
}

/// Output shape of numpy-style broadcasting of `a` and `b` (right-aligned).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let pad = |s: &[usize]| {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(a), pad(b));
    pa.iter()
        .zip(&pb)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Ok(x),
            (1, _) => Ok(y),
            (_, 1) => Ok(x),
            _ => Err(Error::ShapeMismatch {
                op,
                lhs: a.to_vec(),
                rhs: b.to_vec(),
            }),
        })
        .collect()
}

/// `t` reshaped to `rank` dimensions by prepending size-1 axes.
pub(crate) fn lift(t: &Tensor, rank: usize) -> Result<Tensor> {
    if t.rank() == rank {
        return Ok(t.clone());
    }
    let mut s = vec![1; rank - t.rank()];
    s.extend_from_slice(t.shape());
    t.reshape(&s)
}

/// `a op b` with numpy broadcasting.
pub fn binary(kind: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let be = pair("binary", a, b)?;
    let out = broadcast_shape("binary", a.shape(), b.shape())?;
    be.binary(kind, &lift(a, out.len())?, &lift(b, out.len())?, &out)
}

/// Backward of [`binary`]: `(da, db)`, each summed back to its operand's shape.
pub fn binary_bwd(kind: Binary, a: &Tensor, b: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    let (ga, gb) = match kind {
        Binary::Add => (dy.clone(), dy.clone()),
        Binary::Sub => (dy.clone(), scale(dy, -1.0)?),
        Binary::Mul => (mul(dy, b)?, mul(dy, a)?),
        Binary::Div => {
            let ga = div(dy, b)?;
            let gb = scale(&mul(&ga, &div(a, b)?)?, -1.0)?;
            (ga, gb)
        }
    };
    Ok((
        super::sum_to(&ga, a.shape())?,
        super::sum_to(&gb, b.shape())?,
    ))
}

/// `a + b` (broadcasting).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(Binary::Add, a, b)
}

/// `a - b` (broadcasting).
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(Binary::Sub, a, b)
}

/// `a * b` (broadcasting).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(Binary::Mul, a, b)
}

/// `a / b` (broadcasting).
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(Binary::Div, a, b)
}

/// `x + bias` where `bias` has shape `[C]` and `C` is the last axis of `x`.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (_, c) = rows_cols("add_bias", x)?;
    if bias.shape() != [c] {
        return Err(Error::ShapeMismatch {
            op: "add_bias",
            lhs: x.shape().to_vec(),
            rhs: bias.shape().to_vec(),
        });
    }
    add(x, bias)
}

/// Backward of [`add_bias`] for the bias: `dy` summed over every axis but the last.
pub fn add_bias_bwd(dy: &Tensor) -> Result<Tensor> {
    let (rows, c) = rows_cols("add_bias_bwd", dy)?;
    super::sum_axes(&dy.reshape(&[rows, c])?, &[0], false)
}

/// `x * mul + add`.
pub fn affine(x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
    backend_for("affine", x.device())?.affine(x, mul, add)
}

/// `x * s`.
pub fn scale(x: &Tensor, s: f64) -> Result<Tensor> {
    affine(x, s, 0.0)
}

/// `y += alpha * x` in place.
pub fn axpy(y: &mut Tensor, alpha: f64, x: &Tensor) -> Result<()> {
    same_shape("axpy", y, x)?;
    pair("axpy", y, x)?.axpy(y, alpha, x)
}

/// Inverted dropout with probability `p` in [0, 1) from the counter-based generator keyed by
/// `seed`; returns `(y, scale)` where `scale` is what backward multiplies by.
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(
            "dropout",
            format!("p = {p} is outside [0, 1)"),
        ));
    }
    backend_for("dropout", x.device())?.dropout(x, p, seed)
}

/// Backward of [`dropout`]: `dy * scale`.
pub fn dropout_bwd(dy: &Tensor, scale: &Tensor) -> Result<Tensor> {
    same_shape("dropout_bwd", dy, scale)?;
    mul(dy, scale)
}
