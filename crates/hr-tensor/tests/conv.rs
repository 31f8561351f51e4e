//! conv2d: forward against a direct-loop f64 reference, gradient checks of dx and dw, f32/f64
//! agreement and input validation, on odd shapes covering the general (im2col), pointwise and
//! depthwise kernels.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): forward, data and weight
//! gradients of every geometry of [`CONV_CASES`] on the device against the CPU backend, with f32
//! and with bf16 activations (the batch norms of the bf16 CNN included), and the stride-2
//! depthwise tile kernel against the plain one ([`hr_tensor::testing::parity`]).

#[path = "conv/cases.rs"]
mod cases;

use cases::{case, Case, BIG_CASES, CASES, CONV_CASES};
use hr_tensor::ops::{self, conv2d, conv2d_bwd, conv2d_bwd_data, conv2d_bwd_weight, conv2d_spec};
use hr_tensor::testing::parity::{bf16_host, on, randn, uniform, Report};
use hr_tensor::testing::{assert_close, check_gradients, randn64};
use hr_tensor::{cuda, test_device, Conv2dSpec, DType, Device, Error, Rng, Tensor, Unary};

impl Case {
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in / self.groups, self.k.0, self.k.1]
    }
    fn spec(&self) -> Conv2dSpec {
        conv2d_spec(
            &self.x_shape(),
            &self.w_shape(),
            self.stride,
            self.pad,
            self.dil,
            self.groups,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
    fn inputs(&self, seed: u64) -> (Tensor, Tensor) {
        let mut rng = Rng::new(seed);
        (
            randn64(&self.x_shape(), &mut rng),
            randn64(&self.w_shape(), &mut rng),
        )
    }
    fn fwd(&self, x: &Tensor, w: &Tensor) -> hr_tensor::Result<Tensor> {
        conv2d(x, w, self.stride, self.pad, self.dil, self.groups)
    }
}

/// Direct seven-loop convolution in f64.
fn reference(c: &Case, x: &[f64], w: &[f64]) -> (Vec<f64>, [usize; 4]) {
    let ho = (c.h + 2 * c.pad.0 - c.dil.0 * (c.k.0 - 1) - 1) / c.stride.0 + 1;
    let wo = (c.w + 2 * c.pad.1 - c.dil.1 * (c.k.1 - 1) - 1) / c.stride.1 + 1;
    let (cig, cog) = (c.c_in / c.groups, c.c_out / c.groups);
    let mut y = vec![0.0; c.n * c.c_out * ho * wo];
    for n in 0..c.n {
        for co in 0..c.c_out {
            let g = co / cog;
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut acc = 0.0;
                    for ci in 0..cig {
                        let cx = g * cig + ci;
                        for i in 0..c.k.0 {
                            for j in 0..c.k.1 {
                                let ih =
                                    (oh * c.stride.0 + i * c.dil.0) as isize - c.pad.0 as isize;
                                let iw =
                                    (ow * c.stride.1 + j * c.dil.1) as isize - c.pad.1 as isize;
                                if ih < 0 || iw < 0 || ih >= c.h as isize || iw >= c.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((n * c.c_in + cx) * c.h + ih as usize) * c.w + iw as usize];
                                let wv = w[((co * cig + ci) * c.k.0 + i) * c.k.1 + j];
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((n * c.c_out + co) * ho + oh) * wo + ow] = acc;
                }
            }
        }
    }
    (y, [c.n, c.c_out, ho, wo])
}

fn check_forward(c: &Case, seed: u64) {
    let (x, w) = c.inputs(seed);
    let y = c.fwd(&x, &w).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    let (r, shape) = reference(c, &x.to_vec_f64().unwrap(), &w.to_vec_f64().unwrap());
    assert_eq!(y.shape(), shape, "{}: output shape", c.name);
    let spec = c.spec();
    assert_eq!(
        [spec.n, spec.c_out, spec.h_out, spec.w_out],
        shape,
        "{}: spec",
        c.name
    );
    let r = Tensor::from_vec(r, &shape).unwrap();
    assert_close(&format!("{} forward f64", c.name), &y, &r, 1e-12);
}

