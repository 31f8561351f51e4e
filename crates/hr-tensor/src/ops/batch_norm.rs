//! Front-end ops of the batch-norm family (see [`crate::backend::BatchNormOps`]): batch norm
//! over axis 1 in training and evaluation mode, optionally fused with an activation, and the
//! backwards.

use crate::backend::{Affine, BatchNormTrain, NormSaved, Running};

/// Batch norm in training mode over axis 1 of `x` (N, C, *spatial) or (N, C), PyTorch
/// `BatchNorm2d` semantics: normalises with the batch mean and biased variance,
/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, and updates the running statistics in
/// place: `running_mean = (1 - momentum) * running_mean + momentum * mean`,
/// `running_var = (1 - momentum) * running_var + momentum * var * M / (M - 1)` (unbiased,
/// `M = N * prod(spatial)`). `gamma`, `beta` and the running statistics have shape `[C]`;
/// `momentum` is in [0, 1], `eps >= 0`, and `M` must be at least 2. Returns `y` and the
/// per-channel `mean` / `rstd` that [`batch_norm_bwd`] needs.
///
/// With `act` (ReLU, Hardswish, ...) the activation follows, fused: the same output values,
/// statistics and running-stat update as the two ops in sequence, but the normalised tensor is
/// never stored (one pass over the output instead of two). Its backward is [`batch_norm_bwd`]
/// with the same activation.
///
/// Mixed precision (every batch norm op): a bf16 `x` takes f32 parameters and running
/// statistics and gives a bf16 `y` (the f32 op on `x`'s values, rounded once) with f32
/// statistics; the backward then takes a bf16 `dy` and gives a bf16 `dx` with f32 `dgamma` and
/// `dbeta`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train(
    x: &crate::Tensor,
    gamma: &crate::Tensor,
    beta: &crate::Tensor,
    running_mean: &mut crate::Tensor,
    running_var: &mut crate::Tensor,
    momentum: f64,
    eps: f64,
    act: Option<crate::Unary>,
) -> crate::Result<(crate::Tensor, crate::NormStats)> {
    const OP: &str = "batch_norm_train";
    let operands = [x, gamma, beta, &*running_mean, &*running_var];
    let be = train_checks(OP, operands, momentum, eps)?;
    let running = Running {
        mean: running_mean,
        var: running_var,
        momentum,
    };
    let affine = Affine { gamma, beta, eps };
    be.batch_norm_train(
        x,
        BatchNormTrain {
            affine,
            running,
            act,
        },
    )
}

/// Operand checks of the train-mode batch norms; returns the operands' backend.
fn train_checks(
    op: &'static str,
    [x, gamma, beta, rm, rv]: [&crate::Tensor; 5],
    momentum: f64,
    eps: f64,
) -> crate::Result<&'static dyn crate::backend::Backend> {
    let (be, [n, _, s]) = channel_checks(op, &[x], &[gamma, beta, rm, rv])?;
    crate::checks::eps(op, eps, false)?;
    if !(0.0..=1.0).contains(&momentum) {
        return Err(crate::Error::invalid(
            op,
            format!("momentum = {momentum} is outside [0, 1]"),
        ));
    }
    if n.saturating_mul(s) < 2 {
        return Err(crate::Error::invalid(
            op,
            format!(
                "expected more than 1 value per channel when training, got input shape {:?}",
                x.shape()
            ),
        ));
    }
    Ok(be)
}

/// Batch norm in evaluation mode: `y = (x - running_mean) / sqrt(running_var + eps) * gamma +
/// beta` per channel (axis 1 of `x`); every parameter has shape `[C]`.
pub fn batch_norm_eval(
    x: &crate::Tensor,
    gamma: &crate::Tensor,
    beta: &crate::Tensor,
    running_mean: &crate::Tensor,
    running_var: &crate::Tensor,
    eps: f64,
) -> crate::Result<crate::Tensor> {
    const OP: &str = "batch_norm_eval";
    let (be, _) = channel_checks(OP, &[x], &[gamma, beta, running_mean, running_var])?;
    crate::checks::eps(OP, eps, false)?;
    let p = Affine { gamma, beta, eps };
    be.batch_norm_eval(x, p, [running_mean, running_var])
}

/// Backward of [`batch_norm_train`]: `(dx, dgamma, dbeta)` for the upstream gradient `dy`, from
/// the input, `gamma` and the statistics the forward returned. With `act` (the fused activation
/// and the forward's `beta`), `dy` is the gradient of the activation's output: the normalised
/// value is recomputed per element as `(x - mean) * round(rstd * gamma) + beta` (f64 product
/// rounded once) for the activation's derivative, so it can differ from the forward's by an ulp
/// (the forward rounds from the f64 rstd): gradients agree with the unfused ops to ~1e-7
/// relative, exactly in f64.
pub fn batch_norm_bwd(
    x: &crate::Tensor,
    gamma: &crate::Tensor,
    stats: &crate::NormStats,
    dy: &crate::Tensor,
    act: Option<(crate::Unary, &crate::Tensor)>,
) -> crate::Result<crate::NormGrads> {
    const OP: &str = "batch_norm_bwd";
    let mut params = vec![gamma, &stats.mean, &stats.rstd];
    params.extend(act.map(|(_, beta)| beta));
    let (be, _) = channel_checks(OP, &[x, dy], &params)?;
    super::same_shape(OP, x, dy)?;
    be.batch_norm_bwd(NormSaved { x, gamma, stats }, dy, act)
}

/// The checks every batch norm makes: activations `acts` (the first is `x`, (N, C, ...)) on one
/// backend with per-channel parameters `params` (shape `[C]`, f32 for bf16 activations).
/// Returns the backend and `[N, C, S]` (S: the product of the spatial axes).
fn channel_checks(
    op: &'static str,
    acts: &[&crate::Tensor],
    params: &[&crate::Tensor],
) -> crate::Result<(&'static dyn crate::backend::Backend, [usize; 3])> {
    let be = super::acts_params(op, acts, params)?;
    let (n, c, s) = crate::checks::nc_spatial(op, acts[0])?;
    for p in params {
        crate::checks::per_channel(op, acts[0], p, c)?;
    }
    Ok((be, [n, c, s]))
}
