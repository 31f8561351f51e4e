//! bf16 activations with f32 parameters on the CPU (the audio CNN under mixed precision):
//! convolutions and batch norms take a bf16 input (and bf16 `dy`) with an f32 weight, gamma,
//! beta and running statistics. Each result must equal the f32 op on the same values with its
//! activation outputs (`y`, `dx`) rounded to bf16 once, bit for bit; weight gradients,
//! statistics, `dgamma` and `dbeta` stay f32 and equal the f32 op's. A dense pointwise
//! convolution multiplies the bf16 rounding of its weight (as every GEMM under autocast).
//! Mixing the dtypes any other way is an error naming the op.

use hr_tensor::autocast::bf16_matmuls;
use hr_tensor::ops::{self, conv2d_spec};
use hr_tensor::testing::{bf16_bits as bits, bf16_pair as pair};
use hr_tensor::{Conv2dSpec, DType, Error, NormGrads, Rng, Tensor, Unary};

/// `got` (bf16) is `want` (f32) rounded to bf16, bit for bit.
fn rounded(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype(), DType::BF16, "{what}: dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let want = want.to_dtype(DType::BF16).expect("round");
    assert_eq!(bits(got), bits(&want), "{what}: not the rounded f32 result");
}

/// `got` and `want` are the same f32 tensor, bit for bit.
fn identical(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype(), DType::F32, "{what}: dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (
        got.as_slice::<f32>().unwrap(),
        want.as_slice::<f32>().unwrap(),
    );
    let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{what}: f32 results differ");
}

