//! The typed training configuration: a TOML file plus `--set a.b=c` overrides, checked against
//! the schema (unknown keys and wrong types are reported with their dotted key) and validated.
//! Every field has a default, so an empty file is a valid (paper-like) configuration.

use std::path::{Path, PathBuf};

use hr_data::{FsEval, MetadataKind};
use hr_models::fusion::FusionKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::{Table, Value};

use crate::error::{Result, TrainError};

/// The whole training configuration (written resolved to `RUN/config.toml`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Run directory, seed, device and step-level policies.
    pub run: RunSection,
    /// Model preset and its overrides.
    pub model: ModelSection,
    /// Dataset and loader.
    pub data: DataSection,
    /// Batch, epochs, schedule and learning rates.
    pub optim: OptimSection,
    /// Periodic validation.
    pub eval: EvalSection,
    /// Checkpoint cadence and retention.
    pub checkpoint: CheckpointSection,
}

/// What to do when the loss is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Skip the step (no update), count it in `metrics.jsonl`, continue.
    #[default]
    Skip,
    /// Write a checkpoint and stop with an error naming the step.
    Stop,
}

/// What to do with rows whose audio does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRowPolicy {
    /// Stop with an error naming the shard and row.
    #[default]
    Fail,
    /// Drop the row, log it and count it.
    Skip,
}

/// Arithmetic of the training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    F32,
    /// Mixed precision: every matrix product and dense pointwise convolution of the training
    /// step rounds its operands to bf16 and accumulates in f32 (cuBLAS bf16 GEMMs on CUDA, the
    /// same rounding on the CPU), and the audio CNN keeps its activations and their gradients
    /// in bf16 storage (convolutions and batch norms compute in f32 and round each output
    /// once); the text side's activations, the loss, the f32 master weights, the weight
    /// gradients and the optimizer state stay f32. Validation runs in f32. Meant for GPUs: on
    /// the CPU it is the reference emulation (f32 arithmetic plus the same roundings), slower
    /// than `f32`.
    Bf16,
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Run directory (config, metrics, checkpoints).
    pub dir: PathBuf,
    /// Seed of the initialisation, dropout/SpecAugment masks and the data order.
    pub seed: u64,
    /// Device: `cpu`, `cuda` (GPU 0, or the one GPU a launcher made visible) or `cuda:N`.
    pub device: String,
    /// Stop after this many steps (0 = run every epoch); does not change the schedule.
    pub max_steps: u64,
    /// Non-finite loss policy: `skip` (count and continue) or `stop` (checkpoint, then fail).
    pub non_finite_loss: NonFinitePolicy,
    /// Log a metrics line every this many steps (0 = every step).
    pub log_every: u64,
    /// Arithmetic: `f32` or `bf16` (mixed-precision matrix products; see [`Precision`]).
    pub precision: Precision,
    /// Data parallel: seconds a collective may wait for a peer before the job fails naming it.
    pub dist_timeout_s: f64,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            dir: PathBuf::from("runs/default"),
            seed: 0,
            device: "cpu".into(),
            max_steps: 0,
            non_finite_loss: NonFinitePolicy::Skip,
            log_every: 1,
            precision: Precision::F32,
            dist_timeout_s: 60.0,
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Preset name from `configs/models/` (`tiny`, `paper-base`, `paper-large`).
    pub preset: String,
    /// Fusion: `none` (content-based baseline), `late` or `mid`.
    pub fusion: FusionKind,
    /// Metadata kind: `keywords`, `labels`, `description` or `full_sentence`.
    pub metadata: MetadataKind,
    /// NT-Xent temperature.
    pub tau: f64,
    /// Mel frontend augmentation in training (fmin / fmax jitter, SpecAugment masks).
    pub audio_augment: bool,
    /// Turn off every dropout of the preset.
    pub disable_dropout: bool,
    /// The CNN's batch norms use their running statistics in training too (affine parts
    /// still train); a step then does not depend on how the batch is split over ranks.
    pub frozen_batchnorm: bool,
    /// A second BERT for the metadata instead of sharing the query encoder (the paper's
    /// ablation; `true` overrides the preset).
    pub separate_metadata_encoder: bool,
    /// Items without metadata: `empty_string` (the authors' recipe: the empty text is
    /// embedded and fused like any other) or `mask` (fused as audio only).
    pub missing_metadata: MissingMetadata,
    /// A Hugging Face BERT folder (`config.json`, `model.safetensors`, `tokenizer.json` or
    /// `vocab.txt`) that gives the text encoder its shape, weights and tokenizer ("" = none).
    pub text_init: String,
    /// An EfficientAT state dict as safetensors (`hr-train import-weights efficientat`) that
    /// initialises the audio CNN; classifier entries are ignored ("" = none).
    pub audio_init: String,
    /// Start from another run's weights: a checkpoint directory or a run directory (its
    /// newest checkpoint); fresh optimizer, step 0 ("" = none; same as `--init-from`).
    pub init_from: String,
    /// A `tokenizer.json` or `vocab.txt` overriding the text encoder's tokenizer ("" = the
    /// `text_init` folder's, else the `init_from` run's, else the dataset's).
    pub tokenizer: String,
}

