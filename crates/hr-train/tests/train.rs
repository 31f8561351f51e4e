//! End-to-end training on a small synthetic dataset: files, loss, resume bit-exactness,
//! COMMIT handling and hr-eval reproducing the logged validation metrics.

mod common;

use std::path::Path;

use hr_train::checkpoint::{latest_committed, step_dir_name};
use hr_train::{train, Outcome, Resume, TrainConfig, TrainControl};

/// One synthetic dataset for every test of this binary.
fn data_root() -> &'static Path {
    common::shared_synthetic_40("hr-train-synthetic-40-seed3")
}

fn config(run: &Path, extra: &[&str]) -> TrainConfig {
    let mut set: Vec<String> = [
        common::set_path("data.root", data_root()),
        common::set_path("run.dir", run),
        "data.clip_seconds=2.0".into(),
        "data.workers=1".into(),
        "optim.global_batch=8".into(),
        "optim.epochs=2".into(),
        "optim.warmup_epochs=0.05".into(),
        "optim.rampdown_stop=2.0".into(),
        "eval.every_steps=3".into(),
        "eval.batch_size=8".into(),
        "checkpoint.keep_last=10".into(),
    ]
    .into_iter()
    .collect();
    set.extend(common::lr_overrides());
    set.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::from_toml_str("", &set).unwrap()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn trains_writes_run_files_and_loss_decreases() {
    let dir = tmp();
    let run = dir.path().join("run");
    let cfg = config(&run, &["run.max_steps=12"]);
    let s = train(&cfg, &Resume::Fresh, &TrainControl::default()).unwrap();
    assert_eq!(s.outcome, Outcome::Finished);
    assert_eq!(s.step, 12);
    for f in [
        "config.toml",
        "model.toml",
        "metrics.jsonl",
        "eval.jsonl",
        "result.json",
        "checkpoints/latest",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let ck = run.join("checkpoints").join(step_dir_name(12));
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "COMMIT",
    ] {
        assert!(ck.join(f).is_file(), "{f}");
    }
    if hr_train::plots::register_font() {
        for f in ["plots/loss.png", "plots/val.png"] {
            let png = std::fs::read(run.join(f)).unwrap();
            assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{f}");
        }
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 12);
    let l = &s.losses;
    let first = (l[0] + l[1] + l[2]) / 3.0;
    let last = (l[9] + l[10] + l[11]) / 3.0;
    assert!(last < first, "loss did not decrease: {l:?}");
    let resolved = TrainConfig::from_file(&run.join("config.toml"), &[]).unwrap();
    assert_eq!(resolved, cfg);
}

fn model_bytes(run: &Path, step: u64) -> Vec<u8> {
    std::fs::read(
        run.join("checkpoints")
            .join(step_dir_name(step))
            .join("model.safetensors"),
    )
    .unwrap()
}

#[test]
fn resume_after_stop_is_bit_exact_and_ignores_uncommitted() {
    let base = tmp();
    let (a, b) = (base.path().join("a"), base.path().join("b"));
    let sa = train(
        &config(&a, &["run.max_steps=6"]),
        &Resume::Fresh,
        &TrainControl::default(),
    )
    .unwrap();
    let cb = config(&b, &["run.max_steps=6"]);
    let ctl = TrainControl {
        stop_after_step: Some(4),
        ..TrainControl::default()
    };
    let sb1 = train(&cb, &Resume::Fresh, &ctl).unwrap();
    assert_eq!((sb1.outcome, sb1.step), (Outcome::Preempted, 4));
    // Stopped before the end, the plots already show the validation of step 3.
    if hr_train::plots::register_font() {
        assert!(
            b.join("plots/val.png").is_file(),
            "plots are drawn at every validation"
        );
    }
    // A torn checkpoint newer than the committed one: no COMMIT, so --resume auto ignores it.
    let torn = b.join("checkpoints").join(step_dir_name(5));
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("model.safetensors"), b"truncated").unwrap();
    assert_eq!(
        latest_committed(&b).unwrap().unwrap(),
        b.join("checkpoints").join(step_dir_name(4))
    );
    let sb2 = train(&cb, &Resume::Auto, &TrainControl::default()).unwrap();
    assert_eq!((sb2.outcome, sb2.step), (Outcome::Finished, 6));
    // One provenance line per start: the fresh one, then the resume.
    let prov = std::fs::read_to_string(b.join("provenance.jsonl")).unwrap();
    let starts: Vec<serde_json::Value> = prov
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(starts.len(), 2, "{prov}");
    for (s, resumed) in starts.iter().zip([false, true]) {
        assert_eq!(s["resumed"], resumed, "{s}");
        assert_eq!(
            (s["world_size"].as_u64(), s["device"].as_str()),
            (Some(1), Some("cpu"))
        );
        assert_eq!(s["hr_train_version"], env!("CARGO_PKG_VERSION"));
        assert!(!s["git_commit"].as_str().unwrap().is_empty(), "{s}");
        for h in [&s["config_sha256"], &s["dataset"]["manifest_sha256"]] {
            assert_eq!(h.as_str().unwrap().len(), 64, "{s}");
        }
    }
    assert_eq!(sa.losses[4..], sb2.losses[..], "loss curve after resume");
    assert!(
        model_bytes(&a, 6) == model_bytes(&b, 6),
        "parameters differ after resume"
    );
    let opt = |r: &Path| {
        std::fs::read(
            r.join("checkpoints")
                .join(step_dir_name(6))
                .join("optimizer.safetensors"),
        )
        .unwrap()
    };
    assert!(opt(&a) == opt(&b), "optimizer state differs after resume");
}

