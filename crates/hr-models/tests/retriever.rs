//! The full `HybridRetriever`: presets, f64 gradient checks at tiny size for every fusion
//! (shared and separate metadata encoder), outputs and input validation.

mod common;

use common::{check_model, waveform_batch};
use hr_models::exchange::LocalRows;
use hr_models::fusion::FusionKind;
use hr_models::pooling::frame_mask;
use hr_models::presets::{from_toml_str, preset, preset_names};
use hr_models::retriever::{HybridRetriever, RetrievalBatch, RetrieverConfig, AUDIO_CNN_PREFIX};
use hr_models::text::TokenBatch;
use hr_nn::{Mode, ParamStore};
use hr_tensor::testing::randn64;
use hr_tensor::{DType, Rng, Tensor};

#[test]
fn presets_parse_with_paper_dimensions() {
    assert_eq!(preset_names(), vec!["tiny", "paper-base", "paper-large"]);
    let base = preset("paper-base").unwrap();
    assert_eq!(base.audio.backbone.as_deref(), Some("mn40_as_ext"));
    assert_eq!(
        (base.pooling.in_dim, base.pooling.dim, base.pooling.out_dim),
        (3840, 768, 1024)
    );
    assert_eq!(
        (
            base.text.hidden_size,
            base.text.num_hidden_layers,
            base.text.num_attention_heads
        ),
        (768, 12, 12)
    );
    assert_eq!(
        (base.text.hidden_dropout_prob, base.tau, base.fusion),
        (0.2, 0.05, FusionKind::Late)
    );
    let large = preset("paper-large").unwrap();
    assert_eq!(
        (
            large.text.hidden_size,
            large.text.num_hidden_layers,
            large.text.intermediate_size
        ),
        (1024, 24, 4096)
    );
    let tiny = preset("tiny").unwrap();
    assert!(!tiny.separate_metadata_encoder);
    assert_eq!(
        (tiny.audio.backbone.as_deref(), tiny.pooling.in_dim),
        (Some("mn01"), 96)
    );
    assert!(preset("huge").is_err());
}

#[test]
fn bad_config_is_an_error() {
    let text = include_str!("../../../configs/models/tiny.toml");
    assert!(from_toml_str(
        &text.replace("fusion = \"late\"", "fusion = \"early\""),
        "t"
    )
    .is_err());
    assert!(from_toml_str(&text.replace("tau = 0.05", "tau = 0.05\nmystery = 1"), "t").is_err());
    let mid_without_layers = text
        .replace("fusion = \"late\"", "fusion = \"mid\"")
        .replace("layers = 2", "layers = 0");
    assert!(from_toml_str(&mid_without_layers, "t").is_err());
}

fn tiny(fusion: FusionKind, separate: bool) -> RetrieverConfig {
    let mut cfg = preset("tiny").unwrap();
    cfg.fusion = fusion;
    cfg.separate_metadata_encoder = separate;
    cfg.text.vocab_size = 40;
    // Frame sequences in, so the CNN (tested through waveforms below) stays out of the checks.
    cfg.audio.backbone = None;
    cfg.pooling.in_dim = 24;
    cfg
}

fn batch(dtype: DType) -> RetrievalBatch {
    let t = common::four_text_rows();
    RetrievalBatch {
        frames: randn64(&[4, 5, 24], &mut Rng::new(8))
            .to_dtype(dtype)
            .unwrap(),
        frame_valid: frame_mask(&[1.0, 0.5, 0.8, 1.0], 5),
        queries: t.queries,
        metadata: t.metadata,
        metadata_present: t.metadata_present,
        clip_ids: t.clip_ids,
    }
}

fn gradient_check(fusion: FusionKind, separate: bool) {
    let mut ps = ParamStore::new();
    let model = HybridRetriever::new(&mut ps, tiny(fusion, separate), &mut Rng::new(21)).unwrap();
    let b = batch(DType::F64);
    let mode = Mode::Train { seed: 99 };
    let with = |frames: &Tensor| RetrievalBatch {
        frames: frames.clone(),
        ..b.clone()
    };
    check_model(
        &format!("retriever {fusion:?} separate={separate}"),
        &ps,
        std::slice::from_ref(&b.frames),
        3,
        |ps, xs| {
            let ex = &mut LocalRows;
            Ok(model
                .forward(&mut ps.clone(), &with(&xs[0]), mode, ex)?
                .0
                .loss)
        },
        |ps, xs, dy| {
            let (_, c) = model.forward(ps, &with(&xs[0]), mode, &mut LocalRows)?;
            let dloss = dy.scalar_f64()?;
            Ok(vec![Some(model.backward(ps, &c, dloss, &mut LocalRows)?)])
        },
    );
}

