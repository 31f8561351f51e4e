//! The Slurm backend: renders sbatch scripts from the `slurm/` templates, submits the missing
//! training runs as one array job (with a concurrency limit), chains one `hr-eval` job per run
//! with `--dependency=afterok`, polls `squeue` and `sacct` once per cycle for all jobs together,
//! resubmits preempted runs (they resume from their newest checkpoint) and reports failures
//! with the tail of their log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::sh_quote;
use crate::error::{Result, SweepError};
use crate::jobs::{self, failure_reason};
use crate::ledger::{Event, Handle, JobKind, JobRecord, JobState, Ledger, SlurmName};
use crate::local::EXIT_REQUEUE;
use crate::plan::{Plan, Run};
use hr_core::write_atomic;

/// The array template, the single-run template and the evaluation template.
pub const TEMPLATES: [&str; 3] = ["train-array.sbatch", "train.sbatch", "eval.sbatch"];

/// Slurm backend settings.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Directory of the templates (`slurm/`).
    pub templates: PathBuf,
    /// Where hr-train / hr-eval live on the cluster.
    pub bin_dir: String,
    /// Absolute working directory of the jobs (`--chdir`).
    pub workdir: PathBuf,
    /// Poll interval.
    pub poll: Duration,
    /// Keep polling until every job is final (otherwise return after submitting).
    pub wait: bool,
}

/// Fills `{{name}}` placeholders; fails on an unknown one.
pub fn render(template: &str, vars: &BTreeMap<&str, String>, name: &str) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find("}}")
            .ok_or_else(|| SweepError::Program(format!("template {name}: unclosed `{{{{`")))?;
        let key = after[..j].trim();
        let v = vars.get(key).ok_or_else(|| {
            SweepError::Program(format!(
                "template {name}: unknown placeholder {{{{{key}}}}}"
            ))
        })?;
        out.push_str(v);
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn read_template(opts: &SlurmOptions, name: &str) -> Result<String> {
    let p = opts.templates.join(name);
    std::fs::read_to_string(&p).map_err(SweepError::io(p))
}

/// Variables every template shares.
pub fn common_vars(plan: &Plan, opts: &SlurmOptions) -> BTreeMap<&'static str, String> {
    let s = &plan.spec.slurm;
    let mut extra: Vec<String> = Vec::new();
    extra.extend(s.account.iter().map(|a| format!("#SBATCH --account={a}")));
    extra.extend(s.mem.iter().map(|m| format!("#SBATCH --mem={m}")));
    extra.extend(s.extra.iter().map(|e| format!("#SBATCH {e}")));
    let mut v = BTreeMap::new();
    v.insert("partition", s.partition.clone());
    v.insert("nodes", s.nodes.to_string());
    v.insert("gpus_per_node", s.gpus_per_node.to_string());
    v.insert("cpus_per_task", s.cpus_per_task.to_string());
    v.insert("time", s.time.clone());
    v.insert("eval_time", s.eval_time.clone());
    v.insert("workdir", opts.workdir.display().to_string());
    v.insert("bin_dir", sh_quote(&opts.bin_dir));
    v.insert("sbatch_extra", extra.join("\n"));
    v.insert("setup", s.setup.trim_end().to_string());
    v.insert("sweep", plan.spec.sweep.name.clone());
    v
}

fn abs(opts: &SlurmOptions, p: &Path) -> String {
    if p.is_absolute() {
        p.display().to_string()
    } else {
        opts.workdir.join(p).display().to_string()
    }
}

/// Renders the array script for `runs` (their directories listed one per line in `list`).
pub fn render_array(plan: &Plan, opts: &SlurmOptions, list: &Path, name: &str) -> Result<String> {
    let mut v = common_vars(plan, opts);
    v.insert("job_name", name.to_string());
    v.insert("runs_list", sh_quote(&abs(opts, list)));
    v.insert("log_dir", abs(opts, &plan.runs_dir.join("slurm")));
    render(&read_template(opts, TEMPLATES[0])?, &v, TEMPLATES[0])
}

/// The variables of a single-run job named `name` (its run directory and log directory).
fn run_vars(
    plan: &Plan,
    opts: &SlurmOptions,
    run: &Run,
    name: &str,
) -> BTreeMap<&'static str, String> {
    let mut v = common_vars(plan, opts);
    v.insert("job_name", name.to_string());
    v.insert("run_dir", sh_quote(&abs(opts, &run.dir)));
    v.insert("log_dir", abs(opts, &run.dir));
    v
}

