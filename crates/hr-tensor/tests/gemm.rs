//! GEMM: forward against a naive reference, every transpose/batching combination, gradients.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): matmul (cuBLAS on a GPU), the
//! bf16 operand copies of autocast GEMMs cached with their storage, and autocast GEMMs
//! (dense pointwise convolutions included) on the device against the CPU backend
//! ([`hr_tensor::testing::parity`]).

use hr_tensor::ops::{matmul, matmul_ex, matmul_ex_bwd};
use hr_tensor::testing::parity::{check, check_tol, on, randn};
use hr_tensor::testing::{assert_close, check_gradients, randn32, randn64};
use hr_tensor::{ops, test_device, DType, Device, Error, Rng, Tensor};

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

fn matmul_cublas(dev: Device) {
    // (batch dims of a, batch dims of b, m, k, n)
    type Case<'a> = (&'a [usize], &'a [usize], usize, usize, usize);
    let cases: [Case; 8] = [
        (&[], &[], 1, 1, 1),
        (&[], &[], 17, 33, 9),
        (&[], &[], 64, 128, 96),
        (&[], &[], 97, 768, 65),
        (&[3], &[3], 5, 7, 11),
        (&[2, 3], &[2, 3], 13, 64, 31),
        (&[4], &[], 9, 17, 5),
        (&[], &[4], 9, 17, 5),
    ];
    let mut seed = 300;
    for (ba, bb, m, k, n) in cases {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            seed += 1;
            let mut sa = ba.to_vec();
            sa.extend(if ta { [k, m] } else { [m, k] });
            let mut sb = bb.to_vec();
            sb.extend(if tb { [n, k] } else { [k, n] });
            let a = randn(&sa, seed);
            let b = randn(&sb, seed + 1000);
            let alpha = 0.5;
            let got = ops::matmul_ex(&on(&a, dev), &on(&b, dev), ta, tb, alpha).unwrap();
            let want = ops::matmul_ex(&a, &b, ta, tb, alpha).unwrap();
            check(
                dev,
                &format!(
                    "matmul {sa:?}{} x {sb:?}{}",
                    if ta { "^T" } else { "" },
                    if tb { "^T" } else { "" }
                ),
                &got,
                &want,
            );
        }
    }
}

test_device!(matmul_cublas);

/// The bf16 copy of an autocast GEMM operand is cached with its storage: reused while the
/// tensor is unchanged (also through a reshape), made again after an in-place write, and not
/// taken over by a copy-on-write clone. Every product against the CPU's rounding.
fn bf16_operand_copies_follow_writes(dev: Device) {
    let _bf16 = hr_tensor::autocast::bf16_matmuls(true);
    let (x, mut w, d) = (
        randn(&[19, 40], 1000),
        randn(&[40, 23], 1001),
        randn(&[40, 23], 1002),
    );
    let (xg, mut wg, dg) = (on(&x, dev), on(&w, dev), on(&d, dev));
    let mm = |a: &Tensor, b: &Tensor| ops::matmul(a, b).unwrap();
    // The device product of (a, b) against the CPU product of (ca, cb).
    let near = |what: &str, [a, b]: [&Tensor; 2], [ca, cb]: [&Tensor; 2]| {
        check_tol(
            dev,
            &format!("bf16 matmul{what}"),
            &mm(a, b),
            &mm(ca, cb),
            1e-4,
        )
    };
    near(" (first use)", [&xg, &wg], [&x, &w]);
    near(" (cached copies)", [&xg, &wg], [&x, &w]);
    // A reshape shares the storage, and so the cached copy.
    let via = |t: &Tensor, tmp: &[usize]| t.reshape(tmp).unwrap().reshape(t.shape()).unwrap();
    let (xr, wr) = (via(&xg, &[19, 2, 20]), via(&wg, &[20, 2, 23]));
    near(" through reshapes", [&xr, &wr], [&x, &w]);
    // A copy-on-write clone written in place: the original keeps its values and its copy.
    let mut w2g = wg.clone();
    ops::axpy(&mut w2g, 1.0, &dg).unwrap();
    near(", original after a clone's write", [&xg, &wg], [&x, &w]);
    let mut w2 = w.clone();
    ops::axpy(&mut w2, 1.0, &d).unwrap();
    near(", the written clone", [&xg, &w2g], [&x, &w2]);
    // The tensor itself written in place (unique storage, like a weight under Adam).
    ops::axpy(&mut wg, -0.5, &dg).unwrap();
    ops::axpy(&mut w, -0.5, &d).unwrap();
    near(" after an in-place write", [&xg, &wg], [&x, &w]);
}

