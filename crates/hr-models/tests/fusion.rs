//! Fusion modules: f64 gradient checks of late fusion, mid-level fusion (items through the
//! joint transformer) and the GEU-based mid scoring, plus the empty-metadata behaviour.

mod common;

use common::check_model;
use hr_models::fusion::{late_fuse, late_fuse_bwd, GateNorm, MidFusion, MidInputs};
use hr_models::pooling::{frame_mask, AudioPooling, PoolingConfig};
use hr_nn::{Mode, ParamStore};
use hr_tensor::testing::{assert_close, randn64};
use hr_tensor::{ops, DType, Rng, Tensor};

const HIDDEN: usize = 7;

fn pooling_cfg() -> PoolingConfig {
    PoolingConfig {
        in_dim: 6,
        dim: 8,
        heads: 2,
        ffn: 10,
        layers: 2,
        out_dim: 5,
        dropout: 0.2,
        max_len: 16,
    }
}

fn build(norm: GateNorm) -> (ParamStore, AudioPooling, MidFusion) {
    let mut ps = ParamStore::new();
    let mut rng = Rng::new(11);
    let pool = AudioPooling::new(&mut ps, "audio", pooling_cfg(), &mut rng).unwrap();
    let mid = MidFusion::new(&mut ps, "mid", &pool, HIDDEN, norm, &mut rng).unwrap();
    (ps, pool, mid)
}

#[test]
fn late_fusion_gradient_check_f64() {
    let mut rng = Rng::new(1);
    let inputs = [randn64(&[3, 4], &mut rng), randn64(&[3, 4], &mut rng)];
    let present = [true, false, true];
    check_model(
        "late fusion",
        &ParamStore::new(),
        &inputs,
        12,
        |_, xs| late_fuse(&xs[0], &xs[1], &present),
        |_, _, dy| {
            let (da, dm) = late_fuse_bwd(dy, &present)?;
            Ok(vec![Some(da), Some(dm)])
        },
    );
    let fused = late_fuse(&inputs[0], &inputs[1], &present).unwrap();
    let row = |t: &Tensor| ops::slice(t, 0, 1, 1).unwrap();
    assert_close(
        "empty metadata = audio only",
        &row(&fused),
        &row(&inputs[0]),
        1e-15,
    );
}

/// Both tokens as one (B, 2 * out) output.
fn items_out(
    ps: &ParamStore,
    pool: &AudioPooling,
    mid: &MidFusion,
    xs: &[Tensor],
    valid: &[u8],
    present: &[bool],
    mode: Mode,
) -> hr_models::Result<Tensor> {
    let (a, m, _) = mid.items(
        ps,
        pool,
        MidInputs {
            frames: &xs[0],
            valid,
            meta: &xs[1],
            present,
        },
        mode,
    )?;
    Ok(ops::concat(&[&a, &m], 1)?)
}

#[test]
fn mid_fusion_items_gradient_check_f64() {
    let (ps, pool, mid) = build(GateNorm::LayerNorm);
    let mut rng = Rng::new(2);
    let inputs = [
        randn64(&[3, 4, 6], &mut rng),
        randn64(&[3, HIDDEN], &mut rng),
    ];
    let valid = frame_mask(&[1.0, 0.5, 0.75], 4);
    let present = [true, false, true];
    let mode = Mode::Train { seed: 5 };
    check_model(
        "mid items",
        &ps,
        &inputs,
        12,
        |ps, xs| items_out(ps, &pool, &mid, xs, &valid, &present, mode),
        |ps, xs, dy| {
            let inputs = MidInputs {
                frames: &xs[0],
                valid: &valid,
                meta: &xs[1],
                present: &present,
            };
            let (_, _, c) = mid.items(ps, &pool, inputs, mode)?;
            let parts = ops::concat_bwd(dy, &[5, 5], 1)?;
            let (dx, dmeta) = mid.items_bwd(ps, &pool, &c, &parts[0], &parts[1])?;
            Ok(vec![Some(dx), Some(dmeta)])
        },
    );
}

fn check_scoring(norm: GateNorm) {
    let (ps, _, mid) = build(norm);
    let mut rng = Rng::new(3);
    let inputs = [
        randn64(&[4, 5], &mut rng),
        randn64(&[4, 5], &mut rng),
        randn64(&[3, 5], &mut rng),
    ];
    let present = [true, false, true, true];
    check_model(
        "mid score",
        &ps,
        &inputs,
        16,
        |ps, xs| Ok(mid.score(ps, &xs[0], &xs[1], &present, &xs[2])?.0),
        |ps, xs, dy| {
            let (_, c) = mid.score(ps, &xs[0], &xs[1], &present, &xs[2])?;
            let (da, dm, dq) = mid.score_bwd(ps, &c, dy)?;
            Ok(vec![Some(da), Some(dm), Some(dq)])
        },
    );
}

#[test]
fn mid_scoring_with_geus_gradient_check_f64() {
    check_scoring(GateNorm::LayerNorm);
    check_scoring(GateNorm::None);
}

#[test]
fn mid_fusion_masks_empty_metadata() {
    let (ps, pool, mid) = build(GateNorm::LayerNorm);
    let mut rng = Rng::new(4);
    let x = randn64(&[2, 3, 6], &mut rng).to_dtype(DType::F32).unwrap();
    let meta = randn64(&[2, HIDDEN], &mut rng)
        .to_dtype(DType::F32)
        .unwrap();
    let other = randn64(&[2, HIDDEN], &mut rng)
        .to_dtype(DType::F32)
        .unwrap();
    let valid = frame_mask(&[1.0, 1.0], 3);
    let present = [false, true];
    let inputs = |meta| MidInputs {
        frames: &x,
        valid: &valid,
        meta,
        present: &present,
    };
    let (a1, _, _) = mid.items(&ps, &pool, inputs(&meta), Mode::Eval).unwrap();
    let (a2, m2, _) = mid.items(&ps, &pool, inputs(&other), Mode::Eval).unwrap();
    let row = |t: &Tensor, i: usize| ops::slice(t, 0, i, 1).unwrap();
    assert_close(
        "audio token ignores masked metadata",
        &row(&a1, 0),
        &row(&a2, 0),
        1e-6,
    );
    let changed = hr_tensor::testing::max_rel_diff(&row(&a1, 1), &row(&a2, 1)).unwrap();
    assert!(changed > 1e-4, "present metadata reaches the audio token");
    // Scores of the item without metadata are the audio term alone.
    let q = randn64(&[3, 5], &mut rng).to_dtype(DType::F32).unwrap();
    let (s, _) = mid.score(&ps, &a2, &m2, &present, &q).unwrap();
    let (s_audio, _) = mid.score(&ps, &a2, &m2, &[false, false], &q).unwrap();
    assert_close("absent metadata row", &row(&s, 0), &row(&s_audio, 0), 1e-6);
}

#[test]
fn mid_fusion_needs_transformer_layers() {
    let mut ps = ParamStore::new();
    let cfg = PoolingConfig {
        layers: 0,
        ..pooling_cfg()
    };
    let pool = AudioPooling::new(&mut ps, "audio", cfg, &mut Rng::new(1)).unwrap();
    assert!(MidFusion::new(
        &mut ps,
        "mid",
        &pool,
        HIDDEN,
        GateNorm::None,
        &mut Rng::new(1)
    )
    .is_err());
}
