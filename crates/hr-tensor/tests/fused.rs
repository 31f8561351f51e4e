//! The fused ops (attention, contrastive loss) against the same maths composed from the
//! unfused ops (which have their own reference tests), plus gradient checks and bad input.

use hr_tensor::ops::{
    self, attention, attention_bwd, attention_spec, clip_groups, contrastive_loss,
    contrastive_loss_bwd,
};
use hr_tensor::testing::{assert_close, check_gradients, randn64};
use hr_tensor::{AttentionSpec, Rng, Tensor};

/// (B, T, H, Dh) -> (B, H, T, Dh).
fn heads_first(x: &Tensor) -> Tensor {
    ops::permute(x, &[0, 2, 1, 3]).unwrap()
}

/// Attention composed from permutes, GEMMs, masked softmax and dropout (the path of the
/// unfused layer): returns `out` (B, Tq, H, Dh).
fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    s: &AttentionSpec,
) -> Tensor {
    let (qh, kh, vh) = (heads_first(q), heads_first(k), heads_first(v));
    let scores = ops::matmul_ex(&qh, &kh, false, true, s.scale).unwrap();
    let flat = scores
        .reshape(&[s.batch, s.heads * s.q_len, s.k_len])
        .unwrap();
    let probs = ops::softmax(&flat, mask)
        .unwrap()
        .reshape(scores.shape())
        .unwrap();
    let dropped = if s.dropout > 0.0 {
        ops::dropout(&probs, s.dropout, s.seed).unwrap().0
    } else {
        probs
    };
    heads_first(&ops::matmul(&dropped, &vh).unwrap())
}

/// A (B, Tk) mask: entry 0 keeps everything, entry 1 keeps its first `tk - 2` keys, entry 2
/// (if any) keeps none.
fn mask(b: usize, tk: usize) -> Tensor {
    let v: Vec<f64> = (0..b)
        .flat_map(|i| (0..tk).map(move |j| f64::from(i == 0 || (i == 1 && j + 2 < tk))))
        .collect();
    Tensor::from_vec(v, &[b, tk]).unwrap()
}

fn qkv(b: usize, tq: usize, tk: usize, h: usize, dh: usize, seed: u64) -> [Tensor; 3] {
    let mut rng = Rng::new(seed);
    [
        randn64(&[b, tq, h, dh], &mut rng),
        randn64(&[b, tk, h, dh], &mut rng),
        randn64(&[b, tk, h, dh], &mut rng),
    ]
}

#[test]
fn attention_matches_the_composed_ops() {
    for &(b, tq, tk, h, dh, p) in &[
        (2, 5, 5, 3, 4, 0.0),
        (3, 7, 9, 2, 8, 0.0),
        (3, 6, 6, 2, 5, 0.3),
        (1, 1, 1, 1, 1, 0.0),
    ] {
        let [q, k, v] = qkv(b, tq, tk, h, dh, 11 + b as u64);
        let m = mask(b, tk);
        let mut s = attention_spec(&q, &k).unwrap();
        s.dropout = p;
        s.seed = 99;
        for mk in [None, Some(&m)] {
            let (out, lse) = attention(&q, &k, &v, mk, &s).unwrap();
            let what = format!(
                "attention b{b} tq{tq} tk{tk} h{h} dh{dh} p{p} mask {}",
                mk.is_some()
            );
            assert_close(&what, &out, &composed(&q, &k, &v, mk, &s), 1e-12);
            assert_eq!(lse.shape(), &[b, h, tq]);
            if mk.is_some() && b == 3 {
                // The fully masked batch entry: no keys, lse = -inf, output zero.
                let l = lse.to_vec_f64().unwrap();
                assert!(l[2 * h * tq..].iter().all(|x| *x == f64::NEG_INFINITY));
            }
        }
    }
}

#[test]
fn attention_gradients() {
    for (p, masked) in [(0.0, false), (0.0, true), (0.25, true)] {
        let [q, k, v] = qkv(3, 4, 5, 2, 3, 5);
        let m = mask(3, 5);
        let mk = masked.then_some(&m);
        let mut s = attention_spec(&q, &k).unwrap();
        s.dropout = p;
        s.seed = 3;
        check_gradients(
            &format!("attention p{p} mask {masked}"),
            &[q, k, v],
            |x| Ok(attention(&x[0], &x[1], &x[2], mk, &s)?.0),
            |x, dy| {
                let (out, lse) = attention(&x[0], &x[1], &x[2], mk, &s)?;
                let [dq, dk, dv] = attention_bwd(&x[0], &x[1], &x[2], mk, &out, &lse, dy, &s)?;
                Ok(vec![Some(dq), Some(dk), Some(dv)])
            },
        );
    }
}

