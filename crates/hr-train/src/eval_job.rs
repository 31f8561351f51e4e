//! Evaluating a checkpoint (what `hr-eval` runs): rebuild the model from `RUN/model.toml`, load
//! `model.safetensors`, embed every clip (with metadata) and caption of a split, and rank.

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
        return Err(TrainError::Format {
            path: path.to_path_buf(),
            msg: "checkpoint has no COMMIT marker (incomplete)".into(),
        });
    }
    checkpoint::latest_committed(path)?.ok_or_else(|| TrainError::Format {
        path: path.to_path_buf(),
        msg: "neither a committed checkpoint nor a run directory with one".into(),
    })
}

/// Loads a checkpoint and the model of its run (`DIR/../../{config,model}.toml`).
pub fn load(path: &Path) -> Result<LoadedCheckpoint> {
    let dir = resolve(path)?;
    let run = dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| TrainError::Format {
            path: dir.clone(),
            msg: "no run directory above".into(),
        })?;
    let config = TrainConfig::from_file(&run.join("config.toml"), &[])?;
    let mpath = run.join("model.toml");
    let mcfg = hr_models::presets::from_toml_file(&mpath)?;
    let (model, mut params) = crate::model::build_model(&mcfg, config.run.seed)?;
    params.load_safetensors(&dir.join(MODEL_FILE), &LoadOptions::default())?;
    Ok(LoadedCheckpoint {
        dir,
        config,
        model,
        params,
    })
}

/// Evaluates a loaded checkpoint on `split` of `data` (default: the run's dataset).
pub fn evaluate_checkpoint(
    ck: &mut LoadedCheckpoint,
    data: Option<&str>,
    split: &str,
    batch_size: usize,
) -> Result<(EvalResult, Arc<SplitIndex>)> {
    let root = data.unwrap_or(&ck.config.data.root).to_string();
    let lcfg = loader_config(&ck.config);
    let (set, index, _) = open_eval_set(&root, split, &lcfg)?;
    let r = evaluate(&ck.model, &mut ck.params, &set, batch_size)?;
    Ok((r, index))
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
