//! BERT: parity with HF `BertModel` (the `bert_small` fixture: forward and every gradient),
//! checkpoint loading under HF names, an f64 gradient check with dropout on, the text
//! preprocessing, and real all-MiniLM-L6-v2 weights against HF transformers.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_tiny, check_model, is_zero_grad};
use hr_core::write_atomic;
use hr_models::bert::{BertConfig, BertModel};
use hr_models::testing::{minilm_dir, MINILM_SKIP};
use hr_models::text::{preprocess, tags_to_text, TextTokenizer, TokenBatch, MAX_TOKENS};
use hr_nn::io::{serialize_safetensors, SafeFile};
use hr_nn::testing::Reference;
use hr_nn::{Error, Mode, ParamStore};
use hr_tensor::testing::{assert_close, randn32};
use hr_tensor::{ops, Rng, Tensor};

fn tokens_from(fx: &Reference) -> TokenBatch {
    let shape = fx.get("input_ids").shape().to_vec();
    TokenBatch {
        ids: fx.integers("input_ids"),
        mask: fx.integers("attention_mask"),
        rows: shape[0],
        cols: shape[1],
    }
}

fn small_config(f: &SafeFile) -> BertConfig {
    serde_json::from_str(&f.metadata["config"]).unwrap()
}

#[test]
fn bert_small_matches_hf_forward_and_every_gradient() {
    let fx = Reference::open("bert_small.safetensors");
    let get = |n: &str| fx.get(n);
    let cfg = small_config(&fx.file);
    assert_eq!(
        (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size),
        (64, 2, 1000)
    );
    let mut ps = ParamStore::new();
    let bert = BertModel::new(&mut ps, "", cfg, &mut Rng::new(1)).unwrap();
    fx.load_params(&mut ps);
    let tokens = tokens_from(&fx);
    assert!(tokens.mask.contains(&0), "fixture has padding");
    let (hidden, cache) = bert.forward(&ps, &tokens, Mode::Eval).unwrap();
    assert_close(
        "last_hidden_state",
        &hidden,
        &get("last_hidden_state"),
        1e-4,
    );
    let r = get("R");
    let cls = BertModel::cls(&hidden).unwrap();
    let loss = ops::sum_all(&ops::mul(&cls, &r).unwrap()).unwrap();
    assert_close("loss", &loss.reshape(&[1]).unwrap(), &get("loss"), 1e-4);
    bert.backward_cls(&mut ps, &cache, &r).unwrap();
    let mut checked = 0;
    for (_, p) in ps.iter() {
        let want = get(&format!("grad.{}", p.name));
        if is_zero_grad(&p.name) {
            // Zero in exact arithmetic; both sides hold rounding noise only.
            assert_tiny(&p.name, &p.grad);
            assert_tiny(&format!("reference {}", p.name), &want);
        } else {
            assert_close(&format!("grad.{}", p.name), &p.grad, &want, 1e-3);
        }
        checked += 1;
    }
    assert_eq!(checked, 5 + 16 * 2, "every parameter gradient compared");
}

/// Writes the fixture's parameters under `prefix` (plus a pooler and position_ids) to a file.
fn write_checkpoint(f: &SafeFile, prefix: &str, dir: &Path, extra: &[(&str, Tensor)]) -> PathBuf {
    let mut named: Vec<(String, Tensor)> = f
        .tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix("param.")
                .map(|n| (format!("{prefix}{n}"), t.clone()))
        })
        .collect();
    named.extend(extra.iter().map(|(n, t)| (n.to_string(), t.clone())));
    let bytes = serialize_safetensors(named.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
    let out = dir.join(format!("ckpt-{}.safetensors", prefix.trim_end_matches('.')));
    write_atomic(&out, &bytes).unwrap();
    out
}

