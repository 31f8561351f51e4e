//! The local backend with a fake trainer: launch, idempotent relaunch, crash safety (the
//! coordinator killed mid-sweep), preemption and failures, a changed sweep file.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_says, count, done_trainings, hr_sweep, text, trainings_of, Fixture};
use hr_core::testing::assert_mentions;

fn env(f: &Fixture) -> Vec<(&'static str, String)> {
    vec![("FAKE_CALLS", f.calls_log().display().to_string())]
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
    let f = Fixture::new("");
    let (s, b) = (f.sweep_arg(), f.bins_arg());
    let o = hr_sweep(f.path(), &launch_args(s, b), &env(&f));
    assert!(o.status.success(), "{}", text(&o));
    let c = f.calls();
    assert_eq!(count(&c, "train "), 6, "{c:?}");
    assert_eq!(count(&c, "eval "), 6, "{c:?}");

    // A second launch does nothing.
    let o = hr_sweep(f.path(), &launch_args(s, b), &env(&f));
    assert!(o.status.success(), "{}", text(&o));
    assert_says(&o, "started 0 job(s); 6 of 6 runs done");
    assert_eq!(f.calls().len(), 12);

    // plan shows them done; report prints the table with deltas.
    let o = hr_sweep(f.path(), &["plan", s], &[]);
    assert_says(&o, "6 done, 0 to launch");
    let o = hr_sweep(f.path(), &["report", s], &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("| 1 | none | self | 2/2 | 30.15 ± 0.07 | — | (baseline) |"),
        "{t}"
    );
    assert_mentions(
        &t,
        &["| 2 | late | self | 2/2 | 40.15 ± 0.07 | — | +10.00 |"],
    );
    assert_mentions(&t, &["| 3 | mid | self | 2/2 | 35.15 ± 0.07 | — | +5.00 |"]);
    let csv = std::fs::read_to_string(f.path().join("runs/t/report.csv")).unwrap();
    assert!(
        csv.lines()
            .nth(2)
            .unwrap()
            .starts_with("late,self,2,2,40.1500,0.0707,,,10.0000"),
        "{csv}"
    );
    let png = std::fs::read(f.path().join("runs/t/report-map10.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // The sweep file changed after launch: a clear error, nothing started.
    let changed = std::fs::read_to_string(&f.sweep)
        .unwrap()
        .replace("max_steps = 30", "max_steps = 31");
    std::fs::write(&f.sweep, changed).unwrap();
    let o = hr_sweep(f.path(), &launch_args(s, b), &env(&f));
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("the sweep changed since it was launched")
            && t.contains("6 run(s) added or changed"),
        "{t}"
    );
    assert_eq!(f.calls().len(), 12);
}

/// Waits until the ledger records `n` finished trainings.
fn wait_for_done(ledger: &Path, n: usize) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if done_trainings(ledger) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the sweep did not progress");
}

/// The first argument of the calls starting with `prefix`, sorted.
fn sorted_targets<'a>(calls: &'a [String], prefix: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = calls
        .iter()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn killed_coordinator_relaunch_finishes_without_rerunning() {
    let f = Fixture::new("");
    let (s, b) = (f.sweep_arg(), f.bins_arg());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hr-sweep"));
    cmd.args(launch_args(s, b))
        .current_dir(f.path())
        .env("RUST_LOG", "warn")
        .env("FAKE_SLEEP", "1");
    for (k, v) in env(&f) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    wait_for_done(&f.path().join("runs/t/ledger.jsonl"), 2);
    child.kill().unwrap(); // SIGKILL: no cleanup; its running jobs outlive it
    child.wait().unwrap();
    let before = f.calls();
    assert!(count(&before, "train ") < 6, "{before:?}");

    let mut e = env(&f);
    e.push(("FAKE_SLEEP", "1".into()));
    let o = hr_sweep(f.path(), &launch_args(s, b), &e);
    assert!(o.status.success(), "{}", text(&o));
    assert_says(&o, "6 of 6 runs done, 0 failed");
    let c = f.calls();
    let mut trained = sorted_targets(&c, "train ");
    let n = trained.len();
    trained.dedup();
    assert_eq!(
        (n, trained.len()),
        (6, 6),
        "every run trained exactly once: {c:?}"
    );
    let mut evald = sorted_targets(&c, "eval ");
    evald.dedup();
    assert_eq!(evald.len(), 6, "{c:?}");
    assert!(count(&c, "eval ") <= 7, "{c:?}");
}

#[test]
fn preempted_run_resumes_and_failed_run_reports_its_log() {
    let f = Fixture::new("");
    let (s, b) = (f.sweep_arg(), f.bins_arg());
    let mut e = env(&f);
    e.push(("FAKE_PREEMPT", "/late-1-".into()));
    e.push(("FAKE_FAIL", "/mid-2-".into()));
    let o = hr_sweep(f.path(), &launch_args(s, b), &e);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_says(&o, "5 of 6 runs done, 1 failed");
    let c = f.calls();
    let late1 = trainings_of(&c, "/late-1-");
    assert_eq!(late1.len(), 2, "{c:?}");
    assert!(
        late1[0].ends_with("resume=no") && late1[1].ends_with("resume=yes"),
        "{c:?}"
    );
    // The failed run had logged steps: status shows its last one.
    let mid2 = c
        .iter()
        .find(|l| l.contains("/mid-2-"))
        .expect("mid-2 trained");
    let mid2_dir = f
        .path()
        .join(mid2.split_whitespace().nth(1).expect("run dir"));
    std::fs::write(
        mid2_dir.join("metrics.jsonl"),
        "{\"step\":6,\"loss\":0.7}\n{\"step\":7,\"loss\":0.5,\"items_per_s\":12.0}\n",
    )
    .unwrap();
    let o = hr_sweep(f.path(), &["status", s], &[]);
    let t = text(&o);
    assert_mentions(&t, &["train failed", "hr-train exited with status 1"]);
    assert!(t.contains("step 7, loss 0.5000, 12.0 items/s"), "{t}");
    assert_mentions(&t, &["fake failure", "CUDA out of memory"]);
    assert!(t.contains("5 done, 1 train failed"), "{t}");

    // --retry-failed launches the failed run again (and nothing else).
    let mut args = launch_args(s, b);
    args.push("--retry-failed");
    let o = hr_sweep(f.path(), &args, &env(&f));
    assert!(o.status.success(), "{}", text(&o));
    assert_says(&o, "started 2 job(s); 6 of 6 runs done, 0 failed");
    let c = f.calls();
    assert_eq!(
        c.iter().filter(|l| l.contains("/mid-2-")).count(),
        3,
        "{c:?}"
    );
}

#[test]
fn gpus_by_index_one_job_each() {
    let f = Fixture::new("");
    let (s, b) = (f.sweep_arg(), f.bins_arg());
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
    let o = hr_sweep(f.path(), &args, &env(&f));
    assert!(o.status.success(), "{}", text(&o));
    let c = f.calls();
    let trains: Vec<&String> = c.iter().filter(|l| l.starts_with("train ")).collect();
    assert_eq!(trains.len(), 6);
    assert!(
        trains
            .iter()
            .all(|l| l.contains(" gpu=3 ") || l.contains(" gpu=5 ")),
        "{c:?}"
    );
    let script = std::fs::read_dir(f.path().join("runs/t"))
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
