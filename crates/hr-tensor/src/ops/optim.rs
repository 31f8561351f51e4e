//! Front-end ops of the optim family (see the backend trait): the fused Adam/AdamW step.

use super::{all_same, same_shape};
use crate::backend::AdamTensors;
use crate::{AdamStep, Error, Result, Tensor};

/// Checks the hyper-parameters of an Adam step.
fn check_hp(hp: &AdamStep) -> Result<()> {
    let bad = |msg: String| Err(Error::invalid("adam_step", msg));
    if hp.step == 0 {
        return bad("step must be >= 1 (it is 1-based)".into());
    }
    for (name, b) in [("beta1", hp.beta1), ("beta2", hp.beta2)] {
        if !(0.0..1.0).contains(&b) {
            return bad(format!("{name} = {b} is outside [0, 1)"));
        }
    }
    for (name, x) in [
        ("lr", hp.lr),
        ("eps", hp.eps),
        ("weight_decay", hp.weight_decay),
    ] {
        if !x.is_finite() || x < 0.0 {
            return bad(format!("{name} = {x} must be finite and >= 0"));
        }
    }
    Ok(())
}

/// One fused Adam/AdamW update in place, with PyTorch semantics:
/// `p -= lr * wd * p` (decoupled weight decay, AdamW; `wd = 0` is plain Adam), then
/// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `p -= lr * m_hat / (sqrt(v_hat) + eps)` with `m_hat = m / (1 - b1^t)`,
/// `v_hat = v / (1 - b2^t)`. `param`, `grad`, `m` and `v` must share shape, dtype and device.
pub fn adam_step(
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    hp: &AdamStep,
) -> Result<()> {
    let be = all_same("adam_step", &[param, grad, m, v])?;
    same_shape("adam_step", param, grad)?;
    same_shape("adam_step", param, m)?;
    same_shape("adam_step", param, v)?;
    check_hp(hp)?;
    let t = AdamTensors {
        params: std::slice::from_mut(param),
        grads: std::slice::from_ref(grad),
        m: std::slice::from_mut(m),
        v: std::slice::from_mut(v),
    };
    be.adam_step(t, hp)
}

/// [`adam_step`] for every `(params[i], grads[i], m[i], v[i])` with the same hyper-parameters,
/// in one launch on a GPU (the same values as one [`adam_step`] per tensor). The four lists
/// must have equal lengths; each quadruple the checks of [`adam_step`]; all tensors one
/// device and dtype.
pub fn adam_step_multi(
    params: &mut [Tensor],
    grads: &[Tensor],
    m: &mut [Tensor],
    v: &mut [Tensor],
    hp: &AdamStep,
) -> Result<()> {
    const OP: &str = "adam_step_multi";
    let n = params.len();
    if grads.len() != n || m.len() != n || v.len() != n {
        return Err(Error::invalid(
            OP,
            format!(
                "{n} parameters, {} gradients, {} first and {} second moments",
                grads.len(),
                m.len(),
                v.len()
            ),
        ));
    }
    check_hp(hp)?;
    if n == 0 {
        return Ok(());
    }
    let mut all: Vec<&Tensor> = Vec::with_capacity(4 * n);
    for (i, p) in params.iter().enumerate() {
        for t in [&grads[i], &m[i], &v[i]] {
            same_shape(OP, p, t)?;
        }
        all.extend([p, &grads[i], &m[i], &v[i]]);
    }
    let be = all_same(OP, &all)?;
    be.adam_step(
        AdamTensors {
            params,
            grads,
            m,
            v,
        },
        hp,
    )
}
