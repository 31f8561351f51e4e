//! `hr-sweep plan|launch|status|report SWEEP.toml`: the sweep coordinator's command line.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use hr_sweep::bins::Bins;
use hr_sweep::coordinator::{format_status, prepare_launch, retry_failed, status_rows};
use hr_sweep::ledger::Ledger;
use hr_sweep::{local, report, slurm, Plan, SweepError};

#[derive(Subcommand)]
enum Cmd {
    /// Print the runs of a sweep (and which are already done).
    Plan(Common),
    /// Start every run (and evaluation) that is missing; waits until they end.
    Launch(Launch),
    /// Show pending / running / done / failed runs, with failure reasons.
    Status(Status),
    /// Aggregate results: Markdown and CSV tables and a PNG chart in the runs directory.
    Report(Common),
}

#[derive(Args)]
struct Common {
    /// The sweep file.
    sweep: PathBuf,
    /// Runs directory (default: `[sweep] runs_dir`).
    #[arg(long)]
    runs_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Local,
    Slurm,
}

#[derive(Args)]
struct Launch {
    #[command(flatten)]
    common: Common,
    /// Where jobs run.
    #[arg(long, value_enum, default_value = "local")]
    backend: Backend,
    /// Local: jobs at once on the CPU.
    #[arg(long, short = 'j', default_value_t = 1)]
    jobs: usize,
    /// Local: GPU indices, one job per GPU (e.g. `0,1,2,3`).
    #[arg(long, value_delimiter = ',')]
    gpus: Vec<usize>,
    /// Directory of hr-train and hr-eval (else $HR_BIN_DIR, next to hr-sweep, PATH).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Accept a sweep file whose runs changed since the last launch.
    #[arg(long)]
    accept_changes: bool,
    /// Launch failed runs again (training resumes from the newest checkpoint).
    #[arg(long)]
    retry_failed: bool,
    /// Poll interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Slurm: return after submitting instead of waiting for every job.
    #[arg(long)]
    no_wait: bool,
    /// Slurm: directory of the sbatch templates (default: `slurm/`, else `../../slurm` from the sweep file).
    #[arg(long)]
    templates: Option<PathBuf>,
}

#[derive(Args)]
struct Status {
    #[command(flatten)]
    common: Common,
    /// With `slurm`, poll squeue/sacct once first (when no coordinator is running).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
}

fn main() {
    let cmd = hr_core::cli::start::<Cmd>(
        "hr-sweep",
        "Plan, launch, track and report sweeps of hr-train runs",
    );
    match real_main(cmd) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn real_main(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Plan(c) => plan(&c),
        Cmd::Launch(l) => launch(&l),
        Cmd::Status(s) => status(&s),
        Cmd::Report(c) => report_cmd(&c),
    }
}

fn load(c: &Common) -> Result<Plan> {
    Ok(Plan::load(&c.sweep, c.runs_dir.as_deref())?)
}

fn plan(c: &Common) -> Result<i32> {
    let plan = load(c)?;
    let state = Ledger::read(&plan.runs_dir)?;
    let rows = status_rows(&plan, &state);
    println!(
        "sweep {} ({}): {} runs, plan hash {}, runs dir {}\n",
        plan.spec.sweep.name,
        plan.file.display(),
        plan.runs.len(),
        plan.hash,
        plan.runs_dir.display()
    );
    println!(
        "{:>3}  {:<16}  {:<20}  {:<26}  run",
        "#", "id", "eval", "state"
    );
    for (i, (run, row)) in plan.runs.iter().zip(&rows).enumerate() {
        let evals: Vec<&str> = run.evals.iter().map(|e| e.name.as_str()).collect();
        println!(
            "{:>3}  {:<16}  {:<20}  {:<26}  {}",
            i + 1,
            run.id,
            evals.join("+"),
            row.state,
            run.name()
        );
    }
    let done = rows.iter().filter(|r| r.state == "done").count();
    println!("\n{done} done, {} to launch or finish", rows.len() - done);
    if let Err(e) = plan.check_data() {
        println!("note: `launch` would fail here: {e}");
    }
    Ok(0)
}

