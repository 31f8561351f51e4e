//! Evaluating a checkpoint (what `hr-eval` runs): rebuild the model from `RUN/model.toml`, load
//! `model.safetensors`, embed every clip (with metadata) and caption of a split, and rank.
//!
//! Given a run directory, the report scores its final checkpoint (the newest: the paper's
//! number) and its best-validation checkpoint beside it, each named; every report lists the
//! clips and counts the captions it scored, with a digest, so a missing file cannot silently
//! change a result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hr_data::SplitIndex;
use hr_models::retriever::HybridRetriever;
use hr_nn::{LoadOptions, ParamStore};
use serde_json::json;

use crate::checkpoint::{self, COMMIT_FILE, MODEL_FILE};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate, EvalResult};
use crate::metrics::top_k;
use crate::trainer::{loader_config, open_eval_set};

/// A loaded checkpoint.
pub struct LoadedCheckpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The run directory above it.
    pub run: PathBuf,
    /// The run's resolved training config.
    pub config: TrainConfig,
    /// The model.
    pub model: HybridRetriever,
    /// Its parameters.
    pub params: ParamStore,
}

/// Resolves a checkpoint path: a checkpoint directory, or a run directory (its newest committed one).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(COMMIT_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join(MODEL_FILE).is_file() {
        return Err(TrainError::format(
            path.to_path_buf(),
            "checkpoint has no COMMIT marker (incomplete)",
        ));
    }
    checkpoint::latest_committed(path)?.ok_or_else(|| {
        TrainError::format(
            path.to_path_buf(),
            "neither a committed checkpoint nor a run directory with one",
        )
    })
}

/// Loads a checkpoint and the model of its run (`DIR/../../{config,model}.toml`).
pub fn load(path: &Path) -> Result<LoadedCheckpoint> {
    let dir = resolve(path)?;
    let run = dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| TrainError::format(dir.clone(), "no run directory above"))?;
    let config = TrainConfig::from_file(&run.join("config.toml"), &[])?;
    let mpath = run.join(crate::trainer::MODEL_TOML);
    let mcfg = hr_models::presets::from_toml_file(&mpath)?;
    let (model, mut params) = crate::model::build_model(&mcfg, config.run.seed)?;
    params.load_safetensors(&dir.join(MODEL_FILE), &LoadOptions::default())?;
    Ok(LoadedCheckpoint {
        run: run.to_path_buf(),
        dir,
        config,
        model,
        params,
    })
}

/// Evaluates a loaded checkpoint on `split` of `data` (default: the run's dataset) in this
/// process alone.
pub fn evaluate_checkpoint(
    ck: &mut LoadedCheckpoint,
    data: Option<&str>,
    split: &str,
    batch_size: usize,
) -> Result<(EvalResult, Arc<SplitIndex>)> {
    evaluate_checkpoint_sharded(ck, data, split, batch_size, &mut hr_dist::LocalComm)
}

/// [`evaluate_checkpoint`] sharded over the ranks of `comm` (every rank calls it with the same
/// checkpoint and gets the same result).
pub fn evaluate_checkpoint_sharded(
    ck: &mut LoadedCheckpoint,
    data: Option<&str>,
    split: &str,
    batch_size: usize,
    comm: &mut dyn hr_dist::Communicator,
) -> Result<(EvalResult, Arc<SplitIndex>)> {
    let root = data.unwrap_or(&ck.config.data.root).to_string();
    let lcfg = loader_config(&ck.config);
    let tok = crate::init::run_tokenizer(&ck.run, &ck.config, lcfg.max_tokens)?;
    let (set, index) = open_eval_set(&root, split, &lcfg, tok)?;
    let missing = ck.config.model.missing_metadata;
    let r = evaluate(&ck.model, &mut ck.params, &set, batch_size, missing, comm)?;
    Ok((r, index))
}

/// Which checkpoint of a run a number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The newest committed checkpoint (the end of training).
    Final,
    /// The checkpoint with the best validation mAP@10.
    Best,
    /// A checkpoint directory given explicitly.
    Given,
}

impl Which {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Which::Final => "final",
            Which::Best => "best_val",
            Which::Given => "given",
        }
    }
}

/// The checkpoints a report scores: a checkpoint directory alone, or a run's final and (when
/// validation ran) best-validation checkpoints.
pub fn report_checkpoints(path: &Path) -> Result<Vec<(Which, PathBuf)>> {
    let dir = resolve(path)?;
    if path.join(COMMIT_FILE).is_file() {
        return Ok(vec![(Which::Given, dir)]);
    }
    let mut out = vec![(Which::Final, dir)];
    if let Some(best) = checkpoint::best(path)? {
        out.push((Which::Best, best));
    }
    Ok(out)
}

