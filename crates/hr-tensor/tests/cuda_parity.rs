//! CUDA parity suite: every op ported to the CUDA backend against its CPU twin on fresh random
//! inputs of several shapes (odd sizes, broadcasting, masks), f32.
//!
//! Outputs of the CUDA backend are NaN-poisoned before each launch
//! ([`hr_tensor::cuda::set_poison_outputs`]), so an element a kernel does not write fails the
//! comparison. The error measure is normwise: `max |gpu - cpu| / max |cpu|` over the tensor,
//! which must be below 1e-5 (f32; GEMMs run without TF32). Dropout masks must be bit-identical.
//! Each comparison prints one line with the op, the shape, the error, and on a mismatch the worst
//! element and the first one over tolerance.
//!
//! Without a CUDA device every test prints exactly one line, "skipped: no CUDA device", and
//! returns.

use hr_tensor::{cuda, ops, AdamStep, DType, Device, Error, Rng, Tensor, Unary};

const TOL: f64 = 1e-5;

/// The GPU, or `None` after printing the skip line.
fn gpu() -> Option<Device> {
    if !cuda::driver_present() {
        println!("skipped: no CUDA device");
        return None;
    }
    match Device::cuda(0) {
        Ok(d) => {
            cuda::set_poison_outputs(true);
            Some(d)
        }
        Err(_) => {
            println!("skipped: no CUDA device");
            None
        }
    }
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, &mut Rng::new(seed)).expect("randn")
}

fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, lo, hi, &mut Rng::new(seed)).expect("uniform")
}

fn on(t: &Tensor, dev: Device) -> Tensor {
    t.to_device(dev).expect("upload")
}

/// Normwise relative error of `gpu` against `cpu`: `Ok(report line)`, or `Err(description)` on
/// a shape mismatch, a result not on the GPU, a NaN the CPU does not have (an unwritten,
/// poisoned element) or an error above `tol`. The description names the worst element (index,
/// both values) and the first element whose error exceeds `tol * scale`.
fn compare(name: &str, gpu: &Tensor, cpu: &Tensor, tol: f64) -> Result<String, String> {
    if gpu.shape() != cpu.shape() {
        return Err(format!(
            "{name}: shape {:?}, expected {:?}",
            gpu.shape(),
            cpu.shape()
        ));
    }
    if !matches!(gpu.device(), Device::Cuda(_)) {
        return Err(format!("{name}: result not on the GPU"));
    }
    let g = gpu
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
                return Err(format!("{name}: element {i}: gpu {a} where cpu is NaN"));
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
                return Err(format!("{name}: element {i}: gpu {a}, cpu {b}"));
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
            "max abs err {err:.3e} at element {worst} (gpu {}, cpu {}), scale {scale:.3e}, \
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

/// [`compare`], panicking on a failure.
fn check_tol(name: &str, gpu: &Tensor, cpu: &Tensor, tol: f64) {
    match compare(name, gpu, cpu, tol) {
        Ok(line) => println!("{line}"),
        Err(e) => panic!("{e}"),
    }
}

/// Failures collected over a whole test (each printed as it happens, all asserted at the end),
/// so that one GPU run reports every failing case, not just the first.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    /// Compares a GPU result (or the error the op returned) with the CPU's, tolerance [`TOL`].
    fn check(&mut self, name: &str, gpu: hr_tensor::Result<Tensor>, cpu: &Tensor) {
        let outcome = gpu
            .map_err(|e| format!("{name}: the CUDA op failed: {e}"))
            .and_then(|g| compare(name, &g, cpu, TOL));
        match outcome {
            Ok(line) => println!("{line}"),
            Err(e) => {
                println!("FAILED {e}");
                self.0.push(e);
            }
        }
    }

    /// Compares an f32 GPU result with the CPU's at tolerance `tol`.
    fn check_tol_to(&mut self, name: &str, gpu: Tensor, cpu: &Tensor, tol: f64) {
        match compare(name, &gpu, cpu, tol) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                println!("FAILED {e}");
                self.0.push(e);
            }
        }
    }

    /// Panics listing every failure.
    fn finish(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} failure(s):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

fn check(name: &str, gpu: &Tensor, cpu: &Tensor) {
    check_tol(name, gpu, cpu, TOL);
}

