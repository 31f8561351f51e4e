//! Batch norm (PyTorch BatchNorm semantics): forward in train and eval mode against an f64
//! reference, running-statistic updates, gradient checks of dx / dgamma / dbeta, f32/f64
//! agreement and input validation.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): train / eval / backward and the
//! fused batch norm + activation on the device against the CPU backend
//! ([`hr_tensor::testing::parity`]).

use hr_tensor::ops::{self, batch_norm_bwd, batch_norm_eval, batch_norm_train};
use hr_tensor::testing::parity::{on, randn, uniform, Report};
use hr_tensor::testing::{assert_close, check_gradients, randn64};
use hr_tensor::{test_device, DType, Device, Error, Rng, Tensor, Unary};

const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// (N, C, *spatial) shapes: 4-D, 3-D, 2-D and one large enough for the parallel paths.
const SHAPES: &[&[usize]] = &[
    &[3, 4, 5, 7],
    &[2, 3, 7],
    &[5, 3],
    &[1, 2, 3, 1],
    &[4, 6, 40, 50],
];

struct Params {
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    rm: Tensor,
    rv: Tensor,
}

fn params(shape: &[usize], seed: u64) -> Params {
    let mut rng = Rng::new(seed);
    let c = shape[1];
    // An offset and scale per channel so that the statistics are not trivial.
    let x = randn64(shape, &mut rng);
    let x = per_channel(&x, |ch, v| v * (0.5 + ch as f64) + 3.0 - ch as f64);
    let rv: Vec<f64> = (0..c).map(|_| 0.5 + rng.uniform()).collect();
    Params {
        x,
        gamma: randn64(&[c], &mut rng),
        beta: randn64(&[c], &mut rng),
        rm: randn64(&[c], &mut rng),
        rv: Tensor::from_vec(rv, &[c]).unwrap(),
    }
}

/// Per-channel (mean, biased var) and `M` of an (N, C, *spatial) tensor.
fn channel_stats(x: &Tensor) -> (Vec<f64>, Vec<f64>, usize) {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let s: usize = x.shape()[2..].iter().product();
    let v = x.to_vec_f64().unwrap();
    let m = n * s;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| v[(i * c + ch) * s..(i * c + ch + 1) * s].iter().copied())
            .collect();
        mean[ch] = vals.iter().sum::<f64>() / m as f64;
        var[ch] = vals.iter().map(|x| (x - mean[ch]).powi(2)).sum::<f64>() / m as f64;
    }
    (mean, var, m)
}

/// `(x - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]`.
fn reference(x: &Tensor, mean: &[f64], var: &[f64], gamma: &Tensor, beta: &Tensor) -> Tensor {
    let (g, b) = (gamma.to_vec_f64().unwrap(), beta.to_vec_f64().unwrap());
    per_channel(x, |ch, v| {
        (v - mean[ch]) / (var[ch] + EPS).sqrt() * g[ch] + b[ch]
    })
}

/// `f(channel, value)` for every element of an (N, C, *spatial) tensor.
fn per_channel(x: &Tensor, f: impl Fn(usize, f64) -> f64) -> Tensor {
    let c = x.shape()[1];
    let s: usize = x.shape()[2..].iter().product();
    let v = x.to_vec_f64().unwrap();
    let y = v.iter().enumerate().map(|(i, &v)| f((i / s) % c, v));
    Tensor::from_vec(y.collect(), x.shape()).unwrap()
}

fn vec_tensor(v: Vec<f64>) -> Tensor {
    let n = v.len();
    Tensor::from_vec(v, &[n]).unwrap()
}

