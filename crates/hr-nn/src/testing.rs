//! Helpers for tests: finite-difference checks (in f64) of the gradients of a layer or model
//! with respect to its inputs and every trainable parameter of its [`ParamStore`], and
//! comparisons of parameter gradients with reference values, reference fixtures.

use std::fmt::Display;
use std::path::PathBuf;

use hr_tensor::testing::{assert_close, check_gradients_with};
use hr_tensor::{DType, Tensor};

use crate::io::{read_safetensors, SafeFile};
use crate::{Param, ParamStore};

/// A copy of `ps` whose trainable values are `values` (in store order).
fn with_values(ps: &ParamStore, values: &[Tensor]) -> ParamStore {
    let mut p = ps.clone();
    p.set_trainable_values(values)
        .expect("one value per trainable parameter");
    p
}

fn to_tensor_err(e: impl Display) -> hr_tensor::Error {
    hr_tensor::Error::invalid("gradient check", e.to_string())
}

/// Checks the gradients of `inputs` and of every trainable parameter of `ps`, both converted
/// to f64, at up to `max_checks` elements each; panics naming `name` on a mismatch.
///
/// `fwd(ps, inputs)` returns the output; `fwd_bwd(ps, inputs, dy)` runs forward and backward
/// on `ps` (grads zeroed beforehand) and returns one gradient per input (`None`: not checked).
/// `param_grad(name, grad)` is the analytic gradient to check of each trainable parameter
/// (`None`: not checked, e.g. a gradient that is exactly zero in theory).
pub fn check_param_gradients<E: Display>(
    name: &str,
    (ps, inputs): (&ParamStore, &[Tensor]),
    max_checks: usize,
    fwd: impl Fn(&mut ParamStore, &[Tensor]) -> Result<Tensor, E>,
    fwd_bwd: impl Fn(&mut ParamStore, &[Tensor], &Tensor) -> Result<Vec<Option<Tensor>>, E>,
    param_grad: impl Fn(&str, &Tensor) -> Option<Tensor>,
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
    let ps0 = ps;
    check_gradients_with(
        name,
        &all,
        |xs| fwd(&mut with_values(&ps0, &xs[k..]), &xs[..k]).map_err(to_tensor_err),
        |xs, dy| {
            let mut p = with_values(&ps0, &xs[k..]);
            p.zero_grad().map_err(to_tensor_err)?;
            let mut out = fwd_bwd(&mut p, &xs[..k], dy).map_err(to_tensor_err)?;
            out.extend(
                p.iter()
                    .filter(|(_, q)| q.trainable)
                    .map(|(_, q)| param_grad(&q.name, &q.grad)),
            );
            Ok(out)
        },
        1e-6,
        max_checks,
    );
}

/// Asserts that the gradient of each of `params` is within `tol` of `want("grad.NAME")`;
/// returns how many were compared.
pub fn assert_grads_close<'a>(
    params: impl IntoIterator<Item = &'a Param>,
    want: impl Fn(&str) -> Tensor,
    tol: f64,
) -> usize {
    let mut checked = 0;
    for p in params {
        let key = format!("grad.{}", p.name);
        assert_close(&key, &p.grad, &want(&key), tol);
        checked += 1;
    }
    checked
}

/// A reference fixture (`fixtures/reference/NAME`, written by the PyTorch reference scripts).
pub struct Reference {
    /// Its path.
    pub path: PathBuf,
    /// Its tensors and metadata.
    pub file: SafeFile,
}

impl Reference {
    /// Reads `fixtures/reference/name` (panics when it cannot).
    pub fn open(name: &str) -> Reference {
        let path = hr_tensor::testing::reference_fixture(name);
        let file = read_safetensors(&path).unwrap_or_else(|e| panic!("{e}"));
        Reference { path, file }
    }

    /// The tensor `name` (panics when the fixture has none).
    pub fn get(&self, name: &str) -> Tensor {
        match self.file.get(&self.path, name) {
            Ok(t) => t.clone(),
            Err(e) => panic!("{e}"),
        }
    }

    /// The tensor `name`, which holds small whole numbers (ids, masks, ranks), as integers.
    pub fn integers<T: TryFrom<u64>>(&self, name: &str) -> Vec<T> {
        let v = self.get(name).to_vec_f64().expect("a tensor on the CPU");
        v.iter()
            .map(|&x| match T::try_from(x as u64) {
                Ok(i) => i,
                Err(_) => panic!("{name}: {x} does not fit"),
            })
            .collect()
    }

    /// Sets every parameter of `ps` to the fixture's `param.NAME`.
    pub fn load_params(&self, ps: &mut ParamStore) {
        for (_, p) in ps.iter_mut() {
            p.value = self.get(&format!("param.{}", p.name));
        }
    }
}
