//! conv2d: forward against a direct-loop f64 reference, gradient checks of dx and dw, f32/f64
//! agreement and input validation, on odd shapes covering the general (im2col), pointwise and
//! depthwise kernels.

use hr_tensor::ops::{conv2d, conv2d_bwd, conv2d_bwd_data, conv2d_bwd_weight, conv2d_spec};
use hr_tensor::testing::{assert_close, check_gradients, randn64};
use hr_tensor::{Conv2dSpec, DType, Rng, Tensor};

/// One test geometry.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    dil: (usize, usize),
    groups: usize,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    name: &'static str,
    n: usize,
    c_in: usize,
    hw: (usize, usize),
    c_out: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    dil: (usize, usize),
    groups: usize,
) -> Case {
    Case {
        name,
        n,
        c_in,
        h: hw.0,
        w: hw.1,
        c_out,
        k,
        stride,
        pad,
        dil,
        groups,
    }
}

const CASES: &[Case] = &[
    case(
        "plain_3x3",
        2,
        3,
        (7, 6),
        4,
        (3, 3),
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    ),
    case(
        "stride2_pad1",
        2,
        3,
        (9, 11),
        4,
        (3, 3),
        (2, 2),
        (1, 1),
        (1, 1),
        1,
    ),
    case(
        "stem_1ch_s2",
        3,
        1,
        (13, 12),
        5,
        (3, 3),
        (2, 2),
        (1, 1),
        (1, 1),
        1,
    ),
    case(
        "dilation2_pad2",
        2,
        3,
        (10, 9),
        5,
        (3, 3),
        (1, 1),
        (2, 2),
        (2, 2),
        1,
    ),
    case(
        "asym_s12_p21_d21",
        1,
        2,
        (9, 10),
        3,
        (3, 2),
        (1, 2),
        (2, 1),
        (2, 1),
        1,
    ),
    case(
        "groups2",
        2,
        4,
        (7, 8),
        6,
        (3, 2),
        (1, 1),
        (1, 0),
        (1, 1),
        2,
    ),
    case(
        "groups2_s2_d2",
        2,
        6,
        (11, 9),
        4,
        (3, 3),
        (2, 2),
        (2, 1),
        (2, 2),
        2,
    ),
    case(
        "depthwise_k3_s1",
        2,
        5,
        (9, 10),
        5,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        5,
    ),
    case(
        "depthwise_k3_s2",
        2,
        5,
        (9, 10),
        5,
        (3, 3),
        (2, 2),
        (1, 1),
        (1, 1),
        5,
    ),
    case(
        "depthwise_k5_s1",
        2,
        3,
        (9, 11),
        3,
        (5, 5),
        (1, 1),
        (2, 2),
        (1, 1),
        3,
    ),
    case(
        "depthwise_k5_s2",
        2,
        3,
        (11, 13),
        3,
        (5, 5),
        (2, 2),
        (2, 2),
        (1, 1),
        3,
    ),
    case(
        "depthwise_k3_s3_d2",
        1,
        4,
        (12, 14),
        4,
        (3, 2),
        (2, 3),
        (0, 2),
        (2, 2),
        4,
    ),
    case(
        "depthwise_nopad_s2",
        2,
        3,
        (8, 9),
        3,
        (3, 3),
        (2, 2),
        (0, 0),
        (1, 1),
        3,
    ),
    case(
        "depthwise_1ch",
        3,
        1,
        (6, 7),
        1,
        (3, 3),
        (1, 2),
        (1, 1),
        (1, 1),
        1,
    ),
    case(
        "depthwise_multiplier2",
        2,
        3,
        (7, 8),
        6,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        3,
    ),
    case(
        "pointwise",
        2,
        6,
        (5, 7),
        4,
        (1, 1),
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    ),
    case(
        "pointwise_groups2",
        2,
        6,
        (5, 7),
        4,
        (1, 1),
        (1, 1),
        (0, 0),
        (1, 1),
        2,
    ),
    case(
        "pointwise_stride2",
        2,
        3,
        (7, 9),
        4,
        (1, 1),
        (2, 2),
        (0, 0),
        (1, 1),
        1,
    ),
    case(
        "pointwise_pad1",
        1,
        3,
        (4, 5),
        2,
        (1, 1),
        (1, 1),
        (1, 1),
        (1, 1),
        1,
    ),
    case(
        "kernel_fills_input",
        2,
        2,
        (5, 4),
        3,
        (5, 4),
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    ),
];