#[test]
fn train_forward_stats_and_running_update() {
    for (i, shape) in SHAPES.iter().enumerate() {
        let p = params(shape, 10 + i as u64);
        let (mut rm, mut rv) = (p.rm.clone(), p.rv.clone());
        let (y, stats) = batch_norm_train(
            &p.x, &p.gamma, &p.beta, &mut rm, &mut rv, MOMENTUM, EPS, None,
        )
        .unwrap();
        let (mean, var, m) = channel_stats(&p.x);
        let what = format!("{shape:?}");
        assert_close(
            &format!("{what} y"),
            &y,
            &reference(&p.x, &mean, &var, &p.gamma, &p.beta),
            1e-12,
        );
        assert_close(
            &format!("{what} mean"),
            &stats.mean,
            &vec_tensor(mean.clone()),
            1e-12,
        );
        let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        assert_close(
            &format!("{what} rstd"),
            &stats.rstd,
            &vec_tensor(rstd),
            1e-12,
        );
        // Running stats: momentum update with the unbiased variance.
        let (rm0, rv0) = (p.rm.to_vec_f64().unwrap(), p.rv.to_vec_f64().unwrap());
        let erm: Vec<f64> = rm0
            .iter()
            .zip(&mean)
            .map(|(r, m)| 0.9 * r + 0.1 * m)
            .collect();
        let erv: Vec<f64> = rv0
            .iter()
            .zip(&var)
            .map(|(r, v)| 0.9 * r + 0.1 * v * m as f64 / (m as f64 - 1.0))
            .collect();
        assert_close(
            &format!("{what} running_mean"),
            &rm,
            &vec_tensor(erm),
            1e-12,
        );
        assert_close(&format!("{what} running_var"), &rv, &vec_tensor(erv), 1e-12);
        // The inputs were not modified.
        assert_eq!(p.rm.to_vec_f64().unwrap(), rm0);
    }
}

#[test]
fn running_stats_converge_with_repeated_batches() {
    let p = params(&[4, 3, 6, 5], 77);
    let (mut rm, mut rv) = (p.rm.clone(), p.rv.clone());
    for _ in 0..200 {
        batch_norm_train(&p.x, &p.gamma, &p.beta, &mut rm, &mut rv, 0.1, EPS, None).unwrap();
    }
    let (mean, var, m) = channel_stats(&p.x);
    let unbiased: Vec<f64> = var
        .iter()
        .map(|v| v * m as f64 / (m as f64 - 1.0))
        .collect();
    assert_close("converged mean", &rm, &vec_tensor(mean), 1e-8);
    assert_close("converged var", &rv, &vec_tensor(unbiased), 1e-8);
    // momentum = 1 replaces the running stats outright, 0 leaves them alone.
    let (mut rm1, mut rv1) = (p.rm.clone(), p.rv.clone());
    batch_norm_train(&p.x, &p.gamma, &p.beta, &mut rm1, &mut rv1, 0.0, EPS, None).unwrap();
    assert_eq!(rm1.to_vec_f64().unwrap(), p.rm.to_vec_f64().unwrap());
    assert_eq!(rv1.to_vec_f64().unwrap(), p.rv.to_vec_f64().unwrap());
}

#[test]
fn eval_uses_running_stats() {
    for (i, shape) in SHAPES.iter().enumerate() {
        let p = params(shape, 20 + i as u64);
        let y = batch_norm_eval(&p.x, &p.gamma, &p.beta, &p.rm, &p.rv, EPS).unwrap();
        let r = reference(
            &p.x,
            &p.rm.to_vec_f64().unwrap(),
            &p.rv.to_vec_f64().unwrap(),
            &p.gamma,
            &p.beta,
        );
        assert_close(&format!("{shape:?} eval"), &y, &r, 1e-12);
    }
}

#[test]
fn gradients_dx_dgamma_dbeta() {
    for (i, shape) in SHAPES.iter().enumerate() {
        let p = params(shape, 30 + i as u64);
        let (rm, rv) = (p.rm.clone(), p.rv.clone());
        let fwd = |t: &[Tensor]| {
            let (mut rm, mut rv) = (rm.clone(), rv.clone());
            batch_norm_train(&t[0], &t[1], &t[2], &mut rm, &mut rv, MOMENTUM, EPS, None)
        };
        check_gradients(
            &format!("batch_norm {shape:?}"),
            &[p.x.clone(), p.gamma.clone(), p.beta.clone()],
            |t| Ok(fwd(t)?.0),
            |t, dy| {
                let (_, stats) = fwd(t)?;
                let g = batch_norm_bwd(&t[0], &t[1], &stats, dy, None)?;
                Ok(vec![Some(g.dx), Some(g.dgamma), Some(g.dbeta)])
            },
        );
    }
}

