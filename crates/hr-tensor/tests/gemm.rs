//! GEMM: forward against a naive reference, every transpose/batching combination, gradients.

use hr_tensor::ops::{matmul, matmul_ex, matmul_ex_bwd};
use hr_tensor::testing::{assert_close, check_gradients, randn32, randn64};
use hr_tensor::{DType, Error, Rng, Tensor};

/// Naive `op(a) @ op(b)` for one matrix pair (f64).
fn naive(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    av * bv
                })
                .sum();
        }
    }
    c
}

fn shape2(rows: usize, cols: usize, t: bool) -> [usize; 2] {
    if t {
        [cols, rows]
    } else {
        [rows, cols]
    }
}

#[test]
fn matches_naive_for_all_transposes_and_batching() {
    let mut rng = Rng::new(1);
    let (m, n, k, batch) = (7, 5, 9, 3);
    for ta in [false, true] {
        for tb in [false, true] {
            for (a_b, b_b) in [(true, true), (true, false), (false, true)] {
                let sa = shape2(m, k, ta);
                let sb = shape2(k, n, tb);
                let ash: Vec<usize> = if a_b {
                    vec![batch, sa[0], sa[1]]
                } else {
                    sa.to_vec()
                };
                let bsh: Vec<usize> = if b_b {
                    vec![batch, sb[0], sb[1]]
                } else {
                    sb.to_vec()
                };
                let a = randn64(&ash, &mut rng);
                let b = randn64(&bsh, &mut rng);
                let c = matmul_ex(&a, &b, ta, tb, 0.5).unwrap();
                assert_eq!(c.shape(), &[batch, m, n]);
                let (av, bv) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
                let mut want = Vec::new();
                for bi in 0..batch {
                    let ao = if a_b { bi * m * k } else { 0 };
                    let bo = if b_b { bi * k * n } else { 0 };
                    let cm = naive(&av[ao..ao + m * k], &bv[bo..bo + k * n], m, n, k, ta, tb);
                    want.extend(cm.into_iter().map(|x| 0.5 * x));
                }
                let want = Tensor::from_vec(want, &[batch, m, n]).unwrap();
                assert_close(&format!("matmul ta={ta} tb={tb}"), &c, &want, 1e-12);
            }
        }
    }
}

#[test]
fn large_f32_matches_f64() {
    let mut rng = Rng::new(2);
    let a = randn64(&[130, 257], &mut rng);
    let b = randn64(&[257, 99], &mut rng);
    let c64 = matmul(&a, &b).unwrap();
    let c32 = matmul(
        &a.to_dtype(DType::F32).unwrap(),
        &b.to_dtype(DType::F32).unwrap(),
    )
    .unwrap();
    assert_eq!(c32.dtype(), DType::F32);
    assert_close("f32 vs f64", &c32, &c64, 1e-5);
}

#[test]
fn gradients_for_every_transpose_and_shared_operand() {
    let mut rng = Rng::new(3);
    for ta in [false, true] {
        for tb in [false, true] {
            for shared_b in [false, true] {
                let sa = shape2(4, 6, ta);
                let sb = shape2(6, 3, tb);
                let a = randn64(&[2, sa[0], sa[1]], &mut rng);
                let b = if shared_b {
                    randn64(&sb, &mut rng)
                } else {
                    randn64(&[2, sb[0], sb[1]], &mut rng)
                };
                check_gradients(
                    &format!("matmul ta={ta} tb={tb} shared_b={shared_b}"),
                    &[a, b],
                    |x| matmul_ex(&x[0], &x[1], ta, tb, 1.5),
                    |x, dy| {
                        let (da, db) = matmul_ex_bwd(&x[0], &x[1], dy, ta, tb, 1.5)?;
                        Ok(vec![Some(da), Some(db)])
                    },
                    1e-6,
                    64,
                );
            }
        }
    }
}

#[test]
fn bad_shapes_and_dtypes_are_errors_naming_the_op() {
    let mut rng = Rng::new(4);
    let a = randn32(&[3, 4], &mut rng);
    let b = randn32(&[5, 6], &mut rng);
    let err = matmul(&a, &b).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "matmul", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("[3, 4]") && err.to_string().contains("[5, 6]"));
    let b64 = randn64(&[4, 2], &mut rng);
    let err = matmul(&a, &b64).unwrap_err();
    assert!(
        matches!(err, Error::DTypeMismatch { op: "matmul", .. }),
        "{err}"
    );
    let batched = randn32(&[2, 3, 4], &mut rng);
    let other = randn32(&[3, 4, 2], &mut rng);
    assert!(matmul(&batched, &other).is_err());
    let v = randn32(&[4], &mut rng);
    assert!(matmul(&a, &v).is_err());
}

#[test]
fn empty_dimensions_give_zeros() {
    let a = Tensor::zeros(&[3, 0], DType::F32, hr_tensor::Device::Cpu).unwrap();
    let b = Tensor::zeros(&[0, 2], DType::F32, hr_tensor::Device::Cpu).unwrap();
    let c = matmul(&a, &b).unwrap();
    assert_eq!(c.to_vec_f32().unwrap(), vec![0.0; 6]);
}

#[test]
fn autocast_rounds_operands_to_bf16_and_accumulates_in_f32() {
    let mut rng = Rng::new(77);
    let (a, b) = (randn32(&[3, 17, 40], &mut rng), randn32(&[40, 9], &mut rng));
    let round = |t: &Tensor| {
        let v: Vec<f32> = t
            .to_vec_f32()
            .unwrap()
            .into_iter()
            .map(hr_tensor::autocast::round_bf16)
            .collect();
        Tensor::from_vec(v, t.shape()).unwrap()
    };
    let plain = matmul(&a, &b).unwrap();
    let want = matmul(&round(&a), &round(&b)).unwrap();
    let got = {
        let _bf16 = hr_tensor::autocast::bf16_matmuls(true);
        matmul(&a, &b).unwrap()
    };
    assert_close("autocast = f32 GEMM of rounded operands", &got, &want, 1e-7);
    // bf16 operands move the result (relative error ~ 2^-9), and the guard has ended.
    let diff = hr_tensor::testing::max_rel_diff(&got, &plain).unwrap();
    assert!(
        diff > 1e-4 && diff < 2e-2,
        "bf16 vs f32 relative difference {diff}"
    );
    assert_close("after the guard", &matmul(&a, &b).unwrap(), &plain, 1e-12);
    // f64 (gradient checks) is never rounded.
    let (a64, b64) = (
        a.to_dtype(DType::F64).unwrap(),
        b.to_dtype(DType::F64).unwrap(),
    );
    let _bf16 = hr_tensor::autocast::bf16_matmuls(true);
    let r = matmul(&a64, &b64).unwrap();
    let _ = r.to_vec_f64().unwrap();
    assert!(
        hr_tensor::testing::max_rel_diff(&r, &plain.to_dtype(DType::F64).unwrap()).unwrap() < 1e-5
    );
}