/// A convolution case: name, x shape, c_out, kernel, stride, groups.
type ConvCase = (&'static str, [usize; 4], usize, usize, usize, usize);

/// The audio CNN's geometries plus a general grouped one.
const CONVS: [ConvCase; 7] = [
    ("depthwise 3x3 s1", [2, 6, 9, 17], 6, 3, 1, 6),
    ("depthwise 3x3 s2", [2, 5, 12, 19], 5, 3, 2, 5),
    ("depthwise 5x5 s2", [1, 4, 11, 21], 4, 5, 2, 4),
    ("stem 3x3 s2 (1 channel)", [2, 1, 16, 23], 7, 3, 2, 1),
    ("pointwise 12 -> 9", [2, 12, 5, 7], 9, 1, 1, 1),
    ("pointwise on 1x1 images", [3, 8, 1, 1], 5, 1, 1, 1),
    ("grouped 3x3", [2, 4, 7, 9], 6, 3, 1, 2),
];

fn spec_of(x: &[usize], w: &[usize], k: usize, stride: usize, groups: usize) -> Conv2dSpec {
    let p = (k - 1) / 2;
    conv2d_spec(x, w, (stride, stride), (p, p), (1, 1), groups).expect("spec")
}

#[test]
fn convolutions_round_the_f32_result_once() {
    for (i, (name, xs, c_out, k, stride, groups)) in CONVS.into_iter().enumerate() {
        let seed = 100 * i as u64;
        let (xf, xb) = pair(&xs, 1.0, 0.0, seed);
        let w =
            Tensor::randn(&[c_out, xs[1] / groups, k, k], 0.5, &mut Rng::new(seed + 1)).unwrap();
        let s = spec_of(&xs, w.shape(), k, stride, groups);
        let (dyf, dyb) = pair(&[s.n, s.c_out, s.h_out, s.w_out], 1.0, 0.0, seed + 2);
        let p = s.padding;
        // The f32 reference with bf16 GEMM operands (pointwise: the weight's rounding).
        let (y, dx, dw) = {
            let _gemm = bf16_matmuls(true);
            (
                ops::conv2d(&xf, &w, s.stride, p, (1, 1), groups).unwrap(),
                ops::conv2d_bwd_data(&dyf, &w, &s).unwrap(),
                ops::conv2d_bwd_weight(&xf, &dyf, &s).unwrap(),
            )
        };
        // The bf16-activation ops, with autocast off: bf16 activations imply bf16 GEMMs.
        let yb = ops::conv2d(&xb, &w, s.stride, p, (1, 1), groups).unwrap();
        rounded(&format!("{name} forward"), &yb, &y);
        rounded(
            &format!("{name} backward-data"),
            &ops::conv2d_bwd_data(&dyb, &w, &s).unwrap(),
            &dx,
        );
        identical(
            &format!("{name} backward-weight"),
            &ops::conv2d_bwd_weight(&xb, &dyb, &s).unwrap(),
            &dw,
        );
        let (dxb, dwb) = ops::conv2d_bwd(&xb, &w, &dyb, &s).unwrap();
        rounded(&format!("{name} conv2d_bwd dx"), &dxb, &dx);
        identical(&format!("{name} conv2d_bwd dw"), &dwb, &dw);
    }
}

#[test]
fn pointwise_bf16_activations_round_the_weight() {
    let (xf, xb) = pair(&[2, 12, 5, 7], 1.0, 0.0, 7);
    let w = Tensor::randn(&[9, 12, 1, 1], 0.5, &mut Rng::new(8)).unwrap();
    let plain = ops::conv2d(&xf, &w, (1, 1), (0, 0), (1, 1), 1).unwrap();
    let yb = ops::conv2d(&xb, &w, (1, 1), (0, 0), (1, 1), 1).unwrap();
    let wr = w
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let want = ops::conv2d(&xf, &wr, (1, 1), (0, 0), (1, 1), 1).unwrap();
    rounded("pointwise with the weight rounded", &yb, &want);
    let moved = hr_tensor::testing::max_rel_diff(&want, &plain).unwrap();
    assert!(moved > 1e-4, "the weight's rounding should show ({moved})");
}

/// Batch norm's train (with and without a fused activation), eval and backward.
#[test]
fn batch_norms_round_the_f32_result_once() {
    for (i, shape) in [[3usize, 5, 4, 10], [2, 3, 7, 5], [4, 2, 1, 1]]
        .into_iter()
        .enumerate()
    {
        let c = shape[1];
        let seed = 50 + 10 * i as u64;
        let (xf, xb) = pair(&shape, 2.0, 1.5, seed);
        let (dyf, dyb) = pair(&shape, 1.0, 0.0, seed + 1);
        let gamma = Tensor::randn(&[c], 0.5, &mut Rng::new(seed + 2)).unwrap();
        let beta = Tensor::randn(&[c], 0.5, &mut Rng::new(seed + 3)).unwrap();
        let rm0 = Tensor::randn(&[c], 0.1, &mut Rng::new(seed + 4)).unwrap();
        let rv0 = ops::affine(
            &Tensor::randn(&[c], 0.1, &mut Rng::new(seed + 5)).unwrap(),
            1.0,
            1.0,
        )
        .unwrap();
        for act in [None, Some(Unary::Relu), Some(Unary::Hardswish)] {
            let what = format!("batch norm {shape:?} {act:?}");
            let train = |x: &Tensor, rm: &mut Tensor, rv: &mut Tensor| {
                ops::batch_norm_train(x, &gamma, &beta, rm, rv, 0.1, 1e-5, act)
            };
            let (mut rmf, mut rvf, mut rmb, mut rvb) =
                (rm0.clone(), rv0.clone(), rm0.clone(), rv0.clone());
            let (yf, sf) = train(&xf, &mut rmf, &mut rvf).unwrap();
            let (yb, sb) = train(&xb, &mut rmb, &mut rvb).unwrap();
            rounded(&format!("{what} y"), &yb, &yf);
            identical(&format!("{what} mean"), &sb.mean, &sf.mean);
            identical(&format!("{what} rstd"), &sb.rstd, &sf.rstd);
            identical(&format!("{what} running mean"), &rmb, &rmf);
            identical(&format!("{what} running var"), &rvb, &rvf);
            let bwd = |x: &Tensor, dy: &Tensor, st| -> NormGrads {
                ops::batch_norm_bwd(x, &gamma, st, dy, act.map(|a| (a, &beta))).unwrap()
            };
            let (gf, gb) = (bwd(&xf, &dyf, &sf), bwd(&xb, &dyb, &sb));
            rounded(&format!("{what} dx"), &gb.dx, &gf.dx);
            identical(&format!("{what} dgamma"), &gb.dgamma, &gf.dgamma);
            identical(&format!("{what} dbeta"), &gb.dbeta, &gf.dbeta);
        }
        let ef = ops::batch_norm_eval(&xf, &gamma, &beta, &rm0, &rv0, 1e-5).unwrap();
        let eb = ops::batch_norm_eval(&xb, &gamma, &beta, &rm0, &rv0, 1e-5).unwrap();
        rounded(&format!("batch norm eval {shape:?}"), &eb, &ef);
    }
}

/// Any other mix of dtypes is an error naming the op.
#[test]
fn other_dtype_mixes_are_errors() {
    let (xf, xb) = pair(&[1, 2, 5, 5], 1.0, 0.0, 1);
    let (wf, wb) = pair(&[2, 1, 3, 3], 1.0, 0.0, 2);
    let conv = |x: &Tensor, w: &Tensor| ops::conv2d(x, w, (1, 1), (1, 1), (1, 1), 2);
    assert!(conv(&xb, &wf).is_ok());
    for (name, r) in [
        ("bf16 weight", conv(&xb, &wb)),
        ("f32 input, bf16 weight", conv(&xf, &wb)),
    ] {
        match r {
            Err(Error::InvalidArgument { op: "conv2d", msg }) => {
                assert!(msg.contains("weight"), "{name}: {msg}")
            }
            other => panic!("{name}: expected an error naming conv2d, got {other:?}"),
        }
    }
    let s = spec_of(&[1, 2, 5, 5], &[2, 1, 3, 3], 3, 1, 2);
    let (dyf, _) = pair(&[1, 2, 5, 5], 1.0, 0.0, 3);
    assert!(
        ops::conv2d_bwd_weight(&xb, &dyf, &s).is_err(),
        "a bf16 input with an f32 dy"
    );
    let (cf, cb) = pair(&[2], 1.0, 0.0, 4);
    let (mut rm, mut rv) = (cb.clone(), cb.clone());
    match ops::batch_norm_train(&xb, &cb, &cb, &mut rm, &mut rv, 0.1, 1e-5, None) {
        Err(Error::DTypeMismatch {
            op: "batch_norm_train",
            lhs: DType::F32,
            rhs: DType::BF16,
        }) => {}
        other => panic!("bf16 parameters: expected a dtype mismatch, got {other:?}"),
    }
    let (mut rm, mut rv) = (cf.clone(), cf.clone());
    assert!(ops::batch_norm_train(&xb, &cf, &cf, &mut rm, &mut rv, 0.1, 1e-5, None).is_ok());
}