fn check_grads(c: &Case, seed: u64) {
    let (x, w) = c.inputs(seed);
    let spec = c.spec();
    check_gradients(
        c.name,
        &[x, w],
        |t| c.fwd(&t[0], &t[1]),
        |t, dy| {
            let (dx, dw) = conv2d_bwd(&t[0], &t[1], dy, &spec)?;
            // The separate front ends agree with the combined one.
            let dx2 = conv2d_bwd_data(dy, &t[1], &spec)?;
            let dw2 = conv2d_bwd_weight(&t[0], dy, &spec)?;
            assert_eq!(dx.to_vec_f64()?, dx2.to_vec_f64()?, "{}: bwd_data", c.name);
            assert_eq!(
                dw.to_vec_f64()?,
                dw2.to_vec_f64()?,
                "{}: bwd_weight",
                c.name
            );
            Ok(vec![Some(dx), Some(dw)])
        },
    );
}

fn check_f32(c: &Case, seed: u64) {
    let (x, w) = c.inputs(seed);
    let spec = c.spec();
    let (x32, w32) = (
        x.to_dtype(DType::F32).unwrap(),
        w.to_dtype(DType::F32).unwrap(),
    );
    let y64 = c.fwd(&x, &w).unwrap();
    let y32 = c.fwd(&x32, &w32).unwrap();
    assert_eq!(y32.dtype(), DType::F32);
    assert_close(&format!("{} forward f32", c.name), &y32, &y64, 1e-5);
    let mut rng = Rng::new(seed ^ 0xd1);
    let dy = randn64(y64.shape(), &mut rng);
    let dy32 = dy.to_dtype(DType::F32).unwrap();
    let (dx64, dw64) = conv2d_bwd(&x, &w, &dy, &spec).unwrap();
    let (dx32, dw32) = conv2d_bwd(&x32, &w32, &dy32, &spec).unwrap();
    assert_close(&format!("{} dx f32", c.name), &dx32, &dx64, 1e-5);
    assert_close(&format!("{} dw f32", c.name), &dw32, &dw64, 1e-5);
}

#[test]
fn forward_matches_reference() {
    for (i, c) in CASES.iter().enumerate() {
        check_forward(c, 100 + i as u64);
    }
}

#[test]
fn gradients_dx_dw() {
    for (i, c) in CASES.iter().enumerate() {
        check_grads(c, 200 + i as u64);
    }
}

#[test]
fn f32_agrees_with_f64() {
    for (i, c) in CASES.iter().chain(BIG_CASES).enumerate() {
        check_f32(c, 300 + i as u64);
    }
}

#[test]
fn big_shapes_forward_and_gradients() {
    for (i, c) in BIG_CASES.iter().enumerate() {
        check_forward(c, 400 + i as u64);
        check_grads(c, 500 + i as u64);
    }
}

#[test]
fn zero_batch_gives_empty_output_and_zero_weight_grad() {
    let c = case("empty", 0, 4, (5, 5), 4, (3, 3), (1, 1), (1, 1), (1, 1), 4);
    for c in [
        c,
        Case {
            groups: 1,
            name: "empty_general",
            ..c
        },
    ] {
        let (x, w) = c.inputs(1);
        let y = c.fwd(&x, &w).unwrap();
        assert_eq!(y.shape(), [0, 4, 5, 5]);
        let (dx, dw) = conv2d_bwd(&x, &w, &y, &c.spec()).unwrap();
        assert_eq!(dx.shape(), [0, 4, 5, 5]);
        assert_eq!(dw.shape(), c.w_shape());
        assert!(dw.to_vec_f64().unwrap().iter().all(|&v| v == 0.0));
    }
}

/// Asserts that `r` is an error whose message names `op` and contains every string of `has`.
fn expect_err<T: std::fmt::Debug>(r: hr_tensor::Result<T>, op: &str, has: &[&str]) {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    assert!(msg.starts_with(op), "error {msg:?} does not name {op}");
    for h in has {
        assert!(msg.contains(h), "error {msg:?} lacks {h:?}");
    }
}

