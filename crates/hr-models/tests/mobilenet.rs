//! EfficientAT MobileNetV3: parity with the PyTorch reference (mn04 fixture: eval outputs,
//! train-mode features, every gradient, running statistics), the mn40 import contract,
//! finite-difference gradient checks, windowing and error reporting.

use std::collections::BTreeMap;

use hr_models::mobilenet::{
    make_divisible, window_layout, MobileNetConfig, MobileNetGrads, MobileNetV3, Part,
};
use hr_nn::io::{read_safetensors, serialize_safetensors, SafeFile};
use hr_nn::{Mode, ParamId, ParamStore};
use hr_tensor::testing::{assert_close, check_gradients_with, randn32, randn64};
use hr_tensor::{ops, DType, Device, Rng, Tensor};

use hr_tensor::testing::reference_fixture as fixture;

/// A model of `cfg` initialised with seed 0, in a store of its own.
fn built(cfg: MobileNetConfig) -> (ParamStore, MobileNetV3) {
    let mut ps = ParamStore::new();
    let m = MobileNetV3::new(&mut ps, cfg, &mut Rng::new(0)).unwrap();
    (ps, m)
}

/// The mn04 fixture and a model whose parameters and buffers are the fixture's.
fn mn04() -> (SafeFile, ParamStore, MobileNetV3) {
    let path = fixture("mobilenetv3_mn04.safetensors");
    let f = read_safetensors(&path).unwrap();
    assert_eq!(f.metadata["width_mult"], "0.4");
    let (mut ps, m) = built(MobileNetConfig::from_name("mn04").unwrap());
    for (_, p) in ps.iter_mut() {
        let t = f.get(&path, &format!("param.{}", p.name)).unwrap();
        assert_eq!(t.shape(), p.value.shape(), "{}", p.name);
        p.value = t.clone();
    }
    let n_file = f.tensors.keys().filter(|k| k.starts_with("param.")).count();
    assert_eq!(
        ps.len(),
        n_file,
        "every fixture parameter is a model parameter"
    );
    (f, ps, m)
}

#[test]
fn mn04_eval_matches_reference() {
    let (f, mut ps, m) = mn04();
    let (out, _) = m.forward(&mut ps, &f.tensors["input"], Mode::Eval).unwrap();
    assert_close(
        "eval.logits",
        out.logits.as_ref().unwrap(),
        &f.tensors["eval.logits"],
        1e-4,
    );
    for i in [0, 1, 4, 7, 16] {
        let name = format!("eval.features{i}");
        assert_close(&name, &out.feature_maps[i], &f.tensors[&name], 1e-4);
    }
    let f16 = &out.feature_maps[16];
    assert_eq!(out.frames.shape(), &[2, f16.shape()[3], f16.shape()[1]]);
    assert_close(
        "pooled",
        &out.pooled,
        &ops::mean_axes(f16, &[2, 3], false).unwrap(),
        1e-6,
    );
}

