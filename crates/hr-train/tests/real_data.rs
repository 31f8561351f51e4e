//! The real-data path end to end, as a researcher runs it: a dataset in the official ClothoV2
//! layout converted by `hr-data`, the text encoder initialised from a Hugging Face BERT folder
//! (the real all-MiniLM-L6-v2), the audio CNN from an EfficientAT-layout state dict, a few
//! training steps of the late-fusion hybrid through the `hr-train` binary, `hr-eval` on the
//! test split, and the provenance the run directory records.

mod common;

use std::path::Path;
use std::process::Command;

use common::{set_path, short_run};

use hr_core::testing::assert_mentions;
use hr_data::audio::encode_wav;
use hr_data::text::{TextTokenizer, MAX_TOKENS};
use hr_models::mobilenet::{MobileNetConfig, MobileNetV3};
use hr_models::testing::{minilm_dir, MINILM_SKIP};
use hr_nn::io::{read_safetensors, serialize_safetensors};
use hr_nn::{Mode, ParamStore};
use hr_tensor::testing::assert_close;
use hr_tensor::{Rng, Tensor};
use hr_train::init;
use hr_train::model::{build_model, retriever_config};
use hr_train::TrainConfig;

const CAPTIONS: [&str; 6] = [
    "A dog barks while cars pass by",
    "Rain falls steadily on a tin roof",
    "Birds chirp in the early morning",
    "A door creaks open and slams shut",
    "People talk in a busy restaurant",
    "Waves crash onto a rocky beach",
];

/// A ClothoV2 folder: captions CSVs (UTF-8, five captions per clip), metadata CSVs (ISO-8859-1,
/// `;`-separated keywords) with the official columns, and 44.1 kHz wav files.
fn clotho_tree(root: &Path) {
    let splits = [
        ("development", 0..8),
        ("validation", 8..11),
        ("evaluation", 11..14),
    ];
    for (split, clips) in splits {
        let mut caps =
            String::from("file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n");
        let mut meta =
            b"file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license\n"
                .to_vec();
        for c in clips {
            let name = format!("clip {c:02}.wav");
            let base = CAPTIONS[c % CAPTIONS.len()];
            let five: Vec<String> = (0..5).map(|k| format!("\"{base}, take {k}\"")).collect();
            caps.push_str(&format!("{name},{}\n", five.join(",")));
            let kw = base.to_lowercase().replace(' ', ";");
            meta.extend_from_slice(format!("{name},{kw};caf").as_bytes());
            meta.extend_from_slice(b"\xe9,1,https://freesound.org/s/1,\"[0, 1]\",someone,CC0\n");
            let secs = 1.5 + 0.25 * (c % 3) as f32;
            let n = (44_100.0 * secs) as usize;
            let f = 200.0 + 90.0 * c as f32;
            let x: Vec<f32> = (0..n)
                .map(|i| 0.4 * (2.0 * std::f32::consts::PI * f * i as f32 / 44_100.0).sin())
                .collect();
            let wav = root.join(split).join(&name);
            std::fs::create_dir_all(wav.parent().unwrap()).unwrap();
            std::fs::write(&wav, encode_wav(&[x], 44_100, 16).unwrap()).unwrap();
        }
        std::fs::write(root.join(format!("clotho_captions_{split}.csv")), caps).unwrap();
        std::fs::write(root.join(format!("clotho_metadata_{split}.csv")), meta).unwrap();
    }
}

/// An EfficientAT-layout state dict of mn01 (the tiny preset's backbone) with its classifier
/// head, as `hr-train import-weights` writes it.
fn efficientat_state_dict(path: &Path) -> ParamStore {
    let mut ps = ParamStore::new();
    let cfg = MobileNetConfig::from_name("mn01").unwrap();
    MobileNetV3::new(&mut ps, cfg, &mut Rng::new(77)).unwrap();
    let named: Vec<(String, Tensor)> = ps
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.clone()))
        .collect();
    let bytes = serialize_safetensors(named.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
    std::fs::write(path, bytes).unwrap();
    ps
}

