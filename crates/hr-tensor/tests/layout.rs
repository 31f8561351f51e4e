//! Layout ops: permute / transpose, concat, slice / pad, embedding, against straightforward
//! references, with gradient checks and bad-input errors.
//!
//! Device parity (`test_device!`: `<case>_cpu`, `<case>_cuda`): the same ops on the device
//! against the CPU backend, f32 and bf16 storage (bf16 data movement bit-exact;
//! [`hr_tensor::testing::parity`]).

use hr_core::testing::assert_mentions;
use hr_tensor::ops::{
    self, concat, concat_bwd, embedding, embedding_bwd, pad_axis, permute, permute_bwd, slice,
    slice_bwd, transpose, transpose_bwd,
};
use hr_tensor::testing::parity::{
    bf16_host, bf16_special, check, check_bf16, check_bf16_exact, on, randn, CheckFn, MakeFn,
};
use hr_tensor::testing::{check_gradients, randn32, randn64};
use hr_tensor::{test_device, DType, Device, Error, Rng, Tensor};

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Reference permute: output multi-index `o` reads input index with `in[perm[i]] = o[i]`.
fn ref_permute(x: &[f64], shape: &[usize], perm: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let (si, so) = (strides(shape), strides(&out_shape));
    let n: usize = shape.iter().product();
    let mut y = vec![0.0; n];
    for (flat, yv) in y.iter_mut().enumerate() {
        let mut off = 0;
        for (i, &p) in perm.iter().enumerate() {
            let idx = (flat / so[i]) % out_shape[i];
            off += idx * si[p];
        }
        *yv = x[off];
    }
    (y, out_shape)
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

#[test]
fn permute_matches_reference_small_and_large() {
    let mut rng = Rng::new(1);
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4, 5], &[0, 2, 1, 3]),
        (&[2, 3, 4, 5], &[3, 1, 0, 2]),
        (&[2, 3, 4, 5], &[3, 2, 1, 0]),
        (&[37, 53], &[1, 0]),
        (&[3, 1, 5, 1, 7], &[4, 1, 2, 0, 3]),
        (&[4, 64, 8, 32], &[0, 2, 1, 3]),
        (&[300, 257], &[1, 0]),
        (&[3, 129, 131], &[0, 2, 1]),
        (&[5, 40, 6, 33], &[2, 0, 3, 1]),
        (&[0, 3, 4], &[2, 0, 1]),
    ];
    for &(shape, perm) in cases {
        let x = randn64(shape, &mut rng);
        let (want, want_shape) = ref_permute(&vals(&x), shape, perm);
        let y = permute(&x, perm).unwrap();
        assert_eq!(y.shape(), &want_shape[..], "{shape:?} {perm:?}");
        assert_eq!(vals(&y), want, "{shape:?} {perm:?}");
        // f32 moves the same bits.
        let x32 = x.to_dtype(DType::F32).unwrap();
        let y32 = permute(&x32, perm).unwrap();
        let want32: Vec<f64> = want.iter().map(|&v| v as f32 as f64).collect();
        assert_eq!(vals(&y32), want32, "f32 {shape:?} {perm:?}");
    }
    // bf16 storage is permuted too.
    let x = randn64(&[2, 3, 4], &mut rng).to_dtype(DType::BF16).unwrap();
    let y = permute(&x, &[1, 2, 0]).unwrap();
    let (want, _) = ref_permute(&vals(&x), &[2, 3, 4], &[1, 2, 0]);
    assert_eq!(vals(&y), want);
}

#[test]
fn transpose_swaps_axes() {
    let mut rng = Rng::new(2);
    let x = randn64(&[2, 3, 5], &mut rng);
    let y = transpose(&x, 0, 2).unwrap();
    let (want, shape) = ref_permute(&vals(&x), &[2, 3, 5], &[2, 1, 0]);
    assert_eq!(y.shape(), &shape[..]);
    assert_eq!(vals(&y), want);
    assert_eq!(vals(&transpose_bwd(&y, 0, 2).unwrap()), vals(&x));
}