#[test]
fn mn04_train_gradients_and_running_stats_match_reference() {
    let (f, mut ps, m) = mn04();
    let (out, cache) = m
        .forward(&mut ps, &f.tensors["input"], Mode::Train { seed: 1 })
        .unwrap();
    assert_close(
        "train.features16",
        &out.feature_maps[16],
        &f.tensors["train.features16"],
        1e-4,
    );
    let grads = MobileNetGrads {
        features16: Some(f.tensors["train.R"].clone()),
        ..Default::default()
    };
    let dx = m.backward(&mut ps, &cache, &grads).unwrap();
    assert_close("grad.input", &dx, &f.tensors["grad.input"], 1e-3);
    let (mut n_grads, mut n_stats, mut zero) = (0, 0, Vec::new());
    for (_, p) in ps.iter() {
        if !p.trainable {
            assert_close(
                &p.name,
                &p.value,
                &f.tensors[&format!("after_train.{}", p.name)],
                1e-4,
            );
            n_stats += 1;
            continue;
        }
        let Some(want) = f.tensors.get(&format!("grad.{}", p.name)) else {
            assert!(
                p.name.starts_with("classifier.") && max_abs(&p.grad) == 0.0,
                "{}: head is outside the loss",
                p.name
            );
            continue;
        };
        n_grads += 1;
        match p
            .name
            .strip_suffix(".bias")
            .and_then(|w| f.tensors.get(&format!("grad.{w}.weight")))
        {
            // The true gradient of a BN bias whose output only reaches later train-mode BNs
            // through 1x1 convs is zero (the shift is removed by the batch mean): both sides are
            // f32 rounding noise, compared against the scale of the same BN's weight gradient.
            Some(w) if max_abs(want) < 1e-5 * max_abs(w) => {
                assert!(
                    max_abs(&p.grad) < 1e-5 * max_abs(w),
                    "{}: expected ~0",
                    p.name
                );
                zero.push(p.name.clone());
            }
            _ => assert_close(&format!("grad.{}", p.name), &p.grad, want, 1e-3),
        }
    }
    let project_bn_biases: Vec<String> = m
        .config()
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "features.{}.block.{}.1.bias",
                i + 1,
                1 + b.has_expand() as usize + b.se.is_some() as usize
            )
        })
        .collect();
    assert_eq!(
        zero, project_bn_biases,
        "only the project BN biases have a zero gradient"
    );
    assert_eq!(
        n_grads,
        f.tensors
            .keys()
            .filter(|k| k.starts_with("grad.") && *k != "grad.input")
            .count()
    );
    assert_eq!(
        n_stats,
        f.tensors
            .keys()
            .filter(|k| k.starts_with("after_train."))
            .count()
    );
}

/// `||a - b|| / ||b||` (Euclidean norms, f64).
fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(1e-300)).sqrt()
}

/// The mn04 training step under a mixed-precision mode against the PyTorch f32 reference:
/// `(features.16, input gradient, worst parameter gradient, its name)` as [`rel_l2`] errors
/// (gradients whose reference is zero up to rounding, the project BN biases, are skipped).
fn mn04_mixed_errors(acts: bool) -> (f64, f64, f64, String) {
    let (f, mut ps, m) = mn04();
    let _mixed = (
        hr_tensor::autocast::bf16_matmuls(true),
        hr_tensor::autocast::bf16_activations(acts),
    );
    let (out, cache) = m
        .forward(&mut ps, &f.tensors["input"], Mode::Train { seed: 1 })
        .unwrap();
    let want_maps = if acts { DType::BF16 } else { DType::F32 };
    assert_eq!(out.feature_maps[0].dtype(), want_maps);
    assert_eq!(out.feature_maps[15].dtype(), want_maps);
    assert_eq!(out.feature_maps[16].dtype(), DType::F32);
    assert_eq!(out.pooled.dtype(), DType::F32);
    let f16 = rel_l2(&out.feature_maps[16], &f.tensors["train.features16"]);
    let grads = MobileNetGrads {
        features16: Some(f.tensors["train.R"].clone()),
        ..Default::default()
    };
    let dx = m.backward(&mut ps, &cache, &grads).unwrap();
    assert_eq!(dx.dtype(), DType::F32);
    let input = rel_l2(&dx, &f.tensors["grad.input"]);
    let (mut worst, mut name) = (0.0f64, String::new());
    for (_, p) in ps.iter() {
        let Some(want) = f.tensors.get(&format!("grad.{}", p.name)) else {
            continue;
        };
        let weight_grad = p
            .name
            .strip_suffix(".bias")
            .and_then(|w| f.tensors.get(&format!("grad.{w}.weight")));
        if weight_grad.is_some_and(|w| max_abs(want) < 1e-5 * max_abs(w)) {
            continue;
        }
        let d = rel_l2(&p.grad, want);
        if d > worst {
            (worst, name) = (d, p.name.clone());
        }
    }
    (f16, input, worst, name)
}

