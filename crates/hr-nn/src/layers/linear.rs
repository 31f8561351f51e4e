//! Fully connected layer, PyTorch layout: `y = x W^T + b`, W of shape (out, in).

use hr_tensor::{ops, Rng, Tensor};

use crate::{ParamId, ParamStore, Result};

/// A linear map over the last axis.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight (out, in).
    pub weight: ParamId,
    /// Optional bias (out).
    pub bias: Option<ParamId>,
    /// Input features.
    pub in_dim: usize,
    /// Output features.
    pub out_dim: usize,
}

/// Saved input of a [`Linear`] forward.
#[derive(Debug, Clone)]
pub struct LinearCache {
    x: Tensor,
}

impl Linear {
    /// Registers `{name}.weight` (and `{name}.bias`) with PyTorch's default init
    /// (uniform in +-1/sqrt(in)).
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Linear> {
        let b = format!("{name}.bias");
        Linear::new_named(
            ps,
            &format!("{name}.weight"),
            bias.then_some(b.as_str()),
            in_dim,
            out_dim,
            rng,
        )
    }

    /// Like [`Linear::new`] with explicit parameter names (e.g. PyTorch's `in_proj_weight`).
    pub fn new_named(
        ps: &mut ParamStore,
        weight_name: &str,
        bias_name: Option<&str>,
        in_dim: usize,
        out_dim: usize,
        rng: &mut Rng,
    ) -> Result<Linear> {
        let bound = 1.0 / (in_dim.max(1) as f32).sqrt();
        let w = Tensor::rand_uniform(&[out_dim, in_dim], -bound, bound, rng)?;
        let weight = ps.add(weight_name, w)?;
        let bias = match bias_name {
            Some(n) => Some(ps.add(n, Tensor::rand_uniform(&[out_dim], -bound, bound, rng)?)?),
            None => None,
        };
        Ok(Linear {
            weight,
            bias,
            in_dim,
            out_dim,
        })
    }

    /// `x (..., in) -> (..., out)`.
    pub fn forward(&self, ps: &ParamStore, x: &Tensor) -> Result<(Tensor, LinearCache)> {
        let mut y = ops::matmul_ex(x, ps.value(self.weight), false, true, 1.0)?;
        if let Some(b) = self.bias {
            y = ops::add_bias(&y, ps.value(b))?;
        }
        Ok((y, LinearCache { x: x.clone() }))
    }

    /// Accumulates dW, db and returns dx.
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        cache: &LinearCache,
        dy: &Tensor,
    ) -> Result<Tensor> {
        let rows = dy.numel() / self.out_dim.max(1);
        let dy2 = dy.reshape(&[rows, self.out_dim])?;
        let x2 = cache.x.reshape(&[rows, self.in_dim])?;
        let dw = ops::matmul_ex(&dy2, &x2, true, false, 1.0)?;
        ps.accumulate(self.weight, &dw)?;
        if let Some(b) = self.bias {
            ps.accumulate(b, &ops::add_bias_bwd(&dy2)?)?;
        }
        let dx = ops::matmul(&dy2, ps.value(self.weight))?;
        Ok(dx.reshape(cache.x.shape())?)
    }
}