/// An f32 tensor of zeros.
fn zeros(shape: &[usize]) -> Tensor {
    Tensor::full(shape, 0.0, hr_tensor::DType::F32).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hr-models-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn load_safetensors_accepts_hf_names_with_or_without_bert_prefix() {
    let fx = Reference::open("bert_small.safetensors");
    let f = &fx.file;
    let dir = temp_dir("bert-load");
    let extra = [
        ("pooler.dense.weight", zeros(&[64, 64])),
        ("embeddings.position_ids", zeros(&[1, 64])),
        ("cls.predictions.bias", zeros(&[5])),
    ];
    let tokens = tokens_from(&fx);
    for prefix in ["", "bert.", "tf-names"] {
        let ckpt = match prefix {
            // TF-era checkpoints (bert-base-uncased's own) name LayerNorm parameters gamma / beta.
            "tf-names" => {
                let mut g = f.clone();
                g.tensors = f
                    .tensors
                    .iter()
                    .map(|(k, t)| {
                        let k = k.replace("LayerNorm.weight", "LayerNorm.gamma");
                        (k.replace("LayerNorm.bias", "LayerNorm.beta"), t.clone())
                    })
                    .collect();
                write_checkpoint(&g, "bert.", &dir, &extra)
            }
            _ => write_checkpoint(f, prefix, &dir, &extra),
        };
        let mut ps = ParamStore::new();
        // A model under a sub-prefix inside a bigger store loads the same file.
        ps.add("other.weight", zeros(&[2])).unwrap();
        let bert = BertModel::new(&mut ps, "text", small_config(f), &mut Rng::new(2)).unwrap();
        bert.load_safetensors(&mut ps, &ckpt).unwrap();
        let (hidden, _) = bert.forward(&ps, &tokens, Mode::Eval).unwrap();
        assert_close(
            "loaded last_hidden_state",
            &hidden,
            &fx.get("last_hidden_state"),
            1e-4,
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn load_safetensors_reports_every_mismatch_at_once() {
    let f = Reference::open("bert_small.safetensors").file;
    let dir = temp_dir("bert-mismatch");
    let extra = [("encoder.layer.9.output.dense.weight", zeros(&[1]))];
    let ckpt = write_checkpoint(&f, "", &dir, &extra);
    let mut cfg = small_config(&f);
    cfg.num_hidden_layers = 3;
    cfg.max_position_embeddings = 32;
    let mut ps = ParamStore::new();
    let bert = BertModel::new(&mut ps, "", cfg, &mut Rng::new(2)).unwrap();
    match bert.load_safetensors(&mut ps, &ckpt) {
        Err(hr_models::Error::Nn(Error::KeyMismatch {
            missing,
            unexpected,
            mis_shaped,
            ..
        })) => {
            assert_eq!(missing.len(), 16, "layer 2 is missing: {missing:?}");
            assert_eq!(
                unexpected,
                vec!["encoder.layer.9.output.dense.weight".to_string()]
            );
            assert_eq!(mis_shaped.len(), 1);
            assert_eq!(mis_shaped[0].name, "embeddings.position_embeddings.weight");
        }
        other => panic!("expected a key mismatch, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn tiny_bert(ps: &mut ParamStore, dropout: f64) -> BertModel {
    let cfg = BertConfig {
        vocab_size: 11,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 12,
        max_position_embeddings: 6,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_dropout_prob: dropout,
        attention_probs_dropout_prob: dropout,
    };
    let bert = BertModel::new(ps, "", cfg, &mut Rng::new(5)).unwrap();
    // Non-trivial LayerNorm parameters so their gradients are exercised.
    for (_, p) in ps.iter_mut() {
        if p.name.contains("LayerNorm") {
            let shape = p.value.shape().to_vec();
            p.value = ops::add(
                &p.value,
                &ops::scale(&randn32(&shape, &mut Rng::new(p.name.len() as u64)), 0.3).unwrap(),
            )
            .unwrap();
        }
    }
    bert
}

#[test]
fn bert_gradient_check_f64_with_padding_and_dropout() {
    let mut ps = ParamStore::new();
    let bert = tiny_bert(&mut ps, 0.2);
    let tokens = TokenBatch::from_sequences(&[vec![2, 5, 7, 3], vec![2, 9, 3], vec![2, 3]], 0);
    let mode = Mode::Train { seed: 17 };
    check_model(
        "bert",
        &ps,
        &[],
        12,
        |ps, _| Ok(bert.forward(ps, &tokens, mode)?.0),
        |ps, _, dy| {
            let (_, c) = bert.forward(ps, &tokens, mode)?;
            bert.backward(ps, &c, dy)?;
            Ok(vec![])
        },
    );
}

#[test]
fn padding_does_not_change_real_tokens() {
    let mut ps = ParamStore::new();
    let bert = tiny_bert(&mut ps, 0.0);
    let alone = TokenBatch::from_sequences(&[vec![2, 9, 3]], 0);
    let padded = TokenBatch::from_sequences(&[vec![2, 9, 3], vec![2, 4, 5, 6, 3]], 0);
    let (a, _) = bert.forward_cls(&ps, &alone, Mode::Eval).unwrap();
    let (b, _) = bert.forward_cls(&ps, &padded, Mode::Eval).unwrap();
    assert_close(
        "cls with padding",
        &ops::slice(&b, 0, 0, 1).unwrap(),
        &a,
        1e-5,
    );
}

#[test]
fn preprocessing_lowercases_and_deletes_ascii_punctuation() {
    assert_eq!(
        preprocess("A Dog's high-pitched BARK!"),
        "a dogs highpitched bark"
    );
    assert_eq!(preprocess("Café, (loud) — ok?"), "café loud — ok");
    assert_eq!(
        tags_to_text(&["Dog", "bark!", "high-pitched"]),
        "dog bark highpitched"
    );
}

#[test]
fn token_batch_pads_to_longest() {
    let b = TokenBatch::from_sequences(&[vec![1, 2, 3], vec![1, 3]], 0);
    assert_eq!((b.rows, b.cols), (2, 3));
    assert_eq!(b.ids, vec![1, 2, 3, 1, 3, 0]);
    assert_eq!(b.mask, vec![1, 1, 1, 1, 1, 0]);
    b.validate().unwrap();
}

#[derive(serde::Deserialize)]
struct MiniLmReference {
    sentences: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    cls: Vec<Vec<f32>>,
}

#[test]
fn minilm_real_weights_match_hf_transformers() {
    let Some(dir) = minilm_dir() else {
        println!("{MINILM_SKIP}");
        return;
    };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    let reference: MiniLmReference =
        serde_json::from_str(&std::fs::read_to_string(data).unwrap()).unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), MAX_TOKENS).unwrap();
    let tokens = tok.encode_batch(&reference.sentences).unwrap();
    for (r, want) in reference.input_ids.iter().enumerate() {
        let row = &tokens.ids[r * tokens.cols..(r + 1) * tokens.cols];
        assert_eq!(
            &row[..want.len()],
            want.as_slice(),
            "token ids of sentence {r}"
        );
        assert!(row[want.len()..].iter().all(|&id| id == tok.pad_id()));
    }
    let cfg = BertConfig::from_json_file(&dir.join("config.json")).unwrap();
    let mut ps = ParamStore::new();
    let bert = BertModel::new(&mut ps, "", cfg, &mut Rng::new(0)).unwrap();
    bert.load_safetensors(&mut ps, &dir.join("model.safetensors"))
        .unwrap();
    let (cls, _) = bert.forward_cls(&ps, &tokens, Mode::Eval).unwrap();
    let n = reference.cls.len();
    let flat: Vec<f32> = reference.cls.concat();
    let want = Tensor::from_vec(flat, &[n, cfg.hidden_size]).unwrap();
    assert_close("MiniLM CLS", &cls, &want, 1e-4);
    // vocab.txt alone builds the same tokenizer (folders without tokenizer.json).
    let from_vocab = TextTokenizer::from_path(&dir.join("vocab.txt"), MAX_TOKENS).unwrap();
    assert_eq!(from_vocab.vocab_size(), tok.vocab_size());
    assert_eq!(
        from_vocab.encode_batch(&reference.sentences).unwrap(),
        tokens
    );
}
