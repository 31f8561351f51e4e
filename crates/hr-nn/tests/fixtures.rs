//! Parity with the reference fixtures (PyTorch): the audio pooling transformer composed from
//! hr-nn layers (forward and every gradient) and the NT-Xent loss.

mod common;

use hr_nn::layers::{
    sinusoidal_pe, Linear, Mode, Naming, TransformerEncoderLayer, TransformerLayerConfig,
};
use hr_nn::loss::NtXent;
use hr_nn::testing::{assert_grads_close, Reference};
use hr_nn::ParamStore;
use hr_tensor::testing::assert_close;
use hr_tensor::{ops, DType, Rng, Tensor, Unary};

struct Pooling {
    proj: Linear,
    layers: Vec<TransformerEncoderLayer>,
    out: Linear,
    global_bias: hr_nn::ParamId,
    pe_scale: hr_nn::ParamId,
}

fn build(ps: &mut ParamStore) -> Pooling {
    let mut rng = Rng::new(0);
    let cfg = TransformerLayerConfig {
        dim: 32,
        heads: 4,
        ffn: 64,
        dropout: 0.0,
        attn_dropout: 0.0,
        ffn_inner_dropout: true,
        norm_first: true,
        eps: 1e-5,
        activation: Unary::Gelu,
    };
    let proj = Linear::new(ps, "proj", 48, 32, true, &mut rng).unwrap();
    let global_bias = ps
        .add(
            "global_bias",
            Tensor::full(&[1, 1, 32], 0.0, DType::F32).unwrap(),
        )
        .unwrap();
    let pe_scale = ps
        .add("pe_scale", Tensor::full(&[1], 1.0, DType::F32).unwrap())
        .unwrap();
    let layers =
        TransformerEncoderLayer::stack(ps, "layers.layers", 2, Naming::Torch, cfg, &mut rng)
            .unwrap();
    let out = Linear::new(ps, "out", 32, 24, true, &mut rng).unwrap();
    Pooling {
        proj,
        layers,
        out,
        global_bias,
        pe_scale,
    }
}

#[test]
fn pooling_transformer_matches_pytorch() {
    let fx = Reference::open("pooling_transformer.safetensors");
    let get = |n: &str| fx.get(n);
    let mut ps = ParamStore::new();
    let m = build(&mut ps);
    fx.load_params(&mut ps);
    let pe_ref = get("param.pe");
    // The reference PE was computed in f32 (angles up to 191 rad): agreement to f32 rounding.
    assert_close(
        "sinusoidal PE",
        &sinusoidal_pe(192, 32).unwrap(),
        &pe_ref,
        1e-4,
    );

    let x = get("input");
    let (b, t) = (x.shape()[0], x.shape()[1]);
    let valid = get("valid").to_vec_f64().unwrap();
    let mut mask = Vec::new();
    for row in valid.chunks(t) {
        mask.push(1.0f32);
        mask.extend(row.iter().map(|&v| v as f32));
    }
    let mask = Tensor::from_vec(mask, &[b, t + 1]).unwrap();

    // Forward.
    let (xp, proj_c) = m.proj.forward(&ps, &x).unwrap();
    let global = ops::add(
        &ops::mean_axes(&xp, &[1], true).unwrap(),
        ps.value(m.global_bias),
    )
    .unwrap();
    let pe_t = ops::slice(&pe_ref, 0, 0, t).unwrap();
    let frames = ops::add(&xp, &ops::mul(&pe_t, ps.value(m.pe_scale)).unwrap()).unwrap();
    let mut seq = ops::concat(&[&global, &frames], 1).unwrap();
    let mut caches = Vec::new();
    for l in &m.layers {
        let (y, c) = l.forward(&ps, &seq, Some(&mask), Mode::Eval).unwrap();
        seq = y;
        caches.push(c);
    }
    let tok0 = ops::slice(&seq, 1, 0, 1)
        .unwrap()
        .reshape(&[b, 32])
        .unwrap();
    let (out, out_c) = m.out.forward(&ps, &tok0).unwrap();
    assert_close("output", &out, &get("output"), 1e-4);
    let r = get("R");
    let loss = ops::sum_all(&ops::mul(&out, &r).unwrap()).unwrap();
    assert_close("loss", &loss.reshape(&[1]).unwrap(), &get("loss"), 1e-4);

    // Backward.
    let dtok = m
        .out
        .backward(&mut ps, &out_c, &r)
        .unwrap()
        .reshape(&[b, 1, 32])
        .unwrap();
    let mut dseq = ops::pad_axis(&dtok, 1, 0, t + 1).unwrap();
    for (l, c) in m.layers.iter().zip(&caches).rev() {
        dseq = l.backward(&mut ps, c, &dseq).unwrap();
    }
    let parts = ops::concat_bwd(&dseq, &[1, t], 1).unwrap();
    let (dglobal, dframes) = (&parts[0], &parts[1]);
    ps.accumulate(m.global_bias, &ops::sum_to(dglobal, &[1, 1, 32]).unwrap())
        .unwrap();
    let dscale = ops::sum_all(&ops::mul(dframes, &pe_t).unwrap())
        .unwrap()
        .reshape(&[1])
        .unwrap();
    ps.accumulate(m.pe_scale, &dscale).unwrap();
    let mut dxp = dframes.clone();
    ops::axpy(
        &mut dxp,
        1.0,
        &ops::mean_axes_bwd(dglobal, xp.shape(), &[1]).unwrap(),
    )
    .unwrap();
    let dx = m.proj.backward(&mut ps, &proj_c, &dxp).unwrap();
    assert_close("grad.input", &dx, &get("grad.input"), 1e-3);
    let checked = assert_grads_close(ps.iter().map(|(_, p)| p), get, 1e-3);
    assert_eq!(checked, 30, "every parameter gradient compared");
}

