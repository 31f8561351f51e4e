//! Test helpers: config overrides of short CPU runs, synthetic datasets, a free port.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hr_train::TrainConfig;

/// `KEY="PATH"`, a path override for `TrainConfig::from_toml_str` or `--set`.
pub fn set_path(key: &str, path: &Path) -> String {
    format!("{key}={:?}", path.display().to_string())
}

/// Overrides of a short CPU run: dataset `data`, run directory `run`, `steps` steps of global
/// batch 8 on 1 s clips with one loader worker.
pub fn short_run(data: &Path, run: &Path, steps: u64) -> Vec<String> {
    vec![
        set_path("data.root", data),
        set_path("run.dir", run),
        format!("run.max_steps={steps}"),
        "data.clip_seconds=1.0".into(),
        "data.workers=1".into(),
        "optim.global_batch=8".into(),
    ]
}

/// Generates the 40-clip synthetic dataset of seed 3 at `root` unless it is there.
pub fn synthetic_40(root: &Path) {
    if !root.join("manifest.json").is_file() {
        hr_data::synthetic::prepare(root, 40, 3, None, &|_| {}).unwrap();
    }
}

/// The dataset of [`synthetic_40`] at `CARGO_TARGET_TMPDIR/name`, generated once for every
/// test of this binary (the first call's `name` wins).
pub fn shared_synthetic_40(name: &str) -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        synthetic_40(&root);
        root
    })
}

/// Trains two steps on `dir/data` (see [`synthetic_40`]) into `dir/name` with `extra`
/// overrides; returns the run directory.
pub fn trained_briefly(dir: &Path, name: &str, extra: &[String]) -> PathBuf {
    let data = dir.join("data");
    synthetic_40(&data);
    let run = dir.join(name);
    let mut set = short_run(&data, &run, 2);
    set.extend_from_slice(extra);
    let cfg = TrainConfig::from_toml_str("", &set).unwrap();
    hr_train::train(&cfg, &hr_train::Resume::Fresh, &Default::default()).unwrap();
    run
}

/// Learning rates of the end-to-end runs: from 3e-3 down to 1e-4 in every group.
pub fn lr_overrides() -> Vec<String> {
    let mut set = Vec::new();
    for g in ["audio_cnn", "text", "audio_head", "text_proj"] {
        set.push(format!("optim.lr.{g}.max=3e-3"));
        set.push(format!("optim.lr.{g}.min=1e-4"));
    }
    set
}

/// `hr-eval` arguments: evaluate `checkpoint` (a run or step directory) on `split` into `out`.
pub fn eval_args<'a>(checkpoint: &'a Path, split: &'a str, out: &'a Path) -> [&'a str; 6] {
    let path = |p: &'a Path| p.to_str().unwrap();
    [
        "--checkpoint",
        path(checkpoint),
        "--split",
        split,
        "--out",
        path(out),
    ]
}