/// The installed all-MiniLM-L6-v2 folder, or `None` after printing why the test is skipped.
fn minilm_or_skip() -> Option<std::path::PathBuf> {
    let dir = minilm_dir();
    if dir.is_none() {
        println!("{MINILM_SKIP}");
    }
    dir
}

/// The lower-case hex sha256 of a file.
fn sha256(path: &Path) -> String {
    hr_data::shard::sha256_file(path).unwrap().0
}

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{bin} {args:?} failed:\n{text}\n{err}"
    );
    text
}

fn config_text(data: &Path, run: &Path, minilm: &Path, audio: &Path) -> String {
    format!(
        r#"
[run]
dir = {run:?}
seed = 3
max_steps = 3
[model]
preset = "tiny"
fusion = "late"
metadata = "keywords"
text_init = {minilm:?}
audio_init = {audio:?}
[data]
root = {data:?}
clip_seconds = 2.0
workers = 1
[optim]
global_batch = 8
epochs = 1
[eval]
split = "val"
batch_size = 8
"#
    )
}

#[derive(serde::Deserialize)]
struct MiniLmReference {
    sentences: Vec<String>,
    cls: Vec<Vec<f32>>,
}

#[test]
fn clotho_layout_with_pretrained_encoders_trains_evaluates_and_records_provenance() {
    let Some(minilm) = minilm_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, data, run_dir) = (
        dir.path().join("clotho"),
        dir.path().join("data"),
        dir.path().join("run"),
    );
    clotho_tree(&src);
    let hr_data = Path::new(env!("CARGO_BIN_EXE_hr-train")).with_file_name("hr-data");
    let data_s = data.to_str().unwrap();
    let prepared = Command::new(&hr_data)
        .args([
            "prepare",
            "clotho",
            "--source",
            src.to_str().unwrap(),
            "--out",
            data_s,
        ])
        .output();
    match prepared {
        Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)),
        // hr-data is another crate's binary: fall back to the library when it is not built.
        Err(_) => {
            hr_data::convert::clotho::convert(&src, &hr_data::convert::Target::new(&data)).unwrap();
        }
    }
    let audio = dir.path().join("mn01_as.safetensors");
    let source_cnn = efficientat_state_dict(&audio);
    let cfg_path = dir.path().join("run.toml");
    std::fs::write(&cfg_path, config_text(&data, &run_dir, &minilm, &audio)).unwrap();
    let cfg = TrainConfig::from_file(&cfg_path, &[]).unwrap();

    // Step 0 as the trainer builds it: the text encoder has MiniLM's shape and weights and
    // reproduces HF transformers' CLS vectors through the run's tokenizer; the CNN holds the
    // state dict's values (its classifier is not part of the retriever).
    let tok = init::resolve_tokenizer(&cfg, MAX_TOKENS).unwrap();
    assert_eq!(tok.source, "model.text_init");
    let mcfg = retriever_config(&cfg, &tok.tok).unwrap();
    assert_eq!(
        (mcfg.text.hidden_size, mcfg.text.num_hidden_layers),
        (384, 6)
    );
    assert_eq!(
        mcfg.text.hidden_dropout_prob, 0.2,
        "the preset keeps its dropout"
    );
    let (model, mut ps) = build_model(&mcfg, cfg.run.seed).unwrap();
    init::load_pretrained(&cfg, &model, &mut ps).unwrap();
    let refs =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hr-models/tests/data/minilm_reference.json");
    let r: MiniLmReference = serde_json::from_str(&std::fs::read_to_string(refs).unwrap()).unwrap();
    let tokens = tok.tok.encode_batch(&r.sentences).unwrap();
    let (cls, _) = model
        .text_encoder()
        .forward_cls(&ps, &tokens, Mode::Eval)
        .unwrap();
    let want = Tensor::from_vec(r.cls.concat(), &[r.cls.len(), 384]).unwrap();
    assert_close("step-0 CLS vs HF transformers", &cls, &want, 1e-4);
    let by_name = |ps: &ParamStore, name: &str| {
        let id = ps.id(name).unwrap_or_else(|| panic!("{name}"));
        ps.value(id).to_vec_f32().unwrap()
    };
    for (_, p) in source_cnn.iter() {
        let name = format!("audio_cnn.{}", p.name);
        match p.name.starts_with("classifier.") {
            true => assert!(ps.id(&name).is_none(), "{name} must not be built"),
            false => assert_eq!(by_name(&ps, &name), p.value.to_vec_f32().unwrap(), "{name}"),
        }
    }

    // Train through the binary, then evaluate the run on the test split.
    let hr_train = env!("CARGO_BIN_EXE_hr-train");
    let out = run(hr_train, &["--config", cfg_path.to_str().unwrap()]);
    assert!(out.contains("val mAP@10"), "{out}");
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);
    let eval_out = dir.path().join("test.json");
    run(
        env!("CARGO_BIN_EXE_hr-eval"),
        &common::eval_args(&run_dir, "test", &eval_out),
    );
    let ev: serde_json::Value = serde_json::from_slice(&std::fs::read(&eval_out).unwrap()).unwrap();
    assert_eq!(ev["clips"], 3);
    assert_eq!(
        ev["queries"], 15,
        "every one of the five captions is a query: {ev}"
    );
    let map10 = ev["mAP@10"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map10), "{ev}");

    // Provenance: which files initialised the run, with their sha256, and the tokenizer copy.
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join(init::INIT_FILE)).unwrap()).unwrap();
    let files: Vec<(String, String)> = prov["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["path"].as_str().unwrap().into(),
                w["sha256"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expect = [
        minilm.join("config.json"),
        minilm.join("model.safetensors"),
        audio.clone(),
    ];
    for p in &expect {
        let sha = sha256(p);
        assert!(
            files.contains(&(p.display().to_string(), sha)),
            "{p:?} in {prov}"
        );
    }
    assert_eq!(prov["tokenizer_source"], "model.text_init");
    assert_eq!(
        prov["tokenizer"]["sha256"].as_str().unwrap(),
        sha256(&minilm.join("tokenizer.json"))
    );
    assert!(run_dir.join(init::RUN_TOKENIZER_FILE).is_file());
    let resolved = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(resolved.contains("text_init") && resolved.contains("audio_init"));
    let saved = read_safetensors(&run_dir.join("checkpoints/step-000000003/model.safetensors"));
    assert!(saved
        .unwrap()
        .tensors
        .keys()
        .all(|k| !k.contains("classifier")));
}

#[test]
fn a_tokenizer_that_does_not_fit_the_text_encoder_is_refused_naming_both_files() {
    let Some(minilm) = minilm_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ndog\n").unwrap();
    let set = [
        set_path("model.text_init", &minilm),
        set_path("model.tokenizer", &vocab),
    ];
    let cfg = TrainConfig::from_toml_str("", &set).unwrap();
    let tok = init::resolve_tokenizer(&cfg, MAX_TOKENS).unwrap();
    let msg = retriever_config(&cfg, &tok.tok).unwrap_err().to_string();
    assert_mentions(&msg, &["vocab.txt", "config.json"]);
    assert!(msg.contains("6 tokens") && msg.contains("30522"), "{msg}");
}

/// The error of loading `cfg`'s pretrained weights into the model it builds (seed `seed`).
fn load_error(cfg: &TrainConfig, tok: &TextTokenizer, seed: u64) -> String {
    let mcfg = retriever_config(cfg, tok).unwrap();
    let (model, mut ps) = build_model(&mcfg, seed).unwrap();
    init::load_pretrained(cfg, &model, &mut ps)
        .unwrap_err()
        .to_string()
}

#[test]
fn pretrained_files_that_do_not_fit_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A folder of another model type.
    let folder = dir.path().join("roberta");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("config.json"),
        r#"{"model_type": "roberta", "hidden_size": 8}"#,
    )
    .unwrap();
    let err = init::TextFolder::open(&folder).unwrap_err().to_string();
    assert_mentions(&err, &["roberta", "config.json"]);
    // A BERT folder without safetensors weights.
    std::fs::write(folder.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    std::fs::write(folder.join("pytorch_model.bin"), b"x").unwrap();
    let err = init::TextFolder::open(&folder).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // An audio state dict of another width: every mismatch is listed.
    let audio = dir.path().join("mn04.safetensors");
    let mut ps = ParamStore::new();
    MobileNetV3::new(
        &mut ps,
        MobileNetConfig::from_name("mn04").unwrap(),
        &mut Rng::new(1),
    )
    .unwrap();
    let named: Vec<(String, Tensor)> = ps
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.clone()))
        .collect();
    std::fs::write(
        &audio,
        serialize_safetensors(named.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap(),
    )
    .unwrap();
    let data = dir.path().join("synthetic");
    hr_data::synthetic::prepare(&data, 16, 1, None, &|_| {}).unwrap();
    let set = [
        set_path("model.audio_init", &audio),
        set_path("data.root", &data),
    ];
    let cfg = TrainConfig::from_toml_str("", &set).unwrap();
    let tok = init::resolve_tokenizer(&cfg, MAX_TOKENS).unwrap();
    assert_eq!(tok.source, "dataset");
    let err = load_error(&cfg, &tok.tok, 0);
    assert_mentions(&err, &["model.audio_init", "backbone mn01"]);
    assert_mentions(&err, &["mn04.safetensors", "features.16.0.weight"]);
}