#[test]
fn ntxent_matches_pytorch() {
    let fx = Reference::open("ntxent.safetensors");
    let get = |n: &str| fx.get(n);
    let tau: f64 = fx.file.metadata["tau"].trim_matches('"').parse().unwrap();
    let ids: Vec<u64> = fx.integers("clip_ids");
    assert!(
        ids.len() > ids.iter().collect::<std::collections::HashSet<_>>().len(),
        "fixture has same-clip duplicates"
    );
    let loss_fn = NtXent { tau };
    let (loss, cache) = loss_fn.forward(&get("audio"), &get("text"), &ids).unwrap();
    assert_close("loss", &loss.reshape(&[1]).unwrap(), &get("loss"), 1e-5);
    let (da, dt) = loss_fn.backward(&cache, 1.0).unwrap();
    assert_close("grad.audio", &da, &get("grad.audio"), 1e-4);
    assert_close("grad.text", &dt, &get("grad.text"), 1e-4);
}

#[test]
fn ntxent_gradient_check_f64() {
    let mut rng = Rng::new(3);
    let a = hr_tensor::testing::randn64(&[6, 5], &mut rng);
    let t = hr_tensor::testing::randn64(&[6, 5], &mut rng);
    let ids = [0u64, 1, 0, 2, 3, 1];
    let l = NtXent { tau: 0.3 };
    hr_tensor::testing::check_gradients(
        "ntxent",
        &[a, t],
        |x| {
            Ok(l.forward(&x[0], &x[1], &ids)
                .map_err(|e| hr_tensor::Error::invalid("ntxent", e.to_string()))?
                .0)
        },
        |x, dy| {
            let (_, c) = l
                .forward(&x[0], &x[1], &ids)
                .map_err(|e| hr_tensor::Error::invalid("ntxent", e.to_string()))?;
            let (da, dt) = l
                .backward(&c, dy.scalar_f64()?)
                .map_err(|e| hr_tensor::Error::invalid("ntxent", e.to_string()))?;
            Ok(vec![Some(da), Some(dt)])
        },
    );
}