#[test]
fn bad_inputs_are_errors_naming_op_and_shapes() {
    let mut rng = Rng::new(9);
    let x = randn64(&[2, 3, 8, 8], &mut rng);
    let xs = "[2, 3, 8, 8]";
    // Wrong channel count; groups not dividing c_in or c_out; zero groups, stride or dilation;
    // a kernel larger than the padded input (plain and through dilation). Each with: weight
    // shape, stride, padding, dilation, groups, what the error names besides x's shape.
    #[rustfmt::skip]
    let bad: [(_, &[&str]); 8] = [
        (([4, 2, 3, 3], (1, 1), (0, 0), (1, 1), 1), &["[4, 2, 3, 3]"]),
        (([6, 1, 3, 3], (1, 1), (0, 0), (1, 1), 2), &["[6, 1, 3, 3]", "groups"]),
        (([4, 1, 3, 3], (1, 1), (0, 0), (1, 1), 3), &["[4, 1, 3, 3]", "groups"]),
        (([4, 3, 3, 3], (1, 1), (0, 0), (1, 1), 0), &["[4, 3, 3, 3]"]),
        (([4, 3, 3, 3], (0, 1), (0, 0), (1, 1), 1), &["stride"]),
        (([4, 3, 3, 3], (1, 1), (0, 0), (1, 0), 1), &["dilation"]),
        (([4, 3, 11, 3], (1, 1), (1, 1), (1, 1), 1), &["[4, 3, 11, 3]", "larger"]),
        (([4, 3, 3, 3], (1, 1), (0, 0), (1, 4), 1), &["[4, 3, 3, 3]", "larger"]),
    ];
    for ((ws, stride, pad, dil, groups), has) in bad {
        let w = randn64(&ws, &mut rng);
        let has = [&[xs], has].concat();
        expect_err(conv2d(&x, &w, stride, pad, dil, groups), "conv2d", &has);
    }
    let w = randn64(&[4, 3, 3, 3], &mut rng);
    assert!(
        conv2d(&x, &w, (1, 1), (0, 0), (1, 3), 1).is_ok(),
        "span 7 fits 8"
    );
    // Wrong ranks.
    let x3 = randn64(&[3, 8, 8], &mut rng);
    expect_err(
        conv2d(&x3, &w, (1, 1), (0, 0), (1, 1), 1),
        "conv2d",
        &["[3, 8, 8]", "[4, 3, 3, 3]"],
    );
    // Dtype mismatch.
    let w32 = w.to_dtype(DType::F32).unwrap();
    expect_err(
        conv2d(&x, &w32, (1, 1), (0, 0), (1, 1), 1),
        "conv2d",
        &[xs, "[4, 3, 3, 3]", "F32", "F64"],
    );
    // Backward: dy of the wrong shape, inconsistent spec, dtype mismatch.
    let spec = conv2d_spec(x.shape(), w.shape(), (1, 1), (1, 1), (1, 1), 1).unwrap();
    let dy = randn64(&[2, 4, 8, 7], &mut rng);
    expect_err(
        conv2d_bwd(&x, &w, &dy, &spec),
        "conv2d_bwd",
        &["[2, 4, 8, 7]", "[2, 4, 8, 8]"],
    );
    expect_err(
        conv2d_bwd_data(&dy, &w, &spec),
        "conv2d_bwd_data",
        &["[2, 4, 8, 7]"],
    );
    expect_err(
        conv2d_bwd_weight(&x, &dy, &spec),
        "conv2d_bwd_weight",
        &["[2, 4, 8, 7]"],
    );
    let bad = Conv2dSpec { h_out: 9, ..spec };
    let dy = randn64(&[2, 4, 9, 8], &mut rng);
    expect_err(
        conv2d_bwd(&x, &w, &dy, &bad),
        "conv2d_bwd",
        &["inconsistent"],
    );
    let bad = Conv2dSpec { groups: 0, ..spec };
    assert!(conv2d_bwd_data(&dy, &w, &bad).is_err());
    let dy = randn64(&[2, 4, 8, 8], &mut rng);
    let dy32 = dy.to_dtype(DType::F32).unwrap();
    assert!(conv2d_bwd(&x, &w, &dy32, &spec).is_err());
    assert!(conv2d_bwd_weight(&x, &dy32, &spec).is_err());
}

