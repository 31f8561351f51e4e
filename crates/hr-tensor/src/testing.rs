//! Test helpers shared by every crate: random tensors and a finite-difference gradient check.
//!
//! The check runs in f64 on the CPU backend: the op is evaluated at `x ± h` (central
//! differences, h = 1e-6) on the scalar loss `L = sum(f(x) * R)` with a fixed random `R`, and the
//! analytic gradients from the backward function (called with `dy = R`) must agree to a relative
//! error (max |analytic - numeric| / max |numeric|) below the given tolerance (1e-6 is typical
//! in f64; truncation error of central differences is O(h^2) and rounding O(1e-16 / h)).

use crate::{DType, Error, Result, Rng, Tensor};

/// Path of a reference fixture in the repository's `fixtures/reference/` folder (outputs of the
/// reference implementations; its README says which).
pub fn reference_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/reference")
        .join(name)
}

/// A random normal f64 tensor.
pub fn randn64(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, shape).expect("shape matches the element count")
}

/// A pair `(f32, bf16)` of CPU tensors holding the same bf16-representable values: normal
/// samples times `std` plus `shift` (seeded), rounded to bf16.
pub fn bf16_pair(shape: &[usize], std: f32, shift: f64, seed: u64) -> (Tensor, Tensor) {
    let x = Tensor::randn(shape, std, &mut Rng::new(seed)).expect("randn");
    let b = crate::ops::affine(&x, 1.0, shift)
        .and_then(|x| x.to_dtype(DType::BF16))
        .expect("to bf16");
    (b.to_dtype(DType::F32).expect("to f32"), b)
}

/// The bit patterns of a bf16 CPU tensor.
pub fn bf16_bits(t: &Tensor) -> Vec<u16> {
    t.as_slice::<half::bf16>()
        .expect("bf16 storage")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// A random normal f32 tensor.
pub fn randn32(shape: &[usize], rng: &mut Rng) -> Tensor {
    randn64(shape, rng)
        .to_dtype(DType::F32)
        .expect("f64 -> f32 conversion on the CPU")
}

/// Maximum relative difference `max|a - b| / max|b|` (b is the reference).
pub fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op: "max_rel_diff",
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
        });
    }
    let (av, bv) = (a.to_vec_f64()?, b.to_vec_f64()?);
    let scale = bv.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let diff = av
        .iter()
        .zip(&bv)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    Ok(diff / scale)
}

/// Asserts `max_rel_diff(a, b) < tol` with a message naming `what`.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let d = max_rel_diff(a, b).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(d < tol, "{what}: max relative difference {d:e} >= {tol:e}");
}

/// `sum(y * r)` in f64.
fn dot(y: &Tensor, r: &[f64]) -> Result<f64> {
    Ok(y.to_vec_f64()?.iter().zip(r).map(|(a, b)| a * b).sum())
}

/// Checks analytic gradients against central finite differences.
///
/// * `inputs`: f64 CPU tensors;
/// * `f`: the forward function of all inputs;
/// * `grads`: the analytic gradients for `dy = R` (one entry per input; `None` = not
///   differentiable, skipped);
/// * `max_checks`: at most this many elements per input are probed (spread evenly).
///
/// A difference below the rounding noise of the central difference itself
/// (`4 eps sum|y r| / h`, about 1e-9 for a typical layer) passes: a gradient that is zero by
/// symmetry (a key bias under softmax) is otherwise compared with pure noise.
pub fn check_gradients(
    name: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    grads: impl Fn(&[Tensor], &Tensor) -> Result<Vec<Option<Tensor>>>,
    tol: f64,
    max_checks: usize,
) {
    let y = f(inputs).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let mut rng = Rng::new(0x5eed ^ y.numel() as u64);
    let r = randn64(y.shape(), &mut rng);
    let rv = r.to_vec_f64().expect("cpu tensor");
    let yv = y.to_vec_f64().expect("cpu tensor");
    let fd_noise =
        4.0 * f64::EPSILON * yv.iter().zip(&rv).map(|(a, b)| (a * b).abs()).sum::<f64>() / FD_STEP;
    let analytic = grads(inputs, &r).unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    assert_eq!(
        analytic.len(),
        inputs.len(),
        "{name}: one gradient per input"
    );
    for (i, g) in analytic.iter().enumerate() {
        let Some(g) = g else { continue };
        assert_eq!(g.shape(), inputs[i].shape(), "{name}: gradient {i} shape");
        let gv = g.to_vec_f64().expect("cpu tensor");
        let n = inputs[i].numel();
        let step = (n / max_checks.max(1)).max(1);
        // Gradients below 1e-8 in magnitude count as zero (a relative error of noise is meaningless).
        let (mut worst, mut scale, mut at) = (0f64, 1e-8f64, 0usize);
        for j in (0..n).step_by(step) {
            let num = numeric(&f, inputs, i, j, &rv).unwrap_or_else(|e| panic!("{name}: {e}"));
            scale = scale.max(num.abs()).max(gv[j].abs());
            let d = (num - gv[j]).abs();
            if d > worst && d > fd_noise {
                (worst, at) = (d, j);
            }
        }
        let rel = worst / scale;
        assert!(
            rel < tol,
            "{name}: input {i} element {at}: analytic {} vs numeric, relative error {rel:e} >= {tol:e}",
            gv[at]
        );
    }
}

/// Step of the central differences.
const FD_STEP: f64 = 1e-6;

/// Central difference of `sum(f(x) * r)` with respect to element `j` of input `i`.
fn numeric(
    f: &impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    i: usize,
    j: usize,
    r: &[f64],
) -> Result<f64> {
    let h = FD_STEP;
    let eval = |delta: f64| -> Result<f64> {
        let mut xs = inputs.to_vec();
        xs[i].as_mut_slice::<f64>()?[j] += delta;
        dot(&f(&xs)?, r)
    };
    Ok((eval(h)? - eval(-h)?) / (2.0 * h))
}

/// CUDA device 0 for a GPU test (outputs NaN-poisoned, so an unwritten element shows), or
/// `None` after printing the one "skipped: no CUDA device" line such a test prints on a
/// machine without a GPU.
pub fn cuda_or_skip() -> Option<crate::Device> {
    let dev = match crate::cuda::driver_present() {
        true => crate::Device::cuda(0).ok(),
        false => None,
    };
    match dev {
        Some(d) => {
            crate::cuda::set_poison_outputs(true);
            Some(d)
        }
        None => {
            println!("skipped: no CUDA device");
            None
        }
    }
}
