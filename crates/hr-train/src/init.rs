//! Where a run's weights and tokenizer come from, and the record of it.
//!
//! - `model.text_init`: a Hugging Face BERT folder (`config.json`, `model.safetensors`,
//!   `tokenizer.json` or `vocab.txt`). Its `config.json` gives the text encoder's shape (any
//!   `model_type = "bert"` folder works with any preset; the preset keeps its dropout), its
//!   weights initialise the query encoder (and the separate metadata encoder), its tokenizer
//!   tokenizes every text of the run.
//! - `model.audio_init`: an EfficientAT state dict as safetensors (`hr-train import-weights`
//!   converts the published `.pt` files); its classifier entries are ignored.
//! - `model.init_from`: another run's checkpoint (or run directory: its newest): every weight,
//!   with a fresh optimizer and step 0; its run's tokenizer is the default tokenizer.
//! - `model.tokenizer`: a `tokenizer.json` or `vocab.txt` that overrides the above.
//!
//! Without any of them the model starts from random weights and uses the dataset's tokenizer
//! (the synthetic demo). The tokenizer's vocabulary must equal the embedding table of a
//! pretrained text encoder. Rank 0 stores the tokenizer as `RUN/tokenizer.json` (so `hr-eval`
//! needs nothing outside the run) and the provenance, with sha256 sums, as `RUN/init.json`.

use std::path::{Path, PathBuf};

use hr_data::text::TextTokenizer;
use hr_models::bert::BertConfig;
use hr_models::retriever::HybridRetriever;
use hr_nn::{LoadOptions, ParamStore};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// The tokenizer a run used, inside its run directory.
pub const RUN_TOKENIZER_FILE: &str = "tokenizer.json";
/// The provenance record inside a run directory.
pub const INIT_FILE: &str = "init.json";

/// A Hugging Face BERT model folder.
#[derive(Debug, Clone)]
pub struct TextFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its `config.json`, parsed.
    pub config: BertConfig,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// `tokenizer.json`, else `vocab.txt`.
    pub tokenizer: PathBuf,
}

impl TextFolder {
    /// Opens `dir`: `config.json` must describe a `model_type = "bert"` encoder with GELU and
    /// absolute positions; `model.safetensors` and a tokenizer must be present.
    pub fn open(dir: &Path) -> Result<TextFolder> {
        let key = "model.text_init";
        if !dir.is_dir() {
            let msg = format!("{} is not a folder (a Hugging Face BERT model folder with config.json, model.safetensors and tokenizer.json or vocab.txt)", dir.display());
            return Err(TrainError::config(key, msg));
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(TrainError::io(&cfg_path))?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::format(cfg_path.clone(), e.to_string()))?;
        check_bert_json(&raw, &cfg_path)?;
        let config: BertConfig = serde_json::from_value(raw)
            .map_err(|e| TrainError::format(cfg_path.clone(), e.to_string()))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            let msg = match dir.join("pytorch_model.bin").is_file() {
                true => "has pytorch_model.bin but no model.safetensors; convert it once (`python3 -c \"from transformers import AutoModel; AutoModel.from_pretrained('DIR').save_pretrained('DIR', safe_serialization=True)\"`)",
                false => "has no model.safetensors",
            };
            return Err(TrainError::format(dir.to_path_buf(), msg));
        }
        let tokenizer = ["tokenizer.json", "vocab.txt"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                TrainError::format(
                    dir.to_path_buf(),
                    "has neither tokenizer.json nor vocab.txt",
                )
            })?;
        Ok(TextFolder {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
        })
    }
}

/// Refuses configs our BERT does not implement (other model types, activations, positions).
fn check_bert_json(raw: &serde_json::Value, path: &Path) -> Result<()> {
    let field = |k: &str| raw.get(k).and_then(|v| v.as_str());
    let bad = |msg: String| Err(TrainError::format(path.to_path_buf(), msg));
    match field("model_type") {
        Some("bert") => {}
        Some(other) => {
            return bad(format!(
                "model_type {other:?} is not supported: the text encoder is a BERT (model_type \"bert\": bert-base/large-uncased, MiniLM, ...)"
            ))
        }
        None => return bad("has no model_type (expected \"bert\")".into()),
    }
    if let Some(act) = field("hidden_act").filter(|a| *a != "gelu") {
        return bad(format!(
            "hidden_act {act:?} is not supported (the encoder uses exact GELU)"
        ));
    }
    if let Some(pos) = field("position_embedding_type").filter(|p| *p != "absolute") {
        return bad(format!(
            "position_embedding_type {pos:?} is not supported (absolute only)"
        ));
    }
    Ok(())
}

