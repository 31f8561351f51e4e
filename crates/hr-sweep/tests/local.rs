//! The local backend with a fake trainer: launch, idempotent relaunch, crash safety (the
//! coordinator killed mid-sweep), preemption and failures, a changed sweep file.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{calls, demo_sweep, fake_bins, hr_sweep, text};

fn env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![("FAKE_CALLS", dir.join("calls.log").display().to_string())]
}

fn launch_args<'a>(sweep: &'a str, bins: &'a str) -> Vec<&'a str> {
    vec![
        "launch",
        sweep,
        "--backend",
        "local",
        "-j",
        "2",
        "--poll-ms",
        "50",
        "--bin-dir",
        bins,
    ]
}

#[test]
fn launch_relaunch_report_and_changed_sweep() {
    let d = tempfile::tempdir().unwrap();
    let bins = fake_bins(&d.path().join("bin"));
    let sweep = demo_sweep(d.path(), "");
    let (s, b) = (sweep.to_str().unwrap(), bins.to_str().unwrap());
    let o = hr_sweep(d.path(), &launch_args(s, b), &env(d.path()));
    assert!(o.status.success(), "{}", text(&o));
    let c = calls(&d.path().join("calls.log"));
    assert_eq!(
        c.iter().filter(|l| l.starts_with("train ")).count(),
        6,
        "{c:?}"
    );
    assert_eq!(
        c.iter().filter(|l| l.starts_with("eval ")).count(),
        6,
        "{c:?}"
    );

    // A second launch does nothing.
    let o = hr_sweep(d.path(), &launch_args(s, b), &env(d.path()));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("started 0 job(s); 6 of 6 runs done"),
        "{}",
        text(&o)
    );
    assert_eq!(calls(&d.path().join("calls.log")).len(), 12);

    // plan shows them done; report prints the table with deltas.
    let o = hr_sweep(d.path(), &["plan", s], &[]);
    assert!(text(&o).contains("6 done, 0 to launch"), "{}", text(&o));
    let o = hr_sweep(d.path(), &["report", s], &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("| 1 | none | self | 2/2 | 30.15 ± 0.07 | — | (baseline) |"),
        "{t}"
    );
    assert!(
        t.contains("| 2 | late | self | 2/2 | 40.15 ± 0.07 | — | +10.00 |"),
        "{t}"
    );
    assert!(
        t.contains("| 3 | mid | self | 2/2 | 35.15 ± 0.07 | — | +5.00 |"),
        "{t}"
    );
    let csv = std::fs::read_to_string(d.path().join("runs/t/report.csv")).unwrap();
    assert!(
        csv.lines()
            .nth(2)
            .unwrap()
            .starts_with("late,self,2,2,40.1500,0.0707,,,10.0000"),
        "{csv}"
    );
    let png = std::fs::read(d.path().join("runs/t/report-map10.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // The sweep file changed after launch: a clear error, nothing started.
    let changed = std::fs::read_to_string(&sweep)
        .unwrap()
        .replace("max_steps = 30", "max_steps = 31");
    std::fs::write(&sweep, changed).unwrap();
    let o = hr_sweep(d.path(), &launch_args(s, b), &env(d.path()));
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("the sweep changed since it was launched")
            && t.contains("6 run(s) added or changed"),
        "{t}"
    );
    assert_eq!(calls(&d.path().join("calls.log")).len(), 12);
}

/// Waits until the ledger records `n` finished trainings.
fn wait_for_done(ledger: &Path, n: usize) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let text = std::fs::read_to_string(ledger).unwrap_or_default();
        let done = text
            .lines()
            .filter(|l| l.contains("\"job\":\"train\"") && l.contains("\"state\":\"done\""))
            .count();
        if done >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the sweep did not progress");
}