test_device!(bf16_operand_copies_follow_writes);

/// Autocast GEMMs: cuBLAS with bf16 operands against the CPU's rounding of the same
/// operands (both accumulate in f32, so only the summation order differs: 1e-4, not the
/// 1e-2 a bf16 result would need).
fn matmul_bf16_autocast(dev: Device) {
    let _bf16 = hr_tensor::autocast::bf16_matmuls(true);
    let cases: [(&[usize], &[usize], bool, bool); 4] = [
        (&[17, 33], &[33, 9], false, false),
        (&[97, 768], &[65, 768], false, true),
        (&[3, 64, 13], &[3, 64, 31], true, false),
        (&[4, 9, 17], &[17, 5], false, false),
    ];
    for (i, (sa, sb, ta, tb)) in cases.into_iter().enumerate() {
        let (a, b) = (randn(sa, 900 + i as u64), randn(sb, 950 + i as u64));
        let got = ops::matmul_ex(&on(&a, dev), &on(&b, dev), ta, tb, 0.5).unwrap();
        let want = ops::matmul_ex(&a, &b, ta, tb, 0.5).unwrap();
        check_tol(
            dev,
            &format!("bf16 matmul {sa:?} x {sb:?}"),
            &got,
            &want,
            1e-4,
        );
    }
    // Dense pointwise convolutions are bf16 GEMMs too (the CPU rounds the same operands).
    let (x, w, dy) = (
        randn(&[2, 24, 5, 9], 960),
        randn(&[40, 24, 1, 1], 961),
        randn(&[2, 40, 5, 9], 962),
    );
    let spec = ops::conv2d_spec(x.shape(), w.shape(), (1, 1), (0, 0), (1, 1), 1).unwrap();
    let (xg, wg, dyg) = (on(&x, dev), on(&w, dev), on(&dy, dev));
    let conv = |x: &Tensor, w: &Tensor| ops::conv2d(x, w, (1, 1), (0, 0), (1, 1), 1).unwrap();
    check_tol(
        dev,
        "bf16 pointwise conv",
        &conv(&xg, &wg),
        &conv(&x, &w),
        1e-4,
    );
    let dx = |dy: &Tensor, w: &Tensor| ops::conv2d_bwd_data(dy, w, &spec).unwrap();
    check_tol(
        dev,
        "bf16 pointwise conv bwd_data",
        &dx(&dyg, &wg),
        &dx(&dy, &w),
        1e-4,
    );
    let dw = |x: &Tensor, dy: &Tensor| ops::conv2d_bwd_weight(x, dy, &spec).unwrap();
    check_tol(
        dev,
        "bf16 pointwise conv bwd_weight",
        &dw(&xg, &dyg),
        &dw(&x, &dy),
        1e-4,
    );
    // Both gradients at once share one bf16 copy of dy: the same values as the two calls.
    let (dx2, dw2) = ops::conv2d_bwd(&xg, &wg, &dyg, &spec).unwrap();
    for (what, got, want) in [("dx", &dx2, &dx(&dyg, &wg)), ("dw", &dw2, &dw(&xg, &dyg))] {
        let (g, w) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        assert_eq!(
            g, w,
            "bf16 pointwise conv2d_bwd {what} differs from the separate op"
        );
    }
    println!("ok bf16 pointwise conv2d_bwd: dx and dw identical to the separate ops");
    // A small image with many channels: the channel-major weight gradient (one GEMM over the
    // batch) rounds the same operands.
    let (x, dy) = (randn(&[3, 48, 2, 3], 963), randn(&[3, 40, 2, 3], 964));
    let w = randn(&[40, 48, 1, 1], 965);
    let spec = ops::conv2d_spec(x.shape(), w.shape(), (1, 1), (0, 0), (1, 1), 1).unwrap();
    check_tol(
        dev,
        "bf16 pointwise conv bwd_weight, channel-major",
        &ops::conv2d_bwd_weight(&on(&x, dev), &on(&dy, dev), &spec).unwrap(),
        &ops::conv2d_bwd_weight(&x, &dy, &spec).unwrap(),
        1e-4,
    );
}

test_device!(matmul_bf16_autocast);
