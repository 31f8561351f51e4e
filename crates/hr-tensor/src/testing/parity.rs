//! Device parity: an op run on the device under test against the CPU backend's result of the
//! same op on the same inputs.
//!
//! A case is written once as `fn case(dev: Device)` and registered with
//! [`test_device!`](crate::test_device), which runs it on the CPU and on a CUDA device. Inputs
//! are made on the host ([`randn`], [`uniform`], [`bf16_host`], [`bf16_special`]) and moved to
//! `dev` with [`on`]; the reference is the same op on the host tensors.
//!
//! * On a CUDA device the error measure is normwise, `max |got - cpu| / max |cpu|` over the
//!   tensor, below a tolerance ([`TOL`] = 1e-5 for f32, GEMMs without TF32; [`BF16_TOL`] for
//!   bf16 storage). Outputs are NaN-poisoned before each launch (switched on by
//!   [`super::cuda_device`]), so an element a kernel does not write fails the comparison.
//! * With `dev = Device::Cpu` both sides run the same CPU code on the same values, so every
//!   comparison here demands exact equality instead (tolerance 0; NaNs and infinities in the
//!   same places): a CPU kernel that is not deterministic fails.
//!
//! Each comparison prints one line with the op, the shape and the error, and on a mismatch the
//! worst element and the first one over tolerance.

use crate::{DType, Device, Rng, Tensor};

/// Normwise tolerance of f32 results on a CUDA device (GEMMs run without TF32).
pub const TOL: f64 = 1e-5;

/// Normwise tolerance of bf16 results on a CUDA device (a bf16 ulp is 2^-8 relative).
pub const BF16_TOL: f64 = 1e-2;

/// A host f32 tensor of standard normal samples (seeded).
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, &mut Rng::new(seed)).expect("randn")
}

/// A host f32 tensor uniform in `[lo, hi)` (seeded).
pub fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, lo, hi, &mut Rng::new(seed)).expect("uniform")
}

/// Normal samples times `std` plus `shift` (seeded), stored as bf16 on the host.
pub fn bf16_host(shape: &[usize], std: f32, shift: f64, seed: u64) -> Tensor {
    let x = Tensor::randn(shape, std, &mut Rng::new(seed)).expect("randn");
    crate::ops::affine(&x, 1.0, shift)
        .and_then(|x| x.to_dtype(DType::BF16))
        .expect("bf16")
}

/// bf16 values of `shape` on the host (standard normal, seeded) with -0.0, +inf, -inf and NaN
/// among them (every 7th element from the first): inputs of ops that only move data.
pub fn bf16_special(shape: &[usize], seed: u64) -> Tensor {
    let mut v = randn(shape, seed).to_vec_f32().expect("values");
    for (slot, s) in v
        .iter_mut()
        .step_by(7)
        .zip([-0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN])
    {
        *slot = s;
    }
    Tensor::from_vec(v, shape)
        .and_then(|t| t.to_dtype(DType::BF16))
        .expect("bf16")
}

/// A (b, k) f32 key-padding mask (1 = keep) on the host: random (70 % kept, seeded), row 0
/// keeps only its first key, the last row (when b > 1) keeps nothing: the edge cases of every
/// masked softmax.
pub fn key_padding_mask(b: usize, k: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let mut m: Vec<f32> = (0..b * k)
        .map(|_| if rng.uniform() < 0.7 { 1.0 } else { 0.0 })
        .collect();
    m[..k]
        .iter_mut()
        .enumerate()
        .for_each(|(j, v)| *v = if j == 0 { 1.0 } else { 0.0 });
    if b > 1 {
        m[(b - 1) * k..].iter_mut().for_each(|v| *v = 0.0);
    }
    Tensor::from_vec(m, &[b, k]).expect("mask")
}

/// A maker of host inputs (`shape`, `seed`) for a case shared by several dtypes: [`randn`],
/// [`bf16_special`], a closure over [`bf16_host`]...
pub type MakeFn<'a> = &'a dyn Fn(&[usize], u64) -> Tensor;

/// A comparison (`dev`, `name`, result, CPU reference) for a case shared by several dtypes:
/// [`check`], [`check_bf16`] or [`check_bf16_exact`].
pub type CheckFn<'a> = &'a dyn Fn(Device, &str, &Tensor, &Tensor);

/// `t` on `dev` (an upload to a GPU; the same tensor on the CPU).
pub fn on(t: &Tensor, dev: Device) -> Tensor {
    t.to_device(dev).expect("upload")
}

/// The tolerance a comparison on `dev` applies: `tol` on a GPU, 0 (exact) on the CPU, where
/// both sides are the same code.
fn tol_on(dev: Device, tol: f64) -> f64 {
    if dev.is_cpu() {
        0.0
    } else {
        tol
    }
}

