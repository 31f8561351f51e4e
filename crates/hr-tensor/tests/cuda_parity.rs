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

use hr_tensor::{cuda, ops, AdamStep, Binary, Device, Error, Rng, Tensor, Unary};

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

const UNARY: [Unary; 8] = [
    Unary::Relu,
    Unary::Gelu,
    Unary::Hardswish,
    Unary::Sigmoid,
    Unary::Tanh,
    Unary::Exp,
    Unary::Log,
    Unary::Sqrt,
];

#[test]
fn unary_forward_and_backward() {
    let Some(dev) = gpu() else { return };
    for (si, shape) in [vec![1], vec![7], vec![3, 5], vec![4, 33, 65], vec![1 << 17]]
        .iter()
        .enumerate()
    {
        for (ki, &kind) in UNARY.iter().enumerate() {
            let seed = (si * 16 + ki) as u64;
            let x = match kind {
                Unary::Log | Unary::Sqrt => uniform(shape, 0.05, 4.0, seed),
                _ => Tensor::randn(shape, 2.5, &mut Rng::new(seed)).expect("randn"),
            };
            let dy = randn(shape, seed + 1000);
            let (xg, dyg) = (on(&x, dev), on(&dy, dev));
            let name = format!("{kind:?}");
            check(
                &name,
                &ops::unary(kind, &xg).unwrap(),
                &ops::unary(kind, &x).unwrap(),
            );
            check(
                &format!("{name}_bwd"),
                &ops::unary_bwd(kind, &xg, &dyg).unwrap(),
                &ops::unary_bwd(kind, &x, &dy).unwrap(),
            );
        }
    }
}

#[test]
fn binary_broadcasting() {
    let Some(dev) = gpu() else { return };
    let pairs: [(&[usize], &[usize]); 7] = [
        (&[3, 5], &[3, 5]),
        (&[1000, 37], &[1000, 37]),
        (&[4, 1, 7], &[1, 6, 7]),
        (&[2, 3, 4], &[4]),
        (&[5, 1], &[1, 9]),
        (&[3, 97, 64], &[3, 1, 64]),
        (&[2, 1, 3, 1, 5], &[1, 4, 3, 2, 1]),
    ];
    let kinds = [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div];
    for (i, (sa, sb)) in pairs.iter().enumerate() {
        for (j, &kind) in kinds.iter().enumerate() {
            let seed = (i * 8 + j) as u64;
            let a = randn(sa, seed);
            let b = match kind {
                Binary::Div => uniform(sb, 0.5, 2.0, seed + 99),
                _ => randn(sb, seed + 99),
            };
            let got = ops::binary(kind, &on(&a, dev), &on(&b, dev)).unwrap();
            check(
                &format!("{kind:?} {sa:?} {sb:?}"),
                &got,
                &ops::binary(kind, &a, &b).unwrap(),
            );
        }
    }
}

#[test]
fn affine_axpy_dropout() {
    let Some(dev) = gpu() else { return };
    for (i, shape) in [vec![1], vec![9, 13], vec![3, 1001]].iter().enumerate() {
        let x = randn(shape, 10 + i as u64);
        let y = randn(shape, 20 + i as u64);
        check(
            "affine",
            &ops::affine(&on(&x, dev), 0.37, -1.25).unwrap(),
            &ops::affine(&x, 0.37, -1.25).unwrap(),
        );
        let mut yc = y.clone();
        let mut yg = on(&y, dev);
        ops::axpy(&mut yc, -0.75, &x).unwrap();
        ops::axpy(&mut yg, -0.75, &on(&x, dev)).unwrap();
        check("axpy", &yg, &yc);
        for (p, seed) in [(0.1, 7u64), (0.5, 0xdead_beef_1234), (0.0, 3)] {
            let (yd, sd) = ops::dropout(&on(&x, dev), p, seed).unwrap();
            let (yc, sc) = ops::dropout(&x, p, seed).unwrap();
            assert_eq!(
                sd.to_vec_f32().unwrap(),
                sc.to_vec_f32().unwrap(),
                "dropout mask p={p} seed={seed} differs from the CPU"
            );
            check(&format!("dropout p={p}"), &yd, &yc);
        }
    }
}

