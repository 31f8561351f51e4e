//! End to end on the CPU with the real `hr-train` / `hr-eval`: the demo sweep runs, the
//! coordinator is killed mid-sweep and relaunched, every run trains exactly once, a second
//! launch does nothing and `report` prints the table.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_says, done_trainings, hr_sweep, repo, text};

/// Where cargo put hr-train: next to the hr-sweep binary (target/<profile>/).
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_hr-sweep"))
        .parent()
        .unwrap()
        .to_path_buf();
    for b in ["hr-train", "hr-eval"] {
        assert!(
            dir.join(b).is_file(),
            "{b} is not built in {}: run `cargo build -p hr-train` first (cargo test --workspace builds it)",
            dir.display()
        );
    }
    dir
}

#[test]
fn demo_sweep_end_to_end_with_the_real_trainer() {
    let bins = bin_dir();
    let d = tempfile::tempdir().unwrap();
    let sweep = repo().join("configs/sweeps/demo.toml");
    let s = sweep.to_str().unwrap();
    let args = [
        "launch",
        s,
        "--backend",
        "local",
        "-j",
        "2",
        "--poll-ms",
        "100",
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hr-sweep"))
        .args(args)
        .current_dir(d.path())
        .env_remove("HR_BIN_DIR")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let ledger = d.path().join("runs/sweeps/demo/ledger.jsonl");
    let t0 = Instant::now();
    while done_trainings(&ledger) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(240), "no progress");
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the coordinator ended early: {st}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // the coordinator dies mid-sweep; its jobs keep running
    child.wait().unwrap();

    let bd = bins.display().to_string();
    let o = hr_sweep(d.path(), &[&args[..], &["--bin-dir", &bd]].concat(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_says(&o, "6 of 6 runs done, 0 failed");

    // Every run trained exactly once (one attempt header per train.log) and was evaluated.
    let runs = d.path().join("runs/sweeps/demo");
    let mut n = 0;
    for e in std::fs::read_dir(&runs).unwrap() {
        let p = e.unwrap().path();
        if !p.join("job.toml").is_file() {
            continue;
        }
        n += 1;
        let log = std::fs::read_to_string(p.join("train.log")).unwrap();
        assert_eq!(
            log.matches("=== hr-sweep: attempt").count(),
            1,
            "{}",
            p.display()
        );
        assert!(p.join("result.json").is_file() && p.join("eval-self.json").is_file());
    }
    assert_eq!(n, 6);

    // A second launch does nothing.
    let o = hr_sweep(d.path(), &[&args[..], &["--bin-dir", &bd]].concat(), &[]);
    assert_says(&o, "started 0 job(s); 6 of 6 runs done");

    let o = hr_sweep(d.path(), &["report", s], &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for row in [
        "| 1 | none | self | 2/2 |",
        "| 2 | late | self | 2/2 |",
        "| 3 | mid | self | 2/2 |",
    ] {
        assert!(t.contains(row), "{t}");
    }
    assert!(t.contains("(baseline)"), "{t}");
    assert!(t.contains("best-val ckpt mAP@10"), "{t}");
    assert!(runs.join("report.csv").is_file() && runs.join("report-map10.png").is_file());
    // The evaluations name the checkpoints they scored: the final one and the best by validation.
    for e in std::fs::read_dir(&runs).unwrap() {
        let p = e.unwrap().path().join("eval-self.json");
        if let Ok(text) = std::fs::read_to_string(&p) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["which"], "final", "{v}");
            assert_eq!(v["best"]["which"], "best_val", "{v}");
            assert!(v["items"]["captions"].as_u64().unwrap() > 0, "{v}");
        }
    }
}
