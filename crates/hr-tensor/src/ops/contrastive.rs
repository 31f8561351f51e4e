//! Front-end ops of the contrastive family: the fused symmetric (NT-Xent) loss of a square
//! score matrix and its backward, and the positive groups of a batch's clip ids.

use super::pair;
use crate::backend::{ContrastiveSaved, ContrastiveStats};
use crate::checks::contrastive_operands;
use crate::{Result, Tensor};

/// Fused symmetric contrastive loss of a square `scores` matrix (already divided by the
/// temperature); items `i` and `j` are a positive pair when `groups[i] == groups[j]`.
/// Returns the scalar loss and the statistics [`contrastive_loss_bwd`] needs.
pub fn contrastive_loss(scores: &Tensor, groups: &[u32]) -> Result<(Tensor, ContrastiveStats)> {
    contrastive_operands("contrastive_loss", scores, groups)?;
    crate::backend::backend_for("contrastive_loss", scores.device())?
        .contrastive_loss(scores, groups)
}

/// Gradient of the scores for upstream gradient `dloss`.
pub fn contrastive_loss_bwd(
    scores: &Tensor,
    groups: &[u32],
    stats: &ContrastiveStats,
    dloss: f64,
) -> Result<Tensor> {
    let op = "contrastive_loss_bwd";
    contrastive_operands(op, scores, groups)?;
    super::expect_shape(op, &stats.row_lse, &[groups.len()])?;
    super::expect_shape(op, &stats.col_lse, &[groups.len()])?;
    pair(op, scores, &stats.row_lse)?;
    let saved = ContrastiveSaved {
        scores,
        groups,
        stats,
    };
    pair(op, scores, &stats.col_lse)?.contrastive_loss_bwd(saved, dloss)
}

/// Dense group ids of `clip_ids` (first appearance order): equal clips get equal groups.
pub fn clip_groups(clip_ids: &[u64]) -> Vec<u32> {
    let mut seen: Vec<u64> = Vec::new();
    clip_ids
        .iter()
        .map(|c| match seen.iter().position(|s| s == c) {
            Some(g) => g as u32,
            None => {
                seen.push(*c);
                (seen.len() - 1) as u32
            }
        })
        .collect()
}