#[test]
fn retriever_gradient_check_f64_late_shared() {
    gradient_check(FusionKind::Late, false);
}

#[test]
fn retriever_gradient_check_f64_mid_shared() {
    gradient_check(FusionKind::Mid, false);
}

#[test]
fn retriever_gradient_check_f64_none_and_separate_encoders() {
    gradient_check(FusionKind::None, false);
    gradient_check(FusionKind::Late, true);
    gradient_check(FusionKind::Mid, true);
}

#[test]
fn outputs_have_the_expected_shapes() {
    for fusion in [FusionKind::None, FusionKind::Late, FusionKind::Mid] {
        let mut ps = ParamStore::new();
        let model = HybridRetriever::new(&mut ps, tiny(fusion, false), &mut Rng::new(1)).unwrap();
        let (out, cache) = model
            .forward(&mut ps, &batch(DType::F32), Mode::Eval, &mut LocalRows)
            .unwrap();
        assert_eq!(out.queries.shape(), &[4, 16]);
        match fusion {
            FusionKind::Mid => assert_eq!(
                out.scores.as_ref().map(|s| s.shape().to_vec()),
                Some(vec![4, 4])
            ),
            _ => assert_eq!(
                out.items.as_ref().map(|s| s.shape().to_vec()),
                Some(vec![4, 16])
            ),
        }
        assert!(out.loss.scalar_f64().unwrap().is_finite());
        let dx = model
            .backward(&mut ps, &cache, 1.0, &mut LocalRows)
            .unwrap();
        assert_eq!(dx.shape(), &[4, 5, 24]);
    }
}

/// Search scores mid fusion from indexed item tokens and the query side (two matrix
/// products): the same scores as the joint forward, for items with and without metadata.
#[test]
fn mid_items_and_query_side_score_as_the_forward_does() {
    let mut ps = ParamStore::new();
    let model =
        HybridRetriever::new(&mut ps, tiny(FusionKind::Mid, false), &mut Rng::new(5)).unwrap();
    let mut b = batch(DType::F32);
    b.metadata_present[1] = false;
    let (out, _) = model
        .forward(&mut ps, &b, Mode::Eval, &mut LocalRows)
        .unwrap();
    let want = out.scores.unwrap().to_vec_f64().unwrap();
    let (a, m) = model.encode_mid_items(&ps, &b).unwrap();
    let q = model.encode_mid_queries(&ps, &b.queries).unwrap();
    let got = model
        .mid_scores(&a, &m, &b.metadata_present, &q)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    let norms: Vec<f64> = a
        .to_vec_f64()
        .unwrap()
        .chunks(16)
        .map(|r| r.iter().map(|x| x * x).sum())
        .collect();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
    assert!(
        model.encode_items(&ps, &b).is_err(),
        "mid has no single item embedding"
    );
}

#[test]
fn content_only_model_needs_no_metadata() {
    let mut ps = ParamStore::new();
    let model =
        HybridRetriever::new(&mut ps, tiny(FusionKind::None, false), &mut Rng::new(1)).unwrap();
    let b = RetrievalBatch {
        metadata: TokenBatch::default(),
        metadata_present: Vec::new(),
        ..batch(DType::F32)
    };
    let (_, cache) = model
        .forward(&mut ps, &b, Mode::Train { seed: 1 }, &mut LocalRows)
        .unwrap();
    model
        .backward(&mut ps, &cache, 1.0, &mut LocalRows)
        .unwrap();
}

#[test]
fn metadata_encoder_is_shared_unless_separate() {
    let count = |separate| {
        let mut ps = ParamStore::new();
        HybridRetriever::new(&mut ps, tiny(FusionKind::Late, separate), &mut Rng::new(1)).unwrap();
        ps.iter()
            .filter(|(_, p)| p.name.starts_with("meta_text"))
            .count()
    };
    assert_eq!(count(false), 0);
    assert_eq!(count(true), 37 + 2, "a second BERT and projection");
}

#[test]
fn bad_batches_are_errors() {
    let mut ps = ParamStore::new();
    let model =
        HybridRetriever::new(&mut ps, tiny(FusionKind::Late, false), &mut Rng::new(1)).unwrap();
    type Spoil = fn(&mut RetrievalBatch);
    let cases: [(&str, Spoil); 3] = [
        ("row count mismatch", |b| {
            b.clip_ids.pop();
        }),
        ("token id outside the vocabulary", |b| {
            b.queries.ids[1] = 1000
        }),
        ("NaN input", |b| {
            b.frames.as_mut_slice::<f32>().unwrap()[3] = f32::NAN;
        }),
    ];
    for (what, spoil) in cases {
        let mut b = batch(DType::F32);
        spoil(&mut b);
        let out = model.forward(&mut ps, &b, Mode::Eval, &mut LocalRows);
        assert!(out.is_err(), "{what}");
    }
}