/// Normwise relative error of `got` (computed on `dev`) against `cpu`: `Ok(report line)`, or
/// `Err(description)` on a shape mismatch, a result not on `dev`, a NaN the CPU does not have
/// (an unwritten, poisoned element) or an error above `tol` (above 0 when `dev` is the CPU).
/// The description names the worst element (index, both values) and the first element whose
/// error exceeds `tol * scale`.
pub fn compare(
    dev: Device,
    name: &str,
    got: &Tensor,
    cpu: &Tensor,
    tol: f64,
) -> Result<String, String> {
    let tol = tol_on(dev, tol);
    if got.shape() != cpu.shape() {
        return Err(format!(
            "{name}: shape {:?}, expected {:?}",
            got.shape(),
            cpu.shape()
        ));
    }
    if got.device() != dev {
        return Err(format!("{name}: result on {}, not on {dev}", got.device()));
    }
    let g = got
        .to_vec_f64()
        .map_err(|e| format!("{name}: download: {e}"))?;
    let c = cpu.to_vec_f64().expect("cpu values");
    if g.len() != c.len() {
        return Err(format!(
            "{name}: {} elements, expected {}",
            g.len(),
            c.len()
        ));
    }
    let mut scale = 0f64;
    let mut err = 0f64;
    let mut worst = 0usize;
    for (i, (&a, &b)) in g.iter().zip(&c).enumerate() {
        if b.is_nan() {
            if !a.is_nan() {
                return Err(format!("{name}: element {i}: {dev} {a} where cpu is NaN"));
            }
            continue;
        }
        if a.is_nan() {
            return Err(format!(
                "{name} {:?}: element {i} is NaN (unwritten?) where cpu is {b}",
                cpu.shape()
            ));
        }
        if b.is_infinite() || a.is_infinite() {
            if a != b {
                return Err(format!("{name}: element {i}: {dev} {a}, cpu {b}"));
            }
            continue;
        }
        scale = scale.max(b.abs());
        if (a - b).abs() > err {
            err = (a - b).abs();
            worst = i;
        }
    }
    let rel = if scale > 0.0 { err / scale } else { err };
    let detail = if err > 0.0 {
        let first_bad = g
            .iter()
            .zip(&c)
            .position(|(&a, &b)| (a - b).abs() > tol * scale);
        format!(
            "max abs err {err:.3e} at element {worst} ({dev} {}, cpu {}), scale {scale:.3e}, \
             first element over tolerance {first_bad:?}",
            g[worst], c[worst]
        )
    } else {
        "exact".to_string()
    };
    if rel <= tol {
        Ok(format!(
            "ok {name} {:?}: rel err {rel:.2e} ({detail})",
            cpu.shape()
        ))
    } else {
        Err(format!(
            "{name} {:?}: relative error {rel:.3e} > {tol:.0e}: {detail}",
            cpu.shape()
        ))
    }
}

/// [`compare`], printing the report line or panicking with the failure.
pub fn check_tol(dev: Device, name: &str, got: &Tensor, cpu: &Tensor, tol: f64) {
    match compare(dev, name, got, cpu, tol) {
        Ok(line) => println!("{line}"),
        Err(e) => panic!("{e}"),
    }
}

/// [`check_tol`] at the f32 tolerance [`TOL`].
pub fn check(dev: Device, name: &str, got: &Tensor, cpu: &Tensor) {
    check_tol(dev, name, got, cpu, TOL);
}

/// A bf16 result against the CPU's bf16 result: both must be bf16, then [`check_tol`] at
/// [`BF16_TOL`].
pub fn check_bf16(dev: Device, name: &str, got: &Tensor, cpu: &Tensor) {
    assert_eq!(got.dtype(), DType::BF16, "{name}: {dev} dtype");
    assert_eq!(cpu.dtype(), DType::BF16, "{name}: cpu dtype");
    check_tol(dev, &format!("{name} bf16"), got, cpu, BF16_TOL);
}

/// A bf16 result of an op that only moves data must hold exactly the CPU's bits (signed zeros,
/// infinities and NaN payloads included; an unwritten, poisoned element is 0xffff), and be on
/// `dev`. Panics on a difference.
pub fn check_bf16_exact(dev: Device, name: &str, got: &Tensor, cpu: &Tensor) {
    assert_eq!(got.dtype(), DType::BF16, "{name}: {dev} dtype");
    assert_eq!(got.device(), dev, "{name}: not on {dev}");
    assert_eq!(got.shape(), cpu.shape(), "{name}: shape");
    let bits = |t: &Tensor| -> Vec<u16> {
        let t = t.to_device(Device::Cpu).expect("download");
        let s = t.as_slice::<half::bf16>().expect("bf16 slice");
        s.iter().map(|v| v.to_bits()).collect()
    };
    let (g, c) = (bits(got), bits(cpu));
    if let Some(i) = g.iter().zip(&c).position(|(a, b)| a != b) {
        panic!(
            "{name} bf16: element {i} is {:#06x}, CPU {:#06x}",
            g[i], c[i]
        );
    }
    println!("ok {name} bf16: bit-exact ({} elements)", g.len());
}

