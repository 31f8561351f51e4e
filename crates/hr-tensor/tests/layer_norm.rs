//! Layer norm and L2 normalisation (over the last axis) against straightforward references,
//! with gradient checks and bad-input errors. (Batch norm is tested separately.)
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): layer norm (with its
//! statistics), L2 normalize and their backwards on the device against the CPU backend, f32 and
//! bf16 storage ([`hr_tensor::testing::parity`]).

use hr_core::testing::assert_mentions;
use hr_tensor::ops::{self, l2_normalize, l2_normalize_bwd, layer_norm, layer_norm_bwd};
use hr_tensor::testing::parity::{bf16_host, check, check_bf16, on, randn, uniform};
use hr_tensor::testing::{assert_close, check_gradients, check_gradients_with, randn32, randn64};
use hr_tensor::{test_device, DType, Device, Rng, Tensor};

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// Reference layer norm in f64: `(y, mean, rstd)`.
fn ref_layer_norm(x: &[f64], g: &[f64], b: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let d = g.len();
    let (mut y, mut means, mut rstds) = (Vec::new(), Vec::new(), Vec::new());
    for row in x.chunks(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for j in 0..d {
            y.push((row[j] - mean) * rstd * g[j] + b[j]);
        }
        means.push(mean);
        rstds.push(rstd);
    }
    (y, means, rstds)
}

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn layer_norm_matches_reference() {
    let mut rng = Rng::new(1);
    let x = randn64(&[3, 5, 7], &mut rng);
    let g = randn64(&[7], &mut rng);
    let b = randn64(&[7], &mut rng);
    let (y, stats) = layer_norm(&x, &g, &b, 1e-5).unwrap();
    let (wy, wm, wr) = ref_layer_norm(&vals(&x), &vals(&g), &vals(&b), 1e-5);
    assert_eq!(y.shape(), &[3, 5, 7]);
    assert_eq!(stats.mean.shape(), &[3, 5]);
    assert_eq!(stats.rstd.shape(), &[3, 5]);
    close(&vals(&y), &wy, 1e-12, "y");
    close(&vals(&stats.mean), &wm, 1e-12, "mean");
    close(&vals(&stats.rstd), &wr, 1e-12, "rstd");

    // f32, large enough for the parallel path, with a constant row (variance 0).
    let mut xv = vals(&randn64(&[129, 301], &mut rng));
    xv[..301].iter_mut().for_each(|v| *v = 2.5);
    let x = Tensor::from_vec(xv.clone(), &[129, 301]).unwrap();
    let g = randn64(&[301], &mut rng);
    let b = randn64(&[301], &mut rng);
    let (wy, _, _) = ref_layer_norm(&xv, &vals(&g), &vals(&b), 1e-5);
    let (y, _) = layer_norm(
        &x.to_dtype(DType::F32).unwrap(),
        &g.to_dtype(DType::F32).unwrap(),
        &b.to_dtype(DType::F32).unwrap(),
        1e-5,
    )
    .unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_close(
        "layer_norm f32",
        &y,
        &Tensor::from_vec(wy, &[129, 301]).unwrap(),
        1e-5,
    );
}

fn ln_grad_check(shape: &[usize], eps: f64, checks: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let d = *shape.last().unwrap();
    let x = randn64(shape, &mut rng);
    let g = randn64(&[d], &mut rng);
    let b = randn64(&[d], &mut rng);
    check_gradients_with(
        "layer_norm",
        &[x, g, b],
        |xs| Ok(layer_norm(&xs[0], &xs[1], &xs[2], eps)?.0),
        |xs, dy| {
            let (_, stats) = layer_norm(&xs[0], &xs[1], &xs[2], eps)?;
            let gr = layer_norm_bwd(&xs[0], &xs[1], &stats, dy)?;
            Ok(vec![Some(gr.dx), Some(gr.dgamma), Some(gr.dbeta)])
        },
        1e-6,
        checks,
    );
}

#[test]
fn layer_norm_gradients() {
    ln_grad_check(&[3, 5, 7], 1e-5, 64, 2);
    ln_grad_check(&[1, 13], 1e-3, 64, 3);
    ln_grad_check(&[11, 1], 1e-5, 64, 4);
    // Parallel backward (blocked dgamma / dbeta reduction).
    ln_grad_check(&[131, 257], 1e-5, 24, 5);
}

/// Reference L2 normalisation: `(y, norms)`.
fn ref_l2(x: &[f64], d: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut n) = (Vec::new(), Vec::new());
    for row in x.chunks(d) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        y.extend(row.iter().map(|v| v / norm.max(eps)));
        n.push(norm);
    }
    (y, n)
}