/// A path option of the config: None when empty.
fn opt_path(s: &str) -> Option<PathBuf> {
    (!s.trim().is_empty()).then(|| PathBuf::from(s))
}

/// The run directory of `model.init_from` (a checkpoint directory or a run directory).
fn init_from_checkpoint(cfg: &TrainConfig) -> Result<Option<PathBuf>> {
    opt_path(&cfg.model.init_from)
        .map(|p| crate::eval_job::resolve(&p))
        .transpose()
}

/// The run directory above a checkpoint directory (`RUN/checkpoints/step-N`).
fn run_of(checkpoint: &Path) -> Option<&Path> {
    checkpoint.parent().and_then(Path::parent)
}

/// The tokenizer of a run and where it came from (`model.tokenizer`, `model.text_init`,
/// `model.init_from` or `dataset`).
pub struct RunTokenizer {
    /// The tokenizer.
    pub tok: TextTokenizer,
    /// The config key (or `dataset`) that chose it.
    pub source: &'static str,
    /// Its file, when it is one.
    pub file: Option<PathBuf>,
}

/// Chooses the run's tokenizer: `model.tokenizer`, else the `model.text_init` folder's, else
/// the `model.init_from` run's, else the dataset's (a from-scratch model).
pub fn resolve_tokenizer(cfg: &TrainConfig, max_tokens: usize) -> Result<RunTokenizer> {
    let from_file = |source, path: PathBuf| -> Result<RunTokenizer> {
        Ok(RunTokenizer {
            tok: TextTokenizer::from_path(&path, max_tokens).map_err(hr_data::DataError::from)?,
            source,
            file: Some(path),
        })
    };
    if let Some(p) = opt_path(&cfg.model.tokenizer) {
        return from_file("model.tokenizer", p);
    }
    if let Some(dir) = opt_path(&cfg.model.text_init) {
        return from_file("model.text_init", TextFolder::open(&dir)?.tokenizer);
    }
    if let Some(ck) = init_from_checkpoint(cfg)? {
        if let Some(p) = run_of(&ck)
            .map(|r| r.join(RUN_TOKENIZER_FILE))
            .filter(|p| p.is_file())
        {
            return from_file("model.init_from", p);
        }
    }
    let (store, manifest) = hr_data::open_dataset(&cfg.data.root)?;
    let tok = hr_data::dataset_tokenizer(&store, &manifest, max_tokens)?;
    Ok(RunTokenizer {
        tok,
        source: "dataset",
        file: None,
    })
}

/// Checks that the tokenizer fits the text encoder's embedding table (`vocab` rows, from
/// `table_origin`): the same size when `exact` (a pretrained encoder and its tokenizer), else
/// no token beyond the table; a mismatch names both files.
pub fn check_vocab(
    tok: &TextTokenizer,
    vocab: usize,
    table_origin: &str,
    exact: bool,
) -> Result<()> {
    let n = tok.vocab_size();
    if n == vocab || (!exact && n < vocab) {
        return Ok(());
    }
    Err(TrainError::config(
        "model.tokenizer",
        format!(
            "the tokenizer {} has {} tokens but the text encoder's embedding table ({table_origin}) has {vocab} rows: use the tokenizer that belongs to the text encoder",
            tok.origin(),
            tok.vocab_size()
        ),
    ))
}