#[test]
fn sum_to_and_broadcast_to() {
    let Some(dev) = gpu() else { return };
    let cases: [(&[usize], &[usize]); 7] = [
        (&[4, 5, 6], &[1, 5, 1]),
        (&[4, 5, 6], &[4, 1, 6]),
        (&[4, 5, 6], &[1, 1, 1]),
        (&[7, 3], &[7, 1]),
        (&[311, 768], &[1, 768]),
        (&[3, 1, 9], &[3, 1, 9]),
        (&[2, 3, 4, 5, 6], &[2, 1, 4, 1, 6]),
    ];
    for (i, (big, small)) in cases.iter().enumerate() {
        let x = randn(big, 100 + i as u64);
        check(
            &format!("sum_to {small:?}"),
            &ops::sum_to(&on(&x, dev), small).unwrap(),
            &ops::sum_to(&x, small).unwrap(),
        );
        let s = randn(small, 200 + i as u64);
        check(
            &format!("broadcast_to {big:?}"),
            &ops::broadcast_to(&on(&s, dev), big).unwrap(),
            &ops::broadcast_to(&s, big).unwrap(),
        );
    }
}

#[test]
fn matmul_cublas() {
    let Some(dev) = gpu() else { return };
    // (batch dims of a, batch dims of b, m, k, n)
    type Case<'a> = (&'a [usize], &'a [usize], usize, usize, usize);
    let cases: [Case; 8] = [
        (&[], &[], 1, 1, 1),
        (&[], &[], 17, 33, 9),
        (&[], &[], 64, 128, 96),
        (&[], &[], 97, 768, 65),
        (&[3], &[3], 5, 7, 11),
        (&[2, 3], &[2, 3], 13, 64, 31),
        (&[4], &[], 9, 17, 5),
        (&[], &[4], 9, 17, 5),
    ];
    let mut seed = 300;
    for (ba, bb, m, k, n) in cases {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            seed += 1;
            let mut sa = ba.to_vec();
            sa.extend(if ta { [k, m] } else { [m, k] });
            let mut sb = bb.to_vec();
            sb.extend(if tb { [n, k] } else { [k, n] });
            let a = randn(&sa, seed);
            let b = randn(&sb, seed + 1000);
            let alpha = 0.5;
            let got = ops::matmul_ex(&on(&a, dev), &on(&b, dev), ta, tb, alpha).unwrap();
            let want = ops::matmul_ex(&a, &b, ta, tb, alpha).unwrap();
            check(
                &format!(
                    "matmul {sa:?}{} x {sb:?}{}",
                    if ta { "^T" } else { "" },
                    if tb { "^T" } else { "" }
                ),
                &got,
                &want,
            );
        }
    }
}

#[test]
fn softmax_family() {
    let Some(dev) = gpu() else { return };
    for (i, &(b, r, k)) in [
        (1, 1, 1),
        (2, 3, 7),
        (2, 3, 33),
        (3, 12, 97),
        (2, 5, 300),
        (2, 4, 1024),
        (4, 2, 1031),
    ]
    .iter()
    .enumerate()
    {
        let seed = 400 + i as u64 * 10;
        let x = Tensor::randn(&[b, r, k], 3.0, &mut Rng::new(seed)).unwrap();
        let dy = randn(&[b, r, k], seed + 1);
        let (xg, dyg) = (on(&x, dev), on(&dy, dev));
        // Key-padding mask: random keep/drop, batch entry 0 keeps only its first key, and the
        // last batch entry (when b > 1) drops everything.
        let mut rng = Rng::new(seed + 2);
        let mut mv: Vec<f32> = (0..b * k)
            .map(|_| if rng.uniform() < 0.7 { 1.0 } else { 0.0 })
            .collect();
        mv[..k]
            .iter_mut()
            .enumerate()
            .for_each(|(j, v)| *v = if j == 0 { 1.0 } else { 0.0 });
        if b > 1 {
            mv[(b - 1) * k..].iter_mut().for_each(|v| *v = 0.0);
        }
        let mask = Tensor::from_vec(mv, &[b, k]).unwrap();
        let maskg = on(&mask, dev);

        let y = ops::softmax(&x, None).unwrap();
        check("softmax", &ops::softmax(&xg, None).unwrap(), &y);
        let ym = ops::softmax(&x, Some(&mask)).unwrap();
        let ymg = ops::softmax(&xg, Some(&maskg)).unwrap();
        check("softmax masked", &ymg, &ym);
        check(
            "softmax_bwd",
            &ops::softmax_bwd(&on(&ym, dev), &dyg).unwrap(),
            &ops::softmax_bwd(&ym, &dy).unwrap(),
        );
        let lp = ops::log_softmax(&x).unwrap();
        check("log_softmax", &ops::log_softmax(&xg).unwrap(), &lp);
        check(
            "log_softmax_bwd",
            &ops::log_softmax_bwd(&on(&lp, dev), &dyg).unwrap(),
            &ops::log_softmax_bwd(&lp, &dy).unwrap(),
        );
        let rows = b * r;
        let lp2 = lp.reshape(&[rows, k]).unwrap();
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(k) as u32).collect();
        let lp2g = on(&lp2, dev);
        check(
            "nll_loss",
            &ops::nll_loss(&lp2g, &targets).unwrap(),
            &ops::nll_loss(&lp2, &targets).unwrap(),
        );
        check(
            "nll_loss_bwd",
            &ops::nll_loss_bwd(&lp2g, &targets, 1.7).unwrap(),
            &ops::nll_loss_bwd(&lp2, &targets, 1.7).unwrap(),
        );
        let bad = vec![k as u32; rows];
        assert!(matches!(
            ops::nll_loss(&lp2g, &bad).unwrap_err(),
            Error::InvalidArgument { .. }
        ));
    }
}

