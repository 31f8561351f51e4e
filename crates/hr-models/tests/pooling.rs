//! The audio pooling transformer: parity with the PyTorch reference (`pooling_transformer`
//! fixture: forward and every gradient) and f64 gradient checks (dropout on, N = 0).

mod common;

use common::check_model;
use hr_models::pooling::{frame_mask, sinusoidal_pe, AudioPooling, PoolingConfig};
use hr_nn::testing::{assert_grads_close, Reference};
use hr_nn::{Mode, ParamStore};
use hr_tensor::testing::{assert_close, randn64};
use hr_tensor::{ops, Rng};

fn fixture_config() -> PoolingConfig {
    PoolingConfig {
        in_dim: 48,
        dim: 32,
        heads: 4,
        ffn: 64,
        layers: 2,
        out_dim: 24,
        dropout: 0.0,
        max_len: 192,
    }
}

#[test]
fn pooling_transformer_matches_pytorch() {
    let fx = Reference::open("pooling_transformer.safetensors");
    let get = |n: &str| fx.get(n);
    let mut ps = ParamStore::new();
    let m = AudioPooling::new(&mut ps, "", fixture_config(), &mut Rng::new(0)).unwrap();
    assert_close(
        "sinusoidal PE",
        &sinusoidal_pe(192, 32).unwrap(),
        &get("param.pe"),
        1e-4,
    );
    fx.load_params(&mut ps);
    let x = get("input");
    let valid: Vec<u8> = fx.integers("valid");
    assert!(valid.contains(&0), "fixture has padded frames");
    let (out, cache) = m.forward(&ps, &x, &valid, Mode::Eval).unwrap();
    assert_close("output", &out, &get("output"), 1e-4);
    let r = get("R");
    let loss = ops::sum_all(&ops::mul(&out, &r).unwrap()).unwrap();
    assert_close("loss", &loss.reshape(&[1]).unwrap(), &get("loss"), 1e-4);
    let dx = m.backward(&mut ps, &cache, &r).unwrap();
    assert_close("grad.input", &dx, &get("grad.input"), 1e-3);
    let trainable = ps.iter().map(|(_, p)| p).filter(|p| p.trainable);
    let checked = assert_grads_close(trainable, get, 1e-3);
    assert_eq!(checked, 30, "every parameter gradient compared");
}

fn tiny(layers: usize, dropout: f64) -> PoolingConfig {
    PoolingConfig {
        in_dim: 6,
        dim: 8,
        heads: 2,
        ffn: 10,
        layers,
        out_dim: 5,
        dropout,
        max_len: 16,
    }
}

fn check(name: &str, cfg: PoolingConfig, mode: Mode) {
    let mut ps = ParamStore::new();
    let m = AudioPooling::new(&mut ps, "audio", cfg, &mut Rng::new(3)).unwrap();
    let x = randn64(&[3, 5, 6], &mut Rng::new(4));
    let valid = frame_mask(&[1.0, 0.5, 0.1], 5);
    check_model(
        name,
        &ps,
        &[x],
        16,
        |ps, xs| Ok(m.forward(ps, &xs[0], &valid, mode)?.0),
        |ps, xs, dy| {
            let (_, c) = m.forward(ps, &xs[0], &valid, mode)?;
            Ok(vec![Some(m.backward(ps, &c, dy)?)])
        },
    );
}

#[test]
fn pooling_gradient_check_f64_with_dropout() {
    check("pooling train", tiny(2, 0.2), Mode::Train { seed: 9 });
}

#[test]
fn pooling_without_layers_is_masked_mean_and_linear() {
    check("pooling N=0", tiny(0, 0.1), Mode::Eval);
    let mut ps = ParamStore::new();
    let m = AudioPooling::new(&mut ps, "", tiny(0, 0.0), &mut Rng::new(3)).unwrap();
    assert_eq!(ps.len(), 2, "only out.weight and out.bias");
    let x = randn64(&[1, 4, 6], &mut Rng::new(1))
        .to_dtype(hr_tensor::DType::F32)
        .unwrap();
    let (a, _) = m.forward(&ps, &x, &[1, 1, 0, 0], Mode::Eval).unwrap();
    let (b, _) = m
        .forward(&ps, &ops::slice(&x, 1, 0, 2).unwrap(), &[1, 1], Mode::Eval)
        .unwrap();
    assert_close("padding ignored", &a, &b, 1e-6);
}

#[test]
fn frame_mask_is_ceil_of_the_valid_fraction() {
    assert_eq!(
        frame_mask(&[1.0, 0.5, 0.34, 0.0], 3),
        vec![1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    );
}

#[test]
fn bad_inputs_are_errors() {
    let mut ps = ParamStore::new();
    let m = AudioPooling::new(&mut ps, "", tiny(1, 0.0), &mut Rng::new(3)).unwrap();
    let cases: [(&[usize], usize, &str); 2] = [
        (&[2, 20, 6], 40, "longer than max_len"),
        (&[2, 3, 7], 6, "wrong width"),
    ];
    for (shape, frames, what) in cases {
        let x = randn64(shape, &mut Rng::new(1))
            .to_dtype(hr_tensor::DType::F32)
            .unwrap();
        let valid = vec![1u8; frames];
        assert!(m.forward(&ps, &x, &valid, Mode::Eval).is_err(), "{what}");
    }
}
