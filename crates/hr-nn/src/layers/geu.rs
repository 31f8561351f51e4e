//! Gated embedding unit (MMT / mixture-of-embedding-experts):
//! `GEU(x) = normalize(z * sigmoid(norm(W2 z + b2)))`, `z = W1 x + b1`.

use hr_tensor::{ops, Rng, Tensor, Unary};

use super::{LayerNorm, LayerNormCache, Linear, LinearCache};
use crate::{ParamStore, Result};

/// What normalises the gate's pre-activation (the original MMT uses BatchNorm; we use
/// LayerNorm or nothing, which keeps the unit independent of the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeuNorm {
    /// No normalisation before the sigmoid.
    None,
    /// LayerNorm before the sigmoid.
    LayerNorm,
}

/// Gated embedding unit (`{name}.fc`, `{name}.gate`, optional `{name}.norm`).
#[derive(Debug, Clone)]
pub struct GatedEmbeddingUnit {
    fc: Linear,
    gate: Linear,
    norm: Option<LayerNorm>,
}

/// Saved activations of a [`GatedEmbeddingUnit`] forward.
#[derive(Debug, Clone)]
pub struct GeuCache {
    fc: LinearCache,
    gate: LinearCache,
    norm: Option<LayerNormCache>,
    z: Tensor,
    pre: Tensor,
    g: Tensor,
    y: Tensor,
    norms: Tensor,
}

/// Epsilon of the final L2 normalisation.
const L2_EPS: f64 = 1e-12;

impl GatedEmbeddingUnit {
    /// Registers a unit mapping `in_dim -> out_dim`.
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        norm: GeuNorm,
        rng: &mut Rng,
    ) -> Result<Self> {
        let fc = Linear::new(ps, &format!("{name}.fc"), in_dim, out_dim, true, rng)?;
        let gate = Linear::new(ps, &format!("{name}.gate"), out_dim, out_dim, true, rng)?;
        let norm = match norm {
            GeuNorm::None => None,
            GeuNorm::LayerNorm => Some(LayerNorm::new(ps, &format!("{name}.norm"), out_dim, 1e-5)?),
        };
        Ok(GatedEmbeddingUnit { fc, gate, norm })
    }

    /// `x (..., in) -> unit vectors (..., out)`.
    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<(Tensor, GeuCache)> {
        let (z, fc) = self.fc.forward(ps, x)?;
        let (a, gate) = self.gate.forward(ps, &z)?;
        let (pre, norm) = match &self.norm {
            Some(n) => {
                let (p, c) = n.forward(ps, &a)?;
                (p, Some(c))
            }
            None => (a, None),
        };
        let g = ops::sigmoid(&pre)?;
        let y = ops::mul(&z, &g)?;
        let (out, norms) = ops::l2_normalize(&y, L2_EPS)?;
        let cache = GeuCache {
            fc,
            gate,
            norm,
            z,
            pre,
            g,
            y: out.clone(),
            norms,
        };
        Ok((out, cache))
    }

    /// Accumulates parameter gradients and returns dx.
    pub fn backward(&self, ps: &mut ParamStore, c: &GeuCache, dy: &Tensor) -> Result<Tensor> {
        let dprod = ops::l2_normalize_bwd(&c.y, &c.norms, dy, L2_EPS)?;
        let mut dz = ops::mul(&dprod, &c.g)?;
        let dg = ops::mul(&dprod, &c.z)?;
        let mut dpre = ops::unary_bwd(Unary::Sigmoid, &c.pre, &dg)?;
        if let (Some(n), Some(nc)) = (&self.norm, &c.norm) {
            dpre = n.backward(ps, nc, &dpre)?;
        }
        let dz_gate = self.gate.backward(ps, &c.gate, &dpre)?;
        ops::axpy(&mut dz, 1.0, &dz_gate)?;
        self.fc.backward(ps, &c.fc, &dz)
    }
}
