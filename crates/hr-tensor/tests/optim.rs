//! Fused Adam/AdamW against a straightforward scalar re-implementation of PyTorch's update,
//! over several steps, with and without decoupled weight decay; bad-input errors.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): Adam / AdamW and the
//! multi-tensor update on the device against the CPU backend ([`hr_tensor::testing::parity`]).

use hr_core::testing::assert_mentions;
use hr_tensor::ops::{self, adam_step, adam_step_multi};
use hr_tensor::testing::parity::{check, check_tol, on, randn, uniform};
use hr_tensor::testing::{randn32, randn64};
use hr_tensor::{test_device, AdamStep, DType, Device, Rng, Tensor};

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// PyTorch's Adam/AdamW (single tensor, not amsgrad, not maximize) for one scalar.
fn ref_adam(p: &mut f64, g: f64, m: &mut f64, v: &mut f64, hp: &AdamStep) {
    *p -= hp.lr * hp.weight_decay * *p;
    *m = hp.beta1 * *m + (1.0 - hp.beta1) * g;
    *v = hp.beta2 * *v + (1.0 - hp.beta2) * g * g;
    let t = hp.step as i32;
    let m_hat = *m / (1.0 - hp.beta1.powi(t));
    let v_hat = *v / (1.0 - hp.beta2.powi(t));
    *p -= hp.lr * (m_hat / (v_hat.sqrt() + hp.eps));
}

