//! Shared test helpers: finite-difference checks of a layer's input and parameter gradients.
#![allow(dead_code, unused_imports)]

use hr_nn::testing::check_param_gradients;
use hr_nn::{ParamStore, Result};
use hr_tensor::Tensor;

pub use hr_tensor::testing::reference_fixture as fixture;

/// Checks dx and every parameter gradient of a layer in f64.
///
/// `fwd(ps, x)` returns the output; `fwd_bwd(ps, x, dy)` runs forward and backward on `ps`
/// (grads zeroed beforehand) and returns dx (None when x is not differentiable).
pub fn check_layer(
    name: &str,
    ps: &ParamStore,
    x: &Tensor,
    fwd: impl Fn(&mut ParamStore, &Tensor) -> Result<Tensor>,
    fwd_bwd: impl Fn(&mut ParamStore, &Tensor, &Tensor) -> Result<Option<Tensor>>,
) {
    check_param_gradients(
        name,
        (ps, std::slice::from_ref(x)),
        48,
        |p, xs| fwd(p, &xs[0]),
        |p, xs, dy| Ok(vec![fwd_bwd(p, &xs[0], dy)?]),
        |_, g| Some(g.clone()),
    );
}

/// [`check_layer`] of a layer given as its forward `fwd(ps, x) -> (y, cache)` and its
/// backward `bwd(ps, cache, dy) -> dx`.
pub fn check_cached<C>(
    name: &str,
    ps: &ParamStore,
    x: &Tensor,
    fwd: impl Fn(&mut ParamStore, &Tensor) -> Result<(Tensor, C)>,
    bwd: impl Fn(&mut ParamStore, &C, &Tensor) -> Result<Tensor>,
) {
    check_layer(
        name,
        ps,
        x,
        |ps, x| Ok(fwd(ps, x)?.0),
        |ps, x, dy| {
            let (_, c) = fwd(ps, x)?;
            Ok(Some(bwd(ps, &c, dy)?))
        },
    );
}