#[test]
fn killed_coordinator_relaunch_finishes_without_rerunning() {
    let d = tempfile::tempdir().unwrap();
    let bins = fake_bins(&d.path().join("bin"));
    let sweep = demo_sweep(d.path(), "");
    let (s, b) = (sweep.to_str().unwrap(), bins.to_str().unwrap());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hr-sweep"));
    cmd.args(launch_args(s, b))
        .current_dir(d.path())
        .env("RUST_LOG", "warn")
        .env("FAKE_SLEEP", "1");
    for (k, v) in env(d.path()) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    wait_for_done(&d.path().join("runs/t/ledger.jsonl"), 2);
    child.kill().unwrap(); // SIGKILL: no cleanup; its running jobs outlive it
    child.wait().unwrap();
    let before = calls(&d.path().join("calls.log"));
    assert!(
        before.iter().filter(|l| l.starts_with("train ")).count() < 6,
        "{before:?}"
    );

    let mut e = env(d.path());
    e.push(("FAKE_SLEEP", "1".into()));
    let o = hr_sweep(d.path(), &launch_args(s, b), &e);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("6 of 6 runs done, 0 failed"),
        "{}",
        text(&o)
    );
    let c = calls(&d.path().join("calls.log"));
    let mut trained: Vec<&str> = c
        .iter()
        .filter(|l| l.starts_with("train "))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    trained.sort_unstable();
    let n = trained.len();
    trained.dedup();
    assert_eq!(
        (n, trained.len()),
        (6, 6),
        "every run trained exactly once: {c:?}"
    );
    let mut evald: Vec<&str> = c
        .iter()
        .filter(|l| l.starts_with("eval "))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    evald.sort_unstable();
    evald.dedup();
    assert_eq!(evald.len(), 6, "{c:?}");
    assert!(
        c.iter().filter(|l| l.starts_with("eval ")).count() <= 7,
        "{c:?}"
    );
}

#[test]
fn preempted_run_resumes_and_failed_run_reports_its_log() {
    let d = tempfile::tempdir().unwrap();
    let bins = fake_bins(&d.path().join("bin"));
    let sweep = demo_sweep(d.path(), "");
    let (s, b) = (sweep.to_str().unwrap(), bins.to_str().unwrap());
    let mut e = env(d.path());
    e.push(("FAKE_PREEMPT", "/late-1-".into()));
    e.push(("FAKE_FAIL", "/mid-2-".into()));
    let o = hr_sweep(d.path(), &launch_args(s, b), &e);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("5 of 6 runs done, 1 failed"),
        "{}",
        text(&o)
    );
    let c = calls(&d.path().join("calls.log"));
    let late1: Vec<&String> = c
        .iter()
        .filter(|l| l.starts_with("train ") && l.contains("/late-1-"))
        .collect();
    assert_eq!(late1.len(), 2, "{c:?}");
    assert!(
        late1[0].ends_with("resume=no") && late1[1].ends_with("resume=yes"),
        "{c:?}"
    );
    let o = hr_sweep(d.path(), &["status", s], &[]);
    let t = text(&o);
    assert!(
        t.contains("train failed") && t.contains("hr-train exited with status 1"),
        "{t}"
    );
    assert!(
        t.contains("fake failure") && t.contains("CUDA out of memory"),
        "{t}"
    );
    assert!(t.contains("5 done, 1 train failed"), "{t}");

    // --retry-failed launches the failed run again (and nothing else).
    let mut args = launch_args(s, b);
    args.push("--retry-failed");
    let o = hr_sweep(d.path(), &args, &env(d.path()));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("started 2 job(s); 6 of 6 runs done, 0 failed"),
        "{}",
        text(&o)
    );
    let c = calls(&d.path().join("calls.log"));
    assert_eq!(
        c.iter().filter(|l| l.contains("/mid-2-")).count(),
        3,
        "{c:?}"
    );
}

#[test]
fn gpus_by_index_one_job_each() {
    let d = tempfile::tempdir().unwrap();
    let bins = fake_bins(&d.path().join("bin"));
    let sweep = demo_sweep(d.path(), "");
    let (s, b) = (sweep.to_str().unwrap(), bins.to_str().unwrap());
    let args = [
        "launch",
        s,
        "--gpus",
        "3,5",
        "--poll-ms",
        "50",
        "--bin-dir",
        b,
    ];
    let o = hr_sweep(d.path(), &args, &env(d.path()));
    assert!(o.status.success(), "{}", text(&o));
    let c = calls(&d.path().join("calls.log"));
    let trains: Vec<&String> = c.iter().filter(|l| l.starts_with("train ")).collect();
    assert_eq!(trains.len(), 6);
    assert!(
        trains
            .iter()
            .all(|l| l.contains(" gpu=3 ") || l.contains(" gpu=5 ")),
        "{c:?}"
    );
    let script = std::fs::read_dir(d.path().join("runs/t"))
        .unwrap()
        .map(|e| e.unwrap().path().join("train.sh"))
        .find(|p| p.is_file())
        .unwrap();
    assert!(std::fs::read_to_string(script)
        .unwrap()
        .contains("--resume auto --device cuda"));
}

#[test]
fn missing_binaries_say_how_to_build_them() {
    let e = hr_sweep::bins::find("hr-no-such-binary", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cargo build -p hr-train"), "{e}");
}