#[test]
fn permute_and_transpose_gradients() {
    let mut rng = Rng::new(3);
    let x = randn64(&[2, 3, 5, 7], &mut rng);
    for perm in [[0usize, 2, 1, 3], [3, 0, 2, 1], [1, 3, 0, 2]] {
        check_gradients(
            "permute",
            std::slice::from_ref(&x),
            |xs| permute(&xs[0], &perm),
            |_, dy| Ok(vec![Some(permute_bwd(dy, &perm)?)]),
        );
    }
    check_gradients(
        "transpose",
        std::slice::from_ref(&x),
        |xs| transpose(&xs[0], 1, 3),
        |_, dy| Ok(vec![Some(transpose_bwd(dy, 1, 3)?)]),
    );
}

/// Reference concat of (outer, size_i * inner) blocks.
fn ref_concat(xs: &[&Tensor], axis: usize) -> Vec<f64> {
    let shape = xs[0].shape();
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut y = Vec::new();
    for o in 0..outer {
        for x in xs {
            let b = x.shape()[axis] * inner;
            y.extend_from_slice(&vals(x)[o * b..(o + 1) * b]);
        }
    }
    y
}

#[test]
fn concat_matches_reference_on_every_axis() {
    let mut rng = Rng::new(4);
    for axis in 0..3 {
        let mk = |n: usize, rng: &mut Rng| {
            let mut s = vec![3, 4, 5];
            s[axis] = n;
            randn64(&s, rng)
        };
        let (a, b, c) = (mk(2, &mut rng), mk(1, &mut rng), mk(3, &mut rng));
        let y = concat(&[&a, &b, &c], axis).unwrap();
        let mut want_shape = [3, 4, 5];
        want_shape[axis] = 6;
        assert_eq!(y.shape(), &want_shape[..]);
        assert_eq!(vals(&y), ref_concat(&[&a, &b, &c], axis), "axis {axis}");
    }
    // Large (parallel) case.
    let a = randn64(&[64, 300, 3], &mut rng);
    let b = randn64(&[64, 200, 3], &mut rng);
    let y = concat(&[&a, &b], 1).unwrap();
    assert_eq!(vals(&y), ref_concat(&[&a, &b], 1));
}

#[test]
fn concat_gradients() {
    let mut rng = Rng::new(5);
    let a = randn64(&[3, 2, 5], &mut rng);
    let b = randn64(&[3, 4, 5], &mut rng);
    let c = randn64(&[3, 1, 5], &mut rng);
    check_gradients(
        "concat",
        &[a, b, c],
        |xs| concat(&[&xs[0], &xs[1], &xs[2]], 1),
        |_, dy| {
            Ok(concat_bwd(dy, &[2, 4, 1], 1)?
                .into_iter()
                .map(Some)
                .collect())
        },
    );
}

#[test]
fn slice_and_pad_match_reference() {
    let mut rng = Rng::new(6);
    let x = randn64(&[3, 7, 5], &mut rng);
    let xv = vals(&x);
    let y = slice(&x, 1, 2, 4).unwrap();
    assert_eq!(y.shape(), &[3, 4, 5]);
    let mut want = Vec::new();
    for o in 0..3 {
        for j in 2..6 {
            want.extend_from_slice(&xv[(o * 7 + j) * 5..(o * 7 + j + 1) * 5]);
        }
    }
    assert_eq!(vals(&y), want);
    let p = pad_axis(&y, 1, 2, 7).unwrap();
    assert_eq!(p.shape(), &[3, 7, 5]);
    let pv = vals(&p);
    for o in 0..3 {
        for j in 0..7 {
            for k in 0..5 {
                let i = (o * 7 + j) * 5 + k;
                let expect = if (2..6).contains(&j) { xv[i] } else { 0.0 };
                assert_eq!(pv[i], expect);
            }
        }
    }
}

#[test]
fn slice_gradients() {
    let mut rng = Rng::new(7);
    let x = randn64(&[3, 7, 5], &mut rng);
    for (axis, start, len) in [(0usize, 1usize, 2usize), (1, 3, 3), (2, 0, 4), (2, 4, 1)] {
        let n = x.shape()[axis];
        check_gradients(
            "slice",
            std::slice::from_ref(&x),
            |xs| slice(&xs[0], axis, start, len),
            |_, dy| Ok(vec![Some(slice_bwd(dy, axis, start, n)?)]),
        );
    }
}

