//! Shared test helpers: finite-difference checks of a layer's input and parameter gradients.
#![allow(dead_code, unused_imports)]

use hr_nn::{ParamStore, Result};
use hr_tensor::testing::check_gradients;
use hr_tensor::{DType, Tensor};

pub use hr_tensor::testing::reference_fixture as fixture;

/// A copy of `ps` whose trainable values are `values` (in store order).
fn with_values(ps: &ParamStore, values: &[Tensor]) -> ParamStore {
    let mut p = ps.clone();
    p.set_trainable_values(values)
        .expect("one value per trainable parameter");
    p
}

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
    let mut ps = ps.clone();
    ps.to_dtype(DType::F64).expect("to f64");
    let x = x.to_dtype(DType::F64).expect("to f64");
    let mut inputs = vec![x];
    inputs.extend(
        ps.iter()
            .filter(|(_, p)| p.trainable)
            .map(|(_, p)| p.value.clone()),
    );
    let ps0 = ps.clone();
    check_gradients(
        name,
        &inputs,
        |xs| {
            fwd(&mut with_values(&ps0, &xs[1..]), &xs[0])
                .map_err(|e| hr_tensor::Error::invalid("layer", e.to_string()))
        },
        |xs, dy| {
            let mut p = with_values(&ps0, &xs[1..]);
            p.zero_grad()
                .map_err(|e| hr_tensor::Error::invalid("zero_grad", e.to_string()))?;
            let dx = fwd_bwd(&mut p, &xs[0], dy)
                .map_err(|e| hr_tensor::Error::invalid("layer", e.to_string()))?;
            let mut out = vec![dx];
            out.extend(
                p.iter()
                    .filter(|(_, q)| q.trainable)
                    .map(|(_, q)| Some(q.grad.clone())),
            );
            Ok(out)
        },
        1e-6,
        48,
    );
}
