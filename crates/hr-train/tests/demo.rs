//! The README's main command in reduced form (CI): `hr-train demo` generates a synthetic
//! dataset, trains the tiny preset as the content-based baseline and as the late-fusion
//! hybrid, evaluates both on the test split and must find the hybrid ahead
//! (`--require-hybrid-wins`). Reduced: 160 clips of 1 s and 6 epochs instead of 400 clips of
//! 2 s and 8 epochs; mid fusion is left to the full demo (its margin at this size is too thin
//! to assert). The full demo's table and time are in docs/PERF.md.

use std::path::Path;
use std::process::Command;

#[test]
fn reduced_demo_hybrid_beats_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hr-train-demo-160x1s");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/experiments/demo.toml");
    let set = [
        format!(
            "run.dir={:?}",
            dir.path().join("runs").display().to_string()
        ),
        format!("data.root={:?}", data.display().to_string()),
        "data.synthetic_clips=160".into(),
        "data.clip_seconds=1.0".into(),
        "optim.epochs=6".into(),
        "optim.rampdown_stop=6.0".into(),
        "eval.every_steps=0".into(),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hr-train"));
    cmd.arg("demo").arg("--config").arg(config);
    for s in &set {
        cmd.arg("--set").arg(s);
    }
    let out = cmd
        .args(["--variants", "none,late", "--require-hybrid-wins"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("tiny, late fusion"), "{stdout}");
    for f in ["none", "late"] {
        let run = dir.path().join("runs").join(f);
        assert!(run.join("result.json").is_file(), "{f}");
        assert!(
            hr_train::checkpoint::latest_committed(&run)
                .unwrap()
                .is_some(),
            "{f}"
        );
    }
}
