//! Embedding lookup table.

use hr_tensor::{ops, Rng, Tensor};

use crate::{ParamId, ParamStore, Result};

/// A (vocab, dim) table (`{name}.weight`).
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The table.
    pub weight: ParamId,
    /// Number of rows.
    pub vocab: usize,
    /// Row width.
    pub dim: usize,
}

/// Saved ids of an [`Embedding`] forward.
#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    ids: Vec<u32>,
}

impl Embedding {
    /// Registers a table initialised N(0, std).
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        vocab: usize,
        dim: usize,
        std: f32,
        rng: &mut Rng,
    ) -> Result<Embedding> {
        let weight = ps.add(
            &format!("{name}.weight"),
            Tensor::randn(&[vocab, dim], std, rng)?,
        )?;
        Ok(Embedding { weight, vocab, dim })
    }

    /// Rows for `ids`, shaped `shape + [dim]`.
    pub fn forward(
        &self,
        ps: &ParamStore,
        ids: &[u32],
        shape: &[usize],
    ) -> Result<(Tensor, EmbeddingCache)> {
        let y = ops::embedding(ps.value(self.weight), ids)?;
        let mut out = shape.to_vec();
        out.push(self.dim);
        Ok((y.reshape(&out)?, EmbeddingCache { ids: ids.to_vec() }))
    }

    /// Scatter-adds `dy` into the table's gradient.
    pub fn backward(&self, ps: &mut ParamStore, cache: &EmbeddingCache, dy: &Tensor) -> Result<()> {
        let dy2 = dy.reshape(&[cache.ids.len(), self.dim])?;
        let g = ops::embedding_bwd(&dy2, &cache.ids, self.vocab)?;
        ps.accumulate(self.weight, &g)
    }
}

/// Fixed sinusoidal positional encoding (max_len, d): `PE[p, 2i] = sin(p 10000^(-2i/d))`,
/// `PE[p, 2i+1] = cos(same)` (computed in f64, stored in f32).
pub fn sinusoidal_pe(max_len: usize, d: usize) -> Result<Tensor> {
    let mut v = vec![0f32; max_len * d];
    for p in 0..max_len {
        for i in 0..d / 2 {
            let a = p as f64 * 10000f64.powf(-2.0 * i as f64 / d as f64);
            v[p * d + 2 * i] = a.sin() as f32;
            v[p * d + 2 * i + 1] = a.cos() as f32;
        }
    }
    Ok(Tensor::from_vec(v, &[max_len, d])?)
}
