//! Finite-difference gradient checks (f64) of every layer: input and parameter gradients.

mod common;

use common::{check_cached, check_layer};
use hr_nn::layers::{
    Activation, BatchNorm2d, Conv2d, Dropout, Embedding, GatedEmbeddingUnit, GeuNorm, LayerNorm,
    Linear, Mode, MultiHeadAttention, Naming, TransformerEncoderLayer, TransformerLayerConfig,
};
use hr_nn::ParamStore;
use hr_tensor::testing::{bf16_bits, bf16_pair, randn32};
use hr_tensor::{DType, Rng, Tensor, Unary};

/// A key-padding mask (B, T) with `valid[b]` leading ones.
fn mask(valid: &[usize], t: usize, dtype: DType) -> Tensor {
    let v: Vec<f64> = valid
        .iter()
        .flat_map(|&n| (0..t).map(move |i| (i < n) as u8 as f64))
        .collect();
    Tensor::from_vec(v, &[valid.len(), t])
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

#[test]
fn linear() {
    let mut rng = Rng::new(1);
    let mut ps = ParamStore::new();
    let l = Linear::new(&mut ps, "fc", 7, 5, true, &mut rng).unwrap();
    let x = randn32(&[2, 3, 7], &mut rng);
    check_cached(
        "linear",
        &ps,
        &x,
        |ps, x| l.forward(ps, x),
        |ps, c, dy| l.backward(ps, c, dy),
    );
}

#[test]
fn layer_norm() {
    let mut rng = Rng::new(2);
    let mut ps = ParamStore::new();
    let ln = LayerNorm::new(&mut ps, "ln", 9, 1e-5).unwrap();
    // Non-trivial affine parameters.
    for (_, p) in ps.iter_mut() {
        p.value = randn32(p.value.shape(), &mut rng);
    }
    let x = randn32(&[4, 9], &mut rng);
    check_cached(
        "layer_norm",
        &ps,
        &x,
        |ps, x| ln.forward(ps, x),
        |ps, c, dy| ln.backward(ps, c, dy),
    );
}

#[test]
fn conv2d_including_depthwise_and_stride_2() {
    let mut rng = Rng::new(3);
    for (cin, cout, k, stride, groups) in [
        (3, 4, 3, 1, 1),
        (4, 4, 5, 2, 4),
        (4, 6, 3, 2, 2),
        (5, 3, 1, 1, 1),
    ] {
        let mut ps = ParamStore::new();
        let conv = Conv2d::new(&mut ps, "conv", cin, cout, k, stride, groups, &mut rng).unwrap();
        let x = randn32(&[2, cin, 7, 6], &mut rng);
        check_cached(
            &format!("conv k{k} s{stride} g{groups}"),
            &ps,
            &x,
            |ps, x| conv.forward(ps, x),
            |ps, c, dy| conv.backward(ps, c, dy),
        );
    }
}

#[test]
fn batch_norm_train_and_eval() {
    let mut rng = Rng::new(4);
    let mut ps = ParamStore::new();
    let bn = BatchNorm2d::new(&mut ps, "bn", 3, 1e-3, 0.01).unwrap();
    for (_, p) in ps.iter_mut().filter(|(_, p)| p.trainable) {
        p.value = randn32(p.value.shape(), &mut rng);
    }
    let x = randn32(&[4, 3, 5, 3], &mut rng);
    let train = Mode::Train { seed: 0 };
    check_cached(
        "batch_norm train",
        &ps,
        &x,
        |ps, x| bn.forward(ps, x, train),
        |ps, c, dy| bn.backward(ps, c, dy),
    );
    // Evaluation with non-trivial running statistics.
    let mut ps2 = ps.clone();
    *ps2.value_mut(bn.running_mean) = randn32(&[3], &mut rng);
    *ps2.value_mut(bn.running_var) = Tensor::from_vec(vec![0.5f32, 2.0, 1.3], &[3]).unwrap();
    check_cached(
        "batch_norm eval",
        &ps2,
        &x,
        |ps, x| bn.forward(ps, x, Mode::Eval),
        |ps, c, dy| bn.backward(ps, c, dy),
    );
}

/// A 3-channel batch norm with random gamma / beta and non-trivial running statistics.
fn batch_norm_with_running_stats(rng: &mut Rng) -> (ParamStore, BatchNorm2d) {
    let mut ps = ParamStore::new();
    let bn = BatchNorm2d::new(&mut ps, "bn", 3, 1e-3, 0.01).unwrap();
    for (_, p) in ps.iter_mut().filter(|(_, p)| p.trainable) {
        p.value = randn32(p.value.shape(), rng);
    }
    *ps.value_mut(bn.running_mean) = randn32(&[3], rng);
    *ps.value_mut(bn.running_var) = Tensor::from_vec(vec![0.5f32, 2.0, 1.3], &[3]).unwrap();
    (ps, bn)
}

/// The fused batch norm + activation layer path (ConvBnAct's): train and eval, both kinks.
#[test]
fn batch_norm_with_fused_activation() {
    let mut rng = Rng::new(14);
    let (ps, bn) = batch_norm_with_running_stats(&mut rng);
    let x = randn32(&[4, 3, 5, 3], &mut rng);
    for act in [Unary::Relu, Unary::Hardswish] {
        for mode in [Mode::Train { seed: 0 }, Mode::Eval] {
            check_cached(
                &format!("batch_norm + {act:?} {mode:?}"),
                &ps,
                &x,
                |ps, x| bn.forward_act(ps, x, mode, act),
                |ps, c, dy| bn.backward_act(ps, c, dy, act),
            );
        }
    }
}

/// Frozen batch norm (evaluation mode in training) with bf16 activations: the backward runs
/// in f32 on the widened values with f32 parameters and rounds dx once, so dx is the f32
/// layer's dx rounded to bf16, bit for bit, and dgamma / dbeta equal the f32 layer's.
#[test]
fn frozen_batch_norm_backward_with_bf16_activations() {
    let mut rng = Rng::new(15);
    let (ps, bn) = batch_norm_with_running_stats(&mut rng);
    let (x32, x16) = bf16_pair(&[4, 3, 5, 6], 1.0, 0.2, 1);
    let (dy32, dy16) = bf16_pair(&[4, 3, 5, 6], 1.0, 0.0, 2);
    for act in [None, Some(Unary::Relu), Some(Unary::Hardswish)] {
        let run = |x: &Tensor, dy: &Tensor| {
            let mut ps = ps.clone();
            ps.zero_grad().unwrap();
            let dx = match act {
                None => {
                    let (_, c) = bn.forward(&mut ps, x, Mode::Eval).unwrap();
                    bn.backward(&mut ps, &c, dy).unwrap()
                }
                Some(a) => {
                    let (_, c) = bn.forward_act(&mut ps, x, Mode::Eval, a).unwrap();
                    bn.backward_act(&mut ps, &c, dy, a).unwrap()
                }
            };
            let dg = ps.grad(bn.weight).to_vec_f64().unwrap();
            (dx, dg, ps.grad(bn.bias).to_vec_f64().unwrap())
        };
        let (dx32, dg32, db32) = run(&x32, &dy32);
        let (dx16, dg16, db16) = run(&x16, &dy16);
        assert_eq!(dx16.dtype(), DType::BF16, "{act:?}");
        let rounded = dx32.to_dtype(DType::BF16).unwrap();
        assert_eq!(bf16_bits(&dx16), bf16_bits(&rounded), "dx {act:?}");
        assert_eq!((dg16, db16), (dg32, db32), "dgamma / dbeta {act:?}");
    }
}

#[test]
fn embedding() {
    let mut rng = Rng::new(5);
    let mut ps = ParamStore::new();
    let e = Embedding::new(&mut ps, "emb", 11, 4, 1.0, &mut rng).unwrap();
    let ids = [3u32, 0, 10, 3, 7, 3];
    // The input is not differentiable; a dummy x carries the dtype.
    let x = Tensor::from_vec(vec![0f32], &[1]).unwrap();
    check_layer(
        "embedding",
        &ps,
        &x,
        |ps, _| Ok(e.forward(ps, &ids, &[2, 3])?.0),
        |ps, _, dy| {
            let (_, c) = e.forward(ps, &ids, &[2, 3])?;
            e.backward(ps, &c, dy)?;
            Ok(None)
        },
    );
}

#[test]
fn activations_and_dropout() {
    let mut rng = Rng::new(6);
    let ps = ParamStore::new();
    let x = randn32(&[3, 5], &mut rng);
    for kind in [
        Unary::Relu,
        Unary::Gelu,
        Unary::Hardswish,
        Unary::Sigmoid,
        Unary::Tanh,
    ] {
        let a = Activation::new(kind);
        check_cached(
            &format!("{kind:?}"),
            &ps,
            &x,
            |_, x| a.forward(x),
            |_, c, dy| a.backward(c, dy),
        );
    }
    let d = Dropout::new(0.4);
    let mode = Mode::Train { seed: 9 };
    check_cached(
        "dropout",
        &ps,
        &x,
        |_, x| d.forward(x, mode),
        |_, c, dy| d.backward(c, dy),
    );
    let (y, _) = d.forward(&x, Mode::Eval).unwrap();
    assert_eq!(
        y.to_vec_f32().unwrap(),
        x.to_vec_f32().unwrap(),
        "dropout is the identity in eval"
    );
}

#[test]
fn multi_head_attention_with_padding_mask() {
    let mut rng = Rng::new(7);
    for bert in [false, true] {
        let mut ps = ParamStore::new();
        let naming = if bert { Naming::Bert } else { Naming::Torch };
        let mha = MultiHeadAttention::new(&mut ps, "att", naming, 8, 2, 0.0, &mut rng).unwrap();
        let x = randn32(&[3, 5, 8], &mut rng);
        let m = mask(&[5, 3, 1], 5, DType::F64);
        check_cached(
            &format!("mha bert={bert}"),
            &ps,
            &x,
            |ps, x| mha.forward(ps, x, Some(&m), Mode::Eval),
            |ps, c, dy| mha.backward(ps, c, dy),
        );
    }
}

#[test]
fn transformer_layers_pre_and_post_norm_with_dropout() {
    let mut rng = Rng::new(8);
    for (norm_first, naming, dropout) in [
        (true, Naming::Torch, 0.0),
        (false, Naming::Bert, 0.0),
        (true, Naming::Torch, 0.2),
        (false, Naming::Torch, 0.2),
    ] {
        let cfg = TransformerLayerConfig {
            dim: 8,
            heads: 2,
            ffn: 12,
            dropout,
            attn_dropout: dropout,
            ffn_inner_dropout: naming == Naming::Torch,
            norm_first,
            eps: 1e-5,
            activation: Unary::Gelu,
        };
        let mut ps = ParamStore::new();
        let layer = TransformerEncoderLayer::new(&mut ps, "layer", naming, cfg, &mut rng).unwrap();
        let x = randn32(&[2, 4, 8], &mut rng);
        let m = mask(&[4, 2], 4, DType::F64);
        let mode = if dropout > 0.0 {
            Mode::Train { seed: 3 }
        } else {
            Mode::Eval
        };
        check_cached(
            &format!("encoder norm_first={norm_first} {naming:?} p={dropout}"),
            &ps,
            &x,
            |ps, x| layer.forward(ps, x, Some(&m), mode),
            |ps, c, dy| layer.backward(ps, c, dy),
        );
    }
}

#[test]
fn gated_embedding_unit() {
    let mut rng = Rng::new(9);
    for norm in [GeuNorm::None, GeuNorm::LayerNorm] {
        let mut ps = ParamStore::new();
        let geu = GatedEmbeddingUnit::new(&mut ps, "geu", 6, 5, norm, &mut rng).unwrap();
        let x = randn32(&[4, 6], &mut rng);
        check_cached(
            &format!("geu {norm:?}"),
            &ps,
            &x,
            |ps, x| geu.forward(ps, x),
            |ps, c, dy| geu.backward(ps, c, dy),
        );
        let (y, _) = geu.forward(&ps, &x).unwrap();
        for row in y.to_vec_f32().unwrap().chunks(5) {
            let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "GEU output is unit length, got {n}");
        }
    }
}
