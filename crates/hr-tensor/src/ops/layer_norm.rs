//! Front-end ops of the layer-norm family (see [`crate::backend::LayerNormOps`]): layer norm
//! and L2 normalisation over the last axis, each with its backward.

/// Layer norm over the last axis (PyTorch semantics, biased variance):
/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` with `gamma`, `beta` of shape `[D]`,
/// `D` = the last axis of `x`. Returns `y` and the per-row statistics (shape of `x` without its
/// last axis) that [`layer_norm_bwd`] needs.
pub fn layer_norm(
    x: &crate::Tensor,
    gamma: &crate::Tensor,
    beta: &crate::Tensor,
    eps: f64,
) -> crate::Result<(crate::Tensor, crate::NormStats)> {
    let be = super::all_same("layer_norm", &[x, gamma, beta])?;
    last_axis_checks::affine("layer_norm", x, gamma, beta)?;
    crate::checks::eps("layer_norm", eps, false)?;
    be.layer_norm(x, crate::backend::Affine { gamma, beta, eps })
}

/// Backward of [`layer_norm`]: `(dx, dgamma, dbeta)` for upstream gradient `dy`.
pub fn layer_norm_bwd(
    x: &crate::Tensor,
    gamma: &crate::Tensor,
    stats: &crate::NormStats,
    dy: &crate::Tensor,
) -> crate::Result<crate::NormGrads> {
    let be = super::all_same("layer_norm_bwd", &[x, gamma, dy])?;
    stats_fit("layer_norm_bwd", x, stats)?;
    super::same_shape("layer_norm_bwd", x, dy)?;
    last_axis_checks::affine("layer_norm_bwd", x, gamma, gamma)?;
    let rows = &x.shape()[..x.rank() - 1];
    super::expect_shape("layer_norm_bwd", &stats.mean, rows)?;
    super::expect_shape("layer_norm_bwd", &stats.rstd, rows)?;
    be.layer_norm_bwd(crate::backend::NormSaved { x, gamma, stats }, dy)
}

/// Checks that `stats` live on `x`'s device with the dtype [`crate::NormStats::dtype_for`]
/// gives for `x` (f32 statistics for bf16 inputs).
fn stats_fit(op: &'static str, x: &crate::Tensor, stats: &crate::NormStats) -> crate::Result<()> {
    let want = crate::NormStats::dtype_for(x.dtype());
    for s in [&stats.mean, &stats.rstd] {
        if s.device() != x.device() {
            return Err(crate::Error::DeviceMismatch {
                op,
                lhs: x.device(),
                rhs: s.device(),
            });
        }
        if s.dtype() != want {
            return Err(crate::Error::DTypeMismatch {
                op,
                lhs: want,
                rhs: s.dtype(),
            });
        }
    }
    Ok(())
}

/// L2 normalisation over the last axis, `y = x / max(||x||, eps)` (like
/// `torch.nn.functional.normalize(x, dim=-1)`); `eps > 0`. Returns `(y, norms)` where `norms`
/// (shape of `x` without its last axis) holds the unclamped `||x||`.
pub fn l2_normalize(x: &crate::Tensor, eps: f64) -> crate::Result<(crate::Tensor, crate::Tensor)> {
    last_axis_checks::last_axis("l2_normalize", x)?;
    crate::checks::eps("l2_normalize", eps, true)?;
    crate::backend::backend_for("l2_normalize", x.device())?.l2_normalize(x, eps)
}

/// Backward of [`l2_normalize`] from its outputs `y`, `norms` and the same `eps`.
pub fn l2_normalize_bwd(
    y: &crate::Tensor,
    norms: &crate::Tensor,
    dy: &crate::Tensor,
    eps: f64,
) -> crate::Result<crate::Tensor> {
    let be = super::all_same("l2_normalize_bwd", &[y, norms, dy])?;
    super::same_shape("l2_normalize_bwd", y, dy)?;
    last_axis_checks::last_axis("l2_normalize_bwd", y)?;
    super::expect_shape("l2_normalize_bwd", norms, &y.shape()[..y.rank() - 1])?;
    crate::checks::eps("l2_normalize_bwd", eps, true)?;
    be.l2_normalize_bwd(y, norms, dy, eps)
}

/// Validation shared by the last-axis normalisations.
mod last_axis_checks {
    use crate::{Error, Result, Tensor};

    /// `x` has at least one axis and a non-empty last axis.
    pub(super) fn last_axis(op: &'static str, x: &Tensor) -> Result<usize> {
        match x.shape().last() {
            Some(&d) if d > 0 => Ok(d),
            _ => Err(Error::invalid(
                op,
                format!("expected a non-empty last axis, got shape {:?}", x.shape()),
            )),
        }
    }

    /// `gamma` and `beta` have shape `[D]`, `D` = the last axis of `x`.
    pub(super) fn affine(
        op: &'static str,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
    ) -> Result<()> {
        let d = last_axis(op, x)?;
        for p in [gamma, beta] {
            if p.shape() != [d] {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: x.shape().to_vec(),
                    rhs: p.shape().to_vec(),
                });
            }
        }
        Ok(())
    }
}