/// How items without metadata are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingMetadata {
    /// Embed the empty text (`[CLS] [SEP]`) and fuse it (the authors' code).
    #[default]
    EmptyString,
    /// Leave the metadata out: the item is its audio embedding alone.
    Mask,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            preset: "tiny".into(),
            fusion: FusionKind::Late,
            metadata: MetadataKind::Keywords,
            tau: 0.05,
            audio_augment: true,
            disable_dropout: false,
            frozen_batchnorm: false,
            separate_metadata_encoder: false,
            missing_metadata: MissingMetadata::EmptyString,
            text_init: String::new(),
            audio_init: String::new(),
            init_from: String::new(),
            tokenizer: String::new(),
        }
    }
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Dataset root (local path or URL).
    pub root: String,
    /// When > 0 and `root` is an absent local path, generate a synthetic dataset of this many clips there.
    pub synthetic_clips: u64,
    /// Seed of the generated synthetic dataset.
    pub synthetic_seed: u64,
    /// Crop/pad length of every clip in seconds.
    pub clip_seconds: f32,
    /// Decode worker threads.
    pub workers: usize,
    /// Batches each rank decodes ahead of the step (host memory: this many batches of
    /// waveforms plus one being uploaded).
    pub prefetch_batches: usize,
    /// Encoded audio of recently read clips kept per rank, in MiB (0 = none).
    pub audio_cache_mib: usize,
    /// On a GPU, copy the next batch's waveforms to the device on a copy stream while the
    /// current step runs (off: each step uploads its own batch first).
    pub upload_ahead: bool,
    /// Diagnostic: when > 0, decode this many batches once and train on them in a cycle, so
    /// `items_per_s` shows the step without the loader (compare with 0 to see whether a run
    /// waits for data). Not for real training: the data order and cursor are not the epoch's.
    pub replay_batches: usize,
    /// Undecodable rows: `fail` or `skip` (count and log).
    pub bad_rows: BadRowPolicy,
    /// Verify shard sha256 sums when opening.
    pub verify_checksums: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            root: "data/synthetic".into(),
            synthetic_clips: 0,
            synthetic_seed: 1,
            clip_seconds: 10.0,
            workers: 2,
            prefetch_batches: 4,
            audio_cache_mib: 256,
            upload_ahead: true,
            replay_batches: 0,
            bad_rows: BadRowPolicy::Fail,
            verify_checksums: true,
        }
    }
}

/// Peak and floor learning rate of one parameter group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrRange {
    /// Peak learning rate (end of warm-up).
    pub max: f64,
    /// Floor after the cosine ramp-down.
    pub min: f64,
}

impl Default for LrRange {
    fn default() -> Self {
        LrRange {
            max: 2e-5,
            min: 1e-7,
        }
    }
}