#[test]
fn merged_datasets_train_on_their_union() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    hr_data::synthetic::prepare(&a, 24, 1, None, &|_| {}).unwrap();
    hr_data::synthetic::prepare(&b, 16, 2, None, &|_| {}).unwrap();
    let roots = [a.display().to_string(), b.display().to_string()];
    let sources = [
        hr_data::rewrite::Source::open(&roots[0], Some("first")).unwrap(),
        hr_data::rewrite::Source::open(&roots[1], Some("second")).unwrap(),
    ];
    let merged = dir.path().join("merged");
    let opts = hr_data::rewrite::MergeOptions::default();
    let sum = hr_data::rewrite::merge(&sources, &roots, &merged, &opts).unwrap();
    let train_rows = sum.manifest.rows("train");
    assert_eq!(
        train_rows,
        sources
            .iter()
            .map(|s| s.manifest.rows("train"))
            .sum::<u64>()
    );
    // The merged dataset names no tokenizer: the run names the text encoder's.
    let mut set = short_run(&merged, &dir.path().join("run"), 1);
    set.push(set_path("model.tokenizer", &a.join("tokenizer.json")));
    set.push("eval.split=\"test\"".into());
    let cfg = TrainConfig::from_toml_str("", &set).unwrap();
    let s = hr_train::train(&cfg, &hr_train::Resume::Fresh, &Default::default()).unwrap();
    assert_eq!(s.step, 1);
    assert!(s.losses[0].is_finite());
    let prov: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("run").join(init::INIT_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(prov["tokenizer_source"], "model.tokenizer");
    assert_eq!(
        prov["weights"].as_array().unwrap().len(),
        0,
        "random initialisation"
    );
}