/// The fused batch norm + activation: forward identical to the two ops in sequence (f64 and
/// f32), gradients identical in f64 and within 1e-6 in f32 (the backward recomputes the
/// normalised value), finite-difference checks of dx / dgamma / dbeta through the kink.
#[test]
fn fused_activation_matches_the_unfused_ops() {
    for act in [Unary::Relu, Unary::Hardswish] {
        for (i, shape) in SHAPES.iter().enumerate() {
            let p = params(shape, 60 + i as u64);
            let dy = randn64(shape, &mut Rng::new(70 + i as u64));
            for dtype in [DType::F64, DType::F32] {
                let cv = |t: &Tensor| t.to_dtype(dtype).unwrap();
                let (x, g, b, dy) = (cv(&p.x), cv(&p.gamma), cv(&p.beta), cv(&dy));
                let (mut rm, mut rv) = (cv(&p.rm), cv(&p.rv));
                let (mut rm2, mut rv2) = (rm.clone(), rv.clone());
                let (z, st) =
                    batch_norm_train(&x, &g, &b, &mut rm, &mut rv, MOMENTUM, EPS, None).unwrap();
                let (y, st2) =
                    batch_norm_train(&x, &g, &b, &mut rm2, &mut rv2, MOMENTUM, EPS, Some(act))
                        .unwrap();
                let what = format!("{act:?} {shape:?} {dtype:?}");
                let want = ops::unary(act, &z).unwrap();
                assert_eq!(
                    y.to_vec_f64().unwrap(),
                    want.to_vec_f64().unwrap(),
                    "{what} y"
                );
                assert_eq!(
                    st2.rstd.to_vec_f64().unwrap(),
                    st.rstd.to_vec_f64().unwrap()
                );
                assert_eq!(
                    rv2.to_vec_f64().unwrap(),
                    rv.to_vec_f64().unwrap(),
                    "{what}"
                );
                let unfused =
                    batch_norm_bwd(&x, &g, &st, &ops::unary_bwd(act, &z, &dy).unwrap(), None)
                        .unwrap();
                let fused = batch_norm_bwd(&x, &g, &st2, &dy, Some((act, &b))).unwrap();
                for (w, a, b) in [
                    ("dx", &fused.dx, &unfused.dx),
                    ("dgamma", &fused.dgamma, &unfused.dgamma),
                    ("dbeta", &fused.dbeta, &unfused.dbeta),
                ] {
                    match dtype {
                        DType::F64 => assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap()),
                        _ => assert_close(&format!("{what} {w}"), a, b, 1e-6),
                    }
                }
            }
            let (rm, rv) = (p.rm.clone(), p.rv.clone());
            let fwd = |t: &[Tensor]| {
                let (mut rm, mut rv) = (rm.clone(), rv.clone());
                batch_norm_train(
                    &t[0],
                    &t[1],
                    &t[2],
                    &mut rm,
                    &mut rv,
                    MOMENTUM,
                    EPS,
                    Some(act),
                )
            };
            check_gradients(
                &format!("batch_norm + {act:?} {shape:?}"),
                &[p.x.clone(), p.gamma.clone(), p.beta.clone()],
                |t| Ok(fwd(t)?.0),
                |t, dy| {
                    let (_, stats) = fwd(t)?;
                    let g = batch_norm_bwd(&t[0], &t[1], &stats, dy, Some((act, &t[2])))?;
                    Ok(vec![Some(g.dx), Some(g.dgamma), Some(g.dbeta)])
                },
            );
        }
    }
}

#[test]
fn f32_agrees_with_f64() {
    for (i, shape) in SHAPES.iter().enumerate() {
        let p = params(shape, 40 + i as u64);
        let to32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let (mut rm, mut rv) = (p.rm.clone(), p.rv.clone());
        let (mut rm32, mut rv32) = (to32(&p.rm), to32(&p.rv));
        let (y, st) = batch_norm_train(
            &p.x, &p.gamma, &p.beta, &mut rm, &mut rv, MOMENTUM, EPS, None,
        )
        .unwrap();
        let (x32, g32, b32) = (to32(&p.x), to32(&p.gamma), to32(&p.beta));
        let (y32, st32) =
            batch_norm_train(&x32, &g32, &b32, &mut rm32, &mut rv32, MOMENTUM, EPS, None).unwrap();
        let what = format!("{shape:?} f32");
        assert_eq!(y32.dtype(), DType::F32);
        assert_eq!(st32.mean.dtype(), DType::F32);
        assert_close(&format!("{what} y"), &y32, &y, 1e-5);
        assert_close(&format!("{what} running_mean"), &rm32, &rm, 1e-5);
        assert_close(&format!("{what} running_var"), &rv32, &rv, 1e-5);
        let mut rng = Rng::new(i as u64);
        let dy = randn64(shape, &mut rng);
        let g = batch_norm_bwd(&p.x, &p.gamma, &st, &dy, None).unwrap();
        let g32 = batch_norm_bwd(&x32, &g32, &st32, &to32(&dy), None).unwrap();
        assert_close(&format!("{what} dx"), &g32.dx, &g.dx, 1e-4);
        assert_close(&format!("{what} dgamma"), &g32.dgamma, &g.dgamma, 1e-5);
        assert_close(&format!("{what} dbeta"), &g32.dbeta, &g.dbeta, 1e-5);
        let e = batch_norm_eval(&p.x, &p.gamma, &p.beta, &p.rm, &p.rv, EPS).unwrap();
        let e32 =
            batch_norm_eval(&x32, &to32(&p.gamma), &b32, &to32(&p.rm), &to32(&p.rv), EPS).unwrap();
        assert_close(&format!("{what} eval"), &e32, &e, 1e-5);
    }
}