/// Rows 0 and 2 are zero / tiny (their norm is below `eps`).
fn l2_input(shape: &[usize], rng: &mut Rng) -> Tensor {
    let d = *shape.last().unwrap();
    let mut v = vals(&randn64(shape, rng));
    v[..d].iter_mut().for_each(|x| *x = 0.0);
    v[2 * d..3 * d].iter_mut().for_each(|x| *x *= 1e-5);
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn l2_normalize_matches_reference() {
    let mut rng = Rng::new(6);
    let eps = 1e-3;
    let x = l2_input(&[2, 3, 9], &mut rng);
    let (y, n) = l2_normalize(&x, eps).unwrap();
    let (wy, wn) = ref_l2(&vals(&x), 9, eps);
    assert_eq!(n.shape(), &[2, 3]);
    close(&vals(&y), &wy, 1e-14, "y");
    close(&vals(&n), &wn, 1e-14, "norms");
    assert!(vals(&y)[..9].iter().all(|&v| v == 0.0));

    let x = randn32(&[200, 300], &mut rng);
    let (y, _) = l2_normalize(&x, 1e-12).unwrap();
    let (wy, _) = ref_l2(&vals(&x), 300, 1e-12);
    assert_close(
        "l2 f32",
        &y,
        &Tensor::from_vec(wy, &[200, 300]).unwrap(),
        1e-6,
    );
}

#[test]
fn l2_normalize_gradients() {
    let mut rng = Rng::new(7);
    for (shape, eps) in [
        (vec![2usize, 3, 9], 1e-3),
        (vec![5, 1], 1e-3),
        (vec![4, 7], 1e-12),
    ] {
        let x = if shape == [4, 7] {
            randn64(&shape, &mut rng)
        } else {
            l2_input(&shape, &mut rng)
        };
        check_gradients(
            "l2_normalize",
            &[x],
            |xs| Ok(l2_normalize(&xs[0], eps)?.0),
            |xs, dy| {
                let (y, n) = l2_normalize(&xs[0], eps)?;
                Ok(vec![Some(l2_normalize_bwd(&y, &n, dy, eps)?)])
            },
        );
    }
}

#[test]
fn bad_inputs_are_reported() {
    let mut rng = Rng::new(8);
    let x = randn64(&[4, 6], &mut rng);
    let g5 = randn64(&[5], &mut rng);
    let g6 = randn64(&[6], &mut rng);
    let e = layer_norm(&x, &g5, &g6, 1e-5).unwrap_err().to_string();
    assert_mentions(&e, &["layer_norm", "[4, 6]", "[5]"]);
    let e = layer_norm(&x, &g6, &g5, 1e-5).unwrap_err().to_string();
    assert!(e.contains("layer_norm") && e.contains("[5]"), "{e}");
    let g32 = randn32(&[6], &mut rng);
    let e = layer_norm(&x, &g32, &g6, 1e-5).unwrap_err().to_string();
    assert_mentions(&e, &["layer_norm", "F64", "F32"]);
    assert!(layer_norm(&x, &g6, &g6, -1.0).is_err());

    let (_, stats) = layer_norm(&x, &g6, &g6, 1e-5).unwrap();
    let dy = randn64(&[4, 5], &mut rng);
    let e = layer_norm_bwd(&x, &g6, &stats, &dy)
        .unwrap_err()
        .to_string();
    assert_mentions(&e, &["layer_norm_bwd", "[4, 6]", "[4, 5]"]);

    let (y, n) = l2_normalize(&x, 1e-12).unwrap();
    let e = l2_normalize_bwd(&y, &n, &dy, 1e-12)
        .unwrap_err()
        .to_string();
    assert_mentions(&e, &["l2_normalize_bwd", "[4, 6]", "[4, 5]"]);
    let dy32 = randn32(&[4, 6], &mut rng);
    let e = l2_normalize_bwd(&y, &n, &dy32, 1e-12)
        .unwrap_err()
        .to_string();
    assert!(e.contains("F64") && e.contains("F32"), "{e}");
    assert!(l2_normalize(&x, 0.0).is_err());
    assert!(l2_normalize(&Tensor::from_vec(vec![1.0f64], &[]).unwrap(), 1e-12).is_err());
}

fn layer_norm_and_l2_normalize(dev: Device) {
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
        check(dev, "layer_norm", &yg, &y);
        check(dev, "layer_norm mean", &stg.mean, &st.mean);
        check(dev, "layer_norm rstd", &stg.rstd, &st.rstd);
        let gr = ops::layer_norm_bwd(&x, &g, &st, &dy).unwrap();
        let grg = ops::layer_norm_bwd(&xg, &gg, &stg, &dyg).unwrap();
        check(dev, "layer_norm_bwd dx", &grg.dx, &gr.dx);
        check(dev, "layer_norm_bwd dgamma", &grg.dgamma, &gr.dgamma);
        check(dev, "layer_norm_bwd dbeta", &grg.dbeta, &gr.dbeta);

        // L2 normalise, with one all-zero row (the eps branch of the backward).
        let mut xv = x.to_vec_f32().unwrap();
        xv[..d].iter_mut().for_each(|v| *v = 0.0);
        let x0 = Tensor::from_vec(xv, shape).unwrap();
        let (y, n) = ops::l2_normalize(&x0, 1e-12).unwrap();
        let (yg, ng) = ops::l2_normalize(&on(&x0, dev), 1e-12).unwrap();
        check(dev, "l2_normalize", &yg, &y);
        check(dev, "l2_normalize norms", &ng, &n);
        check(
            dev,
            "l2_normalize_bwd",
            &ops::l2_normalize_bwd(&yg, &ng, &dyg, 1e-12).unwrap(),
            &ops::l2_normalize_bwd(&y, &n, &dy, 1e-12).unwrap(),
        );
    }
}

