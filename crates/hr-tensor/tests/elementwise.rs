//! Activations, broadcasting arithmetic, reductions and dropout: forward values and gradients.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): unary / unary_bwd, broadcasting
//! binary ops, affine, axpy and dropout (masks bit-identical) on the device against the CPU
//! backend, f32 and bf16 storage ([`hr_tensor::testing::parity`]).

use hr_tensor::ops::{
    add, add_bias, add_bias_bwd, binary, binary_bwd, broadcast_to, dropout, dropout_bwd, mean_axes,
    mean_axes_bwd, sum_axes, sum_axes_bwd, sum_to, unary, unary_bwd,
};
use hr_tensor::testing::parity::{
    bf16_host, check, check_bf16, check_bf16_exact, on, randn, uniform,
};
use hr_tensor::testing::{assert_close, check_gradients, randn32, randn64};
use hr_tensor::{ops, test_device, Binary, DType, Device, Error, Rng, Tensor, Unary};

const ACTS: [Unary; 8] = Unary::ALL;

fn reference(kind: Unary, x: f64) -> f64 {
    match kind {
        Unary::Relu => x.max(0.0),
        Unary::Gelu => 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())),
        Unary::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Unary::Tanh => x.tanh(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
    }
}

/// Inputs spread over [-5, 5] (positive for log/sqrt), avoiding the kinks at 0 and +-3.
fn act_input(kind: Unary, rng: &mut Rng) -> Tensor {
    let v: Vec<f64> = (0..37)
        .map(|_| {
            let mut x = rng.uniform() * 10.0 - 5.0;
            if matches!(kind, Unary::Log | Unary::Sqrt) {
                x = x.abs() + 0.1;
            }
            for kink in [0.0, 3.0, -3.0] {
                if (x - kink).abs() < 1e-3 {
                    x += 0.01;
                }
            }
            x
        })
        .collect();
    Tensor::from_vec(v, &[37]).unwrap()
}

#[test]
fn activations_forward_and_gradients() {
    let mut rng = Rng::new(10);
    for kind in ACTS {
        let x = act_input(kind, &mut rng);
        let y = unary(kind, &x).unwrap();
        let want: Vec<f64> = x
            .to_vec_f64()
            .unwrap()
            .iter()
            .map(|&v| reference(kind, v))
            .collect();
        assert_close(
            &format!("{kind:?}"),
            &y,
            &Tensor::from_vec(want, &[37]).unwrap(),
            1e-12,
        );
        let y32 = unary(kind, &x.to_dtype(DType::F32).unwrap()).unwrap();
        assert_close(&format!("{kind:?} f32"), &y32, &y, 1e-6);
        check_gradients(
            &format!("{kind:?}"),
            &[x],
            |x| unary(kind, &x[0]),
            |x, dy| Ok(vec![Some(unary_bwd(kind, &x[0], dy)?)]),
        );
    }
}

#[test]
fn broadcasting_binary_ops_and_gradients() {
    let mut rng = Rng::new(11);
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3, 5], &[3, 5]),
        (&[2, 3, 5], &[5]),
        (&[2, 3, 5], &[2, 1, 5]),
        (&[2, 3, 1], &[1, 3, 4]),
        (&[4, 1, 3, 3], &[4, 6, 1, 1]),
    ];
    for (sa, sb) in cases {
        for kind in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
            let a = randn64(sa, &mut rng);
            let b = if kind == Binary::Div {
                let v: Vec<f64> = randn64(sb, &mut rng)
                    .to_vec_f64()
                    .unwrap()
                    .into_iter()
                    .map(|x| x.signum() * (x.abs() + 0.5))
                    .collect();
                Tensor::from_vec(v, sb).unwrap()
            } else {
                randn64(sb, &mut rng)
            };
            check_gradients(
                &format!("{kind:?} {sa:?} {sb:?}"),
                &[a, b],
                |x| binary(kind, &x[0], &x[1]),
                |x, dy| {
                    let (da, db) = binary_bwd(kind, &x[0], &x[1], dy)?;
                    Ok(vec![Some(da), Some(db)])
                },
            );
        }
    }
    // One value by hand: (2,1) + (1,3).
    let a = Tensor::from_vec(vec![1f32, 2.0], &[2, 1]).unwrap();
    let b = Tensor::from_vec(vec![10f32, 20.0, 30.0], &[1, 3]).unwrap();
    let c = add(&a, &b).unwrap();
    assert_eq!(c.shape(), &[2, 3]);
    assert_eq!(
        c.to_vec_f32().unwrap(),
        vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]
    );
}

