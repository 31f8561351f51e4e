//! The commands the READMEs show cannot rot: every command line of their shell code blocks is
//! either run here on the CPU (through the binaries `cargo test` built, with small sizes and
//! paths in a temporary folder) or listed below with the reason it cannot run on a CI machine;
//! every flag of the usage synopses must appear in the binary's `--help`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The documents whose code blocks are checked.
const DOCS: &[&str] = &[
    "README.md",
    "crates/hr-data/README.md",
    "crates/hr-sweep/README.md",
    "crates/hr-search/README.md",
    "crates/hr-train/README.md",
    "configs/sweeps/README.md",
    "deploy/README.md",
];

/// Commands that need what a CI machine lacks (prefix match on the normalised command).
const NOT_RUN: &[(&str, &str)] = &[
    (
        "bash tools/demo.sh",
        "the full demo (minutes); hr-train/tests/demo.rs runs it smaller",
    ),
    ("bash .ci/run", "the test suite itself"),
    (
        "hr-data prepare clotho",
        "needs the ClothoV2 archive; real_data.rs converts a Clotho-layout tree",
    ),
    (
        "hr-data prepare audiocaps",
        "needs the AudioCaps and AudioSet files; tests/convert.rs covers the layout",
    ),
    (
        "hr-data prepare folder",
        "needs the user's audio folder; cli.rs runs it on generated files",
    ),
    (
        "hr-data prepare reencode",
        "needs an existing dataset; tests/reencode.rs covers it",
    ),
    ("hr-data inspect data/clotho", "needs the ClothoV2 dataset"),
    ("hr-data verify data/clotho", "needs the ClothoV2 dataset"),
    (
        "hr-data verify /data/hr/",
        "needs the prepared real datasets",
    ),
    (
        "hr-data merge",
        "needs two prepared real datasets; real_data.rs merges two small ones",
    ),
    (
        "hr-train --config X.toml",
        "needs the real dataset and pretrained weights",
    ),
    (
        "hr-sweep launch configs/sweeps/demo.toml",
        "trains every demo run; hr-sweep/tests/e2e.rs runs it",
    ),
    (
        "hr-sweep plan configs/sweeps/table1.toml",
        "needs the [paths] of a cluster",
    ),
    (
        "hr-sweep launch configs/sweeps/table1.toml",
        "needs Slurm and the real datasets",
    ),
    (
        "hr-sweep status configs/sweeps/table1.toml",
        "needs the [paths] of a cluster",
    ),
    (
        "hr-sweep report configs/sweeps/table1.toml",
        "needs the [paths] of a cluster",
    ),
    (
        "hr-search serve runs/demo-index",
        "a server that runs until stopped; hr-search/tests/serve.rs and browser.rs serve an index",
    ),
    ("srun ", "needs Slurm"),
    ("docker ", "needs Docker"),
    ("apptainer ", "needs Apptainer"),
    ("echo ", "a registry login"),
    ("TAG=", "a shell variable"),
    ("IMAGE=", "a shell variable"),
    ("cd ", "a shell step"),
    ("mkdir ", "a shell step"),
    ("chmod ", "a shell step"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary next to hr-train (cargo builds every binary of the workspace for its tests).
fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_hr-train")).with_file_name(name)
}

/// The command lines of a document's shell code blocks: continuations joined, comments and
/// prompts dropped, `a && b` split, `cargo run --release -p X --` written as `X`.
fn commands(doc: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let (mut in_block, mut shell, mut pending) = (false, false, String::new());
    for line in doc.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            in_block = !in_block;
            shell = in_block && (lang.is_empty() || lang == "sh");
            continue;
        }
        if !shell {
            continue;
        }
        let code = line.split(" #").next().unwrap_or("").trim();
        if code.starts_with('#') || code.is_empty() {
            continue;
        }
        // A synopsis continues on indented `[...]` lines.
        if let (true, Some(last)) = (code.starts_with('['), out.last_mut()) {
            last.push(' ');
            last.push_str(code);
            continue;
        }
        pending.push_str(code.trim_end_matches('\\'));
        pending.push(' ');
        if code.ends_with('\\') {
            continue;
        }
        for part in pending.split("&&") {
            let c = part.split_whitespace().collect::<Vec<_>>().join(" ");
            let c = c.replace("cargo run --release -p hr-data --", "hr-data");
            out.push(c.replace("cargo run --release -p hr-search --", "hr-search"));
        }
        pending.clear();
    }
    out
}

