//! `hr-eval`: text -> audio retrieval metrics (R@1/5/10, mAP@10) of a checkpoint on a split.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use hr_train::eval_job::{report, write_topk};

#[derive(Parser)]
#[command(
    name = "hr-eval",
    version,
    about = "Evaluate a checkpoint (text -> audio retrieval)"
)]
struct Cli {
    /// Checkpoint directory (`RUN/checkpoints/step-...`), or a run directory: its final
    /// (newest) checkpoint is reported, and its best-validation checkpoint under `best`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset root (default: the run's `data.root`).
    #[arg(long)]
    data: Option<String>,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// Write the metrics as JSON here (default: print only).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the top-10 clips of every query as JSONL here.
    #[arg(long)]
    topk_out: Option<PathBuf>,
    /// Clips / captions per embedding batch (default: the run's `eval.batch_size`).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Device to embed on: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Logging.
    #[command(flatten)]
    log: hr_core::cli::LogArgs,
}

fn main() {
    // Reuse freed host memory instead of mapping large buffers afresh every step.
    hr_tensor::cpu::keep_freed_memory();
    let cli = Cli::parse();
    cli.log.init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = hr_tensor::Device::parse(&cli.device).context("--device")?;
    let (json, r, index) = report(
        &cli.checkpoint,
        cli.data.as_deref(),
        &cli.split,
        cli.batch_size,
        device,
    )
    .with_context(|| format!("evaluating {}", cli.checkpoint.display()))?;
    let mut shown = json.clone();
    if let Some(items) = shown.get_mut("items") {
        items["clips"] = serde_json::json!(format!("{} ids (in --out)", r.clips));
    }
    println!("{}", serde_json::to_string_pretty(&shown)?);
    if let Some(out) = &cli.out {
        hr_core::write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    if let Some(p) = &cli.topk_out {
        write_topk(p, &r, &index, 10)?;
    }
    Ok(())
}
