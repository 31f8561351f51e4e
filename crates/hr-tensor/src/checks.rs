//! Operand checks shared by the front ends and the backends (which re-check what they index,
//! so that a backend called directly can never read out of bounds).

use crate::{Error, Result, Tensor};

/// Checks that `a` and `b` have the same shape.
pub(crate) fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    expect_shape(op, b, a.shape())
}

/// Checks that `t` has exactly `shape`.
pub(crate) fn expect_shape(op: &'static str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::ShapeMismatch {
            op,
            lhs: t.shape().to_vec(),
            rhs: shape.to_vec(),
        });
    }
    Ok(())
}

/// Checks that `t` has `rank` dimensions.
pub(crate) fn expect_rank(op: &'static str, t: &Tensor, rank: usize) -> Result<()> {
    if t.rank() != rank {
        return Err(Error::invalid(
            op,
            format!("expected a rank-{rank} tensor, got shape {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// `(rows, last axis)` of a tensor (rows = 0 for empty tensors); errors for scalars.
pub(crate) fn rows_cols(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    let cols = *t
        .shape()
        .last()
        .ok_or_else(|| Error::invalid(op, "expected at least one axis, got a scalar"))?;
    Ok((t.numel().checked_div(cols).unwrap_or(0), cols))
}

/// Checks that `axis` is an axis of `t`.
pub(crate) fn check_axis(op: &'static str, t: &Tensor, axis: usize) -> Result<()> {
    if axis >= t.rank() {
        return Err(Error::invalid(
            op,
            format!("axis {axis} out of range for shape {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// `(outer, dim, inner)` of `shape` around `axis` (`axis < shape.len()`).
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// `(rows, statistics shape)` of `x` whose last axis must be `d > 0`; the per-row statistics
/// have the shape of `x` without its last axis.
pub(crate) fn last_axis_rows(
    op: &'static str,
    x: &Tensor,
    d: usize,
) -> Result<(usize, Vec<usize>)> {
    match x.shape().split_last() {
        Some((&last, rest)) if last == d && d > 0 => Ok((x.numel() / d, rest.to_vec())),
        _ => Err(Error::ShapeMismatch {
            op,
            lhs: x.shape().to_vec(),
            rhs: vec![d],
        }),
    }
}

/// Checks that a per-row tensor has one element per row.
pub(crate) fn per_row(op: &'static str, t: &Tensor, rows: usize) -> Result<()> {
    if t.numel() != rows {
        return Err(Error::invalid(
            op,
            format!(
                "expected {rows} per-row statistics, got shape {:?}",
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// One target per row, each `< k`; errors name the row and the value.
pub(crate) fn check_targets(
    op: &'static str,
    rows: usize,
    k: usize,
    targets: &[u32],
) -> Result<()> {
    if rows == 0 {
        return Err(Error::invalid(
            op,
            "no rows: the mean loss of zero rows is undefined",
        ));
    }
    if targets.len() != rows {
        return Err(Error::invalid(
            op,
            format!("{} targets for {rows} rows", targets.len()),
        ));
    }
    if let Some((r, &t)) = targets.iter().enumerate().find(|(_, &t)| t as usize >= k) {
        return Err(Error::invalid(
            op,
            format!("target {t} at row {r} is out of range for {k} classes"),
        ));
    }
    Ok(())
}

/// `(n, c, s)` of an (N, C, *spatial) tensor.
pub(crate) fn nc_spatial(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match x.shape() {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => Err(Error::invalid(
            op,
            format!("expected (N, C, *spatial), got shape {:?}", x.shape()),
        )),
    }
}

/// Checks that a per-channel tensor has `c` elements.
pub(crate) fn per_channel(op: &'static str, t: &Tensor, c: usize) -> Result<()> {
    if t.numel() != c {
        return Err(Error::invalid(
            op,
            format!("expected {c} per-channel values, got shape {:?}", t.shape()),
        ));
    }
    Ok(())
}
