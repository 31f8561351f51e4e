//! Per-plane ops (`plane_sum`, `plane_scale`: the squeeze-and-excitation block's pooling, gate
//! gradient and scaling) on the CPU against the unfused ops they replace, in f64, f32 and with
//! bf16 activations, their backward against finite differences, plus their errors.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): the same ops on the device
//! against the CPU backend, f32 and bf16 activations ([`hr_tensor::testing::parity`]).

use hr_tensor::ops;
use hr_tensor::testing::assert_close;
use hr_tensor::testing::parity::{bf16_host, on, Report};
use hr_tensor::{test_device, DType, Device, Error, Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, &mut Rng::new(seed)).expect("randn")
}

const SHAPES: [&[usize]; 5] = [
    &[2, 3, 4, 5],
    &[3, 5, 7, 9],
    &[4, 6],
    &[2, 3, 11],
    &[1, 2, 0, 3],
];

/// The (N, C) shape and the spatial axes of `shape`, with `per` viewed as (N, C, 1, ..).
fn split(shape: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let axes: Vec<usize> = (2..shape.len()).collect();
    let mut kept = shape[..2].to_vec();
    kept.extend(std::iter::repeat_n(1, shape.len() - 2));
    (shape[..2].to_vec(), axes, kept)
}

#[test]
fn plane_ops_match_the_unfused_ops() {
    for (i, &shape) in SHAPES.iter().enumerate() {
        let seed = 10 * i as u64;
        let (nc, axes, kept) = split(shape);
        for dtype in [DType::F64, DType::F32] {
            let cast = |t: Tensor| t.to_dtype(dtype).unwrap();
            let (a, b) = (cast(randn(shape, seed)), cast(randn(shape, seed + 1)));
            let (scale, shift) = (cast(randn(&nc, seed + 2)), cast(randn(&nc, seed + 3)));
            let what = format!("{shape:?} {dtype:?}");
            let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
            let sum = ops::sum_axes(&a, &axes, false).unwrap();
            assert_close(
                &format!("plane_sum {what}"),
                &ops::plane_sum(&a, None).unwrap(),
                &sum,
                tol,
            );
            let dot = ops::sum_axes(&ops::mul(&a, &b).unwrap(), &axes, false).unwrap();
            let got = ops::plane_sum(&a, Some(&b)).unwrap();
            assert_eq!(got.shape(), &nc[..]);
            assert_close(&format!("plane_sum a*b {what}"), &got, &dot, tol);
            // Scaling is one product (and one add) per element: bit-exact with the unfused ops.
            let mul = ops::mul(&a, &scale.reshape(&kept).unwrap()).unwrap();
            let y = ops::plane_scale(&a, &scale, None).unwrap();
            assert_eq!(
                y.to_vec_f64().unwrap(),
                mul.to_vec_f64().unwrap(),
                "plane_scale {what}"
            );
            let fused = ops::plane_scale(&a, &scale, Some(&shift)).unwrap();
            let want = ops::add(&mul, &shift.reshape(&kept).unwrap()).unwrap();
            assert_eq!(
                fused.to_vec_f64().unwrap(),
                want.to_vec_f64().unwrap(),
                "plane_scale + shift {what}"
            );
        }
    }
}

#[test]
fn bf16_activations_run_the_f32_op_and_round_once() {
    for (i, &shape) in SHAPES.iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let (nc, _, _) = split(shape);
        let ab = randn(shape, seed).to_dtype(DType::BF16).unwrap();
        let bb = randn(shape, seed + 1).to_dtype(DType::BF16).unwrap();
        let (af, bf) = (
            ab.to_dtype(DType::F32).unwrap(),
            bb.to_dtype(DType::F32).unwrap(),
        );
        let (scale, shift) = (randn(&nc, seed + 2), randn(&nc, seed + 3));
        let sum = ops::plane_sum(&ab, Some(&bb)).unwrap();
        assert_eq!(sum.dtype(), DType::F32, "the per-plane sums stay f32");
        assert_eq!(
            sum.to_vec_f64().unwrap(),
            ops::plane_sum(&af, Some(&bf))
                .unwrap()
                .to_vec_f64()
                .unwrap()
        );
        let y = ops::plane_scale(&ab, &scale, Some(&shift)).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        let want = ops::plane_scale(&af, &scale, Some(&shift))
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        assert_eq!(
            y.to_vec_f64().unwrap(),
            want.to_vec_f64().unwrap(),
            "{shape:?}"
        );
    }
}