/// A usage synopsis (`[--flag VALUE]` or `SWEEP.toml` placeholders) rather than a command.
fn is_synopsis(c: &str) -> bool {
    c.contains(" [") || c.split_whitespace().any(|w| w == "SWEEP.toml")
}

fn run(cwd: &Path, program: &Path, args: &[String]) {
    let out = Command::new(program)
        .current_dir(cwd)
        .args(args)
        .env("HR_PROGRESS_EVERY_S", "3600")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one documented command on the CPU in `tmp` (small sizes, paths mapped into `tmp`);
/// false when it is not one this test knows how to run.
fn run_documented(c: &str, tmp: &Path) -> bool {
    let words = shell_words(c);
    let synth = tmp.join("synthetic");
    let synth_s = synth.display().to_string();
    let run_dir = tmp.join("run");
    let map = |w: &str| -> String {
        match w {
            "data/synthetic" => synth_s.clone(),
            "file:///abs/path/data/synthetic" => format!("file://{synth_s}"),
            "RUN" | "runs/demo/late" => run_dir.display().to_string(),
            "runs/demo-data" => synth_s.clone(),
            "runs/demo-index" | "INDEX" => tmp.join("index").display().to_string(),
            "DIR" => tmp.join("export").display().to_string(),
            "test.json" => tmp.join("test.json").display().to_string(),
            "configs/experiments/demo.toml" | "configs/sweeps/demo.toml" => {
                repo().join(w).display().to_string()
            }
            w if w.ends_with(".pt") => repo()
                .join("crates/hr-train/tests/data/mn04_as_state_dict.pt")
                .display()
                .to_string(),
            w if w.ends_with(".safetensors") => tmp.join("w.safetensors").display().to_string(),
            w => w.to_string(),
        }
    };
    let args: Vec<String> = words[1..].iter().map(|w| map(w)).collect();
    let program = bin(&words[0]);
    match words[..2.min(words.len())].join(" ").as_str() {
        "hr-data prepare" if words.get(2).map(String::as_str) == Some("synthetic") => {
            let mut a = args.clone();
            if let Some(i) = a.iter().position(|w| w == "--clips") {
                a[i + 1] = "24".into(); // the documented size, made small
            }
            if let Some(i) = a.iter().position(|w| w == "--out") {
                a[i + 1] = synth_s.clone();
            }
            if !synth.join("manifest.json").is_file() {
                run(tmp, &program, &a);
            }
        }
        "hr-data inspect" | "hr-data verify" if args[1].contains(&synth_s) => {
            ensure_synthetic(tmp, &synth);
            run(tmp, &program, &args);
        }
        "hr-train --config" if c.contains("demo.toml") => {
            ensure_synthetic(tmp, &synth);
            let mut a = args.clone();
            for s in small_run(&synth, &run_dir) {
                a.extend(["--set".into(), s]);
            }
            run(tmp, &program, &a);
        }
        "hr-eval --checkpoint" | "hr-search index" | "hr-search query" | "hr-search export" => {
            if !run_dir.join("checkpoints").is_dir() {
                return false; // runs after the documented training command
            }
            run(tmp, &program, &args);
        }
        "hr-train import-weights" | "hr-sweep plan" | "hr-sweep status" | "hr-sweep report"
            if !c.contains("table1") =>
        {
            run(tmp, &program, &args);
        }
        _ => return false,
    }
    true
}

/// The words of a command line as a shell splits them (double quotes group).
fn shell_words(c: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for ch in c.chars() {
        match ch {
            '"' => quoted = !quoted,
            ' ' if !quoted => out.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur))),
            _ => cur.push(ch),
        }
    }
    out.extend((!cur.is_empty()).then_some(cur));
    out
}

/// Overrides that make a documented training run a few seconds long.
fn small_run(data: &Path, run: &Path) -> Vec<String> {
    vec![
        format!("data.root={:?}", data.display().to_string()),
        format!("run.dir={:?}", run.display().to_string()),
        "run.max_steps=2".into(),
        "optim.global_batch=8".into(),
        "data.clip_seconds=1.0".into(),
        "data.workers=1".into(),
    ]
}

