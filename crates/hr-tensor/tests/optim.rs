//! Fused Adam/AdamW against a straightforward scalar re-implementation of PyTorch's update,
//! over several steps, with and without decoupled weight decay; bad-input errors.

use hr_tensor::ops::adam_step;
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