#[test]
fn layer_norm_and_l2_normalize() {
    let Some(dev) = gpu() else { return };
    for (i, shape) in [vec![1, 1], vec![3, 5, 7], vec![97, 768], vec![2, 3, 1025]]
        .iter()
        .enumerate()
    {
        let seed = 500 + i as u64 * 10;
        let d = *shape.last().unwrap();
        let x = Tensor::randn(shape, 2.0, &mut Rng::new(seed)).unwrap();
        let x = ops::affine(&x, 1.0, 0.5).unwrap();
        let g = uniform(&[d], 0.5, 1.5, seed + 1);
        let b = randn(&[d], seed + 2);
        let dy = randn(shape, seed + 3);
        let (xg, gg, bg, dyg) = (on(&x, dev), on(&g, dev), on(&b, dev), on(&dy, dev));
        let (y, st) = ops::layer_norm(&x, &g, &b, 1e-5).unwrap();
        let (yg, stg) = ops::layer_norm(&xg, &gg, &bg, 1e-5).unwrap();
        check("layer_norm", &yg, &y);
        check("layer_norm mean", &stg.mean, &st.mean);
        check("layer_norm rstd", &stg.rstd, &st.rstd);
        let gr = ops::layer_norm_bwd(&x, &g, &st, &dy).unwrap();
        let grg = ops::layer_norm_bwd(&xg, &gg, &stg, &dyg).unwrap();
        check("layer_norm_bwd dx", &grg.dx, &gr.dx);
        check("layer_norm_bwd dgamma", &grg.dgamma, &gr.dgamma);
        check("layer_norm_bwd dbeta", &grg.dbeta, &gr.dbeta);

        // L2 normalise, with one all-zero row (the eps branch of the backward).
        let mut xv = x.to_vec_f32().unwrap();
        xv[..d].iter_mut().for_each(|v| *v = 0.0);
        let x0 = Tensor::from_vec(xv, shape).unwrap();
        let (y, n) = ops::l2_normalize(&x0, 1e-12).unwrap();
        let (yg, ng) = ops::l2_normalize(&on(&x0, dev), 1e-12).unwrap();
        check("l2_normalize", &yg, &y);
        check("l2_normalize norms", &ng, &n);
        check(
            "l2_normalize_bwd",
            &ops::l2_normalize_bwd(&yg, &ng, &dyg, 1e-12).unwrap(),
            &ops::l2_normalize_bwd(&y, &n, &dy, 1e-12).unwrap(),
        );
    }
}

#[test]
fn adam_and_adamw() {
    let Some(dev) = gpu() else { return };
    for (i, (n, wd, step)) in [(1usize, 0.0, 1u64), (1001, 0.01, 3), (1_000_003, 0.1, 1000)]
        .into_iter()
        .enumerate()
    {
        let seed = 600 + i as u64 * 10;
        let p = randn(&[n], seed);
        let g = randn(&[n], seed + 1);
        let m = ops::affine(&randn(&[n], seed + 2), 0.1, 0.0).unwrap();
        let v = uniform(&[n], 0.0, 0.01, seed + 3);
        let hp = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: wd,
            step,
        };
        let (mut pc, mut mc, mut vc) = (p.clone(), m.clone(), v.clone());
        ops::adam_step(&mut pc, &g, &mut mc, &mut vc, &hp).unwrap();
        let (mut pg, mut mg, mut vg) = (on(&p, dev), on(&m, dev), on(&v, dev));
        ops::adam_step(&mut pg, &on(&g, dev), &mut mg, &mut vg, &hp).unwrap();
        check("adam param", &pg, &pc);
        check("adam m", &mg, &mc);
        check("adam v", &vg, &vc);
        // The update itself (p_new - p) must match too, not just p.
        let dp_g = ops::sub(&pg, &on(&p, dev)).unwrap();
        let dp_c = ops::sub(&pc, &p).unwrap();
        check_tol("adam update", &dp_g, &dp_c, 1e-4);
    }
}

