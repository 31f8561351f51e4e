//! The local backend: jobs are processes on this machine, at most `jobs` at once, on the CPU or
//! one GPU each (by index). Each job runs under a small `sh` wrapper that records its pid and,
//! when it ends, its exit status in the run directory, so a restarted coordinator can adopt
//! jobs that outlived it instead of starting them twice.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bins::{sh_quote, Bins};
use crate::error::{Result, SweepError};
use crate::jobs::{self, failure_reason, read_exit};
use crate::ledger::{Event, Handle, JobKind, JobState, Ledger};
use crate::plan::{Plan, Run};
use hr_core::write_atomic;

/// The exit status hr-train uses for "stopped after a checkpoint, requeue me".
pub use hr_core::EXIT_REQUEUE;

/// The wrapper: records `$$` (and the GPU) in `<prefix>.pid`, runs the job script, then
/// records its exit status in `<prefix>.exit` (both atomically).
const WRAPPER: &str = r#"p="$1"; s="$2"
echo "$$ ${CUDA_VISIBLE_DEVICES:-}" > "$p.pid.tmp" && mv -f "$p.pid.tmp" "$p.pid"
sh "$s"
rc=$?
echo "$rc" > "$p.exit.tmp" && mv -f "$p.exit.tmp" "$p.exit"
exit "$rc""#;

/// Local backend settings.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The trainer binaries.
    pub bins: Bins,
    /// Concurrent jobs (ignored when `gpus` is set: one job per GPU).
    pub jobs: usize,
    /// GPU indices; empty = CPU.
    pub gpus: Vec<usize>,
    /// How often running jobs are checked.
    pub poll: Duration,
}

struct Active {
    run: usize,
    job: JobKind,
    child: Option<Child>,
    pid: u32,
    gpu: Option<usize>,
}

/// Counts of a finished launch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Jobs started by this launch.
    pub started: usize,
    /// Runs fully done (trained and evaluated).
    pub done: usize,
    /// Runs failed.
    pub failed: usize,
}

/// Runs every missing job of the plan to completion.
pub fn run(plan: &Plan, ledger: &mut Ledger, opts: &LocalOptions) -> Result<Outcome> {
    let mut active = recover(plan, ledger)?;
    let mut started = 0;
    let slots = if opts.gpus.is_empty() {
        opts.jobs.max(1)
    } else {
        opts.gpus.len()
    };
    loop {
        reap(plan, ledger, &mut active)?;
        give_up_exhausted(plan, ledger)?;
        while active.len() < slots {
            let Some((run, job, attempt)) = next_job(plan, ledger, &active) else {
                break;
            };
            let gpu = free_gpu(opts, &active, job);
            let a = start(plan, ledger, opts, run, job, attempt, gpu)?;
            active.push(a);
            started += 1;
        }
        if active.is_empty() {
            break;
        }
        std::thread::sleep(opts.poll);
    }
    Ok(outcome(plan, ledger, started))
}

fn outcome(plan: &Plan, ledger: &Ledger, started: usize) -> Outcome {
    let ids = plan.runs.iter().map(|r| r.id.as_str());
    let (done, failed) = ledger.state.done_and_failed(ids);
    Outcome {
        started,
        done,
        failed,
    }
}

fn prefix(run: &Run, job: JobKind) -> PathBuf {
    run.dir.join(match job {
        JobKind::Train => "train",
        JobKind::Eval => "eval",
    })
}

