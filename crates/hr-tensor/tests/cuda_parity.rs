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

/// One convolution parity case: input NCHW, weight OIHW, stride, padding, dilation, groups.
struct ConvCase {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
}

const fn conv_case(
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> ConvCase {
    ConvCase {
        name,
        x,
        w,
        stride,
        padding,
        dilation,
        groups,
    }
}

/// Depthwise 3x3 / 5x5 (unrolled kernels), the stem, pointwise (cuBLAS) and general
/// geometries (run-time-size kernels), with odd sizes, H or W = 1, batch 1 and 3.
const CONV_CASES: &[ConvCase] = &[
    conv_case(
        "dw3 s1",
        [3, 8, 7, 13],
        [8, 1, 3, 3],
        (1, 1),
        (1, 1),
        (1, 1),
        8,
    ),
    conv_case(
        "dw3 s2",
        [1, 8, 13, 7],
        [8, 1, 3, 3],
        (2, 2),
        (1, 1),
        (1, 1),
        8,
    ),
    conv_case(
        "dw3 s2 odd",
        [3, 5, 13, 13],
        [5, 1, 3, 3],
        (2, 2),
        (1, 1),
        (1, 1),
        5,
    ),
    conv_case(
        "dw3 h=1",
        [3, 5, 1, 13],
        [5, 1, 3, 3],
        (1, 1),
        (1, 1),
        (1, 1),
        5,
    ),
    conv_case(
        "dw3 w=1 s2",
        [1, 5, 13, 1],
        [5, 1, 3, 3],
        (2, 2),
        (1, 1),
        (1, 1),
        5,
    ),
    conv_case(
        "dw3 dil2 s2",
        [1, 4, 13, 13],
        [4, 1, 3, 3],
        (2, 2),
        (2, 2),
        (2, 2),
        4,
    ),
    conv_case(
        "dw3 no pad s(2,1)",
        [3, 4, 7, 13],
        [4, 1, 3, 3],
        (2, 1),
        (0, 0),
        (1, 1),
        4,
    ),
    conv_case(
        "dw5 s1",
        [3, 6, 13, 13],
        [6, 1, 5, 5],
        (1, 1),
        (2, 2),
        (1, 1),
        6,
    ),
    conv_case(
        "dw5 s2",
        [3, 6, 7, 13],
        [6, 1, 5, 5],
        (2, 2),
        (2, 2),
        (1, 1),
        6,
    ),
    conv_case(
        "dw5 s2 h=1",
        [1, 6, 1, 7],
        [6, 1, 5, 5],
        (2, 2),
        (2, 2),
        (1, 1),
        6,
    ),
    // h_out * w_out > 8192: one batch entry per weight-gradient chunk (3 chunks).
    conv_case(
        "dw3 big",
        [3, 4, 64, 130],
        [4, 1, 3, 3],
        (1, 1),
        (1, 1),
        (1, 1),
        4,
    ),
    conv_case(
        "stem",
        [3, 1, 13, 29],
        [16, 1, 3, 3],
        (2, 2),
        (1, 1),
        (1, 1),
        1,
    ),
    conv_case(
        "stem mel",
        [2, 1, 128, 100],
        [8, 1, 3, 3],
        (2, 2),
        (1, 1),
        (1, 1),
        1,
    ),
    conv_case(
        "pw",
        [3, 24, 7, 13],
        [40, 24, 1, 1],
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    ),
    // Many channels, a small image: the weight gradient transposes both activations to
    // channel-major and runs one GEMM over the batch (C_in * C_out > HW * (C_in + C_out)).
    conv_case(
        "pw channel-major dW",
        [3, 48, 2, 3],
        [40, 48, 1, 1],
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    ),
    conv_case(
        "pw b1 h=1",
        [1, 16, 1, 13],
        [8, 16, 1, 1],
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    ),
    conv_case(
        "pw 1x1 plane",
        [3, 7, 1, 1],
        [5, 7, 1, 1],
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    ),
    conv_case(
        "grouped 3x3",
        [3, 8, 9, 11],
        [12, 4, 3, 3],
        (2, 1),
        (1, 0),
        (1, 2),
        2,
    ),
    conv_case(
        "grouped 1x1",
        [1, 8, 7, 7],
        [6, 4, 1, 1],
        (1, 1),
        (0, 0),
        (1, 1),
        2,
    ),
    conv_case(
        "dense 3x3",
        [1, 3, 9, 10],
        [5, 3, 3, 3],
        (1, 1),
        (1, 1),
        (1, 1),
        1,
    ),
    conv_case(
        "dense 5x5 dil",
        [3, 2, 13, 7],
        [3, 2, 5, 5],
        (1, 1),
        (4, 2),
        (2, 1),
        1,
    ),
    conv_case(
        "dw 3x5",
        [3, 4, 9, 11],
        [4, 1, 3, 5],
        (1, 2),
        (1, 2),
        (1, 1),
        4,
    ),
    conv_case(
        "dw 1x1 s2",
        [1, 4, 7, 13],
        [4, 1, 1, 1],
        (2, 2),
        (0, 0),
        (1, 1),
        4,
    ),
    conv_case(
        "pw stride 2",
        [3, 6, 7, 13],
        [5, 6, 1, 1],
        (2, 2),
        (0, 0),
        (1, 1),
        1,
    ),
];

#[test]
fn conv2d_forward_and_backward() {
    let Some(dev) = gpu() else { return };
    let mut report = Report::default();
    for (i, c) in CONV_CASES.iter().enumerate() {
        let seed = 800 + i as u64 * 10;
        let x = randn(&c.x, seed);
        let w = randn(&c.w, seed + 1);
        let spec = ops::conv2d_spec(&c.x, &c.w, c.stride, c.padding, c.dilation, c.groups)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let (xg, wg) = (on(&x, dev), on(&w, dev));
        let what = |op: &str| {
            format!(
                "{op} {} x {:?} w {:?} s {:?} p {:?} d {:?} g {}",
                c.name, c.x, c.w, c.stride, c.padding, c.dilation, c.groups
            )
        };
        let y = ops::conv2d(&x, &w, c.stride, c.padding, c.dilation, c.groups).unwrap();
        report.check(
            &what("conv2d"),
            ops::conv2d(&xg, &wg, c.stride, c.padding, c.dilation, c.groups),
            &y,
        );
        let dy = randn(y.shape(), seed + 2);
        let dyg = on(&dy, dev);
        report.check(
            &what("conv2d_bwd_data"),
            ops::conv2d_bwd_data(&dyg, &wg, &spec),
            &ops::conv2d_bwd_data(&dy, &w, &spec).unwrap(),
        );
        report.check(
            &what("conv2d_bwd_weight"),
            ops::conv2d_bwd_weight(&xg, &dyg, &spec),
            &ops::conv2d_bwd_weight(&x, &dy, &spec).unwrap(),
        );
    }
    // Typed errors, never a panic: a mixed-device call and a stale spec.
    let x = randn(&[1, 2, 5, 5], 890);
    let w = on(&randn(&[3, 2, 3, 3], 891), dev);
    let err = ops::conv2d(&x, &w, (1, 1), (1, 1), (1, 1), 1).unwrap_err();
    println!("ok conv2d cpu input, cuda weight: {err}");
    let spec = ops::conv2d_spec(&[1, 2, 5, 5], &[3, 2, 3, 3], (1, 1), (1, 1), (1, 1), 1).unwrap();
    let stale = hr_tensor::Conv2dSpec { h_out: 4, ..spec };
    let dy = on(&randn(&[1, 3, 4, 5], 892), dev);
    let err = ops::conv2d_bwd_data(&dy, &w, &stale).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    println!("ok conv2d_bwd_data with a stale spec: {err}");
    report.finish("conv2d_forward_and_backward");
}

/// Element by element within one bf16 rounding of the CPU's bf16 result: `|g - c| <= 2^-7 |c|`
/// (one bf16 ulp at the bottom of a binade), plus `1e-3` of the largest `|c|` for results
/// that cancel (the GPU and CPU accumulate f32 sums in different orders, so the rounding of
/// an element can flip). Returns the report line or the first failing element.
fn within_one_rounding(name: &str, gpu: &Tensor, cpu: &Tensor) -> Result<String, String> {
    if gpu.dtype() != hr_tensor::DType::BF16 || cpu.dtype() != hr_tensor::DType::BF16 {
        return Err(format!(
            "{name}: dtypes {:?} / {:?}, expected bf16",
            gpu.dtype(),
            cpu.dtype()
        ));
    }
    if gpu.shape() != cpu.shape() {
        return Err(format!(
            "{name}: shape {:?} vs {:?}",
            gpu.shape(),
            cpu.shape()
        ));
    }
    let g = gpu
        .to_device(Device::Cpu)
        .and_then(|t| t.to_vec_f64())
        .map_err(|e| e.to_string())?;
    let c = cpu.to_vec_f64().map_err(|e| e.to_string())?;
    let scale = c.iter().fold(0f64, |m, v| m.max(v.abs()));
    let (mut flips, mut worst) = (0usize, 0f64);
    for (i, (a, b)) in g.iter().zip(&c).enumerate() {
        let d = (a - b).abs();
        if d.is_nan() || d > b.abs() / 128.0 + 1e-3 * scale {
            return Err(format!(
                "{name}: element {i}: gpu {a} cpu {b} (more than one bf16 rounding)"
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

impl Report {
    /// A bf16 GPU result (or the op's error) within one bf16 rounding of the CPU's.
    fn check_rounding(&mut self, name: &str, gpu: hr_tensor::Result<Tensor>, cpu: &Tensor) {
        let outcome = gpu
            .map_err(|e| format!("{name}: the CUDA op failed: {e}"))
            .and_then(|g| within_one_rounding(name, &g, cpu));
        match outcome {
            Ok(line) => println!("{line}"),
            Err(e) => {
                println!("FAILED {e}");
                self.0.push(e);
            }
        }
    }
}

/// bf16 activations with f32 weights (the audio CNN under `run.precision = "bf16"`): every
/// convolution geometry of [`CONV_CASES`] (direct `_bf16` kernels, bf16 cuBLAS GEMMs with a bf16
/// result for the pointwise ones) and the batch norms (train, fused activation, eval,
/// backward) against the CPU on the same bf16 inputs: bf16 outputs within one bf16 rounding,
/// f32 outputs (weight gradients, statistics, dgamma, dbeta) to 1e-4.
#[test]
fn bf16_activation_convs_and_batch_norms() {
    let Some(dev) = gpu() else { return };
    let mut report = Report::default();
    for (i, c) in CONV_CASES.iter().enumerate() {
        let seed = 2600 + i as u64 * 10;
        let x = bf16_host(&c.x, 1.0, 0.0, seed);
        let w = randn(&c.w, seed + 1);
        let spec = ops::conv2d_spec(&c.x, &c.w, c.stride, c.padding, c.dilation, c.groups)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let dy = bf16_host(
            &[spec.n, spec.c_out, spec.h_out, spec.w_out],
            1.0,
            0.0,
            seed + 2,
        );
        let (xg, wg, dyg) = (on(&x, dev), on(&w, dev), on(&dy, dev));
        let what = |op: &str| format!("bf16 activations {op} {} x {:?} w {:?}", c.name, c.x, c.w);
        report.check_rounding(
            &what("conv2d"),
            ops::conv2d(&xg, &wg, c.stride, c.padding, c.dilation, c.groups),
            &ops::conv2d(&x, &w, c.stride, c.padding, c.dilation, c.groups).unwrap(),
        );
        report.check_rounding(
            &what("conv2d_bwd_data"),
            ops::conv2d_bwd_data(&dyg, &wg, &spec),
            &ops::conv2d_bwd_data(&dy, &w, &spec).unwrap(),
        );
        let dw = ops::conv2d_bwd_weight(&x, &dy, &spec).unwrap();
        match ops::conv2d_bwd_weight(&xg, &dyg, &spec) {
            Ok(dwg) => {
                assert_eq!(dwg.dtype(), hr_tensor::DType::F32, "{}", what("dw dtype"));
                report.check_tol_to(&what("conv2d_bwd_weight (f32)"), dwg, &dw, 1e-4);
            }
            Err(e) => report.check(&what("conv2d_bwd_weight"), Err(e), &dw),
        }
    }
    for (i, shape) in [
        &[3usize, 5, 7, 13][..],
        &[2, 3, 1, 1],
        &[4, 16, 64, 100],
        &[2, 3, 100, 100],
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 2900 + i as u64 * 10;
        let ch = shape[1];
        let x = bf16_host(shape, 0.5, 3.0, seed);
        let dy = bf16_host(shape, 1.0, 0.0, seed + 1);
        let (g, b) = (uniform(&[ch], 0.5, 1.5, seed + 2), randn(&[ch], seed + 3));
        let (rm0, rv0) = (randn(&[ch], seed + 4), uniform(&[ch], 0.5, 2.0, seed + 5));
        let (xg, dyg, gg, bg) = (on(&x, dev), on(&dy, dev), on(&g, dev), on(&b, dev));
        for act in [None, Some(Unary::Relu), Some(Unary::Hardswish)] {
            let name = |w: &str| format!("bf16 activations batch_norm {act:?} {w} {shape:?}");
            let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
            let (mut rmg, mut rvg) = (on(&rm0, dev), on(&rv0, dev));
            let train =
                |x: &Tensor, g: &Tensor, b: &Tensor, rm: &mut Tensor, rv: &mut Tensor| match act {
                    Some(a) => ops::batch_norm_train_act(x, g, b, rm, rv, 0.1, 1e-3, a),
                    None => ops::batch_norm_train(x, g, b, rm, rv, 0.1, 1e-3),
                };
            let bwd =
                |x: &Tensor, g: &Tensor, b: &Tensor, st: &hr_tensor::NormStats, dy: &Tensor| {
                    match act {
                        Some(a) => ops::batch_norm_act_bwd(x, g, b, st, dy, a),
                        None => ops::batch_norm_bwd(x, g, st, dy),
                    }
                };
            let (y, st) = train(&x, &g, &b, &mut rm, &mut rv).unwrap();
            let gr = bwd(&x, &g, &b, &st, &dy).unwrap();
            let got = train(&xg, &gg, &bg, &mut rmg, &mut rvg)
                .and_then(|(yg, sg)| Ok((yg, bwd(&xg, &gg, &bg, &sg, &dyg)?, sg)));
            match got {
                Ok((yg, grg, sg)) => {
                    report.check_rounding(&name("train y"), Ok(yg), &y);
                    report.check(&name("train mean"), Ok(sg.mean), &st.mean);
                    report.check(&name("running_var"), Ok(rvg.clone()), &rv);
                    report.check_rounding(&name("bwd dx"), Ok(grg.dx), &gr.dx);
                    report.check_tol_to(&name("bwd dgamma"), grg.dgamma, &gr.dgamma, 1e-4);
                    report.check_tol_to(&name("bwd dbeta"), grg.dbeta, &gr.dbeta, 1e-4);
                }
                Err(e) => report.check(&name("train"), Err(e), &y),
            }
            if act.is_none() {
                report.check_rounding(
                    &name("eval y"),
                    ops::batch_norm_eval(&xg, &gg, &bg, &rmg, &rvg, 1e-3),
                    &ops::batch_norm_eval(&x, &g, &b, &rm, &rv, 1e-3).unwrap(),
                );
            }
        }
    }
    report.finish("bf16_activation_convs_and_batch_norms");
}

/// The shared-memory tile kernel of the stride-2 depthwise forwards gives the plain kernel's
/// bits (f32 and bf16 activations; odd sizes, several tiles per plane, 3x3 and 5x5). The switch
/// is global, but both settings give the same values, so tests running beside this one are
/// unaffected.
#[test]
fn stride2_tile_kernel_matches_the_plain_kernel() {
    let Some(dev) = gpu() else { return };
    for (i, (x, k)) in [([3, 8, 37, 70], 3), ([2, 6, 70, 33], 5), ([1, 4, 13, 7], 3)]
        .into_iter()
        .enumerate()
    {
        let w = on(&randn(&[x[1], 1, k, k], 3300 + i as u64), dev);
        for bf16 in [false, true] {
            let xs = match bf16 {
                true => bf16_host(&x, 1.0, 0.0, 3310 + i as u64),
                false => randn(&x, 3310 + i as u64),
            };
            let xg = on(&xs, dev);
            let p = (k - 1) / 2;
            let conv = || ops::conv2d(&xg, &w, (2, 2), (p, p), (1, 1), x[1]).unwrap();
            cuda::set_stride2_tiles(false);
            let plain = conv().to_device(Device::Cpu).unwrap();
            cuda::set_stride2_tiles(true);
            let tiled = conv().to_device(Device::Cpu).unwrap();
            assert_eq!(
                tiled.to_vec_f64().unwrap(),
                plain.to_vec_f64().unwrap(),
                "stride-2 depthwise {x:?} k {k} bf16 {bf16}: tiled != plain"
            );
            println!("ok stride-2 depthwise {x:?} k {k} bf16 {bf16}: tile kernel bit-identical");
        }
    }
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
