//! Front-end ops of the softmax family (see the backend trait): softmax with an optional
//! key-padding mask, log-softmax, negative log-likelihood and cross-entropy, each with its
//! backward.

use super::{pair, rows_cols, same_shape};
use crate::backend::backend_for;
use crate::{Error, Result, Tensor};

/// Softmax over the last axis (numerically stable). With `mask` of shape (B, K) (1 = keep,
/// 0 = drop; same dtype as `x`) and `x` of shape (B, ..., K), every row of batch entry `b` uses
/// mask row `b`: dropped entries get probability exactly 0 and a fully masked row is all zeros.
pub fn softmax(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (_, k) = rows_cols("softmax", x)?;
    let be = match mask {
        Some(m) => {
            let be = pair("softmax", x, m)?;
            let fits = m.rank() == 2 && x.rank() >= 2 && m.shape() == [x.shape()[0], k];
            if !fits {
                return Err(Error::ShapeMismatch {
                    op: "softmax",
                    lhs: x.shape().to_vec(),
                    rhs: m.shape().to_vec(),
                });
            }
            be
        }
        None => backend_for("softmax", x.device())?,
    };
    be.softmax(x, mask)
}

/// Backward of [`softmax`] from its output `y`: `dx = y * (dy - sum(dy * y))` (masked entries
/// have `y = 0` and get no gradient).
pub fn softmax_bwd(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    rows_cols("softmax_bwd", y)?;
    same_shape("softmax_bwd", y, dy)?;
    pair("softmax_bwd", y, dy)?.softmax_bwd(y, dy)
}

/// Log-softmax over the last axis: `x - max - ln(sum(exp(x - max)))`.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    rows_cols("log_softmax", x)?;
    backend_for("log_softmax", x.device())?.log_softmax(x)
}

/// Backward of [`log_softmax`] from its output `y`: `dx = dy - exp(y) * sum(dy)`.
pub fn log_softmax_bwd(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    rows_cols("log_softmax_bwd", y)?;
    same_shape("log_softmax_bwd", y, dy)?;
    pair("log_softmax_bwd", y, dy)?.log_softmax_bwd(y, dy)
}

/// Checks one target per row of `logp` (rows, C), each `< C`; errors name the row and value.
fn check_targets(op: &'static str, logp: &Tensor, targets: &[u32]) -> Result<()> {
    let (rows, k) = rows_cols(op, logp)?;
    crate::checks::check_targets(op, rows, k, targets)
}

/// Negative log-likelihood: mean over rows of `-logp[row, targets[row]]` (shape `[]`);
/// `logp` is (..., C) with one target per row.
pub fn nll_loss(logp: &Tensor, targets: &[u32]) -> Result<Tensor> {
    check_targets("nll_loss", logp, targets)?;
    backend_for("nll_loss", logp.device())?.nll_loss(logp, targets)
}

/// Backward of [`nll_loss`] for upstream gradient `dloss`: `-dloss / rows` at each target,
/// zero elsewhere.
pub fn nll_loss_bwd(logp: &Tensor, targets: &[u32], dloss: f64) -> Result<Tensor> {
    check_targets("nll_loss_bwd", logp, targets)?;
    backend_for("nll_loss_bwd", logp.device())?.nll_loss_bwd(logp, targets, dloss)
}

/// Cross-entropy of `logits` (..., C) against one class per row, averaged over rows (like
/// `torch.nn.functional.cross_entropy` with `reduction="mean"`). Returns `(loss, logp)`; keep
/// `logp` for [`cross_entropy_bwd`].
pub fn cross_entropy(logits: &Tensor, targets: &[u32]) -> Result<(Tensor, Tensor)> {
    check_targets("cross_entropy", logits, targets)?;
    let logp = log_softmax(logits)?;
    let loss = nll_loss(&logp, targets)?;
    Ok((loss, logp))
}

/// Backward of [`cross_entropy`]: `dlogits = dloss * (softmax(logits) - onehot(targets)) / rows`,
/// computed from the saved `logp`.
pub fn cross_entropy_bwd(logp: &Tensor, targets: &[u32], dloss: f64) -> Result<Tensor> {
    check_targets("cross_entropy_bwd", logp, targets)?;
    let dlogp = nll_loss_bwd(logp, targets, dloss)?;
    log_softmax_bwd(logp, &dlogp)
}