#[test]
fn hr_eval_reproduces_logged_validation() {
    let dir = tmp();
    let run = dir.path().join("run");
    let cfg = config(&run, &["run.max_steps=3", "model.fusion=mid"]);
    train(&cfg, &Resume::Fresh, &TrainControl::default()).unwrap();
    let evals = std::fs::read_to_string(run.join("eval.jsonl")).unwrap();
    let logged: serde_json::Value = serde_json::from_str(evals.lines().last().unwrap()).unwrap();
    assert_eq!(logged["step"], 3);
    let out = run.join("val.json");
    let topk = run.join("topk.jsonl");
    let ck = run.join("checkpoints").join(step_dir_name(3));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_hr-eval"))
        .args(common::eval_args(&ck, "val", &out))
        .args(["--topk-out", topk.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    for k in ["R@1", "R@5", "R@10", "mAP@10", "queries"] {
        assert_eq!(got[k], logged[k], "{k}");
    }
    let (sha, _) = hr_data::shard::sha256_file(&ck.join("model.safetensors")).unwrap();
    assert_eq!(
        got["model_sha256"],
        sha.as_str(),
        "the report names the weights it scored"
    );
    let lines = std::fs::read_to_string(&topk).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        got["queries"].as_u64().unwrap()
    );
}

#[test]
fn non_finite_loss_skips_or_stops_with_a_checkpoint() {
    let base = tmp();
    let huge =
        ["audio_cnn", "text", "audio_head", "text_proj"].map(|g| format!("optim.lr.{g}.max=1e30"));
    let mut extra: Vec<&str> = huge.iter().map(String::as_str).collect();
    extra.extend(["run.max_steps=5", "eval.every_steps=100"]);
    let skip = train(
        &config(&base.path().join("skip"), &extra),
        &Resume::Fresh,
        &TrainControl::default(),
    )
    .unwrap();
    assert!(
        skip.nonfinite_skipped > 0,
        "no non-finite step with lr 1e30: {:?}",
        skip.losses
    );
    assert_eq!(skip.step, 5);
    extra.push("run.non_finite_loss=stop");
    match train(
        &config(&base.path().join("stop"), &extra),
        &Resume::Fresh,
        &TrainControl::default(),
    ) {
        Err(hr_train::TrainError::NonFiniteLoss { step, checkpoint }) => {
            assert!(step < 5);
            assert!(checkpoint.join("COMMIT").is_file());
        }
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
}

#[test]
fn sigterm_checkpoints_at_a_step_boundary_and_exits_with_the_requeue_code() {
    let base = tmp();
    let run = base.path().join("run");
    let cfg = config(&run, &["run.max_steps=40", "eval.every_steps=100"]);
    let path = base.path().join("cfg.toml");
    std::fs::write(&path, cfg.to_toml().unwrap()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hr-train"))
        .args(["--config", path.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = run.join("metrics.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 2 {
        assert!(t0.elapsed().as_secs() < 60, "no training progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(hr_train::EXIT_REQUEUE));
    let ck = latest_committed(&run)
        .unwrap()
        .expect("a committed checkpoint");
    let state = hr_train::checkpoint::read_state(&ck).unwrap();
    assert!(state.step >= 2 && state.step < 40, "{}", state.step);
}

/// `data.replay_batches` (the diagnostic behind the data-feed benchmark) trains on the first
/// batches in a cycle: the cursor never passes them, whatever the step count.
#[test]
fn replay_batches_cycles_the_first_batches() {
    let dir = tmp();
    let run = dir.path().join("replay");
    let cfg = config(
        &run,
        &[
            "data.replay_batches=2",
            "run.max_steps=5",
            "eval.every_steps=1000",
        ],
    );
    let s = train(&cfg, &Resume::Fresh, &TrainControl::default()).unwrap();
    assert_eq!(s.losses.len(), 5);
    let ck = latest_committed(&run).unwrap().unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("state.json")).unwrap()).unwrap();
    // Step 5 replays batch 1 (0-based index 0): its cursor is one global batch in.
    assert_eq!(state["cursor"]["consumed"], 8, "{state}");
}

/// `hr-train kernels --device` takes the same device grammar as `--device` / `run.device`.
#[test]
fn kernels_device_uses_the_common_device_grammar() {
    let run = |device: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hr-train"))
            .args(["kernels", "--precompile", "--device", device])
            .output()
            .unwrap()
    };
    let o = run("cpu");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("compiled for a GPU"),
        "{err}"
    );
    let o = run("3");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cuda:N"), "{err}");
}

/// The scalars of one TensorBoard event file: `(step, tag, value)`, every record's CRCs
/// checked (a reader of the documented format, independent of the writer's code).
fn read_events(path: &Path) -> Vec<(u64, String, f32)> {
    use hr_train::tensorboard::masked_crc;
    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*i];
            *i += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }
    // (field, wire, payload) of a protobuf message.
    fn fields(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        let (mut i, mut out) = (0, Vec::new());
        while i < b.len() {
            let key = varint(b, &mut i);
            let (field, wire) = (key >> 3, key & 7);
            let payload = match wire {
                0 => varint(b, &mut i).to_le_bytes().to_vec(),
                1 => (b[i..i + 8].to_vec(), i += 8).0,
                5 => (b[i..i + 4].to_vec(), i += 4).0,
                2 => {
                    let n = varint(b, &mut i) as usize;
                    (b[i..i + n].to_vec(), i += n).0
                }
                w => panic!("wire type {w}"),
            };
            out.push((field, wire, payload));
        }
        out
    }
    let bytes = std::fs::read(path).unwrap();
    let (mut at, mut out) = (0, Vec::new());
    while at < bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(crc, masked_crc(len_bytes), "length CRC at {at}");
        let n = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let data = &bytes[at + 12..at + 12 + n];
        let crc = u32::from_le_bytes(bytes[at + 12 + n..at + 16 + n].try_into().unwrap());
        assert_eq!(crc, masked_crc(data), "data CRC at {at}");
        at += 16 + n;
        let ev = fields(data);
        let step = ev
            .iter()
            .find(|f| f.0 == 2)
            .map_or(0, |f| u64::from_le_bytes(f.2[..8].try_into().unwrap()));
        for (_, _, summary) in ev.iter().filter(|f| f.0 == 5) {
            for (_, _, value) in fields(summary) {
                let vf = fields(&value);
                let tag =
                    String::from_utf8(vf.iter().find(|f| f.0 == 1).unwrap().2.clone()).unwrap();
                let x = f32::from_le_bytes(
                    vf.iter().find(|f| f.0 == 2).unwrap().2[..4]
                        .try_into()
                        .unwrap(),
                );
                out.push((step, tag, x));
            }
        }
    }
    out
}

