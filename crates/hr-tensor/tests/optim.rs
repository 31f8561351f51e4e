//! Fused Adam/AdamW against a straightforward scalar re-implementation of PyTorch's update,
//! over several steps, with and without decoupled weight decay; bad-input errors.

use hr_tensor::ops::{adam_step, adam_step_multi};
use hr_tensor::testing::{randn32, randn64};
use hr_tensor::{AdamStep, DType, Rng, Tensor};

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
        let hp = AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step,
        };
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
    let hp = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let mut p = randn64(&[4, 3], &mut rng);
    let mut m = randn64(&[4, 3], &mut rng);
    let mut v = randn64(&[4, 3], &mut rng);
    let g_bad = randn64(&[3, 4], &mut rng);
    let e = adam_step(&mut p, &g_bad, &mut m, &mut v, &hp)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("adam_step") && e.contains("[4, 3]") && e.contains("[3, 4]"),
        "{e}"
    );
    let g32 = randn32(&[4, 3], &mut rng);
    let e = adam_step(&mut p, &g32, &mut m, &mut v, &hp)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("adam_step") && e.contains("F64") && e.contains("F32"),
        "{e}"
    );
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
    let hp = AdamStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 3,
    };
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