#[test]
fn bias_add_and_its_gradient() {
    let mut rng = Rng::new(12);
    let x = randn64(&[2, 3, 7], &mut rng);
    let b = randn64(&[7], &mut rng);
    check_gradients(
        "add_bias",
        &[x, b],
        |x| add_bias(&x[0], &x[1]),
        |_, dy| Ok(vec![Some(dy.clone()), Some(add_bias_bwd(dy)?)]),
    );
    let wrong = randn64(&[6], &mut rng);
    let err = add_bias(&randn64(&[2, 7], &mut rng), &wrong).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "add_bias", .. }));
}

#[test]
fn reductions_and_broadcast_are_adjoint() {
    let mut rng = Rng::new(13);
    let x = randn64(&[3, 4, 5], &mut rng);
    let xv = x.to_vec_f64().unwrap();
    let s = sum_axes(&x, &[0, 2], false).unwrap();
    assert_eq!(s.shape(), &[4]);
    for j in 0..4 {
        let want: f64 = (0..3)
            .flat_map(|i| (0..5).map(move |k| (i, k)))
            .map(|(i, k)| xv[i * 20 + j * 5 + k])
            .sum();
        assert!((s.to_vec_f64().unwrap()[j] - want).abs() < 1e-12);
    }
    for axes in [vec![0], vec![1], vec![2], vec![0, 2], vec![0, 1, 2]] {
        for keep in [false, true] {
            let a = axes.clone();
            check_gradients(
                &format!("sum {axes:?} keep={keep}"),
                std::slice::from_ref(&x),
                |x| sum_axes(&x[0], &a, keep),
                |x, dy| Ok(vec![Some(sum_axes_bwd(dy, x[0].shape(), &a)?)]),
            );
            check_gradients(
                &format!("mean {axes:?} keep={keep}"),
                std::slice::from_ref(&x),
                |x| mean_axes(&x[0], &a, keep),
                |x, dy| Ok(vec![Some(mean_axes_bwd(dy, x[0].shape(), &a)?)]),
            );
        }
    }
    let b = randn64(&[4, 1], &mut rng);
    check_gradients(
        "broadcast_to",
        &[b],
        |x| broadcast_to(&x[0], &[2, 4, 3]),
        |x, dy| Ok(vec![Some(sum_to(dy, x[0].shape())?)]),
    );
    assert!(sum_axes(&x, &[3], false).is_err());
    assert!(broadcast_to(&x, &[2, 4, 5]).is_err());
}