fn ensure_synthetic(tmp: &Path, root: &Path) {
    if !root.join("manifest.json").is_file() {
        let args = [
            "prepare",
            "synthetic",
            "--clips",
            "24",
            "--seed",
            "1",
            "--out",
        ];
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push(root.display().to_string());
        run(tmp, &bin("hr-data"), &a);
    }
}

/// Every `--flag` of a synopsis line appears in the `--help` of its (sub)command.
fn check_synopsis(c: &str) {
    let words: Vec<&str> = c.split_whitespace().collect();
    let program = bin(words[0]);
    let sub: Vec<&str> = words[1..]
        .iter()
        .take_while(|w| {
            w.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-') && !w.starts_with('-')
        })
        .copied()
        .collect();
    let out = Command::new(&program)
        .args(&sub)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in c
        .split(|ch: char| ch.is_whitespace() || "[]|=".contains(ch))
        .filter(|w| w.starts_with("--") && w.len() > 2)
    {
        assert!(
            help.contains(flag),
            "`{c}`: {flag} is not in `{} {} --help`",
            words[0],
            sub.join(" ")
        );
    }
}

#[test]
fn every_readme_command_runs_or_says_why_not() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ran = Vec::new();
    // Training first, so that the documented hr-eval and hr-search find a run to use (and
    // hr-search's index before its query: the sort is stable).
    let mut all: Vec<(String, String)> = DOCS
        .iter()
        .flat_map(|d| {
            let text = std::fs::read_to_string(repo().join(d)).unwrap();
            commands(&text).into_iter().map(move |c| (d.to_string(), c))
        })
        .collect();
    all.sort_by_key(|(_, c)| c.starts_with("hr-eval") || c.starts_with("hr-search"));
    for (doc, c) in &all {
        let tool = c.split_whitespace().next().unwrap_or("");
        let ours = ["hr-data", "hr-train", "hr-eval", "hr-sweep", "hr-search"].contains(&tool);
        if ours && is_synopsis(c) {
            check_synopsis(c);
            ran.push(c.clone());
        } else if NOT_RUN.iter().any(|(prefix, _)| c.starts_with(prefix)) {
            continue;
        } else if ours && run_documented(c, tmp.path()) {
            ran.push(c.clone());
        } else {
            panic!("{doc}: `{c}` is neither run by this test nor listed in NOT_RUN with a reason");
        }
    }
    println!(
        "ran or checked {} documented commands:\n{}",
        ran.len(),
        ran.join("\n")
    );
    assert!(ran.len() >= 15, "{ran:#?}");
}

/// One name for a prepared dataset across the binaries: `--data` wherever a flag names one
/// (positional in hr-data's commands on a dataset, `data.root` in configs); the converters read
/// a downloaded folder named by `--source` and write the dataset named by `--out`. No `--root`
/// flag is left to mean either.
#[test]
fn one_name_for_a_dataset_root() {
    let help = |bin_name: &str, sub: &[&str]| -> String {
        let o = Command::new(bin(bin_name))
            .args(sub)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for (b, sub) in [("hr-eval", &[][..]), ("hr-search", &["index"][..])] {
        let h = help(b, sub);
        assert!(h.contains("--data <"), "{b} {sub:?}: {h}");
    }
    let mut all = vec![help("hr-eval", &[]), help("hr-search", &["index"])];
    for kind in ["clotho", "audiocaps", "folder"] {
        let h = help("hr-data", &["prepare", kind]);
        assert!(
            h.contains("--source <DIR>") && h.contains("--out <"),
            "prepare {kind}: {h}"
        );
        all.push(h);
    }
    for sub in [
        &["inspect"][..],
        &["verify"],
        &["merge"],
        &["prepare", "reencode"],
        &["prepare", "synthetic"],
    ] {
        all.push(help("hr-data", sub));
    }
    for sub in [&[][..], &["demo"], &["import-weights", "efficientat"]] {
        all.push(help("hr-train", sub));
    }
    for h in &all {
        assert!(!h.contains("--root") && !h.contains("--dataset"), "{h}");
    }
}