/// The clips and captions an evaluation scored: clip ids in order, the number of captions
/// (queries) and a sha256 over `id \t caption` lines.
pub fn scored_items(r: &EvalResult, index: &SplitIndex) -> serde_json::Value {
    let lines: String = r
        .queries
        .iter()
        .map(|q| format!("{}\t{}\n", index.clips[q.clip as usize].id, q.text))
        .collect();
    let ids: Vec<&str> = index.clips.iter().map(|c| c.id.as_str()).collect();
    let sha = hr_data::shard::sha256_hex(lines.as_bytes());
    json!({"clips": ids, "captions": r.queries.len(), "sha256": sha})
}

/// One scored checkpoint as a JSON object: which, path, step, the sha256 of its weights,
/// validation mAP@10 (if any) and the metrics.
fn scored(which: Which, ck: &LoadedCheckpoint, r: &EvalResult) -> Result<serde_json::Value> {
    let st = checkpoint::read_state(&ck.dir)?;
    let m = r.metrics;
    let weights = ck.dir.join(checkpoint::MODEL_FILE);
    let (sha, _) = hr_data::shard::sha256_file(&weights)?;
    Ok(json!({
        "which": which.name(), "checkpoint": ck.dir.display().to_string(), "step": st.step,
        "model_sha256": sha,
        "val_mAP@10": st.val_map10, "R@1": m.r1, "R@5": m.r5, "R@10": m.r10, "mAP@10": m.map10,
        "queries": m.queries,
    }))
}

/// What `hr-eval` reports for `path` (a run or checkpoint directory) on `split`: the first
/// checkpoint of [`report_checkpoints`] at the top level (the final one for a run), the
/// best-validation one under `best`, the scored items and, for full-sentence metadata, the
/// protocol. Returns the report and the first evaluation (for `--topk-out`).
pub fn report(
    path: &Path,
    data: Option<&str>,
    split: &str,
    batch_size: Option<usize>,
    device: hr_tensor::Device,
) -> Result<(serde_json::Value, EvalResult, Arc<SplitIndex>)> {
    let mut first: Option<(serde_json::Value, EvalResult, Arc<SplitIndex>)> = None;
    let mut scored_dirs: Vec<(PathBuf, serde_json::Value)> = Vec::new();
    for (which, dir) in report_checkpoints(path)? {
        if let Some((_, v)) = scored_dirs.iter().find(|(d, _)| *d == dir) {
            let mut v = v.clone();
            v["which"] = json!(which.name());
            attach(&mut first, which, v);
            continue;
        }
        let mut ck = load(&dir)?;
        ck.params.to_device(device)?;
        let bs = batch_size.unwrap_or(ck.config.eval.batch_size);
        let (r, index) = evaluate_checkpoint(&mut ck, data, split, bs)?;
        let v = scored(which, &ck, &r)?;
        scored_dirs.push((dir, v.clone()));
        match first {
            None => {
                let mut top = v;
                top["split"] = json!(split);
                top["clips"] = json!(r.clips);
                top["items"] = scored_items(&r, &index);
                if ck.config.model.metadata == hr_data::MetadataKind::FullSentence {
                    top["fs_protocol"] =
                        serde_json::to_value(ck.config.eval.full_sentence).unwrap_or_default();
                }
                first = Some((top, r, index));
            }
            Some(_) => attach(&mut first, which, v),
        }
    }
    first.ok_or_else(|| TrainError::format(path.to_path_buf(), "no checkpoint to evaluate"))
}

fn attach(
    first: &mut Option<(serde_json::Value, EvalResult, Arc<SplitIndex>)>,
    which: Which,
    v: serde_json::Value,
) {
    if let (Some((top, _, _)), Which::Best) = (first.as_mut(), which) {
        top["best"] = v;
    }
}

/// Writes the top-`k` clips of every query as JSONL.
pub fn write_topk(path: &Path, r: &EvalResult, index: &SplitIndex, k: usize) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(TrainError::io(path))?);
    for (qi, q) in r.queries.iter().enumerate() {
        let row = &r.sim[qi * r.clips..(qi + 1) * r.clips];
        let top: Vec<_> = top_k(row, k)
            .into_iter()
            .map(|(c, s)| json!({"clip": c, "id": index.clips[c].id, "score": s}))
            .collect();
        let line = json!({
            "query": qi, "text": q.text, "clip": q.clip, "caption": q.caption,
            "target_id": index.clips[q.clip as usize].id, "rank": r.ranks[qi], "top": top,
        });
        writeln!(f, "{line}").map_err(TrainError::io(path))?;
    }
    f.flush().map_err(TrainError::io(path))
}