/// Mixed precision with bf16 activations (`autocast::bf16_activations` + bf16 GEMMs, what
/// `run.precision = "bf16"` trains with): activations and their gradients are bf16 inside the
/// network (the maps come back in bf16, `features.16` and the input gradient in f32). bf16
/// rounding through 17 train-mode layers of this random-weight network moves the step by
/// several percent already with bf16 GEMMs alone (measured: features.16 6.0e-2, input gradient
/// 2.4e-1, worst parameter gradient 3.6e-1, normwise); storing the activations in bf16 roughly
/// doubles the roundings (1.1e-1, 3.5e-1, 5.0e-1). The test bounds both (a wrong kernel or a
/// lost gradient lands far outside), and the trainer's demo test checks that this mode trains
/// into the f32 metrics band.
#[test]
fn mn04_bf16_activations_track_the_f32_reference() {
    let gemm = mn04_mixed_errors(false);
    let acts = mn04_mixed_errors(true);
    for (what, e) in [
        ("bf16 GEMMs only", &gemm),
        ("bf16 GEMMs and activations", &acts),
    ] {
        println!(
            "{what}: features16 {:.2e}, input grad {:.2e}, worst param grad {:.2e} ({})",
            e.0, e.1, e.2, e.3
        );
    }
    let (names, limits) = (
        ["features16", "input grad", "worst param grad"],
        [0.2, 0.6, 0.8],
    );
    let pairs = [(gemm.0, acts.0), (gemm.1, acts.1), (gemm.2, acts.2)];
    for ((name, limit), (g, a)) in names.iter().zip(limits).zip(pairs) {
        assert!(
            a < limit,
            "{name}: {a:e} with bf16 activations (limit {limit})"
        );
        assert!(
            a < 2.5 * g,
            "{name}: {a:e} with bf16 activations vs {g:e} without"
        );
    }
}

#[test]
fn config_family_and_make_divisible() {
    assert_eq!(make_divisible(6.4, 8), 8);
    assert_eq!(make_divisible(28.8, 8), 32);
    assert_eq!(make_divisible(68.0, 8), 72);
    let c40 = MobileNetConfig::from_name("mn40_as_ext").unwrap();
    assert_eq!(c40, MobileNetConfig::from_width(4.0).unwrap());
    let b: Vec<_> = c40
        .blocks
        .iter()
        .map(|b| (b.input, b.expanded, b.out, b.se))
        .collect();
    assert_eq!(b[3], (96, 288, 160, Some(72)));
    assert_eq!(b[10], (320, 1920, 448, Some(480)));
    assert_eq!((c40.stem, c40.last_conv, c40.head_hidden), (64, 3840, 5120));
    for name in [
        "mn01", "mn02", "mn04", "mn05", "mn10", "mn20", "mn30", "mn40",
    ] {
        let c = MobileNetConfig::from_name(name).unwrap();
        assert!((c.width - name[2..].parse::<f64>().unwrap() / 10.0).abs() < 1e-12);
    }
    for bad in ["mn", "mx40", "mn4", "mn00", "mn4a", "mn40x"] {
        assert!(MobileNetConfig::from_name(bad).is_err(), "{bad}");
    }
    assert_eq!(c40.num_params(), 68_427_303);
}

#[test]
fn param_shapes_match_the_built_model() {
    let cfg = MobileNetConfig::from_width(0.1).unwrap();
    let mut ps = ParamStore::new();
    MobileNetV3::new(&mut ps, cfg.clone(), &mut Rng::new(0)).unwrap();
    let built: Vec<_> = ps
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.shape().to_vec(), p.trainable))
        .collect();
    assert_eq!(built, cfg.param_shapes());
    assert!(
        cfg.blocks.iter().any(|b| !b.has_expand() && b.input != 16),
        "width 0.1 drops more expand convs"
    );
}

#[test]
fn mn40_has_every_key_and_shape_of_the_efficientat_state_dict() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("mn40_as_ext_state_dict_shapes.json")).unwrap(),
    )
    .unwrap();
    let want: BTreeMap<String, Vec<usize>> = json["state_dict_shapes"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
            )
        })
        .collect();
    let (ps, m) = built(MobileNetConfig::from_name("mn40").unwrap());
    let got: BTreeMap<String, Vec<usize>> = ps
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.shape().to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        ps.num_trainable(),
        json["n_params"].as_u64().unwrap() as usize
    );
    assert_eq!(ps.num_trainable(), 68_427_303);
    assert_eq!(m.param_ids().len(), ps.len());
}

fn max_abs(t: &Tensor) -> f64 {
    t.to_vec_f64()
        .unwrap()
        .iter()
        .fold(0f64, |m, v| m.max(v.abs()))
}