/// The text encoder's shape: the `model.text_init` folder's `config.json`, else the
/// `model.init_from` run's `model.toml` (either with the preset's dropout; the tokenizer's
/// vocabulary must equal its embedding table), else the preset's, its vocabulary widened to the
/// tokenizer's (a text encoder trained from scratch).
pub fn text_shape(
    cfg: &TrainConfig,
    preset: BertConfig,
    tok: &TextTokenizer,
) -> Result<BertConfig> {
    let keep_dropout = |shape: BertConfig| BertConfig {
        hidden_dropout_prob: preset.hidden_dropout_prob,
        attention_probs_dropout_prob: preset.attention_probs_dropout_prob,
        ..shape
    };
    if let Some(dir) = opt_path(&cfg.model.text_init) {
        let folder = TextFolder::open(&dir)?;
        let origin = folder.dir.join("config.json").display().to_string();
        check_vocab(tok, folder.config.vocab_size, &origin, true)?;
        return Ok(keep_dropout(folder.config));
    }
    if let Some(run) = init_from_checkpoint(cfg)?.as_deref().and_then(run_of) {
        // A run trained from scratch may have widened its table past its tokenizer.
        let path = run.join(crate::trainer::MODEL_TOML);
        let shape = hr_models::presets::from_toml_file(&path)?.text;
        check_vocab(tok, shape.vocab_size, &path.display().to_string(), false)?;
        return Ok(keep_dropout(shape));
    }
    let vocab_size = preset.vocab_size.max(tok.vocab_size());
    Ok(BertConfig {
        vocab_size,
        ..preset
    })
}

/// One file that initialised (part of) a run.
#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    /// What it initialised (`text_init`, `audio_init`, `init_from`, `tokenizer`, ...).
    pub role: String,
    /// Its path as given.
    pub path: String,
    /// Lower-case hex sha256 of its bytes.
    pub sha256: String,
}

fn record(role: &str, path: &Path) -> Result<FileRecord> {
    Ok(FileRecord {
        role: role.into(),
        path: path.display().to_string(),
        sha256: hr_data::shard::sha256_file(path)?.0,
    })
}

/// Loads the pretrained weights the config names into a freshly built model and returns the
/// files used (with their sha256). `model.init_from` replaces every weight, so it cannot be
/// combined with `model.text_init` / `model.audio_init`.
pub fn load_pretrained(
    cfg: &TrainConfig,
    model: &HybridRetriever,
    ps: &mut ParamStore,
) -> Result<Vec<FileRecord>> {
    let (text, audio) = (
        opt_path(&cfg.model.text_init),
        opt_path(&cfg.model.audio_init),
    );
    let mut used = Vec::new();
    if let Some(ck) = init_from_checkpoint(cfg)? {
        if text.is_some() || audio.is_some() {
            return Err(TrainError::config(
                "model.init_from",
                "replaces every weight: unset model.text_init and model.audio_init",
            ));
        }
        let file = ck.join(crate::checkpoint::MODEL_FILE);
        ps.load_safetensors(&file, &LoadOptions::default())?;
        used.push(record("init_from", &file)?);
        return Ok(used);
    }
    if let Some(dir) = text {
        let folder = TextFolder::open(&dir)?;
        model.load_text_encoder(ps, &folder.weights)?;
        used.push(record("text_init.config", &dir.join("config.json"))?);
        used.push(record("text_init.weights", &folder.weights)?);
    }
    if let Some(file) = audio {
        let cnn = model.audio_cnn().ok_or_else(|| {
            TrainError::config(
                "model.audio_init",
                "the preset has no audio backbone (audio.backbone) to initialise",
            )
        })?;
        cnn.load_efficientat(ps, &file).map_err(|e| {
            let width = model.config().audio.backbone.clone().unwrap_or_default();
            TrainError::config(
                "model.audio_init",
                format!("does not fit the preset's audio backbone {width}: {e}"),
            )
        })?;
        used.push(record("audio_init", &file)?);
    }
    Ok(used)
}

/// What `RUN/init.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// Files whose weights initialised the model (empty = random initialisation).
    pub weights: Vec<FileRecord>,
    /// Where the tokenizer came from: `model.tokenizer`, `model.text_init`,
    /// `model.init_from` or `dataset`.
    pub tokenizer_source: String,
    /// The tokenizer file (absent when it is the dataset's), with its sha256.
    pub tokenizer: Option<FileRecord>,
    /// sha256 of the stored `RUN/tokenizer.json`.
    pub run_tokenizer_sha256: String,
}