/// TensorBoard scalars of a run: loss, learning rates and items/s every step, validation
/// metrics at every validation, matching metrics.jsonl / eval.jsonl; read back with the
/// `tensorboard` package too when it is installed.
#[test]
fn tensorboard_event_file_holds_the_logged_scalars() {
    let dir = tmp();
    let run = dir.path().join("run");
    let s = train(
        &config(&run, &["run.max_steps=6"]),
        &Resume::Fresh,
        &TrainControl::default(),
    )
    .unwrap();
    let files: Vec<_> = std::fs::read_dir(run.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .contains("tfevents"));
    let ev = read_events(&files[0]);
    let series = |tag: &str| -> Vec<(u64, f32)> {
        ev.iter()
            .filter(|e| e.1 == tag)
            .map(|e| (e.0, e.2))
            .collect()
    };
    let loss = series("train/loss");
    assert_eq!(
        loss.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    for ((_, got), want) in loss.iter().zip(&s.losses) {
        assert_eq!(*got, *want as f32);
    }
    assert_eq!(series("train/items_per_s").len(), 6);
    assert_eq!(
        series("lr/text").len(),
        6,
        "{:?}",
        ev.iter()
            .map(|e| &e.1)
            .collect::<std::collections::BTreeSet<_>>()
    );
    let evals = std::fs::read_to_string(run.join("eval.jsonl")).unwrap();
    let map: Vec<(u64, f32)> = evals
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["mAP@10"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(series("val/mAP@10"), map);
    // The reference reader, when installed (CI installs it).
    let py = "import sys\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator as E\na = E(sys.argv[1]); a.Reload()\nprint(len(a.Scalars('train/loss')), a.Scalars('val/mAP@10')[-1].value)";
    match std::process::Command::new("python3")
        .args(["-c", py])
        .arg(&files[0])
        .output()
    {
        Ok(o) if o.status.success() => {
            let out = String::from_utf8_lossy(&o.stdout);
            let got: Vec<f32> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
            assert_eq!(got, [6.0, map.last().unwrap().1], "tensorboard read {out}");
        }
        Ok(o) => println!(
            "skipped the tensorboard reader: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("skipped the tensorboard reader: {e}"),
    }
}

/// `hr-train demo` runs from any working directory: outside a checkout it uses the demo config
/// built into the binary (its relative paths land in the working directory).
#[test]
fn demo_runs_outside_the_checkout_with_the_embedded_config() {
    let dir = tmp();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hr-train"))
        .current_dir(dir.path())
        .args(["demo", "--variants", "none"])
        .args([
            "--set",
            "data.synthetic_clips=40",
            "--set",
            "data.clip_seconds=1.0",
        ])
        .args(["--set", "run.max_steps=2", "--set", "eval.every_steps=0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        dir.path().join("runs/demo-data/manifest.json").is_file(),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Test split of runs/demo-data"));
}