#[test]
fn layout_ops() {
    let Some(dev) = gpu() else { return };
    let x = randn(&[2, 3, 4, 5], 700);
    let xg = on(&x, dev);
    for perm in [[3, 1, 0, 2], [0, 2, 1, 3], [0, 1, 2, 3], [3, 2, 1, 0]] {
        check(
            &format!("permute {perm:?}"),
            &ops::permute(&xg, &perm).unwrap(),
            &ops::permute(&x, &perm).unwrap(),
        );
    }
    let big = randn(&[33, 65, 17], 701);
    check(
        "permute big",
        &ops::permute(&on(&big, dev), &[2, 0, 1]).unwrap(),
        &ops::permute(&big, &[2, 0, 1]).unwrap(),
    );
    let parts = [
        randn(&[2, 3, 4], 702),
        randn(&[2, 5, 4], 703),
        randn(&[2, 1, 4], 704),
    ];
    let pg: Vec<Tensor> = parts.iter().map(|t| on(t, dev)).collect();
    check(
        "concat axis 1",
        &ops::concat(&pg.iter().collect::<Vec<_>>(), 1).unwrap(),
        &ops::concat(&parts.iter().collect::<Vec<_>>(), 1).unwrap(),
    );
    let (a, b) = (randn(&[3, 7], 705), randn(&[2, 7], 706));
    check(
        "concat axis 0",
        &ops::concat(&[&on(&a, dev), &on(&b, dev)], 0).unwrap(),
        &ops::concat(&[&a, &b], 0).unwrap(),
    );
    for (axis, start, len) in [(1, 1, 2), (3, 0, 5), (0, 1, 1), (2, 3, 1)] {
        check(
            &format!("slice axis {axis} {start}+{len}"),
            &ops::slice(&xg, axis, start, len).unwrap(),
            &ops::slice(&x, axis, start, len).unwrap(),
        );
        let total = x.shape()[axis] + start + 2;
        check(
            &format!("pad_axis axis {axis} at {start} to {total}"),
            &ops::pad_axis(&xg, axis, start, total).unwrap(),
            &ops::pad_axis(&x, axis, start, total).unwrap(),
        );
    }
    let table = randn(&[50, 33], 707);
    let ids: Vec<u32> = vec![0, 49, 3, 3, 17, 3, 0, 25, 49, 11, 3];
    check(
        "embedding",
        &ops::embedding(&on(&table, dev), &ids).unwrap(),
        &ops::embedding(&table, &ids).unwrap(),
    );
    let dy = randn(&[ids.len(), 33], 708);
    check(
        "embedding_bwd",
        &ops::embedding_bwd(&on(&dy, dev), &ids, 50).unwrap(),
        &ops::embedding_bwd(&dy, &ids, 50).unwrap(),
    );
    assert!(matches!(
        ops::embedding(&on(&table, dev), &[50]).unwrap_err(),
        Error::InvalidArgument { .. }
    ));
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

#[test]
fn batch_norm_train_eval_bwd() {
    let Some(dev) = gpu() else { return };
    let mut report = Report::default();
    let shapes: [&[usize]; 7] = [
        &[3, 5, 7, 13],
        &[2, 3, 1, 1],
        &[1, 4, 13],
        &[37, 5],
        &[1, 3, 7, 1],
        // 10000 positions per plane: two spatial chunks per batch entry.
        &[2, 3, 100, 100],
        &[4, 16, 64, 100],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let seed = 900 + i as u64 * 10;
        let c = shape[1];
        let momentum = if i % 2 == 0 { 0.1 } else { 0.01 };
        // Mean 3, std 0.5: the variance must not cancel.
        let x = Tensor::randn(shape, 0.5, &mut Rng::new(seed)).unwrap();
        let x = ops::affine(&x, 1.0, 3.0).unwrap();
        let g = uniform(&[c], 0.5, 1.5, seed + 1);
        let b = randn(&[c], seed + 2);
        let rm0 = randn(&[c], seed + 3);
        let rv0 = uniform(&[c], 0.5, 2.0, seed + 4);
        let dy = randn(shape, seed + 5);
        let (xg, gg, bg, dyg) = (on(&x, dev), on(&g, dev), on(&b, dev), on(&dy, dev));
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let (mut rmg, mut rvg) = (on(&rm0, dev), on(&rv0, dev));
        let (y, st) = ops::batch_norm_train(&x, &g, &b, &mut rm, &mut rv, momentum, 1e-3).unwrap();
        let name = |what: &str| format!("batch_norm {what} {shape:?} momentum {momentum}");
        let (yg, stg) =
            match ops::batch_norm_train(&xg, &gg, &bg, &mut rmg, &mut rvg, momentum, 1e-3) {
                Ok(r) => r,
                Err(e) => {
                    report.check(&name("train"), Err(e), &y);
                    continue;
                }
            };
        report.check(&name("train y"), Ok(yg), &y);
        report.check(&name("train mean"), Ok(stg.mean.clone()), &st.mean);
        report.check(&name("train rstd"), Ok(stg.rstd.clone()), &st.rstd);
        report.check(&name("running_mean"), Ok(rmg.clone()), &rm);
        report.check(&name("running_var"), Ok(rvg.clone()), &rv);
        report.check(
            &name("eval y"),
            ops::batch_norm_eval(&xg, &gg, &bg, &rmg, &rvg, 1e-3),
            &ops::batch_norm_eval(&x, &g, &b, &rm, &rv, 1e-3).unwrap(),
        );
        let gr = ops::batch_norm_bwd(&x, &g, &st, &dy).unwrap();
        match ops::batch_norm_bwd(&xg, &gg, &stg, &dyg) {
            Ok(grg) => {
                report.check(&name("bwd dx"), Ok(grg.dx), &gr.dx);
                report.check(&name("bwd dgamma"), Ok(grg.dgamma), &gr.dgamma);
                report.check(&name("bwd dbeta"), Ok(grg.dbeta), &gr.dbeta);
            }
            Err(e) => report.check(&name("bwd"), Err(e), &gr.dx),
        }
    }
    // A single value per channel cannot be normalised in train mode: a typed error.
    let x = on(&randn(&[1, 3, 1, 1], 990), dev);
    let p = on(&randn(&[3], 991), dev);
    let (mut rm, mut rv) = (p.clone(), p.clone());
    let err = ops::batch_norm_train(&x, &p, &p, &mut rm, &mut rv, 0.1, 1e-3).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    println!("ok batch_norm_train on one value per channel: {err}");
    report.finish("batch_norm_train_eval_bwd");
}

#[test]
fn frame_signal_audio() {
    let Some(dev) = gpu() else { return };
    let mut report = Report::default();
    // (batch, samples, n_fft, hop): odd lengths, the minimum length for the padding, odd n_fft,
    // hop > n_fft, and the paper geometry (32 kHz, 1024 / 320) at 2 x 10 s.
    let cases: [(usize, usize, usize, usize); 6] = [
        (1, 7, 4, 1),
        (3, 1001, 64, 17),
        (2, 514, 1024, 320),
        (2, 99, 9, 4),
        (1, 200, 16, 40),
        (2, 320_000, 1024, 320),
    ];
    for (i, &(b, n, n_fft, hop)) in cases.iter().enumerate() {
        let x = randn(&[b, n], 1200 + i as u64);
        let w = uniform(&[n_fft], 0.0, 1.0, 1300 + i as u64);
        let cpu = ops::frame_signal(&x, &w, hop, 0.97).unwrap();
        let name = format!("frame_signal b {b} n {n} n_fft {n_fft} hop {hop}");
        // Same f32 operations in the same order (no contraction): expected to be exact.
        report.check(
            &name,
            ops::frame_signal(&on(&x, dev), &on(&w, dev), hop, 0.97),
            &cpu,
        );
    }
    let short = on(&randn(&[2, 5], 1400), dev);
    let w = on(&uniform(&[8], 0.0, 1.0, 1401), dev);
    let err = ops::frame_signal(&short, &w, 2, 0.97).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    println!("ok frame_signal on a too-short waveform: {err}");
    report.finish("frame_signal_audio");
}