/// Rank 0: stores the tokenizer as `RUN/tokenizer.json` and the provenance as `RUN/init.json`
/// (both atomically).
pub fn write_run_files(run: &Path, tok: &RunTokenizer, weights: Vec<FileRecord>) -> Result<()> {
    let json = tok.tok.to_json().map_err(hr_data::DataError::from)?;
    hr_core::write_atomic(&run.join(RUN_TOKENIZER_FILE), json.as_bytes())?;
    let prov = Provenance {
        weights,
        tokenizer_source: tok.source.into(),
        tokenizer: tok
            .file
            .as_deref()
            .map(|p| record("tokenizer", p))
            .transpose()?,
        run_tokenizer_sha256: hr_data::shard::sha256_hex(json.as_bytes()),
    };
    let text = serde_json::to_string_pretty(&prov)
        .map_err(|e| TrainError::format(run.join(INIT_FILE), e.to_string()))?;
    hr_core::write_atomic(&run.join(INIT_FILE), text.as_bytes())?;
    Ok(())
}

/// One line per start of a run in `RUN/provenance.jsonl`: what ran, on what, from what.
pub const PROVENANCE_FILE: &str = "provenance.jsonl";

/// What a start of training ran on, for [`record_start`].
pub struct StartRecord<'a> {
    /// The resolved config (its sha256 is recorded; the text is `RUN/config.toml`).
    pub config_toml: &'a str,
    /// The dataset root and its manifest's sha256.
    pub dataset: (&'a str, String),
    /// Ranks in the job.
    pub world_size: usize,
    /// This rank's device.
    pub device: hr_tensor::Device,
    /// Whether this start resumed from a checkpoint.
    pub resumed: bool,
}

/// Rank 0: appends one JSON line to `RUN/provenance.jsonl` (rewritten atomically): the binary
/// version and git commit it was built from, the sha256 of the resolved config and of the
/// dataset manifest, the world size, the device and, on a GPU, its architecture and the NVRTC
/// and NCCL versions found.
pub fn record_start(run: &Path, r: &StartRecord<'_>) -> Result<()> {
    let mut line = serde_json::json!({
        "started_unix_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "hr_train_version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("HR_GIT_COMMIT"),
        "resumed": r.resumed,
        "config_sha256": hr_data::shard::sha256_hex(r.config_toml.as_bytes()),
        "dataset": {"root": r.dataset.0, "manifest_sha256": r.dataset.1},
        "world_size": r.world_size,
        "device": r.device.to_string(),
    });
    if let hr_tensor::Device::Cuda(n) = r.device {
        line["cuda"] = cuda_versions(n);
    }
    let path = run.join(PROVENANCE_FILE);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(TrainError::io(&path)(e)),
    };
    text.push_str(&line.to_string());
    text.push('\n');
    hr_core::write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// The GPU's architecture and the CUDA library versions this process loaded (a field holds
/// the error text when a library could not be asked).
fn cuda_versions(ordinal: usize) -> serde_json::Value {
    let show =
        |r: std::result::Result<String, String>| r.unwrap_or_else(|e| format!("unavailable: {e}"));
    serde_json::json!({
        "arch": show(hr_tensor::cuda::context(ordinal).map(|d| d.arch()).map_err(|e| e.to_string())),
        "nvrtc": show(hr_tensor::cuda::nvrtc_version(ordinal).map(|(a, b)| format!("{a}.{b}")).map_err(|e| e.to_string())),
        "nccl": show(hr_dist::nccl_version().map(|v| v.to_string()).map_err(|e| e.to_string())),
    })
}

/// Whether a run directory holds what a fresh start recorded (`RUN/tokenizer.json`,
/// `RUN/init.json`, `RUN/model.toml`): a resume then needs no pretrained file.
pub fn run_recorded(run: &Path) -> bool {
    [RUN_TOKENIZER_FILE, INIT_FILE, crate::trainer::MODEL_TOML]
        .iter()
        .all(|f| run.join(f).is_file())
}

/// The tokenizer of a finished run: `RUN/tokenizer.json`, or (runs made before it was stored)
/// the tokenizer its config resolves to.
pub fn run_tokenizer(run: &Path, cfg: &TrainConfig, max_tokens: usize) -> Result<TextTokenizer> {
    let stored = run.join(RUN_TOKENIZER_FILE);
    if stored.is_file() {
        return Ok(TextTokenizer::from_file(&stored, max_tokens).map_err(hr_data::DataError::from)?);
    }
    Ok(resolve_tokenizer(cfg, max_tokens)?.tok)
}