/// A copy of `ps` with the entries `ids` set to `values`.
fn with_values(ps: &ParamStore, ids: &[ParamId], values: &[Tensor]) -> ParamStore {
    let mut p = ps.clone();
    for (&id, v) in ids.iter().zip(values) {
        *p.value_mut(id) = v.clone();
    }
    p
}

fn tensor_err(e: impl std::fmt::Display) -> hr_tensor::Error {
    hr_tensor::Error::invalid("mobilenet", e.to_string())
}

/// A tiny f64 model (width 0.1) with random BN affine parameters and a sample of parameter ids.
fn tiny_f64() -> (ParamStore, MobileNetV3, Vec<ParamId>) {
    let mut ps = ParamStore::new();
    let mut rng = Rng::new(5);
    let mut cfg = MobileNetConfig::from_width(0.1).unwrap();
    cfg.bn_momentum = 1.0; // one training pass sets the running statistics to the batch's
    let m = MobileNetV3::new(&mut ps, cfg, &mut rng).unwrap();
    for (_, p) in ps.iter_mut().filter(|(_, p)| p.value.rank() == 1) {
        let noise = randn32(p.value.shape(), &mut rng);
        p.value = ops::add(&p.value, &ops::scale(&noise, 0.2).unwrap()).unwrap();
        if p.name.ends_with("running_var") {
            p.value = ops::affine(&p.value, 0.0, 1.5).unwrap();
        }
    }
    ps.to_dtype(DType::F64).unwrap();
    let trainable: Vec<ParamId> = ps
        .iter()
        .filter(|(_, p)| p.trainable)
        .map(|(id, _)| id)
        .collect();
    let sample = trainable
        .iter()
        .step_by(11)
        .copied()
        .chain(trainable.last().copied())
        .collect();
    (ps, m, sample)
}

/// Every output of a forward as one (B, n) tensor: logits, pooled, frames.
fn all_outputs(out: &hr_models::mobilenet::MobileNetOutput) -> hr_tensor::Result<Tensor> {
    let b = out.pooled.shape()[0];
    let frames = out.frames.reshape(&[b, out.frames.numel() / b])?;
    ops::concat(
        &[out.logits.as_ref().expect("head ran"), &out.pooled, &frames],
        1,
    )
}

#[test]
fn tiny_mobilenet_gradient_check_f64() {
    for mode in [Mode::Train { seed: 3 }, Mode::Eval] {
        tiny_gradient_check(mode, 9);
    }
}

fn tiny_gradient_check(mode: Mode, xseed: u64) {
    let (mut ps, m, ids) = tiny_f64();
    let x = randn64(&[2, 1, 64, 48], &mut Rng::new(xseed));
    // Evaluation with running statistics of this input keeps activations normalised (well
    // conditioned finite differences).
    m.forward(&mut ps, &x, Mode::Train { seed: 0 }).unwrap();
    let mut inputs = vec![x];
    inputs.extend(ids.iter().map(|&id| ps.value(id).clone()));
    let fwd = |xs: &[Tensor]| {
        let mut p = with_values(&ps, &ids, &xs[1..]);
        let (out, _) = m.forward(&mut p, &xs[0], mode).map_err(tensor_err)?;
        all_outputs(&out)
    };
    let bwd = |xs: &[Tensor], dy: &Tensor| {
        let mut p = with_values(&ps, &ids, &xs[1..]);
        p.zero_grad().map_err(tensor_err)?;
        let (out, cache) = m.forward(&mut p, &xs[0], mode).map_err(tensor_err)?;
        let (c, s) = (out.pooled.shape()[1], out.frames.numel() / 2);
        let parts = ops::concat_bwd(dy, &[527, c, s], 1)?;
        let grads = MobileNetGrads {
            logits: Some(parts[0].clone()),
            pooled: Some(parts[1].clone()),
            frames: Some(parts[2].reshape(out.frames.shape())?),
            features16: None,
        };
        let dx = m.backward(&mut p, &cache, &grads).map_err(tensor_err)?;
        let mut g = vec![Some(dx)];
        g.extend(ids.iter().map(|&id| Some(p.grad(id).clone())));
        Ok(g)
    };
    check_gradients_with(&format!("mn01 {mode:?}"), &inputs, fwd, bwd, 1e-5, 6);
}

