//! Shared test helpers: fixture paths and finite-difference checks of every trainable
//! parameter (and optional inputs) of a model in f64.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

use hr_models::Result;
use hr_nn::ParamStore;
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

fn to_tensor_err(e: impl std::fmt::Display) -> hr_tensor::Error {
    hr_tensor::Error::invalid("model", e.to_string())
}

/// Parameters whose true gradient is exactly zero: a key bias adds the same score to every
/// key of a query row, which softmax ignores. Relative errors of noise are meaningless there.
pub fn is_zero_grad(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

/// Asserts that a gradient that must be zero is zero up to rounding.
pub fn assert_tiny(name: &str, g: &Tensor) {
    let m = g
        .to_vec_f64()
        .expect("cpu")
        .iter()
        .fold(0f64, |a, v| a.max(v.abs()));
    assert!(m < 1e-6, "{name}: gradient must vanish, max |g| = {m:e}");
}

/// Checks the gradients of `inputs` (f64) and of every trainable parameter of `ps` (converted
/// to f64). `fwd(ps, inputs)` returns the output; `fwd_bwd(ps, inputs, dy)` runs forward and
/// backward on `ps` (grads zeroed) and returns one gradient per input (None = not checked).
pub fn check_model(
    name: &str,
    ps: &ParamStore,
    inputs: &[Tensor],
    max_checks: usize,
    fwd: impl Fn(&ParamStore, &[Tensor]) -> Result<Tensor>,
    fwd_bwd: impl Fn(&mut ParamStore, &[Tensor], &Tensor) -> Result<Vec<Option<Tensor>>>,
) {
    let mut ps = ps.clone();
    ps.to_dtype(DType::F64).expect("to f64");
    let k = inputs.len();
    let mut all: Vec<Tensor> = inputs
        .iter()
        .map(|x| x.to_dtype(DType::F64).expect("to f64"))
        .collect();
    all.extend(
        ps.iter()
            .filter(|(_, p)| p.trainable)
            .map(|(_, p)| p.value.clone()),
    );
    let ps0 = ps.clone();
    check_gradients(
        name,
        &all,
        |xs| fwd(&with_values(&ps0, &xs[k..]), &xs[..k]).map_err(to_tensor_err),
        |xs, dy| {
            let mut p = with_values(&ps0, &xs[k..]);
            p.zero_grad().map_err(to_tensor_err)?;
            let mut out = fwd_bwd(&mut p, &xs[..k], dy).map_err(to_tensor_err)?;
            for (_, q) in p.iter().filter(|(_, q)| q.trainable) {
                out.push(if is_zero_grad(&q.name) {
                    assert_tiny(&q.name, &q.grad);
                    None
                } else {
                    Some(q.grad.clone())
                });
            }
            Ok(out)
        },
        1e-6,
        max_checks,
    );
}
