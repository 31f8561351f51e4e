//! The trainer fed by the Parquet loader against the same loop fed with batches decoded
//! beforehand (`data.replay_batches`), on the CPU at the tiny preset: how much of a step the
//! data path costs when the decode workers share the cores with the step.
//!
//! Run: `cargo bench -p hr-train --bench data_feed` (release). HR_BENCH_STEPS sets the steps per
//! run (default 12); the first two steps (warm-up) are left out of the means.

use std::path::Path;

use hr_train::{train, Resume, TrainConfig, TrainControl};

/// Mean `items_per_s` of the logged steps after the warm-up.
fn mean_rate(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let rates: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["items_per_s"].as_f64())
        .skip(2)
        .collect();
    rates.iter().sum::<f64>() / rates.len().max(1) as f64
}

fn run(dir: &Path, name: &str, steps: usize, set: &[String]) -> f64 {
    let run = dir.join(name);
    let mut all: Vec<String> = vec![
        format!("data.root={:?}", dir.join("data").display().to_string()),
        format!("run.dir={:?}", run.display().to_string()),
        format!("run.max_steps={steps}"),
        "data.synthetic_clips=640".into(),
        "data.clip_seconds=10.0".into(),
        "optim.global_batch=32".into(),
        "eval.every_steps=100000".into(),
        "eval.split=\"test\"".into(),
        "checkpoint.every_steps=100000".into(),
    ];
    all.extend_from_slice(set);
    let cfg = TrainConfig::from_toml_str("", &all).unwrap();
    train(&cfg, &Resume::Fresh, &TrainControl::default()).unwrap();
    mean_rate(&run)
}

fn main() {
    let steps: usize = hr_core::env_or("HR_BENCH_STEPS", 12);
    let tmp = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| trainer, tiny, CPU ({cores} cores), batch 32 of 10 s crops, synthetic 32 kHz Parquet | items/s |\n|---|---|");
    for workers in [1, 2] {
        let w = format!("data.workers={workers}");
        let fed = run(
            tmp.path(),
            &format!("loader-{workers}"),
            steps,
            std::slice::from_ref(&w),
        );
        let mem = run(
            tmp.path(),
            &format!("replay-{workers}"),
            steps,
            &[w, "data.replay_batches=4".into()],
        );
        println!("| Parquet loader, {workers} decode worker(s) | {fed:.1} |");
        println!("| pre-built batches (data.replay_batches = 4), same config | {mem:.1} |");
        println!(
            "| ratio loader / pre-built, {workers} worker(s) | {:.2} |",
            fed / mem
        );
    }
}