#[test]
fn windows_concatenate_frames_and_backpropagate() {
    assert_eq!(window_layout(3000, 1000), (3, 1000));
    assert_eq!(window_layout(3500, 1000), (3, 1000));
    assert_eq!(window_layout(700, 1000), (1, 700));
    let (ps, m, ids) = tiny_f64();
    let mel = randn64(&[2, 1, 32, 90], &mut Rng::new(4));
    // Eval: each window alone gives the same frames (no cross-window interaction).
    let mut p = ps.clone();
    let (frames, _) = m.forward_windows(&mut p, &mel, Mode::Eval, 40).unwrap();
    let pieces: Vec<Tensor> = (0..2)
        .map(|k| {
            m.forward_backbone(
                &mut p,
                &ops::slice(&mel, 3, 40 * k, 40).unwrap(),
                Mode::Eval,
            )
            .unwrap()
            .0
            .frames
        })
        .collect();
    let want = ops::concat(&[&pieces[0], &pieces[1]], 1).unwrap();
    assert_close("windowed frames", &frames, &want, 1e-12);
    // Train mode: gradient check through the windowing (input and a few parameters).
    let mode = Mode::Train { seed: 2 };
    let mut inputs = vec![mel];
    inputs.extend(ids.iter().step_by(4).map(|&id| ps.value(id).clone()));
    let sub: Vec<ParamId> = ids.iter().step_by(4).copied().collect();
    check_gradients_with(
        "windows",
        &inputs,
        |xs| {
            Ok(
                m.forward_windows(&mut with_values(&ps, &sub, &xs[1..]), &xs[0], mode, 40)
                    .map_err(tensor_err)?
                    .0,
            )
        },
        |xs, dy| {
            let mut p = with_values(&ps, &sub, &xs[1..]);
            p.zero_grad().map_err(tensor_err)?;
            let (_, c) = m
                .forward_windows(&mut p, &xs[0], mode, 40)
                .map_err(tensor_err)?;
            let dx = m.backward_windows(&mut p, &c, dy).map_err(tensor_err)?;
            let tail = ops::slice(&dx, 3, 80, 10)?;
            assert!(
                tail.to_vec_f64()?.iter().all(|&v| v == 0.0),
                "dropped tail has zero gradient"
            );
            let mut g = vec![Some(dx)];
            g.extend(sub.iter().map(|&id| Some(p.grad(id).clone())));
            Ok(g)
        },
        1e-5,
        6,
    );
}

#[test]
fn wrong_input_shape_names_the_op_and_shape() {
    let (mut ps, m) = built(MobileNetConfig::from_width(0.1).unwrap());
    let mut nan = Tensor::full(&[1, 1, 64, 64], 0.0, DType::F32).unwrap();
    nan.as_mut_slice::<f32>().unwrap()[7] = f32::NAN;
    let msg = m
        .forward(&mut ps, &nan, Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(
        !cfg!(debug_assertions) || msg.contains("non-finite"),
        "{msg}"
    );
    for shape in [vec![2, 3, 64, 64], vec![2, 64, 64]] {
        let x = Tensor::full(&shape, 0.0, DType::F32).unwrap();
        let msg = m.forward(&mut ps, &x, Mode::Eval).unwrap_err().to_string();
        assert!(
            msg.contains("mobilenet_v3") && msg.contains(&format!("{shape:?}")),
            "{msg}"
        );
    }
    let (out, cache) = m
        .forward_backbone(
            &mut ps,
            &Tensor::full(&[1, 1, 64, 64], 0.0, DType::F32).unwrap(),
            Mode::Eval,
        )
        .unwrap();
    assert!(out.logits.is_none());
    let g = MobileNetGrads {
        logits: Some(Tensor::full(&[1, 527], 1.0, DType::F32).unwrap()),
        ..Default::default()
    };
    assert!(m
        .backward(&mut ps, &cache, &g)
        .unwrap_err()
        .to_string()
        .contains("without the head"));
}

/// Writes `tensors` to a fresh file in the temp folder.
fn write_tmp(name: &str, tensors: &BTreeMap<String, Tensor>) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "hr-models-{}-{name}.safetensors",
        std::process::id()
    ));
    std::fs::write(
        &path,
        serialize_safetensors(tensors.iter().map(|(k, v)| (k.as_str(), v)), None).unwrap(),
    )
    .unwrap();
    path
}

