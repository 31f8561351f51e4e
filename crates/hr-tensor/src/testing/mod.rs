//! Test helpers shared by every crate: random tensors, a finite-difference gradient check, and
//! device-parametrised tests ([`test_device!`](crate::test_device), [`cuda_device`] and the
//! comparisons of [`parity`]).
//!
//! ## Gradient check
//!
//! The check runs in f64 on the CPU backend: the op is evaluated at `x ± h` (central
//! differences, h = 1e-6) on the scalar loss `L = sum(f(x) * R)` with a fixed random `R`, and the
//! analytic gradients from the backward function (called with `dy = R`) must agree to a relative
//! error (max |analytic - numeric| / max |numeric|) below the given tolerance (1e-6 is typical
//! in f64; truncation error of central differences is O(h^2) and rounding O(1e-16 / h)).

use crate::{DType, Error, Result, Rng, Tensor};

pub mod parity;

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

/// Asserts that `r` is the error of an op without a bf16 kernel given bf16 operands, naming
/// `op` (`Error::UnsupportedDType` with dtype bf16).
pub fn assert_unsupported_bf16<T: std::fmt::Debug>(op: &str, r: Result<T>) {
    match r {
        Err(crate::Error::UnsupportedDType {
            op: o,
            dtype: crate::DType::BF16,
            ..
        }) if o == op => {}
        other => panic!("{op}: expected UnsupportedDType (bf16) naming it, got {other:?}"),
    }
}

/// [`check_gradients_with`] at the usual tolerance: relative error 1e-6 on at most 64
/// elements per input.
pub fn check_gradients(
    name: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    grads: impl Fn(&[Tensor], &Tensor) -> Result<Vec<Option<Tensor>>>,
) {
    check_gradients_with(name, inputs, f, grads, 1e-6, 64)
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
pub fn check_gradients_with(
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

/// The line a CUDA test prints when it skips on a machine without a usable GPU (one line per
/// test, so CI logs show how many GPU tests did not run).
pub const CUDA_SKIP_LINE: &str = "skipped: no CUDA device";

/// CUDA device 0 when a driver and the device are usable, else `None` (prints nothing).
///
/// Opening it switches on NaN-poisoning of CUDA outputs
/// ([`crate::cuda::set_poison_outputs`]), so an element a kernel does not write shows up in a
/// comparison.
pub fn cuda_device() -> Option<crate::Device> {
    if !crate::cuda::driver_present() {
        return None;
    }
    let dev = crate::Device::cuda(0).ok()?;
    crate::cuda::set_poison_outputs(true);
    Some(dev)
}

/// [`cuda_device`] for a GPU test, or `None` after printing the one [`CUDA_SKIP_LINE`]
/// ("skipped: no CUDA device") such a test prints on a machine without a GPU.
pub fn cuda_or_skip() -> Option<crate::Device> {
    let dev = cuda_device();
    if dev.is_none() {
        println!("{CUDA_SKIP_LINE}");
    }
    dev
}

/// Registers a device-parametrised test case `fn case(dev: Device)` as two `#[test]`
/// functions in a module named after it (as candle's `test_device!` does):
///
/// * `case::on_cpu` runs `case(Device::Cpu)`;
/// * `case::on_cuda` runs `case(dev)` on CUDA device 0 when one is usable ([`cuda_device`]),
///   otherwise prints the one line "skipped: no CUDA device" ([`cuda_or_skip`]) and returns.
///
/// The GPU cases of a test executable are the ones whose name contains `_cuda`
/// (`<test executable> _cuda` runs only them; `tools/gpu_check.sh` does that).
///
/// ```ignore
/// use hr_tensor::testing::parity::{check, on, randn};
/// use hr_tensor::{ops, test_device, Device};
///
/// fn affine(dev: Device) {
///     let x = randn(&[3, 5], 1);
///     check(dev, "affine", &ops::affine(&on(&x, dev), 2.0, 1.0).unwrap(),
///           &ops::affine(&x, 2.0, 1.0).unwrap());
/// }
/// test_device!(affine);
/// ```
#[macro_export]
macro_rules! test_device {
    ($case:ident) => {
        mod $case {
            #[test]
            fn on_cpu() {
                super::$case($crate::Device::Cpu)
            }

            #[test]
            fn on_cuda() {
                if let Some(dev) = $crate::testing::cuda_or_skip() {
                    super::$case(dev)
                }
            }
        }
    };
}