/// Larger geometries that take the parallel and threaded-GEMM branches.
const BIG_CASES: &[Case] = &[
    case(
        "big_depthwise_s1",
        2,
        8,
        (24, 70),
        8,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        8,
    ),
    case(
        "big_depthwise_k5_s2",
        2,
        8,
        (25, 71),
        8,
        (5, 5),
        (2, 2),
        (2, 2),
        (1, 1),
        8,
    ),
    case(
        "big_pointwise",
        1,
        16,
        (20, 31),
        24,
        (1, 1),
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    ),
    case(
        "big_stem",
        1,
        1,
        (64, 41),
        16,
        (3, 3),
        (2, 2),
        (1, 1),
        (1, 1),
        1,
    ),
];

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
        1e-6,
        64,
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
    // Wrong channel count.
    let w = randn64(&[4, 2, 3, 3], &mut rng);
    expect_err(
        conv2d(&x, &w, (1, 1), (0, 0), (1, 1), 1),
        "conv2d",
        &[xs, "[4, 2, 3, 3]"],
    );
    // Groups not dividing c_in.
    let w = randn64(&[6, 1, 3, 3], &mut rng);
    expect_err(
        conv2d(&x, &w, (1, 1), (0, 0), (1, 1), 2),
        "conv2d",
        &[xs, "[6, 1, 3, 3]", "groups"],
    );
    // Groups not dividing c_out.
    let w = randn64(&[4, 1, 3, 3], &mut rng);
    expect_err(
        conv2d(&x, &w, (1, 1), (0, 0), (1, 1), 3),
        "conv2d",
        &[xs, "[4, 1, 3, 3]", "groups"],
    );
    // Zero groups / stride / dilation.
    let w = randn64(&[4, 3, 3, 3], &mut rng);
    expect_err(
        conv2d(&x, &w, (1, 1), (0, 0), (1, 1), 0),
        "conv2d",
        &[xs, "[4, 3, 3, 3]"],
    );
    expect_err(
        conv2d(&x, &w, (0, 1), (0, 0), (1, 1), 1),
        "conv2d",
        &[xs, "stride"],
    );
    expect_err(
        conv2d(&x, &w, (1, 1), (0, 0), (1, 0), 1),
        "conv2d",
        &[xs, "dilation"],
    );
    // Kernel larger than the padded input (plain and through dilation).
    let w = randn64(&[4, 3, 11, 3], &mut rng);
    expect_err(
        conv2d(&x, &w, (1, 1), (1, 1), (1, 1), 1),
        "conv2d",
        &[xs, "[4, 3, 11, 3]", "larger"],
    );
    let w = randn64(&[4, 3, 3, 3], &mut rng);
    expect_err(
        conv2d(&x, &w, (1, 1), (0, 0), (1, 4), 1),
        "conv2d",
        &[xs, "[4, 3, 3, 3]", "larger"],
    );
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
    // (h + 2p - d(k-1) - 1) / s + 1 for MobileNetV3-like layers.
    let s = conv2d_spec(
        &[32, 1, 128, 1000],
        &[16, 1, 3, 3],
        (2, 2),
        (1, 1),
        (1, 1),
        1,
    )
    .unwrap();
    assert_eq!((s.h_out, s.w_out), (64, 500));
    let s = conv2d_spec(
        &[32, 72, 32, 250],
        &[72, 1, 5, 5],
        (2, 2),
        (2, 2),
        (1, 1),
        72,
    )
    .unwrap();
    assert_eq!((s.h_out, s.w_out), (16, 125));
    let s = conv2d_spec(&[1, 4, 10, 9], &[4, 4, 3, 3], (3, 2), (0, 1), (2, 1), 1).unwrap();
    assert_eq!((s.h_out, s.w_out), (2, 5));
}

#[test]
fn empty_input_planes_with_padding_do_not_panic() {
    // Width 0 padded to 2: every output reads only padding (zeros); dx is empty.
    for (groups, c_out) in [(1, 3), (2, 2), (2, 4)] {
        let c = case(
            "empty_width",
            2,
            2,
            (3, 0),
            c_out,
            (1, 1),
            (1, 1),
            (0, 1),
            (1, 1),
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