#[test]
fn dropout_is_seeded_scaled_and_differentiable() {
    let mut rng = Rng::new(14);
    let x = randn32(&[64, 100], &mut rng);
    let (y1, s1) = dropout(&x, 0.25, 7).unwrap();
    let (y2, _) = dropout(&x, 0.25, 7).unwrap();
    let (y3, _) = dropout(&x, 0.25, 8).unwrap();
    assert_eq!(y1.to_vec_f32().unwrap(), y2.to_vec_f32().unwrap());
    assert_ne!(y1.to_vec_f32().unwrap(), y3.to_vec_f32().unwrap());
    let sv = s1.to_vec_f32().unwrap();
    let dropped = sv.iter().filter(|&&v| v == 0.0).count() as f64 / sv.len() as f64;
    assert!((dropped - 0.25).abs() < 0.03, "dropped fraction {dropped}");
    assert!(sv
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    let x64 = randn64(&[5, 7], &mut rng);
    check_gradients(
        "dropout",
        &[x64],
        |x| Ok(dropout(&x[0], 0.3, 3)?.0),
        |x, dy| {
            let (_, s) = dropout(&x[0], 0.3, 3)?;
            Ok(vec![Some(dropout_bwd(dy, &s)?)])
        },
    );
    assert!(dropout(&x, 1.0, 0).is_err());
}

#[test]
fn mixed_dtypes_are_rejected() {
    let mut rng = Rng::new(15);
    let a = randn32(&[3], &mut rng);
    let b = randn64(&[3], &mut rng);
    let err = add(&a, &b).unwrap_err();
    assert!(
        matches!(err, Error::DTypeMismatch { op: "binary", .. }),
        "{err}"
    );
    // bf16 storage is supported by unary and dropout (tests/bf16.rs), not by log_softmax.
    let bf = a.to_dtype(DType::BF16).unwrap();
    hr_tensor::testing::assert_unsupported_bf16("log_softmax", hr_tensor::ops::log_softmax(&bf));
}

fn unary_forward_and_backward(dev: Device) {
    for (si, shape) in [vec![1], vec![7], vec![3, 5], vec![4, 33, 65], vec![1 << 17]]
        .iter()
        .enumerate()
    {
        for (ki, &kind) in ACTS.iter().enumerate() {
            let seed = (si * 16 + ki) as u64;
            let x = match kind {
                Unary::Log | Unary::Sqrt => uniform(shape, 0.05, 4.0, seed),
                _ => Tensor::randn(shape, 2.5, &mut Rng::new(seed)).expect("randn"),
            };
            let dy = randn(shape, seed + 1000);
            let (xg, dyg) = (on(&x, dev), on(&dy, dev));
            let name = format!("{kind:?}");
            check(
                dev,
                &name,
                &ops::unary(kind, &xg).unwrap(),
                &ops::unary(kind, &x).unwrap(),
            );
            check(
                dev,
                &format!("{name}_bwd"),
                &ops::unary_bwd(kind, &xg, &dyg).unwrap(),
                &ops::unary_bwd(kind, &x, &dy).unwrap(),
            );
        }
    }
}

test_device!(unary_forward_and_backward);

fn binary_broadcasting(dev: Device) {
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
                dev,
                &format!("{kind:?} {sa:?} {sb:?}"),
                &got,
                &ops::binary(kind, &a, &b).unwrap(),
            );
        }
    }
}

test_device!(binary_broadcasting);

fn affine_axpy_dropout(dev: Device) {
    for (i, shape) in [vec![1], vec![9, 13], vec![3, 1001]].iter().enumerate() {
        let x = randn(shape, 10 + i as u64);
        let y = randn(shape, 20 + i as u64);
        check(
            dev,
            "affine",
            &ops::affine(&on(&x, dev), 0.37, -1.25).unwrap(),
            &ops::affine(&x, 0.37, -1.25).unwrap(),
        );
        let mut yc = y.clone();
        let mut yg = on(&y, dev);
        ops::axpy(&mut yc, -0.75, &x).unwrap();
        ops::axpy(&mut yg, -0.75, &on(&x, dev)).unwrap();
        check(dev, "axpy", &yg, &yc);
        for (p, seed) in [(0.1, 7u64), (0.5, 0xdead_beef_1234), (0.0, 3)] {
            let (yd, sd) = ops::dropout(&on(&x, dev), p, seed).unwrap();
            let (yc, sc) = ops::dropout(&x, p, seed).unwrap();
            assert_eq!(
                sd.to_vec_f32().unwrap(),
                sc.to_vec_f32().unwrap(),
                "dropout mask p={p} seed={seed} differs from the CPU"
            );
            check(dev, &format!("dropout p={p}"), &yd, &yc);
        }
    }
}

test_device!(affine_axpy_dropout);