#[test]
fn train_normalises_to_zero_mean_unit_variance() {
    let p = params(&[8, 5, 9, 11], 50);
    let c = 5;
    let one = Tensor::full(&[c], 1.0, DType::F64).unwrap();
    let zero = Tensor::full(&[c], 0.0, DType::F64).unwrap();
    let (mut rm, mut rv) = (p.rm.clone(), p.rv.clone());
    let (y, _) =
        batch_norm_train(&p.x, &one, &zero, &mut rm, &mut rv, MOMENTUM, 0.0, None).unwrap();
    let (mean, var, _) = channel_stats(&y);
    for ch in 0..c {
        assert!(mean[ch].abs() < 1e-12, "channel {ch} mean {}", mean[ch]);
        assert!(
            (var[ch] - 1.0).abs() < 1e-12,
            "channel {ch} var {}",
            var[ch]
        );
    }
}

fn expect_err<T: std::fmt::Debug>(r: hr_tensor::Result<T>, op: &str, has: &[&str]) {
    let msg = r.expect_err("expected an error").to_string();
    assert!(msg.starts_with(op), "error {msg:?} does not name {op}");
    for h in has {
        assert!(msg.contains(h), "error {msg:?} lacks {h:?}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let p = params(&[2, 3, 4, 5], 60);
    let (mut rm, mut rv) = (p.rm.clone(), p.rv.clone());
    let mut rng = Rng::new(61);
    let g4 = randn64(&[4], &mut rng);
    let xs = "[2, 3, 4, 5]";
    // Per-channel parameters of the wrong length.
    expect_err(
        batch_norm_train(&p.x, &g4, &p.beta, &mut rm, &mut rv, MOMENTUM, EPS, None),
        "batch_norm_train",
        &[xs, "[4]"],
    );
    let mut rm4 = g4.clone();
    expect_err(
        batch_norm_train(
            &p.x, &p.gamma, &p.beta, &mut rm4, &mut rv, MOMENTUM, EPS, None,
        ),
        "batch_norm_train",
        &[xs, "[4]"],
    );
    expect_err(
        batch_norm_eval(&p.x, &p.gamma, &p.beta, &p.rm, &g4, EPS),
        "batch_norm_eval",
        &[xs, "[4]"],
    );
    // Rank 1 input.
    let x1 = randn64(&[3], &mut rng);
    expect_err(
        batch_norm_train(
            &x1, &p.gamma, &p.beta, &mut rm, &mut rv, MOMENTUM, EPS, None,
        ),
        "batch_norm_train",
        &["[3]"],
    );
    // One value per channel cannot be normalised in training mode (fine in eval).
    let x11 = randn64(&[1, 3, 1, 1], &mut rng);
    expect_err(
        batch_norm_train(
            &x11, &p.gamma, &p.beta, &mut rm, &mut rv, MOMENTUM, EPS, None,
        ),
        "batch_norm_train",
        &["[1, 3, 1, 1]"],
    );
    assert!(batch_norm_eval(&x11, &p.gamma, &p.beta, &p.rm, &p.rv, EPS).is_ok());
    // Bad momentum / eps.
    for (mom, eps) in [
        (1.5, EPS),
        (-0.1, EPS),
        (f64::NAN, EPS),
        (MOMENTUM, -1.0),
        (MOMENTUM, f64::INFINITY),
    ] {
        assert!(
            batch_norm_train(&p.x, &p.gamma, &p.beta, &mut rm, &mut rv, mom, eps, None).is_err()
        );
    }
    // Dtype mismatch.
    let x32 = p.x.to_dtype(DType::F32).unwrap();
    expect_err(
        batch_norm_train(
            &x32, &p.gamma, &p.beta, &mut rm, &mut rv, MOMENTUM, EPS, None,
        ),
        "batch_norm_train",
        &["F32", "F64"],
    );
    // Backward: dy of another shape, stats of the wrong length, dtype mismatch.
    let (_, st) = batch_norm_train(
        &p.x, &p.gamma, &p.beta, &mut rm, &mut rv, MOMENTUM, EPS, None,
    )
    .unwrap();
    let dy = randn64(&[2, 3, 5, 4], &mut rng);
    expect_err(
        batch_norm_bwd(&p.x, &p.gamma, &st, &dy, None),
        "batch_norm_bwd",
        &[xs, "[2, 3, 5, 4]"],
    );
    let dy = randn64(&[2, 3, 4, 5], &mut rng);
    let bad = hr_tensor::NormStats {
        mean: g4.clone(),
        rstd: st.rstd.clone(),
    };
    expect_err(
        batch_norm_bwd(&p.x, &p.gamma, &bad, &dy, None),
        "batch_norm_bwd",
        &[xs, "[4]"],
    );
    expect_err(
        batch_norm_bwd(&p.x, &p.gamma, &st, &dy.to_dtype(DType::F32).unwrap(), None),
        "batch_norm_bwd",
        &["F32"],
    );
    // The running stats are untouched by failed calls.
    assert_eq!(rm.shape(), [3]);
}

fn batch_norm_train_eval_bwd(dev: Device) {
    let mut report = Report::new(dev);
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
        let (y, st) =
            ops::batch_norm_train(&x, &g, &b, &mut rm, &mut rv, momentum, 1e-3, None).unwrap();
        let name = |what: &str| format!("batch_norm {what} {shape:?} momentum {momentum}");
        let (yg, stg) =
            match ops::batch_norm_train(&xg, &gg, &bg, &mut rmg, &mut rvg, momentum, 1e-3, None) {
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
        let gr = ops::batch_norm_bwd(&x, &g, &st, &dy, None).unwrap();
        match ops::batch_norm_bwd(&xg, &gg, &stg, &dyg, None) {
            Ok(grg) => {
                report.check(&name("bwd dx"), Ok(grg.dx), &gr.dx);
                report.check(&name("bwd dgamma"), Ok(grg.dgamma), &gr.dgamma);
                report.check(&name("bwd dbeta"), Ok(grg.dbeta), &gr.dbeta);
            }
            Err(e) => report.check(&name("bwd"), Err(e), &gr.dx),
        }
        // The fused batch norm + activation against the CPU's fused op.
        for act in [Unary::Relu, Unary::Hardswish] {
            let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
            let (mut rmg, mut rvg) = (on(&rm0, dev), on(&rv0, dev));
            let (ya, sa) =
                ops::batch_norm_train(&x, &g, &b, &mut rm, &mut rv, momentum, 1e-3, Some(act))
                    .unwrap();
            let fused = |w: &str| name(&format!("{act:?} {w}"));
            let ga = ops::batch_norm_bwd(&x, &g, &sa, &dy, Some((act, &b))).unwrap();
            let got =
                ops::batch_norm_train(&xg, &gg, &bg, &mut rmg, &mut rvg, momentum, 1e-3, Some(act))
                    .and_then(|(yg, sg)| {
                        Ok((
                            yg,
                            ops::batch_norm_bwd(&xg, &gg, &sg, &dyg, Some((act, &bg)))?,
                        ))
                    });
            match got {
                Ok((yg, grg)) => {
                    report.check(&fused("train y"), Ok(yg), &ya);
                    report.check(&fused("running_var"), Ok(rvg), &rv);
                    report.check(&fused("bwd dx"), Ok(grg.dx), &ga.dx);
                    report.check(&fused("bwd dgamma"), Ok(grg.dgamma), &ga.dgamma);
                    report.check(&fused("bwd dbeta"), Ok(grg.dbeta), &ga.dbeta);
                }
                Err(e) => report.check(&fused("train"), Err(e), &ya),
            }
        }
    }
    // A single value per channel cannot be normalised in train mode: a typed error.
    let x = on(&randn(&[1, 3, 1, 1], 990), dev);
    let p = on(&randn(&[3], 991), dev);
    let (mut rm, mut rv) = (p.clone(), p.clone());
    let err = ops::batch_norm_train(&x, &p, &p, &mut rm, &mut rv, 0.1, 1e-3, None).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    println!("ok batch_norm_train on one value per channel: {err}");
    report.finish("batch_norm_train_eval_bwd");
}

test_device!(batch_norm_train_eval_bwd);
