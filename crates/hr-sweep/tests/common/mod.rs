//! Test helpers: a fake trainer (hr-train / hr-eval as shell scripts), sweep files, running the
//! hr-sweep binary.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Writes an executable script.
pub fn script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake `hr-train`: appends `train <run dir> gpu=<CUDA_VISIBLE_DEVICES> resume=<yes|no>` to `$FAKE_CALLS`, sleeps
/// `$FAKE_SLEEP` seconds, fails when the run directory contains `$FAKE_FAIL`, stops with 75
/// (after writing a checkpoint) on the first attempt when it contains `$FAKE_PREEMPT`, else
/// writes result.json atomically.
const FAKE_TRAIN: &str = r#"#!/bin/sh
cfg=""; resume=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) cfg="$2"; shift 2;;
    --resume) resume="$2"; shift 2;;
    *) shift;;
  esac
done
run=$(dirname "$cfg")
had=no; [ -d "$run/checkpoints/step-1" ] && had=yes
echo "train $run gpu=${CUDA_VISIBLE_DEVICES:-none} resume=$had" >> "$FAKE_CALLS"
sleep "${FAKE_SLEEP:-0}"
case "$run" in
  *"${FAKE_FAIL:-@none@}"*) echo "error: fake failure in $run (CUDA out of memory)" >&2; exit 1;;
esac
case "$run" in
  *"${FAKE_PREEMPT:-@none@}"*)
    if [ "$had" = no ]; then mkdir -p "$run/checkpoints/step-1"; echo "preempted at step 1" >&2; exit 75; fi;;
esac
f=$(grep '^fusion' "$cfg" | sed 's/.*"\(.*\)"/\1/')
s=$(grep '^seed' "$cfg" | sed 's/seed = //')
case "$f" in none) m=30;; late) m=40;; *) m=35;; esac
printf '{"step":30,"val":{"R@1":0.1,"R@5":0.5,"R@10":1.0,"mAP@10":0.%s%s,"queries":45},"checkpoint":null,"best_checkpoint":null,"nonfinite_skipped":0}' "$m" "$s" > "$run/.result.tmp"
mv "$run/.result.tmp" "$run/result.json"
"#;

/// A fake `hr-eval`: appends `eval <checkpoint> <out>` to `$FAKE_CALLS` and writes metrics
/// derived from the run's result.json.
const FAKE_EVAL: &str = r#"#!/bin/sh
ck=""; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) ck="$2"; shift 2;;
    --out) out="$2"; shift 2;;
    *) shift;;
  esac
done
echo "eval $ck $out" >> "$FAKE_CALLS"
m=$(sed 's/.*"mAP@10":\([0-9.]*\).*/\1/' "$ck/result.json")
printf '{"R@1":0.1,"R@5":0.5,"R@10":1.0,"mAP@10":%s,"queries":45,"clips":9,"split":"test"}' "$m" > "$out.tmp"
mv "$out.tmp" "$out"
"#;

/// Writes the fake trainer into `dir` (returns it).
pub fn fake_bins(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    script(&dir.join("hr-train"), FAKE_TRAIN);
    script(&dir.join("hr-eval"), FAKE_EVAL);
    dir.to_path_buf()
}

/// The demo's two axes (fusion: none, late, mid; seed: 1, 2): six runs.
pub const AXES: &str = r#"
[[axes]]
name = "fusion"
key = "model.fusion"
values = ["none", "late", "mid"]

[[axes]]
name = "seed"
key = "run.seed"
values = [1, 2]
"#;

/// A demo-like sweep file in `dir` (base: the repo's demo config; synthetic data in `dir`).
pub fn demo_sweep(dir: &Path, extra: &str) -> PathBuf {
    let base = repo().join("configs/experiments/demo.toml");
    let text = format!(
        r#"[sweep]
name = "t"
base = "{}"
runs_dir = "runs/t"
baseline = {{ fusion = "none" }}
max_attempts = 3

[base]
run = {{ max_steps = 30 }}
data = {{ root = "data", synthetic_clips = 24, clip_seconds = 0.5 }}
{AXES}{extra}"#,
        base.display()
    );
    let p = dir.join("sweep.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A temporary directory with the fake trainer in `bin/` and a demo sweep file.
pub struct Fixture {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The fake trainer's directory.
    pub bins: PathBuf,
    /// The sweep file.
    pub sweep: PathBuf,
}

impl Fixture {
    /// The fake trainer and `demo_sweep(dir, extra)`.
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bins = fake_bins(&dir.path().join("bin"));
        let sweep = demo_sweep(dir.path(), extra);
        Fixture { dir, bins, sweep }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The sweep file as text (for arguments).
    pub fn sweep_arg(&self) -> &str {
        self.sweep.to_str().unwrap()
    }

    /// The fake trainer's directory as text (for `--bin-dir`).
    pub fn bins_arg(&self) -> &str {
        self.bins.to_str().unwrap()
    }

    /// Where the fake trainer logs its calls (`FAKE_CALLS`).
    pub fn calls_log(&self) -> PathBuf {
        self.path().join("calls.log")
    }

    /// The fake trainer's calls so far.
    pub fn calls(&self) -> Vec<String> {
        calls(&self.calls_log())
    }
}

/// `hr-sweep ARGS` in `cwd` with extra environment.
pub fn hr_sweep(cwd: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hr-sweep"));
    c.args(args).current_dir(cwd).env("RUST_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Stdout + stderr as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that the output of a command (stdout or stderr) contains `what`.
pub fn assert_says(o: &Output, what: &str) {
    let t = text(o);
    assert!(t.contains(what), "{t}");
}

/// Lines of the calls log.
pub fn calls(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// How many of `lines` start with `prefix`.
pub fn count(lines: &[String], prefix: &str) -> usize {
    lines.iter().filter(|l| l.starts_with(prefix)).count()
}

/// The calls of the fake trainer's `train` for the runs whose directory contains `run`.
pub fn trainings_of<'a>(calls: &'a [String], run: &str) -> Vec<&'a String> {
    calls
        .iter()
        .filter(|l| l.starts_with("train ") && l.contains(run))
        .collect()
}

/// How many trainings the ledger at `ledger` records as done (0 before it exists).
pub fn done_trainings(ledger: &Path) -> usize {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"job\":\"train\"") && l.contains("\"state\":\"done\""))
        .count()
}