/// unary / unary_bwd / binary (same shape and broadcast) / affine on bf16.
fn bf16_elementwise(dev: Device) {
    for (si, shape) in [vec![1], vec![7], vec![3, 5], vec![4, 33, 65], vec![1 << 17]]
        .iter()
        .enumerate()
    {
        for (ki, &kind) in ACTS.iter().enumerate() {
            let seed = 1800 + (si * 16 + ki) as u64;
            let x = match kind {
                Unary::Log | Unary::Sqrt => bf16_host(shape, 0.5, 2.0, seed),
                _ => bf16_host(shape, 2.5, 0.0, seed),
            };
            let dy = bf16_host(shape, 1.0, 0.0, seed + 1000);
            let (xg, dyg) = (on(&x, dev), on(&dy, dev));
            let name = format!("{kind:?} {shape:?}");
            let (g, c) = (ops::unary(kind, &xg), ops::unary(kind, &x));
            check_bf16(dev, &name, &g.unwrap(), &c.unwrap());
            let g = ops::unary_bwd(kind, &xg, &dyg).unwrap();
            check_bf16(
                dev,
                &format!("{name}_bwd"),
                &g,
                &ops::unary_bwd(kind, &x, &dy).unwrap(),
            );
        }
        let x = bf16_host(shape, 3.0, 0.0, 1900 + si as u64);
        let g = ops::affine(&on(&x, dev), 0.37, -1.25).unwrap();
        check_bf16(dev, "affine", &g, &ops::affine(&x, 0.37, -1.25).unwrap());
    }
    for (ci, (sa, sb)) in [
        (vec![7], vec![7]),
        (vec![4, 33, 65], vec![4, 33, 65]),
        (vec![3, 1, 5], vec![4, 5]),
        (vec![2, 3, 33], vec![33]),
        (vec![5, 1], vec![1, 9]),
    ]
    .iter()
    .enumerate()
    {
        let a = bf16_host(sa, 2.0, 0.0, 2000 + ci as u64);
        let b = bf16_host(sb, 0.5, 1.5, 2100 + ci as u64);
        let (ag, bg) = (on(&a, dev), on(&b, dev));
        for kind in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
            let g = ops::binary(kind, &ag, &bg).unwrap();
            let name = format!("{kind:?} {sa:?} {sb:?}");
            check_bf16(dev, &name, &g, &ops::binary(kind, &a, &b).unwrap());
        }
    }
}

test_device!(bf16_elementwise);

/// axpy and dropout on bf16 storage: the dropout scale bit-exact, the results within
/// [`BF16_TOL`](hr_tensor::testing::parity::BF16_TOL) of the CPU's bf16 results.
fn bf16_axpy_and_dropout(dev: Device) {
    for (i, shape) in [vec![1], vec![9, 13], vec![3, 1001], vec![1 << 17]]
        .iter()
        .enumerate()
    {
        let x = bf16_host(shape, 2.0, 0.0, 2530 + i as u64);
        let y = bf16_host(shape, 1.0, 0.5, 2540 + i as u64);
        let xg = on(&x, dev);
        let (mut yc, mut yg) = (y.clone(), on(&y, dev));
        ops::axpy(&mut yc, -0.75, &x).unwrap();
        ops::axpy(&mut yg, -0.75, &xg).unwrap();
        check_bf16(dev, &format!("axpy {shape:?}"), &yg, &yc);
        for (p, seed) in [(0.1, 7u64), (0.5, 0xdead_beef_1234), (0.0, 3)] {
            let (yd, sd) = ops::dropout(&xg, p, seed).unwrap();
            let (yh, sh) = ops::dropout(&x, p, seed).unwrap();
            check_bf16_exact(dev, &format!("dropout scale {shape:?} p={p}"), &sd, &sh);
            check_bf16(dev, &format!("dropout {shape:?} p={p}"), &yd, &yh);
        }
    }
}

test_device!(bf16_axpy_and_dropout);