/// Renders the single-run training script (resubmissions).
pub fn render_train(plan: &Plan, opts: &SlurmOptions, run: &Run, name: &str) -> Result<String> {
    let v = run_vars(plan, opts, run, name);
    render(&read_template(opts, TEMPLATES[1])?, &v, TEMPLATES[1])
}

/// Renders the evaluation script of a run.
pub fn render_eval(plan: &Plan, opts: &SlurmOptions, run: &Run, name: &str) -> Result<String> {
    let mut v = run_vars(plan, opts, run, name);
    let cmds: Vec<String> = jobs::eval_commands(
        "${HR_LAUNCH:-} \"$HR_BIN_DIR/hr-eval\"",
        run,
        &plan.spec.eval,
    )
    .into_iter()
    .map(|c| format!("{c} >> \"$RUN/eval.log\" 2>&1"))
    .collect();
    v.insert("eval_commands", cmds.join("\n"));
    let gpu = match plan.spec.eval.on_gpu() {
        true => "#SBATCH --gpus-per-task=1",
        false => "# ([eval] device = \"cpu\": no GPU)",
    };
    v.insert("eval_gpu", gpu.to_string());
    render(&read_template(opts, TEMPLATES[2])?, &v, TEMPLATES[2])
}

/// A short tag of the runs directory, so job names of different sweeps never collide.
pub fn dir_tag(plan: &Plan, opts: &SlurmOptions) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(abs(opts, &plan.runs_dir).as_bytes());
    hex::encode(&d[..3])
}

/// The job name of a submission: `<sweep>-<tag>-<kind>`.
pub fn job_name(plan: &Plan, opts: &SlurmOptions, kind: &str) -> String {
    format!("{}-{}-{kind}", plan.spec.sweep.name, dir_tag(plan, opts))
}

fn slurm_name(name: &str, task: Option<u32>) -> Option<SlurmName> {
    Some(SlurmName {
        name: name.to_string(),
        task,
    })
}