fn run(shape: &[usize], dtype: DType, weight_decay: f64, steps: u64, tol: f64) {
    let mut rng = Rng::new(42 + steps);
    let mut p = randn64(shape, &mut rng).to_dtype(dtype).unwrap();
    let mut m = Tensor::zeros(shape, dtype, hr_tensor::Device::Cpu).unwrap();
    let mut v = m.clone();
    let (mut rp, mut rm, mut rv) = (vals(&p), vals(&m), vals(&v));
    for step in 1..=steps {
        let g = randn64(shape, &mut rng).to_dtype(dtype).unwrap();
        let hp = AdamStep::new(1e-2, weight_decay, step);
        adam_step(&mut p, &g, &mut m, &mut v, &hp).unwrap();
        for (i, gv) in vals(&g).into_iter().enumerate() {
            ref_adam(&mut rp[i], gv, &mut rm[i], &mut rv[i], &hp);
        }
    }
    for (what, got, want) in [("param", &p, &rp), ("m", &m, &rm), ("v", &v, &rv)] {
        for (i, (a, b)) in vals(got).iter().zip(want.iter()).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what}[{i}] wd={weight_decay} {dtype:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn adam_matches_scalar_reference() {
    run(&[3, 7], DType::F64, 0.0, 6, 1e-12);
    run(&[3, 7], DType::F32, 0.0, 6, 1e-5);
}

#[test]
fn adamw_matches_scalar_reference() {
    run(&[5, 3, 2], DType::F64, 0.1, 7, 1e-12);
    run(&[5, 3, 2], DType::F32, 0.1, 7, 1e-5);
    // Large enough for the parallel path.
    run(&[257, 131], DType::F64, 0.01, 3, 1e-12);
}

#[test]
fn bad_inputs_are_reported() {
    let mut rng = Rng::new(1);
    let hp = AdamStep::new(1e-3, 0.0, 1);
    let mut p = randn64(&[4, 3], &mut rng);
    let mut m = randn64(&[4, 3], &mut rng);
    let mut v = randn64(&[4, 3], &mut rng);
    let g_bad = randn64(&[3, 4], &mut rng);
    let e = adam_step(&mut p, &g_bad, &mut m, &mut v, &hp)
        .unwrap_err()
        .to_string();
    assert_mentions(&e, &["adam_step", "[4, 3]", "[3, 4]"]);
    let g32 = randn32(&[4, 3], &mut rng);
    let e = adam_step(&mut p, &g32, &mut m, &mut v, &hp)
        .unwrap_err()
        .to_string();
    assert_mentions(&e, &["adam_step", "F64", "F32"]);
    let g = randn64(&[4, 3], &mut rng);
    let mut v_bad = randn64(&[12], &mut rng);
    let e = adam_step(&mut p, &g, &mut m, &mut v_bad, &hp)
        .unwrap_err()
        .to_string();
    assert!(e.contains("adam_step") && e.contains("[12]"), "{e}");
    let before = vals(&p);
    for bad in [
        AdamStep { step: 0, ..hp },
        AdamStep { beta1: 1.0, ..hp },
        AdamStep { beta2: -0.1, ..hp },
        AdamStep { lr: f64::NAN, ..hp },
        AdamStep { eps: -1.0, ..hp },
    ] {
        assert!(
            adam_step(&mut p, &g, &mut m, &mut v, &bad).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        vals(&p),
        before,
        "failed steps leave the parameter untouched"
    );
}

/// The list form gives each tensor exactly the single-tensor update, and checks its lists.
#[test]
fn adam_multi_matches_one_update_per_tensor() {
    let mut rng = Rng::new(5);
    let shapes: [&[usize]; 4] = [&[3, 4], &[0], &[17], &[2, 3, 5]];
    let mk = |rng: &mut Rng| -> Vec<Tensor> { shapes.iter().map(|s| randn32(s, rng)).collect() };
    let (p, g, m) = (mk(&mut rng), mk(&mut rng), mk(&mut rng));
    let v: Vec<Tensor> = mk(&mut rng)
        .iter()
        .map(|t| hr_tensor::ops::mul(t, t).unwrap())
        .collect();
    let hp = AdamStep::new(1e-2, 0.1, 3);
    let (mut p1, mut m1, mut v1) = (p.clone(), m.clone(), v.clone());
    for i in 0..shapes.len() {
        adam_step(&mut p1[i], &g[i], &mut m1[i], &mut v1[i], &hp).unwrap();
    }
    let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
    adam_step_multi(&mut p2, &g, &mut m2, &mut v2, &hp).unwrap();
    for (a, b) in p1
        .iter()
        .chain(&m1)
        .chain(&v1)
        .zip(p2.iter().chain(&m2).chain(&v2))
    {
        assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    }
    // Lists of different lengths, a mis-shaped member, bad hyper-parameters: errors.
    assert!(adam_step_multi(&mut p2, &g[..3], &mut m2, &mut v2, &hp).is_err());
    let mut bad_m = m.clone();
    bad_m.swap(0, 2);
    assert!(adam_step_multi(&mut p2, &g, &mut bad_m, &mut v2, &hp).is_err());
    let hp0 = AdamStep { step: 0, ..hp };
    assert!(adam_step_multi(&mut p2, &g, &mut m2, &mut v2, &hp0).is_err());
    // An empty list is a no-op.
    adam_step_multi(&mut [], &[], &mut [], &mut [], &hp).unwrap();
}

fn adam_and_adamw(dev: Device) {
    for (i, (n, wd, step)) in [(1usize, 0.0, 1u64), (1001, 0.01, 3), (1_000_003, 0.1, 1000)]
        .into_iter()
        .enumerate()
    {
        let seed = 600 + i as u64 * 10;
        let p = randn(&[n], seed);
        let g = randn(&[n], seed + 1);
        let m = ops::affine(&randn(&[n], seed + 2), 0.1, 0.0).unwrap();
        let v = uniform(&[n], 0.0, 0.01, seed + 3);
        let hp = AdamStep::new(1e-3, wd, step);
        let (mut pc, mut mc, mut vc) = (p.clone(), m.clone(), v.clone());
        ops::adam_step(&mut pc, &g, &mut mc, &mut vc, &hp).unwrap();
        let (mut pg, mut mg, mut vg) = (on(&p, dev), on(&m, dev), on(&v, dev));
        ops::adam_step(&mut pg, &on(&g, dev), &mut mg, &mut vg, &hp).unwrap();
        check(dev, "adam param", &pg, &pc);
        check(dev, "adam m", &mg, &mc);
        check(dev, "adam v", &vg, &vc);
        // The update itself (p_new - p) must match too, not just p.
        let dp_g = ops::sub(&pg, &on(&p, dev)).unwrap();
        let dp_c = ops::sub(&pc, &p).unwrap();
        check_tol(dev, "adam update", &dp_g, &dp_c, 1e-4);
    }
}

test_device!(adam_and_adamw);

/// The multi-tensor update (one launch for a list) against the CPU's per-tensor updates, bit
/// for bit: odd sizes, an empty tensor, one spanning several 65536-element chunks, moments
/// sharing one buffer (copied on write), float4 and scalar tails.
fn adam_multi_tensor(dev: Device) {
    let sizes = [1usize, 0, 1001, 3 * 65536 + 7, 64, 65536, 13];
    let hp = AdamStep::new(1e-3, 0.01, 7);
    let make = |k: u64| -> Vec<Tensor> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| randn(&[n], 800 + 10 * i as u64 + k))
            .collect()
    };
    let (p, g) = (make(0), make(1));
    let m: Vec<Tensor> = make(2)
        .iter()
        .map(|t| ops::affine(t, 0.1, 0.0).unwrap())
        .collect();
    let v: Vec<Tensor> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| uniform(&[n], 0.0, 0.01, 900 + i as u64))
        .collect();
    let (mut pc, mut mc, mut vc) = (p.clone(), m.clone(), v.clone());
    for i in 0..sizes.len() {
        ops::adam_step(&mut pc[i], &g[i], &mut mc[i], &mut vc[i], &hp).unwrap();
    }
    let up = |ts: &[Tensor]| -> Vec<Tensor> { ts.iter().map(|t| on(t, dev)).collect() };
    let (mut pg, gg, mut mg) = (up(&p), up(&g), up(&m));
    // The second moments of the last two tensors start as one shared zero buffer on both
    // sides (like fresh optimizer state), so copy-on-write is exercised.
    let mut vg = up(&v);
    let z = on(&Tensor::zeros(&[13], DType::F32, Device::Cpu).unwrap(), dev);
    let last = sizes.len() - 1;
    vg[last] = z.clone();
    mg[last] = z;
    let zc = Tensor::zeros(&[13], DType::F32, Device::Cpu).unwrap();
    let (mut pz, mut mz, mut vz) = (p[last].clone(), zc.clone(), zc);
    ops::adam_step(&mut pz, &g[last], &mut mz, &mut vz, &hp).unwrap();
    (pc[last], mc[last], vc[last]) = (pz, mz, vz);
    ops::adam_step_multi(&mut pg, &gg, &mut mg, &mut vg, &hp).unwrap();
    for i in 0..sizes.len() {
        for (what, got, want) in [
            ("param", &pg[i], &pc[i]),
            ("m", &mg[i], &mc[i]),
            ("v", &vg[i], &vc[i]),
        ] {
            let (a, b) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
            let bad = a
                .iter()
                .zip(&b)
                .position(|(x, y)| x.to_bits() != y.to_bits());
            assert!(
                bad.is_none(),
                "adam multi {what} #{i} ({} elements): element {bad:?} differs",
                sizes[i]
            );
        }
    }
    println!(
        "ok adam_step_multi: {} tensors bit-identical to the CPU",
        sizes.len()
    );
}

test_device!(adam_multi_tensor);