test_device!(layer_norm_and_l2_normalize);

/// layer_norm (f32 statistics) and layer_norm_bwd on bf16.
fn bf16_layer_norm(dev: Device) {
    for (i, shape) in [vec![1, 1], vec![3, 5, 7], vec![97, 768], vec![2, 3, 1025]]
        .iter()
        .enumerate()
    {
        let seed = 2300 + i as u64 * 10;
        let d = *shape.last().unwrap();
        let x = bf16_host(shape, 2.0, 0.5, seed);
        let g = bf16_host(&[d], 0.25, 1.0, seed + 1);
        let b = bf16_host(&[d], 1.0, 0.0, seed + 2);
        let dy = bf16_host(shape, 1.0, 0.0, seed + 3);
        let (xg, gg, bg, dyg) = (on(&x, dev), on(&g, dev), on(&b, dev), on(&dy, dev));
        let name = format!("layer_norm {shape:?}");
        let (y, st) = ops::layer_norm(&x, &g, &b, 1e-5).unwrap();
        let (yg, stg) = ops::layer_norm(&xg, &gg, &bg, 1e-5).unwrap();
        check_bf16(dev, &name, &yg, &y);
        assert_eq!(
            stg.mean.dtype(),
            hr_tensor::DType::F32,
            "{name}: f32 statistics"
        );
        check(dev, &format!("{name} mean f32"), &stg.mean, &st.mean);
        check(dev, &format!("{name} rstd f32"), &stg.rstd, &st.rstd);
        let gr = ops::layer_norm_bwd(&x, &g, &st, &dy).unwrap();
        let grg = ops::layer_norm_bwd(&xg, &gg, &stg, &dyg).unwrap();
        check_bf16(dev, &format!("{name} bwd dx"), &grg.dx, &gr.dx);
        check_bf16(dev, &format!("{name} bwd dgamma"), &grg.dgamma, &gr.dgamma);
        check_bf16(dev, &format!("{name} bwd dbeta"), &grg.dbeta, &gr.dbeta);
    }
}

test_device!(bf16_layer_norm);