#[test]
fn attention_f32_agrees_with_f64() {
    let [q, k, v] = qkv(2, 9, 9, 2, 16, 8);
    let m = mask(2, 9);
    let s = attention_spec(&q, &k).unwrap();
    let f = |t: &Tensor| t.to_dtype(hr_tensor::DType::F32).unwrap();
    let (o64, l64) = attention(&q, &k, &v, Some(&m), &s).unwrap();
    let (o32, l32) = attention(&f(&q), &f(&k), &f(&v), Some(&f(&m)), &s).unwrap();
    assert_close("out f32", &o32, &o64, 1e-5);
    assert_close("lse f32", &l32, &l64, 1e-5);
}

#[test]
fn attention_bad_input_is_an_error() {
    let [q, k, v] = qkv(2, 3, 4, 2, 2, 1);
    let s = attention_spec(&q, &k).unwrap();
    let e = attention(&q, &k, &q, None, &s).unwrap_err().to_string();
    assert!(e.contains("attention"), "{e}");
    let e = attention(&q, &k, &v, Some(&mask(2, 3)), &s)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 3]"), "{e}");
    let bad = AttentionSpec { dropout: 1.0, ..s };
    let e = attention(&q, &k, &v, None, &bad).unwrap_err().to_string();
    assert!(e.contains("dropout"), "{e}");
}

/// The loss composed from log-softmax both ways and the positive mask (the unfused path).
fn composed_loss(scores: &Tensor, groups: &[u32]) -> f64 {
    let n = groups.len();
    let lt = ops::log_softmax(scores).unwrap().to_vec_f64().unwrap();
    let la = ops::log_softmax(&ops::transpose(scores, 0, 1).unwrap())
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let (mut total, mut pairs) = (0.0, 0.0);
    for i in 0..n {
        for j in (0..n).filter(|&j| groups[i] == groups[j]) {
            total += lt[i * n + j] + la[j * n + i];
            pairs += 1.0;
        }
    }
    -0.5 * total / pairs
}

#[test]
fn contrastive_loss_matches_the_composed_ops_and_its_gradient() {
    for groups in [
        vec![0u32],
        vec![0, 1, 2, 3, 4, 5],
        clip_groups(&[7, 7, 7, 9, 9, 3, 7, 1]),
    ] {
        let n = groups.len();
        let mut rng = Rng::new(n as u64);
        let s = ops::scale(&randn64(&[n, n], &mut rng), 4.0).unwrap();
        let (loss, _) = contrastive_loss(&s, &groups).unwrap();
        let got = loss.scalar_f64().unwrap();
        let want = composed_loss(&s, &groups);
        assert!((got - want).abs() < 1e-12, "n {n}: {got} vs {want}");
        check_gradients(
            &format!("contrastive n{n}"),
            &[s],
            |x| Ok(contrastive_loss(&x[0], &groups)?.0),
            |x, dy| {
                let (_, st) = contrastive_loss(&x[0], &groups)?;
                let d = contrastive_loss_bwd(&x[0], &groups, &st, dy.scalar_f64()?)?;
                Ok(vec![Some(d)])
            },
        );
    }
}

#[test]
fn contrastive_loss_is_stable_at_large_scores() {
    // tau = 0.05 turns cosine similarities into scores of +-20; the f32 loss must stay finite
    // and match the f64 one.
    let groups = clip_groups(&[1, 1, 2, 2, 3]);
    let mut rng = Rng::new(4);
    let s = ops::scale(&randn64(&[5, 5], &mut rng), 40.0).unwrap();
    let (l64, _) = contrastive_loss(&s, &groups).unwrap();
    let s32 = s.to_dtype(hr_tensor::DType::F32).unwrap();
    let (l32, st) = contrastive_loss(&s32, &groups).unwrap();
    let rel = (l32.scalar_f64().unwrap() - l64.scalar_f64().unwrap()).abs()
        / l64.scalar_f64().unwrap().abs();
    assert!(rel < 1e-5, "relative {rel}");
    let d = contrastive_loss_bwd(&s32, &groups, &st, 1.0).unwrap();
    assert!(d.to_vec_f64().unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn contrastive_bad_input_is_an_error() {
    let s = Tensor::from_vec(vec![0f32; 6], &[2, 3]).unwrap();
    assert!(contrastive_loss(&s, &[0, 1]).is_err());
    let s = Tensor::from_vec(vec![0f32; 4], &[2, 2]).unwrap();
    let e = contrastive_loss(&s, &[]).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    assert!(contrastive_loss(&s, &[0, 1, 2]).is_err());
    assert_eq!(clip_groups(&[5, 9, 5, 2]), vec![0, 1, 0, 2]);
}
