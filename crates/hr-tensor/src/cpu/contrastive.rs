//! The fused symmetric contrastive loss (the reference of `kernels/contrastive.cu`): row and
//! column log-sum-exps of the score matrix, the loss from the positive pairs, and the
//! gradient elementwise from the saved log-sum-exps. Accumulates in f64.

use super::{float_dispatch, out, CpuBackend};
use crate::backend::{ContrastiveOps, ContrastiveSaved, ContrastiveStats};
use crate::checks::group_counts;
use crate::{Elem, Result, Tensor};

/// Log-sum-exp of `n` values `f(0..n)`.
fn lse(n: usize, f: impl Fn(usize) -> f64) -> f64 {
    let max = (0..n).map(&f).fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + (0..n).map(|j| (f(j) - max).exp()).sum::<f64>().ln()
}

/// [`group_counts`] as f64.
fn counts_f64(groups: &[u32]) -> Vec<f64> {
    group_counts(groups).into_iter().map(f64::from).collect()
}

impl ContrastiveOps for CpuBackend {
    fn contrastive_loss(
        &self,
        scores: &Tensor,
        groups: &[u32],
    ) -> Result<(Tensor, ContrastiveStats)> {
        let n = groups.len();
        float_dispatch!("contrastive_loss", scores.dtype(), |T| {
            let s = scores.as_slice::<T>()?;
            let at = |i: usize, j: usize| Elem::to_f64(s[i * n + j]);
            let row: Vec<f64> = (0..n).map(|i| lse(n, |j| at(i, j))).collect();
            let col: Vec<f64> = (0..n).map(|j| lse(n, |i| at(i, j))).collect();
            let counts = counts_f64(groups);
            let pairs: f64 = counts.iter().sum();
            let mut total = 0f64;
            for i in 0..n {
                for j in (0..n).filter(|&j| groups[j] == groups[i]) {
                    total += 2.0 * at(i, j) - row[i] - col[j];
                }
            }
            let loss = -0.5 * total / pairs;
            let conv = |v: Vec<f64>| out(v.into_iter().map(<T as Elem>::from_f64).collect(), &[n]);
            Ok((
                out(vec![<T as Elem>::from_f64(loss)], &[])?,
                ContrastiveStats {
                    row_lse: conv(row)?,
                    col_lse: conv(col)?,
                },
            ))
        })
    }

    fn contrastive_loss_bwd(&self, saved: ContrastiveSaved, dloss: f64) -> Result<Tensor> {
        let (scores, groups, stats) = (saved.scores, saved.groups, saved.stats);
        let n = groups.len();
        float_dispatch!("contrastive_loss_bwd", scores.dtype(), |T| {
            let s = scores.as_slice::<T>()?;
            let (row, col) = (
                stats.row_lse.as_slice::<T>()?,
                stats.col_lse.as_slice::<T>()?,
            );
            let counts = counts_f64(groups);
            let w = -0.5 * dloss / counts.iter().sum::<f64>();
            let mut ds = Vec::with_capacity(n * n);
            for i in 0..n {
                for j in 0..n {
                    let sij = Elem::to_f64(s[i * n + j]);
                    let pos = if groups[i] == groups[j] { 2.0 } else { 0.0 };
                    let soft_r = (sij - Elem::to_f64(row[i])).exp() * counts[i];
                    let soft_c = (sij - Elem::to_f64(col[j])).exp() * counts[j];
                    ds.push(<T as Elem>::from_f64(w * (pos - soft_r - soft_c)));
                }
            }
            out(ds, &[n, n])
        })
    }
}
