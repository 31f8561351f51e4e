//! Symmetric NT-Xent with same-clip positives (spec-retrieval.md section 3).
//!
//! `C[a, t] = score(a, t) / tau`; positives are all pairs whose items are the same clip;
//! `loss = -1/2 (mean_P log_softmax(C, over audios) + mean_P log_softmax(C, over texts))`.

use hr_tensor::{ops, Tensor};

use crate::{Error, Result};

/// Saved activations of [`contrastive_loss`].
#[derive(Debug, Clone)]
pub struct ContrastiveCache {
    /// log_softmax over texts (rows = audios).
    log_t: Tensor,
    /// log_softmax over audios (rows = texts).
    log_a: Tensor,
    /// Positive mask scaled by -1/(2 |P|).
    weight: Tensor,
}

/// Positive-pair mask of a batch: `P[i, j] = 1` when items i and j are the same clip.
pub fn positive_mask(clip_ids: &[u64]) -> Result<Tensor> {
    let n = clip_ids.len();
    let v: Vec<f32> = clip_ids
        .iter()
        .flat_map(|a| clip_ids.iter().map(move |b| (a == b) as u8 as f32))
        .collect();
    Ok(Tensor::from_vec(v, &[n, n])?)
}

/// The loss of a square score matrix `scores` (audios x texts, already divided by tau) and a
/// positive mask; returns the scalar loss (shape `[]`) and the cache for the backward.
pub fn contrastive_loss(scores: &Tensor, positives: &Tensor) -> Result<(Tensor, ContrastiveCache)> {
    if scores.rank() != 2
        || scores.shape()[0] != scores.shape()[1]
        || scores.shape() != positives.shape()
    {
        return Err(hr_tensor::Error::ShapeMismatch {
            op: "contrastive_loss",
            lhs: scores.shape().to_vec(),
            rhs: positives.shape().to_vec(),
        }
        .into());
    }
    // The mask is built on the host; counting there avoids a device synchronisation, and it
    // is uploaded once (a no-op on the CPU).
    let count = ops::sum_all(positives)?.scalar_f64()?;
    let p = positives
        .to_dtype(scores.dtype())?
        .to_device(scores.device())?;
    if count <= 0.0 {
        return Err(Error::Config {
            key: "positives".into(),
            msg: "the batch has no positive pair".into(),
        });
    }
    let weight = ops::scale(&p, -0.5 / count)?;
    let log_t = ops::log_softmax(scores)?;
    let log_a = ops::log_softmax(&ops::transpose(scores, 0, 1)?)?;
    let wt = ops::transpose(&weight, 0, 1)?;
    let loss = ops::add(
        &ops::sum_all(&ops::mul(&log_t, &weight)?)?,
        &ops::sum_all(&ops::mul(&log_a, &wt)?)?,
    )?;
    Ok((
        loss,
        ContrastiveCache {
            log_t,
            log_a,
            weight,
        },
    ))
}

/// Gradient of the scores for upstream gradient `dloss` (a scalar).
pub fn contrastive_loss_bwd(cache: &ContrastiveCache, dloss: f64) -> Result<Tensor> {
    let w = ops::scale(&cache.weight, dloss)?;
    let d_t = ops::log_softmax_bwd(&cache.log_t, &w)?;
    let d_a = ops::log_softmax_bwd(&cache.log_a, &ops::transpose(&w, 0, 1)?)?;
    Ok(ops::add(&d_t, &ops::transpose(&d_a, 0, 1)?)?)
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
        let (loss, inner) = contrastive_loss(&scores, &positive_mask(clip_ids)?)?;
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
