//! Where the trainer's batches come from: the dataset (generated when it is the synthetic
//! default and absent), this rank's loader configuration, the evaluation set, and the batch
//! source (the loader, or replayed batches for measuring the step alone).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hr_data::text::TextTokenizer;
use hr_data::{EvalSet, LoaderConfig, SplitIndex};

use crate::config::{BadRowPolicy, TrainConfig};
use crate::error::{Result, TrainError};

/// The local `data.root` (without `file://`) when the config generates a synthetic dataset
/// there (`data.synthetic_clips > 0`); `None` for a remote root or a prepared dataset.
fn synthetic_root(cfg: &TrainConfig) -> Option<&Path> {
    let root = cfg
        .data
        .root
        .strip_prefix("file://")
        .unwrap_or(&cfg.data.root);
    (!root.contains("://") && cfg.data.synthetic_clips > 0).then_some(Path::new(root))
}

/// Generates the synthetic dataset when `data.root` is an absent local path and
/// `data.synthetic_clips > 0`.
pub fn ensure_dataset(cfg: &TrainConfig) -> Result<()> {
    let Some(path) = synthetic_root(cfg) else {
        return Ok(());
    };
    if path.join("manifest.json").is_file() {
        return Ok(());
    }
    tracing::info!(
        clips = cfg.data.synthetic_clips,
        root = %path.display(),
        "generating the synthetic dataset"
    );
    hr_data::synthetic::prepare(
        path,
        cfg.data.synthetic_clips,
        cfg.data.synthetic_seed,
        None,
        &|_| {},
    )?;
    Ok(())
}

/// Waits (up to an hour) until the dataset that rank 0 is generating has its manifest.
pub(crate) fn wait_for_dataset(cfg: &TrainConfig) -> Result<()> {
    let Some(root) = synthetic_root(cfg) else {
        return Ok(());
    };
    let manifest = root.join("manifest.json");
    let t0 = Instant::now();
    while !manifest.is_file() {
        if t0.elapsed() > std::time::Duration::from_secs(3600) {
            return Err(TrainError::config(
                "data.root",
                format!(
                    "{} did not appear within an hour (rank 0 generates it)",
                    manifest.display()
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    Ok(())
}

/// Loader settings of a config for single-process evaluation (world size 1).
pub fn loader_config(cfg: &TrainConfig) -> LoaderConfig {
    rank_loader_config(cfg, 1, 0)
}

/// Loader settings of a config for `rank` of `world_size` (each rank loads its share of the
/// global batch; the order is the same for every world size).
pub fn rank_loader_config(cfg: &TrainConfig, world_size: usize, rank: usize) -> LoaderConfig {
    LoaderConfig {
        seed: cfg.run.seed,
        global_batch: cfg.optim.global_batch,
        world_size,
        rank,
        clip_seconds: cfg.data.clip_seconds,
        workers: cfg.data.workers,
        prefetch_batches: cfg.data.prefetch_batches,
        audio_cache_mib: cfg.data.audio_cache_mib,
        skip_undecodable: cfg.data.bad_rows == BadRowPolicy::Skip,
        verify_checksums: cfg.data.verify_checksums,
        metadata: cfg.model.metadata,
        fs_eval: cfg.eval.full_sentence,
        ..LoaderConfig::default()
    }
}

/// Opens the evaluation view of `split` under `root`, tokenized with `tok`.
pub fn open_eval_set(
    root: &str,
    split: &str,
    lcfg: &LoaderConfig,
    tok: TextTokenizer,
) -> Result<(EvalSet, Arc<SplitIndex>)> {
    let (store, manifest) = hr_data::open_dataset(root)?;
    let index = Arc::new(SplitIndex::open(
        &store,
        &manifest,
        split,
        lcfg.verify_checksums,
    )?);
    Ok((EvalSet::new(index.clone(), lcfg.clone(), tok)?, index))
}

/// Where the steps' batches come from.
pub(crate) enum Source {
    /// The loader (the epoch order).
    Loader(hr_data::Loader),
    /// The first batches, decoded once and replayed in a cycle (`data.replay_batches`).
    Replay {
        batches: Vec<hr_data::Batch>,
        next: usize,
        batches_per_epoch: u64,
    },
}

impl Source {
    pub(crate) fn new(mut loader: hr_data::Loader, replay: usize) -> Result<Source> {
        if replay == 0 {
            return Ok(Source::Loader(loader));
        }
        let batches_per_epoch = loader.batches_per_epoch();
        let batches = loader
            .by_ref()
            .take(replay)
            .collect::<hr_data::Result<Vec<_>>>()?;
        tracing::warn!(
            batches = batches.len(),
            "data.replay_batches: training on the same batches in a cycle (a diagnostic, not training)"
        );
        Ok(Source::Replay {
            batches,
            next: 0,
            batches_per_epoch,
        })
    }

    pub(crate) fn next(&mut self) -> Option<hr_data::Result<hr_data::Batch>> {
        match self {
            Source::Loader(l) => l.next(),
            Source::Replay { batches, next, .. } => {
                let b = batches.get(*next % batches.len().max(1))?.clone();
                *next += 1;
                Some(Ok(b))
            }
        }
    }

    pub(crate) fn batches_per_epoch(&self) -> u64 {
        match self {
            Source::Loader(l) => l.batches_per_epoch(),
            Source::Replay {
                batches_per_epoch, ..
            } => *batches_per_epoch,
        }
    }

    pub(crate) fn skipped(&self) -> u64 {
        match self {
            Source::Loader(l) => l.skipped(),
            Source::Replay { .. } => 0,
        }
    }
}