/// The tiny preset (its CNN included, vocabulary 40) initialised with `seed`.
fn tiny_with_cnn(seed: u64) -> (HybridRetriever, ParamStore) {
    let mut cfg = preset("tiny").unwrap();
    cfg.text.vocab_size = 40;
    let mut ps = ParamStore::new();
    let model = HybridRetriever::new(&mut ps, cfg, &mut Rng::new(seed)).unwrap();
    (model, ps)
}

#[test]
fn waveforms_run_through_the_cnn_and_back() {
    let (model, mut ps) = tiny_with_cnn(3);
    assert!(model.audio_cnn().is_some());
    let wb = waveform_batch();
    // Eval: the waveform path equals frames from encode_audio fed to forward.
    let (out, _) = model
        .forward(&mut ps, &wb, Mode::Eval, &mut LocalRows)
        .unwrap();
    let (frames, frame_valid) = model
        .encode_audio(&mut ps, &wb.waveforms, &wb.valid_lengths, Mode::Eval)
        .unwrap();
    assert_eq!(frames.shape()[2], 96);
    let t = frames.shape()[1];
    assert_eq!(
        frame_valid[t..2 * t].iter().filter(|&&v| v == 1).count(),
        t.div_ceil(2)
    );
    let fb = RetrievalBatch {
        frames,
        frame_valid,
        ..batch(DType::F32)
    };
    let (same, _) = model
        .forward(&mut ps, &fb, Mode::Eval, &mut LocalRows)
        .unwrap();
    assert_eq!(
        out.loss.scalar_f64().unwrap(),
        same.loss.scalar_f64().unwrap()
    );
    // Train: gradients reach the CNN.
    let (out, cache) = model
        .forward(&mut ps, &wb, Mode::Train { seed: 4 }, &mut LocalRows)
        .unwrap();
    assert!(out.loss.scalar_f64().unwrap().is_finite());
    model
        .backward(&mut ps, &cache, 1.0, &mut LocalRows)
        .unwrap();
    let grad = |name: &str| {
        let id = ps.id(name).unwrap_or_else(|| panic!("no {name}"));
        ps.grad(id)
            .to_vec_f64()
            .unwrap()
            .iter()
            .map(|v| v.abs())
            .sum::<f64>()
    };
    assert!(grad("audio_cnn.features.0.0.weight") > 0.0);
    assert!(grad("text.embeddings.word_embeddings.weight") > 0.0);
}

/// The trainer averages every non-CNN gradient while the CNN's backward runs: that needs the
/// CNN part to touch nothing else, and the two parts to equal the whole backward.
#[test]
fn the_cnn_backward_touches_only_the_cnn_gradients() {
    let (model, mut ps) = tiny_with_cnn(9);
    let wb = waveform_batch();
    let (_, cache) = model
        .forward(&mut ps, &wb, Mode::Train { seed: 4 }, &mut LocalRows)
        .unwrap();
    let grads = |ps: &ParamStore| -> Vec<(String, Vec<f64>)> {
        ps.iter()
            .map(|(_, p)| (p.name.clone(), p.grad.to_vec_f64().unwrap()))
            .collect()
    };
    ps.zero_grad().unwrap();
    model
        .backward(&mut ps, &cache, 1.0, &mut LocalRows)
        .unwrap();
    let whole = grads(&ps);
    ps.zero_grad().unwrap();
    let cnn_backward = model
        .backward_deferring_cnn(&mut ps, &cache, 1.0, &mut LocalRows)
        .unwrap();
    let heads = grads(&ps);
    cnn_backward.run(&mut ps).unwrap();
    let parts = grads(&ps);
    for ((name, h), (_, p)) in heads.iter().zip(&parts) {
        if !name.starts_with(AUDIO_CNN_PREFIX) {
            assert_eq!(h, p, "{name} changed in the CNN backward");
        }
    }
    assert_eq!(whole, parts, "heads + CNN != the whole backward");
    let cnn_grad: f64 = parts
        .iter()
        .filter(|(n, _)| n.starts_with(AUDIO_CNN_PREFIX))
        .map(|(_, g)| g.iter().map(|v| v.abs()).sum::<f64>())
        .sum();
    assert!(cnn_grad > 0.0);
}

#[test]
fn backbone_width_must_match_the_pooling_input() {
    let mut cfg = preset("tiny").unwrap();
    cfg.pooling.in_dim = 24;
    assert!(HybridRetriever::new(&mut ParamStore::new(), cfg, &mut Rng::new(1)).is_err());
}