fn with_ext(p: &Path, ext: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// Adopts jobs a previous coordinator left running; settles those that ended meanwhile.
fn recover(plan: &Plan, ledger: &mut Ledger) -> Result<Vec<Active>> {
    let mut active = Vec::new();
    for (i, run) in plan.runs.iter().enumerate() {
        for job in [JobKind::Train, JobKind::Eval] {
            let Some(rec) = ledger.state.job(&run.id, job) else {
                continue;
            };
            if !matches!(rec.state, JobState::Pending | JobState::Running) {
                continue;
            }
            let p = prefix(run, job);
            if let Some(code) = read_exit(&with_ext(&p, ".exit")) {
                settle(plan, ledger, i, job, code)?;
            } else if let Some((pid, gpu)) = alive_pid(&p, &run.dir) {
                tracing::info!(run = %run.name(), ?job, pid, "adopting a job that outlived its coordinator");
                active.push(Active {
                    run: i,
                    job,
                    child: None,
                    pid,
                    gpu,
                });
            } else {
                interrupted(ledger, run, job)?;
            }
        }
    }
    Ok(active)
}

fn interrupted(ledger: &mut Ledger, run: &Run, job: JobKind) -> Result<()> {
    tracing::warn!(run = %run.name(), ?job, "job ended without an exit status; it will be resumed");
    ledger.append(Event::State {
        run: run.id.clone(),
        job,
        state: JobState::Preempted,
        handle: None,
        reason: Some("interrupted (no exit status recorded)".into()),
    })
}

/// The pid (and GPU) of a live wrapper whose command line names this run directory.
fn alive_pid(prefix: &Path, run_dir: &Path) -> Option<(u32, Option<usize>)> {
    let text = std::fs::read_to_string(with_ext(prefix, ".pid")).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let gpu = it.next().and_then(|g| g.parse().ok());
    is_alive(pid, run_dir).then_some((pid, gpu))
}

/// Whether `pid` is a live (non-zombie) process whose command line mentions `run_dir`.
fn is_alive(pid: u32, run_dir: &Path) -> bool {
    crate::fsutil::process_mentions(pid, &run_dir.to_string_lossy())
}

/// Checks running jobs; settles the ones that ended.
fn reap(plan: &Plan, ledger: &mut Ledger, active: &mut Vec<Active>) -> Result<()> {
    let mut i = 0;
    while i < active.len() {
        let a = &mut active[i];
        let run = &plan.runs[a.run];
        let p = prefix(run, a.job);
        let code = match &mut a.child {
            Some(c) => c
                .try_wait()
                .map_err(SweepError::io(&run.dir))?
                .map(|s| s.code().unwrap_or(-1)),
            None if is_alive(a.pid, &run.dir) => None,
            None => Some(read_exit(&with_ext(&p, ".exit")).unwrap_or(-1)),
        };
        match code {
            Some(code) => {
                let (r, job) = (a.run, a.job);
                active.swap_remove(i);
                settle(plan, ledger, r, job, code)?;
            }
            None => i += 1,
        }
    }
    Ok(())
}

/// Records how a job ended (done, preempted, failed with its log tail).
fn settle(plan: &Plan, ledger: &mut Ledger, r: usize, job: JobKind, code: i32) -> Result<()> {
    let run = &plan.runs[r];
    let log = jobs::log_path(run, job);
    let ok = match job {
        JobKind::Train => jobs::train_result(run).is_some(),
        JobKind::Eval => jobs::evals_done(run),
    };
    let (state, reason) = match code {
        0 if ok => (JobState::Done, None),
        0 => {
            let what = format!(
                "exit 0 but its result file is missing in {}",
                run.dir.display()
            );
            (JobState::Failed, Some(failure_reason(&what, &log)))
        }
        EXIT_REQUEUE if job == JobKind::Train => (
            JobState::Preempted,
            Some("stopped after a checkpoint (exit 75)".into()),
        ),
        c => {
            let what = format!("{} exited with status {c}", job_name(job));
            (JobState::Failed, Some(failure_reason(&what, &log)))
        }
    };
    tracing::info!(run = %run.name(), ?job, state = state.as_str(), "job ended");
    ledger.append(Event::State {
        run: run.id.clone(),
        job,
        state,
        handle: None,
        reason,
    })
}

fn job_name(job: JobKind) -> &'static str {
    match job {
        JobKind::Train => "hr-train",
        JobKind::Eval => "hr-eval",
    }
}

/// The next job to start: evaluations of trained runs first, then training, in plan order.
fn next_job(plan: &Plan, ledger: &Ledger, active: &[Active]) -> Option<(usize, JobKind, u32)> {
    let busy = |i: usize| active.iter().any(|a| a.run == i);
    let max = plan.spec.sweep.max_attempts;
    let mut candidate = None;
    for (i, run) in plan.runs.iter().enumerate().filter(|(i, _)| !busy(*i)) {
        let t = ledger.state.job(&run.id, JobKind::Train).cloned();
        let e = ledger.state.job(&run.id, JobKind::Eval).cloned();
        let want = match (t, e) {
            (None, _) => Some((JobKind::Train, 1)),
            (Some(t), _) if t.state == JobState::Preempted && t.attempt < max => {
                Some((JobKind::Train, t.attempt + 1))
            }
            (Some(t), None) if t.state == JobState::Done => Some((JobKind::Eval, 1)),
            (Some(t), Some(e)) if t.state == JobState::Done && e.state == JobState::Preempted => {
                Some((JobKind::Eval, e.attempt + 1))
            }
            _ => None,
        };
        match want {
            Some((JobKind::Eval, a)) => return Some((i, JobKind::Eval, a)),
            Some((JobKind::Train, a)) if candidate.is_none() => {
                candidate = Some((i, JobKind::Train, a))
            }
            _ => {}
        }
    }
    candidate
}