#[test]
fn a_resumed_run_needs_no_pretrained_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    hr_data::synthetic::prepare(&data, 24, 1, None, &|_| {}).unwrap();
    let audio = dir.path().join("mn01.safetensors");
    efficientat_state_dict(&audio);
    let run = dir.path().join("run");
    let set = |steps: u64| {
        let mut set = short_run(&data, &run, steps);
        set.push(set_path("model.audio_init", &audio));
        set
    };
    let cfg = TrainConfig::from_toml_str("", &set(1)).unwrap();
    hr_train::train(&cfg, &hr_train::Resume::Fresh, &Default::default()).unwrap();
    let recorded = std::fs::read(run.join(init::INIT_FILE)).unwrap();
    std::fs::remove_file(&audio).unwrap();
    let cfg = TrainConfig::from_toml_str("", &set(2)).unwrap();
    let s = hr_train::train(&cfg, &hr_train::Resume::Auto, &Default::default()).unwrap();
    assert_eq!((s.step, s.losses.len()), (2, 1), "resumed at step 1");
    assert_eq!(std::fs::read(run.join(init::INIT_FILE)).unwrap(), recorded);
    // A fresh start does need it, and says which file is missing.
    let err = hr_train::train(&cfg, &hr_train::Resume::Fresh, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("mn01.safetensors"), "{err}");
}