#[test]
fn bad_operands_are_errors_naming_the_op() {
    let a = randn(&[2, 3, 4], 1);
    let name = |e: Error| match e {
        Error::InvalidArgument { op, .. }
        | Error::ShapeMismatch { op, .. }
        | Error::DTypeMismatch { op, .. } => op,
        other => panic!("unexpected error {other}"),
    };
    let other = randn(&[2, 3, 5], 2);
    assert_eq!(
        name(ops::plane_sum(&a, Some(&other)).unwrap_err()),
        "plane_sum"
    );
    assert_eq!(
        name(ops::plane_sum(&randn(&[6], 3), None).unwrap_err()),
        "plane_sum"
    );
    let bad = randn(&[3, 2], 4);
    assert_eq!(
        name(ops::plane_scale(&a, &bad, None).unwrap_err()),
        "plane_scale"
    );
    let good = randn(&[2, 3], 5);
    assert_eq!(
        name(ops::plane_scale(&a, &good, Some(&bad)).unwrap_err()),
        "plane_scale"
    );
    let b16 = a.to_dtype(DType::BF16).unwrap();
    let s16 = good.to_dtype(DType::BF16).unwrap();
    assert_eq!(
        name(ops::plane_scale(&b16, &s16, None).unwrap_err()),
        "plane_scale"
    );
    assert_eq!(
        name(ops::plane_sum(&b16, Some(&a)).unwrap_err()),
        "plane_sum"
    );
}

#[test]
fn gradients_match_finite_differences() {
    use hr_tensor::testing::{check_gradients, randn64};
    for (i, shape) in [[2usize, 3, 4, 5], [1, 2, 3, 1], [3, 1, 7, 2]]
        .iter()
        .enumerate()
    {
        let mut rng = Rng::new(500 + i as u64);
        let (a, b) = (randn64(shape, &mut rng), randn64(shape, &mut rng));
        let (sc, sh) = (
            randn64(&shape[..2], &mut rng),
            randn64(&shape[..2], &mut rng),
        );
        check_gradients(
            &format!("plane_sum a*b {shape:?}"),
            &[a.clone(), b.clone()],
            |t| ops::plane_sum(&t[0], Some(&t[1])),
            |t, d| {
                let (da, db) = ops::plane_sum_bwd(d, &t[0], Some(&t[1]))?;
                Ok(vec![Some(da), db])
            },
        );
        check_gradients(
            &format!("plane_sum {shape:?}"),
            std::slice::from_ref(&a),
            |t| ops::plane_sum(&t[0], None),
            |t, d| Ok(vec![Some(ops::plane_sum_bwd(d, &t[0], None)?.0)]),
        );
        check_gradients(
            &format!("plane_scale + shift {shape:?}"),
            &[a.clone(), sc.clone(), sh],
            |t| ops::plane_scale(&t[0], &t[1], Some(&t[2])),
            |t, d| {
                let (dx, ds, dsh) = ops::plane_scale_bwd(d, &t[0], &t[1], true)?;
                Ok(vec![Some(dx), Some(ds), dsh])
            },
        );
        check_gradients(
            &format!("plane_scale {shape:?}"),
            &[a, sc],
            |t| ops::plane_scale(&t[0], &t[1], None),
            |t, d| {
                let (dx, ds, dsh) = ops::plane_scale_bwd(d, &t[0], &t[1], false)?;
                assert!(dsh.is_none());
                Ok(vec![Some(dx), Some(ds)])
            },
        );
    }
}

/// The per-plane ops of the squeeze-and-excitation block (`plane_sum` with and without a second
/// factor, `plane_scale` with and without a shift) against the CPU, f32 and bf16 activations,
/// planes of 4k elements (vector path), odd and empty planes, a rank-2 input.
fn plane_ops(dev: Device) {
    let mut report = Report::new(dev);
    let shapes: [&[usize]; 5] = [
        &[4, 16, 8, 63],
        &[3, 5, 7, 9],
        &[32, 40, 16, 125],
        &[6, 7],
        &[2, 3, 0, 5],
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        let seed = 3100 + i as u64 * 10;
        let nc = &shape[..2];
        let (scale, shift) = (randn(nc, seed + 2), randn(nc, seed + 3));
        let (scg, shg) = (on(&scale, dev), on(&shift, dev));
        for bf16 in [false, true] {
            let make = |s: u64| match bf16 {
                true => bf16_host(shape, 1.0, 0.0, s),
                false => randn(shape, s),
            };
            let (a, b) = (make(seed), make(seed + 1));
            let (ag, bg) = (on(&a, dev), on(&b, dev));
            let what = |op: &str| format!("{op} {shape:?}{}", if bf16 { " bf16" } else { "" });
            report.check(
                &what("plane_sum"),
                ops::plane_sum(&ag, None),
                &ops::plane_sum(&a, None).unwrap(),
            );
            report.check(
                &what("plane_sum a*b"),
                ops::plane_sum(&ag, Some(&bg)),
                &ops::plane_sum(&a, Some(&b)).unwrap(),
            );
            for sh in [None, Some((&shg, &shift))] {
                let name = what(if sh.is_some() {
                    "plane_scale + shift"
                } else {
                    "plane_scale"
                });
                let got = ops::plane_scale(&ag, &scg, sh.map(|s| s.0));
                let want = ops::plane_scale(&a, &scale, sh.map(|s| s.1)).unwrap();
                match bf16 {
                    true => report.check_rounding(&name, got, &want),
                    false => report.check(&name, got, &want),
                }
            }
        }
    }
    report.finish("plane_ops");
}

test_device!(plane_ops);