fn launch(l: &Launch) -> Result<i32> {
    let plan = load(&l.common)?;
    let poll = Duration::from_millis(l.poll_ms.max(10));
    match l.backend {
        Backend::Local => {
            let bins = Bins::resolve(l.bin_dir.as_deref())?;
            let mut ledger = prepare_launch(&plan, "local", l.accept_changes)?;
            if l.retry_failed {
                retry_failed(&plan, &mut ledger)?;
            }
            let opts = local::LocalOptions {
                bins,
                jobs: l.jobs,
                gpus: l.gpus.clone(),
                poll,
            };
            let out = local::run(&plan, &mut ledger, &opts)?;
            println!(
                "started {} job(s); {} of {} runs done, {} failed",
                out.started,
                out.done,
                plan.runs.len(),
                out.failed
            );
            finish(out.failed)
        }
        Backend::Slurm => {
            let opts = slurm_opts(
                &plan,
                l.templates.as_deref(),
                l.bin_dir.as_deref(),
                poll,
                !l.no_wait,
            )?;
            let mut ledger = prepare_launch(&plan, "slurm", l.accept_changes)?;
            if l.retry_failed {
                retry_failed(&plan, &mut ledger)?;
            }
            let out = slurm::run(&plan, &mut ledger, &opts)?;
            println!(
                "{} submission(s), {} poll(s); {} of {} runs done, {} failed",
                out.submitted,
                out.polls,
                out.done,
                plan.runs.len(),
                out.failed
            );
            finish(out.failed)
        }
    }
}

fn finish(failed: usize) -> Result<i32> {
    if failed > 0 {
        eprintln!("{failed} run(s) failed; `hr-sweep status` shows why");
        return Ok(2);
    }
    Ok(0)
}

fn slurm_opts(
    plan: &Plan,
    templates: Option<&Path>,
    bin_dir: Option<&Path>,
    poll: Duration,
    wait: bool,
) -> Result<slurm::SlurmOptions> {
    let templates = match templates {
        Some(t) => t.to_path_buf(),
        None if Path::new("slurm/train-array.sbatch").is_file() => PathBuf::from("slurm"),
        None => plan
            .file
            .parent()
            .unwrap_or(Path::new("."))
            .join("../../slurm"),
    };
    let bin_dir = match (&plan.spec.slurm.bin_dir, bin_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.display().to_string(),
        (None, None) => {
            let b = Bins::resolve(None)?;
            b.train
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        }
    };
    let workdir = std::env::current_dir().context("current directory")?;
    Ok(slurm::SlurmOptions {
        templates,
        bin_dir,
        workdir,
        poll,
        wait,
    })
}

fn status(s: &Status) -> Result<i32> {
    let plan = load(&s.common)?;
    if s.backend == Some(Backend::Slurm) {
        match Ledger::open(&plan.runs_dir) {
            Ok(mut ledger) => slurm::refresh(&plan, &mut ledger)?,
            Err(SweepError::Locked { owner, .. }) => {
                eprintln!("a coordinator is running ({owner}); showing its ledger")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let state = Ledger::read(&plan.runs_dir)?;
    if state.events == 0 {
        println!(
            "sweep {} has not been launched into {}",
            plan.spec.sweep.name,
            plan.runs_dir.display()
        );
    }
    print!("{}", format_status(&status_rows(&plan, &state)));
    Ok(0)
}

fn report_cmd(c: &Common) -> Result<i32> {
    let plan = load(c)?;
    let rows = report::rows(&plan);
    if rows.iter().all(|r| r.metrics.is_none()) && plan.runs.is_empty() {
        bail!("the sweep has no runs");
    }
    print!("{}", report::markdown(&plan, &rows));
    let w = report::write(&plan, &rows)?;
    println!("\nwrote {} and {}", w.markdown.display(), w.csv.display());
    if let Some(p) = w.chart {
        println!("chart: {}", p.display());
    }
    Ok(0)
}