/// Runs a Slurm command, returning its stdout.
fn slurm_cmd(prog: &str, args: &[String]) -> Result<String> {
    tracing::debug!(prog, ?args, "slurm command");
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| SweepError::Slurm(format!("cannot run `{prog}`: {e} (is Slurm on PATH?)")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(SweepError::Slurm(format!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            err.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sbatch --parsable ARGS SCRIPT` -> job id.
fn sbatch(args: &[String], script: &Path) -> Result<String> {
    let mut a = vec!["--parsable".to_string()];
    a.extend_from_slice(args);
    a.push(script.display().to_string());
    let out = slurm_cmd("sbatch", &a)?;
    let id = out.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SweepError::Slurm(format!(
            "sbatch printed {out:?}, not a job id"
        )));
    }
    Ok(id)
}

fn handle_id(h: &Option<Handle>) -> Option<String> {
    match h {
        Some(Handle::Slurm { job_id }) => Some(job_id.clone()),
        _ => None,
    }
}

/// Counts of a launch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// sbatch submissions.
    pub submitted: usize,
    /// Runs fully done.
    pub done: usize,
    /// Runs failed.
    pub failed: usize,
    /// Poll cycles.
    pub polls: usize,
}

/// Submits what is missing and (with `wait`) polls until every job is final.
pub fn run(plan: &Plan, ledger: &mut Ledger, opts: &SlurmOptions) -> Result<Outcome> {
    recover_unrecorded(plan, ledger)?;
    let mut s = Submitter {
        plan,
        ledger,
        opts,
        out: Outcome::default(),
    };
    poll(plan, s.ledger, &mut s.out)?;
    s.resubmit_preempted()?;
    s.submit_missing()?;
    s.submit_missing_evals()?;
    while opts.wait && has_active(plan, s.ledger) {
        std::thread::sleep(opts.poll);
        poll(plan, s.ledger, &mut s.out)?;
        s.resubmit_preempted()?;
    }
    let ids = plan.runs.iter().map(|r| r.id.as_str());
    (s.out.done, s.out.failed) = s.ledger.state.done_and_failed(ids);
    Ok(s.out)
}

/// What submitting jobs works on: the sweep, its ledger (every submission is recorded before
/// and after `sbatch`), the Slurm options and the counts so far.
struct Submitter<'a> {
    plan: &'a Plan,
    ledger: &'a mut Ledger,
    opts: &'a SlurmOptions,
    out: Outcome,
}

impl Submitter<'_> {
    /// Submits every run without a training record as one array job, and its chained
    /// evaluation.
    fn submit_missing(&mut self) -> Result<()> {
        let (plan, opts) = (self.plan, self.opts);
        let missing: Vec<usize> = (0..plan.runs.len())
            .filter(|&i| {
                let r = &plan.runs[i];
                // A submission recorded without a job id (crash inside sbatch): submit again.
                let rec = self.ledger.state.job(&r.id, JobKind::Train);
                rec.is_none_or(JobRecord::unrecorded)
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let dir = plan.runs_dir.join("slurm");
        std::fs::create_dir_all(&dir).map_err(SweepError::io(&dir))?;
        let n = (1..)
            .find(|n| !dir.join(format!("array-{n:04}.runs")).exists())
            .unwrap_or(1);
        let list = dir.join(format!("array-{n:04}.runs"));
        let lines: Vec<String> = missing
            .iter()
            .map(|&i| abs(opts, &plan.runs[i].dir))
            .collect();
        write_atomic(&list, (lines.join("\n") + "\n").as_bytes())?;
        let script = dir.join(format!("train-array-{n:04}.sbatch"));
        let name = job_name(plan, opts, &format!("a{n:04}"));
        write_atomic(&script, render_array(plan, opts, &list, &name)?.as_bytes())?;
        for (k, &i) in missing.iter().enumerate() {
            let attempt = self
                .ledger
                .state
                .job(&plan.runs[i].id, JobKind::Train)
                .map_or(1, |r| r.attempt.max(1));
            self.ledger.append(Event::Submit {
                run: plan.runs[i].id.clone(),
                job: JobKind::Train,
                attempt,
                slurm: slurm_name(&name, Some(k as u32)),
            })?;
        }
        let limit = plan.spec.slurm.array_limit.max(1);
        let array = format!("--array=0-{}%{limit}", missing.len() - 1);
        let id = sbatch(&[array], &script)?;
        self.out.submitted += 1;
        tracing::info!(job = %id, runs = missing.len(), "submitted the training array");
        for (k, &i) in missing.iter().enumerate() {
            let (run, task) = (&plan.runs[i], format!("{id}_{k}"));
            record_pending(self.ledger, run, JobKind::Train, task.clone())?;
            self.submit_eval(run, Some(&task))?;
        }
        Ok(())
    }

    /// Submits the evaluation job of `run`, to start after `train_id` succeeds (right away
    /// when training is already done).
    fn submit_eval(&mut self, run: &Run, train_id: Option<&str>) -> Result<()> {
        let (script, _) = self.prepare_single(run, JobKind::Eval)?;
        let dep: Vec<String> = train_id
            .map(|t| {
                vec![
                    format!("--dependency=afterok:{t}"),
                    "--kill-on-invalid-dep=yes".into(),
                ]
            })
            .unwrap_or_default();
        self.submit_single(run, JobKind::Eval, (&dep, &script))?;
        Ok(())
    }

    /// Resubmits one preempted training run (resumes from its newest checkpoint) and its
    /// evaluation.
    fn resubmit(&mut self, run: &Run) -> Result<()> {
        let (script, attempt) = self.prepare_single(run, JobKind::Train)?;
        let id = self.submit_single(run, JobKind::Train, (&[], &script))?;
        tracing::info!(run = %run.name(), job = %id, attempt, "resubmitted a preempted run");
        self.submit_eval(run, Some(&id))
    }

    /// Writes the single-job script of the next attempt of `run`'s `job` and records its
    /// submission (by job name, before `sbatch`); returns the script and the attempt.
    fn prepare_single(&mut self, run: &Run, job: JobKind) -> Result<(PathBuf, u32)> {
        let (plan, opts) = (self.plan, self.opts);
        let attempt = self
            .ledger
            .state
            .job(&run.id, job)
            .map_or(1, |r| r.attempt + 1);
        let (tag, file) = match job {
            JobKind::Train => ('t', "train.sbatch"),
            JobKind::Eval => ('e', "eval.sbatch"),
        };
        let name = job_name(plan, opts, &format!("{tag}{}-{attempt}", &run.id[..8]));
        let text = match job {
            JobKind::Train => render_train(plan, opts, run, &name)?,
            JobKind::Eval => render_eval(plan, opts, run, &name)?,
        };
        let script = run.dir.join(file);
        write_atomic(&script, text.as_bytes())?;
        self.ledger.append(Event::Submit {
            run: run.id.clone(),
            job,
            attempt,
            slurm: slurm_name(&name, None),
        })?;
        Ok((script, attempt))
    }

    /// `sbatch ARGS SCRIPT` for one job of `run`, recorded as pending under the id it got.
    fn submit_single(
        &mut self,
        run: &Run,
        job: JobKind,
        (args, script): (&[String], &Path),
    ) -> Result<String> {
        let id = sbatch(args, script)?;
        self.out.submitted += 1;
        record_pending(self.ledger, run, job, id.clone())?;
        Ok(id)
    }

    /// Resubmits every preempted training run (or gives up after `max_attempts`).
    fn resubmit_preempted(&mut self) -> Result<()> {
        for run in &self.plan.runs {
            let Some(rec) = self.ledger.state.job(&run.id, JobKind::Train).cloned() else {
                continue;
            };
            if rec.state != JobState::Preempted {
                continue;
            }
            if rec.attempt < self.plan.spec.sweep.max_attempts {
                self.resubmit(run)?;
            } else {
                let why = format!("gave up after {} attempt(s) (max_attempts)", rec.attempt);
                record_failed(self.ledger, run, JobKind::Train, why)?;
            }
        }
        Ok(())
    }

    /// Submits evaluation jobs a crashed coordinator did not get to (training queued or done,
    /// no evaluation job recorded).
    fn submit_missing_evals(&mut self) -> Result<()> {
        for run in &self.plan.runs {
            let Some(t) = self.ledger.state.job(&run.id, JobKind::Train).cloned() else {
                continue;
            };
            let eval = self.ledger.state.job(&run.id, JobKind::Eval);
            let unrecorded = eval.is_none_or(JobRecord::unrecorded);
            let (Some(train_id), true) = (handle_id(&t.handle), unrecorded) else {
                continue;
            };
            match t.state {
                JobState::Done => self.submit_eval(run, None)?,
                JobState::Pending | JobState::Running => self.submit_eval(run, Some(&train_id))?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Jobs the scheduler still has (pending or running) with their ids.
fn active_jobs(plan: &Plan, ledger: &Ledger) -> Vec<(usize, JobKind, String)> {
    let mut v = Vec::new();
    for (i, r) in plan.runs.iter().enumerate() {
        for job in [JobKind::Train, JobKind::Eval] {
            let Some(rec) = ledger.state.job(&r.id, job) else {
                continue;
            };
            if matches!(rec.state, JobState::Pending | JobState::Running) {
                if let Some(id) = handle_id(&rec.handle) {
                    v.push((i, job, id));
                }
            }
        }
    }
    v
}

fn has_active(plan: &Plan, ledger: &Ledger) -> bool {
    !active_jobs(plan, ledger).is_empty()
}

fn record(
    ledger: &mut Ledger,
    run: &Run,
    job: JobKind,
    state: JobState,
    id: Option<String>,
    reason: Option<String>,
) -> Result<()> {
    ledger.append(Event::State {
        run: run.id.clone(),
        job,
        state,
        handle: id.map(|job_id| Handle::Slurm { job_id }),
        reason,
    })
}

/// Records `run`'s `job` as pending under Slurm job id `id`.
fn record_pending(ledger: &mut Ledger, run: &Run, job: JobKind, id: String) -> Result<()> {
    record(ledger, run, job, JobState::Pending, Some(id), None)
}

/// Records `run`'s `job` as failed for `reason`.
fn record_failed(ledger: &mut Ledger, run: &Run, job: JobKind, reason: String) -> Result<()> {
    record(ledger, run, job, JobState::Failed, None, Some(reason))
}

/// What the scheduler said about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Slurm state (`PENDING`, `RUNNING`, `COMPLETED`, ...).
    pub state: String,
    /// Exit code (sacct `ExitCode` before the colon), when known.
    pub exit: Option<i32>,
}

impl Observed {
    /// `slurm state STATE (exit CODE)`, `?` for an unknown code.
    fn describe(&self) -> String {
        let exit = self.exit.map_or("?".into(), |c| c.to_string());
        format!("slurm state {} (exit {exit})", self.state)
    }
}

/// Parses `squeue -h -r -o %i|%T` output.
pub fn parse_squeue(text: &str) -> BTreeMap<String, Observed> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split('|');
            let id = it.next()?.trim().to_string();
            let state = it.next()?.trim().to_string();
            (!id.is_empty()).then_some((id, Observed { state, exit: None }))
        })
        .collect()
}

/// Parses `sacct -X -n -P -o JobID,State,ExitCode` output (`CANCELLED by 123` -> `CANCELLED`).
pub fn parse_sacct(text: &str) -> BTreeMap<String, Observed> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            let state = f[1]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let exit = f[2].split(':').next().and_then(|x| x.parse().ok());
            Some((f[0].to_string(), Observed { state, exit }))
        })
        .collect()
}

/// Base job ids (array tasks `123_4` -> `123`), deduplicated, comma separated.
fn id_list<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<&str> = ids.map(|i| i.split('_').next().unwrap_or(i)).collect();
    v.sort_unstable();
    v.dedup();
    v.join(",")
}

/// One poll cycle: one `squeue` call and at most one `sacct` call for every active job
/// (nothing, and no cycle counted, when no job is active).
fn poll(plan: &Plan, ledger: &mut Ledger, out: &mut Outcome) -> Result<()> {
    let active = active_jobs(plan, ledger);
    if active.is_empty() {
        return Ok(());
    }
    out.polls += 1;
    let ids = id_list(active.iter().map(|a| &a.2));
    let sq_args = ["-h", "-r", "-o", "%i|%T", "--jobs"]
        .map(String::from)
        .to_vec();
    let queued = match slurm_cmd("squeue", &[sq_args, vec![ids]].concat()) {
        Ok(t) => parse_squeue(&t),
        Err(e) => {
            tracing::debug!(error = %e, "squeue failed; asking sacct");
            BTreeMap::new()
        }
    };
    let gone: Vec<&String> = active
        .iter()
        .map(|a| &a.2)
        .filter(|id| !queued.contains_key(*id))
        .collect();
    let finished = if gone.is_empty() {
        BTreeMap::new()
    } else {
        let mut a = ["-X", "-n", "-P", "-o", "JobID,State,ExitCode", "--jobs"]
            .map(String::from)
            .to_vec();
        a.push(id_list(gone.into_iter()));
        parse_sacct(&slurm_cmd("sacct", &a)?)
    };
    let mut cancel: Vec<String> = Vec::new();
    for (i, job, id) in active {
        let run = &plan.runs[i];
        if let Some(o) = queued.get(&id) {
            update_live(ledger, run, job, o)?;
        } else if let Some(o) = finished.get(&id) {
            if !is_terminal(&o.state) {
                update_live(ledger, run, job, o)?;
                continue;
            }
            match job {
                JobKind::Train => train_ended(plan, ledger, (run, &id), o, &mut cancel)?,
                JobKind::Eval => eval_ended(ledger, run, o, &id)?,
            }
        }
    }
    if !cancel.is_empty() {
        slurm_cmd("scancel", &cancel)?;
    }
    Ok(())
}

fn is_terminal(state: &str) -> bool {
    !matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "REQUEUED"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
            | "CONFIGURING"
            | "COMPLETING"
            | "RESIZING"
            | "SUSPENDED"
            | "SIGNALING"
            | "STAGE_OUT"
    )
}

/// Records pending/running when it changed.
fn update_live(ledger: &mut Ledger, run: &Run, job: JobKind, o: &Observed) -> Result<()> {
    let state = if o.state == "RUNNING" || o.state == "COMPLETING" {
        JobState::Running
    } else {
        JobState::Pending
    };
    let cur = ledger.state.job(&run.id, job).map(|r| r.state);
    if cur != Some(state) {
        record(ledger, run, job, state, None, None)?;
    }
    Ok(())
}

fn train_ended(
    plan: &Plan,
    ledger: &mut Ledger,
    (run, id): (&Run, &str),
    o: &Observed,
    cancel: &mut Vec<String>,
) -> Result<()> {
    let log = jobs::log_path(run, JobKind::Train);
    let preempted = matches!(o.state.as_str(), "PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL")
        || o.exit == Some(EXIT_REQUEUE);
    let ok = o.state == "COMPLETED" && jobs::train_result(run).is_some();
    let eval_id = ledger
        .state
        .job(&run.id, JobKind::Eval)
        .and_then(|r| handle_id(&r.handle));
    if ok {
        return record(ledger, run, JobKind::Train, JobState::Done, None, None);
    }
    cancel.extend(eval_id);
    let attempt = ledger
        .state
        .job(&run.id, JobKind::Train)
        .map_or(1, |r| r.attempt);
    let what = o.describe();
    if preempted && attempt < plan.spec.sweep.max_attempts {
        record(
            ledger,
            run,
            JobKind::Train,
            JobState::Preempted,
            None,
            Some(what),
        )?;
        let why = "superseded (training requeued)".to_string();
        return record_failed(ledger, run, JobKind::Eval, why);
    }
    let mut reason = if o.state == "COMPLETED" {
        failure_reason("completed without result.json", &log)
    } else if preempted {
        failure_reason(&format!("{what}; gave up after {attempt} attempt(s)"), &log)
    } else {
        failure_reason(&what, &log)
    };
    reason += &batch_log_tail(&train_out(plan, run, id));
    tracing::warn!(run = %run.name(), "training failed");
    record_failed(ledger, run, JobKind::Train, reason)?;
    record_failed(ledger, run, JobKind::Eval, "training failed".into())
}

fn eval_ended(ledger: &mut Ledger, run: &Run, o: &Observed, id: &str) -> Result<()> {
    if o.state == "COMPLETED" && jobs::evals_done(run) {
        return record(ledger, run, JobKind::Eval, JobState::Done, None, None);
    }
    let what = o.describe();
    let mut reason = failure_reason(&what, &jobs::log_path(run, JobKind::Eval));
    reason += &batch_log_tail(&run.dir.join(format!("eval-{id}.out")));
    record_failed(ledger, run, JobKind::Eval, reason)
}

/// The tail of a job's Slurm output file (`--output`), when it has one.
fn batch_log_tail(path: &Path) -> String {
    let tail = crate::fsutil::tail(path, 8);
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\ntail of {}:\n{tail}", path.display())
    }
}

/// The `--output` file of a training job (array task or single job).
fn train_out(plan: &Plan, run: &Run, id: &str) -> PathBuf {
    if id.contains('_') {
        plan.runs_dir.join("slurm").join(format!("train-{id}.out"))
    } else {
        run.dir.join(format!("train-{id}.out"))
    }
}

/// One poll for `status` (when no coordinator holds the ledger); submits nothing.
pub fn refresh(plan: &Plan, ledger: &mut Ledger) -> Result<()> {
    recover_unrecorded(plan, ledger)?;
    poll(plan, ledger, &mut Outcome::default())
}

/// Finds, by job name, the jobs whose submission was recorded but not their id (the coordinator
/// died inside `sbatch`): one `squeue` and one `sacct` call for all of them.
fn recover_unrecorded(plan: &Plan, ledger: &mut Ledger) -> Result<()> {
    let mut lost: Vec<(usize, JobKind, SlurmName)> = Vec::new();
    for (i, r) in plan.runs.iter().enumerate() {
        for job in [JobKind::Train, JobKind::Eval] {
            if let Some(rec) = ledger.state.job(&r.id, job) {
                if rec.unrecorded() {
                    lost.extend(rec.slurm.clone().map(|n| (i, job, n)));
                }
            }
        }
    }
    if lost.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = lost.iter().map(|l| l.2.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let names = names.join(",");
    let args = ["-h", "-r", "-o", "%i|%j", "--name"]
        .map(String::from)
        .to_vec();
    let mut found = parse_names(
        &slurm_cmd("squeue", &[args, vec![names.clone()]].concat())?,
        1,
    );
    let args = ["-X", "-n", "-P", "-o", "JobID,JobName", "--name"]
        .map(String::from)
        .to_vec();
    found.extend(parse_names(
        &slurm_cmd("sacct", &[args, vec![names]].concat())?,
        1,
    ));
    for (i, job, n) in lost {
        let want = |id: &str| match n.task {
            Some(t) => id.split_once('_').is_some_and(|(_, k)| k == t.to_string()),
            None => !id.contains('_'),
        };
        let hit = found.iter().find(|(id, name)| *name == n.name && want(id));
        if let Some((id, _)) = hit {
            tracing::info!(run = %plan.runs[i].name(), ?job, job_id = %id, "found a submission the ledger missed");
            record_pending(ledger, &plan.runs[i], job, id.clone())?;
        }
    }
    Ok(())
}

/// Parses `id|...|name` lines (the name in field `name_field`) into (id, name).
fn parse_names(text: &str, name_field: usize) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            let name = f.get(name_field)?;
            (!f[0].is_empty()).then(|| (f[0].to_string(), name.to_string()))
        })
        .collect()
}
