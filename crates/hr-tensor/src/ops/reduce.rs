//! Sums and means over axes, and broadcasting (their adjoint).

use super::elementwise::lift;
use crate::backend::backend_for;
use crate::{Error, Result, Tensor};

/// Sums `x` down to `shape` (numpy broadcasting in reverse: `shape` broadcasts to `x`'s shape).
pub fn sum_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let full = super::broadcast_shape("sum_to", x.shape(), shape)?;
    if full != x.shape() {
        return Err(Error::ShapeMismatch {
            op: "sum_to",
            lhs: x.shape().to_vec(),
            rhs: shape.to_vec(),
        });
    }
    let kept: Vec<usize> = {
        let mut s = vec![1; x.rank() - shape.len()];
        s.extend_from_slice(shape);
        s
    };
    backend_for("sum_to", x.device())?
        .sum_to(x, &kept)?
        .reshape(shape)
}

/// Broadcasts `x` to `shape` (numpy rules).
pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let full = super::broadcast_shape("broadcast_to", x.shape(), shape)?;
    if full != shape {
        return Err(Error::ShapeMismatch {
            op: "broadcast_to",
            lhs: x.shape().to_vec(),
            rhs: shape.to_vec(),
        });
    }
    backend_for("broadcast_to", x.device())?.broadcast_to(&lift(x, shape.len())?, shape)
}

/// Shape after reducing `axes` (kept as size 1 with `keepdim`, else removed).
fn reduced_shape(
    op: &'static str,
    shape: &[usize],
    axes: &[usize],
    keepdim: bool,
) -> Result<Vec<usize>> {
    if let Some(&bad) = axes.iter().find(|&&a| a >= shape.len()) {
        return Err(Error::invalid(
            op,
            format!("axis {bad} out of range for shape {shape:?}"),
        ));
    }
    Ok(shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdim) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect())
}

/// Sum over `axes`.
pub fn sum_axes(x: &Tensor, axes: &[usize], keepdim: bool) -> Result<Tensor> {
    let kept = reduced_shape("sum_axes", x.shape(), axes, true)?;
    let out = reduced_shape("sum_axes", x.shape(), axes, keepdim)?;
    backend_for("sum_axes", x.device())?
        .sum_to(x, &kept)?
        .reshape(&out)
}

/// Backward of [`sum_axes`]: `dy` broadcast back to `in_shape`.
pub fn sum_axes_bwd(dy: &Tensor, in_shape: &[usize], axes: &[usize]) -> Result<Tensor> {
    let kept = reduced_shape("sum_axes_bwd", in_shape, axes, true)?;
    backend_for("sum_axes_bwd", dy.device())?.broadcast_to(&dy.reshape(&kept)?, in_shape)
}

/// Number of elements reduced by `axes`.
fn reduced_count(shape: &[usize], axes: &[usize]) -> usize {
    axes.iter().filter_map(|&a| shape.get(a)).product()
}

/// Mean over `axes`.
pub fn mean_axes(x: &Tensor, axes: &[usize], keepdim: bool) -> Result<Tensor> {
    let n = reduced_count(x.shape(), axes).max(1);
    super::scale(&sum_axes(x, axes, keepdim)?, 1.0 / n as f64)
}

/// Backward of [`mean_axes`].
pub fn mean_axes_bwd(dy: &Tensor, in_shape: &[usize], axes: &[usize]) -> Result<Tensor> {
    let n = reduced_count(in_shape, axes).max(1);
    super::scale(&sum_axes_bwd(dy, in_shape, axes)?, 1.0 / n as f64)
}

/// Sum of all elements as a one-element tensor of shape `[]`.
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    let axes: Vec<usize> = (0..x.rank()).collect();
    sum_axes(x, &axes, false)
}
