//! Checkpoints (ARCHITECTURE.md "Run directory"):
//! `RUN/checkpoints/step-000000123/{model.safetensors, optimizer.safetensors, state.json}`, then a
//! `COMMIT` marker written last, then `RUN/checkpoints/latest` naming the newest committed one.
//! Every file is written atomically (temp + fsync + rename); a directory without `COMMIT` is
//! ignored. Retention keeps the newest `keep_last` plus the best by validation mAP@10.

use std::path::{Path, PathBuf};

use hr_core::write_atomic;
use hr_data::Cursor;
use hr_nn::optim::Adam;
use hr_nn::ParamStore;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Model weights file name.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer moments file name.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Training state file name.
pub const STATE_FILE: &str = "state.json";
/// Commit marker, written last.
pub const COMMIT_FILE: &str = "COMMIT";

/// Everything besides weights and moments needed to continue bit-exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps taken (batches consumed, skipped steps included).
    pub step: u64,
    /// Epoch of the next batch.
    pub epoch: u64,
    /// Data cursor of the next batch.
    pub cursor: Cursor,
    /// State of the dropout / SpecAugment seed generator.
    pub rng_state: u64,
    /// World size that wrote it.
    pub world_size: usize,
    /// Hash of the resolved config.
    pub config_hash: String,
    /// Validation mAP@10 at this step, when validation ran here.
    pub val_map10: Option<f64>,
    /// Steps skipped so far because the loss was not finite.
    pub nonfinite_skipped: u64,
}

/// The checkpoints folder of a run.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Directory name of step `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:09}")
}

fn parse_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Writes a checkpoint; returns its directory. A failure part-way is a
/// [`TrainError::CheckpointSave`] naming it: the checkpoint has no `COMMIT`, and the ones
/// committed before it are untouched.
pub fn save(run: &Path, ps: &ParamStore, opt: &Adam, state: &TrainState) -> Result<PathBuf> {
    let dir = checkpoints_dir(run).join(step_dir_name(state.step));
    write_checkpoint(run, ps, opt, state).map_err(|cause| TrainError::CheckpointSave {
        dir,
        cause: Box::new(cause),
    })
}

fn write_checkpoint(
    run: &Path,
    ps: &ParamStore,
    opt: &Adam,
    state: &TrainState,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run);
    let dir = root.join(step_dir_name(state.step));
    let _ = std::fs::remove_file(dir.join(COMMIT_FILE));
    std::fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
    // A writer killed mid-save (kill -9, node failure) leaves its temporary files behind.
    hr_core::remove_stale_temporaries(&root)?;
    hr_core::remove_stale_temporaries(&dir)?;
    ps.save_safetensors(&dir.join(MODEL_FILE))?;
    opt.save(ps, &dir.join(OPTIMIZER_FILE))?;
    let json =
        serde_json::to_vec_pretty(state).map_err(|e| TrainError::format(&dir, e.to_string()))?;
    write_atomic(&dir.join(STATE_FILE), &json)?;
    write_atomic(&dir.join(COMMIT_FILE), b"ok\n")?;
    write_atomic(&root.join("latest"), step_dir_name(state.step).as_bytes())?;
    Ok(dir)
}

/// Reads `state.json` of a checkpoint directory.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::format(&path, e.to_string()))
}

/// Committed checkpoints of a run, oldest first, as (step, directory).
pub fn committed(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let root = checkpoints_dir(run);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(TrainError::io(&root))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = parse_step(&name) {
            if e.path().join(COMMIT_FILE).is_file() {
                out.push((step, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest committed checkpoint (directories without `COMMIT` are ignored).
pub fn latest_committed(run: &Path) -> Result<Option<PathBuf>> {
    Ok(committed(run)?.pop().map(|(_, p)| p))
}

/// Deletes committed checkpoints beyond the newest `keep_last` except the best by val mAP@10.
pub fn retain(run: &Path, keep_last: usize) -> Result<()> {
    let all = committed(run)?;
    let best = all
        .iter()
        .filter_map(|(s, p)| read_state(p).ok()?.val_map10.map(|m| (m, *s)))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, s)| s);
    let cut = all.len().saturating_sub(keep_last);
    for (step, dir) in &all[..cut] {
        if Some(*step) != best {
            std::fs::remove_dir_all(dir).map_err(TrainError::io(dir))?;
        }
    }
    Ok(())
}

/// The checkpoint with the best validation mAP@10, if any was validated.
pub fn best(run: &Path) -> Result<Option<PathBuf>> {
    let mut best: Option<(f64, PathBuf)> = None;
    for (_, p) in committed(run)? {
        if let Some(m) = read_state(&p)?.val_map10 {
            if best.as_ref().is_none_or(|(b, _)| m > *b) {
                best = Some((m, p));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hr_nn::optim::AdamConfig;

    fn state(step: u64, val: Option<f64>) -> TrainState {
        TrainState {
            step,
            epoch: 0,
            cursor: Cursor::default(),
            rng_state: 7,
            world_size: 1,
            config_hash: "x".into(),
            val_map10: val,
            nonfinite_skipped: 0,
        }
    }

    #[test]
    fn retention_keeps_the_newest_and_the_best() {
        let run = tempfile::tempdir().unwrap();
        let ps = ParamStore::new();
        let opt = Adam::new(&ps, AdamConfig::default(), Vec::new()).unwrap();
        let vals = [Some(0.1), Some(0.5), None, Some(0.2), None];
        for (i, v) in vals.into_iter().enumerate() {
            save(run.path(), &ps, &opt, &state(i as u64 + 1, v)).unwrap();
        }
        retain(run.path(), 2).unwrap();
        let steps: Vec<u64> = committed(run.path())
            .unwrap()
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(steps, vec![2, 4, 5]);
        assert_eq!(
            best(run.path()).unwrap().unwrap(),
            checkpoints_dir(run.path()).join(step_dir_name(2))
        );
        let latest = std::fs::read_to_string(checkpoints_dir(run.path()).join("latest")).unwrap();
        assert_eq!(latest, step_dir_name(5));
        assert_eq!(
            read_state(&latest_committed(run.path()).unwrap().unwrap()).unwrap(),
            state(5, None)
        );
    }
}