#[test]
fn embedding_gathers_and_scatter_adds() {
    let mut rng = Rng::new(8);
    let table = randn64(&[11, 6], &mut rng);
    let ids = [3u32, 0, 10, 3, 7, 3];
    let y = embedding(&table, &ids).unwrap();
    assert_eq!(y.shape(), &[6, 6]);
    let tv = vals(&table);
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| tv[i as usize * 6..(i as usize + 1) * 6].to_vec())
        .collect();
    assert_eq!(vals(&y), want);

    let dy = randn64(&[6, 6], &mut rng);
    let g = embedding_bwd(&dy, &ids, 11).unwrap();
    assert_eq!(g.shape(), &[11, 6]);
    let dv = vals(&dy);
    let mut want = vec![0.0; 66];
    for (p, &i) in ids.iter().enumerate() {
        for k in 0..6 {
            want[i as usize * 6 + k] += dv[p * 6 + k];
        }
    }
    let gv = vals(&g);
    for (a, b) in gv.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12);
    }

    // Large (parallel) scatter-add, f32.
    let ids: Vec<u32> = (0..4096u32).map(|i| (i * 7919) % 97).collect();
    let dy = randn32(&[4096, 16], &mut rng);
    let g = embedding_bwd(&dy, &ids, 97).unwrap();
    let dv = vals(&dy);
    let mut want = vec![0.0; 97 * 16];
    for (p, &i) in ids.iter().enumerate() {
        for k in 0..16 {
            want[i as usize * 16 + k] += dv[p * 16 + k];
        }
    }
    for (a, b) in vals(&g).iter().zip(&want) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn embedding_gradient() {
    let mut rng = Rng::new(9);
    let table = randn64(&[7, 5], &mut rng);
    let ids = [6u32, 2, 2, 0, 6, 6, 1];
    check_gradients(
        "embedding",
        &[table],
        |xs| embedding(&xs[0], &ids),
        |_, dy| Ok(vec![Some(embedding_bwd(dy, &ids, 7)?)]),
    );
}

#[test]
fn bad_inputs_are_reported() {
    let mut rng = Rng::new(10);
    let a = randn64(&[2, 3, 4], &mut rng);
    let b = randn64(&[2, 5, 6], &mut rng);
    let e = concat(&[&a, &b], 1).unwrap_err().to_string();
    assert_mentions(&e, &["concat", "[2, 3, 4]", "[2, 5, 6]"]);
    let c = randn32(&[2, 3, 4], &mut rng);
    let e = concat(&[&a, &c], 0).unwrap_err().to_string();
    assert_mentions(&e, &["concat", "F64", "F32"]);
    assert!(concat(&[], 0).is_err());
    assert!(concat(&[&a, &a], 3).is_err());

    let e = permute(&a, &[0, 0, 1]).unwrap_err().to_string();
    assert!(e.contains("permute"), "{e}");
    assert!(permute(&a, &[0, 1]).is_err());
    assert!(transpose(&a, 0, 3).is_err());

    let e = slice(&a, 1, 2, 2).unwrap_err().to_string();
    assert!(e.contains("slice") && e.contains("[2, 3, 4]"), "{e}");
    assert!(slice(&a, 1, usize::MAX, 2).is_err());
    assert!(pad_axis(&a, 1, 1, 3).is_err());
    assert!(concat_bwd(&a, &[1, 1], 1).is_err());

    let table = randn64(&[5, 3], &mut rng);
    let e = embedding(&table, &[1, 5]).unwrap_err().to_string();
    assert_mentions(&e, &["embedding", "id 5", "vocab size 5"]);
    let dy = randn64(&[2, 3], &mut rng);
    let e = embedding_bwd(&dy, &[1], 5).unwrap_err().to_string();
    assert!(e.contains("embedding_bwd") && e.contains("[2, 3]"), "{e}");
    assert!(embedding_bwd(&dy, &[1, 9], 5).is_err());
    assert!(embedding(&a, &[0]).is_err());
}

/// Ids of the embedding parity cases (a vocabulary of 50; repeats and unused rows).
const EMBED_IDS: [u32; 11] = [0, 49, 3, 3, 17, 3, 0, 25, 49, 11, 3];

