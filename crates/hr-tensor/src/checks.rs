//! Operand checks, and the one input-checking rule of this crate: an op validates its operands
//! once, in its front end (`ops/<family>.rs`), with these helpers (shapes, dtypes, devices,
//! hyper-parameters, indices). Backends assume validated operands: they only derive geometry
//! (`nc_spatial`, `split_at_axis`, ...). The backends are reachable only through the front
//! ends (`backend_for` and the backend types are crate-private), so no caller can hand a
//! kernel operands it would index out of bounds.

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

/// The `(planes, plane length)` of a per-plane op's `(N, C, *spatial)` input `x`, after
/// checking that `like` (if given) has `x`'s shape and every tensor in `per_plane` has shape
/// `(N, C)`.
pub(crate) fn planes(
    op: &'static str,
    x: &Tensor,
    like: Option<&Tensor>,
    per_plane: &[&Tensor],
) -> Result<(usize, usize)> {
    let (n, c, s) = nc_spatial(op, x)?;
    if let Some(t) = like {
        if t.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.shape().to_vec(),
                rhs: t.shape().to_vec(),
            });
        }
    }
    for t in per_plane {
        if t.shape() != [n, c] {
            return Err(Error::invalid(
                op,
                format!(
                    "per-plane values of shape {:?}, expected [{n}, {c}] for input {:?}",
                    t.shape(),
                    x.shape()
                ),
            ));
        }
    }
    Ok((n * c, s))
}

/// Checks that a per-channel parameter `p` of input `x` has shape `[c]`.
pub(crate) fn per_channel(op: &'static str, x: &Tensor, p: &Tensor, c: usize) -> Result<()> {
    if p.shape() != [c] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape().to_vec(),
            rhs: p.shape().to_vec(),
        });
    }
    Ok(())
}

/// Checks a normalisation's `eps`: finite and `>= 0` (`> 0` when `positive`).
pub(crate) fn eps(op: &'static str, eps: f64, positive: bool) -> Result<()> {
    if !eps.is_finite() || eps < 0.0 || (positive && eps == 0.0) {
        return Err(Error::invalid(
            op,
            format!(
                "eps = {eps} must be finite and {}",
                if positive { "> 0" } else { ">= 0" }
            ),
        ));
    }
    Ok(())
}

/// Checks the operands of fused attention against `spec`: `q` (B, Tq, H, Dh), `k` and `v`
/// (B, Tk, H, Dh), `mask` (B, Tk), `0 <= dropout < 1`.
pub(crate) fn attention_operands(
    op: &'static str,
    [q, k, v]: [&Tensor; 3],
    mask: Option<&Tensor>,
    s: &crate::backend::AttentionSpec,
) -> Result<()> {
    expect_shape(op, q, &[s.batch, s.q_len, s.heads, s.head_dim])?;
    expect_shape(op, k, &[s.batch, s.k_len, s.heads, s.head_dim])?;
    expect_shape(op, v, &[s.batch, s.k_len, s.heads, s.head_dim])?;
    if let Some(m) = mask {
        expect_shape(op, m, &[s.batch, s.k_len])?;
    }
    if !(0.0..1.0).contains(&s.dropout) {
        return Err(Error::invalid(
            op,
            format!("dropout probability {} is not in [0, 1)", s.dropout),
        ));
    }
    Ok(())
}

/// Checks a square (N, N) score matrix against `groups.len() == N > 0`.
pub(crate) fn contrastive_operands(
    op: &'static str,
    scores: &Tensor,
    groups: &[u32],
) -> Result<()> {
    if groups.is_empty() {
        return Err(Error::invalid(op, "an empty batch has no positive pairs"));
    }
    expect_shape(op, scores, &[groups.len(), groups.len()])
}

/// Positives per item of a contrastive batch: how many items share its group (its row and
/// column count of the positive mask), in O(N).
pub(crate) fn group_counts(groups: &[u32]) -> Vec<u32> {
    let mut per_group = std::collections::HashMap::<u32, u32>::new();
    for &g in groups {
        *per_group.entry(g).or_insert(0) += 1;
    }
    groups
        .iter()
        .map(|g| per_group.get(g).copied().unwrap_or(0))
        .collect()
}

/// A dense 1x1 convolution with stride 1 and no padding: a batched GEMM (cuBLAS on CUDA; bf16
/// operands under [`crate::autocast`] on both devices).
pub(crate) fn dense_pointwise(s: &crate::backend::Conv2dSpec) -> bool {
    s.groups == 1 && s.kh == 1 && s.kw == 1 && s.stride == (1, 1) && s.padding == (0, 0)
}
