//! Front-end ops of the layout family (see the backend trait): permute / transpose, concat,
//! slice (backward = pad), embedding gather (backward = scatter-add).

use super::all_same;
use crate::backend::backend_for;
use crate::checks::check_axis;
use crate::{Error, Result, Tensor};

/// Checks that `perm` is a permutation of `0..rank`.
fn check_perm(op: &'static str, t: &Tensor, perm: &[usize]) -> Result<()> {
    let mut seen = vec![false; t.rank()];
    let ok = perm.len() == t.rank()
        && perm
            .iter()
            .all(|&p| p < t.rank() && !std::mem::replace(&mut seen[p], true));
    if !ok {
        return Err(Error::invalid(
            op,
            format!(
                "{perm:?} is not a permutation of the axes of shape {:?}",
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// Permutes the axes: output axis `i` is input axis `perm[i]` (a copy in the new layout).
/// The attention head split (B, T, H, D) -> (B, H, T, D) is `permute(x, &[0, 2, 1, 3])`.
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    check_perm("permute", x, perm)?;
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x.clone());
    }
    backend_for("permute", x.device())?.permute(x, perm)
}

/// The inverse permutation of `perm` (validated by the caller).
fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// Backward of [`permute`]: `dy` permuted back by the inverse permutation.
pub fn permute_bwd(dy: &Tensor, perm: &[usize]) -> Result<Tensor> {
    check_perm("permute_bwd", dy, perm)?;
    permute(dy, &inverse(perm))
}

/// Swaps axes `a` and `b`.
pub fn transpose(x: &Tensor, a: usize, b: usize) -> Result<Tensor> {
    check_axis("transpose", x, a)?;
    check_axis("transpose", x, b)?;
    let mut perm: Vec<usize> = (0..x.rank()).collect();
    perm.swap(a, b);
    permute(x, &perm)
}

/// Backward of [`transpose`] (a transpose is its own inverse).
pub fn transpose_bwd(dy: &Tensor, a: usize, b: usize) -> Result<Tensor> {
    transpose(dy, a, b)
}

/// Concatenates tensors of equal rank along `axis`; every other axis must agree.
pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let be = all_same("concat", xs)?;
    let first = xs[0];
    check_axis("concat", first, axis)?;
    for t in &xs[1..] {
        let same_rest = t.rank() == first.rank()
            && t.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_rest {
            return Err(Error::ShapeMismatch {
                op: "concat",
                lhs: first.shape().to_vec(),
                rhs: t.shape().to_vec(),
            });
        }
    }
    if xs.len() == 1 {
        return Ok(first.clone());
    }
    be.concat(xs, axis)
}

/// Backward of [`concat()`]: `dy` cut along `axis` into pieces of the given `sizes`
/// (the inputs' sizes along `axis`, in order).
pub fn concat_bwd(dy: &Tensor, sizes: &[usize], axis: usize) -> Result<Vec<Tensor>> {
    check_axis("concat_bwd", dy, axis)?;
    let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
    if total != Some(dy.shape()[axis]) {
        return Err(Error::invalid(
            "concat_bwd",
            format!(
                "sizes {sizes:?} do not add up to axis {axis} of shape {:?}",
                dy.shape()
            ),
        ));
    }
    let mut start = 0;
    sizes
        .iter()
        .map(|&s| {
            let piece = slice(dy, axis, start, s);
            start += s;
            piece
        })
        .collect()
}

/// Entries `start..start + len` of `axis` (a copy).
pub fn slice(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    check_axis("slice", x, axis)?;
    let dim = x.shape()[axis];
    if start.checked_add(len).is_none_or(|end| end > dim) {
        return Err(Error::invalid(
            "slice",
            format!(
                "range {start}..{start}+{len} out of bounds for axis {axis} of shape {:?}",
                x.shape()
            ),
        ));
    }
    if start == 0 && len == dim {
        return Ok(x.clone());
    }
    backend_for("slice", x.device())?.slice(x, axis, start, len)
}

/// Places `x` at `start` of a zero tensor whose `axis` has size `total`.
pub fn pad_axis(x: &Tensor, axis: usize, start: usize, total: usize) -> Result<Tensor> {
    check_axis("pad_axis", x, axis)?;
    let len = x.shape()[axis];
    if start.checked_add(len).is_none_or(|end| end > total) {
        return Err(Error::invalid(
            "pad_axis",
            format!(
                "{len} entries at {start} do not fit an axis of size {total} (shape {:?}, axis {axis})",
                x.shape()
            ),
        ));
    }
    if start == 0 && len == total {
        return Ok(x.clone());
    }
    backend_for("pad_axis", x.device())?.pad_axis(x, axis, start, total)
}

/// Backward of [`slice()`]: `dy` placed at `start` of a zero tensor whose `axis` has the input's
/// size `in_len`.
pub fn slice_bwd(dy: &Tensor, axis: usize, start: usize, in_len: usize) -> Result<Tensor> {
    pad_axis(dy, axis, start, in_len)
}

/// Checks every id against the vocabulary size.
fn check_ids(op: &'static str, ids: &[u32], vocab: usize) -> Result<()> {
    if let Some((pos, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        return Err(Error::invalid(
            op,
            format!("id {id} at position {pos} is out of range for vocab size {vocab}"),
        ));
    }
    Ok(())
}

/// Rows of `table` (vocab, dim) picked by `ids` -> (ids.len(), dim). Errors name the first id
/// outside the vocabulary, its position and the vocabulary size.
pub fn embedding(table: &Tensor, ids: &[u32]) -> Result<Tensor> {
    super::expect_rank("embedding", table, 2)?;
    check_ids("embedding", ids, table.shape()[0])?;
    backend_for("embedding", table.device())?.embedding(table, ids)
}

/// Backward of [`embedding`]: `dy` (ids.len(), dim) scatter-added into a zero (vocab, dim)
/// gradient (repeated ids accumulate).
pub fn embedding_bwd(dy: &Tensor, ids: &[u32], vocab: usize) -> Result<Tensor> {
    super::expect_rank("embedding_bwd", dy, 2)?;
    if dy.shape()[0] != ids.len() {
        return Err(Error::ShapeMismatch {
            op: "embedding_bwd",
            lhs: dy.shape().to_vec(),
            rhs: vec![ids.len(), dy.shape()[1]],
        });
    }
    check_ids("embedding_bwd", ids, vocab)?;
    backend_for("embedding_bwd", dy.device())?.embedding_bwd(dy, ids, vocab)
}