/// Layout parity cases shared by f32 and bf16: permute, concat, slice, pad_axis and embedding
/// (of [`EMBED_IDS`]) on tensors from `make`, each result on `dev` against the CPU's through
/// `same`.
fn layout_cases(dev: Device, make: MakeFn, same: CheckFn) {
    let x = make(&[2, 3, 4, 5], 700);
    let xg = on(&x, dev);
    for perm in [[3, 1, 0, 2], [0, 2, 1, 3], [0, 1, 2, 3], [3, 2, 1, 0]] {
        same(
            dev,
            &format!("permute {perm:?}"),
            &ops::permute(&xg, &perm).unwrap(),
            &ops::permute(&x, &perm).unwrap(),
        );
    }
    let big = make(&[33, 65, 17], 701);
    same(
        dev,
        "permute big",
        &ops::permute(&on(&big, dev), &[2, 0, 1]).unwrap(),
        &ops::permute(&big, &[2, 0, 1]).unwrap(),
    );
    let parts = [
        make(&[2, 3, 4], 702),
        make(&[2, 5, 4], 703),
        make(&[2, 1, 4], 704),
    ];
    let pg: Vec<Tensor> = parts.iter().map(|t| on(t, dev)).collect();
    same(
        dev,
        "concat axis 1",
        &ops::concat(&pg.iter().collect::<Vec<_>>(), 1).unwrap(),
        &ops::concat(&parts.iter().collect::<Vec<_>>(), 1).unwrap(),
    );
    let (a, b) = (make(&[3, 7], 705), make(&[2, 7], 706));
    same(
        dev,
        "concat axis 0",
        &ops::concat(&[&on(&a, dev), &on(&b, dev)], 0).unwrap(),
        &ops::concat(&[&a, &b], 0).unwrap(),
    );
    for (axis, start, len) in [(1, 1, 2), (3, 0, 5), (0, 1, 1), (2, 3, 1)] {
        same(
            dev,
            &format!("slice axis {axis} {start}+{len}"),
            &ops::slice(&xg, axis, start, len).unwrap(),
            &ops::slice(&x, axis, start, len).unwrap(),
        );
        let total = x.shape()[axis] + start + 2;
        same(
            dev,
            &format!("pad_axis axis {axis} at {start} to {total}"),
            &ops::pad_axis(&xg, axis, start, total).unwrap(),
            &ops::pad_axis(&x, axis, start, total).unwrap(),
        );
    }
    let table = make(&[50, 33], 707);
    same(
        dev,
        "embedding",
        &ops::embedding(&on(&table, dev), &EMBED_IDS).unwrap(),
        &ops::embedding(&table, &EMBED_IDS).unwrap(),
    );
}

fn layout_ops(dev: Device) {
    layout_cases(dev, &randn, &check);
    let ids = EMBED_IDS;
    let table = randn(&[50, 33], 707);
    let dy = randn(&[ids.len(), 33], 708);
    check(
        dev,
        "embedding_bwd",
        &ops::embedding_bwd(&on(&dy, dev), &ids, 50).unwrap(),
        &ops::embedding_bwd(&dy, &ids, 50).unwrap(),
    );
    assert!(matches!(
        ops::embedding(&on(&table, dev), &[50]).unwrap_err(),
        Error::InvalidArgument { .. }
    ));
}

test_device!(layout_ops);

/// bf16 storage of the layout family: permute, concat, slice, pad_axis and embedding
/// bit-exact (signed zeros, infinities and NaN payloads included); embedding_bwd within
/// [`BF16_TOL`](hr_tensor::testing::parity::BF16_TOL) of the CPU and deterministic.
fn bf16_layout_ops(dev: Device) {
    layout_cases(dev, &bf16_special, &check_bf16_exact);
    let ids = EMBED_IDS;
    let dy = bf16_host(&[ids.len(), 33], 1.0, 0.0, 2506);
    let dyg = on(&dy, dev);
    let g1 = ops::embedding_bwd(&dyg, &ids, 50).unwrap();
    check_bf16(
        dev,
        "embedding_bwd",
        &g1,
        &ops::embedding_bwd(&dy, &ids, 50).unwrap(),
    );
    check_bf16_exact(
        dev,
        "embedding_bwd rerun (deterministic)",
        &ops::embedding_bwd(&dyg, &ids, 50).unwrap(),
        &g1.to_device(Device::Cpu).unwrap(),
    );
}

test_device!(bf16_layout_ops);