/// `[optim.lr]`: the four parameter groups of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrGroups {
    /// MobileNetV3 (`audio_cnn.*`).
    pub audio_cnn: LrRange,
    /// Text encoder(s) (`text.*`, `meta_text.*`).
    pub text: LrRange,
    /// Audio head: pooling transformer, global token, position scale, mid fusion (`audio_head.*`, `mid.*`).
    pub audio_head: LrRange,
    /// Text projection(s) (`text_proj.*`, `meta_text_proj.*`).
    pub text_proj: LrRange,
}

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    /// Global batch over all ranks (items = (clip, caption) pairs).
    pub global_batch: usize,
    /// Number of epochs.
    pub epochs: u64,
    /// Linear warm-up length in epochs.
    pub warmup_epochs: f64,
    /// Epoch at which the cosine ramp-down reaches `min`; the floor holds after it (the
    /// authors' 25-epoch recipe: 20).
    pub rampdown_stop: f64,
    /// Learning rates per parameter group.
    pub lr: LrGroups,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            global_batch: 32,
            epochs: 25,
            warmup_epochs: 1.0,
            rampdown_stop: 20.0,
            lr: LrGroups::default(),
        }
    }
}

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Validate every this many steps (0 = at the end of every epoch); always at the end.
    pub every_steps: u64,
    /// Split used for validation.
    pub split: String,
    /// Clips / captions per embedding batch.
    pub batch_size: usize,
    /// Full-sentence metadata at evaluation: `caption_offsets` (the authors' protocol: every
    /// caption is a query, query k ranks the clips fused with their caption (k+2) mod n) or
    /// `fixed_caption` (caption 2 is every clip's metadata and is not a query).
    pub full_sentence: FsEval,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            every_steps: 0,
            split: "val".into(),
            batch_size: 64,
            full_sentence: FsEval::CaptionOffsets,
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Checkpoint every this many steps (0 = at every validation); always at the end.
    pub every_steps: u64,
    /// Keep the newest this many checkpoints (plus the best by validation mAP@10).
    pub keep_last: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            every_steps: 0,
            keep_last: 3,
        }
    }
}