/// Element by element within one bf16 rounding of the CPU's bf16 result: `|g - c| <= 2^-7 |c|`
/// (one bf16 ulp at the bottom of a binade), plus `1e-3` of the largest `|c|` for results
/// that cancel (the GPU and CPU accumulate f32 sums in different orders, so the rounding of
/// an element can flip). On the CPU (`dev`), exactly equal. Returns the report line or the
/// first failing element.
pub fn within_one_rounding(
    dev: Device,
    name: &str,
    got: &Tensor,
    cpu: &Tensor,
) -> Result<String, String> {
    if got.dtype() != DType::BF16 || cpu.dtype() != DType::BF16 {
        return Err(format!(
            "{name}: dtypes {:?} / {:?}, expected bf16",
            got.dtype(),
            cpu.dtype()
        ));
    }
    if got.shape() != cpu.shape() {
        return Err(format!(
            "{name}: shape {:?} vs {:?}",
            got.shape(),
            cpu.shape()
        ));
    }
    let g = got
        .to_device(Device::Cpu)
        .and_then(|t| t.to_vec_f64())
        .map_err(|e| e.to_string())?;
    let c = cpu.to_vec_f64().map_err(|e| e.to_string())?;
    let scale = c.iter().fold(0f64, |m, v| m.max(v.abs()));
    let (mut flips, mut worst) = (0usize, 0f64);
    for (i, (a, b)) in g.iter().zip(&c).enumerate() {
        let d = (a - b).abs();
        let within = match dev.is_cpu() {
            true => a == b || (a.is_nan() && b.is_nan()),
            false => !(d.is_nan() || d > b.abs() / 128.0 + 1e-3 * scale),
        };
        if !within {
            return Err(format!(
                "{name}: element {i}: {dev} {a} cpu {b} (more than one bf16 rounding)"
            ));
        }
        flips += (d > 0.0) as usize;
        worst = worst.max(d / scale.max(1e-30));
    }
    Ok(format!(
        "ok {name}: within one bf16 rounding ({flips} of {} elements differ, largest {worst:.1e} of max |cpu|)",
        c.len()
    ))
}

/// Failures collected over a whole test (each printed as it happens, all asserted at the end
/// by [`Report::finish`]), so that one GPU run reports every failing case, not just the first.
#[derive(Debug)]
pub struct Report {
    dev: Device,
    failures: Vec<String>,
}

impl Report {
    /// An empty report for results computed on `dev`.
    pub fn new(dev: Device) -> Report {
        Report {
            dev,
            failures: Vec::new(),
        }
    }

    /// Prints the line of a passing comparison, or prints and records a failure.
    fn record(&mut self, outcome: Result<String, String>) {
        match outcome {
            Ok(line) => println!("{line}"),
            Err(e) => {
                println!("FAILED {e}");
                self.failures.push(e);
            }
        }
    }

    /// Compares a result (or the error the op returned) with the CPU's, tolerance [`TOL`]
    /// ([`compare`]).
    pub fn check(&mut self, name: &str, got: crate::Result<Tensor>, cpu: &Tensor) {
        let dev = self.dev;
        let outcome = got
            .map_err(|e| format!("{name}: the {dev} op failed: {e}"))
            .and_then(|g| compare(dev, name, &g, cpu, TOL));
        self.record(outcome);
    }

    /// Compares a result with the CPU's at tolerance `tol` ([`compare`]).
    pub fn check_tol_to(&mut self, name: &str, got: Tensor, cpu: &Tensor, tol: f64) {
        let outcome = compare(self.dev, name, &got, cpu, tol);
        self.record(outcome);
    }

    /// A bf16 result (or the op's error) within one bf16 rounding of the CPU's
    /// ([`within_one_rounding`]).
    pub fn check_rounding(&mut self, name: &str, got: crate::Result<Tensor>, cpu: &Tensor) {
        let dev = self.dev;
        let outcome = got
            .map_err(|e| format!("{name}: the {dev} op failed: {e}"))
            .and_then(|g| within_one_rounding(dev, name, &g, cpu));
        self.record(outcome);
    }

    /// Panics listing every failure, naming `test`.
    pub fn finish(self, test: &str) {
        assert!(
            self.failures.is_empty(),
            "{test}: {} failure(s):\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}
