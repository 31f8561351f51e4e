//! The trainer on `run.device = "cuda"` (world size 1) against the CPU run of the same config:
//! the same losses over 10 steps (f32 mode, and bf16 against the CPU's bf16 run; split-dependent
//! randomness off, as in the DDP equivalence test). Without a CUDA device the test checks that
//! `run.device = "cuda"` is a clear error naming the key and prints "skipped: no CUDA device".

mod common;

use std::path::Path;

use hr_tensor::{cuda, Device};
use hr_train::{train, Resume, TrainConfig, TrainControl, TrainError, TrainSummary};

const STEPS: u64 = 10;

/// Whether a CUDA driver and device 0 are there.
fn cuda_device() -> bool {
    cuda::driver_present() && Device::cuda(0).is_ok()
}

fn config(data: &Path, run: &Path, device: &str) -> TrainConfig {
    let mut set = common::short_run(data, run, STEPS);
    set.extend([
        format!("run.device={device:?}"),
        "data.synthetic_clips=40".into(),
        "data.synthetic_seed=3".into(),
        "model.tau=0.2".into(),
        "model.audio_augment=false".into(),
        "model.disable_dropout=true".into(),
        "model.frozen_batchnorm=true".into(),
        "optim.epochs=10".into(),
        "optim.warmup_epochs=0.1".into(),
        "optim.rampdown_stop=10.0".into(),
        "eval.every_steps=1000".into(),
        "eval.batch_size=8".into(),
    ]);
    set.extend(common::lr_overrides());
    TrainConfig::from_toml_str("", &set).unwrap()
}

/// Asserts that the CUDA run's losses stay within `limit(step index)` (relative) of the CPU
/// run's and its last validation mAP@10 within `map_tol`; `what` prefixes the printed lines.
fn assert_tracks(
    cpu: &TrainSummary,
    gpu: &TrainSummary,
    what: &str,
    limit: impl Fn(usize) -> f64,
    map_tol: f64,
) {
    for (i, (a, b)) in cpu.losses.iter().zip(&gpu.losses).enumerate() {
        let rel = (a - b).abs() / a.abs();
        println!("{what}step {}: cpu {a:.6} cuda {b:.6} rel {rel:.2e}", i + 1);
        assert!(rel < limit(i), "{what}step {}: cpu {a} vs cuda {b}", i + 1);
    }
    let (vc, vg) = (
        &cpu.last_val.as_ref().unwrap().1,
        &gpu.last_val.as_ref().unwrap().1,
    );
    println!("{what}val mAP@10: cpu {:.4} cuda {:.4}", vc.map10, vg.map10);
    assert!((vc.map10 - vg.map10).abs() < map_tol, "{vc:?} vs {vg:?}");
}

/// `run.precision = "bf16"` (bf16 GEMM operands and bf16 CNN activations) on the GPU against
/// the CPU's bf16 run: the same losses within what bf16 rounding allows (the two backends round
/// different f32 sums, so single bf16 roundings flip and the runs drift apart slowly).
#[test]
fn cuda_bf16_tracks_the_cpu_bf16_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ctl = TrainControl::default();
    let bf16 = |run: &str, device: &str| {
        let mut cfg = config(&data, &dir.path().join(run), device);
        cfg.run.precision = hr_train::config::Precision::Bf16;
        train(&cfg, &Resume::Fresh, &ctl).unwrap()
    };
    // The CPU side (bf16 activations through frozen batch norms) runs everywhere.
    let cpu = bf16("cpu", "cpu");
    assert_eq!(cpu.losses.len(), STEPS as usize);
    if !cuda_device() {
        println!("skipped: no CUDA device (the CPU bf16 run passed)");
        return;
    }
    let gpu = bf16("gpu", "cuda");
    let limit = |i: usize| if i == 0 { 5e-3 } else { 3e-2 };
    assert_tracks(&cpu, &gpu, "bf16 ", limit, 0.1);
}

#[test]
fn cuda_world_one_matches_the_cpu_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ctl = TrainControl::default();
    let gpu = cuda_device();
    if !gpu {
        let cfg = config(&data, &dir.path().join("gpu"), "cuda");
        let err = train(&cfg, &Resume::Fresh, &ctl).unwrap_err();
        assert!(
            matches!(&err, TrainError::Config { key, .. } if key == "run.device"),
            "{err}"
        );
        println!("skipped: no CUDA device ({err})");
        return;
    }
    let t0 = std::time::Instant::now();
    let cpu = train(
        &config(&data, &dir.path().join("cpu"), "cpu"),
        &Resume::Fresh,
        &ctl,
    )
    .unwrap();
    let t_cpu = t0.elapsed();
    let t0 = std::time::Instant::now();
    let run = dir.path().join("gpu");
    let gpu = train(&config(&data, &run, "cuda"), &Resume::Fresh, &ctl).unwrap();
    let t_gpu = t0.elapsed();
    println!("cpu {t_cpu:?}, cuda {t_gpu:?} for {STEPS} steps + validation");
    assert_eq!(cpu.losses.len(), STEPS as usize);
    assert_eq!(gpu.losses.len(), STEPS as usize);
    assert_tracks(&cpu, &gpu, "", |_| 1e-3, 0.05);
    assert!(run.join("checkpoints/latest").is_file());
}

/// Uploading the next batch on the copy stream while the step runs (`data.upload_ahead`, the
/// default) gives bit-identical losses to uploading each batch inside its step, on the CPU
/// (where the staging is the same loop without a copy) and on the GPU.
#[test]
fn upload_ahead_gives_bit_identical_losses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ctl = TrainControl::default();
    let gpu = cuda_device();
    let devices: &[&str] = if gpu { &["cpu", "cuda"] } else { &["cpu"] };
    for device in devices {
        let run = |name: &str, ahead: bool| {
            let mut cfg = config(&data, &dir.path().join(format!("{device}-{name}")), device);
            cfg.data.upload_ahead = ahead;
            train(&cfg, &Resume::Fresh, &ctl).unwrap().losses
        };
        let (ahead, inline) = (run("ahead", true), run("inline", false));
        assert_eq!(ahead.len(), STEPS as usize, "{device}");
        assert_eq!(ahead, inline, "{device}: losses differ");
    }
    if !gpu {
        println!("skipped: no CUDA device (the CPU runs passed)");
    }
}