#[test]
fn checkpoint_import_and_key_mismatch() {
    let cfg = MobileNetConfig::from_width(0.1).unwrap();
    let mut src = ParamStore::new();
    MobileNetV3::new(&mut src, cfg.clone(), &mut Rng::new(1)).unwrap();
    let mut sd: BTreeMap<String, Tensor> = src
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.clone()))
        .collect();
    sd.insert(
        "features.0.1.num_batches_tracked".into(),
        Tensor::full(&[], 3.0, DType::F64).unwrap(),
    );
    let good = write_tmp("good", &sd);

    let mut ps = ParamStore::new();
    let part = Part::Classifier;
    let m = MobileNetV3::with_prefix(&mut ps, "audio.cnn.", part, cfg, &mut Rng::new(2)).unwrap();
    m.load_efficientat(&mut ps, &good).unwrap();
    for (_, p) in ps.iter() {
        assert_eq!(
            p.value.to_vec_f32().unwrap(),
            sd[&p.name["audio.cnn.".len()..]].to_vec_f32().unwrap(),
            "{}",
            p.name
        );
    }

    let w = sd.remove("features.3.block.1.0.weight").unwrap();
    sd.insert("features.3.block.1.0.weights".into(), w);
    sd.remove("classifier.5.bias");
    sd.insert(
        "features.0.0.weight".into(),
        Tensor::full(&[8, 1, 5, 5], 0.0, DType::F32).unwrap(),
    );
    let bad = write_tmp("bad", &sd);
    match m.load_efficientat(&mut ps, &bad).unwrap_err() {
        hr_models::Error::Nn(hr_nn::Error::KeyMismatch {
            missing,
            unexpected,
            mis_shaped,
            ..
        }) => {
            assert_eq!(
                missing,
                ["classifier.5.bias", "features.3.block.1.0.weight"]
            );
            assert_eq!(unexpected, ["features.3.block.1.0.weights"]);
            assert_eq!(mis_shaped.len(), 1);
            assert_eq!(
                (mis_shaped[0].name.as_str(), &mis_shaped[0].found[..]),
                ("features.0.0.weight", &[8, 1, 5, 5][..])
            );
        }
        e => panic!("expected KeyMismatch, got {e}"),
    }
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn backbone_without_head_loads_a_full_checkpoint_and_ignores_its_classifier() {
    let cfg = MobileNetConfig::from_width(0.1).unwrap();
    let mut src = ParamStore::new();
    MobileNetV3::new(&mut src, cfg.clone(), &mut Rng::new(1)).unwrap();
    let sd: BTreeMap<String, Tensor> = src
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.clone()))
        .collect();
    assert!(sd.keys().any(|k| k.starts_with("classifier.")));
    let file = write_tmp("full-for-backbone", &sd);

    let mut ps = ParamStore::new();
    let m =
        MobileNetV3::with_prefix(&mut ps, "cnn.", Part::Backbone, cfg, &mut Rng::new(2)).unwrap();
    assert!(!m.has_head());
    assert!(ps.iter().all(|(_, p)| !p.name.contains("classifier")));
    m.load_efficientat(&mut ps, &file).unwrap();
    for (_, p) in ps.iter() {
        let want = sd[&p.name["cnn.".len()..]].to_vec_f32().unwrap();
        assert_eq!(p.value.to_vec_f32().unwrap(), want, "{}", p.name);
    }
    let x = Tensor::zeros(&[1, 1, 128, 100], DType::F32, Device::Cpu).unwrap();
    let err = m.forward(&mut ps, &x, Mode::Eval).unwrap_err().to_string();
    assert!(err.contains("without its classifier head"), "{err}");
    assert!(m.forward_backbone(&mut ps, &x, Mode::Eval).is_ok());
    let _ = std::fs::remove_file(file);
}