/// Normal samples times `std` plus `shift`, stored as bf16 on the host.
fn bf16_host(shape: &[usize], std: f32, shift: f64, seed: u64) -> Tensor {
    let x = Tensor::randn(shape, std, &mut Rng::new(seed)).expect("randn");
    ops::affine(&x, 1.0, shift)
        .and_then(|x| x.to_dtype(hr_tensor::DType::BF16))
        .expect("bf16")
}

/// Host bf16 -> device -> host is exact; f32 -> bf16 -> f32 on the device rounds like the CPU
/// (ties to even, subnormals, overflow to infinity).
fn bf16_round_trips(dev: Device) {
    use hr_tensor::DType;
    let x = bf16_host(&[3, 37], 4.0, 0.0, 1700);
    let xg = on(&x, dev);
    assert_eq!(xg.dtype(), DType::BF16);
    let back = xg.to_device(Device::Cpu).expect("download");
    assert_eq!(back.dtype(), DType::BF16);
    let bits = |t: &Tensor| -> Vec<u16> {
        let s = t.as_slice::<half::bf16>().expect("bf16 slice");
        s.iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(bits(&back), bits(&x), "bf16 host -> device -> host");
    println!("ok bf16 host -> device -> host: exact");
    let mut v = randn(&[1000], 1701).to_vec_f32().expect("values");
    v.extend([
        0.0,
        -0.0,
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        1e-40,
        3.3895314e38,
        3.4028235e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    let n = v.len();
    let x32 = Tensor::from_vec(v, &[n]).expect("tensor");
    let want = x32
        .to_dtype(DType::BF16)
        .and_then(|t| t.to_dtype(DType::F32));
    let got = on(&x32, dev)
        .to_dtype(DType::BF16)
        .and_then(|t| t.to_dtype(DType::F32));
    let (want, got) = (want.expect("cpu cast"), got.expect("gpu cast"));
    assert_eq!(got.dtype(), DType::F32);
    let (w, g) = (
        want.to_vec_f32().expect("cpu"),
        got.to_vec_f32().expect("gpu"),
    );
    let same = w.iter().zip(&g).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(
        same,
        "f32 -> bf16 -> f32 on the device differs from the CPU"
    );
    println!("ok f32 -> bf16 -> f32 on the device: equal to the CPU's rounding ({n} values)");
}

#[test]
fn bf16_storage_ops() {
    let Some(dev) = gpu() else { return };
    bf16_round_trips(dev);
    // An op without a bf16 kernel names itself.
    let x = on(&bf16_host(&[3, 6], 1.0, 0.0, 2400), dev);
    let err = ops::log_softmax(&x).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedDType {
                op: "log_softmax",
                ..
            }
        ),
        "{err}"
    );
    let err = ops::l2_normalize(&x, 1e-12).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedDType {
                op: "l2_normalize",
                ..
            }
        ),
        "{err}"
    );
    println!("ok log_softmax / l2_normalize on bf16: UnsupportedDType naming the op");
}

/// bf16 storage of the layout family (permute, concat, slice, pad_axis, embedding: bit-exact;
/// embedding_bwd: deterministic, tolerance [`BF16_TOL`]), the reduce family (sum_to:
/// tolerance; broadcast_to: bit-exact), dropout (scale bit-exact) and axpy, against the CPU's
/// bf16 results; ops still without bf16 kernels name themselves.
#[test]
fn bf16_layout_reduce_ops() {
    let Some(dev) = gpu() else { return };
    let x = on(&bf16_host(&[3, 6], 1.0, 0.0, 2550), dev);
    let w = on(&bf16_host(&[6, 4], 1.0, 0.0, 2551), dev);
    let named = |r: hr_tensor::Result<Tensor>, op: &str| match r {
        Err(Error::UnsupportedDType { op: o, .. }) if o == op => {}
        other => panic!("{op}: expected UnsupportedDType naming it, got {other:?}"),
    };
    named(ops::log_softmax_bwd(&x, &x), "log_softmax_bwd");
    named(ops::nll_loss(&x, &[0, 1, 2]), "nll_loss");
    named(ops::matmul(&x, &w), "matmul");
    println!("ok log_softmax_bwd / nll_loss / matmul on bf16: UnsupportedDType naming the op");
}
