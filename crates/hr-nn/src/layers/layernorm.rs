//! Layer normalisation over the last axis with affine parameters.

use hr_tensor::{ops, DType, NormStats, Tensor};

use crate::{ParamId, ParamStore, Result};

/// LayerNorm (`{name}.weight`, `{name}.bias`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale (dim).
    pub weight: ParamId,
    /// Shift (dim).
    pub bias: ParamId,
    /// Variance epsilon (PyTorch 1e-5, BERT 1e-12).
    pub eps: f64,
}

/// Saved input and statistics of a [`LayerNorm`] forward.
#[derive(Debug, Clone)]
pub struct LayerNormCache {
    x: Tensor,
    stats: NormStats,
}

impl LayerNorm {
    /// Registers a LayerNorm of width `dim` initialised to the identity.
    pub fn new(ps: &mut ParamStore, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        let weight = ps.add(
            &format!("{name}.weight"),
            Tensor::full(&[dim], 1.0, DType::F32)?,
        )?;
        let bias = ps.add(
            &format!("{name}.bias"),
            Tensor::full(&[dim], 0.0, DType::F32)?,
        )?;
        Ok(LayerNorm { weight, bias, eps })
    }

    /// Normalises `x (..., dim)`.
    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<(Tensor, LayerNormCache)> {
        let (y, stats) = ops::layer_norm(x, ps.value(self.weight), ps.value(self.bias), self.eps)?;
        Ok((
            y,
            LayerNormCache {
                x: x.clone(),
                stats,
            },
        ))
    }

    /// Accumulates dgamma, dbeta and returns dx.
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        cache: &LayerNormCache,
        dy: &Tensor,
    ) -> Result<Tensor> {
        let g = ops::layer_norm_bwd(&cache.x, ps.value(self.weight), &cache.stats, dy)?;
        ps.accumulate(self.weight, &g.dgamma)?;
        ps.accumulate(self.bias, &g.dbeta)?;
        Ok(g.dx)
    }
}