impl TrainConfig {
    /// Parses TOML text, applies `key=value` overrides, checks keys and types, validates.
    pub fn from_toml_str(text: &str, overrides: &[String]) -> Result<TrainConfig> {
        let mut table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| TrainError::config("<file>", e.to_string()))?;
        for ov in overrides {
            apply_override(&mut table, ov)?;
        }
        let schema = schema()?;
        check_keys(&table, &schema, "")?;
        let cfg: TrainConfig = Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| blame_leaf(&table, &schema, e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads `path` and applies `overrides`.
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
        Self::from_toml_str(&text, overrides).map_err(|e| match e {
            TrainError::Config { key, msg } => TrainError::Config {
                key,
                msg: format!("{msg} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// The resolved configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| TrainError::config("<config>", e.to_string()))
    }

    /// A short hash of the resolved configuration (stored in checkpoints).
    pub fn hash(&self) -> Result<String> {
        let digest = Sha256::digest(self.to_toml()?.as_bytes());
        Ok(hex::encode(&digest[..8]))
    }

    /// Cross-field checks; every error names its key.
    pub fn validate(&self) -> Result<()> {
        self.validate_model()?;
        self.validate_optim()?;
        let bad = |k: &str, m: String| Err(TrainError::config(k, m));
        if !(self.data.clip_seconds > 0.0 && self.data.clip_seconds.is_finite()) {
            return bad("data.clip_seconds", "must be positive".into());
        }
        if self.data.root.trim().is_empty() {
            return bad("data.root", "must not be empty".into());
        }
        if self.eval.batch_size == 0 {
            return bad("eval.batch_size", "must be positive".into());
        }
        if self.checkpoint.keep_last == 0 {
            return bad("checkpoint.keep_last", "must be at least 1".into());
        }
        if !(self.run.dist_timeout_s > 0.0 && self.run.dist_timeout_s.is_finite()) {
            return bad("run.dist_timeout_s", "must be positive".into());
        }
        parse_device(&self.run.device)?;
        Ok(())
    }

    fn validate_model(&self) -> Result<()> {
        hr_models::presets::preset(&self.model.preset)
            .map_err(|e| TrainError::config("model.preset", e.to_string()))?;
        if !(self.model.tau > 0.0 && self.model.tau.is_finite()) {
            return Err(TrainError::config("model.tau", "must be positive"));
        }
        Ok(())
    }

    fn validate_optim(&self) -> Result<()> {
        let o = &self.optim;
        let bad = |k: &str, m: String| Err(TrainError::config(k, m));
        if o.global_batch < 2 {
            return bad(
                "optim.global_batch",
                "must be at least 2 (negatives)".into(),
            );
        }
        if o.epochs == 0 {
            return bad("optim.epochs", "must be positive".into());
        }
        if !(o.warmup_epochs >= 0.0 && o.warmup_epochs.is_finite()) {
            return bad("optim.warmup_epochs", "must be >= 0".into());
        }
        if !(o.rampdown_stop > o.warmup_epochs && o.rampdown_stop.is_finite()) {
            let m = format!("must exceed warmup_epochs ({})", o.warmup_epochs);
            return bad("optim.rampdown_stop", m);
        }
        for (name, r) in self.lr_groups() {
            let ok = r.max.is_finite() && r.min >= 0.0 && r.min <= r.max;
            if !ok {
                let m = format!("need 0 <= min <= max, got min {} max {}", r.min, r.max);
                return bad(&format!("optim.lr.{name}"), m);
            }
        }
        Ok(())
    }

    /// The four groups by name.
    pub fn lr_groups(&self) -> [(&'static str, LrRange); 4] {
        let l = &self.optim.lr;
        [
            ("audio_cnn", l.audio_cnn),
            ("text", l.text),
            ("audio_head", l.audio_head),
            ("text_proj", l.text_proj),
        ]
    }
}

/// Parameter-name prefixes of each learning-rate group (names of `hr_models::retriever`).
pub fn group_prefixes(group: &str) -> &'static [&'static str] {
    match group {
        "audio_cnn" => &["audio_cnn."],
        "text" => &["text.", "meta_text."],
        "audio_head" => &["audio_head.", "mid."],
        "text_proj" => &["text_proj.", "meta_text_proj."],
        _ => &[],
    }
}

/// A device spec: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

/// Parses `run.device`.
pub fn parse_device(s: &str) -> Result<DeviceSpec> {
    match s {
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| {
                TrainError::config(
                    "run.device",
                    format!("expected cpu, cuda or cuda:N, got {s:?}"),
                )
            }),
    }
}

/// The default configuration as a TOML table: the schema unknown keys are checked against.
fn schema() -> Result<Table> {
    match Value::try_from(TrainConfig::default()) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(_) => Err(TrainError::config("<config>", "schema is not a table")),
        Err(e) => Err(TrainError::config("<config>", e.to_string())),
    }
}

/// Rejects keys absent from the schema and values of the wrong TOML type, naming the key.
fn check_keys(user: &Table, schema: &Table, prefix: &str) -> Result<()> {
    for (k, v) in user {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(s) = schema.get(k) else {
            let known: Vec<&str> = schema.keys().map(String::as_str).collect();
            return Err(TrainError::config(
                path,
                format!("unknown key; known here: {known:?}"),
            ));
        };
        match (v, s) {
            (Value::Table(u), Value::Table(s)) => check_keys(u, s, &path)?,
            (Value::Integer(_), Value::Float(_)) => {}
            _ if v.type_str() != s.type_str() => {
                let m = format!("expected a {}, got a {} ({v})", s.type_str(), v.type_str());
                return Err(TrainError::config(path, m));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Names the key of a deserialization error: the first leaf that fails on its own (set into
/// the default config) is the culprit.
fn blame_leaf(user: &Table, schema: &Table, err: toml::de::Error) -> TrainError {
    let mut leaves = Vec::new();
    collect_leaves(user, &mut Vec::new(), &mut leaves);
    for (path, v) in leaves {
        let mut t = schema.clone();
        set_path(&mut t, &path, v);
        if let Err(e) = Value::Table(t).try_into::<TrainConfig>() {
            return TrainError::config(path.join("."), e.message().trim().to_string());
        }
    }
    TrainError::config("<config>", err.to_string())
}

fn set_path(t: &mut Table, path: &[String], v: Value) {
    match path {
        [] => {}
        [last] => {
            t.insert(last.clone(), v);
        }
        [first, rest @ ..] => {
            if let Some(sub) = t.get_mut(first).and_then(Value::as_table_mut) {
                set_path(sub, rest, v);
            }
        }
    }
}

fn collect_leaves(t: &Table, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    for (k, v) in t {
        prefix.push(k.clone());
        match v {
            Value::Table(sub) => collect_leaves(sub, prefix, out),
            _ => out.push((prefix.clone(), v.clone())),
        }
        prefix.pop();
    }
}

/// Applies one `a.b.c=value` override; `value` is parsed as TOML, or taken as a string.
pub fn apply_override(table: &mut Table, kv: &str) -> Result<()> {
    let (key, raw) = kv
        .split_once('=')
        .ok_or_else(|| TrainError::config(kv, "an override must look like key=value"))?;
    let key = key.trim();
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TrainError::config(key, "empty key segment"));
    }
    let mut cur = table;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| TrainError::config(parts[..=i].join("."), "is a value, not a table"))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match doc.parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.into())),
        Err(_) => Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = TrainConfig::from_toml_str("", &[]).unwrap();
        assert_eq!(c, TrainConfig::default());
    }

    #[test]
    fn round_trips_through_toml() {
        let c = TrainConfig::default();
        let back = TrainConfig::from_toml_str(&c.to_toml().unwrap(), &[]).unwrap();
        assert_eq!(c, back);
    }
}
