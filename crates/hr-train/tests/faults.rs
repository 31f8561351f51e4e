//! Losing nothing when the disk fills or the process dies (docs/RELIABILITY.md):
//! - a checkpoint write that fails part-way (a full disk, injected through the one durable-write
//!   helper at a random file and byte) stops the run with an error saying so, leaves `latest`
//!   naming a committed, loadable checkpoint and no temporary file, and resuming continues the
//!   loss curve of an undisturbed run exactly;
//! - `kill -9` of a single-rank `hr-train` at a random moment while it checkpoints every two
//!   steps: the newest committed checkpoint loads and `--resume auto` continues the same curve.
//!
//! `HR_RELIABILITY_TRIALS` trials of each (default 3; the figures in RELIABILITY.md come from
//! 20 disk-fault and 50 kill trials).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hr_core::faults::{arm, disarm, DiskFault};
use hr_core::Rng;
use hr_train::checkpoint::{checkpoints_dir, latest_committed, COMMIT_FILE};
use hr_train::{train, Resume, TrainConfig, TrainControl};

const STEPS: u64 = 12;

fn data() -> &'static Path {
    common::shared_synthetic_40("hr-train-faults-synthetic-40")
}

fn overrides(run: &Path) -> Vec<String> {
    vec![
        common::set_path("data.root", data()),
        common::set_path("run.dir", run),
        format!("run.max_steps={STEPS}"),
        "run.log_every=1".into(),
        "data.clip_seconds=1.0".into(),
        "data.workers=1".into(),
        "optim.global_batch=8".into(),
        "checkpoint.every_steps=2".into(),
        "checkpoint.keep_last=2".into(),
        "eval.every_steps=1000".into(),
    ]
}

fn config(run: &Path) -> TrainConfig {
    TrainConfig::from_toml_str("", &overrides(run)).unwrap()
}

/// The last logged loss of every step (a resumed run logs the steps after its checkpoint again).
fn losses(run: &Path) -> BTreeMap<u64, f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()?)))
        .collect()
}

/// The losses of an undisturbed run, once per test binary.
fn reference() -> &'static BTreeMap<u64, f64> {
    static R: std::sync::OnceLock<BTreeMap<u64, f64>> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let run = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hr-train-faults-reference");
        let _ = std::fs::remove_dir_all(&run);
        train(&config(&run), &Resume::Fresh, &TrainControl::default()).unwrap();
        let l = losses(&run);
        assert_eq!(l.len() as u64, STEPS);
        l
    })
}

/// Temporary files of atomic writes left anywhere under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(temporaries(&p));
        } else if p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".tmp-"))
        {
            out.push(p);
        }
    }
    out
}

/// What must hold after a failure: `latest` names a committed checkpoint, the newest committed
/// one loads, no temporary file is left; resuming then ends with the reference's curve.
fn holds_and_resumes(run: &Path, what: &str) {
    let ck = checkpoints_dir(run);
    if let Ok(name) = std::fs::read_to_string(ck.join("latest")) {
        assert!(
            ck.join(name.trim()).join(COMMIT_FILE).is_file(),
            "{what}: latest names {name}"
        );
        hr_train::eval_job::load(&ck.join(name.trim())).unwrap();
    }
    if let Some(newest) = latest_committed(run).unwrap() {
        hr_train::eval_job::load(&newest).unwrap();
    }
    assert!(
        temporaries(run).is_empty(),
        "{what}: {:?}",
        temporaries(run)
    );
    train(&config(run), &Resume::Auto, &TrainControl::default()).unwrap();
    assert_eq!(&losses(run), reference(), "{what}: the resumed curve");
}

#[test]
fn a_full_disk_during_a_checkpoint_loses_nothing() {
    let trials = hr_core::env_or("HR_RELIABILITY_TRIALS", 3u64);
    let tmp = tempfile::tempdir().unwrap();
    reference();
    // A checkpoint is five durable writes: weights, optimizer, state, COMMIT, latest.
    for t in 0..trials {
        let mut rng = Rng::from_parts(&[0xd15c, t]);
        let run = tmp.path().join(format!("trial-{t}"));
        let (nth, fraction) = (5 + rng.below(20), rng.uniform());
        arm(DiskFault {
            under: checkpoints_dir(&run),
            nth,
            fraction,
        });
        let e = train(&config(&run), &Resume::Fresh, &TrainControl::default()).unwrap_err();
        assert_eq!(
            disarm(&checkpoints_dir(&run)),
            0,
            "trial {t}: the fault struck"
        );
        let msg = format!("{e:#}");
        assert!(
            msg.contains("No space left on device") && msg.contains("checkpoints"),
            "trial {t}: {msg}"
        );
        if t == 0 {
            println!("the error of trial 0: {msg}");
        }
        holds_and_resumes(
            &run,
            &format!("trial {t} (write {nth}, {fraction:.2} of its bytes)"),
        );
    }
    println!("checkpoint disk faults: {trials} trials held (error named, latest committed and loadable, no temporaries, resumed curve identical)");
}

#[test]
fn kill_9_at_any_moment_loses_nothing() {
    let trials = hr_core::env_or("HR_RELIABILITY_TRIALS", 3u64);
    let tmp = tempfile::tempdir().unwrap();
    reference();
    // How long an undisturbed process takes, to spread the kills over its whole run.
    let probe = tmp.path().join("probe");
    let t0 = Instant::now();
    assert!(hr_train_cmd(&probe, false).status().unwrap().success());
    let span = t0.elapsed();
    let (mut early, mut mid_write) = (0, 0);
    for t in 0..trials {
        let mut rng = Rng::from_parts(&[0x4b111, t]);
        let run = tmp.path().join(format!("trial-{t}"));
        let at = span.mul_f64(rng.uniform());
        let mut child = hr_train_cmd(&run, false).spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if latest_committed(&run).unwrap().is_none() {
            early += 1;
        }
        if !temporaries(&checkpoints_dir(&run)).is_empty() {
            mid_write += 1; // killed inside an atomic write: its temporary file is left
        }
        // Resume through the binary, as a requeued job does.
        let o = hr_train_cmd(&run, true).output().unwrap();
        assert!(
            o.status.success(),
            "trial {t}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(temporaries(&checkpoints_dir(&run)).is_empty(), "trial {t}");
        assert_eq!(
            &losses(&run),
            reference(),
            "trial {t} (killed after {at:?} of {span:?})"
        );
    }
    println!(
        "kill -9 while checkpointing: {trials} trials held ({early} before the first checkpoint, \
         {mid_write} inside a checkpoint write), a run takes {span:?}"
    );
}

fn hr_train_cmd(run: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hr-train"));
    for s in overrides(run) {
        c.args(["--set", &s]);
    }
    if resume {
        c.args(["--resume", "auto"]);
    }
    c.env("RUST_LOG", "warn");
    c
}
