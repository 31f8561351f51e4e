//! Softmax (with key-padding masks), log-softmax, NLL and cross-entropy against straightforward
//! references, with gradient checks and bad-input errors.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): softmax (masked), its backward,
//! log-softmax and NLL on the device against the CPU backend, f32 and bf16 storage
//! ([`hr_tensor::testing::parity`]).

use hr_core::testing::assert_mentions;
use hr_tensor::ops::{
    self, cross_entropy, cross_entropy_bwd, log_softmax, log_softmax_bwd, nll_loss, nll_loss_bwd,
    softmax, softmax_bwd,
};
use hr_tensor::testing::parity::{bf16_host, check, check_bf16, key_padding_mask, on, randn};
use hr_tensor::testing::{assert_close, check_gradients, check_gradients_with, randn32, randn64};
use hr_tensor::{test_device, DType, Device, Error, Rng, Tensor};

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// Reference softmax of each row of `k`, with an optional keep-vector per row.
fn ref_softmax(x: &[f64], k: usize, keep: impl Fn(usize, usize) -> bool) -> Vec<f64> {
    let mut y = Vec::new();
    for (r, row) in x.chunks(k).enumerate() {
        let exps: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(j, &v)| if keep(r, j) { v.exp() } else { 0.0 })
            .collect();
        let s: f64 = exps.iter().sum();
        y.extend(exps.iter().map(|e| if s > 0.0 { e / s } else { 0.0 }));
    }
    y
}

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