#[test]
fn output_size_formula() {
    // (h + 2p - d(k-1) - 1) / s + 1 for MobileNetV3-like layers (the stem, a 5x5 depthwise)
    // and an asymmetric dilated one. Each: x, w, stride, padding, dilation, groups, (h, w) out.
    #[rustfmt::skip]
    let cases = [
        ([32, 1, 128, 1000], [16, 1, 3, 3], [(2, 2), (1, 1), (1, 1)], 1, (64, 500)),
        ([32, 72, 32, 250], [72, 1, 5, 5], [(2, 2), (2, 2), (1, 1)], 72, (16, 125)),
        ([1, 4, 10, 9], [4, 4, 3, 3], [(3, 2), (0, 1), (2, 1)], 1, (2, 5)),
    ];
    for (x, w, [stride, pad, dil], groups, want) in cases {
        let s = conv2d_spec(&x, &w, stride, pad, dil, groups).unwrap();
        assert_eq!((s.h_out, s.w_out), want, "x {x:?} w {w:?}");
    }
}

#[test]
fn empty_input_planes_with_padding_do_not_panic() {
    // Width 0 padded to 2: every output reads only padding (zeros); dx is empty.
    for (groups, c_out) in [(1, 3), (2, 2), (2, 4)] {
        let (k, stride, pad, dil) = ((1, 1), (1, 1), (0, 1), (1, 1));
        let c = case(
            "empty_width",
            2,
            2,
            (3, 0),
            c_out,
            k,
            stride,
            pad,
            dil,
            groups,
        );
        let (x, w) = c.inputs(5);
        let y = c.fwd(&x, &w).unwrap();
        assert_eq!(y.shape(), [2, c_out, 3, 2]);
        assert!(y.to_vec_f64().unwrap().iter().all(|&v| v == 0.0));
        let (dx, dw) = conv2d_bwd(&x, &w, &y, &c.spec()).unwrap();
        assert_eq!(dx.shape(), [2, 2, 3, 0]);
        assert!(dw.to_vec_f64().unwrap().iter().all(|&v| v == 0.0));
    }
}

