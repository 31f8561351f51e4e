//! The run-directory contract between the coordinator and its jobs: the coordinator writes
//! `RUN/job.toml` (the resolved config); jobs report only through files of their run directory:
//! `RUN/result.json` (hr-train, atomic), `RUN/eval-<set>.json` (hr-eval, atomic), logs.

use std::path::{Path, PathBuf};

use hr_train::metrics::RetrievalMetrics;
use serde::Deserialize;

use crate::bins::sh_quote;
use crate::error::{Result, SweepError};
use crate::ledger::JobKind;
use crate::plan::{Plan, Run};
use crate::spec::EvalSpec;
use hr_core::write_atomic;

/// The resolved config the job trains from.
pub const JOB_CONFIG: &str = "job.toml";
/// Written by hr-train when it finishes.
pub const RESULT_FILE: &str = "result.json";

/// `RUN/result.json` (the fields the sweep uses).
#[derive(Debug, Clone, Deserialize)]
pub struct TrainResult {
    /// Final step.
    pub step: u64,
    /// Last validation.
    pub val: Option<RetrievalMetrics>,
}

/// Path of a job's log file.
pub fn log_path(run: &Run, job: JobKind) -> PathBuf {
    run.dir.join(match job {
        JobKind::Train => "train.log",
        JobKind::Eval => "eval.log",
    })
}

/// Path of one evaluation's output.
pub fn eval_path(run: &Run, set: &str) -> PathBuf {
    run.dir.join(format!("eval-{set}.json"))
}

/// The training result, when the run finished.
pub fn train_result(run: &Run) -> Option<TrainResult> {
    let text = std::fs::read_to_string(run.dir.join(RESULT_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether every evaluation of the run has its output.
pub fn evals_done(run: &Run) -> bool {
    run.evals
        .iter()
        .all(|e| eval_metrics(run, &e.name).is_some())
}

/// `RUN/eval-<set>.json` as hr-eval writes it for a run directory: the final checkpoint's
/// metrics at the top level (the paper's protocol), the best-validation checkpoint's under
/// `best` (absent when no validation ran).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct EvalFile {
    /// The final checkpoint.
    #[serde(flatten)]
    pub last: RetrievalMetrics,
    /// The best-validation checkpoint.
    #[serde(default)]
    pub best: Option<RetrievalMetrics>,
}

/// One evaluation's output, when present.
pub fn eval_file(run: &Run, set: &str) -> Option<EvalFile> {
    let text = std::fs::read_to_string(eval_path(run, set)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The final checkpoint's metrics of one evaluation, when present.
pub fn eval_metrics(run: &Run, set: &str) -> Option<RetrievalMetrics> {
    eval_file(run, set).map(|f| f.last)
}

/// Writes `RUN/job.toml` for every run (atomically; unchanged files are left alone).
pub fn write_job_configs(plan: &Plan) -> Result<()> {
    for run in &plan.runs {
        let text = run.config.to_toml()?;
        let path = run.dir.join(JOB_CONFIG);
        let header = format!(
            "# written by hr-sweep for run {} [{}] of {}\n",
            run.id,
            run.name(),
            plan.file.display()
        );
        let body = header + &text;
        if std::fs::read_to_string(&path).ok().as_deref() == Some(body.as_str()) {
            continue;
        }
        std::fs::create_dir_all(&run.dir).map_err(SweepError::io(&run.dir))?;
        write_atomic(&path, body.as_bytes())?;
    }
    Ok(())
}

/// Generates every synthetic dataset root once, before any job starts (so concurrent jobs
/// never generate the same root at the same time).
pub fn ensure_synthetic(plan: &Plan) -> Result<()> {
    let mut done: Vec<&str> = Vec::new();
    for run in plan
        .runs
        .iter()
        .filter(|r| r.config.data.synthetic_clips > 0)
    {
        if done.contains(&run.config.data.root.as_str()) {
            continue;
        }
        hr_train::trainer::ensure_dataset(&run.config)?;
        done.push(&run.config.data.root);
    }
    Ok(())
}

/// The shell command of a training attempt (`bin` is a shell expression for hr-train).
pub fn train_command(bin: &str, run: &Run, extra: &str) -> String {
    let cfg = sh_quote(&run.dir.join(JOB_CONFIG).to_string_lossy());
    format!("{bin} --config {cfg} --resume auto{extra}")
}

/// One `hr-eval` command per evaluation set (`bin` is a shell expression for hr-eval), on the
/// split and device of `eval`.
pub fn eval_commands(bin: &str, run: &Run, eval: &EvalSpec) -> Vec<String> {
    run.evals
        .iter()
        .map(|e| {
            format!(
                "{bin} --checkpoint {} --data {} --split {} --device {} --out {}",
                sh_quote(&run.dir.to_string_lossy()),
                sh_quote(&e.root),
                sh_quote(&eval.split),
                sh_quote(&eval.device),
                sh_quote(&eval_path(run, &e.name).to_string_lossy())
            )
        })
        .collect()
}

/// Reads the checked exit status a local job wrapper left (`RUN/<job>.exit`).
pub fn read_exit(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A failure reason: what happened plus the tail of the job's log.
pub fn failure_reason(what: &str, log: &Path) -> String {
    let tail = crate::fsutil::tail(log, 12);
    if tail.is_empty() {
        format!("{what} (log {} is empty)", log.display())
    } else {
        format!("{what}; tail of {}:\n{tail}", log.display())
    }
}