#[test]
fn init_from_starts_from_another_runs_weights_with_its_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    hr_data::synthetic::prepare(&data, 24, 1, None, &|_| {}).unwrap();
    let base = |run: &Path| short_run(&data, run, 1);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let cfg_a = TrainConfig::from_toml_str("", &base(&a)).unwrap();
    let sa = hr_train::train(&cfg_a, &hr_train::Resume::Fresh, &Default::default()).unwrap();
    let ckpt_a = sa.checkpoint.unwrap();

    let mut set_b = base(&b);
    set_b.push(set_path("model.init_from", &a));
    set_b.push("model.fusion=\"mid\"".into());
    let cfg_b = TrainConfig::from_toml_str("", &set_b).unwrap();
    let tok = init::resolve_tokenizer(&cfg_b, MAX_TOKENS).unwrap();
    assert_eq!(tok.source, "model.init_from");
    // Mid fusion has parameters run A (late) never had: every one is named.
    let err = load_error(&cfg_b, &tok.tok, 9);
    assert!(err.contains("mid."), "{err}");

    set_b.pop();
    let cfg_b = TrainConfig::from_toml_str("", &set_b).unwrap();
    let mcfg = retriever_config(&cfg_b, &tok.tok).unwrap();
    let (model, mut ps) = build_model(&mcfg, 9).unwrap();
    init::load_pretrained(&cfg_b, &model, &mut ps).unwrap();
    let saved = read_safetensors(&ckpt_a.join("model.safetensors"))
        .unwrap()
        .tensors;
    for (_, p) in ps.iter() {
        assert_eq!(
            p.value.to_vec_f32().unwrap(),
            saved[&p.name].to_vec_f32().unwrap(),
            "{}",
            p.name
        );
    }
    let sb = hr_train::train(&cfg_b, &hr_train::Resume::Fresh, &Default::default()).unwrap();
    assert_eq!(sb.step, 1, "a fresh optimizer at step 0");
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join(init::INIT_FILE)).unwrap()).unwrap();
    assert_eq!(prov["weights"][0]["role"], "init_from");
    let want = ckpt_a.join("model.safetensors");
    assert_eq!(prov["weights"][0]["sha256"], sha256(&want).as_str());
}

#[test]
fn the_best_validation_is_checkpointed_whatever_the_cadence() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    hr_data::synthetic::prepare(&data, 24, 1, None, &|_| {}).unwrap();
    let run = dir.path().join("run");
    let mut set = short_run(&data, &run, 4);
    set.extend([
        "eval.every_steps=1".into(),
        "checkpoint.every_steps=1000".into(),
        "checkpoint.keep_last=1".into(),
    ]);
    let cfg = TrainConfig::from_toml_str("", &set).unwrap();
    hr_train::train(&cfg, &hr_train::Resume::Fresh, &Default::default()).unwrap();
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(run.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (mut best_step, mut best) = (0, f64::NEG_INFINITY);
    for e in &evals {
        let m = e["mAP@10"].as_f64().unwrap();
        if m > best {
            (best_step, best) = (e["step"].as_u64().unwrap(), m);
        }
    }
    let dir = hr_train::checkpoint::best(&run).unwrap().unwrap();
    let st = hr_train::checkpoint::read_state(&dir).unwrap();
    assert_eq!(
        (st.step, st.val_map10),
        (best_step, Some(best)),
        "{evals:?}"
    );
}