/// Under autocast a dense pointwise convolution (a GEMM) rounds its operands to bf16 in all
/// three directions; other convolutions stay f32.
#[test]
fn autocast_rounds_dense_pointwise_operands_only() {
    let mut rng = Rng::new(41);
    let f32_of = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    let round = |t: &Tensor| {
        t.to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let x = f32_of(randn64(&[2, 12, 5, 7], &mut rng));
    let w1 = f32_of(randn64(&[9, 12, 1, 1], &mut rng));
    let dy = f32_of(randn64(&[2, 9, 5, 7], &mut rng));
    let spec = conv2d_spec(x.shape(), w1.shape(), (1, 1), (0, 0), (1, 1), 1).unwrap();
    let plain = conv2d(&x, &w1, (1, 1), (0, 0), (1, 1), 1).unwrap();
    let want = [
        conv2d(&round(&x), &round(&w1), (1, 1), (0, 0), (1, 1), 1).unwrap(),
        conv2d_bwd_data(&round(&dy), &round(&w1), &spec).unwrap(),
        conv2d_bwd_weight(&round(&x), &round(&dy), &spec).unwrap(),
    ];
    let w3 = f32_of(randn64(&[12, 1, 3, 3], &mut rng));
    let dw_plain = conv2d(&x, &w3, (1, 1), (1, 1), (1, 1), 12).unwrap();
    let _bf16 = hr_tensor::autocast::bf16_matmuls(true);
    let got = [
        conv2d(&x, &w1, (1, 1), (0, 0), (1, 1), 1).unwrap(),
        conv2d_bwd_data(&dy, &w1, &spec).unwrap(),
        conv2d_bwd_weight(&x, &dy, &spec).unwrap(),
    ];
    for (name, (g, w)) in ["fwd", "bwd_data", "bwd_weight"]
        .iter()
        .zip(got.iter().zip(&want))
    {
        assert_close(&format!("pointwise {name} under autocast"), g, w, 1e-6);
    }
    let moved = hr_tensor::testing::max_rel_diff(&got[0], &plain).unwrap();
    assert!(
        moved > 1e-4,
        "bf16 operands should move the result ({moved})"
    );
    let dw = conv2d(&x, &w3, (1, 1), (1, 1), (1, 1), 12).unwrap();
    assert_close("depthwise stays f32", &dw, &dw_plain, 1e-12);
}

fn conv2d_forward_and_backward(dev: Device) {
    let mut report = Report::new(dev);
    for (i, c) in CONV_CASES.iter().enumerate() {
        let seed = 800 + i as u64 * 10;
        let x = randn(&c.x_shape(), seed);
        let w = randn(&c.w_shape(), seed + 1);
        let spec = c.spec();
        let (xg, wg) = (on(&x, dev), on(&w, dev));
        let what = |op: &str| format!("{op} {c:?}");
        let y = c.fwd(&x, &w).unwrap();
        report.check(&what("conv2d"), c.fwd(&xg, &wg), &y);
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
    if !dev.is_cpu() {
        // (On the CPU both operands are on the same device.)
        let err = ops::conv2d(&x, &w, (1, 1), (1, 1), (1, 1), 1).unwrap_err();
        println!("ok conv2d cpu input, cuda weight: {err}");
    }
    let spec = ops::conv2d_spec(&[1, 2, 5, 5], &[3, 2, 3, 3], (1, 1), (1, 1), (1, 1), 1).unwrap();
    let stale = hr_tensor::Conv2dSpec { h_out: 4, ..spec };
    let dy = on(&randn(&[1, 3, 4, 5], 892), dev);
    let err = ops::conv2d_bwd_data(&dy, &w, &stale).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    println!("ok conv2d_bwd_data with a stale spec: {err}");
    report.finish("conv2d_forward_and_backward");
}

test_device!(conv2d_forward_and_backward);

/// bf16 activations with f32 weights (the audio CNN under `run.precision = "bf16"`): every
/// convolution geometry of [`CONV_CASES`] (direct `_bf16` kernels, bf16 cuBLAS GEMMs with a bf16
/// result for the pointwise ones) and the batch norms (train, fused activation, eval,
/// backward) against the CPU on the same bf16 inputs: bf16 outputs within one bf16 rounding,
/// f32 outputs (weight gradients, statistics, dgamma, dbeta) to 1e-4.
fn bf16_activation_convs_and_batch_norms(dev: Device) {
    let mut report = Report::new(dev);
    for (i, c) in CONV_CASES.iter().enumerate() {
        let seed = 2600 + i as u64 * 10;
        let x = bf16_host(&c.x_shape(), 1.0, 0.0, seed);
        let w = randn(&c.w_shape(), seed + 1);
        let spec = c.spec();
        let dy = bf16_host(
            &[spec.n, spec.c_out, spec.h_out, spec.w_out],
            1.0,
            0.0,
            seed + 2,
        );
        let (xg, wg, dyg) = (on(&x, dev), on(&w, dev), on(&dy, dev));
        let what = |op: &str| format!("bf16 activations {op} {c:?}");
        report.check_rounding(&what("conv2d"), c.fwd(&xg, &wg), &c.fwd(&x, &w).unwrap());
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
            let train = |x: &Tensor, g: &Tensor, b: &Tensor, rm: &mut Tensor, rv: &mut Tensor| {
                ops::batch_norm_train(x, g, b, rm, rv, 0.1, 1e-3, act)
            };
            let bwd =
                |x: &Tensor, g: &Tensor, b: &Tensor, st: &hr_tensor::NormStats, dy: &Tensor| {
                    ops::batch_norm_bwd(x, g, st, dy, act.map(|a| (a, b)))
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

test_device!(bf16_activation_convs_and_batch_norms);

/// The shared-memory tile kernel of the stride-2 depthwise forwards gives the plain kernel's
/// bits (f32 and bf16 activations; odd sizes, several tiles per plane, 3x3 and 5x5). The switch
/// is global, but both settings give the same values, so tests running beside this one are
/// unaffected.
fn stride2_tile_kernel_matches_the_plain_kernel(dev: Device) {
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

test_device!(stride2_tile_kernel_matches_the_plain_kernel);
