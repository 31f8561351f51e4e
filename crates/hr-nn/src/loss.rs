//! Symmetric NT-Xent with same-clip positives (docs/spec-retrieval.md section 3).
//!
//! `C[a, t] = score(a, t) / tau`; positives are all pairs whose items are the same clip;
//! `loss = -1/2 (mean_P log_softmax(C, over audios) + mean_P log_softmax(C, over texts))`.

use hr_tensor::{ops, ContrastiveStats, Tensor};

use crate::Result;

/// Saved activations of [`contrastive_loss`].
#[derive(Debug, Clone)]
pub struct ContrastiveCache {
    scores: Tensor,
    groups: Vec<u32>,
    stats: ContrastiveStats,
}

/// The loss of a square score matrix `scores` (audios x texts, already divided by tau) whose
/// row and column i belong to `clip_ids[i]`; returns the scalar loss (shape `[]`) and the
/// cache for the backward. One fused op (`ops::contrastive_loss`): the log-softmaxes are
/// never materialised.
pub fn contrastive_loss(scores: &Tensor, clip_ids: &[u64]) -> Result<(Tensor, ContrastiveCache)> {
    // The op checks the shape against the ids (and refuses an empty batch).
    let groups = ops::clip_groups(clip_ids);
    let (loss, stats) = ops::contrastive_loss(scores, &groups)?;
    let cache = ContrastiveCache {
        scores: scores.clone(),
        groups,
        stats,
    };
    Ok((loss, cache))
}

/// Gradient of the scores for upstream gradient `dloss` (a scalar).
pub fn contrastive_loss_bwd(cache: &ContrastiveCache, dloss: f64) -> Result<Tensor> {
    Ok(ops::contrastive_loss_bwd(
        &cache.scores,
        &cache.groups,
        &cache.stats,
        dloss,
    )?)
}

/// NT-Xent on cosine similarities with temperature `tau`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NtXent {
    /// Temperature (paper: 0.05).
    pub tau: f64,
}

/// Saved activations of [`NtXent::forward`].
#[derive(Debug, Clone)]
pub struct NtXentCache {
    a: Tensor,
    t: Tensor,
    a_norm: Tensor,
    t_norm: Tensor,
    inner: ContrastiveCache,
}

/// Epsilon of the L2 normalisation (as torch.nn.functional.normalize).
const EPS: f64 = 1e-12;

impl NtXent {
    /// Loss of audio (N, D) and text (N, D) embeddings; row i of both belongs to `clip_ids[i]`.
    pub fn forward(
        &self,
        audio: &Tensor,
        text: &Tensor,
        clip_ids: &[u64],
    ) -> Result<(Tensor, NtXentCache)> {
        let (a, a_norm) = ops::l2_normalize(audio, EPS)?;
        let (t, t_norm) = ops::l2_normalize(text, EPS)?;
        let scores = ops::matmul_ex(&a, &t, false, true, 1.0 / self.tau)?;
        let (loss, inner) = contrastive_loss(&scores, clip_ids)?;
        Ok((
            loss,
            NtXentCache {
                a,
                t,
                a_norm,
                t_norm,
                inner,
            },
        ))
    }

    /// Gradients of the raw audio and text embeddings.
    pub fn backward(&self, c: &NtXentCache, dloss: f64) -> Result<(Tensor, Tensor)> {
        let ds = contrastive_loss_bwd(&c.inner, dloss)?;
        let (da, dt) = ops::matmul_ex_bwd(&c.a, &c.t, &ds, false, true, 1.0 / self.tau)?;
        Ok((
            ops::l2_normalize_bwd(&c.a, &c.a_norm, &da, EPS)?,
            ops::l2_normalize_bwd(&c.t, &c.t_norm, &dt, EPS)?,
        ))
    }
}
