//! Batch normalisation over channels (axis 1) with running statistics.

use hr_tensor::{ops, DType, NormStats, Tensor, Unary};

use super::Mode;
use crate::{ParamId, ParamStore, Result};

/// BatchNorm2d (`{name}.weight`, `.bias`, buffers `.running_mean`, `.running_var`).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    /// Scale (C).
    pub weight: ParamId,
    /// Shift (C).
    pub bias: ParamId,
    /// Running mean buffer (C).
    pub running_mean: ParamId,
    /// Running variance buffer (C).
    pub running_var: ParamId,
    /// Variance epsilon (EfficientAT: 1e-3).
    pub eps: f64,
    /// Running-stat momentum, PyTorch convention (EfficientAT: 0.01).
    pub momentum: f64,
}

/// Saved activations of a [`BatchNorm2d`] forward (None in evaluation mode).
#[derive(Debug, Clone)]
pub struct BatchNormCache {
    x: Tensor,
    stats: Option<NormStats>,
}

impl BatchNorm2d {
    /// Registers an identity-initialised batch norm over `c` channels.
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        c: usize,
        eps: f64,
        momentum: f64,
    ) -> Result<BatchNorm2d> {
        let full = |v: f64| Tensor::full(&[c], v, DType::F32);
        Ok(BatchNorm2d {
            weight: ps.add(&format!("{name}.weight"), full(1.0)?)?,
            bias: ps.add(&format!("{name}.bias"), full(0.0)?)?,
            running_mean: ps.add_buffer(&format!("{name}.running_mean"), full(0.0)?)?,
            running_var: ps.add_buffer(&format!("{name}.running_var"), full(1.0)?)?,
            eps,
            momentum,
        })
    }

    /// Training: batch statistics, running stats updated in the store. Eval: running stats.
    pub fn forward(
        &self,
        ps: &mut ParamStore,
        x: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, BatchNormCache)> {
        let (g, b) = (ps.value(self.weight).clone(), ps.value(self.bias).clone());
        if !mode.is_train() {
            let (rm, rv) = (ps.value(self.running_mean), ps.value(self.running_var));
            let y = ops::batch_norm_eval(x, &g, &b, rm, rv, self.eps)?;
            return Ok((
                y,
                BatchNormCache {
                    x: x.clone(),
                    stats: None,
                },
            ));
        }
        let mut rm = ps.value(self.running_mean).clone();
        let mut rv = ps.value(self.running_var).clone();
        let (y, stats) =
            ops::batch_norm_train(x, &g, &b, &mut rm, &mut rv, self.momentum, self.eps, None)?;
        *ps.value_mut(self.running_mean) = rm;
        *ps.value_mut(self.running_var) = rv;
        Ok((
            y,
            BatchNormCache {
                x: x.clone(),
                stats: Some(stats),
            },
        ))
    }

    /// `act(forward(x))`, fused in training (the normalised tensor is neither stored nor kept:
    /// [`BatchNorm2d::backward_act`] recomputes it); in evaluation the two ops in sequence.
    pub fn forward_act(
        &self,
        ps: &mut ParamStore,
        x: &Tensor,
        mode: Mode,
        act: Unary,
    ) -> Result<(Tensor, BatchNormCache)> {
        if !mode.is_train() {
            let (z, cache) = self.forward(ps, x, mode)?;
            return Ok((ops::unary(act, &z)?, cache));
        }
        let (g, b) = (ps.value(self.weight).clone(), ps.value(self.bias).clone());
        let mut rm = ps.value(self.running_mean).clone();
        let mut rv = ps.value(self.running_var).clone();
        let (momentum, eps) = (self.momentum, self.eps);
        let (y, stats) =
            ops::batch_norm_train(x, &g, &b, &mut rm, &mut rv, momentum, eps, Some(act))?;
        *ps.value_mut(self.running_mean) = rm;
        *ps.value_mut(self.running_var) = rv;
        let cache = BatchNormCache {
            x: x.clone(),
            stats: Some(stats),
        };
        Ok((y, cache))
    }

    /// Backward of [`BatchNorm2d::forward_act`]: accumulates dgamma, dbeta and returns dx.
    pub fn backward_act(
        &self,
        ps: &mut ParamStore,
        cache: &BatchNormCache,
        dy: &Tensor,
        act: Unary,
    ) -> Result<Tensor> {
        let Some(stats) = &cache.stats else {
            return self.backward_eval(ps, cache, dy, Some(act));
        };
        let (g, b) = (ps.value(self.weight), ps.value(self.bias));
        let grads = ops::batch_norm_bwd(&cache.x, g, stats, dy, Some((act, b)))?;
        ps.accumulate(self.weight, &grads.dgamma)?;
        ps.accumulate(self.bias, &grads.dbeta)?;
        Ok(grads.dx)
    }

    /// Accumulates dgamma, dbeta and returns dx. In evaluation mode the op is affine per
    /// channel: dx = dy * gamma / sqrt(running_var + eps).
    pub fn backward(
        &self,
        ps: &mut ParamStore,
        cache: &BatchNormCache,
        dy: &Tensor,
    ) -> Result<Tensor> {
        let Some(stats) = &cache.stats else {
            return self.backward_eval(ps, cache, dy, None);
        };
        let grads = ops::batch_norm_bwd(&cache.x, ps.value(self.weight), stats, dy, None)?;
        ps.accumulate(self.weight, &grads.dgamma)?;
        ps.accumulate(self.bias, &grads.dbeta)?;
        Ok(grads.dx)
    }

    /// Evaluation-mode backward (frozen batch norm), of `act(bn(x))` when `act` is given: the
    /// normalised value is recomputed from the running statistics. bf16 activations (and dy)
    /// are widened to f32, the arithmetic is f32 with f32 parameters, and dx is rounded back
    /// once, as in the training-mode ops.
    fn backward_eval(
        &self,
        ps: &mut ParamStore,
        cache: &BatchNormCache,
        dy: &Tensor,
        act: Option<Unary>,
    ) -> Result<Tensor> {
        let acts = cache.x.dtype();
        let widen = |t: &Tensor| match t.dtype() {
            DType::BF16 => t.to_dtype(DType::F32),
            _ => Ok(t.clone()),
        };
        let (x, mut dy) = (widen(&cache.x)?, widen(dy)?);
        if let Some(act) = act {
            let (rm, rv) = (ps.value(self.running_mean), ps.value(self.running_var));
            let (g, b) = (ps.value(self.weight), ps.value(self.bias));
            let z = ops::batch_norm_eval(&x, g, b, rm, rv, self.eps)?;
            dy = ops::unary_bwd(act, &z, &dy)?;
        }
        let c = ps.value(self.weight).numel();
        let mut bshape = vec![1; x.rank()];
        bshape[1] = c;
        let rstd = ops::affine(ps.value(self.running_var), 1.0, self.eps)?;
        let rstd = ops::unary(hr_tensor::Unary::Sqrt, &rstd)?;
        let scale = ops::div(ps.value(self.weight), &rstd)?.reshape(&bshape)?;
        let xhat = ops::div(
            &ops::sub(&x, &ps.value(self.running_mean).reshape(&bshape)?)?,
            &rstd.reshape(&bshape)?,
        )?;
        let reduce: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
        let dgamma = ops::sum_axes(&ops::mul(&dy, &xhat)?, &reduce, false)?;
        let dbeta = ops::sum_axes(&dy, &reduce, false)?;
        ps.accumulate(self.weight, &dgamma)?;
        ps.accumulate(self.bias, &dbeta)?;
        Ok(ops::mul(&dy, &scale)?.to_dtype(acts)?)
    }
}