/// A (3, 6) key-padding mask: batch 0 keeps 4 keys, batch 1 all, batch 2 none.
fn mask_3x6(dtype: DType) -> Tensor {
    let m: Vec<f64> = [[1.0, 1.0, 1.0, 1.0, 0.0, 0.0], [1.0; 6], [0.0; 6]].concat();
    Tensor::from_vec(m, &[3, 6])
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn keep_3x6(b: usize, j: usize) -> bool {
    match b {
        0 => j < 4,
        1 => true,
        _ => false,
    }
}

#[test]
fn softmax_matches_reference() {
    let mut rng = Rng::new(1);
    let x = randn64(&[2, 3, 5], &mut rng);
    let y = softmax(&x, None).unwrap();
    close(
        &vals(&y),
        &ref_softmax(&vals(&x), 5, |_, _| true),
        1e-15,
        "softmax",
    );

    // Large logits: max subtraction keeps it finite; f32 and the parallel path.
    let xv: Vec<f64> = vals(&randn64(&[128, 513], &mut rng))
        .iter()
        .map(|v| v * 30.0 + 1000.0)
        .collect();
    let x = Tensor::from_vec(xv.clone(), &[128, 513]).unwrap();
    let shifted: Vec<f64> = xv.iter().map(|v| v - 1000.0).collect();
    let want = Tensor::from_vec(ref_softmax(&shifted, 513, |_, _| true), &[128, 513]).unwrap();
    let y = softmax(&x.to_dtype(DType::F32).unwrap(), None).unwrap();
    assert!(vals(&y).iter().all(|v| v.is_finite()));
    assert_close("softmax f32 large logits", &y, &want, 1e-4);
    let y = softmax(&x, None).unwrap();
    assert_close("softmax f64 large logits", &y, &want, 1e-12);
}

#[test]
fn masked_softmax_zeroes_padding_and_fully_masked_rows() {
    let mut rng = Rng::new(2);
    for dtype in [DType::F64, DType::F32] {
        // x viewed as (B=3, R=4, K=6).
        let x = randn64(&[3, 4, 6], &mut rng).to_dtype(dtype).unwrap();
        let y = softmax(&x, Some(&mask_3x6(dtype))).unwrap();
        let want = ref_softmax(&vals(&x), 6, |r, j| keep_3x6(r / 4, j));
        let yv = vals(&y);
        close(&yv, &want, 1e-6, "masked softmax");
        for r in 0..12 {
            for j in 0..6 {
                if !keep_3x6(r / 4, j) {
                    assert_eq!(yv[r * 6 + j], 0.0, "row {r} key {j}");
                }
            }
        }
        assert!(
            yv[8 * 6..].iter().all(|&v| v == 0.0),
            "fully masked rows are zero"
        );
        assert!(yv.iter().all(|v| v.is_finite()));

        // (B, H, T, K) attention scores and (B, K) rank-2 input.
        let x = randn64(&[3, 2, 5, 6], &mut rng).to_dtype(dtype).unwrap();
        let y = softmax(&x, Some(&mask_3x6(dtype))).unwrap();
        close(
            &vals(&y),
            &ref_softmax(&vals(&x), 6, |r, j| keep_3x6(r / 10, j)),
            1e-6,
            "bhtk",
        );
        let x = randn64(&[3, 6], &mut rng).to_dtype(dtype).unwrap();
        let y = softmax(&x, Some(&mask_3x6(dtype))).unwrap();
        close(&vals(&y), &ref_softmax(&vals(&x), 6, keep_3x6), 1e-6, "bk");
    }
    // Masked entries may hold -inf or huge values without effect.
    let mut xv = vals(&randn64(&[3, 6], &mut rng));
    xv[4] = f64::NEG_INFINITY;
    xv[5] = 1e300;
    let y = softmax(
        &Tensor::from_vec(xv.clone(), &[3, 6]).unwrap(),
        Some(&mask_3x6(DType::F64)),
    );
    close(
        &vals(&y.unwrap()),
        &ref_softmax(&xv, 6, keep_3x6),
        1e-15,
        "inf under mask",
    );
}

#[test]
fn softmax_gradients() {
    let mut rng = Rng::new(3);
    let x = randn64(&[2, 3, 7], &mut rng);
    check_gradients(
        "softmax",
        &[x],
        |xs| softmax(&xs[0], None),
        |xs, dy| Ok(vec![Some(softmax_bwd(&softmax(&xs[0], None)?, dy)?)]),
    );
    // Padded keys and a fully masked batch entry.
    let x = randn64(&[3, 5, 6], &mut rng);
    let m = mask_3x6(DType::F64);
    check_gradients_with(
        "masked softmax",
        &[x],
        |xs| softmax(&xs[0], Some(&m)),
        |xs, dy| Ok(vec![Some(softmax_bwd(&softmax(&xs[0], Some(&m))?, dy)?)]),
        1e-6,
        128,
    );
}

#[test]
fn log_softmax_matches_reference_and_gradients() {
    let mut rng = Rng::new(4);
    let x = randn64(&[5, 9], &mut rng);
    let y = log_softmax(&x).unwrap();
    let want: Vec<f64> = ref_softmax(&vals(&x), 9, |_, _| true)
        .iter()
        .map(|p| p.ln())
        .collect();
    close(&vals(&y), &want, 1e-14, "log_softmax");
    // Large logits stay finite.
    let big = Tensor::from_vec(vec![1000.0f32, 0.0, -1000.0], &[1, 3]).unwrap();
    let y = vals(&log_softmax(&big).unwrap());
    assert!(y[0].abs() < 1e-6 && (y[1] + 1000.0).abs() < 1e-3 && (y[2] + 2000.0).abs() < 1e-3);

    let x = randn64(&[3, 4, 7], &mut rng);
    check_gradients(
        "log_softmax",
        &[x],
        |xs| log_softmax(&xs[0]),
        |xs, dy| Ok(vec![Some(log_softmax_bwd(&log_softmax(&xs[0])?, dy)?)]),
    );
}

#[test]
fn cross_entropy_matches_reference_and_gradients() {
    let mut rng = Rng::new(5);
    let x = randn64(&[2, 3, 11], &mut rng);
    let targets = [0u32, 10, 5, 5, 1, 7];
    let (loss, logp) = cross_entropy(&x, &targets).unwrap();
    assert_eq!(loss.shape(), &[] as &[usize]);
    assert_eq!(logp.shape(), &[2, 3, 11]);
    let xv = vals(&x);
    let want: f64 = xv
        .chunks(11)
        .zip(&targets)
        .map(|(row, &t)| {
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            lse - row[t as usize]
        })
        .sum::<f64>()
        / 6.0;
    assert!((loss.scalar_f64().unwrap() - want).abs() < 1e-14);

    check_gradients(
        "cross_entropy",
        std::slice::from_ref(&x),
        |xs| Ok(cross_entropy(&xs[0], &targets)?.0),
        |xs, dy| {
            let (_, logp) = cross_entropy(&xs[0], &targets)?;
            Ok(vec![Some(cross_entropy_bwd(
                &logp,
                &targets,
                dy.scalar_f64()?,
            )?)])
        },
    );
    check_gradients(
        "nll_loss",
        &[logp],
        |xs| nll_loss(&xs[0], &targets),
        |xs, dy| {
            Ok(vec![Some(nll_loss_bwd(
                &xs[0],
                &targets,
                dy.scalar_f64()?,
            )?)])
        },
    );

    // f32 agrees with f64.
    let (l32, _) = cross_entropy(&x.to_dtype(DType::F32).unwrap(), &targets).unwrap();
    assert!((l32.scalar_f64().unwrap() - want).abs() < 1e-5);
}

#[test]
fn bad_inputs_are_reported() {
    let mut rng = Rng::new(6);
    let x = randn64(&[4, 5], &mut rng);
    let e = cross_entropy(&x, &[0, 1, 5, 2]).unwrap_err().to_string();
    assert_mentions(&e, &["cross_entropy", "target 5", "row 2"]);
    let e = nll_loss(&x, &[0, 1, 2, 9]).unwrap_err().to_string();
    assert_mentions(&e, &["nll_loss", "target 9", "row 3"]);
    assert!(cross_entropy(&x, &[0, 1]).is_err());
    assert!(cross_entropy_bwd(&x, &[0, 1, 2, 7], 1.0).is_err());

    let x3 = randn64(&[3, 4, 6], &mut rng);
    let bad_mask = Tensor::full(&[3, 5], 1.0, DType::F64).unwrap();
    let e = softmax(&x3, Some(&bad_mask)).unwrap_err().to_string();
    assert_mentions(&e, &["softmax", "[3, 4, 6]", "[3, 5]"]);
    let bad_mask = Tensor::full(&[2, 6], 1.0, DType::F64).unwrap();
    assert!(softmax(&x3, Some(&bad_mask)).is_err());
    let e = softmax(&x3, Some(&mask_3x6(DType::F32)))
        .unwrap_err()
        .to_string();
    assert_mentions(&e, &["softmax", "F64", "F32"]);

    let y = softmax(&x, None).unwrap();
    let dy = randn64(&[4, 6], &mut rng);
    let e = softmax_bwd(&y, &dy).unwrap_err().to_string();
    assert_mentions(&e, &["softmax_bwd", "[4, 5]", "[4, 6]"]);
    let dy32 = randn32(&[4, 5], &mut rng);
    let e = log_softmax_bwd(&y, &dy32).unwrap_err().to_string();
    assert_mentions(&e, &["log_softmax_bwd", "F64", "F32"]);
    assert!(softmax(&Tensor::from_vec(vec![1.0f64], &[]).unwrap(), None).is_err());
}

fn softmax_family(dev: Device) {
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
        let mask = key_padding_mask(b, k, seed + 2);
        let maskg = on(&mask, dev);

        let y = ops::softmax(&x, None).unwrap();
        check(dev, "softmax", &ops::softmax(&xg, None).unwrap(), &y);
        let ym = ops::softmax(&x, Some(&mask)).unwrap();
        let ymg = ops::softmax(&xg, Some(&maskg)).unwrap();
        check(dev, "softmax masked", &ymg, &ym);
        check(
            dev,
            "softmax_bwd",
            &ops::softmax_bwd(&on(&ym, dev), &dyg).unwrap(),
            &ops::softmax_bwd(&ym, &dy).unwrap(),
        );
        let lp = ops::log_softmax(&x).unwrap();
        check(dev, "log_softmax", &ops::log_softmax(&xg).unwrap(), &lp);
        check(
            dev,
            "log_softmax_bwd",
            &ops::log_softmax_bwd(&on(&lp, dev), &dyg).unwrap(),
            &ops::log_softmax_bwd(&lp, &dy).unwrap(),
        );
        let rows = b * r;
        let lp2 = lp.reshape(&[rows, k]).unwrap();
        let mut rng = Rng::new(seed + 3);
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(k) as u32).collect();
        let lp2g = on(&lp2, dev);
        check(
            dev,
            "nll_loss",
            &ops::nll_loss(&lp2g, &targets).unwrap(),
            &ops::nll_loss(&lp2, &targets).unwrap(),
        );
        check(
            dev,
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

test_device!(softmax_family);

/// softmax (plain and with a bf16 mask; warp and block kernels) and softmax_bwd on bf16.
fn bf16_softmax(dev: Device) {
    for (i, &(b, r, k)) in [(1, 1, 1), (2, 3, 7), (2, 3, 33), (3, 12, 97), (4, 2, 1031)]
        .iter()
        .enumerate()
    {
        let seed = 2200 + i as u64 * 10;
        let x = bf16_host(&[b, r, k], 3.0, 0.0, seed);
        let dy = bf16_host(&[b, r, k], 1.0, 0.0, seed + 1);
        let mut rng = Rng::new(seed + 2);
        let mut mv: Vec<f32> = (0..b * k)
            .map(|_| if rng.uniform() < 0.7 { 1.0 } else { 0.0 })
            .collect();
        mv[0] = 1.0;
        if b > 1 {
            mv[(b - 1) * k..].iter_mut().for_each(|v| *v = 0.0);
        }
        let mask = Tensor::from_vec(mv, &[b, k])
            .and_then(|m| m.to_dtype(hr_tensor::DType::BF16))
            .unwrap();
        let (xg, dyg, mg) = (on(&x, dev), on(&dy, dev), on(&mask, dev));
        let name = format!("softmax ({b}, {r}, {k})");
        let y = ops::softmax(&x, None).unwrap();
        check_bf16(dev, &name, &ops::softmax(&xg, None).unwrap(), &y);
        let ym = ops::softmax(&x, Some(&mask)).unwrap();
        let g = ops::softmax(&xg, Some(&mg)).unwrap();
        check_bf16(dev, &format!("{name} masked"), &g, &ym);
        let g = ops::softmax_bwd(&on(&ym, dev), &dyg).unwrap();
        let c = ops::softmax_bwd(&ym, &dy).unwrap();
        check_bf16(dev, &format!("{name} bwd"), &g, &c);
    }
}

test_device!(bf16_softmax);