/// Marks preempted trainings that used up `max_attempts` as failed.
fn give_up_exhausted(plan: &Plan, ledger: &mut Ledger) -> Result<()> {
    let max = plan.spec.sweep.max_attempts;
    for run in &plan.runs {
        let Some(t) = ledger.state.job(&run.id, JobKind::Train).cloned() else {
            continue;
        };
        if t.state == JobState::Preempted && t.attempt >= max {
            let reason = format!("gave up after {} attempt(s) (max_attempts)", t.attempt);
            ledger.append(Event::State {
                run: run.id.clone(),
                job: JobKind::Train,
                state: JobState::Failed,
                handle: None,
                reason: Some(reason),
            })?;
        }
    }
    Ok(())
}

fn free_gpu(opts: &LocalOptions, active: &[Active], job: JobKind) -> Option<usize> {
    if job != JobKind::Train {
        return None;
    }
    opts.gpus
        .iter()
        .copied()
        .find(|g| !active.iter().any(|a| a.gpu == Some(*g)))
}

/// Writes the job script, records the submission, spawns the wrapper.
fn start(
    plan: &Plan,
    ledger: &mut Ledger,
    opts: &LocalOptions,
    r: usize,
    job: JobKind,
    attempt: u32,
    gpu: Option<usize>,
) -> Result<Active> {
    let run = &plan.runs[r];
    let p = prefix(run, job);
    for ext in [".exit", ".pid"] {
        let f = with_ext(&p, ext);
        if f.exists() {
            std::fs::remove_file(&f).map_err(SweepError::io(&f))?;
        }
    }
    let script = with_ext(&p, ".sh");
    write_atomic(
        &script,
        job_script(plan, run, job, &opts.bins, gpu).as_bytes(),
    )?;
    ledger.append(Event::Submit {
        run: run.id.clone(),
        job,
        attempt,
        slurm: None,
    })?;
    let child = spawn(&p, &script, &jobs::log_path(run, job), attempt, gpu)?;
    let pid = child.id();
    tracing::info!(run = %run.name(), ?job, attempt, pid, ?gpu, "started");
    ledger.append(Event::State {
        run: run.id.clone(),
        job,
        state: JobState::Running,
        handle: Some(Handle::Local { pid }),
        reason: None,
    })?;
    Ok(Active {
        run: r,
        job,
        child: Some(child),
        pid,
        gpu,
    })
}

/// The job's shell script.
pub fn job_script(plan: &Plan, run: &Run, job: JobKind, bins: &Bins, gpu: Option<usize>) -> String {
    let head = format!(
        "# hr-sweep {} job of run {} [{}]\nset -e\n",
        job_name(job),
        run.id,
        run.name()
    );
    match job {
        JobKind::Train => {
            let extra = if gpu.is_some() { " --device cuda" } else { "" };
            let bin = sh_quote(&bins.train.to_string_lossy());
            head + "exec " + &jobs::train_command(&bin, run, extra) + "\n"
        }
        JobKind::Eval => {
            let bin = sh_quote(&bins.eval.to_string_lossy());
            let cmds = jobs::eval_commands(&bin, run, &plan.spec.eval);
            head + &cmds.join("\n") + "\n"
        }
    }
}

fn spawn(
    prefix: &Path,
    script: &Path,
    log: &Path,
    attempt: u32,
    gpu: Option<usize>,
) -> Result<Child> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(SweepError::io(log))?;
    writeln!(f, "=== hr-sweep: attempt {attempt} ===").map_err(SweepError::io(log))?;
    let err = f.try_clone().map_err(SweepError::io(log))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WRAPPER)
        .arg("hr-sweep-job")
        .arg(prefix)
        .arg(script)
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(err);
    if let Some(g) = gpu {
        cmd.env("CUDA_VISIBLE_DEVICES", g.to_string());
    }
    cmd.spawn()
        .map_err(|e| SweepError::Program(format!("starting sh for {}: {e}", script.display())))
}
